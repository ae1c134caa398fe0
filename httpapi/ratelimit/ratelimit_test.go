package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestExactlyLimitThenDenied(t *testing.T) {
	forEachStore(t, func(t *testing.T, f fixture) {
		for _, tc := range []struct {
			limit, lease int
		}{
			{limit: 1, lease: 1},
			{limit: 10, lease: 1},
			{limit: 25, lease: 2}, // the last lease is cut short by the limit
			{limit: 30, lease: 3}, // the public per-IP limit
			{limit: 100, lease: 10},
		} {
			t.Run(fmt.Sprint(tc.limit), func(t *testing.T) {
				store := &counting{Store: f.store}
				clk := newClock(t0.Add(15 * time.Second))
				l := newLimiter(t, Config{Now: clk.Now}, store)
				bucket := "user:" + t.Name()
				reset := t0.Add(time.Minute)
				for i := range tc.limit {
					d := mustAllow(t, l, bucket, tc.limit)
					want := Decision{Allowed: true, Limit: tc.limit, Remaining: tc.limit - i - 1, Reset: reset}
					if d != want {
						t.Fatalf("request %d: got %+v, want %+v", i+1, d, want)
					}
					clk.Add(100 * time.Millisecond)
				}
				for range 3 {
					d := mustAllow(t, l, bucket, tc.limit)
					want := Decision{Limit: tc.limit, Reset: reset, RetryAfter: reset.Sub(clk.Now())}
					if d != want {
						t.Fatalf("over the limit: got %+v, want %+v", d, want)
					}
					if d.RetryAfter <= 0 || d.RetryAfter > time.Minute {
						t.Fatalf("RetryAfter %v out of range", d.RetryAfter)
					}
				}
				// One round trip per lease, and none once the window is known to be full.
				if got, want := store.calls.Load(), int64((tc.limit+tc.lease-1)/tc.lease); got != want {
					t.Errorf("%d store round trips, want %d", got, want)
				}
			})
		}
	})
}

// TestSharedStoreConcurrent simulates several processes: independent Limiters on one
// store, hammered from many goroutines. Each goroutine stops at its first denial; a
// limiter denies only when its lease is spent and the store is full, so by then every
// granted token has been spent and exactly limit requests were allowed.
func TestSharedStoreConcurrent(t *testing.T) {
	forEachStore(t, func(t *testing.T, f fixture) {
		for _, limit := range []int{7, 30, 100, 1000} {
			t.Run(fmt.Sprint(limit), func(t *testing.T) {
				const processes, goroutines = 3, 8
				clk := newClock(t0.Add(30 * time.Second))
				bucket := "ip:" + t.Name()
				var allowed, deniedAfter atomic.Int64
				var wg sync.WaitGroup
				errs := make(chan error, processes*goroutines)
				for range processes {
					l := newLimiter(t, Config{Now: clk.Now}, f.store)
					for range goroutines {
						wg.Go(func() {
							for {
								d, err := l.Allow(context.Background(), bucket, limit)
								if err != nil {
									errs <- err
									return
								}
								if !d.Allowed {
									break
								}
								allowed.Add(1)
							}
							// Once denied, a process stays denied for the window.
							for range 5 {
								if d, _ := l.Allow(context.Background(), bucket, limit); d.Allowed {
									deniedAfter.Add(1)
								}
							}
						})
					}
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatal(err)
				}
				if got := allowed.Load(); got != int64(limit) {
					t.Errorf("%d processes × %d goroutines allowed %d requests, want exactly %d", processes, goroutines, got, limit)
				}
				if n := deniedAfter.Load(); n != 0 {
					t.Errorf("%d requests allowed after a denial", n)
				}
			})
		}
	})
}

// TestSharedStoreUnderServeBound checks the documented bound when leases are stranded:
// processes that each take one request and then go quiet hold lease−1 tokens the others
// cannot use.
func TestSharedStoreUnderServeBound(t *testing.T) {
	forEachStore(t, func(t *testing.T, f fixture) {
		const limit, processes = 100, 3
		clk := newClock(t0)
		bucket := "user:" + t.Name()
		var ls []*Limiter
		for range processes {
			ls = append(ls, newLimiter(t, Config{Now: clk.Now}, f.store))
		}
		allowed := 0
		for _, l := range ls[1:] { // each quiet process leases 10 and spends 1
			if mustAllow(t, l, bucket, limit).Allowed {
				allowed++
			}
		}
		for mustAllow(t, ls[0], bucket, limit).Allowed {
			allowed++
		}
		lease := lease(limit, DefaultMaxLease)
		if bound := limit - (processes-1)*(lease-1); allowed != bound {
			t.Errorf("allowed %d before the first denial, want the bound %d", allowed, bound)
		}
		// The stranded tokens are still spendable where they are: nothing is over-served.
		for _, l := range ls[1:] {
			for mustAllow(t, l, bucket, limit).Allowed {
				allowed++
			}
		}
		if allowed != limit {
			t.Errorf("allowed %d in total, want %d", allowed, limit)
		}
	})
}

func TestNextWindowResets(t *testing.T) {
	forEachStore(t, func(t *testing.T, f fixture) {
		const limit = 20
		clk := newClock(t0.Add(59 * time.Second))
		l := newLimiter(t, Config{Now: clk.Now}, f.store)
		for range limit {
			mustAllow(t, l, "user:a", limit)
		}
		mustAllow(t, l, "user:b", limit)
		if d := mustAllow(t, l, "user:a", limit); d.Allowed || d.RetryAfter != time.Second {
			t.Fatalf("at the end of the window: %+v", d)
		}
		clk.Add(time.Second) // exactly the next window's start
		d := mustAllow(t, l, "user:a", limit)
		want := Decision{Allowed: true, Limit: limit, Remaining: limit - 1, Reset: t0.Add(2 * time.Minute)}
		if d != want {
			t.Fatalf("next window: got %+v, want %+v", d, want)
		}
		// The old window's local state is gone: only user:a is tracked now.
		l.mu.Lock()
		n := len(l.buckets)
		l.mu.Unlock()
		if n != 1 {
			t.Errorf("%d buckets tracked after the window moved, want 1", n)
		}
		for i := 1; i < limit; i++ {
			mustAllow(t, l, "user:a", limit)
		}
		if mustAllow(t, l, "user:a", limit).Allowed {
			t.Error("allowed more than limit in the second window")
		}
	})
}

func TestUnlimited(t *testing.T) {
	forEachStore(t, func(t *testing.T, f fixture) {
		store := &counting{Store: f.store}
		l := newLimiter(t, Config{}, store)
		for _, limit := range []int{0, -1, math.MinInt} {
			for range 50 {
				if d := mustAllow(t, l, "user:x", limit); d != (Decision{Allowed: true}) {
					t.Fatalf("limit %d: %+v", limit, d)
				}
			}
		}
		if n := store.calls.Load(); n != 0 {
			t.Errorf("unlimited requests made %d store calls", n)
		}
	})
}

func TestBucketsAreIndependent(t *testing.T) {
	forEachStore(t, func(t *testing.T, f fixture) {
		clk := newClock(t0)
		l := newLimiter(t, Config{Now: clk.Now}, f.store)
		for range 30 {
			mustAllow(t, l, "ip:203.0.113.9", 30)
		}
		if mustAllow(t, l, "ip:203.0.113.9", 30).Allowed {
			t.Fatal("ip:203.0.113.9 allowed past its limit")
		}
		for i, bucket := range []string{"ip:203.0.113.10", "user:usr_1", "ip:203.0.113.9 "} {
			d := mustAllow(t, l, bucket, 30)
			if !d.Allowed || d.Remaining != 29 {
				t.Errorf("bucket %d (%q) after another was exhausted: %+v", i, bucket, d)
			}
		}
	})
}

func TestLimitChangeMidWindow(t *testing.T) {
	forEachStore(t, func(t *testing.T, f fixture) {
		clk := newClock(t0)
		l := newLimiter(t, Config{Now: clk.Now}, f.store)
		for range 10 {
			mustAllow(t, l, "user:c", 10)
		}
		if mustAllow(t, l, "user:c", 10).Allowed {
			t.Fatal("allowed past 10")
		}
		raised := 0
		for mustAllow(t, l, "user:c", 20).Allowed {
			raised++
		}
		if raised != 10 {
			t.Errorf("raising the limit to 20 allowed %d more, want 10", raised)
		}
		if d := mustAllow(t, l, "user:c", 5); d.Allowed || d.Limit != 5 {
			t.Errorf("lowering the limit below the count: %+v", d)
		}
	})
}

// TestFailOpen takes the real store down (closes the pool, kills redis-server).
func TestFailOpen(t *testing.T) {
	forEachStore(t, func(t *testing.T, f fixture) {
		store := &counting{Store: f.store}
		clk := newClock(t0)
		l := newLimiter(t, Config{Now: clk.Now, StoreTimeout: 5 * time.Second}, store)
		const limit = 100 // lease 10
		if d := mustAllow(t, l, "user:d", limit); !d.Allowed {
			t.Fatal(d)
		}
		mustAllow(t, l, "user:done", 1) // exhausts user:done
		f.kill()

		// The lease already fetched is still spent without the store.
		for range 9 {
			if d := mustAllow(t, l, "user:d", limit); !d.Allowed {
				t.Fatal(d)
			}
		}
		// A window known to be full stays denied: its count cannot have gone down.
		if d := mustAllow(t, l, "user:done", 1); d.Allowed {
			t.Errorf("exhausted bucket allowed while the store is down: %+v", d)
		}
		calls := store.calls.Load()
		d, err := l.Allow(context.Background(), "user:d", limit)
		if !errors.Is(err, ErrStoreUnavailable) || !d.Allowed || d.Limit != limit || !d.Reset.Equal(t0.Add(time.Minute)) {
			t.Fatalf("store down: %+v, %v", d, err)
		}
		if store.calls.Load() != calls+1 {
			t.Fatal("the store was not asked")
		}
		// Within the backoff the store is not asked again, for any bucket.
		for _, bucket := range []string{"user:d", "user:e", "ip:198.51.100.1"} {
			d, err := l.Allow(context.Background(), bucket, limit)
			if !errors.Is(err, ErrStoreUnavailable) || !d.Allowed {
				t.Fatalf("%s during backoff: %+v, %v", bucket, d, err)
			}
		}
		if store.calls.Load() != calls+1 {
			t.Errorf("%d store calls during the backoff, want 0", store.calls.Load()-calls-1)
		}
		clk.Add(storeBackoff)
		if _, err := l.Allow(context.Background(), "user:d", limit); !errors.Is(err, ErrStoreUnavailable) {
			t.Fatalf("after the backoff: %v", err)
		}
		if store.calls.Load() != calls+2 {
			t.Error("the store was not asked again after the backoff")
		}
	})
}

// TestStoreTimeout checks that a store that does not answer is treated as down, and that
// the caller's cancellation is not (the lease is fetched for every waiting request).
func TestStoreTimeout(t *testing.T) {
	srv := startRedis(t)
	// CLIENT PAUSE makes redis hold every command: a store that hangs rather than fails.
	if err := srv.client.Do(context.Background(), "CLIENT", "PAUSE", "2000", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	l := newLimiter(t, Config{StoreTimeout: 200 * time.Millisecond}, NewRedisStore(srv.client, ""))
	start := time.Now()
	d, err := l.Allow(context.Background(), "user:slow", 10)
	if !errors.Is(err, ErrStoreUnavailable) || !d.Allowed {
		t.Fatalf("hung store: %+v, %v", d, err)
	}
	if el := time.Since(start); el > 1500*time.Millisecond {
		t.Errorf("Allow took %v with a 200ms StoreTimeout", el)
	}

	srv2 := startRedis(t)
	l2 := newLimiter(t, Config{}, NewRedisStore(srv2.client, ""))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if d, err := l2.Allow(ctx, "user:gone", 10); err != nil || !d.Allowed || d.Remaining != 9 {
		t.Errorf("cancelled caller: %+v, %v", d, err)
	}
}

// TestCoalescing checks that concurrent requests for one bucket in one process share a
// lease instead of each going to the store.
func TestCoalescing(t *testing.T) {
	forEachStore(t, func(t *testing.T, f fixture) {
		store := &counting{Store: f.store}
		clk := newClock(t0)
		l := newLimiter(t, Config{Now: clk.Now}, store)
		const limit, n = 10_000, 2_000 // lease 1000
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() { mustAllow(t, l, "user:hot", limit) })
		}
		wg.Wait()
		if calls := store.calls.Load(); calls != 2 {
			t.Errorf("%d concurrent requests made %d store calls, want 2 (leases of 1000)", n, calls)
		}
		if d := mustAllow(t, l, "user:hot", limit); d.Remaining != limit-n-1 {
			t.Errorf("Remaining %d, want %d", d.Remaining, limit-n-1)
		}
	})
}

// TestMaxBuckets checks that buckets beyond the cap are served exactly, one store round
// trip per request, without disturbing the tracked ones.
func TestMaxBuckets(t *testing.T) {
	forEachStore(t, func(t *testing.T, f fixture) {
		store := &counting{Store: f.store}
		clk := newClock(t0)
		l := newLimiter(t, Config{Now: clk.Now, MaxBuckets: 2}, store)
		mustAllow(t, l, "ip:a", 100)
		mustAllow(t, l, "ip:b", 100)
		calls := store.calls.Load()
		for i := range 30 {
			d := mustAllow(t, l, "ip:c", 30)
			if !d.Allowed || d.Remaining != 30-i-1 {
				t.Fatalf("untracked request %d: %+v", i+1, d)
			}
		}
		if d := mustAllow(t, l, "ip:c", 30); d.Allowed || d.RetryAfter != time.Minute {
			t.Fatalf("untracked bucket past its limit: %+v", d)
		}
		if got := store.calls.Load() - calls; got != 31 {
			t.Errorf("untracked bucket: %d store calls for 31 requests", got)
		}
		if d := mustAllow(t, l, "ip:a", 100); d.Remaining != 98 {
			t.Errorf("tracked bucket lost its lease: %+v", d)
		}
		l.mu.Lock()
		n := len(l.buckets)
		l.mu.Unlock()
		if n != 2 {
			t.Errorf("%d buckets tracked, cap 2", n)
		}
	})
}

// TestStoreTake checks the Store contract directly: partial grants at the end of a
// window, no grant past the limit (also when the limit is lowered), windows apart.
func TestStoreTake(t *testing.T) {
	forEachStore(t, func(t *testing.T, f fixture) {
		ctx := context.Background()
		end := t0.Add(time.Minute)
		for i, step := range []struct {
			want, limit      int
			granted, usedNow int
		}{
			{7, 10, 7, 7},
			{7, 10, 3, 10},
			{7, 10, 0, 10},
			{1, 5, 0, 10}, // lowered limit: nothing granted, the count stands
			{5, 12, 2, 12},
			{1, 1, 0, 12},
		} {
			g, u, err := f.store.Take(ctx, "b", t0, end, step.want, step.limit)
			if err != nil || g != step.granted || u != step.usedNow {
				t.Fatalf("step %d: Take(want %d, limit %d) = %d, %d, %v; want %d, %d", i, step.want, step.limit, g, u, err, step.granted, step.usedNow)
			}
		}
		if g, u, err := f.store.Take(ctx, "b", end, end.Add(time.Minute), 4, 10); g != 4 || u != 4 || err != nil {
			t.Errorf("next window: %d, %d, %v", g, u, err)
		}
		for _, bad := range [][2]int{{0, 10}, {1, 0}, {-1, 10}, {1, math.MaxInt32 + 1}} {
			if _, _, err := f.store.Take(ctx, "b", t0, end, bad[0], bad[1]); err == nil {
				t.Errorf("Take(want %d, limit %d) did not fail", bad[0], bad[1])
			}
		}
	})
}

// TestStoreTakeConcurrent races many Takes on one fresh window, including the creation of
// its row/key: the grants must add up to exactly the limit and each reply must be
// consistent.
func TestStoreTakeConcurrent(t *testing.T) {
	forEachStore(t, func(t *testing.T, f fixture) {
		const limit, workers = 500, 32
		for round := range 5 {
			start := t0.Add(time.Duration(round) * time.Minute)
			var total atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Go(func() {
					want := w%7 + 1
					for {
						g, u, err := f.store.Take(context.Background(), "race", start, start.Add(time.Minute), want, limit)
						if err != nil || g < 0 || g > want || u > limit || u < g {
							errs <- fmt.Errorf("Take = %d, %d, %v", g, u, err)
							return
						}
						total.Add(int64(g))
						if g == 0 {
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if got := total.Load(); got != limit {
				t.Fatalf("round %d: granted %d in total, want %d", round, got, limit)
			}
		}
	})
}

func TestPostgresCleanup(t *testing.T) {
	t.Parallel()
	f := storeKinds[0].open(t)
	s := f.store.(*PostgresStore)
	ctx := context.Background()
	for i := range 4 {
		start := t0.Add(time.Duration(i) * time.Minute)
		for _, b := range []string{"user:a", "ip:b"} {
			if _, _, err := s.Take(ctx, b, start, start.Add(time.Minute), 1, 10); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, err := s.Cleanup(ctx, t0.Add(2*time.Minute))
	if err != nil || n != 4 {
		t.Fatalf("Cleanup = %d, %v; want 4 rows", n, err)
	}
	if got := rowCount(t, s.pool); got != 4 {
		t.Errorf("%d rows left, want 4", got)
	}
	var oldest time.Time
	if err := s.pool.QueryRow(ctx, `SELECT min(window_start) FROM rate_limit_windows`).Scan(&oldest); err != nil {
		t.Fatal(err)
	}
	if !oldest.Equal(t0.Add(2 * time.Minute)) {
		t.Errorf("oldest window left %v", oldest)
	}
	// The surviving windows keep their counts.
	if g, u, err := s.Take(ctx, "user:a", t0.Add(3*time.Minute), t0.Add(4*time.Minute), 1, 10); g != 1 || u != 2 || err != nil {
		t.Errorf("Take after Cleanup = %d, %d, %v", g, u, err)
	}
	if n, err := s.Cleanup(ctx, t0); n != 0 || err != nil {
		t.Errorf("second Cleanup = %d, %v", n, err)
	}
}

func TestRedisKeyExpiry(t *testing.T) {
	t.Parallel()
	srv := startRedis(t)
	s := NewRedisStore(srv.client, "test:")
	ctx := context.Background()
	const window = 5 * time.Second
	if _, _, err := s.Take(ctx, "user:a", t0, t0.Add(window), 1, 10); err != nil {
		t.Fatal(err)
	}
	key := s.key("user:a", t0)
	if key != "test:1773500940000:user:a" {
		t.Errorf("key %q", key)
	}
	ttl, err := srv.client.PTTL(ctx, key).Result()
	if err != nil || ttl <= window || ttl > window+redisSlack {
		t.Errorf("PTTL %v, %v; want in (%v, %v]", ttl, err, window, window+redisSlack)
	}
	if n, _ := srv.client.Exists(ctx, s.key("user:a", t0.Add(window))).Result(); n != 0 {
		t.Error("another window's key exists")
	}
}

func TestConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Window: -time.Second},
		{Window: 1500 * time.Microsecond},
		{Window: time.Microsecond},
		{MaxLease: -1},
		{MaxBuckets: -5},
		{StoreTimeout: -time.Second},
	} {
		if _, err := New(cfg, &PostgresStore{}); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Error("New accepted a nil store")
	}
	l, err := New(Config{}, &PostgresStore{})
	if err != nil {
		t.Fatal(err)
	}
	c := l.cfg
	if c.Window != time.Minute || c.MaxLease != 1000 || c.MaxBuckets != 100_000 || c.StoreTimeout != time.Second || c.Now == nil {
		t.Errorf("defaults: %+v", c)
	}
}

func TestLease(t *testing.T) {
	for _, tc := range []struct{ limit, max, want int }{
		{1, 1000, 1}, {9, 1000, 1}, {10, 1000, 1}, {19, 1000, 1}, {20, 1000, 2},
		{30, 1000, 3}, {100, 1000, 10}, {10_000, 1000, 1000}, {1 << 30, 1000, 1000},
		{100, 1, 1}, {100, 4, 4},
	} {
		if got := lease(tc.limit, tc.max); got != tc.want {
			t.Errorf("lease(%d, %d) = %d, want %d", tc.limit, tc.max, got, tc.want)
		}
	}
}

func TestWindowStartEpochAligned(t *testing.T) {
	for _, tc := range []struct {
		t      time.Time
		window time.Duration
		want   time.Time
	}{
		{t0.Add(59 * time.Second), time.Minute, t0},
		{t0, time.Minute, t0},
		{t0.Add(-time.Nanosecond), time.Minute, t0.Add(-time.Minute)},
		// 7s does not divide a day: aligned to the epoch, not to year 1 as Truncate would.
		{time.Unix(700, 0), 7 * time.Second, time.Unix(700, 0)},
		{time.Unix(706, 999), 7 * time.Second, time.Unix(700, 0)},
		{time.Unix(-1, 0), 7 * time.Second, time.Unix(-7, 0)},
		{time.Date(2026, 3, 14, 16, 9, 0, 0, time.FixedZone("CET", 3600)), time.Hour, t0.Add(-9 * time.Minute)},
	} {
		got := windowStart(tc.t, tc.window)
		if !got.Equal(tc.want) || got.Location() != time.UTC {
			t.Errorf("windowStart(%v, %v) = %v, want %v UTC", tc.t, tc.window, got, tc.want)
		}
	}
	// Decisions carry the aligned window end.
	srv := storeKinds[1].open(t)
	clk := newClock(time.Unix(703, 0))
	l := newLimiter(t, Config{Window: 7 * time.Second, Now: clk.Now}, srv.store)
	if d := mustAllow(t, l, "x", 1); !d.Reset.Equal(time.Unix(707, 0)) {
		t.Errorf("Reset %v", d.Reset)
	}
	if d := mustAllow(t, l, "x", 1); d.Allowed || d.RetryAfter != 4*time.Second {
		t.Errorf("denied: %+v", d)
	}
}
