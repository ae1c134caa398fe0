package safehttp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// These tests never send a packet beyond loopback: "public" addresses are only ever
// classified, never dialed, and every client gets a fake resolver (unknown names are
// NXDOMAIN), so not even a DNS query leaves the machine.

// fakeDNS maps lower-case names to addresses; anything else does not exist.
func fakeDNS(names map[string][]string) func(context.Context, string, string) ([]netip.Addr, error) {
	return func(_ context.Context, _, host string) ([]netip.Addr, error) {
		ips, ok := names[normalizeName(host)]
		if !ok {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		addrs := make([]netip.Addr, len(ips))
		for i, ip := range ips {
			addrs[i] = netip.MustParseAddr(ip)
		}
		return addrs, nil
	}
}

// newClient builds a client whose pooled connections are closed at the end of the test,
// so goleak sees no lingering connection goroutines.
func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	if cfg.lookup == nil {
		cfg.lookup = fakeDNS(nil)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// newServer starts a loopback server and counts the requests that reach it.
func newServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func get(t *testing.T, c *Client, rawURL string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func TestClassify(t *testing.T) {
	t.Parallel()
	blocked := map[string]string{ // address -> a word the reason must contain
		"127.0.0.1":       "loopback",
		"127.255.255.254": "loopback",
		"::1":             "loopback",
		"0.0.0.0":         "unspecified",
		"::":              "unspecified",
		"0.1.2.3":         "this network",
		"10.0.0.1":        "private",
		"10.255.255.255":  "private",
		"172.16.0.1":      "private",
		"172.31.255.255":  "private",
		"192.168.1.1":     "private",
		"fc00::1":         "private",
		"fd00:ec2::254":   "private", // AWS IPv6 metadata
		"169.254.169.254": "metadata",
		"169.254.1.1":     "link-local",
		"fe80::1":         "link-local",
		"fe80::1%eth0":    "link-local",
		"fec0::1":         "site-local",
		"100.64.0.1":      "CGNAT",
		"100.100.100.200": "CGNAT", // Alibaba metadata
		"100.127.255.255": "CGNAT",
		"224.0.0.1":       "multicast",
		"239.255.255.250": "multicast",
		"ff02::1":         "multicast",
		"255.255.255.255": "broadcast",
		"240.0.0.1":       "reserved",
		"198.18.0.1":      "benchmarking",
		"198.19.255.255":  "benchmarking",
		"192.0.0.8":       "IETF",
		"192.0.2.1":       "documentation",
		"198.51.100.7":    "documentation",
		"203.0.113.9":     "documentation",
		"2001:db8::1":     "documentation",
		"3fff::1":         "documentation",
		"192.88.99.1":     "6to4 relay",
		"100::1":          "discard",
		"2001::1":         "IETF", // Teredo
		"5f00::1":         "SRv6",
		// IPv6 forms carrying IPv4 are judged by the IPv4 they carry.
		"::ffff:127.0.0.1":       "loopback",
		"::ffff:10.0.0.1":        "private",
		"::ffff:169.254.169.254": "metadata",
		"::ffff:0.0.0.0":         "unspecified",
		"64:ff9b::7f00:1":        "loopback 127.0.0.1 embedded in NAT64",
		"64:ff9b::a9fe:a9fe":     "metadata 169.254.169.254 embedded in NAT64",
		"64:ff9b::c0a8:101":      "private 192.168.1.1 embedded in NAT64",
		"64:ff9b:1::a00:1":       "NAT64 local-use",
		"2002:7f00:1::1":         "loopback 127.0.0.1 embedded in 6to4",
		"2002:a00:1::":           "private 10.0.0.1 embedded in 6to4",
		"2002:a9fe:a9fe::1":      "metadata 169.254.169.254 embedded in 6to4",
		"::127.0.0.1":            "reserved", // deprecated IPv4-compatible
		"::ffff:0:7f00:1":        "reserved", // SIIT IPv4-translated
		"4000::1":                "reserved", // outside 2000::/3
		"1fff:ffff::1":           "reserved",
	}
	allowed := []string{
		"8.8.8.8", "1.1.1.1", "93.184.215.14",
		"2606:4700::1", "2001:4860:4860::8888", "2a00:1450:4001::1",
		"::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
		// Neighbours of blocked ranges, to catch off-by-one prefixes.
		"9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0", "126.255.255.255",
		"128.0.0.0", "169.253.255.255", "169.255.0.0", "172.15.255.255", "172.32.0.0",
		"192.167.255.255", "192.169.0.0", "198.17.255.255", "198.20.0.0", "223.255.255.255",
		"2000::1", "3fff:1000::1", "2001:200::1",
	}
	for addr, want := range blocked {
		t.Run(addr, func(t *testing.T) {
			t.Parallel()
			reason, bad := classify(netip.MustParseAddr(addr))
			if !bad {
				t.Fatalf("classify(%s) allowed it, want blocked (%s)", addr, want)
			}
			if !strings.Contains(reason, want) {
				t.Fatalf("classify(%s) reason %q, want it to mention %q", addr, reason, want)
			}
		})
	}
	for _, addr := range allowed {
		t.Run(addr, func(t *testing.T) {
			t.Parallel()
			if reason, bad := classify(netip.MustParseAddr(addr)); bad {
				t.Fatalf("classify(%s) blocked it (%s), want allowed", addr, reason)
			}
		})
	}
	if _, bad := classify(netip.Addr{}); !bad {
		t.Fatal("the zero netip.Addr is allowed")
	}
}

func TestClassifyNameAndNumeric(t *testing.T) {
	t.Parallel()
	names := map[string]bool{ // host -> refused by name
		"localhost": true, "LOCALHOST.": true, "app.localhost": true,
		"metadata": true, "metadata.google.internal": true, "Metadata.Google.Internal.": true,
		"metadata.goog": true, "instance-data": true, "instance-data.ec2.internal": true,
		"host.docker.internal": true,
		"example.com":          false, "internal.example.com": false, "localhost.example.com": false,
		"mymetadata.goog.example": false,
	}
	for host, want := range names {
		if _, got := classifyName(host); got != want {
			t.Errorf("classifyName(%q) = %v, want %v", host, got, want)
		}
	}
	numeric := map[string]bool{
		"2130706433": true, "0x7f000001": true, "0X7F000001": true, "127.1": true,
		"0177.0.0.1": true, "0x7f.0.0.1": true, "127.0.0.1.": true, "0x": true,
		"example.com": false, "1password.com": false, "a1": false, "0xdeadbeef.com": false,
		"1.example": false,
	}
	for host, want := range numeric {
		if got := looksNumeric(host); got != want {
			t.Errorf("looksNumeric(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]Config{
		"negative Timeout":          {Timeout: -time.Second},
		"negative MaxRedirects":     {MaxRedirects: -1},
		"negative MaxResponseBytes": {MaxResponseBytes: -1},
		"UserAgent with newline":    {UserAgent: "Parley\r\nX-Evil: 1"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := New(cfg); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}

	c := newClient(t, Config{})
	want := Config{Timeout: 10 * time.Second, MaxRedirects: 5, MaxResponseBytes: 10 << 20, UserAgent: "Parley/1.0"}
	got := c.cfg
	if got.AllowPrivate != want.AllowPrivate || got.Timeout != want.Timeout || got.MaxRedirects != want.MaxRedirects ||
		got.MaxResponseBytes != want.MaxResponseBytes || got.UserAgent != want.UserAgent {
		t.Fatalf("defaults = %+v, want %+v", got, want)
	}
	if got.lookup == nil || got.classifyAddr == nil {
		t.Fatal("no default resolver or classifier")
	}
	tr, ok := c.hc.Transport.(*transport)
	if !ok {
		t.Fatalf("transport is %T", c.hc.Transport)
	}
	if tr.base.Proxy != nil {
		t.Fatal("the transport uses a proxy; the dial-time check would only see the proxy")
	}
	if c.dialer.Control == nil {
		t.Fatal("the guarded dialer has no Control hook")
	}
	if c.hc.Timeout != 10*time.Second {
		t.Fatalf("client timeout %v", c.hc.Timeout)
	}

	// HTTPClient hands out copies: changing one does not loosen the Client.
	hc := c.HTTPClient()
	hc.CheckRedirect, hc.Timeout = nil, 0
	if c.hc.CheckRedirect == nil || c.hc.Timeout == 0 {
		t.Fatal("changing the HTTPClient copy changed the Client")
	}
	if c.HTTPClient().Transport != c.hc.Transport {
		t.Fatal("HTTPClient does not share the guarded transport")
	}
}

func TestLoopbackServer(t *testing.T) {
	t.Parallel()
	srv, hits := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.UserAgent())
	})

	t.Run("refused by default", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, Config{})
		_, _, err := get(t, c, srv.URL)
		if !errors.Is(err, ErrBlocked) {
			t.Fatalf("err = %v, want ErrBlocked", err)
		}
		for _, want := range []string{"127.0.0.1 is loopback", "PARLEY_ALLOW_PRIVATE_URLS=true"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not say %q", err, want)
			}
		}
		// The *http.Client handed to libraries is guarded the same way.
		resp, err := c.HTTPClient().Get(srv.URL)
		if err == nil {
			resp.Body.Close()
		}
		if !errors.Is(err, ErrBlocked) {
			t.Fatalf("HTTPClient().Get err = %v, want ErrBlocked", err)
		}
		if err := c.CheckURL(t.Context(), srv.URL); !errors.Is(err, ErrBlocked) {
			t.Fatalf("CheckURL err = %v, want ErrBlocked", err)
		}
	})

	t.Run("allowed with AllowPrivate", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, Config{AllowPrivate: true})
		if err := c.CheckURL(t.Context(), srv.URL); err != nil {
			t.Fatal(err)
		}
		status, body, err := get(t, c, srv.URL)
		if err != nil || status != http.StatusOK {
			t.Fatalf("status %d, err %v", status, err)
		}
		if body != "Parley/1.0" {
			t.Fatalf("User-Agent %q, want the default", body)
		}
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
		req.Header.Set("User-Agent", "custom/2")
		resp, err := c.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if b, _ := io.ReadAll(resp.Body); string(b) != "custom/2" {
			t.Fatalf("User-Agent %q, want the caller's", b)
		}
		if req.Header.Get("User-Agent") != "custom/2" {
			t.Fatal("the caller's request was modified")
		}
	})

	t.Cleanup(func() {
		// Runs after both subtests: only the AllowPrivate ones reached the server.
		if n := hits.Load(); n != 2 {
			t.Errorf("server saw %d requests, want 2 (the refused ones must never connect)", n)
		}
	})
}

// A name resolving to loopback is refused when dialing, whatever CheckURL said: the
// resolver answers a public address to the check and 127.0.0.1 to the dial, as a
// rebinding DNS server would.
func TestDialTimeCheck(t *testing.T) {
	t.Parallel()
	srv, hits := newServer(t, func(w http.ResponseWriter, r *http.Request) {})
	port := srv.Listener.Addr().(*net.TCPAddr).Port

	t.Run("rebinding", func(t *testing.T) {
		t.Parallel()
		var lookups atomic.Int64
		c := newClient(t, Config{lookup: func(_ context.Context, _, host string) ([]netip.Addr, error) {
			if lookups.Add(1) == 1 {
				return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil // never dialed
			}
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}})
		u := fmt.Sprintf("http://rebind.test:%d/", port)
		if err := c.CheckURL(t.Context(), u); err != nil {
			t.Fatalf("CheckURL (public answer) = %v", err)
		}
		_, _, err := get(t, c, u)
		if !errors.Is(err, ErrBlocked) {
			t.Fatalf("err = %v, want ErrBlocked", err)
		}
		if !strings.Contains(err.Error(), `"rebind.test" resolves to a non-public address (127.0.0.1 is loopback)`) {
			t.Fatalf("error %q does not name the host and address", err)
		}
	})

	t.Run("without CheckURL", func(t *testing.T) {
		t.Parallel()
		for _, ips := range [][]string{{"127.0.0.1"}, {"::ffff:127.0.0.1"}, {"127.0.0.1", "::1"}} {
			c := newClient(t, Config{lookup: fakeDNS(map[string][]string{"loop.test": ips})})
			_, _, err := get(t, c, fmt.Sprintf("http://loop.test:%d/", port))
			if !errors.Is(err, ErrBlocked) {
				t.Fatalf("%v: err = %v, want ErrBlocked", ips, err)
			}
		}
	})

	t.Run("one bad address spoils the name", func(t *testing.T) {
		t.Parallel()
		// Checked without dialing: the public address must never be contacted.
		c := newClient(t, Config{lookup: fakeDNS(map[string][]string{"mixed.test": {"93.184.215.14", "10.0.0.1"}})})
		_, err := c.resolvePublic(t.Context(), "ip", "mixed.test")
		if !errors.Is(err, ErrBlocked) || !strings.Contains(err.Error(), "10.0.0.1 is private") {
			t.Fatalf("err = %v, want ErrBlocked naming 10.0.0.1", err)
		}
	})

	t.Run("socket control", func(t *testing.T) {
		t.Parallel()
		// Control sees the literal address just before connect; calling it directly
		// checks the last line of defence without connecting anywhere.
		c := newClient(t, Config{})
		for addr, wantBlocked := range map[string]bool{
			"127.0.0.1:80": true, "[::1]:443": true, "[::ffff:10.0.0.1]:80": true,
			"169.254.169.254:80": true, "[fe80::1%eth0]:80": true, "nonsense": true,
			"8.8.8.8:443": false, "[2606:4700::1]:443": false,
		} {
			err := c.control("tcp", addr, nil)
			if got := errors.Is(err, ErrBlocked); got != wantBlocked {
				t.Errorf("control(%s) = %v, want blocked=%v", addr, err, wantBlocked)
			}
		}
	})

	t.Cleanup(func() {
		if n := hits.Load(); n != 0 {
			t.Errorf("server saw %d requests, want none", n)
		}
	})
}

func TestRedirects(t *testing.T) {
	t.Parallel()
	var secretHits atomic.Int64
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/hop/"):
			n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/hop/"))
			if n == 0 {
				fmt.Fprint(w, "done")
				return
			}
			http.Redirect(w, r, fmt.Sprintf("/hop/%d", n-1), http.StatusFound)
		case r.URL.Path == "/to":
			w.Header().Set("Location", r.URL.Query().Get("u"))
			w.WriteHeader(http.StatusFound)
		case r.URL.Path == "/secret":
			secretHits.Add(1)
		}
	})
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	to := func(base, target string) string { return base + "/to?u=" + url.QueryEscape(target) }

	t.Run("limit", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, Config{AllowPrivate: true, MaxRedirects: 2})
		for hops, wantErr := range map[int]error{0: nil, 1: nil, 2: nil, 3: ErrTooManyRedirects, 10: ErrTooManyRedirects} {
			status, body, err := get(t, c, fmt.Sprintf("%s/hop/%d", srv.URL, hops))
			if wantErr == nil && (err != nil || status != http.StatusOK || body != "done") {
				t.Errorf("%d hops: status %d, body %q, err %v; want done", hops, status, body, err)
			}
			if wantErr != nil && !errors.Is(err, wantErr) {
				t.Errorf("%d hops: err %v, want %v", hops, err, wantErr)
			}
		}
		// The default limit is 5.
		d := newClient(t, Config{AllowPrivate: true})
		if _, _, err := get(t, d, srv.URL+"/hop/5"); err != nil {
			t.Errorf("5 hops with the default limit: %v", err)
		}
		if _, _, err := get(t, d, srv.URL+"/hop/6"); !errors.Is(err, ErrTooManyRedirects) {
			t.Errorf("6 hops with the default limit: err %v, want ErrTooManyRedirects", err)
		}
	})

	t.Run("bad schemes", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, Config{AllowPrivate: true})
		for _, target := range []string{
			"file:///etc/passwd",
			"gopher://127.0.0.1:70/_GET",
			"ftp://127.0.0.1/",
			"dict://127.0.0.1:11211/stat",
			fmt.Sprintf("http://user:pw@127.0.0.1:%d/secret", port),
		} {
			_, _, err := get(t, c, to(srv.URL, target))
			if !errors.Is(err, ErrBadURL) || !strings.Contains(err.Error(), "redirect refused") {
				t.Errorf("redirect to %s: err %v, want ErrBadURL", target, err)
			}
		}
	})

	t.Run("public to private", func(t *testing.T) {
		t.Parallel()
		// Pretend 127.0.0.1 is public so the first hop connects; 127.0.0.2 (also loopback,
		// so nothing leaves the machine if the guard failed) stands for the private target.
		c := newClient(t, Config{
			lookup: fakeDNS(map[string][]string{"public.test": {"127.0.0.1"}, "private.test": {"127.0.0.2"}}),
			classifyAddr: func(a netip.Addr) (string, bool) {
				if a == netip.MustParseAddr("127.0.0.1") {
					return "", false
				}
				return classify(a)
			},
		})
		base := fmt.Sprintf("http://public.test:%d", port)
		if _, _, err := get(t, c, base+"/hop/1"); err != nil {
			t.Fatalf("public redirect chain: %v", err)
		}
		for _, target := range []string{
			fmt.Sprintf("http://private.test:%d/secret", port),       // caught when dialing
			fmt.Sprintf("http://127.0.0.2:%d/secret", port),          // caught in CheckRedirect
			fmt.Sprintf("http://[::ffff:127.0.0.2]:%d/secret", port), // v4-mapped
			fmt.Sprintf("http://metadata.google.internal:%d/", port), // by name
		} {
			if _, _, err := get(t, c, to(base, target)); !errors.Is(err, ErrBlocked) {
				t.Errorf("redirect to %s: err %v, want ErrBlocked", target, err)
			}
		}
		if n := secretHits.Load(); n != 0 {
			t.Errorf("the private target was reached %d times", n)
		}
	})
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	dns := fakeDNS(map[string][]string{
		"example.com":  {"93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"},
		"two.example":  {"93.184.215.14", "10.0.0.1"},
		"meta.example": {"169.254.169.254"},
	})
	servfail := func(ctx context.Context, network, host string) ([]netip.Addr, error) {
		if host == "servfail.example" {
			return nil, &net.DNSError{Err: "server misbehaving", Name: host, IsTemporary: true}
		}
		if host == "empty.example" {
			return nil, nil
		}
		return dns(ctx, network, host)
	}
	guarded := newClient(t, Config{lookup: servfail})
	open := newClient(t, Config{AllowPrivate: true, lookup: servfail})

	errOther := errors.New("neither sentinel")
	cases := []struct {
		url                string
		guarded, allowPriv error // nil, ErrBadURL, ErrBlocked or errOther
	}{
		{"https://example.com/hook", nil, nil},
		{"HTTPS://Example.COM/hook?x=1#f", nil, nil},
		{"http://example.com:8080/", nil, nil},
		{"http://8.8.8.8/", nil, nil},
		{"http://[2606:4700::1]:8443/", nil, nil},

		{"", ErrBadURL, ErrBadURL},
		{"example.com/hook", ErrBadURL, ErrBadURL},
		{"//example.com/hook", ErrBadURL, ErrBadURL},
		{"ftp://example.com/", ErrBadURL, ErrBadURL},
		{"file:///etc/passwd", ErrBadURL, ErrBadURL},
		{"gopher://example.com/", ErrBadURL, ErrBadURL},
		{"javascript:alert(1)", ErrBadURL, ErrBadURL},
		{"http://", ErrBadURL, ErrBadURL},
		{"http:///path", ErrBadURL, ErrBadURL},
		{"http://:8080/", ErrBadURL, ErrBadURL},
		{"http:example.com", ErrBadURL, ErrBadURL},
		{"http://user@127.0.0.1/", ErrBadURL, ErrBadURL},
		{"https://user:pw@example.com/", ErrBadURL, ErrBadURL},
		{"http://example.com@127.0.0.1/", ErrBadURL, ErrBadURL},
		{"http://example.com:99999/", ErrBadURL, ErrBadURL},
		{"http://example.com:0/", ErrBadURL, ErrBadURL},
		{"http://[::1", ErrBadURL, ErrBadURL},
		{"http://exa mple.com/", ErrBadURL, ErrBadURL},
		{"http://2130706433/", ErrBadURL, ErrBadURL},
		{"http://0x7f000001/", ErrBadURL, ErrBadURL},
		{"http://127.1/", ErrBadURL, ErrBadURL},
		{"http://0177.0.0.1/", ErrBadURL, ErrBadURL},

		{"http://127.0.0.1/", ErrBlocked, nil},
		{"http://127.0.0.1:11434/api", ErrBlocked, nil},
		{"http://0.0.0.0:8080/", ErrBlocked, nil},
		{"http://10.1.2.3/", ErrBlocked, nil},
		{"http://[::1]/", ErrBlocked, nil},
		{"http://[::]/", ErrBlocked, nil},
		{"http://[::ffff:127.0.0.1]/", ErrBlocked, nil},
		{"http://[::ffff:7f00:1]/", ErrBlocked, nil},
		{"http://[64:ff9b::a9fe:a9fe]/", ErrBlocked, nil},
		{"http://[fe80::1%25eth0]/", ErrBlocked, nil},
		{"http://169.254.169.254/latest/meta-data/", ErrBlocked, nil},
		{"http://metadata.google.internal/computeMetadata/v1/", ErrBlocked, nil},
		{"http://METADATA.GOOGLE.INTERNAL./", ErrBlocked, nil},
		{"http://localhost:11434/", ErrBlocked, nil},
		{"http://ollama.localhost/", ErrBlocked, nil},
		{"http://host.docker.internal:8000/", ErrBlocked, nil},
		{"http://two.example/", ErrBlocked, nil},
		{"http://meta.example/", ErrBlocked, nil},

		// With AllowPrivate nothing is resolved, so a name that does not exist passes.
		{"http://nx.example/", ErrBadURL, nil},
		{"http://empty.example/", ErrBadURL, nil},
		{"http://servfail.example/", errOther, nil},
	}
	for _, tc := range cases {
		t.Run(tc.url, func(t *testing.T) {
			t.Parallel()
			for _, mode := range []struct {
				c    *Client
				want error
			}{{guarded, tc.guarded}, {open, tc.allowPriv}} {
				err := mode.c.CheckURL(t.Context(), tc.url)
				switch {
				case mode.want == nil && err != nil:
					t.Errorf("AllowPrivate=%v: err %v, want nil", mode.c.cfg.AllowPrivate, err)
				case mode.want == errOther && (err == nil || errors.Is(err, ErrBadURL) || errors.Is(err, ErrBlocked)):
					t.Errorf("AllowPrivate=%v: err %v, want an error wrapping neither sentinel", mode.c.cfg.AllowPrivate, err)
				case mode.want != nil && mode.want != errOther && !errors.Is(err, mode.want):
					t.Errorf("AllowPrivate=%v: err %v, want %v", mode.c.cfg.AllowPrivate, err, mode.want)
				}
				if errors.Is(err, ErrBlocked) && !strings.HasSuffix(err.Error(), allowHint) {
					t.Errorf("blocked error %q does not say how to allow it", err)
				}
			}
		})
	}

	// Do applies the same URL rules before any connection.
	for _, raw := range []string{"ftp://127.0.0.1/", "http://user@127.0.0.1/", "http://2130706433/"} {
		if _, _, err := get(t, open, raw); !errors.Is(err, ErrBadURL) {
			t.Errorf("Do(%s): err %v, want ErrBadURL", raw, err)
		}
	}
}

func TestResponseCap(t *testing.T) {
	t.Parallel()
	const limit = 16
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		body := strings.Repeat("x", n)
		if r.URL.Query().Has("chunked") {
			// No Content-Length: the cap must hold while streaming, not only on the header.
			for i := range body {
				io.WriteString(w, body[i:i+1])
				w.(http.Flusher).Flush()
			}
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		io.WriteString(w, body)
	})
	c := newClient(t, Config{AllowPrivate: true, MaxResponseBytes: limit})

	for _, tc := range []struct {
		query   string
		tooLong bool
	}{
		{"n=0", false},
		{"n=16", false},
		{"n=17", true},
		{"n=100000", true},
		{"n=16&chunked", false},
		{"n=17&chunked", true},
		{"n=100&chunked", true},
	} {
		t.Run(tc.query, func(t *testing.T) {
			t.Parallel()
			status, body, err := get(t, c, srv.URL+"/?"+tc.query)
			if status != http.StatusOK {
				t.Fatalf("status %d, err %v", status, err)
			}
			if tc.tooLong != errors.Is(err, ErrTooLarge) {
				t.Fatalf("err %v, want ErrTooLarge=%v", err, tc.tooLong)
			}
			if len(body) > limit {
				t.Fatalf("read %d bytes past a cap of %d", len(body), limit)
			}
		})
	}
	t.Run("HEAD", func(t *testing.T) {
		t.Parallel()
		// A HEAD reply declares a long body it does not send; that is not an error.
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodHead, srv.URL+"/?n=100", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPartialDeadline(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		left      time.Duration
		remaining int
		want      time.Duration
	}{
		{10 * time.Second, 1, 10 * time.Second},
		{10 * time.Second, 2, 5 * time.Second},
		{10 * time.Second, 10, 2 * time.Second}, // never below 2s while there is 2s left
		{time.Second, 3, time.Second},
		{-time.Second, 2, -time.Second},
	} {
		if got := partialDeadline(now, now.Add(tc.left), tc.remaining).Sub(now); got != tc.want {
			t.Errorf("partialDeadline(%v left, %d addrs) = %v, want %v", tc.left, tc.remaining, got, tc.want)
		}
	}
}
