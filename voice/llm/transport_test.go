package llm

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

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
		{"date", map[string]string{"Retry-After": now.Add(3 * time.Second).Format(http.TimeFormat)}, 3 * time.Second, true},
		{"past date", map[string]string{"Retry-After": now.Add(-time.Hour).Format(http.TimeFormat)}, 0, true},
		{"ms wins", map[string]string{"Retry-After": "2", "Retry-After-Ms": "150.5"}, 150500 * time.Microsecond, true},
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
			got, ok := parseRetryAfter(h, now)
			if got != tt.want || ok != tt.ok {
				t.Errorf("got %s %v, want %s %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestRetryable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"429", &openai.APIError{HTTPStatusCode: 429}, true},
		{"503 wrapped", fmt.Errorf("x: %w", &openai.RequestError{HTTPStatusCode: 503}), true},
		{"400", &openai.APIError{HTTPStatusCode: 400}, false},
		{"401", &openai.RequestError{HTTPStatusCode: 401}, false},
		{"first token timeout", ErrFirstTokenTimeout, true},
		{"connection reset", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{"unexpected EOF", io.ErrUnexpectedEOF, true},
		{"unknown host", &net.DNSError{Err: "no such host", IsNotFound: true}, false},
		{"plain error", errors.New("llm: bad request"), false},
		{"stream error event", &openai.APIError{Message: "server had an error"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := retryable(tt.err, nil); got != tt.want {
				t.Errorf("retryable(%v) = %v", tt.err, got)
			}
		})
	}
	p := retryPolicy{maxRetries: 2, maxRetryAfter: time.Second}
	if _, ok := p.next(3, &openai.APIError{HTTPStatusCode: 500}, nil); ok {
		t.Error("retried past maxRetries")
	}
	if d, ok := p.next(1, &openai.APIError{HTTPStatusCode: 429}, &attemptInfo{status: 429, retryAfter: 500 * time.Millisecond, hasRetryAfter: true}); !ok || d != 500*time.Millisecond {
		t.Errorf("Retry-After not honoured: %s %v", d, ok)
	}
	if _, ok := p.next(1, &openai.APIError{HTTPStatusCode: 429}, &attemptInfo{status: 429, retryAfter: time.Minute, hasRetryAfter: true}); ok {
		t.Error("waited for a Retry-After beyond the limit")
	}
	for failures := 1; failures <= 2; failures++ {
		d, ok := p.next(failures, io.ErrUnexpectedEOF, nil)
		base := backoffBase << (failures - 1)
		if !ok || d < base/2 || d > base {
			t.Errorf("backoff after %d failures = %s", failures, d)
		}
	}
}
