package voice

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/voicetest"
)

// TestPerFrameAllocations: the per-frame paths allocate nothing once warm — the
// caller's audio through WriteFrame (resampling, VAD, recogniser feed, speech
// notifications to the control loop) at the rates transports deliver, and a playout
// tick (copy out of the ring, pacing bookkeeping, the write to Output). It counts the
// whole process's allocations (the control loop's too), so it does not run in parallel.
func TestPerFrameAllocations(t *testing.T) {
	for _, rate := range []int{8000, 16000, 48000} {
		s, err := NewSession(Config{
			Agent:  Agent{SystemPrompt: "x", EndCallAfterSilenceMS: -1, MaxCallDurationMS: -1, InterruptionSensitivity: 0.5},
			STT:    &voicetest.STT{Text: "hello"},
			LLM:    &voicetest.LLM{Reply: "Hi."},
			TTS:    &voicetest.TTS{Rate: 24000, Audio: make([]int16, 2400)},
			Output: audio.WriterFunc(func(audio.Frame) error { return nil }),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		n := rate / 50
		speech := resampleAll(t, fixture(t, "hello"), 16000, rate)
		next := 0
		tone := func() []int16 { // successive frames of real speech
			f := speech[next*n : (next+1)*n]
			next++
			return f
		}
		quiet := make([]int16, n)
		write := func(f []int16) {
			if err := s.WriteFrame(audio.Frame{Samples: f, Rate: rate}); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 100; i++ { // warm up: filters, buffers, the VAD's noise model
			write(quiet)
		}
		if a := testing.AllocsPerRun(200, func() { write(quiet) }); a != 0 {
			t.Errorf("%d Hz silence: %.1f allocations per frame", rate, a)
		}
		// Speech: the frames that notify the control loop of ongoing speech. (The
		// speech-start and -end frames themselves allocate a segment record, once per
		// utterance.)
		for i := 0; i < 30; i++ {
			write(tone())
		}
		if a := testing.AllocsPerRun(50, func() { write(tone()) }); a != 0 {
			t.Errorf("%d Hz speech: %.1f allocations per frame", rate, a)
		}
		// The control loop hears of the speech asynchronously: let it catch up before
		// Stop, which drops notes still queued.
		for deadline := time.Now().Add(5 * time.Second); s.Stats().Turns == 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		s.Stop()
		if s.loop.cur == nil || s.loop.cur.end >= 0 {
			t.Errorf("%d Hz: the speech frames were not heard as speech", rate)
		}
	}

	// A playout tick.
	notes := make(chan note, 1024)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	p := newPlayout(audio.WriterFunc(func(audio.Frame) error { return nil }), 48000, time.Second, newFakeClock(), notes, quit, &wg)
	seg := p.open(1, 0)
	chunk := make([]int16, 960)
	p.mu.Lock()
	p.spurtID = 7
	p.pacer = &audio.Pacer{} // a stand-in: the tick only checks that a spurt is on
	p.mu.Unlock()
	tick := audio.Tick{Lateness: time.Millisecond}
	if a := testing.AllocsPerRun(200, func() {
		if err := p.write(context.Background(), seg, chunk); err != nil {
			t.Fatal(err)
		}
		p.tick(7, tick)
	}); a != 0 {
		t.Errorf("playout: %.1f allocations per frame", a)
	}
	p.mu.Lock()
	p.pacer = nil
	p.mu.Unlock()
	close(quit)
}
