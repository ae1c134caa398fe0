package accounts

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/parleyhq/parley/internal/db"
	"github.com/parleyhq/parley/internal/dbtest"
	"github.com/parleyhq/parley/internal/errs"
)

// TestMain runs the tests against real PostgreSQL and then checks that no goroutine
// outlived its test: every Service a test starts is stopped in its cleanup, so a leak
// here means Stop does not stop something.
func TestMain(m *testing.M) {
	code := m.Run()
	dbtest.Shutdown()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var testSecret = []byte("0123456789abcdef0123456789abcdef-test")

// cheapPasswords keeps argon2 out of the way of tests that are not about it; the
// default parameters are exercised in TestPasswordHash.
var cheapPasswords = PasswordParams{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

func testConfig() Config {
	return Config{JWTSecret: testSecret, Password: cheapPasswords, UsageFlushInterval: time.Hour}
}

// newService starts a Service on pool and stops it when the test ends.
func newService(t *testing.T, pool *pgxpool.Pool, mods ...func(*Config)) *Service {
	t.Helper()
	cfg := testConfig()
	for _, m := range mods {
		m(&cfg)
	}
	s, err := New(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// openPool opens another pool on the database at url, as another process would.
func openPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	p, err := db.Open(context.Background(), db.Config{URL: url, MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// account is a registered user logged in to their own tenant.
type account struct {
	user  User
	pair  TokenPair
	p     Principal // from the access token
	email string
	pass  string
}

var accountSeq atomic.Int64

func nextSeq() int64 { return accountSeq.Add(1) }

func register(t *testing.T, s *Service, name string) account {
	t.Helper()
	ctx := context.Background()
	email := fmt.Sprintf("%s-%d@example.com", name, nextSeq())
	pass := "correct horse battery staple"
	u, err := s.Register(ctx, RegisterInput{Email: email, Password: pass, FullName: name, CompanyName: name + " Inc"})
	if err != nil {
		t.Fatal(err)
	}
	return login(t, s, email, pass, u)
}

func login(t *testing.T, s *Service, email, pass string, u User) account {
	t.Helper()
	ctx := context.Background()
	pair, lu, err := s.Login(ctx, email, pass)
	if err != nil {
		t.Fatal(err)
	}
	if u.ID == "" {
		u = lu
	}
	p, err := s.Authenticate(ctx, pair.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	return account{user: u, pair: pair, p: p, email: email, pass: pass}
}

func wantKind(t *testing.T, err error, kind errs.Kind) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want kind %d", kind)
	}
	if got := errs.KindOf(err); got != kind {
		t.Fatalf("got kind %d (%v), want %d", got, err, kind)
	}
}

func wantIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("got %v, want %v", err, target)
	}
}

// eventually polls cond every 5 ms until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}
