// Package ratelimit is a fixed-window rate limiter whose counters live in a store shared
// by every `parley serve` process (PostgreSQL by default, Redis when configured), so that
// N processes together never let a bucket exceed its limit: 100 requests a minute per
// authenticated user, 30 a minute per client IP on public routes. The HTTP middleware
// chooses the bucket ("user:usr_…", "ip:203.0.113.9") and the limit; this package decides.
//
// # Windows
//
// Windows are fixed and aligned to the Unix epoch (window start = now − now mod Window),
// so every process computes the same window for the same instant without talking to the
// others (keep their clocks in sync with NTP; skew shifts where one process's window ends
// relative to another's). As with any fixed window, a client can make up to 2×limit
// requests in a short burst that straddles a boundary; that is the price of one counter
// per window.
//
// # Leases
//
// Asking the shared store on every request would put a database round trip on the hot
// path of every API call. Instead each process leases tokens in batches: when a bucket's
// local lease is empty it asks the store for clamp(limit/10, 1, MaxLease) tokens (the
// store grants fewer when the window has fewer left), then spends them locally until they
// run out. The store counts tokens granted, not requests served, and never grants past
// the limit, so the sum served by all processes in a window is at most the limit, with no
// coordination beyond the store's atomic Take. With the default limits that is one round
// trip per 10 requests for a user bucket (lease 10) and one per 3 for an IP bucket
// (lease 3); at high limits one per 1,000 (MaxLease).
//
// Concurrent requests for the same bucket inside one process do not each go to the store:
// the bucket's mutex is held across the store call, so one request fetches the lease and
// the others wait for it and then spend it locally.
//
// # Accuracy
//
// While the store answers, the limiter never over-serves: at most limit requests per
// bucket per window across all processes. It can under-serve, because tokens leased to one
// process are invisible to the others. When a process denies a request, the store has
// granted all limit tokens, this process has spent all of its own, and each of the P−1
// other processes holds at most lease−1 unspent ones (the request that fetches a lease
// spends its first token). So before any denial at least limit − (P−1)·(lease−1)
// requests were allowed in the window: with 3 processes, 82 of 100 for a user and 26 of
// 30 for an IP. The held tokens are not lost; the next requests reaching those processes
// spend them. Lost are only tokens still unspent when the window ends, tokens a process
// drops when a bucket's limit changes mid-window, and grants whose reply the process
// never got (a store call that timed out after committing).
//
// Decision.Remaining is this process's estimate: the tokens the store had left after
// this process's last lease plus this process's unspent lease. Other processes' spending
// since then is not visible, so it can overstate; it never affects who is allowed.
//
// # Failing open
//
// When the store errors or does not answer within StoreTimeout, Allow allows the request
// and returns the error (wrapping ErrStoreUnavailable) so the middleware can log it. A
// rate limiter protects the API; a down counter store should not take the API down with
// it. The cost is that during an outage requests are not counted, so nothing stops a
// client beyond what it had already used. After a store failure the limiter does not ask
// the store again for a second (storeBackoff), so an outage costs at most about one
// StoreTimeout of latency per second instead of one per request. Tokens already leased,
// and windows already known to be exhausted, keep being enforced during an outage.
//
// # Memory
//
// Local state exists only for the current window: when the window advances the whole
// table is dropped (leases are per window, so nothing in it is worth keeping). At most
// MaxBuckets buckets are tracked per window; requests for further buckets are served
// straight from the store one token at a time, so a flood of distinct IPs costs store
// round trips but neither unbounded memory nor other buckets' leases.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Config's zero values.
const (
	DefaultWindow       = time.Minute
	DefaultMaxLease     = 1000
	DefaultMaxBuckets   = 100_000
	DefaultStoreTimeout = time.Second
)

// storeBackoff is how long the limiter fails open without asking the store after a store
// failure. Short, so an outage ends quickly; long enough that a dead store costs one
// timeout per second, not one per request.
const storeBackoff = time.Second

// ErrStoreUnavailable is wrapped by every error Allow returns: the store failed (or failed
// less than a second ago) and the request was allowed without being counted.
var ErrStoreUnavailable = errors.New("ratelimit: store unavailable, failing open")

// Store holds the shared per-window counters. Implementations must be safe for concurrent
// use by many processes.
type Store interface {
	// Take atomically grants up to want tokens of bucket's window [windowStart, windowEnd)
	// without letting the window's total grants exceed limit, and returns how many it
	// granted and the window's total after the grant (which can exceed limit only if the
	// limit was lowered during the window). want and limit are at least 1. windowEnd lets
	// a store expire the counter; the counter must survive at least until windowEnd.
	Take(ctx context.Context, bucket string, windowStart, windowEnd time.Time, want, limit int) (granted, used int, err error)
}

// Config configures a Limiter. The zero value is usable: every zero field gets its default.
type Config struct {
	// Window is the length of a fixed window, aligned to the Unix epoch (default 1 minute).
	// It must be a whole number of milliseconds: windows are stored as PostgreSQL
	// timestamps and Redis expiries. Every process sharing a store must use the same
	// Window, or they count in different windows.
	Window time.Duration
	// MaxLease caps the tokens a process leases from the store at once (default 1000).
	// The lease is clamp(limit/10, 1, MaxLease); 1 disables leasing (one store round trip
	// per request, exact Remaining).
	MaxLease int
	// MaxBuckets caps the buckets tracked locally per window (default 100,000, about 10
	// MB). Requests for untracked buckets are served straight from the store.
	MaxBuckets int
	// StoreTimeout bounds each store call (default 1s); a slower store is treated as down.
	StoreTimeout time.Duration
	// Now is the clock (default time.Now); tests inject their own.
	Now func() time.Time
}

func (c *Config) withDefaults() Config {
	out := *c
	if out.Window == 0 {
		out.Window = DefaultWindow
	}
	if out.MaxLease == 0 {
		out.MaxLease = DefaultMaxLease
	}
	if out.MaxBuckets == 0 {
		out.MaxBuckets = DefaultMaxBuckets
	}
	if out.StoreTimeout == 0 {
		out.StoreTimeout = DefaultStoreTimeout
	}
	if out.Now == nil {
		out.Now = time.Now
	}
	return out
}

// validate checks a Config after defaults were applied.
func (c Config) validate() error {
	switch {
	case c.Window < time.Millisecond || c.Window%time.Millisecond != 0:
		return fmt.Errorf("ratelimit: Window must be a positive whole number of milliseconds, got %v", c.Window)
	case c.MaxLease < 1:
		return fmt.Errorf("ratelimit: MaxLease must be at least 1, got %d", c.MaxLease)
	case c.MaxBuckets < 1:
		return fmt.Errorf("ratelimit: MaxBuckets must be at least 1, got %d", c.MaxBuckets)
	case c.StoreTimeout < 0:
		return fmt.Errorf("ratelimit: StoreTimeout must not be negative, got %v", c.StoreTimeout)
	}
	return nil
}

// Decision is the outcome of Allow: whether to serve the request, and what to put in the
// X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset and Retry-After headers.
type Decision struct {
	Allowed bool
	// Limit is the limit applied; 0 means unlimited (the other fields are then zero and
	// the middleware should send no rate-limit headers).
	Limit int
	// Remaining is an estimate of the requests left in this window (see the package
	// comment); 0 when denied.
	Remaining int
	// Reset is when the current window ends and the bucket's count starts over.
	Reset time.Time
	// RetryAfter is how long a denied client should wait (Reset − now, so it is never
	// zero when denied; round it up to whole seconds for the header). Zero when allowed.
	RetryAfter time.Duration
}

// Limiter decides requests against a shared Store. It is safe for concurrent use; create
// one per process and share it.
type Limiter struct {
	cfg   Config
	store Store

	mu      sync.Mutex
	window  time.Time               // start of the window buckets belongs to; never moves back
	buckets map[string]*bucketState // local state for window only

	// downUntil (Unix nanoseconds on cfg.Now's clock) and downErr record the last store
	// failure: until then Allow fails open without asking the store.
	downUntil atomic.Int64
	downErr   atomic.Pointer[error]
}

// bucketState is one bucket's local state for the current window. mu is held across store
// calls, which is what coalesces concurrent requests into one lease.
type bucketState struct {
	mu        sync.Mutex
	limit     int  // limit the state below was built for
	local     int  // leased tokens not yet spent
	used      int  // the store's total for the window after our last Take
	exhausted bool // the store reported used >= limit: no more grants this window
}

// New returns a Limiter using store. It starts no goroutines and needs no Close.
func New(cfg Config, store Store) (*Limiter, error) {
	if store == nil {
		return nil, errors.New("ratelimit: nil Store")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Limiter{cfg: cfg, store: store, buckets: make(map[string]*bucketState)}, nil
}

// Allow counts one request against bucket, allowing at most limit per window across all
// processes sharing the store. limit <= 0 means unlimited: the request is allowed without
// touching the store. Limits above 2^31−1 (the store's counter) are treated as 2^31−1.
//
// A non-nil error always comes with Allowed = true: the store failed and the request was
// let through uncounted (see the package comment). The error wraps ErrStoreUnavailable;
// log it and serve the request.
func (l *Limiter) Allow(ctx context.Context, bucket string, limit int) (Decision, error) {
	if limit <= 0 {
		return Decision{Allowed: true}, nil
	}
	limit = min(limit, math.MaxInt32)
	now := l.cfg.Now()
	start := windowStart(now, l.cfg.Window)

	l.mu.Lock()
	if start.After(l.window) {
		// A new window: every lease and exhaustion mark belongs to the old one. Dropping
		// the map (rather than clearing it) also returns the memory of a past spike.
		l.window = start
		l.buckets = make(map[string]*bucketState)
	} else {
		// A request that read the clock just before another goroutine moved to the next
		// window is counted in the next window: windows only move forward, so a bucket's
		// state always belongs to exactly one window.
		start = l.window
	}
	b := l.buckets[bucket]
	if b == nil && len(l.buckets) < l.cfg.MaxBuckets {
		b = &bucketState{}
		l.buckets[bucket] = b
	}
	l.mu.Unlock()

	if now.Before(start) {
		now = start
	}
	end := start.Add(l.cfg.Window)
	if b == nil {
		return l.untracked(ctx, bucket, limit, now, start, end)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit != limit {
		// The limit for this bucket changed (a config reload, or two routes disagreeing).
		// Drop the local lease rather than reason about tokens granted under another
		// limit: that can only under-serve.
		b.limit, b.local, b.used, b.exhausted = limit, 0, 0, false
	}
	if b.local > 0 {
		b.local--
		return allowed(limit, b.remaining(), end), nil
	}
	if b.exhausted {
		return denied(limit, now, end), nil
	}
	if err := l.down(now); err != nil {
		return allowed(limit, b.remaining(), end), err
	}
	granted, used, err := l.take(ctx, bucket, start, end, lease(limit, l.cfg.MaxLease), limit, now)
	if err != nil {
		return allowed(limit, b.remaining(), end), err
	}
	b.used = used
	// The window's count never goes down, so once it reaches the limit no process will be
	// granted anything more this window: remember that and spare the store the question.
	b.exhausted = used >= limit
	if granted == 0 {
		return denied(limit, now, end), nil
	}
	b.local = granted - 1
	return allowed(limit, b.remaining(), end), nil
}

// untracked serves a bucket the local table has no room for: one token straight from the
// store, no lease (nobody would remember it), no exhaustion mark.
func (l *Limiter) untracked(ctx context.Context, bucket string, limit int, now, start, end time.Time) (Decision, error) {
	if err := l.down(now); err != nil {
		return allowed(limit, limit, end), err
	}
	granted, used, err := l.take(ctx, bucket, start, end, 1, limit, now)
	if err != nil {
		return allowed(limit, limit, end), err
	}
	if granted == 0 {
		return denied(limit, now, end), nil
	}
	return allowed(limit, max(limit-used, 0), end), nil
}

// take calls the store with a timeout. The call is detached from the caller's
// cancellation: the lease it fetches serves every request waiting on the bucket, and a
// client hanging up must not look like a store failure.
func (l *Limiter) take(ctx context.Context, bucket string, start, end time.Time, want, limit int, now time.Time) (granted, used int, err error) {
	ctx = context.WithoutCancel(ctx)
	if l.cfg.StoreTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.cfg.StoreTimeout)
		defer cancel()
	}
	granted, used, err = l.store.Take(ctx, bucket, start, end, want, limit)
	if err == nil && (granted < 0 || granted > want) {
		err = fmt.Errorf("store granted %d tokens, asked for %d", granted, want)
	}
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
		l.downErr.Store(&err)
		l.downUntil.Store(now.Add(storeBackoff).UnixNano())
		return 0, 0, err
	}
	return granted, used, nil
}

// down returns the last store error if it happened less than storeBackoff ago.
func (l *Limiter) down(now time.Time) error {
	if now.UnixNano() >= l.downUntil.Load() {
		return nil
	}
	if p := l.downErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (b *bucketState) remaining() int { return max(b.limit-b.used, 0) + b.local }

func allowed(limit, remaining int, reset time.Time) Decision {
	return Decision{Allowed: true, Limit: limit, Remaining: remaining, Reset: reset}
}

func denied(limit int, now, reset time.Time) Decision {
	return Decision{Limit: limit, Reset: reset, RetryAfter: reset.Sub(now)}
}

// lease is how many tokens to ask the store for at once: a tenth of the limit, so up to
// ten processes can each hold a lease before the window runs dry, within [1, maxLease].
func lease(limit, maxLease int) int {
	return min(max(limit/10, 1), maxLease)
}

// windowStart returns the start of the fixed window containing t, aligned to the Unix
// epoch (time.Truncate aligns to year 1, which differs for windows that do not divide a
// day). The result is in UTC so every process computes an identical value.
func windowStart(t time.Time, window time.Duration) time.Time {
	n := t.UnixNano()
	r := n % int64(window)
	if r < 0 {
		r += int64(window)
	}
	return time.Unix(0, n-r).UTC()
}
