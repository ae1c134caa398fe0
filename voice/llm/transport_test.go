package llm

import (
	"errors"
	"fmt"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/parleyhq/parley/voice/internal/providerhttp"
)

// The shared client and retry policy are tested in voice/internal/providerhttp, and
// their use end to end in openai_test.go; here, what llm adds: its own retryable error.
func TestRetryPolicyFirstTokenTimeout(t *testing.T) {
	t.Parallel()
	p := providerhttp.Policy{MaxRetries: 1, MaxRetryAfter: time.Second, Transient: transientErrs}
	tests := []struct {
		name string
		err  error
		info *providerhttp.Attempt
		want bool
	}{
		{"first token timeout", fmt.Errorf("%w after 5s", ErrFirstTokenTimeout), nil, true},
		{"recorded 503", errors.New("stream: bad status"), &providerhttp.Attempt{Status: 503}, true},
		{"400", &openai.APIError{HTTPStatusCode: 400}, nil, false},
		{"plain error", errors.New("llm: bad request"), nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, ok := p.Next(1, tt.err, providerhttp.Of(tt.info)); ok != tt.want {
				t.Errorf("next(1, %v) retries = %v", tt.err, ok)
			}
		})
	}
	if _, ok := p.Next(2, ErrFirstTokenTimeout, providerhttp.Of(nil)); ok {
		t.Error("retried past maxRetries")
	}
	if d, ok := p.Next(1, ErrFirstTokenTimeout, providerhttp.Of(&providerhttp.Attempt{RetryAfter: 300 * time.Millisecond, HasRetryAfter: true})); !ok || d != 300*time.Millisecond {
		t.Errorf("Retry-After in the Attempt not honoured: %s %v", d, ok)
	}
}
