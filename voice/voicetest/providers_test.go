package voicetest

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/llm"
	"github.com/parleyhq/parley/voice/stt"
	"github.com/parleyhq/parley/voice/tts"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSTT(t *testing.T) {
	t.Parallel()
	for _, latency := range []time.Duration{0, 30 * time.Millisecond} {
		p := &STT{Text: "hello there", Latency: latency}
		s, err := p.Stream(context.Background(), stt.Options{SampleRate: 16000})
		if err != nil {
			t.Fatal(err)
		}
		frame := audio.Frame{Samples: make([]int16, 320), Rate: 16000}
		for i := 0; i < 50; i++ { // 1 s
			s.WriteFrame(frame)
		}
		s.SpeechStarted()
		for i := 0; i < 25; i++ { // 0.5 s
			s.WriteFrame(frame)
		}
		start := time.Now()
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		ev := <-s.Events()
		if ev.Type != stt.Final || ev.Text != "hello there" || ev.Start != time.Second || ev.End != 1500*time.Millisecond {
			t.Errorf("event %+v", ev)
		}
		if d := time.Since(start); d < latency {
			t.Errorf("final after %v, latency %v", d, latency)
		}
		s.Close()
		if _, ok := <-s.Events(); ok {
			t.Error("events open after Close")
		}
		if err := s.Flush(); err == nil {
			t.Error("Flush after Close succeeded")
		}
	}
}

func TestLLM(t *testing.T) {
	t.Parallel()
	p := &LLM{Reply: "One two three four five."}
	s, err := p.Stream(context.Background(), llm.Request{})
	if err != nil {
		t.Fatal(err)
	}
	var chunks []string
	var last llm.Chunk
	for {
		c, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		chunks, last = append(chunks, c.Text), c
	}
	if strings.Join(chunks, "") != p.Reply || len(chunks) != 2 || last.FinishReason != "stop" {
		t.Errorf("chunks %q, last %+v", chunks, last)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (&LLM{Reply: "x", Latency: time.Second}).Stream(ctx, llm.Request{}); err == nil {
		t.Error("a cancelled request succeeded")
	}
}

func TestTTS(t *testing.T) {
	t.Parallel()
	voice := make([]int16, 24000) // 1 s at 24 kHz
	p := &TTS{Rate: 24000, Audio: voice, PerChar: 50 * time.Millisecond}
	s, err := p.Synthesize(context.Background(), tts.Request{Text: "abcdefghij"}) // 10 chars: 0.5 s
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		f, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if f.Rate != 24000 || len(f.Samples) > 2400 {
			t.Errorf("frame of %d samples at %d Hz", len(f.Samples), f.Rate)
		}
		n += len(f.Samples)
	}
	if n != 12000 {
		t.Errorf("%d samples, want 12000", n)
	}
}
