package voice

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestPlayout drives the playout on a fake clock: the first frame of a spurt goes out
// at once, the rest on the pacer's ticks, the tail is padded, pause holds the audio and
// resume continues it without a gap in the samples, clear drops it and reports what
// played, and a full ring holds the writer back.
func TestPlayout(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	notes := make(chan note, 256)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	out := &outRec{rate: 16000}
	p := newPlayout(out, 16000, 200*time.Millisecond, clock, notes, quit, &wg) // 3200 samples
	defer func() {
		p.shutdown()
		close(quit)
		wg.Wait()
	}()
	ramp := func(from, n int) []int16 {
		s := make([]int16, n)
		for i := range s {
			s[i] = int16(from + i)
		}
		return s
	}
	// advanceUntil moves time in small steps until cond holds.
	advanceUntil := func(what string, cond func() bool) {
		t.Helper()
		for i := 0; !cond(); i++ {
			if i > 2000 {
				t.Fatalf("%s: never happened", what)
			}
			clock.Advance(5 * time.Millisecond)
			time.Sleep(200 * time.Microsecond)
		}
	}
	ctx := context.Background()

	// One sentence of 700 samples: two full frames and a tail of 60.
	s0 := p.open(1, 0)
	if err := p.write(ctx, s0, ramp(1, 700)); err != nil {
		t.Fatal(err)
	}
	if n := out.frames(); n != 1 {
		t.Fatalf("%d frames right after the first audio, want 1 (sent at once)", n)
	}
	advanceUntil("second frame", func() bool { return out.frames() == 2 })
	p.close(s0)
	advanceUntil("padded tail", func() bool { return out.frames() == 3 })
	want := append(ramp(1, 700), make([]int16, 260)...)
	if got := out.audio(); !slices.Equal(got, want) {
		t.Fatalf("audio differs: %d samples", len(got))
	}
	gotNotes := drain(notes, 2)
	if gotNotes[0].kind != noteSegStarted || gotNotes[1].kind != noteSegPlayed || gotNotes[1].samples != 700 {
		t.Fatalf("notes %+v", gotNotes)
	}
	advanceUntil("spurt end", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.pacer == nil
	})

	// Pause and resume: nothing plays while paused, and playback continues from the
	// next sample.
	s1 := p.open(1, 1)
	if err := p.write(ctx, s1, ramp(1000, 1600)); err != nil {
		t.Fatal(err)
	}
	if !p.pause() {
		t.Fatal("pause saw nothing queued")
	}
	n := out.frames()
	for i := 0; i < 20; i++ {
		clock.Advance(5 * time.Millisecond)
		time.Sleep(200 * time.Microsecond)
	}
	if out.frames() != n {
		t.Fatalf("%d frames played while paused", out.frames()-n)
	}
	p.resume()
	p.close(s1)
	advanceUntil("rest of the sentence", func() bool { return out.frames() == n+4 })
	if got := out.audio()[960:]; !slices.Equal(got, ramp(1000, 1600)) {
		t.Fatal("resumed audio is not the continuation of the paused audio")
	}
	drain(notes, 2)

	// Backpressure and clear: a writer blocked on a full ring is released by clear with
	// errCleared, and clear reports the played share.
	advanceUntil("idle", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.pacer == nil
	})
	s2 := p.open(2, 0)
	errc := make(chan error, 1)
	go func() { errc <- p.write(ctx, s2, ramp(0, 5000)) }()
	advanceUntil("ring full, one frame out", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.wpos-p.rpos == int64(len(p.ring))
	})
	select {
	case err := <-errc:
		t.Fatalf("write of more than the ring returned early: %v", err)
	default:
	}
	played := p.clear(2)
	if err := <-errc; !errors.Is(err, errCleared) {
		t.Fatalf("blocked writer got %v, want errCleared", err)
	}
	if len(played) != 1 || played[0].reply != 2 || played[0].played <= 0 || played[0].played >= played[0].total || played[0].done {
		t.Fatalf("played %+v", played)
	}
	framesAtClear := out.frames()
	for i := 0; i < 20; i++ {
		clock.Advance(5 * time.Millisecond)
		time.Sleep(200 * time.Microsecond)
	}
	if out.frames() > framesAtClear+1 {
		t.Fatalf("%d frames after clear", out.frames()-framesAtClear)
	}
	if err := p.write(ctx, s2, ramp(0, 10)); !errors.Is(err, errCleared) {
		t.Fatalf("write to a cleared segment: %v", err)
	}
	// A cancelled reply's speaker opening a segment after the clear is refused: the
	// segment never joins the queue, so it cannot hold it up.
	late := p.open(2, 1)
	if err := p.write(ctx, late, ramp(0, 320)); !errors.Is(err, errCleared) {
		t.Fatalf("write to a late segment of a cleared reply: %v", err)
	}
	p.close(late)
	if p.busy() {
		t.Fatal("a late segment of a cleared reply was queued")
	}
	if st := p.Stats(); st.Frames != uint64(out.frames()) || st.Spurts < 3 {
		t.Errorf("stats %+v, %d frames out", st, out.frames())
	}
}

func drain(ch <-chan note, n int) []note {
	var out []note
	timeout := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case x := <-ch:
			out = append(out, x)
		case <-timeout:
			return out
		}
	}
	return out
}
