package telephony

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/parleyhq/parley/internal/errs"
)

// TestTrunk checks that the trunk's outbound address answers SIP: it sends an OPTIONS
// request over the trunk's transport and reports the answer. Any SIP response, even an
// error status such as 404 or 405, means a SIP server is there and reachable; no
// answer, a refused connection or a name that does not resolve report Reachable false
// (it is the report, not a failure of the request).
func (s *Service) TestTrunk(ctx context.Context, tenantID, id string) (TestResult, error) {
	t, err := s.GetTrunk(ctx, tenantID, id)
	if err != nil {
		return TestResult{}, err
	}
	if t.OutboundAddress == "" {
		return TestResult{}, errInvalidField("outbound_address", "the trunk has no outbound address to test")
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.TestTimeout)
	defer cancel()
	// Checked again: the name may resolve elsewhere now than when it was saved.
	if err := s.checkAddress(ctx, "outbound_address", t.OutboundAddress); err != nil {
		if e, ok := errs.As(err); ok && e.Kind == errs.KindInvalid {
			return TestResult{Address: t.OutboundAddress, Transport: t.OutboundTransport, Detail: "not probed: " + e.Fields["outbound_address"]}, nil
		}
		return TestResult{}, err
	}
	return ProbeOptions(ctx, t.OutboundAddress, t.OutboundTransport, s.cfg.TLSConfig), nil
}

// SIP's default ports and its timer T1, the first UDP retransmission interval (RFC 3261
// §17.1.1.1); each retransmission doubles it.
const (
	sipPort  = "5060"
	sipsPort = "5061"
	sipT1    = 500 * time.Millisecond
)

// ProbeOptions sends one SIP OPTIONS request to address (host[:port]) over transport
// (udp, tcp or tls) and waits, until ctx ends (give it a deadline), for the final
// response. tlsConf (nil: the system's roots) verifies a TLS server; its ServerName
// defaults to the address's host.
func ProbeOptions(ctx context.Context, address, transport string, tlsConf *tls.Config) TestResult {
	res := TestResult{Address: address, Transport: transport}
	host, port := address, ""
	if h, p, err := net.SplitHostPort(address); err == nil {
		host, port = h, p
	}
	host = strings.Trim(host, "[]")
	if port == "" {
		port = sipPort
		if transport == TransportTLS {
			port = sipsPort
		}
	}
	target := net.JoinHostPort(host, port)
	start := time.Now()
	done := func(code int, detail string) TestResult {
		res.StatusCode = code
		res.Reachable = code > 0
		res.LatencyMS = time.Since(start).Milliseconds()
		res.Detail = detail
		return res
	}

	var d net.Dialer
	network := "udp"
	if transport != TransportUDP {
		network = "tcp"
	}
	conn, err := d.DialContext(ctx, network, target)
	if err != nil {
		return done(0, "cannot connect: "+dialReason(err))
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	// Closing the connection unblocks a read when ctx ends early.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if transport == TransportTLS {
		conf := &tls.Config{MinVersion: tls.VersionTLS12}
		if tlsConf != nil {
			conf = tlsConf.Clone()
		}
		if conf.ServerName == "" {
			conf.ServerName = host
		}
		tc := tls.Client(conn, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return done(0, "TLS handshake failed: "+err.Error())
		}
		conn = tc
	}

	callID := randToken() + "@parley"
	req := optionsRequest(conn.LocalAddr(), host, port, transport, callID)
	if _, err := conn.Write(req); err != nil {
		return done(0, "cannot send: "+dialReason(err))
	}

	if network == "udp" {
		// UDP: retransmit at T1, 2·T1, 4·T1… until an answer or the deadline.
		resp := make(chan probeReply, 1)
		go func() { resp <- readUDPReplies(conn, callID) }()
		interval := sipT1
		timer := time.NewTimer(interval)
		defer timer.Stop()
		for {
			select {
			case r := <-resp:
				if r.err != nil {
					if ctx.Err() != nil {
						return done(0, "no answer within "+time.Since(start).Round(time.Millisecond).String())
					}
					return done(0, "no answer: "+dialReason(r.err))
				}
				return done(r.code, strconv.Itoa(r.code)+" "+r.reason)
			case <-timer.C:
				conn.Write(req)
				interval *= 2
				timer.Reset(interval)
			case <-ctx.Done():
				conn.Close()
				<-resp
				return done(0, "no answer within "+time.Since(start).Round(time.Millisecond).String())
			}
		}
	}
	r := readStreamReply(bufio.NewReader(conn), callID)
	if r.err != nil {
		if ctx.Err() != nil || errors.Is(r.err, net.ErrClosed) {
			return done(0, "no answer within "+time.Since(start).Round(time.Millisecond).String())
		}
		return done(0, "no answer: "+dialReason(r.err))
	}
	return done(r.code, strconv.Itoa(r.code)+" "+r.reason)
}

type probeReply struct {
	code   int
	reason string
	err    error
}

// readUDPReplies reads datagrams until a final response to callID arrives (provisional
// 1xx answers and strays are skipped).
func readUDPReplies(conn net.Conn, callID string) probeReply {
	buf := make([]byte, 65535)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return probeReply{err: err}
		}
		code, reason, id, ok := parseResponse(bufio.NewReader(strings.NewReader(string(buf[:n]))))
		if ok && id == callID && code >= 200 {
			return probeReply{code: code, reason: reason}
		}
	}
}

// readStreamReply reads responses from a TCP or TLS stream until a final one to callID.
func readStreamReply(r *bufio.Reader, callID string) probeReply {
	for {
		code, reason, id, ok := parseResponse(r)
		if !ok {
			return probeReply{err: io.ErrUnexpectedEOF}
		}
		if id == callID && code >= 200 {
			return probeReply{code: code, reason: reason}
		}
	}
}

// parseResponse reads one SIP response's status line and headers (and skips its body):
// the status code, reason phrase and Call-ID.
func parseResponse(r *bufio.Reader) (code int, reason, callID string, ok bool) {
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, "", "", false
	}
	proto, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	if proto != "SIP/2.0" {
		return 0, "", "", false
	}
	codeStr, reason, _ := strings.Cut(rest, " ")
	code, err = strconv.Atoi(codeStr)
	if err != nil || code < 100 || code > 699 {
		return 0, "", "", false
	}
	length := 0
	for {
		h, err := r.ReadString('\n')
		if err != nil {
			return 0, "", "", false
		}
		h = strings.TrimSpace(h)
		if h == "" {
			break
		}
		name, value, _ := strings.Cut(h, ":")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "call-id", "i":
			callID = strings.TrimSpace(value)
		case "content-length", "l":
			length, _ = strconv.Atoi(strings.TrimSpace(value))
		}
	}
	if length > 0 {
		io.CopyN(io.Discard, r, int64(length))
	}
	return code, reason, callID, true
}

// optionsRequest builds an OPTIONS request (RFC 3261 §11) from local to host:port.
func optionsRequest(local net.Addr, host, port, transport, callID string) []byte {
	hostport := net.JoinHostPort(host, port)
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		hostport = "[" + host + "]:" + port
	}
	uri := "sip:" + hostport
	if transport != TransportUDP {
		uri += ";transport=" + transport
	}
	via := strings.ToUpper(transport)
	var b strings.Builder
	fmt.Fprintf(&b, "OPTIONS %s SIP/2.0\r\n", uri)
	fmt.Fprintf(&b, "Via: SIP/2.0/%s %s;branch=z9hG4bK%s;rport\r\n", via, local.String(), randToken())
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: <sip:parley@%s>;tag=%s\r\n", local.String(), randToken())
	fmt.Fprintf(&b, "To: <%s>\r\n", uri)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", callID)
	b.WriteString("CSeq: 1 OPTIONS\r\n")
	fmt.Fprintf(&b, "Contact: <sip:parley@%s>\r\n", local.String())
	b.WriteString("Accept: application/sdp\r\n")
	b.WriteString("User-Agent: Parley\r\n")
	b.WriteString("Content-Length: 0\r\n\r\n")
	return []byte(b.String())
}

func randToken() string { return strings.ToLower(rand.Text()[:16]) }

// dialReason shortens a network error to what a user can act on.
func dialReason(err error) string {
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		return "host not found (" + dnsErr.Name + ")"
	case strings.Contains(err.Error(), "connection refused"):
		return "connection refused (nothing listens on that port)"
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(err.Error(), "i/o timeout"):
		return "timed out"
	}
	return err.Error()
}
