package calls

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/parleyhq/parley/internal/dbtest"
	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/ids"
	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/voice/livekit"
)

// TestMain runs the tests against real PostgreSQL and a real livekit-server, then
// checks that no goroutine outlived its test: a Recorder that is closed must have
// stopped its flusher.
func TestMain(m *testing.M) {
	// The LiveKit SDK logs every WebRTC state change to stderr by default.
	livekit.SetSDKLogger(slog.New(slog.DiscardHandler))
	code := m.Run()
	if lk.srv != nil {
		lk.srv.Stop()
	}
	stopSIPStack()
	dbtest.Shutdown()
	// The LiveKit API client keeps idle keep-alive connections in the default transport.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(goleakOptions...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var goleakOptions []goleak.Option

// lk is the package's one livekit-server, started by the first test that needs it.
var lk struct {
	once sync.Once
	srv  *lkserver.Server
	err  error
}

// liveKit returns the shared server, skipping the test when livekit-server is not
// installed (failing instead when CI=true).
func liveKit(t testing.TB) *lkserver.Server {
	t.Helper()
	lk.once.Do(func() {
		if _, err := lkserver.FindBinary(); err != nil {
			lk.err = err
			return
		}
		dir, err := os.MkdirTemp("", "parley-calls-lk-")
		if err != nil {
			lk.err = err
			return
		}
		lk.srv, lk.err = lkserver.Start(context.Background(), lkserver.Config{WorkDir: dir})
	})
	if lk.err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("no livekit-server: %v", lk.err)
		}
		t.Fatal(lk.err)
	}
	return lk.srv
}

// newLiveKit returns an adapter on the shared server.
func newLiveKit(t testing.TB, mods ...func(*LiveKitConfig)) *LiveKit {
	t.Helper()
	srv := liveKit(t)
	cfg := LiveKitConfig{URL: srv.URL(), APIKey: lkserver.DevKey, APISecret: lkserver.DevSecret}
	for _, m := range mods {
		m(&cfg)
	}
	l, err := NewLiveKit(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

type env struct {
	pool *pgxpool.Pool
	svc  *Service
}

// newEnv builds a Service on a fresh database; mods adjust its Config.
func newEnv(t testing.TB, mods ...func(*Config)) *env {
	t.Helper()
	pool := dbtest.Pool(t)
	return envOn(t, pool, mods...)
}

func envOn(t testing.TB, pool *pgxpool.Pool, mods ...func(*Config)) *env {
	t.Helper()
	cfg := Config{Logger: slog.New(slog.DiscardHandler)}
	for _, m := range mods {
		m(&cfg)
	}
	svc, err := New(pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &env{pool: pool, svc: svc}
}

// tenant inserts a fresh tenant and returns its id.
func (e *env) tenant(t testing.TB) string {
	t.Helper()
	id := ids.New("ten")
	if _, err := e.pool.Exec(context.Background(), `INSERT INTO tenants (id, name) VALUES ($1, $2)`, id, "Tenant "+id); err != nil {
		t.Fatal(err)
	}
	return id
}

// agent inserts an agent (status active or inactive) for tenant and returns its id.
func (e *env) agent(t testing.TB, tenantID, name, status string) string {
	t.Helper()
	id := ids.New("agent")
	if _, err := e.pool.Exec(context.Background(), `INSERT INTO agents (id, tenant_id, name, status) VALUES ($1, $2, $3, $4)`,
		id, tenantID, name, status); err != nil {
		t.Fatal(err)
	}
	return id
}

// call creates a registered web call for a new active agent of tenant.
func (e *env) call(t testing.TB, tenantID string) Call {
	t.Helper()
	c, err := e.svc.CreateWeb(context.Background(), tenantID, e.agent(t, tenantID, "Ava", "active"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// status reads a call's status and reason straight from the table.
func (e *env) status(t testing.TB, id string) (status, reason string) {
	t.Helper()
	if err := e.pool.QueryRow(context.Background(), `SELECT call_status, disconnection_reason FROM calls WHERE id = $1`, id).
		Scan(&status, &reason); err != nil {
		t.Fatal(err)
	}
	return status, reason
}

func (e *env) count(t testing.TB, tenantID string) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM calls WHERE tenant_id = $1`, tenantID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// wantErr fails unless errors.Is(err, want).
func wantErr(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
}

// wantKind fails unless err is an *errs.Error of kind k; it returns it.
func wantKind(t testing.TB, err error, k errs.Kind) *errs.Error {
	t.Helper()
	e, ok := errs.As(err)
	if !ok || e.Kind != k {
		t.Fatalf("err = %v (%T), want kind %d", err, err, k)
	}
	return e
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
