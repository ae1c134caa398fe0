package dispatch

import (
	"math"
	"testing"
	"time"
)

// The CPU meter divides the CPU time used over the last ~5 s by wall time and cores,
// with a fake clock and CPU counter.
func TestCPUMeter(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	var cpu time.Duration
	m := &cpuMeter{now: func() time.Time { return now }, cpu: func() time.Duration { return cpu }, procs: func() int { return 2 }}
	step := func(wall, used time.Duration) float64 {
		now = now.Add(wall)
		cpu += used
		return m.Load()
	}
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-9 }

	if got := m.Load(); got != 0 {
		t.Fatalf("first Load = %g, want 0 (no span yet)", got)
	}
	if got := step(100*time.Millisecond, 100*time.Millisecond); got != 0 {
		t.Fatalf("Load after 100 ms = %g, want the last value, 0", got)
	}
	// One core busy out of two over 1 s: 0.5.
	if got := step(900*time.Millisecond, 900*time.Millisecond); !near(got, 0.5) {
		t.Fatalf("Load = %g, want 0.5", got)
	}
	// Both cores busy for 10 s: the window forgets the idle start.
	for range 40 {
		step(250*time.Millisecond, 500*time.Millisecond)
	}
	if got := m.Load(); !near(got, 1) {
		t.Fatalf("Load when saturated = %g, want 1", got)
	}
	// Then idle for 10 s.
	for range 40 {
		step(250*time.Millisecond, 0)
	}
	if got := m.Load(); !near(got, 0) {
		t.Fatalf("Load when idle = %g, want 0", got)
	}
	// Half a core for a while: 0.25, and the sample list stays bounded.
	for range 100 {
		step(250*time.Millisecond, 125*time.Millisecond)
	}
	if got := m.Load(); !near(got, 0.25) {
		t.Fatalf("Load = %g, want 0.25", got)
	}
	if n := len(m.samples); n > 8 {
		t.Fatalf("%d samples kept", n)
	}
	// Clamped to [0, 1] whatever the counter says.
	if got := step(time.Second, 100*time.Second); got != 1 {
		t.Fatalf("Load = %g, want clamped to 1", got)
	}
}

// The real meter reads the process's CPU time and stays within [0, 1].
func TestCPUMeterReal(t *testing.T) {
	t.Parallel()
	m := newCPUMeter()
	if processCPUTime() <= 0 {
		t.Fatal("no process CPU time measured")
	}
	m.Load()
	time.Sleep(300 * time.Millisecond) // past the 200 ms minimum span
	if got := m.Load(); got < 0 || got > 1 {
		t.Fatalf("Load = %g", got)
	}
}
