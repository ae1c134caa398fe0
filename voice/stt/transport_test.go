package stt

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice/internal/providerhttp"
)

// The shared retry policy is tested in voice/internal/providerhttp; here, what stt adds:
// its attempt timeout is retried, and a refused Deepgram handshake is read into an
// Attempt that the policy honours.
func TestRetryPolicyAttemptTimeoutAndHandshake(t *testing.T) {
	t.Parallel()
	p := providerhttp.Policy{MaxRetries: 2, MaxRetryAfter: 5 * time.Second, Transient: transientErrs}
	if _, ok := p.Next(1, fmt.Errorf("%w after 10s", errAttemptTimeout), providerhttp.Of(nil)); !ok {
		t.Error("attempt timeout not retried")
	}
	hs := providerhttp.HandshakeAttempt(&http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"2"}}})
	info := &hs
	if info.Status != 429 || !info.HasRetryAfter || info.RetryAfter != 2*time.Second {
		t.Fatalf("HandshakeAttempt = %+v", *info)
	}
	if d, ok := p.Next(1, fmt.Errorf("handshake refused with status %d", info.Status), providerhttp.Of(info)); !ok || d != 2*time.Second {
		t.Errorf("refused handshake: wait %s, retry %v; want 2s, true", d, ok)
	}
	if info := providerhttp.HandshakeAttempt(&http.Response{StatusCode: http.StatusUnauthorized}); info.HasRetryAfter {
		t.Errorf("401 without Retry-After = %+v", info)
	} else if _, ok := p.Next(1, fmt.Errorf("handshake refused with status %d", info.Status), info); ok {
		t.Error("401 retried")
	}
	if info := providerhttp.HandshakeAttempt(nil); info != (providerhttp.Attempt{}) {
		t.Errorf("no response = %+v", info)
	}
}
