package openaitest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parleyhq/parley/voice/llm"
	"github.com/parleyhq/parley/voice/stt"
	"github.com/parleyhq/parley/voice/tts"
)

// TestCancellationEndsTheHandler is not parallel: it checks that no goroutine outlives
// the cancelled requests, which needs the process to itself. Each request is cancelled
// by its client while the server waits (before the first token, byte or transcript) or
// streams (between chunks); the handler must return at once, not when the minute-long
// delay ends, and leave nothing behind.
func TestCancellationEndsTheHandler(t *testing.T) {
	slow := New(t, Config{
		LLMTTFT: time.Minute, STTDelay: time.Minute, TTSTTFB: time.Minute,
		Replies: []Reply{{Text: "Never said."}},
	})
	stalling := New(t, Config{
		TTSPace: 0.001, // the second 100 ms chunk comes 100 s after the first
		Replies: []Reply{{Text: "One two three.", SlowFrom: 1, SlowGap: time.Minute}},
	})
	// The servers' own goroutines (accept loops) stay; everything a request starts
	// must go. Each case dials a fresh connection so its goroutines are new.
	ignore := goleak.IgnoreCurrent()

	cases := []struct {
		name string
		srv  *Server
		// start makes the request with ctx and returns once it is under way (or
		// blocked waiting); wait says the server has reached the point to cancel at.
		start func(ctx context.Context, client *http.Client) (cleanup func(), err error)
		wait  func(s *Server) bool
		done  func(s *Server) (time.Time, bool) // handler end time, canceled flag
	}{
		{
			name: "chat before the first token", srv: slow,
			start: func(ctx context.Context, c *http.Client) (func(), error) {
				p, _ := llm.NewOpenAI(llm.OpenAIConfig{BaseURL: slow.URL, HTTPClient: c, FirstTokenTimeout: 2 * time.Minute})
				_, err := p.Stream(ctx, userSays("Hello?"))
				return func() {}, err
			},
			wait: func(s *Server) bool { return s.Counts().Chat == 1 },
			done: lastChat,
		},
		{
			name: "chat between tokens", srv: stalling,
			start: func(ctx context.Context, c *http.Client) (func(), error) {
				p, _ := llm.NewOpenAI(llm.OpenAIConfig{BaseURL: stalling.URL, HTTPClient: c, StallTimeout: 2 * time.Minute})
				s, err := p.Stream(ctx, userSays("Hello?"))
				if err != nil {
					return func() {}, err
				}
				_, err = s.Recv() // the first word, read ahead by Stream
				if err == nil {
					_, err = s.Recv() // blocks: the rest is a minute away
				}
				return func() { s.Close() }, err
			},
			wait: func(s *Server) bool { c := s.Chats(); return len(c) == 1 && !c[0].FirstToken.IsZero() },
			done: lastChat,
		},
		{
			name: "transcription during the delay", srv: slow,
			start: func(ctx context.Context, c *http.Client) (func(), error) {
				p, _ := stt.NewOpenAI(stt.OpenAIConfig{BaseURL: slow.URL, HTTPClient: c, RequestTimeout: 2 * time.Minute})
				s, err := p.Stream(ctx, stt.Options{SampleRate: 16000})
				if err != nil {
					return func() {}, err
				}
				s.SpeechStarted()
				s.WriteFrame(tone(time.Second, 16000, true))
				s.Flush()
				for range s.Events() {
				}
				return func() { s.Close() }, s.Err()
			},
			wait: func(s *Server) bool { return s.Counts().Transcriptions == 1 },
			done: func(s *Server) (time.Time, bool) {
				r := s.Transcriptions()[0]
				return r.Done, !r.Done.IsZero() && r.Canceled && r.Answered.IsZero()
			},
		},
		{
			name: "speech before the first byte", srv: slow,
			start: func(ctx context.Context, c *http.Client) (func(), error) {
				p, _ := tts.NewOpenAI(tts.OpenAIConfig{BaseURL: slow.URL, HTTPClient: c, FirstByteTimeout: 2 * time.Minute})
				_, err := p.Synthesize(ctx, tts.Request{Text: "Hello."})
				return func() {}, err
			},
			wait: func(s *Server) bool { return s.Counts().Speech == 1 },
			done: lastSpeech,
		},
		{
			name: "speech between chunks", srv: stalling,
			start: func(ctx context.Context, c *http.Client) (func(), error) {
				p, _ := tts.NewOpenAI(tts.OpenAIConfig{BaseURL: stalling.URL, HTTPClient: c, StallTimeout: 2 * time.Minute})
				s, err := p.Synthesize(ctx, tts.Request{Text: "This sentence is long enough for two chunks."})
				if err != nil {
					return func() {}, err
				}
				for err == nil {
					_, err = s.Recv()
				}
				return func() { s.Close() }, err
			},
			wait: func(s *Server) bool { sp := s.Speeches(); return len(sp) == 1 && !sp[0].FirstByte.IsZero() },
			done: lastSpeech,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			var cleanup func()
			go func() {
				var err error
				cleanup, err = tc.start(ctx, &http.Client{Transport: tr})
				errc <- err
			}()
			wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer wcancel()
			if err := tc.srv.Wait(wctx, func() bool { return tc.wait(tc.srv) }); err != nil {
				t.Fatalf("the request did not reach the server: %v", err)
			}
			cancelled := time.Now()
			cancel()
			if err := <-errc; err == nil {
				t.Error("the request succeeded despite its cancellation")
			}
			cleanup()
			var end time.Time
			if err := tc.srv.Wait(wctx, func() bool {
				var ok bool
				end, ok = tc.done(tc.srv)
				return ok
			}); err != nil {
				t.Fatal("the handler did not notice the cancellation")
			}
			if d := end.Sub(cancelled); d > 3*time.Second {
				t.Errorf("the handler returned %v after the cancellation", d)
			}
			tr.CloseIdleConnections()
			goleak.VerifyNone(t, ignore)
		})
	}
	// Handled the same on both servers' records: one request each, none left over.
	if c := slow.Counts(); c.Chat != 1 || c.Transcriptions != 1 || c.Speech != 1 {
		t.Errorf("slow server counts %+v", c)
	}
}

// lastChat reports the end of the last chat handler, once it has ended canceled.
func lastChat(s *Server) (time.Time, bool) {
	c := s.Chats()
	r := c[len(c)-1]
	return r.Done, !r.Done.IsZero() && r.Canceled
}

func lastSpeech(s *Server) (time.Time, bool) {
	sp := s.Speeches()
	r := sp[len(sp)-1]
	return r.Done, !r.Done.IsZero() && r.Canceled && r.Sent < r.Samples
}

func TestCloseEndsRequestsInFlight(t *testing.T) {
	t.Parallel()
	srv, err := NewServer(Config{LLMTTFT: time.Minute, TTSTTFB: time.Minute, Replies: []Reply{{Text: "Never."}}})
	if err != nil {
		t.Fatal(err)
	}
	p := newLLM(t, srv, func(c *llm.OpenAIConfig) { c.MaxRetries = -1 })
	errc := make(chan error, 1)
	go func() {
		_, err := complete(context.Background(), p, userSays("Hello?"))
		errc <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Wait(ctx, func() bool { return srv.Counts().Chat == 1 }); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	srv.Close()
	srv.Close() // twice is fine
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close took %v", d)
	}
	if err := <-errc; err == nil {
		t.Error("the request succeeded")
	}
	if r := srv.Chats()[0]; !r.Canceled || r.Done.IsZero() {
		t.Errorf("record %+v", r)
	}
	if _, err := srv.Client().Get(srv.URL + "/models"); err == nil {
		t.Error("the server still answers after Close")
	}
}

// TestManyConcurrentRequests runs a benchmark's load: while each request waits out its
// provider delay, the others must proceed, so nearly all of them are in flight at once.
func TestManyConcurrentRequests(t *testing.T) {
	t.Parallel()
	const n = 100
	const delay = 400 * time.Millisecond
	srv := New(t, Config{LLMTTFT: delay, TTSTTFB: delay, Chat: Echo, DropMessages: true})
	chat, voice := newLLM(t, srv, nil), newTTS(t, srv)
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Go(func() {
			a, err := complete(context.Background(), chat, userSays("Number "+strings.Repeat("i", i%7+1)+"."))
			if err == nil && !strings.HasPrefix(a.text(), "You said: Number i") {
				t.Errorf("reply %q", a.text())
			}
			if err != nil {
				errs <- err
			}
		})
		wg.Go(func() {
			s, err := voice.Synthesize(context.Background(), tts.Request{Text: "One moment please."})
			if err == nil {
				for err == nil {
					_, err = s.Recv()
				}
				s.Close()
				if errors.Is(err, io.EOF) {
					err = nil
				}
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	type span struct{ from, to time.Time }
	var spans []span
	for _, r := range srv.Chats() {
		if r.TTFT() < delay || r.Request.Messages != nil {
			t.Errorf("chat record: TTFT %v, %d messages kept", r.TTFT(), len(r.Request.Messages))
		}
		spans = append(spans, span{r.Received, r.Done})
	}
	for _, r := range srv.Speeches() {
		if r.TTFB() < delay || r.Sent != r.Samples {
			t.Errorf("speech record: TTFB %v, sent %d of %d", r.TTFB(), r.Sent, r.Samples)
		}
		spans = append(spans, span{r.Received, r.Done})
	}
	if len(spans) != 2*n {
		t.Fatalf("%d records, want %d", len(spans), 2*n)
	}
	// The most requests in flight at one moment (at some request's arrival). Served one
	// at a time it would be 1; served concurrently, about all of them.
	most := 0
	for _, a := range spans {
		k := 0
		for _, b := range spans {
			if !b.from.After(a.from) && b.to.After(a.from) {
				k++
			}
		}
		most = max(most, k)
	}
	if most < n/2 {
		t.Errorf("at most %d of %d requests in flight at once", most, 2*n)
	}
}

func TestModelsAndAuth(t *testing.T) {
	t.Parallel()
	srv := New(t, Config{APIKey: "sk-right", Replies: []Reply{{Text: "Hi."}}})
	get := func(key string) (int, map[string]any) {
		req, _ := http.NewRequest("GET", srv.URL+"/models", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	st, body := get("sk-right")
	data, _ := body["data"].([]any)
	if st != 200 || body["object"] != "list" || len(data) != 3 {
		t.Errorf("models: %d %v", st, body)
	}
	if st, body := get("sk-wrong"); st != 401 || body["error"] == nil {
		t.Errorf("wrong key: %d %v", st, body)
	}
	_, err := complete(context.Background(), newLLM(t, srv, nil), userSays("Hello?")) // sends sk-test
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("chat with the wrong key: %v", err)
	}
	if c := srv.Counts(); c.Models != 1 || c.Chat != 0 {
		t.Errorf("counts %+v; refused requests are not counted", c)
	}
	resp, err := srv.Client().Get(strings.TrimSuffix(srv.URL, "/v1") + "/v2/nothing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 && resp.StatusCode != 401 {
		t.Errorf("unknown route: %d", resp.StatusCode)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{
		{LLMTTFT: -time.Second},
		{TTSPace: -1},
		{ChatStatus: 200},
		{Addr: "not an address"},
	} {
		if s, err := NewServer(cfg); err == nil {
			s.Close()
			t.Errorf("%+v accepted", cfg)
		}
	}
	if !strings.HasSuffix(New(t, Config{}).URL, "/v1") {
		t.Error("URL does not end in /v1")
	}
}

func TestWait(t *testing.T) {
	t.Parallel()
	srv := New(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv.Wait(ctx, func() bool { return srv.Counts().Speech > 0 }); err == nil {
		t.Error("Wait returned without a request")
	}
	p := newTTS(t, srv)
	go func() {
		if s, err := p.Synthesize(context.Background(), tts.Request{Text: "Hi."}); err == nil {
			s.Close()
		}
	}()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := srv.Wait(ctx2, func() bool {
		sp := srv.Speeches()
		return len(sp) == 1 && !sp[0].Done.IsZero()
	}); err != nil {
		t.Fatal(err)
	}
	if got := srv.Speeches()[0].Text; got != "Hi." {
		t.Errorf("text %q", got)
	}
}
