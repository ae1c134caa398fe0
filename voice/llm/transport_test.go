package llm

import (
	"errors"
	"fmt"
	"testing"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// The shared client and retry policy are tested in voice/internal/providerhttp, and
// their use end to end in openai_test.go; here, what llm adds: its own retryable error.
func TestRetryPolicyFirstTokenTimeout(t *testing.T) {
	t.Parallel()
	p := retryPolicy{maxRetries: 1, maxRetryAfter: time.Second}
	tests := []struct {
		name string
		err  error
		info *attemptInfo
		want bool
	}{
		{"first token timeout", fmt.Errorf("%w after 5s", ErrFirstTokenTimeout), nil, true},
		{"recorded 503", errors.New("stream: bad status"), &attemptInfo{status: 503}, true},
		{"400", &openai.APIError{HTTPStatusCode: 400}, nil, false},
		{"plain error", errors.New("llm: bad request"), nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, ok := p.next(1, tt.err, tt.info); ok != tt.want {
				t.Errorf("next(1, %v) retries = %v", tt.err, ok)
			}
		})
	}
	if _, ok := p.next(2, ErrFirstTokenTimeout, nil); ok {
		t.Error("retried past maxRetries")
	}
	if d, ok := p.next(1, ErrFirstTokenTimeout, &attemptInfo{retryAfter: 300 * time.Millisecond, hasRetryAfter: true}); !ok || d != 300*time.Millisecond {
		t.Errorf("Retry-After in attemptInfo not honoured: %s %v", d, ok)
	}
}
