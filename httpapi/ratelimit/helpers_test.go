package ratelimit

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/parleyhq/parley/internal/dbtest"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

// fixture is a real store for a test, plus a way to take it down (to test failing open).
type fixture struct {
	store Store
	kill  func()
}

type storeKind struct {
	name string
	open func(testing.TB) fixture
}

// storeKinds are the stores every limiter test runs against.
var storeKinds = []storeKind{
	{"postgres", func(tb testing.TB) fixture {
		pool := dbtest.Pool(tb)
		return fixture{store: NewPostgresStore(pool), kill: pool.Close}
	}},
	{"redis", func(tb testing.TB) fixture {
		srv := startRedis(tb)
		return fixture{store: NewRedisStore(srv.client, ""), kill: srv.stop}
	}},
}

// forEachStore runs fn as a parallel subtest per store kind.
func forEachStore(t *testing.T, fn func(t *testing.T, f fixture)) {
	t.Helper()
	for _, k := range storeKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			fn(t, k.open(t))
		})
	}
}

// redisServer is a throwaway redis-server on a free loopback port.
type redisServer struct {
	client *redis.Client
	stop   func()
}

// startRedis starts a real redis-server for the test (no persistence) and stops it when
// the test ends. Without the binary the test fails under CI and is skipped elsewhere.
func startRedis(tb testing.TB) *redisServer {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("redis-server not found (install it, e.g. apt-get install redis-server): %v", err)
		}
		tb.Skipf("redis-server not found: %v", err)
	}
	var lastErr error
	for range 5 { // the free port can be taken between finding it and redis binding it
		srv, err := tryStartRedis(tb, bin)
		if err == nil {
			return srv
		}
		lastErr = err
	}
	tb.Fatal(lastErr)
	return nil
}

func tryStartRedis(tb testing.TB, bin string) (*redisServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	var out bytes.Buffer
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", tb.TempDir())
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cmd.Process.Kill()
			<-exited
		})
	}
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port), MaxRetries: -1, ContextTimeoutEnabled: true})
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := client.Ping(context.Background()).Err()
		if err == nil {
			break
		}
		select {
		case <-exited:
			client.Close()
			return nil, fmt.Errorf("redis-server exited: %v\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			client.Close()
			stop()
			return nil, fmt.Errorf("redis-server did not answer: %v\n%s", err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Cleanup(func() {
		client.Close()
		stop()
	})
	return &redisServer{client: client, stop: stop}, nil
}

// counting wraps a real store and counts the round trips made to it. It changes nothing
// about what the store does.
type counting struct {
	Store
	calls atomic.Int64
}

func (c *counting) Take(ctx context.Context, bucket string, start, end time.Time, want, limit int) (int, int, error) {
	c.calls.Add(1)
	return c.Store.Take(ctx, bucket, start, end, want, limit)
}

// clock is an injected clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// t0 is a window start for the default one-minute window.
var t0 = time.Date(2026, 3, 14, 15, 9, 0, 0, time.UTC)

func newLimiter(tb testing.TB, cfg Config, s Store) *Limiter {
	tb.Helper()
	l, err := New(cfg, s)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

func mustAllow(tb testing.TB, l *Limiter, bucket string, limit int) Decision {
	tb.Helper()
	d, err := l.Allow(context.Background(), bucket, limit)
	if err != nil {
		tb.Fatalf("Allow(%q, %d): %v", bucket, limit, err)
	}
	return d
}

func rowCount(tb testing.TB, pool *pgxpool.Pool) int {
	tb.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM rate_limit_windows`).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}
