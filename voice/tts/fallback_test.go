package tts

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestFallback(t *testing.T) {
	t.Parallel()
	audio := tone(4800, OpenAISampleRate)
	tests := []struct {
		name         string
		primary      []elevenScript
		wantProvider string
		wantCause    error
		maxTime      time.Duration
	}{
		{name: "primary serves", primary: []elevenScript{{samples: tone(1600, 16000)}}, wantProvider: "elevenlabs"},
		{name: "primary too slow", primary: []elevenScript{{firstDelay: time.Hour}}, wantProvider: "openai", wantCause: ErrBudgetExceeded, maxTime: time.Second},
		{name: "primary refused", primary: []elevenScript{{status: 401}}, wantProvider: "openai", maxTime: 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			es := newElevenServer(t, tt.primary...)
			ss := newSpeechServer(t, speechReply{samples: audio})
			primary := newTestElevenLabs(t, es, nil)
			secondary := newTestOpenAI(t, ss, nil)
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
			start := time.Now()
			s, err := f.Synthesize(context.Background(), Request{Text: "Hello."})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var rate int
			if tt.wantProvider == "openai" {
				rate = OpenAISampleRate
			} else {
				rate = 16000
			}
			got, _, err := readAll(t, s, rate)
			if !isEOF(err) || len(got) == 0 {
				t.Errorf("%d samples, %v", len(got), err)
			}
			if tt.maxTime > 0 && time.Since(start) > tt.maxTime {
				t.Errorf("took %s", time.Since(start))
			}
			mu.Lock()
			defer mu.Unlock()
			if len(reports) != 1 || reports[0].Provider != tt.wantProvider || reports[0].Fallback != (tt.wantProvider == "openai") {
				t.Fatalf("reports %+v", reports)
			}
			if tt.wantCause != nil && !errors.Is(reports[0].Cause, tt.wantCause) {
				t.Errorf("cause %v", reports[0].Cause)
			}
			if s.(interface{ Served() Served }).Served().Provider != tt.wantProvider {
				t.Error("stream reports another provider")
			}
			if f.SampleRate() != 16000 {
				t.Errorf("fallback rate %d, want the primary's", f.SampleRate())
			}
		})
	}
}

func TestFallbackToEspeak(t *testing.T) {
	t.Parallel()
	ss := newSpeechServer(t, speechReply{status: 503, errBody: `{"error":{"message":"overloaded"}}`})
	primary := newTestOpenAI(t, ss, func(c *OpenAIConfig) { c.MaxRetries = -1 })
	f, err := WithFallback(primary, newTestEspeak(t, nil), FallbackConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := f.Synthesize(context.Background(), Request{Text: "Sorry, one moment."})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, _, err := readAll(t, s, EspeakSampleRate)
	if !isEOF(err) || rms(got) < 300 {
		t.Errorf("%d samples rms %.0f, %v", len(got), rms(got), err)
	}
	if sv := s.(interface{ Served() Served }).Served(); !sv.Fallback || sv.Provider != "espeak" || sv.Cause == nil {
		t.Errorf("served %+v", sv)
	}
}

func TestFallbackBothFail(t *testing.T) {
	t.Parallel()
	ss := newSpeechServer(t, speechReply{status: 401, errBody: `{"error":{"message":"bad key"}}`})
	es := newElevenServer(t, elevenScript{status: 401})
	f, err := WithFallback(newTestOpenAI(t, ss, nil), newTestElevenLabs(t, es, nil), FallbackConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Synthesize(context.Background(), Request{Text: "x"}); err == nil {
		t.Fatal("want an error")
	}
	if _, err := WithFallback(nil, nil, FallbackConfig{}); err == nil {
		t.Error("nil providers accepted")
	}
}

// recordingProvider fails or serves nothing, and remembers the requests it got; only the
// routing of Request.Voice is under test here.
type recordingProvider struct {
	name string
	fail error
	mu   sync.Mutex
	reqs []Request
}

func (p *recordingProvider) Name() string    { return p.name }
func (p *recordingProvider) SampleRate() int { return 16000 }
func (p *recordingProvider) Synthesize(_ context.Context, req Request) (Stream, error) {
	p.mu.Lock()
	p.reqs = append(p.reqs, req)
	p.mu.Unlock()
	if p.fail != nil {
		return nil, p.fail
	}
	return nil, ErrNoAudio
}

// The primary's voice ID never reaches the secondary: voice IDs belong to one provider.
func TestFallbackSecondaryVoice(t *testing.T) {
	t.Parallel()
	for _, want := range []string{"", "en-gb"} {
		primary := &recordingProvider{name: "openai", fail: errors.New("503")}
		secondary := &recordingProvider{name: "espeak"}
		f, err := WithFallback(primary, secondary, FallbackConfig{Budget: time.Second, SecondaryVoice: want})
		if err != nil {
			t.Fatal(err)
		}
		f.Synthesize(context.Background(), Request{Text: "Hi.", Voice: "alloy"})
		if len(primary.reqs) != 1 || primary.reqs[0].Voice != "alloy" {
			t.Fatalf("primary got %+v", primary.reqs)
		}
		if len(secondary.reqs) != 1 || secondary.reqs[0].Voice != want {
			t.Fatalf("secondary got %+v, want voice %q", secondary.reqs, want)
		}
	}
}
