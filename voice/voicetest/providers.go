// Package voicetest has in-process STT, LLM and TTS providers that answer from a script,
// instantly or after a fixed latency, in the manner of net/http/httptest. They exist
// for benchmarks that measure the voice engine's own cost (per-turn overhead, calls per
// core), where a network round trip or a server's CPU would hide the engine's, and for
// code built on the engine that needs a session without a provider. The engine's own
// tests do not use them: they drive the real adapters against servers speaking the
// real wire formats.
package voicetest

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/llm"
	"github.com/parleyhq/parley/voice/stt"
	"github.com/parleyhq/parley/voice/tts"
)

// STT answers every Flush with a Final carrying Text, after Latency, with the
// utterance's offsets (SpeechStarted to Flush) as a streaming recogniser reports them.
type STT struct {
	Text    string
	Latency time.Duration
}

func (p *STT) Name() string { return "fake-stt" }

func (p *STT) Stream(ctx context.Context, opts stt.Options) (stt.Stream, error) {
	rate := opts.SampleRate
	if rate == 0 {
		rate = 16000
	}
	s := &sttStream{p: p, rate: rate, events: make(chan stt.Event, 16)}
	s.ctx, s.cancel = context.WithCancel(ctx)
	return s, nil
}

type sttStream struct {
	p      *STT
	rate   int
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	total  int64
	start  int64
	closed bool
	wg     sync.WaitGroup
	events chan stt.Event
}

func (s *sttStream) WriteFrame(f audio.Frame) error {
	s.mu.Lock()
	s.total += int64(len(f.Samples))
	s.mu.Unlock()
	return nil
}

func (s *sttStream) SpeechStarted() {
	s.mu.Lock()
	s.start = s.total
	s.mu.Unlock()
}

func (s *sttStream) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("voicetest: stream closed")
	}
	ev := stt.Event{Type: stt.Final, Text: s.p.Text,
		Start: time.Duration(s.start) * time.Second / time.Duration(s.rate),
		End:   time.Duration(s.total) * time.Second / time.Duration(s.rate)}
	if s.p.Latency <= 0 {
		ev.At = time.Now()
		select {
		case s.events <- ev:
		default:
			return errors.New("voicetest: events backlog")
		}
		return nil
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTimer(s.p.Latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return
		}
		ev.At = time.Now()
		select {
		case s.events <- ev:
		case <-s.ctx.Done():
		}
	}()
	return nil
}

func (s *sttStream) Events() <-chan stt.Event { return s.events }
func (s *sttStream) Err() error               { return nil }

func (s *sttStream) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	close(s.events)
	return nil
}

// LLM streams Reply in chunks of a few words, the first after Latency.
type LLM struct {
	Reply   string
	Latency time.Duration
}

func (p *LLM) Name() string { return "fake-llm" }

func (p *LLM) Stream(ctx context.Context, req llm.Request) (llm.Stream, error) {
	if p.Latency > 0 {
		t := time.NewTimer(p.Latency)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// Chunks of three words, as a model's tokens arrive in small pieces.
	words := strings.SplitAfter(p.Reply, " ")
	var chunks []string
	for i := 0; i < len(words); i += 3 {
		chunks = append(chunks, strings.Join(words[i:min(i+3, len(words))], ""))
	}
	return &llmStream{ctx: ctx, chunks: chunks}, nil
}

type llmStream struct {
	ctx    context.Context
	chunks []string
	i      int
}

func (s *llmStream) Recv() (llm.Chunk, error) {
	if err := s.ctx.Err(); err != nil {
		return llm.Chunk{}, err
	}
	if s.i >= len(s.chunks) {
		return llm.Chunk{}, io.EOF
	}
	c := llm.Chunk{Text: s.chunks[s.i]}
	s.i++
	if s.i == len(s.chunks) {
		c.FinishReason = "stop"
	}
	return c, nil
}

func (s *llmStream) Close() error { return nil }

// TTS speaks Audio (at Rate) for every sentence, scaled to the sentence's length at
// PerChar (0: the whole of Audio), in chunks of 100 ms, the first after Latency.
// Audio is shared, never written: the engine copies what it is given.
type TTS struct {
	Rate    int
	Audio   []int16
	PerChar time.Duration
	Latency time.Duration
}

func (p *TTS) Name() string    { return "fake-tts" }
func (p *TTS) SampleRate() int { return p.Rate }

func (p *TTS) Synthesize(ctx context.Context, req tts.Request) (tts.Stream, error) {
	n := len(p.Audio)
	if p.PerChar > 0 {
		n = min(n, int(int64(len([]rune(req.Text)))*int64(p.PerChar)*int64(p.Rate)/int64(time.Second)))
	}
	return &ttsStream{ctx: ctx, p: p, audio: p.Audio[:n], wait: p.Latency}, nil
}

type ttsStream struct {
	ctx   context.Context
	p     *TTS
	audio []int16
	wait  time.Duration
}

func (s *ttsStream) Recv() (audio.Frame, error) {
	if s.wait > 0 {
		t := time.NewTimer(s.wait)
		s.wait = 0
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return audio.Frame{}, s.ctx.Err()
		}
	}
	if err := s.ctx.Err(); err != nil {
		return audio.Frame{}, err
	}
	if len(s.audio) == 0 {
		return audio.Frame{}, io.EOF
	}
	k := min(len(s.audio), s.p.Rate/10)
	f := audio.Frame{Samples: s.audio[:k:k], Rate: s.p.Rate}
	s.audio = s.audio[k:]
	return f, nil
}

func (s *ttsStream) Close() error { return nil }
