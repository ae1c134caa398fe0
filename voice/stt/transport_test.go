package stt

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// The shared retry policy is tested in voice/internal/providerhttp; here, what stt adds:
// its attempt timeout is retried, and a refused Deepgram handshake is read into an
// attemptInfo that the policy honours.
func TestRetryPolicyAttemptTimeoutAndHandshake(t *testing.T) {
	t.Parallel()
	p := retryPolicy{maxRetries: 2, maxRetryAfter: 5 * time.Second}
	if _, ok := p.next(1, fmt.Errorf("%w after 10s", errAttemptTimeout), nil); !ok {
		t.Error("attempt timeout not retried")
	}
	info := handshakeInfo(&http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"2"}}})
	if info.status != 429 || !info.hasRetryAfter || info.retryAfter != 2*time.Second {
		t.Fatalf("handshakeInfo = %+v", *info)
	}
	if d, ok := p.next(1, fmt.Errorf("handshake refused with status %d", info.status), info); !ok || d != 2*time.Second {
		t.Errorf("refused handshake: wait %s, retry %v; want 2s, true", d, ok)
	}
	if info := handshakeInfo(&http.Response{StatusCode: http.StatusUnauthorized}); info.hasRetryAfter {
		t.Errorf("401 without Retry-After = %+v", *info)
	} else if _, ok := p.next(1, fmt.Errorf("handshake refused with status %d", info.status), info); ok {
		t.Error("401 retried")
	}
	if info := handshakeInfo(nil); *info != (attemptInfo{}) {
		t.Errorf("no response = %+v", *info)
	}
}
