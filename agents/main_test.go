package agents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/dbtest"
	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/ids"
	"github.com/parleyhq/parley/internal/safehttp"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

// guard is a test SSRF guard: it refuses hosts named "blocked…", the cloud metadata
// address and "internal.example", and counts its calls.
type guard struct{ calls atomic.Int64 }

func (g *guard) CheckURL(_ context.Context, raw string) error {
	g.calls.Add(1)
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	h := u.Hostname()
	switch {
	case strings.HasPrefix(h, "blocked"), h == "internal.example":
		return fmt.Errorf("%w: url host %q resolves to a non-public address (10.0.0.7 is private)", safehttp.ErrBlocked, h)
	case h == "169.254.169.254":
		return fmt.Errorf("%w: url points to a non-public address (169.254.169.254 is link-local)", safehttp.ErrBlocked)
	case h == "dns-down.example.com":
		return errors.New("safehttp: resolve: i/o timeout")
	}
	return nil
}

// refuseAll is a guard that refuses everything.
type refuseAll struct{}

func (refuseAll) CheckURL(context.Context, string) error {
	return fmt.Errorf("%w: url points to a non-public address (127.0.0.1 is loopback)", safehttp.ErrBlocked)
}

type env struct {
	pool  *pgxpool.Pool
	svc   *Service
	box   *crypt.Box
	guard *guard
}

func newEnv(t testing.TB) *env {
	t.Helper()
	pool := dbtest.Pool(t)
	return envOn(t, pool, Config{}, nil)
}

// envOn builds a Service on pool; checker nil means the test guard.
func envOn(t testing.TB, pool *pgxpool.Pool, cfg Config, checker URLChecker) *env {
	t.Helper()
	box, err := crypt.New(crypt.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	g := &guard{}
	if checker == nil {
		checker = g
	}
	svc, err := New(pool, cfg, box, checker, &http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	return &env{pool: pool, svc: svc, box: box, guard: g}
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

// kb inserts a knowledge base for tenant.
func (e *env) kb(t testing.TB, tenantID string) string {
	t.Helper()
	id := ids.New("kb")
	if _, err := e.pool.Exec(context.Background(), `INSERT INTO knowledge_bases (id, tenant_id, name) VALUES ($1, $2, 'kb')`, id, tenantID); err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *env) create(t testing.TB, tenantID, body string) Agent {
	t.Helper()
	a, err := e.svc.Create(context.Background(), tenantID, []byte(body))
	if err != nil {
		t.Fatalf("Create(%s): %v", body, err)
	}
	return a
}

func (e *env) count(t testing.TB, tenantID string) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM agents WHERE tenant_id = $1`, tenantID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *env) rawSpec(t testing.TB, id string) string {
	t.Helper()
	var s string
	if err := e.pool.QueryRow(context.Background(), `SELECT spec::text FROM agents WHERE id = $1`, id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
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

// mustJSON encodes v as the HTTP layer does (no HTML escaping).
func mustJSON(t testing.TB, v any) string {
	t.Helper()
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// pinned returns a Config whose clock is fixed at ts.
func pinned(ts time.Time) Config { return Config{Now: func() time.Time { return ts }} }
