package tts

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/parleyhq/parley/voice/internal/providerhttp"
)

// The shared retry policy is tested in voice/internal/providerhttp; here, what tts adds
// (its empty-answer and first-byte errors) and how its own errors classify.
func TestRetryableWebsocketAndEmptyAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		info *providerhttp.Attempt
		want bool
	}{
		{"internal error close", fmt.Errorf("read: %w", websocket.CloseError{Code: websocket.StatusInternalError}), nil, true},
		{"try again later", websocket.CloseError{Code: websocket.StatusTryAgainLater}, nil, true},
		{"policy violation", websocket.CloseError{Code: websocket.StatusPolicyViolation, Reason: "Invalid API key"}, nil, false},
		{"handshake 429", errors.New("refused"), &providerhttp.Attempt{Status: 429}, true},
		{"handshake 403", errors.New("refused"), &providerhttp.Attempt{Status: 403}, false},
		{"no audio", ErrNoAudio, nil, true},
		{"first byte timeout", fmt.Errorf("open: %w", ErrFirstByteTimeout), nil, true},
		{"server message", &ElevenLabsError{Message: "quota exceeded"}, nil, false},
	}
	p := providerhttp.Policy{MaxRetries: 1, MaxRetryAfter: time.Second, Transient: transientErrs}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, got := p.Next(1, tt.err, providerhttp.Of(tt.info)); got != tt.want {
				t.Errorf("retryable = %v", got)
			}
		})
	}
}
