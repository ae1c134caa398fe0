package accounts

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// How credentials are cached, and why it stays correct with many processes.
//
// Authenticating by API key is on the path of nearly every API request, and a JWT is only
// as good as its session (which logout or refresh-token theft revokes), so both lookups
// are cached in memory: a hit is a map read, no database round trip.
//
// Correctness rests on PostgreSQL LISTEN/NOTIFY on the channel "parley_auth":
//
//   - Whatever makes a cached entry wrong (revoking or deleting a key, revoking a session,
//     changing or removing a member) calls pg_notify in the same transaction, so the
//     notification goes out exactly when the change commits, to every process.
//   - Each Service holds one dedicated connection that LISTENs (opened by Start) and evicts
//     what a notification names. The process that made the change also evicts locally
//     right after commit, so it never serves the old state, not even for the
//     milliseconds a notification takes.
//   - A load that read the database before an eviction must not put its (now stale)
//     result in the cache afterwards. Each cache has an epoch that every eviction bumps;
//     a load remembers the epoch before its query and stores its result only if the
//     epoch is unchanged.
//   - Notifications are lost while the listener is disconnected, so the cache is only
//     used while it is connected (before Start, after Stop, and during a reconnect every
//     lookup goes to the database), and it is flushed whenever the listener connects or
//     disconnects.
//   - A TTL (Config.CacheTTL) bounds staleness in the one case left: a connection that
//     died silently, whose loss the listener has not noticed yet.
//
// Misses (unknown keys) are cached too, so repeating an invalid key costs one query per
// TTL rather than per request. That is safe: a new key's hash cannot have been looked up
// before, short of guessing 190 random bits.

// notifyChannel is the LISTEN/NOTIFY channel for cache invalidations. Payloads:
// "key:<hex sha256>", "session:<id>", "user:<id>" (every cached session and key of that
// user, after a membership change) and "flush".
const notifyChannel = "parley_auth"

type cached[V any] struct {
	v     V
	until time.Time
}

type cache[K comparable, V any] struct {
	ttl time.Duration
	max int

	mu    sync.RWMutex
	epoch uint64
	m     map[K]cached[V]
}

func newCache[K comparable, V any](ttl time.Duration, max int) *cache[K, V] {
	return &cache[K, V]{ttl: ttl, max: max, m: make(map[K]cached[V])}
}

func (c *cache[K, V]) get(k K, now time.Time) (V, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || now.After(e.until) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// begin returns the epoch to pass to put after loading from the database.
func (c *cache[K, V]) begin() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.epoch
}

// put stores v unless something was evicted since begin returned epoch. A miss (an
// unknown credential) is only stored while the cache is less than half full, so a flood
// of random keys can neither grow it without bound nor keep flushing the real entries.
func (c *cache[K, V]) put(k K, v V, miss bool, epoch uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch || (miss && len(c.m) >= c.max/2) {
		return
	}
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[k] = cached[V]{v: v, until: now.Add(c.ttl)}
}

func (c *cache[K, V]) evict(k K) {
	c.mu.Lock()
	delete(c.m, k)
	c.epoch++
	c.mu.Unlock()
}

func (c *cache[K, V]) evictFunc(drop func(V) bool) {
	c.mu.Lock()
	for k, e := range c.m {
		if drop(e.v) {
			delete(c.m, k)
		}
	}
	c.epoch++
	c.mu.Unlock()
}

func (c *cache[K, V]) flush() {
	c.mu.Lock()
	clear(c.m)
	c.epoch++
	c.mu.Unlock()
}

func (c *cache[K, V]) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// handleNotification evicts what payload names.
func (s *Service) handleNotification(payload string) {
	kind, arg, _ := strings.Cut(payload, ":")
	switch kind {
	case "key":
		b, err := hex.DecodeString(arg)
		if err != nil || len(b) != 32 {
			s.flushCaches()
			return
		}
		s.keys.evict([32]byte(b))
	case "session":
		s.sessions.evict(arg)
	case "user":
		s.evictUser(arg)
	default:
		s.flushCaches()
	}
}

func (s *Service) evictUser(userID string) {
	s.sessions.evictFunc(func(e sessionEntry) bool { return e.userID == userID })
	s.keys.evictFunc(func(e keyEntry) bool { return e.userID == userID })
}

func (s *Service) flushCaches() {
	s.keys.flush()
	s.sessions.flush()
}

// setListening turns the caches on or off. Either way they are flushed: on connect,
// because notifications may have been missed before it; on disconnect, because they
// will be missed from now on.
func (s *Service) setListening(on bool) {
	if on {
		s.flushCaches()
		s.listening.Store(true)
	} else {
		s.listening.Store(false)
		s.flushCaches()
	}
}

// connectListener opens the dedicated LISTEN connection. It is not taken from the pool:
// it lives as long as the Service and must not count against the pool's connections.
func (s *Service) connectListener(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("accounts: listener connect: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("accounts: listen: %w", err)
	}
	return conn, nil
}

// runListener consumes notifications until ctx ends, reconnecting with backoff (100 ms
// doubling to 5 s) when the connection fails.
func (s *Service) runListener(ctx context.Context, conn *pgx.Conn) {
	defer s.wg.Done()
	backoff := 100 * time.Millisecond
	for {
		if conn != nil {
			s.setListening(true)
			err := s.consume(ctx, conn)
			s.setListening(false)
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn.Close(cctx)
			cancel()
			conn = nil
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("accounts: auth cache listener lost its connection; caching off until it reconnects", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		c, err := s.connectListener(ctx)
		if err != nil {
			backoff = min(backoff*2, 5*time.Second)
			if ctx.Err() == nil {
				s.log.Warn("accounts: auth cache listener reconnect failed", "err", err)
			}
			continue
		}
		backoff = 100 * time.Millisecond
		conn = c
	}
}

func (s *Service) consume(ctx context.Context, conn *pgx.Conn) error {
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		s.handleNotification(n.Payload)
	}
}
