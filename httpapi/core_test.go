package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/parleyhq/parley/httpapi/ratelimit"
	"github.com/parleyhq/parley/internal/safehttp"
)

func TestSystemRoutes(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	r := e.do("GET", "/v1/ping", "", nil).wantStatus(t, 200)
	if r.JSON["pong"] != "pong" || r.JSON["time"] == nil {
		t.Fatalf("ping: %s", r.Body)
	}
	e.do("GET", "/healthz", "", nil).wantStatus(t, 200)
	r = e.do("GET", "/readyz", "", nil).wantStatus(t, 200)
	if c, _ := r.JSON["checks"].(map[string]any); c["database"] == nil {
		t.Fatalf("readyz lacks the database check: %s", r.Body)
	}
	r = e.do("GET", "/metrics", "", nil).wantStatus(t, 200)
	if !strings.Contains(string(r.Body), `parley_http_requests_total{route="GET /v1/ping",status="200"} 1`) {
		t.Fatalf("metrics lack the ping request:\n%s", r.Body)
	}
}

func TestReadyzReportsFailure(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.api.deps.Ready = append(e.api.deps.Ready, ReadyCheck{Name: "livekit", Check: func(context.Context) error {
		return errFake
	}})
	r := e.do("GET", "/readyz", "", nil).wantStatus(t, 503)
	if r.JSON["status"] != "unavailable" {
		t.Fatalf("readyz: %s", r.Body)
	}
}

var errFake = errors.New("livekit unreachable")

func TestRequestID(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	r := e.do("GET", "/v1/ping", "", nil)
	if !regexp.MustCompile(`^req_[0-9a-f]{24}$`).MatchString(r.Header.Get("X-Request-Id")) {
		t.Fatalf("generated request id %q", r.Header.Get("X-Request-Id"))
	}
	r = e.do("GET", "/v1/ping", "", nil, "X-Request-Id", "client-abc.123")
	if got := r.Header.Get("X-Request-Id"); got != "client-abc.123" {
		t.Fatalf("caller's request id not echoed: %q", got)
	}
	r = e.do("GET", "/v1/ping", "", nil, "X-Request-Id", "bad id\" with <junk>")
	if got := r.Header.Get("X-Request-Id"); !strings.HasPrefix(got, "req_") {
		t.Fatalf("unsafe request id echoed: %q", got)
	}
	// Error bodies of 5xx name the request; 4xx carry the header too.
	r = e.do("GET", "/v1/agents", "", nil)
	if r.Header.Get("X-Request-Id") == "" {
		t.Fatal("error response without X-Request-Id")
	}
}

func TestUnmatchedRoutesAreJSON(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	e.do("GET", "/v1/no-such-thing", "", nil).wantError(t, 404)
	r := e.do("DELETE", "/v1/ping", "", nil)
	r.wantError(t, 405)
	if r.Header.Get("Allow") != "GET" {
		t.Fatalf("Allow = %q", r.Header.Get("Allow"))
	}
}

func TestAuthHeaderProblems(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	for _, h := range []string{"", "Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "bearer not-a-token", "Bearer sk_unknownkey0000000000000000000000"} {
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/agents", nil)
		if h != "" {
			req.Header.Set("Authorization", h)
		}
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body errorBody
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != 401 || body.Detail == "" {
			t.Errorf("Authorization %q: status %d, detail %q", h, resp.StatusCode, body.Detail)
		}
	}
}

func TestBodyLimit(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(c *Config, _ *safehttp.Config) { c.MaxBodyBytes = 4096 })
	u := e.newUser()
	big := `{"agent_name":"` + strings.Repeat("a", 5000) + `"}`
	// With a Content-Length, refused before reading.
	e.do("POST", "/v1/agents", u.Token, big).wantError(t, 413)
	// Chunked (no Content-Length): refused while reading.
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/agents", &chunked{s: big})
	req.Header.Set("Authorization", "Bearer "+u.Token)
	req.ContentLength = -1
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("chunked oversize body: %d", resp.StatusCode)
	}
	var n int
	e.pool.QueryRow(context.Background(), `SELECT count(*) FROM agents`).Scan(&n)
	if n != 0 {
		t.Fatalf("oversize body wrote %d agents", n)
	}
}

// chunked hides its length so the client sends Transfer-Encoding: chunked.
type chunked struct {
	s   string
	off int
}

func (c *chunked) Read(p []byte) (int, error) {
	if c.off >= len(c.s) {
		return 0, io.EOF
	}
	n := copy(p, c.s[c.off:])
	c.off += n
	return n, nil
}

func TestCORS(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(c *Config, _ *safehttp.Config) { c.CORSOrigins = []string{"https://app.example.com"} })
	r := e.do("OPTIONS", "/v1/agents", "", nil, "Origin", "https://app.example.com", "Access-Control-Request-Method", "POST")
	r.wantStatus(t, 204)
	if r.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || !strings.Contains(r.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight headers: %v", r.Header)
	}
	r = e.do("GET", "/v1/ping", "", nil, "Origin", "https://evil.example.com")
	if r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS allowed an unlisted origin")
	}
}

// A second Server on the same database stands in for a second `parley serve` process.
func (e *testEnv) secondServer(cfg Config) *httptest.Server {
	e.t.Helper()
	lim, err := ratelimit.New(ratelimit.Config{}, ratelimit.NewPostgresStore(e.pool))
	if err != nil {
		e.t.Fatal(err)
	}
	api, err := New(cfg, Deps{Logger: slog.New(slog.DiscardHandler), Accounts: e.accounts, Agents: e.agents, Limiter: lim})
	if err != nil {
		e.t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	e.t.Cleanup(srv.Close)
	return srv
}

func TestRateLimitPerUserAcrossProcesses(t *testing.T) {
	t.Parallel()
	const limit = 20
	set := func(c *Config, _ *safehttp.Config) { c.RateLimitUser = limit }
	e := newTestEnv(t, set)
	cfg := Config{Addr: "127.0.0.1:0", PublicURL: "http://127.0.0.1", RateLimitUser: limit}
	other := e.secondServer(cfg)
	u := e.newUser()
	servers := []string{e.srv.URL, other.URL}
	var mu sync.Mutex
	ok, limited := 0, 0
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", servers[i%2]+"/v1/agents", nil)
			req.Header.Set("Authorization", "Bearer "+u.APIKey)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			switch resp.StatusCode {
			case 200:
				ok++
			case 429:
				limited++
				if resp.Header.Get("Retry-After") == "" || resp.Header.Get("X-RateLimit-Remaining") != "0" {
					t.Errorf("429 headers: %v", resp.Header)
				}
			default:
				t.Errorf("status %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	if ok > limit || ok+limited != 30 {
		t.Fatalf("two processes allowed %d of 30 requests (limit %d), limited %d", ok, limit, limited)
	}
	if ok < limit-2 {
		// Leases held unused by one process may under-serve slightly, never much.
		t.Fatalf("only %d of %d allowed", ok, limit)
	}
	// A different user has their own budget.
	v := e.newUser()
	r := e.do("GET", "/v1/agents", v.Token, nil).wantStatus(t, 200)
	if r.Header.Get("X-RateLimit-Limit") != strconv.Itoa(limit) || r.Header.Get("X-RateLimit-Reset") == "" {
		t.Fatalf("rate-limit headers: %v", r.Header)
	}
	if rem, _ := strconv.Atoi(r.Header.Get("X-RateLimit-Remaining")); rem != limit-1 {
		t.Fatalf("X-RateLimit-Remaining = %d, want %d", rem, limit-1)
	}
}

func TestRateLimitPerIPOnPublicRoutes(t *testing.T) {
	t.Parallel()
	const limit = 5
	e := newTestEnv(t, func(c *Config, _ *safehttp.Config) { c.RateLimitIP = limit })
	for i := range limit {
		r := e.do("GET", "/v1/branding/nobody.example.com", "", nil)
		if r.Status == 429 {
			t.Fatalf("request %d limited", i+1)
		}
	}
	r := e.do("GET", "/v1/branding/nobody.example.com", "", nil)
	r.wantError(t, 429)
	if ra, _ := strconv.Atoi(r.Header.Get("Retry-After")); ra < 1 || ra > 60 {
		t.Fatalf("Retry-After = %q", r.Header.Get("Retry-After"))
	}
	// System routes are never limited.
	e.do("GET", "/healthz", "", nil).wantStatus(t, 200)
}

// The OpenAPI document lists exactly the served routes, and every documented operation
// reaches a handler (no 404 route_not_found or 405 from the mux).
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	r := e.do("GET", "/openapi.json", "", nil).wantStatus(t, 200)
	if r.JSON["openapi"] != "3.1.0" {
		t.Fatalf("openapi version %v", r.JSON["openapi"])
	}
	paths, _ := r.JSON["paths"].(map[string]any)
	documented := 0
	for path, ops := range paths {
		for method := range ops.(map[string]any) {
			documented++
			concrete := pathParamRE.ReplaceAllString(path, "x")
			resp := e.do(strings.ToUpper(method), concrete, "", nil)
			if code, _ := resp.JSON["code"].(string); code == "route_not_found" || code == "method_not_allowed" {
				t.Errorf("documented %s %s is not served: %s", strings.ToUpper(method), path, resp.Body)
			}
		}
	}
	if documented != len(e.api.table) {
		t.Fatalf("documented %d operations, serve %d", documented, len(e.api.table))
	}
	// The contract's foundation routes are all there.
	for _, want := range []string{
		"post /v1/auth/register", "post /v1/auth/login", "post /v1/auth/refresh", "get /v1/auth/me", "post /v1/auth/logout",
		"get /v1/users/me", "patch /v1/users/me", "get /v1/users/me/stats", "get /v1/users/me/usage", "get /v1/users/me/usage/daily",
		"get /v1/users/me/branding", "put /v1/users/me/branding", "get /v1/users/me/tenant/members",
		"post /v1/api-keys", "get /v1/api-keys", "patch /v1/api-keys/{id}/revoke", "delete /v1/api-keys/{id}", "get /v1/api-keys/{id}/usage",
		"post /v1/agents", "get /v1/agents", "get /v1/agents/{id}", "patch /v1/agents/{id}", "delete /v1/agents/{id}",
		"post /v1/agents/{id}/duplicate", "get /v1/agents/{id}/stats", "get /v1/agents/stats/global", "post /v1/agents/{id}/test-function",
		"get /v1/ping", "get /healthz", "get /readyz", "get /metrics", "get /openapi.json", "get /docs", "get /v1/branding/{domain}",
	} {
		method, path, _ := strings.Cut(want, " ")
		ops, _ := paths[path].(map[string]any)
		if ops[method] == nil {
			t.Errorf("OpenAPI lacks %s", want)
		}
	}
	e.do("GET", "/docs", "", nil).wantStatus(t, 200)
}

// Failed authentications are charged to the client IP, so guessing tokens is throttled.
func TestFailedAuthIsRateLimitedPerIP(t *testing.T) {
	t.Parallel()
	const limit = 3
	e := newTestEnv(t, func(c *Config, _ *safehttp.Config) { c.RateLimitIP = limit })
	for i := range limit {
		e.do("GET", "/v1/agents", "sk_guess"+strconv.Itoa(i), nil).wantError(t, 401)
	}
	e.do("GET", "/v1/agents", "sk_guess-more", nil).wantError(t, 429)
	// A valid credential is not affected by the failures of others from the same IP.
	u := e.newUser()
	e.do("GET", "/v1/agents", u.APIKey, nil).wantStatus(t, 200)
}
