package dispatch

import (
	"runtime"
	"sync"
	"time"
)

// cpuWindow is the span the default load is measured over: long enough that one burst
// (a reply being synthesised) does not flip the worker to full, short enough that a
// worker that has become busy stops getting jobs within a few status reports.
const cpuWindow = 5 * time.Second

// cpuMeter measures the process's CPU use over the last cpuWindow as a fraction of
// GOMAXPROCS cores. It samples lazily: each Load call records a sample (at most one per
// cpuWindow/5), so it needs no goroutine; the worker calls it every StatusInterval.
type cpuMeter struct {
	now   func() time.Time
	cpu   func() time.Duration // CPU time the process has used so far
	procs func() int

	mu      sync.Mutex
	samples []cpuSample // oldest first
	last    float64
}

type cpuSample struct {
	at  time.Time
	cpu time.Duration
}

func newCPUMeter() *cpuMeter {
	return &cpuMeter{
		now:   time.Now,
		cpu:   processCPUTime,
		procs: func() int { return runtime.GOMAXPROCS(0) },
	}
}

// Load returns the CPU use over the window, in [0, 1].
func (m *cpuMeter) Load() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	now, used := m.now(), m.cpu()
	// Keep one sample at least a window old as the base, and drop those before it.
	for len(m.samples) > 1 && now.Sub(m.samples[1].at) >= cpuWindow {
		m.samples = m.samples[1:]
	}
	if n := len(m.samples); n == 0 || now.Sub(m.samples[n-1].at) >= cpuWindow/5 {
		m.samples = append(m.samples, cpuSample{now, used})
	}
	base := m.samples[0]
	span := now.Sub(base.at)
	// Under 200 ms the CPU clock's granularity (a scheduler tick) dominates; keep the
	// last value (0 at start).
	if span < 200*time.Millisecond {
		return m.last
	}
	v := float64(used-base.cpu) / (float64(span) * float64(max(1, m.procs())))
	m.last = min(1, max(0, v))
	return m.last
}
