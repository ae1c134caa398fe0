package voice

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice/llm"
	"github.com/parleyhq/parley/voice/stt"
	"github.com/parleyhq/parley/voice/tts"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// TestSilenceRepromptThenEnd runs on a fake clock that flies at about 50 times real
// time: with the agents' default of 30 s, the agent greets, waits 30 s of silence,
// asks whether the caller is still there, waits another 30 s and hangs up. The
// session's timers and the pacing of its audio all follow the injected clock.
func TestSilenceRepromptThenEnd(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{})
	clock := newFakeClock()
	stop := make(chan struct{})
	go clock.run(10*time.Millisecond, 200*time.Microsecond, stop)
	defer close(stop)
	const greeting = "Hello, this is Parley Dental."
	e := newEnv(t, srv, func(c *Config) {
		c.Clock = clock
		c.Agent.BeginMessage = greeting
	})
	g := e.rec.waitFor(t, timeout, "greeting", agentSaid(greeting)).(*Transcript)
	r := e.rec.waitFor(t, timeout, "reprompt", agentSaid(defaultReprompt)).(*Transcript)
	end := e.rec.waitFor(t, timeout, "end", ended).(*CallEnded)
	if end.Reason != EndSilence {
		t.Fatalf("ended with %v:\n%s", end.Reason, describe(e.rec.all()))
	}
	if d := r.Start.Sub(g.End); d < defaultEndCallAfterSilence {
		t.Errorf("reprompted %v after the greeting, before the %v timeout", d, defaultEndCallAfterSilence)
	}
	if d := end.At.Sub(r.End); d < defaultEndCallAfterSilence {
		t.Errorf("hung up %v after the reprompt, before the %v timeout", d, defaultEndCallAfterSilence)
	}
	// Audio durations are on the fake clock too: the greeting played in real time.
	if d, want := g.End.Sub(g.Start), time.Duration(len(greeting))*openaitest.DefaultCharDuration; d < want-40*time.Millisecond {
		t.Errorf("greeting played in %v of fake time, want about %v", d, want)
	}
	h := e.s.History()
	if len(h) != 2 || h[0].Content != greeting || h[1].Content != defaultReprompt {
		t.Errorf("history %+v", h)
	}
}

// TestSilenceResetByCaller: words from the caller after a reprompt reset the count, so
// the next silence gets a reprompt again instead of a hang-up.
func TestSilenceResetByCaller(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"Yes, I am here."},
		Replies:     []openaitest.Reply{{Text: "Great."}},
	})
	e := newEnv(t, srv, func(c *Config) {
		c.Agent.BeginMessage = "Hi."
		c.Agent.EndCallAfterSilenceMS = 1500
	})
	c := startCaller(t, e.s, 16000)
	e.rec.waitFor(t, timeout, "reprompt", agentSaid(defaultReprompt))
	c.say(fixture(t, "hello"))
	e.rec.waitFor(t, timeout, "answer", agentSaid("Great."))
	// The second reprompt, not an end.
	e.rec.waitCount(t, timeout, "second reprompt", 2, agentSaid(defaultReprompt))
	if i, j := e.rec.index(ended), e.rec.index(agentSaid("Great.")); i >= 0 && i < j {
		t.Fatalf("ended before the caller's answer:\n%s", describe(e.rec.all()))
	}
	end := e.rec.waitFor(t, timeout, "end", ended).(*CallEnded)
	if end.Reason != EndSilence {
		t.Errorf("ended with %v", end.Reason)
	}
}

// TestMaxDuration: the call ends at the agent's maximum duration, mid-sentence; the
// history keeps what was said and no audio goes out afterwards.
func TestMaxDuration(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{})
	const long = "Welcome to Parley Dental. Our clinic is open from nine in the morning until six in the evening on weekdays, and from ten to two on Saturdays."
	e := newEnv(t, srv, func(c *Config) {
		c.Agent.BeginMessage = long
		c.Agent.MaxCallDurationMS = 2500
	})
	select {
	case <-e.s.Done():
	case <-time.After(timeout):
		t.Fatal("the session did not end")
	}
	end := e.rec.waitFor(t, timeout, "end", ended).(*CallEnded)
	if end.Reason != EndMaxDuration {
		t.Fatalf("ended with %v", end.Reason)
	}
	if end.Duration < 2500*time.Millisecond {
		t.Errorf("ended after %v", end.Duration)
	}
	if n := e.out.framesSince(end.At); n > 1 {
		t.Errorf("%d frames after the end", n)
	}
	h := e.s.History()
	if len(h) != 1 || h[0].Content == "" || len(h[0].Content) >= len(long) || !strings.HasPrefix(long, h[0].Content) {
		t.Errorf("history %+v, want a prefix of the welcome", h)
	}
}

// TestProviderFallback: every primary provider fails or stalls — the recogniser never
// answers, the model never sends a token, the voice returns 503 — and each package's
// WithFallback hands the turn to its secondary: another OpenAI-compatible server, and
// the local espeak-ng voice (22.05 kHz, which the engine resamples like any other).
func TestProviderFallback(t *testing.T) {
	t.Parallel()
	const answer = "Yes, we are open on Saturday."
	good := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"Are you open on Saturday?"},
		Replies:     []openaitest.Reply{{Text: answer}},
	})
	bad := openaitest.New(t, openaitest.Config{
		Transcripts:  []string{"never"},
		STTDelay:     time.Minute,
		Replies:      []openaitest.Reply{{Text: "never"}},
		LLMTTFT:      time.Minute,
		SpeechStatus: 503,
	})

	var mu sync.Mutex
	served := map[string]bool{}
	record := func(kind string) func(bool) {
		return func(fallback bool) {
			mu.Lock()
			served[kind] = fallback
			mu.Unlock()
		}
	}
	e := newEnv(t, good, func(c *Config) {
		sttBad, _ := stt.NewOpenAI(stt.OpenAIConfig{Name: "bad", BaseURL: bad.URL, HTTPClient: bad.Client()})
		sttP, err := stt.WithFallback(sttBad, c.STT, stt.FallbackConfig{Budget: 700 * time.Millisecond,
			OnServe: func(s stt.Served) { record("stt")(s.Fallback) }})
		if err != nil {
			t.Fatal(err)
		}
		llmBad, _ := llm.NewOpenAI(llm.OpenAIConfig{Name: "bad", BaseURL: bad.URL, HTTPClient: bad.Client()})
		llmP, err := llm.WithFallback(llmBad, c.LLM, llm.FallbackConfig{Budget: 500 * time.Millisecond,
			OnServe: func(s llm.Served) { record("llm")(s.Fallback) }})
		if err != nil {
			t.Fatal(err)
		}
		ttsBad, _ := tts.NewOpenAI(tts.OpenAIConfig{Name: "bad", BaseURL: bad.URL, HTTPClient: bad.Client(), MaxRetries: -1})
		espeak, err := tts.NewEspeak(tts.EspeakConfig{})
		if err != nil {
			t.Fatal(err)
		}
		ttsP, err := tts.WithFallback(ttsBad, espeak, tts.FallbackConfig{Budget: time.Second,
			OnServe: func(s tts.Served) { record("tts")(s.Fallback) }})
		if err != nil {
			t.Fatal(err)
		}
		c.STT, c.LLM, c.TTS = sttP, llmP, ttsP
		c.Agent.Voice = "" // espeak's default voice
	})
	c := startCaller(t, e.s, 16000)
	c.say(fixture(t, "hello"))
	tr := e.rec.waitFor(t, timeout, "answer", agentSaid(answer)).(*Transcript)
	mu.Lock()
	if !served["stt"] || !served["llm"] || !served["tts"] {
		t.Errorf("fallbacks served: %v", served)
	}
	mu.Unlock()
	if nb, ng := bad.Counts().Chat, good.Counts().Chat; nb != 1 || ng != 1 {
		t.Errorf("chat requests: primary %d, secondary %d", nb, ng)
	}
	// espeak's audio went out, resampled from 22.05 kHz: real speech, not silence.
	a := e.out.audio()
	var peak int16
	for _, v := range a {
		peak = max(peak, v, -v)
	}
	if peak < 1000 || tr.End.Sub(tr.Start) < 500*time.Millisecond {
		t.Errorf("answer audio: peak %d over %v", peak, tr.End.Sub(tr.Start))
	}
}

// TestKnowledge: the lookup runs at the end of the turn; a fast one lands in the
// request next to the caller's words, a slow one is abandoned at the budget.
func TestKnowledge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		slow bool
	}{{"fast", false}, {"slow", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := openaitest.New(t, openaitest.Config{
				Transcripts: []string{"Where can I park?"},
				Replies:     []openaitest.Reply{{Text: "Behind the clinic."}},
			})
			var gotQuery atomic.Value
			cancelled := make(chan struct{})
			kb := KnowledgeFunc(func(ctx context.Context, q string, k int) ([]Passage, error) {
				gotQuery.Store(q)
				if tc.slow {
					select {
					case <-ctx.Done():
						close(cancelled)
						return nil, ctx.Err()
					case <-time.After(10 * time.Second):
					}
				}
				return []Passage{{Text: "Parking is free behind the clinic.", Source: "FAQ"}}, nil
			})
			e := newEnv(t, srv, func(c *Config) {
				c.Knowledge = kb
				c.KnowledgeBudget = 200 * time.Millisecond
			})
			c := startCaller(t, e.s, 16000)
			c.say(fixture(t, "hello"))
			e.rec.waitFor(t, timeout, "answer", agentSaid("Behind the clinic."))
			if q, _ := gotQuery.Load().(string); q != "Where can I park?" {
				t.Errorf("lookup query %q", q)
			}
			req := srv.Chats()[0].Request
			msgs := req.Messages
			found := false
			for _, m := range msgs {
				if strings.Contains(m.Content, "Parking is free behind the clinic.") {
					found = true
				}
			}
			led := e.rec.waitFor(t, timeout, "ledger", isKind[*TurnLatency]).(*TurnLatency)
			if tc.slow {
				if found {
					t.Error("the slow lookup's passage reached the model")
				}
				select {
				case <-cancelled:
				case <-time.After(timeout):
					t.Error("the slow lookup was not cancelled")
				}
				if led.KnowledgeWait < 200*time.Millisecond || led.KnowledgeWait > 5*time.Second {
					t.Errorf("waited %v for the lookup, budget 200ms", led.KnowledgeWait)
				}
				return
			}
			if !found || len(msgs) != 3 || msgs[1].Role != "system" || msgs[2].Role != "user" {
				t.Errorf("knowledge not placed before the caller's words: %v", roles(req))
			}
		})
	}
}

type failingSTT struct{}

func (failingSTT) Name() string { return "failing" }
func (failingSTT) Stream(context.Context, stt.Options) (stt.Stream, error) {
	return nil, errors.New("connection refused")
}

// TestLifecycle: Start, Stop and WriteFrame in every order.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{})
	base := func(t *testing.T) Config {
		var cfg Config
		newEnvConfig(t, srv, &cfg)
		return cfg
	}

	t.Run("stop before start", func(t *testing.T) {
		s, err := NewSession(base(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.WriteFrame(silenceFrame()); !errors.Is(err, ErrNotStarted) {
			t.Errorf("WriteFrame before Start: %v", err)
		}
		s.Stop()
		s.Stop()
		<-s.Done()
		if err := s.Start(context.Background()); !errors.Is(err, ErrEnded) {
			t.Errorf("Start after Stop: %v", err)
		}
		if err := s.WriteFrame(silenceFrame()); !errors.Is(err, ErrEnded) {
			t.Errorf("WriteFrame after Stop: %v", err)
		}
	})
	t.Run("start twice, context ends the call", func(t *testing.T) {
		rec := newRecorder()
		cfg := base(t)
		cfg.Events = rec
		s, err := NewSession(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Start(ctx); err == nil {
			t.Error("second Start succeeded")
		}
		if err := s.WriteFrame(silenceFrame()); err != nil {
			t.Errorf("WriteFrame: %v", err)
		}
		cancel()
		select {
		case <-s.Done():
		case <-time.After(timeout):
			t.Fatal("cancelling Start's context did not end the session")
		}
		if ev := rec.waitFor(t, timeout, "end", ended).(*CallEnded); ev.Reason != EndStopped {
			t.Errorf("reason %v", ev.Reason)
		}
		s.Stop()
	})
	t.Run("recogniser unreachable", func(t *testing.T) {
		cfg := base(t)
		cfg.STT = failingSTT{}
		s, err := NewSession(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("Start: %v", err)
		}
		<-s.Done()
		s.Stop()
	})
	t.Run("stop while speaking", func(t *testing.T) {
		cfg := base(t)
		out := &outRec{rate: 48000}
		cfg.Output = out
		cfg.Agent.BeginMessage = "This is a rather long greeting that will be cut off by the caller hanging up."
		s, err := NewSession(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		out.waitFrames(t, 50, timeout) // a second of it
		s.Stop()
		n := out.frames()
		time.Sleep(100 * time.Millisecond)
		if out.frames() != n {
			t.Error("audio went out after Stop returned")
		}
		h := s.History()
		if len(h) != 1 || !strings.HasPrefix(cfg.Agent.BeginMessage, h[0].Content) || h[0].Content == cfg.Agent.BeginMessage {
			t.Errorf("history %+v", h)
		}
	})
}
