package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/agents"
	"github.com/parleyhq/parley/httpapi/ratelimit"
	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/dbtest"
	"github.com/parleyhq/parley/internal/safehttp"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

// testEnv is a real API server on a fresh, migrated database.
type testEnv struct {
	t        *testing.T
	pool     *pgxpool.Pool
	srv      *httptest.Server
	api      *Server
	accounts *accounts.Service
	agents   *agents.Service
	limiter  *ratelimit.Limiter
}

// testUser is a registered user with a tenant, a JWT and an all-scopes API key.
type testUser struct {
	Email, Password     string
	UserID, TenantID    string
	Token, RefreshToken string
	APIKey, APIKeyID    string
}

var userSeq atomic.Int64

// newTestEnv starts a server. Rate limits are off unless cfg sets them, so tests that do
// not test limits are not throttled; private URLs are allowed (test webhooks run on
// loopback) unless allowPrivate is false.
func newTestEnv(t *testing.T, cfgs ...func(*Config, *safehttp.Config)) *testEnv {
	t.Helper()
	ctx := context.Background()
	pool := dbtest.Pool(t)
	cfg := Config{Addr: "127.0.0.1:0", PublicURL: "http://127.0.0.1"}
	scfg := safehttp.Config{AllowPrivate: true}
	for _, f := range cfgs {
		f(&cfg, &scfg)
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	acc, err := accounts.New(pool, accounts.Config{JWTSecret: secret, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := acc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(acc.Stop)
	box, err := crypt.New(crypt.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	guard, err := safehttp.New(scfg)
	if err != nil {
		t.Fatal(err)
	}
	ag, err := agents.New(pool, agents.Config{}, box, guard, guard)
	if err != nil {
		t.Fatal(err)
	}
	lim, err := ratelimit.New(ratelimit.Config{}, ratelimit.NewPostgresStore(pool))
	if err != nil {
		t.Fatal(err)
	}
	api, err := New(cfg, Deps{Logger: slog.New(slog.DiscardHandler), Accounts: acc, Agents: ag, Limiter: lim,
		Ready:   []ReadyCheck{{Name: "database", Check: func(ctx context.Context) error { return pool.Ping(ctx) }}},
		Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	return &testEnv{t: t, pool: pool, srv: srv, api: api, accounts: acc, agents: ag, limiter: lim}
}

// newUser registers a user in a new tenant, logs in, and creates an API key.
func (e *testEnv) newUser() testUser {
	e.t.Helper()
	ctx := context.Background()
	n := userSeq.Add(1)
	u := testUser{Email: fmt.Sprintf("user%d-%s@example.com", n, strings.ToLower(rand.Text()[:6])), Password: "correct horse battery"}
	if _, err := e.accounts.Register(ctx, accounts.RegisterInput{Email: u.Email, Password: u.Password, FullName: "Test User", CompanyName: "Acme"}); err != nil {
		e.t.Fatal(err)
	}
	pair, user, err := e.accounts.Login(ctx, u.Email, u.Password)
	if err != nil {
		e.t.Fatal(err)
	}
	u.Token, u.RefreshToken, u.UserID, u.TenantID = pair.AccessToken, pair.RefreshToken, user.ID, user.TenantID
	p, err := e.accounts.Authenticate(ctx, u.Token)
	if err != nil {
		e.t.Fatal(err)
	}
	key, secret, err := e.accounts.CreateAPIKey(ctx, p, accounts.CreateKeyInput{Name: "test"})
	if err != nil {
		e.t.Fatal(err)
	}
	u.APIKey, u.APIKeyID = secret, key.ID
	return u
}

// response is a decoded API response.
type response struct {
	Status int
	Header http.Header
	Body   []byte
	JSON   map[string]any
}

// do sends a request. body may be nil, a string/[]byte (sent raw), or a value (JSON).
func (e *testEnv) do(method, path, token string, body any, headers ...string) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
	json.Unmarshal(raw, &r.JSON)
	return r
}

// wantStatus fails the test when r has another status, showing the body.
func (r response) wantStatus(t *testing.T, status int) response {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body: %s", r.Status, status, r.Body)
	}
	return r
}

// wantError checks an error response: status, a non-empty detail, and (when given) that
// fields names each field.
func (r response) wantError(t *testing.T, status int, fields ...string) {
	t.Helper()
	r.wantStatus(t, status)
	if d, _ := r.JSON["detail"].(string); d == "" {
		t.Fatalf("error without detail: %s", r.Body)
	}
	if c, _ := r.JSON["code"].(string); c == "" {
		t.Fatalf("error without code: %s", r.Body)
	}
	for _, f := range fields {
		fm, _ := r.JSON["fields"].(map[string]any)
		if _, ok := fm[f]; !ok {
			t.Fatalf("error fields lack %q: %s", f, r.Body)
		}
	}
}
