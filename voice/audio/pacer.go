package audio

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Clock is the time source of a Pacer. Production code uses the zero PacerConfig.Clock
// (the system clock); tests inject a fake one to step time by hand.
type Clock interface {
	// Now returns the current time. With the system clock it carries a monotonic
	// reading, so wall-clock jumps (NTP, DST) do not disturb the schedule.
	Now() time.Time
	// NewTimer returns a timer that fires once, d from now.
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer a Pacer uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time        { return t.t.C }
func (t systemTimer) Stop() bool                 { return t.t.Stop() }
func (t systemTimer) Reset(d time.Duration) bool { return t.t.Reset(d) }

// PacerConfig configures a Pacer. The zero value of each field selects its default.
type PacerConfig struct {
	// Interval is the time between ticks. Default 20 ms, the frame length of Opus in
	// WebRTC and of Twilio and most SIP media streams.
	Interval time.Duration
	// MaxBurst is the most ticks a Pacer fires back to back when it wakes up behind
	// schedule (after a GC pause, a slow callback or a starved CPU), counting the one
	// that was due. Default 3: 60 ms of catch-up at 20 ms, which the jitter buffer of a
	// WebRTC or SIP receiver (40-100 ms deep) absorbs. Deadlines further behind than
	// that are missed on purpose: frames sent later would only be played late or thrown
	// away by the receiver. After missing deadlines the Pacer re-anchors its schedule
	// at the current time.
	MaxBurst int
	// LateAfter is how far past its deadline a tick may fire before it counts as late
	// in PacerStats. Default Interval/4 (5 ms at 20 ms): well above the sub-millisecond
	// timer slack of an idle Linux box, well below anything a listener would notice.
	LateAfter time.Duration
	// Clock is the time source; nil means the system clock.
	Clock Clock
}

func (c PacerConfig) withDefaults() PacerConfig {
	if c.Interval == 0 {
		c.Interval = 20 * time.Millisecond
	}
	if c.MaxBurst == 0 {
		c.MaxBurst = 3
	}
	if c.LateAfter == 0 {
		c.LateAfter = c.Interval / 4
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	return c
}

func (c PacerConfig) validate() error {
	switch {
	case c.Interval < time.Millisecond:
		return fmt.Errorf("audio: pacer: interval %v is under 1ms", c.Interval)
	case c.MaxBurst < 1:
		return fmt.Errorf("audio: pacer: max burst %d is under 1", c.MaxBurst)
	case c.LateAfter < 0:
		return fmt.Errorf("audio: pacer: late-after %v is negative", c.LateAfter)
	}
	return nil
}

// Tick is one firing of a Pacer.
type Tick struct {
	// Seq numbers the ticks a Pacer fires, from 0, with no gaps: missed deadlines do
	// not consume numbers.
	Seq uint64
	// Deadline is when the tick was due.
	Deadline time.Time
	// Lateness is how long after Deadline it fired.
	Lateness time.Duration
	// Missed is the number of deadlines dropped just before this tick because the
	// Pacer was more than MaxBurst ticks behind. The caller decides what that means:
	// an outbound audio stream skips as much audio to stay in real time.
	Missed int
}

// PacerStats counts how well a Pacer kept time.
type PacerStats struct {
	Ticks       uint64        // ticks fired
	Late        uint64        // ticks that fired more than LateAfter past their deadline
	Missed      uint64        // deadlines dropped because the Pacer was too far behind
	Reanchors   uint64        // times the schedule was restarted after missed deadlines
	MaxLateness time.Duration // the worst Lateness of any tick fired
}

// Pacer fires a callback on a fixed schedule, once every Interval: the heartbeat that
// sends one audio frame every 20 ms to a caller.
//
// The schedule is anchored at Start: tick n is due at start + n*Interval, whenever the
// previous tick actually fired, so timer jitter never accumulates into drift. A tick
// that fires a little late leaves the next deadline where it was. When the Pacer
// wakes up more than one deadline behind it fires the overdue ticks back to back, up to
// MaxBurst, and if it is further behind than that it drops the oldest deadlines
// (counting them as missed) and re-anchors the schedule at the current time.
//
// The callback runs on the Pacer's own goroutine, one tick at a time. It should return
// well within Interval; a slow callback makes the following ticks late.
type Pacer struct {
	cfg  PacerConfig
	fn   func(Tick)
	mu   sync.Mutex
	s    schedule
	stop chan struct{}
	done chan struct{}

	state pacerState // guarded by mu
	ran   bool       // a goroutine was started; guarded by mu
}

type pacerState int

const (
	pacerNew pacerState = iota
	pacerRunning
	pacerStopped
)

// NewPacer returns a Pacer that calls fn on every tick. It does nothing until Start.
func NewPacer(cfg PacerConfig, fn func(Tick)) (*Pacer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if fn == nil {
		return nil, errors.New("audio: pacer: nil callback")
	}
	return &Pacer{
		cfg:  cfg,
		fn:   fn,
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}, nil
}

// Start anchors the schedule at the current time and starts ticking: the first tick
// fires one Interval from now. The Pacer runs until Stop is called or ctx ends. A
// Pacer starts only once: Start after Start or after Stop returns an error.
func (p *Pacer) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.state {
	case pacerRunning:
		return errors.New("audio: pacer: already started")
	case pacerStopped:
		return errors.New("audio: pacer: stopped")
	}
	p.state = pacerRunning
	p.ran = true
	p.s = newSchedule(p.cfg, p.cfg.Clock.Now())
	go p.run(ctx)
	return nil
}

// Stop stops the Pacer and waits for its goroutine to exit (so for any callback in
// progress to return). It is safe to call more than once, and before Start. Stop must
// not be called from the callback, which it would wait for forever.
func (p *Pacer) Stop() {
	p.mu.Lock()
	started := p.state == pacerRunning || p.ran
	if p.state != pacerStopped {
		p.state = pacerStopped
		close(p.stop)
	}
	p.mu.Unlock()
	if started {
		<-p.done
	}
}

// Done is closed when the Pacer's goroutine has exited (after Stop, or when the ctx
// given to Start ends).
func (p *Pacer) Done() <-chan struct{} { return p.done }

// Stats returns a snapshot of the Pacer's counters. It is safe to call from any
// goroutine.
func (p *Pacer) Stats() PacerStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.s.stats
}

func (p *Pacer) run(ctx context.Context) {
	defer close(p.done)
	clock := p.cfg.Clock
	p.mu.Lock()
	wait := p.s.deadline().Sub(clock.Now())
	p.mu.Unlock()
	timer := clock.NewTimer(wait)
	defer timer.Stop()
	ticks := make([]Tick, 0, p.cfg.MaxBurst)
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.stop:
			return
		case <-timer.C():
		}
		now := clock.Now()
		p.mu.Lock()
		ticks = p.s.fire(now, ticks[:0])
		p.mu.Unlock()
		for _, t := range ticks {
			// Stop promptly even in the middle of a burst.
			select {
			case <-p.stop:
				return
			case <-ctx.Done():
				return
			default:
			}
			p.fn(t)
		}
		p.mu.Lock()
		next := p.s.deadline()
		p.mu.Unlock()
		timer.Reset(next.Sub(clock.Now()))
	}
}

// schedule is the Pacer's clockwork, kept free of goroutines and timers so that it can
// be tested with plain times.
type schedule struct {
	interval  time.Duration
	maxBurst  int
	lateAfter time.Duration
	anchor    time.Time
	next      int64 // index of the next deadline: anchor + next*interval
	seq       uint64
	stats     PacerStats
}

func newSchedule(cfg PacerConfig, start time.Time) schedule {
	return schedule{
		interval:  cfg.Interval,
		maxBurst:  cfg.MaxBurst,
		lateAfter: cfg.LateAfter,
		anchor:    start,
		next:      1,
	}
}

// deadline is when the next tick is due.
func (s *schedule) deadline() time.Time {
	return s.anchor.Add(time.Duration(s.next) * s.interval)
}

// fire appends to buf the ticks due at now and advances the schedule past them. It
// returns buf unchanged if nothing is due yet (a timer that fired early).
func (s *schedule) fire(now time.Time, buf []Tick) []Tick {
	elapsed := now.Sub(s.anchor)
	// last is the index of the latest deadline at or before now.
	last := int64(elapsed / s.interval)
	due := last - s.next + 1
	if due <= 0 {
		return buf
	}
	missed := int64(0)
	if due > int64(s.maxBurst) {
		missed = due - int64(s.maxBurst)
		s.next += missed
		due = int64(s.maxBurst)
	}
	for i := int64(0); i < due; i++ {
		deadline := s.anchor.Add(time.Duration(s.next+i) * s.interval)
		t := Tick{Seq: s.seq, Deadline: deadline, Lateness: now.Sub(deadline)}
		if i == 0 {
			t.Missed = int(missed)
		}
		s.seq++
		s.stats.Ticks++
		if t.Lateness > s.lateAfter {
			s.stats.Late++
		}
		s.stats.MaxLateness = max(s.stats.MaxLateness, t.Lateness)
		buf = append(buf, t)
	}
	s.next += due
	if missed > 0 {
		// Too far behind to catch up: restart the schedule from now, so that the next
		// tick is a full interval after the burst rather than immediately due.
		s.stats.Missed += uint64(missed)
		s.stats.Reanchors++
		s.anchor = now
		s.next = 1
	}
	return buf
}
