package audio

import (
	"context"
	"sync"
	"testing"
	"time"
)

const ms = time.Millisecond

// TestSchedule drives the Pacer's clockwork with hand-picked wake-up times.
func TestSchedule(t *testing.T) {
	t.Parallel()
	type want struct {
		deadlines []time.Duration // of the ticks fired, from start
		missed    int             // Missed on the first of them
	}
	tests := []struct {
		name      string
		maxBurst  int
		wakes     []time.Duration // wake-up times, from start
		want      []want          // one per wake-up
		stats     PacerStats
		nextAfter time.Duration // the deadline after the last wake-up, from start
	}{
		{
			name:      "on time",
			maxBurst:  3,
			wakes:     []time.Duration{20 * ms, 40 * ms, 60 * ms},
			want:      []want{{[]time.Duration{20 * ms}, 0}, {[]time.Duration{40 * ms}, 0}, {[]time.Duration{60 * ms}, 0}},
			stats:     PacerStats{Ticks: 3},
			nextAfter: 80 * ms,
		},
		{
			name:     "jitter does not drift",
			maxBurst: 3,
			// Each wake-up is a few ms late; deadlines stay on the 20 ms grid.
			wakes:     []time.Duration{23 * ms, 44 * ms, 61 * ms, 89 * ms},
			want:      []want{{[]time.Duration{20 * ms}, 0}, {[]time.Duration{40 * ms}, 0}, {[]time.Duration{60 * ms}, 0}, {[]time.Duration{80 * ms}, 0}},
			stats:     PacerStats{Ticks: 4, Late: 1, MaxLateness: 9 * ms},
			nextAfter: 100 * ms,
		},
		{
			name:      "early wake-up fires nothing",
			maxBurst:  3,
			wakes:     []time.Duration{19 * ms, 20 * ms},
			want:      []want{{nil, 0}, {[]time.Duration{20 * ms}, 0}},
			stats:     PacerStats{Ticks: 1},
			nextAfter: 40 * ms,
		},
		{
			name:     "short stall catches up in a burst",
			maxBurst: 3,
			wakes:    []time.Duration{20 * ms, 81 * ms, 100 * ms},
			want: []want{
				{[]time.Duration{20 * ms}, 0},
				{[]time.Duration{40 * ms, 60 * ms, 80 * ms}, 0},
				{[]time.Duration{100 * ms}, 0},
			},
			stats:     PacerStats{Ticks: 5, Late: 2, MaxLateness: 41 * ms},
			nextAfter: 120 * ms,
		},
		{
			name:     "long stall drops the oldest and re-anchors",
			maxBurst: 3,
			// At 167 ms the deadlines 20..160 are all due: 8 of them. 5 are dropped,
			// the newest 3 fire, and the schedule restarts at 167.
			wakes: []time.Duration{167 * ms, 187 * ms},
			want: []want{
				{[]time.Duration{120 * ms, 140 * ms, 160 * ms}, 5},
				{[]time.Duration{187 * ms}, 0},
			},
			stats:     PacerStats{Ticks: 4, Late: 3, Missed: 5, Reanchors: 1, MaxLateness: 47 * ms},
			nextAfter: 207 * ms,
		},
		{
			name:     "burst of one",
			maxBurst: 1,
			wakes:    []time.Duration{45 * ms, 65 * ms},
			want: []want{
				{[]time.Duration{40 * ms}, 1},
				{[]time.Duration{65 * ms}, 0},
			},
			stats:     PacerStats{Ticks: 2, Late: 0, Missed: 1, Reanchors: 1, MaxLateness: 5 * ms},
			nextAfter: 85 * ms,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Unix(1_700_000_000, 0)
			cfg := PacerConfig{MaxBurst: tt.maxBurst}.withDefaults()
			s := newSchedule(cfg, start)
			var seq uint64
			for i, wake := range tt.wakes {
				ticks := s.fire(start.Add(wake), nil)
				w := tt.want[i]
				if len(ticks) != len(w.deadlines) {
					t.Fatalf("wake %d at %v: %d ticks, want %d", i, wake, len(ticks), len(w.deadlines))
				}
				for j, tk := range ticks {
					if got := tk.Deadline.Sub(start); got != w.deadlines[j] {
						t.Errorf("wake %d tick %d: deadline %v, want %v", i, j, got, w.deadlines[j])
					}
					if tk.Lateness != wake-w.deadlines[j] {
						t.Errorf("wake %d tick %d: lateness %v", i, j, tk.Lateness)
					}
					if tk.Seq != seq {
						t.Errorf("wake %d tick %d: seq %d, want %d", i, j, tk.Seq, seq)
					}
					seq++
					wantMissed := 0
					if j == 0 {
						wantMissed = w.missed
					}
					if tk.Missed != wantMissed {
						t.Errorf("wake %d tick %d: missed %d, want %d", i, j, tk.Missed, wantMissed)
					}
				}
			}
			if s.stats != tt.stats {
				t.Errorf("stats %+v, want %+v", s.stats, tt.stats)
			}
			if got := s.deadline().Sub(start); got != tt.nextAfter {
				t.Errorf("next deadline %v, want %v", got, tt.nextAfter)
			}
		})
	}
}

// TestScheduleNoDrift runs an hour of 20 ms ticks, each woken 0-4 ms late, and checks
// that the last deadline is exactly where the grid puts it.
func TestScheduleNoDrift(t *testing.T) {
	t.Parallel()
	start := time.Unix(0, 0)
	s := newSchedule(PacerConfig{}.withDefaults(), start)
	const n = 3600 * 50
	var last Tick
	buf := make([]Tick, 0, 3)
	for i := 1; i <= n; i++ {
		wake := s.deadline().Add(time.Duration(i%5) * ms)
		ticks := s.fire(wake, buf[:0])
		if len(ticks) != 1 {
			t.Fatalf("tick %d: %d ticks", i, len(ticks))
		}
		last = ticks[0]
	}
	if want := start.Add(n * 20 * ms); !last.Deadline.Equal(want) {
		t.Fatalf("last deadline %v, want %v", last.Deadline.Sub(start), want.Sub(start))
	}
	if s.stats.Late != 0 || s.stats.Missed != 0 {
		t.Fatalf("stats %+v", s.stats)
	}
}

// fakeClock is a Clock whose time moves only when the test says so.
type fakeClock struct {
	mu     sync.Mutex
	cond   *sync.Cond
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c      *fakeClock
	ch     chan time.Time
	when   time.Time
	active bool
}

func newFakeClock() *fakeClock {
	c := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1)}
	c.mu.Lock()
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	t.Reset(d)
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.when = t.c.now.Add(d)
	t.active = true
	t.c.fireLocked()
	t.c.cond.Broadcast()
	return was
}

func (c *fakeClock) fireLocked() {
	for _, t := range c.timers {
		if t.active && !t.when.After(c.now) {
			t.active = false
			select {
			case t.ch <- c.now:
			default:
			}
		}
	}
}

// Advance moves time forward and fires the timers that come due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.fireLocked()
}

// WaitArmed blocks until some timer is waiting for a future time, that is until the
// Pacer has handled everything due and gone back to sleep, and returns that time.
func (c *fakeClock) WaitArmed() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for _, t := range c.timers {
			if t.active && t.when.After(c.now) {
				return t.when
			}
		}
		c.cond.Wait()
	}
}

// TestPacerWithFakeClock runs the real Pacer goroutine against a fake clock: each step
// advances time, then waits until the Pacer is asleep again, so nothing depends on how
// fast the machine is.
func TestPacerWithFakeClock(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	start := clock.Now()
	ticks := make(chan Tick, 16)
	p, err := NewPacer(PacerConfig{Clock: clock}, func(tk Tick) { ticks <- tk })
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if err := p.Start(context.Background()); err == nil {
		t.Error("second Start succeeded")
	}

	steps := []struct {
		advance   time.Duration
		deadlines []time.Duration // of the ticks this step fires, from start
		next      time.Duration   // where the Pacer sleeps until afterwards, from start
	}{
		{20 * ms, []time.Duration{20 * ms}, 40 * ms},
		{23 * ms, []time.Duration{40 * ms}, 60 * ms},                        // 3 ms late: on time, no drift
		{24 * ms, []time.Duration{60 * ms}, 80 * ms},                        // 7 ms late: late
		{50 * ms, []time.Duration{80 * ms, 100 * ms}, 120 * ms},             // burst of 2 at 117 ms
		{150 * ms, []time.Duration{220 * ms, 240 * ms, 260 * ms}, 287 * ms}, // at 267: 120..260 due, 5 missed, re-anchored
		{20 * ms, []time.Duration{287 * ms}, 307 * ms},
	}
	if got := clock.WaitArmed().Sub(start); got != 20*ms {
		t.Fatalf("first deadline %v", got)
	}
	for i, st := range steps {
		clock.Advance(st.advance)
		next := clock.WaitArmed().Sub(start)
		for j, d := range st.deadlines {
			tk := <-ticks
			if got := tk.Deadline.Sub(start); got != d {
				t.Fatalf("step %d tick %d: deadline %v, want %v", i, j, got, d)
			}
		}
		select {
		case tk := <-ticks:
			t.Fatalf("step %d: extra tick %+v", i, tk)
		default:
		}
		if next != st.next {
			t.Fatalf("step %d: sleeping until %v, want %v", i, next, st.next)
		}
	}
	want := PacerStats{Ticks: 9, Late: 6, Missed: 5, Reanchors: 1, MaxLateness: 47 * ms}
	if got := p.Stats(); got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
	p.Stop()
	p.Stop()
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if err := p.Start(context.Background()); err == nil {
		t.Error("Start after Stop succeeded")
	}
}

func TestPacerStopsWithContext(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	p, err := NewPacer(PacerConfig{Clock: clock}, func(Tick) {})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	clock.WaitArmed()
	cancel()
	<-p.Done()
	p.Stop()
}

func TestPacerStopBeforeStart(t *testing.T) {
	t.Parallel()
	p, err := NewPacer(PacerConfig{}, func(Tick) {})
	if err != nil {
		t.Fatal(err)
	}
	p.Stop()
	p.Stop()
	if err := p.Start(context.Background()); err == nil {
		t.Fatal("Start after Stop succeeded")
	}
}

// TestPacerSystemClock is a smoke test on the real clock: it ticks, in order, and
// stops. It asserts nothing about timing.
func TestPacerSystemClock(t *testing.T) {
	t.Parallel()
	ticks := make(chan Tick, 100)
	p, err := NewPacer(PacerConfig{Interval: 2 * ms}, func(tk Tick) {
		select {
		case ticks <- tk:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for want := uint64(0); want < 5; want++ {
		if tk := <-ticks; tk.Seq != want {
			t.Fatalf("seq %d, want %d", tk.Seq, want)
		}
	}
	p.Stop()
	if p.Stats().Ticks < 5 {
		t.Fatalf("stats %+v", p.Stats())
	}
}

func TestPacerConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  PacerConfig
		ok   bool
	}{
		{"defaults", PacerConfig{}, true},
		{"interval too small", PacerConfig{Interval: time.Microsecond}, false},
		{"negative burst", PacerConfig{MaxBurst: -1}, false},
		{"negative late", PacerConfig{LateAfter: -ms}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewPacer(tt.cfg, func(Tick) {})
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v", err)
			}
		})
	}
	if _, err := NewPacer(PacerConfig{}, nil); err == nil {
		t.Error("nil callback accepted")
	}
	d := PacerConfig{}.withDefaults()
	if d.Interval != 20*ms || d.MaxBurst != 3 || d.LateAfter != 5*ms || d.Clock == nil {
		t.Errorf("defaults %+v", d)
	}
}
