package telephony_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/pgcluster"
	"github.com/parleyhq/parley/telephony"
)

// startOptionsServer runs sipp as a SIP server that answers one OPTIONS request (UDP or
// TCP) on a free loopback port, and returns its address.
func startOptionsServer(t *testing.T, transport string) string {
	t.Helper()
	port, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	mode := map[string]string{"udp": "u1", "tcp": "t1"}[transport]
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "sipp", "-sf", "testdata/uas_options.xml", "-t", mode, "-i", "127.0.0.1",
		"-p", strconv.Itoa(port), "-m", "1", "-nostdin", "-timeout", "60s")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("sipp:\n%s", tail(out.String()))
		}
	})
	return "127.0.0.1:" + strconv.Itoa(port)
}

// The trunk test sends a real SIP OPTIONS request: sipp answering over UDP and over TCP
// is reachable with its 200; a port nobody listens on, or a UDP port that never
// answers, is reported unreachable, never as a failure of the request.
func TestTrunkTest(t *testing.T) {
	t.Parallel()
	requireTools(t, true)
	e := newEnv(t)
	ctx := context.Background()
	tenant := e.tenant()

	for _, transport := range []string{"udp", "tcp"} {
		t.Run("sipp "+transport, func(t *testing.T) {
			addr := startOptionsServer(t, transport)
			tr := e.trunk(tenant, telephony.TrunkInput{OutboundAddress: ptr(addr), OutboundTransport: ptr(transport)})
			var res telephony.TestResult
			// sipp takes a moment to listen; until then the port refuses.
			deadline := time.Now().Add(15 * time.Second)
			for {
				var err error
				res, err = e.svc.TestTrunk(ctx, tenant, tr.ID)
				if err != nil {
					t.Fatal(err)
				}
				if res.Reachable || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if !res.Reachable || res.StatusCode != 200 || res.Transport != transport || res.Address != addr {
				t.Fatalf("result %+v", res)
			}
			t.Logf("%s: %+v", transport, res)
		})
	}

	dead, err := pgcluster.FreePort() // nothing listens there, TCP or UDP
	if err != nil {
		t.Fatal(err)
	}
	for _, transport := range []string{"udp", "tcp"} {
		t.Run("dead port "+transport, func(t *testing.T) {
			addr := "127.0.0.1:" + strconv.Itoa(dead)
			tr := e.trunk(tenant, telephony.TrunkInput{OutboundAddress: ptr(addr), OutboundTransport: ptr(transport)})
			res, err := e.svc.TestTrunk(ctx, tenant, tr.ID)
			if err != nil {
				t.Fatal(err)
			}
			if res.Reachable || res.StatusCode != 0 || !strings.Contains(res.Detail, "refused") {
				t.Fatalf("result %+v", res)
			}
		})
	}

	t.Run("silent udp", func(t *testing.T) {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		got := make(chan int, 8)
		go func() {
			buf := make([]byte, 4096)
			for {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					close(got)
					return
				}
				if bytes.HasPrefix(buf[:n], []byte("OPTIONS sip:")) {
					got <- n
				}
			}
		}()
		cctx, cancel := context.WithTimeout(ctx, 1600*time.Millisecond)
		defer cancel()
		res := telephony.ProbeOptions(cctx, pc.LocalAddr().String(), "udp", nil)
		if res.Reachable || !strings.Contains(res.Detail, "no answer") {
			t.Fatalf("result %+v", res)
		}
		pc.Close()
		n := 0
		for range got {
			n++
		}
		// Sent at 0 and retransmitted at 0.5 and 1.5 s (T1 doubling).
		if n < 2 {
			t.Errorf("OPTIONS sent %d times, want retransmissions", n)
		}
	})

	t.Run("no address", func(t *testing.T) {
		tr := e.trunk(tenant, telephony.TrunkInput{InboundAddresses: &[]string{"127.0.0.1"}})
		_, err := e.svc.TestTrunk(ctx, tenant, tr.ID)
		wantKind(t, err, errs.KindInvalid, "outbound_address")
	})
	t.Run("other tenant", func(t *testing.T) {
		tr := e.trunk(tenant, telephony.TrunkInput{OutboundAddress: ptr("127.0.0.1")})
		if _, err := e.svc.TestTrunk(ctx, e.tenant(), tr.ID); !errors.Is(err, telephony.ErrTrunkNotFound) {
			t.Errorf("other tenant's trunk: %v", err)
		}
	})
}

// Over TLS the probe completes a verified handshake and reads the answer from the
// encrypted stream; a server whose certificate does not verify is unreachable.
func TestProbeTLS(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(nil) // only for its self-signed certificate
	srv.StartTLS()
	cert := srv.TLS.Certificates[0]
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	srv.Close()

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				r := bufio.NewReader(c)
				var callID string
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					line = strings.TrimSpace(line)
					if v, ok := strings.CutPrefix(line, "Call-ID: "); ok {
						callID = v
					}
					if line == "" {
						break
					}
				}
				fmt.Fprintf(c, "SIP/2.0 100 Trying\r\nCall-ID: %s\r\nContent-Length: 0\r\n\r\n", callID)
				fmt.Fprintf(c, "SIP/2.0 405 Method Not Allowed\r\nCall-ID: %s\r\nContent-Length: 4\r\n\r\nabcd", callID)
			}()
		}
	}()
	addr := ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	// httptest's certificate is for 127.0.0.1 and example.com.
	res := telephony.ProbeOptions(ctx, addr, "tls", &tls.Config{RootCAs: pool})
	if !res.Reachable || res.StatusCode != 405 {
		t.Fatalf("result %+v", res)
	}
	res = telephony.ProbeOptions(ctx, addr, "tls", nil) // system roots: not trusted
	if res.Reachable || !strings.Contains(res.Detail, "TLS") {
		t.Fatalf("untrusted server: %+v", res)
	}
}
