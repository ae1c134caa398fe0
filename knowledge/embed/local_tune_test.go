//go:build tune

package embed

import (
	"sort"
	"testing"
)

// TestLocalTune searches the local model's weights on the tuning questions and prints the
// best. It is how defaultLocalParams were chosen; it is behind the "tune" build tag, so it never runs (or skips) in CI:
//
//	go test -tags tune -run TestLocalTune -v ./knowledge/embed
//
// Each candidate is scored by its MRR averaged over several hash salts: at 384
// dimensions which features collide matters as much as a weight does, and a search on one
// salt mostly finds weights that suit its collisions (on this set, the best single-salt
// weights scored 0.90 on the tuning questions and 0.82 held out).
func TestLocalTune(t *testing.T) {
	const salts = 8
	score := func(p localParams, dim int, qs []qrel) float64 {
		var sum float64
		for s := range salts {
			p.salt = fmix64(uint64(s) + 1)
			if s == 0 {
				p.salt = 0
			}
			got, _ := mrr(t, newLocal(dim, p), qs)
			sum += got
		}
		return sum / salts
	}
	type result struct {
		p          localParams
		tune, held float64
	}
	var results []result
	ws := []float32{0, 0.15, 0.3, 0.5, 0.7, 1}
	for _, bigram := range []float32{0, 0.25, 0.5, 0.75} {
		for _, c3 := range ws {
			for _, c4 := range ws {
				for _, c5 := range ws {
					for _, stop := range []bool{false, true} {
						p := localParams{word: 1, bigram: bigram, char: [3]float32{c3, c4, c5}, stopNgrams: stop}
						results = append(results, result{p: p, tune: score(p, DefaultLocalDim, tuneQueries)})
					}
				}
			}
		}
	}
	sort.SliceStable(results, func(i, j int) bool { return results[i].tune > results[j].tune })
	for _, r := range results[:30] {
		r.held = score(r.p, DefaultLocalDim, heldOutQueries)
		t.Logf("tune %.3f held %.3f  %+v", r.tune, r.held, r.p)
	}
	t.Logf("default: tune %.3f held %.3f (averaged over %d salts)",
		score(defaultLocalParams, DefaultLocalDim, tuneQueries), score(defaultLocalParams, DefaultLocalDim, heldOutQueries), salts)
	for _, dim := range []int{64, 128, 256, 384, 768, 1024, 2048} {
		t.Logf("dim %4d: tune %.3f held %.3f", dim, score(defaultLocalParams, dim, tuneQueries), score(defaultLocalParams, dim, heldOutQueries))
	}
}
