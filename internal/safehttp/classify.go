package safehttp

import (
	"net/netip"
	"strings"
)

// rangeRule names one block of addresses that is not a public destination. Rules are
// tried in order and the first match wins, so narrower prefixes with a more useful name
// (169.254.169.254 before 169.254.0.0/16) come first.
type rangeRule struct {
	prefix netip.Prefix
	reason string
}

// v4Rules lists every IPv4 block a user-supplied URL must not reach: a transcription of
// the IANA special-purpose registry (RFC 6890 and successors). Some entries (documentation,
// benchmarking) are not dangerous, but nobody legitimately hosts a webhook there, and
// copying the registry whole is easier to review than choosing from it.
var v4Rules = []rangeRule{
	{netip.MustParsePrefix("0.0.0.0/32"), "unspecified"},
	{netip.MustParsePrefix("0.0.0.0/8"), `"this network"`}, // Linux routes 0.x.x.x to the local host
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "CGNAT shared address space"}, // also Alibaba's metadata, 100.100.100.200
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.169.254/32"), "cloud metadata"}, // AWS, GCP, Azure, Oracle, DigitalOcean
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignment"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4 relay anycast"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
}

// v6Rules lists the IPv6 blocks inside or outside 2000::/3 that are not public. Anything
// not matched here and outside 2000::/3 (global unicast) is refused as reserved, so the
// list only has to name what deserves a clearer message than "reserved".
var v6Rules = []rangeRule{
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "NAT64 local-use"}, // RFC 8215: the embedded v4 position varies, so refuse outright
	{netip.MustParsePrefix("100::/64"), "discard-only"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
	{netip.MustParsePrefix("2001::/23"), "IETF protocol assignment"}, // includes Teredo 2001::/32 and benchmarking 2001:2::/48
	{netip.MustParsePrefix("3fff::/20"), "documentation"},
	{netip.MustParsePrefix("5f00::/16"), "SRv6 SID"},
	{netip.MustParsePrefix("fc00::/7"), "unique local (private)"}, // includes AWS's IPv6 metadata, fd00:ec2::254
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

var (
	globalUnicast6 = netip.MustParsePrefix("2000::/3")
	nat64WellKnown = netip.MustParsePrefix("64:ff9b::/96") // RFC 6052: v4 in the last 32 bits
	sixToFour      = netip.MustParsePrefix("2002::/16")    // RFC 3056: v4 in bits 16..47
)

// classify reports whether addr is a destination that user-supplied URLs must not reach,
// and why ("loopback", "private", ...). IPv6 forms that carry an IPv4 address and are
// forwarded to it (v4-mapped, NAT64, 6to4) are judged by the embedded address: the
// kernel or a translator on the path delivers ::ffff:127.0.0.1 and 64:ff9b::a00:1 to
// 127.0.0.1 and 10.0.0.1, so judging them as IPv6 would let a private target through.
func classify(addr netip.Addr) (reason string, blocked bool) {
	if !addr.IsValid() {
		return "invalid", true
	}
	addr = addr.WithZone("") // the zone only picks an interface; fe80::1%eth0 is still fe80::1
	if addr.Is4In6() {
		return classify(addr.Unmap())
	}
	if addr.Is4() {
		return firstMatch(v4Rules, addr)
	}
	if nat64WellKnown.Contains(addr) {
		b := addr.As16()
		return embedded(netip.AddrFrom4([4]byte(b[12:16])), "NAT64")
	}
	if sixToFour.Contains(addr) {
		b := addr.As16()
		return embedded(netip.AddrFrom4([4]byte(b[2:6])), "6to4")
	}
	if reason, blocked := firstMatch(v6Rules, addr); blocked {
		return reason, true
	}
	if !globalUnicast6.Contains(addr) {
		// Covers the rest of ::/8 (deprecated v4-compatible ::a.b.c.d, SIIT ::ffff:0:a.b.c.d)
		// and every block IANA has not allocated.
		return "reserved", true
	}
	return "", false
}

func firstMatch(rules []rangeRule, addr netip.Addr) (string, bool) {
	for _, r := range rules {
		if r.prefix.Contains(addr) {
			return r.reason, true
		}
	}
	return "", false
}

func embedded(v4 netip.Addr, form string) (string, bool) {
	reason, blocked := classify(v4)
	if !blocked {
		return "", false
	}
	return reason + " " + v4.String() + " embedded in " + form, true
}

// blockedNames are host names refused before any lookup. Resolution would catch most of
// them too (they resolve to link-local or loopback addresses), but naming them gives a
// clearer error and does not depend on the resolver: cloud metadata names resolve only
// inside the cloud, and "localhost" can be remapped in /etc/hosts.
var blockedNames = map[string]string{
	"localhost":                "loopback",
	"metadata":                 "cloud metadata", // GCE, via the search domain
	"metadata.google.internal": "cloud metadata",
	"metadata.goog":            "cloud metadata",
	"instance-data":            "cloud metadata", // EC2
}

// blockedSuffixes are reserved domains whose names are never public: .localhost is
// loopback by RFC 6761, and .internal is ICANN's private-use TLD (metadata.google.internal,
// instance-data.ec2.internal, host.docker.internal, Kubernetes cluster domains).
var blockedSuffixes = []struct{ suffix, reason string }{
	{".localhost", "loopback"},
	{".internal", "internal-only"},
}

// classifyName reports whether the host name (not an IP literal) is refused by name.
func classifyName(host string) (string, bool) {
	h := normalizeName(host)
	if reason, ok := blockedNames[h]; ok {
		return reason, true
	}
	for _, s := range blockedSuffixes {
		if strings.HasSuffix(h, s.suffix) {
			return s.reason, true
		}
	}
	return "", false
}

// normalizeName folds case and the optional root dot so "LocalHost." matches "localhost".
func normalizeName(host string) string {
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

// looksNumeric reports whether a host that is not a canonical IP literal would still be
// read as an IPv4 address by some parser: "2130706433", "0x7f000001", "127.1", "0177.0.0.1".
// getaddrinfo (the cgo resolver) and many other libraries accept these inet_aton forms, so
// they are a classic way to smuggle 127.0.0.1 past a filter that only parses dotted quads.
// A real DNS name never ends in an all-numeric label (no TLD is numeric), so refusing them
// costs nothing.
func looksNumeric(host string) bool {
	h := normalizeName(host)
	last := h[strings.LastIndexByte(h, '.')+1:]
	if last == "" {
		return false
	}
	if rest, ok := strings.CutPrefix(last, "0x"); ok {
		return rest == "" || strings.Trim(rest, "0123456789abcdef") == ""
	}
	return strings.Trim(last, "0123456789") == ""
}
