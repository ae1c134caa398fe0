package llm

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"
)

func TestFallback(t *testing.T) {
	t.Parallel()
	good := chatReply{events: textChunks("from", " ", "secondary")}
	tests := []struct {
		name         string
		primary      []chatReply
		secondary    []chatReply
		wantText     string
		wantProvider string
		wantCause    error // errors.Is target; nil with wantProvider "groq" means no cause
		wantErr      bool
		maxTime      time.Duration
	}{
		{
			name:         "primary serves",
			primary:      []chatReply{{events: textChunks("from", " ", "primary")}},
			secondary:    []chatReply{good},
			wantText:     "from primary",
			wantProvider: "groq",
		},
		{
			name:         "primary slower than budget",
			primary:      []chatReply{{firstDelay: time.Hour}},
			secondary:    []chatReply{good},
			wantText:     "from secondary",
			wantProvider: "openai",
			wantCause:    ErrBudgetExceeded,
			maxTime:      time.Second,
		},
		{
			name:         "primary fails fast",
			primary:      []chatReply{{status: 401, errBody: errorBody(401, "invalid_request_error", "bad key")}},
			secondary:    []chatReply{good},
			wantText:     "from secondary",
			wantProvider: "openai",
			maxTime:      300 * time.Millisecond,
		},
		{
			name:      "both fail",
			primary:   []chatReply{{status: 401, errBody: errorBody(401, "invalid_request_error", "bad key")}},
			secondary: []chatReply{{status: 400, errBody: errorBody(400, "invalid_request_error", "bad model")}},
			wantErr:   true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			psrv := newChatServer(t, tt.primary...)
			ssrv := newChatServer(t, tt.secondary...)
			primary := newTestOpenAI(t, psrv, func(c *OpenAIConfig) { c.Name = "groq"; c.MaxRetries = -1 })
			secondary := newTestOpenAI(t, ssrv, nil)
			var mu sync.Mutex
			var reports []Served
			f, err := WithFallback(primary, secondary, FallbackConfig{
				Budget: 400 * time.Millisecond,
				OnServe: func(s Served) {
					mu.Lock()
					reports = append(reports, s)
					mu.Unlock()
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			s, err := f.Stream(context.Background(), userRequest("hi"))
			if tt.wantErr {
				if err == nil {
					s.Close()
					t.Fatal("want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			text, _, err := collect(t, s)
			if !errors.Is(err, io.EOF) || text != tt.wantText {
				t.Errorf("answer = %q, %v; want %q", text, err, tt.wantText)
			}
			if tt.maxTime > 0 && time.Since(start) > tt.maxTime {
				t.Errorf("took %s", time.Since(start))
			}
			mu.Lock()
			defer mu.Unlock()
			if len(reports) != 1 {
				t.Fatalf("reports = %+v", reports)
			}
			r := reports[0]
			if r.Provider != tt.wantProvider || r.Fallback != (tt.wantProvider == "openai") {
				t.Errorf("served = %+v", r)
			}
			if tt.wantCause != nil && !errors.Is(r.Cause, tt.wantCause) {
				t.Errorf("cause = %v, want %v", r.Cause, tt.wantCause)
			}
			if r.Fallback && r.Cause == nil {
				t.Error("fallback without a cause")
			}
			if got := s.(interface{ Served() Served }).Served(); got.Provider != r.Provider {
				t.Errorf("stream says %q served, callback said %q", got.Provider, r.Provider)
			}
		})
	}
}

func TestFallbackCancelWhileWaitingForPrimary(t *testing.T) {
	t.Parallel()
	psrv := newChatServer(t, chatReply{firstDelay: time.Hour})
	ssrv := newChatServer(t, chatReply{events: textChunks("x")})
	primary := newTestOpenAI(t, psrv, nil)
	secondary := newTestOpenAI(t, ssrv, nil)
	f, err := WithFallback(primary, secondary, FallbackConfig{Budget: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := f.Stream(ctx, userRequest("hi")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v", err)
	}
	if n := ssrv.requests(); n != 0 {
		t.Errorf("secondary asked %d times after the caller gave up", n)
	}
}

func TestWithFallbackValidation(t *testing.T) {
	t.Parallel()
	p, _ := NewOpenAI(OpenAIConfig{})
	if _, err := WithFallback(nil, p, FallbackConfig{}); err == nil {
		t.Error("nil primary accepted")
	}
	if _, err := WithFallback(p, p, FallbackConfig{Budget: -1}); err == nil {
		t.Error("negative budget accepted")
	}
	f, err := WithFallback(p, p, FallbackConfig{})
	if err != nil || f.cfg.Budget != defaultFallbackBudget || f.Name() != "openai>openai" {
		t.Errorf("%v %+v", err, f)
	}
}
