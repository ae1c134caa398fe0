package ratelimit

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisPrefix prefixes RedisStore keys unless NewRedisStore is given another.
const DefaultRedisPrefix = "parley:ratelimit:"

// redisSlack keeps a window's key a little past the window's end: it covers clock skew
// between the processes (a process whose clock lags still counts in the old window for a
// moment) and between them and Redis.
const redisSlack = 10 * time.Second

// takeScript grants min(want, limit − count) tokens atomically (Redis runs a script with
// nothing interleaved) and returns {granted, count}. The expiry is relative, a full
// window plus slack from the grant, not absolute: the grant happens inside the window,
// so the key outlives it, and a relative expiry does not depend on the caller's clock
// agreeing with Redis's (tests run limiters on injected clocks). A full window's key is
// not touched, so denials cost no writes.
var takeScript = redis.NewScript(`
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local want, limit, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local grant = math.min(want, limit - count)
if grant <= 0 then
  return {0, count}
end
count = redis.call('INCRBY', KEYS[1], grant)
redis.call('PEXPIRE', KEYS[1], ttl)
return {grant, count}
`)

// RedisStore keeps the counters in Redis, one key per bucket and window, expiring shortly
// after the window ends (so it needs no Cleanup). Each key is used alone, so it works on
// Redis Cluster too.
type RedisStore struct {
	client redis.Scripter
	prefix string
}

// NewRedisStore returns a store on client (a *redis.Client, *redis.ClusterClient or any
// redis.UniversalClient). Keys are prefix + window start in Unix milliseconds + ":" +
// bucket; an empty prefix means DefaultRedisPrefix.
//
// Create the client with ContextTimeoutEnabled: true. Without it go-redis ignores context
// deadlines and a hung Redis holds each request for the client's ReadTimeout (3s by
// default) instead of the Limiter's StoreTimeout.
func NewRedisStore(client redis.Scripter, prefix string) *RedisStore {
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	return &RedisStore{client: client, prefix: prefix}
}

func (s *RedisStore) key(bucket string, windowStart time.Time) string {
	return s.prefix + strconv.FormatInt(windowStart.UnixMilli(), 10) + ":" + bucket
}

// Take implements Store.
func (s *RedisStore) Take(ctx context.Context, bucket string, windowStart, windowEnd time.Time, want, limit int) (granted, used int, err error) {
	if want < 1 || limit < 1 || want > math.MaxInt32 || limit > math.MaxInt32 {
		return 0, 0, fmt.Errorf("ratelimit: redis take: want %d and limit %d must be in [1, 2^31)", want, limit)
	}
	ttl := windowEnd.Sub(windowStart) + redisSlack
	res, err := takeScript.Run(ctx, s.client, []string{s.key(bucket, windowStart)}, want, limit, ttl.Milliseconds()).Int64Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("ratelimit: redis take: %w", err)
	}
	if len(res) != 2 {
		return 0, 0, fmt.Errorf("ratelimit: redis take: unexpected reply %v", res)
	}
	return int(res[0]), int(res[1]), nil
}
