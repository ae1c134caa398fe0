package stt

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice/audio"
)

func TestOpenAITranscribesUtteranceWithPreRoll(t *testing.T) {
	t.Parallel()
	ws := newWhisperServer(t)
	p := newTestOpenAI(t, ws, func(c *OpenAIConfig) { c.Language = "en"; c.Prompt = "Parley call." })
	s, err := p.Stream(context.Background(), Options{SampleRate: testRate, Keywords: []string{"Zorblax", "Qui"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	write(t, s, frames(time.Second, false)) // silence before: only 300 ms of it is kept
	s.SpeechStarted()
	write(t, s, frames(800*time.Millisecond, true))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	ev, ok := nextEvent(t, s, 5*time.Second)
	if !ok {
		t.Fatalf("events closed: %v", s.Err())
	}
	if ev.Type != Final || ev.Text != "1100 ms" {
		t.Errorf("event = %+v; want a Final for 300 ms pre-roll + 800 ms speech", ev)
	}
	if ev.Start != 700*time.Millisecond || ev.End != 1800*time.Millisecond || ev.At.IsZero() {
		t.Errorf("offsets %s..%s at %v", ev.Start, ev.End, ev.At)
	}
	up := ws.got()[0]
	if up.wavErr != "" {
		t.Fatalf("bad WAV: %s", up.wavErr)
	}
	if up.rate != testRate || up.channels != 1 || up.bits != 16 || up.samples != 17600 {
		t.Errorf("WAV %d Hz %d ch %d bit %d samples", up.rate, up.channels, up.bits, up.samples)
	}
	if up.model != "whisper-1" || up.language != "en" || up.prompt != "Parley call. Zorblax, Qui" || up.format != "json" {
		t.Errorf("form %+v", up)
	}
	if up.filename != "utterance.wav" || up.contentType != "audio/wav" {
		t.Errorf("file part %q %q", up.filename, up.contentType)
	}
}

func TestOpenAIEmptyAndShortUtterances(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		drive func(s Stream)
	}{
		{"flush without speech", func(s Stream) { write(t, s, frames(time.Second, false)); s.Flush() }},
		{"too short", func(s Stream) {
			write(t, s, frames(time.Second, false))
			s.SpeechStarted()
			write(t, s, frames(60*time.Millisecond, true))
			s.Flush()
		}},
		{"flush twice", func(s Stream) {
			s.SpeechStarted()
			s.Flush()
			s.Flush()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ws := newWhisperServer(t)
			s, err := newTestOpenAI(t, ws, nil).Stream(context.Background(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			tt.drive(s)
			ev, ok := nextEvent(t, s, time.Second)
			if !ok || ev.Type != Final || ev.Text != "" {
				t.Errorf("event %+v, %v; want an empty Final", ev, ok)
			}
			if n := len(ws.got()); n != 0 {
				t.Errorf("%d uploads for nothing worth transcribing", n)
			}
		})
	}
}

func TestOpenAIConcurrentFlushesKeepOrder(t *testing.T) {
	t.Parallel()
	// The first utterance (the shortest) takes 600 ms to transcribe, the others 400 ms:
	// one after the other that is 1.4 s; at once, the later two finish first.
	ws := newWhisperServer(t)
	ws.delayFor = func(d time.Duration) time.Duration {
		if d < 500*time.Millisecond {
			return 600 * time.Millisecond
		}
		return 400 * time.Millisecond
	}
	s, err := newTestOpenAI(t, ws, nil).Stream(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	for _, d := range []time.Duration{400, 600, 800} {
		s.SpeechStarted()
		write(t, s, frames(d*time.Millisecond, true))
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		write(t, s, frames(300*time.Millisecond, false))
	}
	// Pre-roll: none before the first, 300 ms before the others.
	for _, want := range []string{"400 ms", "900 ms", "1100 ms"} {
		ev, ok := nextEvent(t, s, 3*time.Second)
		if !ok || ev.Text != want {
			t.Fatalf("got %q (%v), want %q", ev.Text, ok, want)
		}
	}
	// They ran at once: all three in little more than the slow one's time.
	if el := time.Since(start); el > 1100*time.Millisecond {
		t.Errorf("three transcriptions took %s; they should overlap", el)
	}
}

func TestOpenAIPreRollAfterPreviousUtterance(t *testing.T) {
	t.Parallel()
	ws := newWhisperServer(t)
	s, err := newTestOpenAI(t, ws, nil).Stream(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SpeechStarted()
	write(t, s, frames(500*time.Millisecond, true))
	s.Flush()
	// Speech starts again 100 ms later: the pre-roll is those 100 ms plus the last
	// 200 ms of the previous utterance.
	write(t, s, frames(100*time.Millisecond, false))
	s.SpeechStarted()
	write(t, s, frames(400*time.Millisecond, true))
	s.Flush()
	nextEvent(t, s, 3*time.Second)
	ev, _ := nextEvent(t, s, 3*time.Second)
	if ev.Text != "700 ms" {
		t.Errorf("second utterance %q, want 700 ms", ev.Text)
	}
}

func TestOpenAIRetriesAndFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		replies  []whisperReply
		mod      func(*OpenAIConfig)
		wantText string
		wantErr  string
		uploads  int
		minTime  time.Duration
	}{
		{
			name:     "429 with Retry-After",
			replies:  []whisperReply{{status: 429, header: map[string]string{"Retry-After": "1"}, errBody: `{"error":{"message":"Rate limit reached","type":"requests"}}`}, {text: "ok"}},
			wantText: "ok", uploads: 2, minTime: time.Second,
		},
		{
			name:     "502 then ok",
			replies:  []whisperReply{{status: 502, errBody: "bad gateway"}, {text: "ok"}},
			wantText: "ok", uploads: 2,
		},
		{
			name:     "slow server times out and is retried",
			replies:  []whisperReply{{delay: time.Hour}, {text: "ok"}},
			mod:      func(c *OpenAIConfig) { c.RequestTimeout = 200 * time.Millisecond },
			wantText: "ok", uploads: 2, minTime: 200 * time.Millisecond,
		},
		{
			name:    "401 fails the stream",
			replies: []whisperReply{{status: 401, errBody: `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}`}},
			wantErr: "Incorrect API key", uploads: 1,
		},
		{
			name:    "retries run out",
			replies: []whisperReply{{status: 500, errBody: `{"error":{"message":"oops","type":"server_error"}}`}},
			mod:     func(c *OpenAIConfig) { c.MaxRetries = 1 },
			wantErr: "after 2 attempts", uploads: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ws := newWhisperServer(t, tt.replies...)
			s, err := newTestOpenAI(t, ws, tt.mod).Stream(context.Background(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			start := time.Now()
			s.SpeechStarted()
			write(t, s, frames(300*time.Millisecond, true))
			s.Flush()
			ev, ok := nextEvent(t, s, 5*time.Second)
			if tt.wantErr != "" {
				if ok {
					t.Fatalf("got %+v; want the stream to fail", ev)
				}
				if err := s.Err(); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Err = %v, want %q", err, tt.wantErr)
				}
				if err := s.WriteFrame(frames(20*time.Millisecond, true)[0]); err == nil {
					t.Error("WriteFrame on a failed stream succeeded")
				}
			} else if !ok || ev.Text != tt.wantText {
				t.Errorf("event %+v %v; err %v", ev, ok, s.Err())
			}
			if n := len(ws.got()); n != tt.uploads {
				t.Errorf("%d uploads, want %d", n, tt.uploads)
			}
			if el := time.Since(start); el < tt.minTime {
				t.Errorf("took %s", el)
			}
		})
	}
}

func TestOpenAICloseAndCancel(t *testing.T) {
	t.Parallel()
	t.Run("close waits for a quick transcription", func(t *testing.T) {
		t.Parallel()
		ws := newWhisperServer(t, whisperReply{delay: 100 * time.Millisecond, text: "last words"})
		s, _ := newTestOpenAI(t, ws, nil).Stream(context.Background(), Options{})
		s.SpeechStarted()
		write(t, s, frames(300*time.Millisecond, true))
		s.Flush()
		s.Close()
		var texts []string
		for ev := range s.Events() {
			texts = append(texts, ev.Text)
		}
		if len(texts) != 1 || texts[0] != "last words" || s.Err() != nil {
			t.Errorf("after Close: %q, %v", texts, s.Err())
		}
		if err := s.Flush(); !errors.Is(err, ErrClosed) {
			t.Errorf("Flush after Close = %v", err)
		}
	})
	t.Run("close abandons a slow transcription", func(t *testing.T) {
		t.Parallel()
		ws := newWhisperServer(t, whisperReply{delay: time.Hour})
		s, _ := newTestOpenAI(t, ws, func(c *OpenAIConfig) { c.CloseTimeout = 100 * time.Millisecond }).Stream(context.Background(), Options{})
		s.SpeechStarted()
		write(t, s, frames(300*time.Millisecond, true))
		s.Flush()
		start := time.Now()
		s.Close()
		if el := time.Since(start); el > time.Second {
			t.Errorf("Close took %s", el)
		}
		for range s.Events() {
			t.Error("event after abandoned transcription")
		}
	})
	t.Run("cancel", func(t *testing.T) {
		t.Parallel()
		ws := newWhisperServer(t)
		ctx, cancel := context.WithCancel(context.Background())
		s, _ := newTestOpenAI(t, ws, nil).Stream(ctx, Options{})
		defer s.Close()
		cancel()
		if _, ok := nextEvent(t, s, time.Second); ok {
			t.Error("event after cancel")
		}
		if !errors.Is(s.Err(), context.Canceled) {
			t.Errorf("Err = %v", s.Err())
		}
	})
}

func TestOpenAIValidation(t *testing.T) {
	t.Parallel()
	ws := newWhisperServer(t)
	p := newTestOpenAI(t, ws, nil)
	if _, err := p.Stream(context.Background(), Options{SampleRate: 100}); err == nil {
		t.Error("sample rate 100 accepted")
	}
	s, _ := p.Stream(context.Background(), Options{})
	defer s.Close()
	if err := s.WriteFrame(audio.Frame{Samples: make([]int16, 480), Rate: 24000}); err == nil {
		t.Error("24 kHz frame accepted on a 16 kHz stream")
	}
	for _, cfg := range []OpenAIConfig{{BaseURL: "wss://x"}, {PreRoll: -1}, {MaxConcurrent: -1}} {
		if _, err := NewOpenAI(cfg); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
	d, _ := NewOpenAI(OpenAIConfig{})
	if d.cfg.Model != "whisper-1" || d.cfg.PreRoll != 300*time.Millisecond || d.Name() != "openai" {
		t.Errorf("defaults %+v", d.cfg)
	}
}

func TestEncodeWAV(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 16000} {
		rate, ch, bits, samples, err := parseWAV(encodeWAV(make([]int16, n), 8000))
		if err != nil || rate != 8000 || ch != 1 || bits != 16 || samples != n {
			t.Errorf("n=%d: %d %d %d %d %v", n, rate, ch, bits, samples, err)
		}
	}
}
