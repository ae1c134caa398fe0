package stt

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestFallback(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		primary      []dgScript
		primaryKey   string
		wantProvider string
		wantCause    error
		// first events the engine should see
		wantTexts []string
		// audio the secondary was sent (ms), if it served
		wantUpload int
	}{
		{
			name:         "primary serves",
			primary:      []dgScript{{finalizeText: "and more"}},
			wantProvider: "deepgram",
			wantTexts:    []string{"hello", "Hello there.", "and more"},
		},
		{
			name:         "primary refuses",
			primary:      []dgScript{{}},
			primaryKey:   "bad",
			wantProvider: "openai",
			wantTexts:    []string{"1300 ms"},
			wantUpload:   1300,
		},
		{
			name:         "primary connects too slowly",
			primary:      []dgScript{{acceptDelay: time.Hour}},
			wantProvider: "openai",
			wantCause:    ErrBudgetExceeded,
			wantTexts:    []string{"1300 ms"},
			wantUpload:   1300,
		},
		{
			name:         "primary connected but silent",
			primary:      []dgScript{{silent: true}},
			wantProvider: "openai",
			wantCause:    ErrBudgetExceeded,
			// Everything said while the primary was on trial is replayed to the secondary.
			wantTexts:  []string{"1300 ms"},
			wantUpload: 1300,
		},
		{
			name:         "primary fails before any result",
			primary:      []dgScript{{failAfter: 3200, failCode: websocket.StatusInternalError}},
			wantProvider: "openai",
			wantTexts:    []string{"1300 ms"},
			wantUpload:   1300,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ds := newDeepgramServer(t, tt.primary...)
			ws := newWhisperServer(t)
			primary := newTestDeepgram(t, ds, func(c *DeepgramConfig) {
				c.MaxRetries = -1
				c.FinalizeTimeout = time.Hour
				if tt.primaryKey != "" {
					c.APIKey = tt.primaryKey
				}
			})
			secondary := newTestOpenAI(t, ws, nil)
			var mu sync.Mutex
			var reports []Served
			f, err := WithFallback(primary, secondary, FallbackConfig{
				Budget: 300 * time.Millisecond,
				OnServe: func(s Served) {
					mu.Lock()
					reports = append(reports, s)
					mu.Unlock()
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			s, err := f.Stream(context.Background(), Options{SampleRate: testRate})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()

			write(t, s, frames(500*time.Millisecond, false))
			s.SpeechStarted()
			write(t, s, frames(time.Second, true))
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			write(t, s, frames(300*time.Millisecond, false))
			var texts []string
			for len(texts) < len(tt.wantTexts) {
				ev, ok := nextEvent(t, s, 3*time.Second)
				if !ok {
					t.Fatalf("events closed after %q: %v", texts, s.Err())
				}
				texts = append(texts, ev.Text)
			}
			for i := range texts {
				if texts[i] != tt.wantTexts[i] {
					t.Errorf("texts %q, want %q", texts, tt.wantTexts)
					break
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(reports) != 1 || reports[0].Provider != tt.wantProvider || reports[0].Fallback != (tt.wantProvider == "openai") {
				t.Fatalf("reports %+v", reports)
			}
			if reports[0].Fallback && reports[0].Cause == nil {
				t.Error("fallback without a cause")
			}
			if tt.wantCause != nil && !errors.Is(reports[0].Cause, tt.wantCause) {
				t.Errorf("cause %v, want %v", reports[0].Cause, tt.wantCause)
			}
			if sv, ok := s.(interface{ Served() (Served, bool) }).Served(); !ok || sv.Provider != tt.wantProvider {
				t.Errorf("stream says %+v %v", sv, ok)
			}
			if tt.wantUpload > 0 {
				ups := ws.got()
				if len(ups) != 1 || ups[0].wavErr != "" || ups[0].samples*1000/ups[0].rate != tt.wantUpload {
					t.Errorf("uploads %+v", ups)
				}
			}
			// After the decision, audio goes to the server alone.
			write(t, s, frames(100*time.Millisecond, true))
		})
	}
}

func TestFallbackBothFail(t *testing.T) {
	t.Parallel()
	ds := newDeepgramServer(t)
	bad := newTestDeepgram(t, ds, func(c *DeepgramConfig) { c.APIKey = "bad" })
	f, err := WithFallback(bad, bad, FallbackConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Stream(context.Background(), Options{}); err == nil {
		t.Error("want an error")
	}
	if _, err := WithFallback(bad, nil, FallbackConfig{}); err == nil {
		t.Error("nil secondary accepted")
	}
}

func TestFallbackCloseWhileDeciding(t *testing.T) {
	t.Parallel()
	ds := newDeepgramServer(t, dgScript{silent: true})
	ws := newWhisperServer(t)
	primary := newTestDeepgram(t, ds, func(c *DeepgramConfig) { c.CloseTimeout = 100 * time.Millisecond })
	f, _ := WithFallback(primary, newTestOpenAI(t, ws, nil), FallbackConfig{Budget: time.Hour})
	s, err := f.Stream(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	write(t, s, frames(200*time.Millisecond, true))
	s.Close()
	if _, ok := <-s.Events(); ok {
		t.Error("events open after Close")
	}
	if s.Err() != nil {
		t.Errorf("Err %v", s.Err())
	}
	if _, ok := s.(interface{ Served() (Served, bool) }).Served(); ok {
		t.Error("a decision was reported for a stream closed on trial")
	}
	if len(ws.got()) != 0 {
		t.Error("secondary used after Close")
	}
}
