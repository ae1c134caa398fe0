package tts

import (
	"errors"
	"fmt"
	"testing"

	"github.com/coder/websocket"
)

// The HTTP half of this file's twin is tested in voice/llm; here, what tts adds.
func TestRetryableWebsocketAndEmptyAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		info *attemptInfo
		want bool
	}{
		{"internal error close", fmt.Errorf("read: %w", websocket.CloseError{Code: websocket.StatusInternalError}), nil, true},
		{"try again later", websocket.CloseError{Code: websocket.StatusTryAgainLater}, nil, true},
		{"policy violation", websocket.CloseError{Code: websocket.StatusPolicyViolation, Reason: "Invalid API key"}, nil, false},
		{"handshake 429", errors.New("refused"), &attemptInfo{status: 429}, true},
		{"handshake 403", errors.New("refused"), &attemptInfo{status: 403}, false},
		{"no audio", ErrNoAudio, nil, true},
		{"server message", &ElevenLabsError{Message: "quota exceeded"}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := retryable(tt.err, tt.info); got != tt.want {
				t.Errorf("retryable = %v", got)
			}
		})
	}
}
