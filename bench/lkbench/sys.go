package main

import (
	"math"
	"slices"
	"time"
)

// dist summarises durations.
type dist struct {
	n              int
	p50, p95, p99  time.Duration
	min, max, mean time.Duration
}

func summarise(ds []time.Duration) dist {
	if len(ds) == 0 {
		return dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	// Nearest rank: the smallest value with at least p of the observations at or
	// below it.
	pct := func(p float64) time.Duration {
		k := int(math.Ceil(p*float64(len(s)))) - 1
		return s[min(max(k, 0), len(s)-1)]
	}
	return dist{n: len(s), p50: pct(0.5), p95: pct(0.95), p99: pct(0.99),
		min: s[0], max: s[len(s)-1], mean: sum / time.Duration(len(s))}
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
