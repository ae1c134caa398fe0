package providerhttp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	openai "github.com/sashabaranov/go-openai"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestNewClient(t *testing.T) {
	t.Parallel()
	c := NewClient()
	tr := c.Transport.(*http.Transport)
	if c.Timeout != 0 {
		t.Errorf("Timeout = %s: it would cut off a streaming answer", c.Timeout)
	}
	if tr.ResponseHeaderTimeout == 0 || tr.TLSHandshakeTimeout == 0 {
		t.Error("the phases before the first byte must be bounded")
	}
	if NewClient().Transport == tr {
		t.Error("clients share a connection pool")
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		header map[string]string
		want   time.Duration
		ok     bool
	}{
		{"seconds", map[string]string{"Retry-After": "2"}, 2 * time.Second, true},
		{"zero", map[string]string{"Retry-After": "0"}, 0, true},
		{"date", map[string]string{"Retry-After": now.Add(3 * time.Second).Format(http.TimeFormat)}, 3 * time.Second, true},
		{"past date", map[string]string{"Retry-After": now.Add(-time.Hour).Format(http.TimeFormat)}, 0, true},
		{"ms wins", map[string]string{"Retry-After": "2", "Retry-After-Ms": "150.5"}, 150500 * time.Microsecond, true},
		{"bad ms falls back", map[string]string{"Retry-After": "2", "Retry-After-Ms": "x"}, 2 * time.Second, true},
		{"garbage", map[string]string{"Retry-After": "soon"}, 0, false},
		{"negative", map[string]string{"Retry-After": "-1"}, 0, false},
		{"none", nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			for k, v := range tt.header {
				h.Set(k, v)
			}
			got, ok := ParseRetryAfter(h, now)
			if got != tt.want || ok != tt.ok {
				t.Errorf("got %s %v, want %s %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestRetryable(t *testing.T) {
	t.Parallel()
	errMine := errors.New("adapter: attempt timed out")
	p := Policy{Transient: []error{errMine}}
	tests := []struct {
		name string
		err  error
		a    Attempt
		want bool
	}{
		{"429", &openai.APIError{HTTPStatusCode: 429}, Attempt{}, true},
		{"503 wrapped", fmt.Errorf("x: %w", &openai.RequestError{HTTPStatusCode: 503}), Attempt{}, true},
		{"400", &openai.APIError{HTTPStatusCode: 400}, Attempt{}, false},
		{"401", &openai.RequestError{HTTPStatusCode: 401}, Attempt{}, false},
		{"error status beats recorded", &openai.APIError{HTTPStatusCode: 400}, Attempt{Status: 503}, false},
		{"recorded 429", errors.New("refused"), Attempt{Status: 429}, true},
		{"recorded 403", errors.New("refused"), Attempt{Status: 403}, false},
		{"transient", fmt.Errorf("open: %w", errMine), Attempt{}, true},
		{"connection reset", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, Attempt{}, true},
		{"refused", syscall.ECONNREFUSED, Attempt{}, true},
		{"unexpected EOF", io.ErrUnexpectedEOF, Attempt{}, true},
		{"dial timeout", &net.OpError{Op: "dial", Err: &timeoutErr{}}, Attempt{}, true},
		{"unknown host", &net.DNSError{Err: "no such host", IsNotFound: true}, Attempt{}, false},
		{"dns timeout", &net.DNSError{Err: "timeout", IsTimeout: true}, Attempt{}, true},
		{"bad certificate", &net.OpError{Op: "remote error", Err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}}, Attempt{}, false},
		{"plain error", errors.New("llm: bad request"), Attempt{}, false},
		{"stream error event", &openai.APIError{Message: "server had an error"}, Attempt{}, false},
		{"ws internal error", fmt.Errorf("read: %w", websocket.CloseError{Code: websocket.StatusInternalError}), Attempt{}, true},
		{"ws try again later", websocket.CloseError{Code: websocket.StatusTryAgainLater}, Attempt{}, true},
		{"ws policy violation", websocket.CloseError{Code: websocket.StatusPolicyViolation, Reason: "Invalid API key"}, Attempt{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := p.Retryable(tt.err, tt.a); got != tt.want {
				t.Errorf("Retryable(%v, %+v) = %v", tt.err, tt.a, got)
			}
		})
	}
	if (Policy{}).Retryable(errMine, Attempt{}) {
		t.Error("an error retried without being listed as transient")
	}
}

type timeoutErr struct{}

func (*timeoutErr) Error() string   { return "i/o timeout" }
func (*timeoutErr) Timeout() bool   { return true }
func (*timeoutErr) Temporary() bool { return true }

func TestPolicyNext(t *testing.T) {
	t.Parallel()
	p := Policy{MaxRetries: 2, MaxRetryAfter: time.Second}
	if _, ok := p.Next(3, &openai.APIError{HTTPStatusCode: 500}, Attempt{}); ok {
		t.Error("retried past MaxRetries")
	}
	if _, ok := p.Next(1, &openai.APIError{HTTPStatusCode: 400}, Attempt{}); ok {
		t.Error("retried a client error")
	}
	if d, ok := p.Next(1, &openai.APIError{HTTPStatusCode: 429}, Attempt{Status: 429, RetryAfter: 500 * time.Millisecond, HasRetryAfter: true}); !ok || d != 500*time.Millisecond {
		t.Errorf("Retry-After not honoured: %s %v", d, ok)
	}
	if d, ok := p.Next(1, &openai.APIError{HTTPStatusCode: 503}, Attempt{Status: 503, HasRetryAfter: true}); !ok || d != 0 {
		t.Errorf("Retry-After 0 not honoured: %s %v", d, ok)
	}
	if _, ok := p.Next(1, &openai.APIError{HTTPStatusCode: 429}, Attempt{Status: 429, RetryAfter: time.Minute, HasRetryAfter: true}); ok {
		t.Error("waited for a Retry-After beyond the limit")
	}
	for failures := 1; failures <= 2; failures++ {
		d, ok := p.Next(failures, io.ErrUnexpectedEOF, Attempt{})
		base := backoffBase << (failures - 1)
		if !ok || d < base/2 || d > base {
			t.Errorf("backoff after %d failures = %s, want in [%s, %s]", failures, d, base/2, base)
		}
	}
	many := Policy{MaxRetries: 100}
	for _, failures := range []int{5, 40, 70} {
		if d, ok := many.Next(failures, io.ErrUnexpectedEOF, Attempt{}); !ok || d < backoffCap/2 || d > backoffCap {
			t.Errorf("backoff after %d failures = %s, want capped at %s", failures, d, backoffCap)
		}
	}
}

// TestRecordingDoer checks, against a real server, that an error response's status and
// Retry-After reach the request's recorder, that its body stays readable and that the
// connection goes back to the pool although the caller never closes the body.
func TestRecordingDoer(t *testing.T) {
	t.Parallel()
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/busy":
			w.Header().Set("Retry-After", "7")
			w.Header().Set("Retry-After-Ms", "1500")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"error":{"message":"slow down"}}`)
		case "/bad":
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":{"message":"no such model"}}`)
		default:
			io.WriteString(w, "ok")
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	client := srv.Client()
	defer client.CloseIdleConnections()
	d := RecordingDoer{Client: client}

	do := func(path string, rec Recorder) (*http.Response, string) {
		t.Helper()
		ctx := context.Background()
		if rec != nil {
			ctx = WithRecorder(ctx, rec)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := d.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body) // and, like go-openai, never Close
		return resp, string(body)
	}

	var busy Attempt
	resp, body := do("/busy", &busy)
	if resp.StatusCode != http.StatusTooManyRequests || body != `{"error":{"message":"slow down"}}` {
		t.Errorf("429 passed on as %d %q", resp.StatusCode, body)
	}
	if want := (Attempt{Status: 429, RetryAfter: 1500 * time.Millisecond, HasRetryAfter: true}); busy != want {
		t.Errorf("recorded %+v, want %+v", busy, want)
	}
	var bad Attempt
	if resp, _ := do("/bad", &bad); resp.StatusCode != http.StatusBadRequest || bad != (Attempt{Status: 400}) {
		t.Errorf("400: status %d, recorded %+v", resp.StatusCode, bad)
	}
	do("/bad", nil) // no recorder: nothing to tell
	ok := Attempt{Status: -1}
	if _, body := do("/ok", &ok); body != "ok" || ok.Status != -1 {
		t.Errorf("success: body %q, recorded %+v", body, ok)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for 4 sequential requests: error bodies pin connections", n)
	}
}

func TestHandshakeAttempt(t *testing.T) {
	t.Parallel()
	if a := HandshakeAttempt(nil); a != (Attempt{}) {
		t.Errorf("no response: %+v", a)
	}
	if a := HandshakeAttempt(&http.Response{StatusCode: http.StatusSwitchingProtocols, Header: http.Header{"Retry-After": {"3"}}}); a != (Attempt{}) {
		t.Errorf("accepted handshake: %+v", a)
	}
	a := HandshakeAttempt(&http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{"Retry-After": {"3"}}})
	if want := (Attempt{Status: 503, RetryAfter: 3 * time.Second, HasRetryAfter: true}); a != want {
		t.Errorf("refused handshake: %+v, want %+v", a, want)
	}
}

func TestSleep(t *testing.T) {
	t.Parallel()
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Errorf("Sleep = %v", err)
	}
	if err := Sleep(context.Background(), 0); err != nil {
		t.Errorf("Sleep(0) = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
		t.Errorf("Sleep on a cancelled context = %v after %s", err, time.Since(start))
	}
	if err := Sleep(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep(0) on a cancelled context = %v", err)
	}
}
