package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/internal/safehttp"
)

// acctEnv is a testEnv whose server uses an accounts.Service with a JWT secret the test
// knows, so that it can mint expired and otherwise doctored tokens.
type acctEnv struct {
	*testEnv
	secret []byte
}

func newAcctEnv(t *testing.T, cfgs ...func(*Config, *safehttp.Config)) *acctEnv {
	t.Helper()
	e := newTestEnv(t, cfgs...)
	secret := make([]byte, 32)
	rand.Read(secret)
	acc, err := accounts.New(e.pool, accounts.Config{JWTSecret: secret, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := acc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(acc.Stop)
	cfg := e.api.cfg
	api, err := New(cfg, Deps{Logger: slog.New(slog.DiscardHandler), Accounts: acc, Agents: e.agents, Limiter: e.limiter})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	e.srv, e.api, e.accounts = srv, api, acc
	return &acctEnv{testEnv: e, secret: secret}
}

// resign re-signs the claims of token, changed by mod, with method and key.
func resign(t *testing.T, token string, method jwt.SigningMethod, key any, mod func(jwt.MapClaims)) string {
	t.Helper()
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
		t.Fatal(err)
	}
	if mod != nil {
		mod(claims)
	}
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// postForm sends an application/x-www-form-urlencoded body.
func (e *testEnv) postForm(path string, form url.Values) response {
	e.t.Helper()
	resp, err := e.srv.Client().Post(e.srv.URL+path, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
	json.Unmarshal(raw, &r.JSON)
	return r
}

func str(v any) string { s, _ := v.(string); return s }

func (e *testEnv) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func TestAuthRoutes(t *testing.T) {
	t.Parallel()
	e := newAcctEnv(t)
	r := e.do("POST", "/v1/auth/register", "", map[string]any{"email": "Flow@Example.com", "password": "long enough", "full_name": "Flo", "company_name": "Flow Co"})
	r.wantStatus(t, 201)
	if !strings.HasPrefix(str(r.JSON["id"]), "usr_") || r.JSON["email"] != "Flow@Example.com" || r.JSON["role"] != "owner" || r.JSON["tenant_id"] == nil {
		t.Fatalf("register: %s", r.Body)
	}
	if strings.Contains(string(r.Body), "password") || strings.Contains(string(r.Body), "argon2") {
		t.Fatalf("register leaks the password hash: %s", r.Body)
	}

	r = e.do("POST", "/v1/auth/login", "", map[string]any{"email": "flow@example.com", "password": "long enough"}).wantStatus(t, 200)
	if r.JSON["token_type"] != "bearer" || r.JSON["expires_in"] != float64(900) || str(r.JSON["access_token"]) == "" ||
		str(r.JSON["refresh_token"]) == "" || r.JSON["user"].(map[string]any)["email"] != "Flow@Example.com" {
		t.Fatalf("login: %s", r.Body)
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Fatal("token response is cacheable")
	}
	access, refresh := str(r.JSON["access_token"]), str(r.JSON["refresh_token"])
	for _, path := range []string{"/v1/auth/me", "/v1/users/me"} {
		if r := e.do("GET", path, access, nil).wantStatus(t, 200); r.JSON["email"] != "Flow@Example.com" || r.JSON["full_name"] != "Flo" {
			t.Fatalf("%s: %s", path, r.Body)
		}
	}

	// OAuth2 password-grant form, as FastAPI-style SDKs send it.
	r = e.postForm("/v1/auth/login", url.Values{"username": {"flow@example.com"}, "password": {"long enough"}}).wantStatus(t, 200)
	formAccess := str(r.JSON["access_token"])

	// Rotation, then reuse of the first refresh token kills the session.
	r = e.do("POST", "/v1/auth/refresh", "", map[string]any{"refresh_token": refresh}).wantStatus(t, 200)
	access2, refresh2 := str(r.JSON["access_token"]), str(r.JSON["refresh_token"])
	if refresh2 == refresh || access2 == "" {
		t.Fatalf("refresh did not rotate: %s", r.Body)
	}
	e.do("GET", "/v1/auth/me", access2, nil).wantStatus(t, 200)
	r = e.do("POST", "/v1/auth/refresh", "", map[string]any{"refresh_token": refresh})
	r.wantError(t, 401)
	if r.JSON["code"] != "refresh_token_reused" {
		t.Fatalf("reuse: %s", r.Body)
	}
	e.do("POST", "/v1/auth/refresh", "", map[string]any{"refresh_token": refresh2}).wantError(t, 401)
	e.do("GET", "/v1/auth/me", access2, nil).wantError(t, 401)
	e.do("GET", "/v1/auth/me", access, nil).wantError(t, 401)
	e.do("GET", "/v1/auth/me", formAccess, nil).wantStatus(t, 200) // another session

	// Logout without a body revokes the caller's session.
	r = e.do("POST", "/v1/auth/logout", formAccess, nil).wantStatus(t, 200)
	if r.JSON["success"] != true {
		t.Fatalf("logout: %s", r.Body)
	}
	e.do("GET", "/v1/auth/me", formAccess, nil).wantError(t, 401)
	e.do("POST", "/v1/auth/logout", formAccess, nil).wantError(t, 401)

	// Logout with a refresh token revokes that session too.
	a := e.do("POST", "/v1/auth/login", "", map[string]any{"email": "flow@example.com", "password": "long enough"}).wantStatus(t, 200)
	b := e.do("POST", "/v1/auth/login", "", map[string]any{"email": "flow@example.com", "password": "long enough"}).wantStatus(t, 200)
	e.do("POST", "/v1/auth/logout", str(a.JSON["access_token"]), map[string]any{"refresh_token": b.JSON["refresh_token"]}).wantStatus(t, 200)
	e.do("GET", "/v1/auth/me", str(b.JSON["access_token"]), nil).wantError(t, 401)
	e.do("POST", "/v1/auth/refresh", "", map[string]any{"refresh_token": b.JSON["refresh_token"]}).wantError(t, 401)
	e.do("POST", "/v1/auth/logout", "", nil).wantError(t, 401)
}

func TestAuthBadInput(t *testing.T) {
	t.Parallel()
	e := newAcctEnv(t, func(c *Config, _ *safehttp.Config) { c.MaxBodyBytes = 4096 })
	u := e.newUser()
	before := e.count(`SELECT count(*) FROM users`)
	tests := []struct {
		name   string
		path   string
		body   any
		status int
		fields []string
	}{
		{"register: malformed JSON", "/v1/auth/register", `{"email": "a@example.com",`, 400, nil},
		{"register: empty body", "/v1/auth/register", "", 400, nil},
		{"register: array body", "/v1/auth/register", `[]`, 400, nil},
		{"register: string body", "/v1/auth/register", `"hello"`, 400, nil},
		{"register: two values", "/v1/auth/register", `{} {}`, 400, nil},
		{"register: email is a number", "/v1/auth/register", `{"email": 123, "password": "long enough"}`, 400, []string{"email"}},
		{"register: password is a bool", "/v1/auth/register", `{"email": "a@example.com", "password": true}`, 400, []string{"password"}},
		{"register: full_name is an object", "/v1/auth/register", `{"email": "a@example.com", "password": "long enough", "full_name": {}}`, 400, []string{"full_name"}},
		{"register: no fields", "/v1/auth/register", `{}`, 422, []string{"email", "password"}},
		{"register: null fields", "/v1/auth/register", `{"email": null, "password": null}`, 422, []string{"email", "password"}},
		{"register: bad email", "/v1/auth/register", map[string]any{"email": "nope", "password": "long enough"}, 422, []string{"email"}},
		{"register: short password", "/v1/auth/register", map[string]any{"email": "a@example.com", "password": "short"}, 422, []string{"password"}},
		{"register: long name", "/v1/auth/register", map[string]any{"email": "a@example.com", "password": "long enough", "full_name": strings.Repeat("n", 201)}, 422, []string{"full_name"}},
		{"register: NUL in name", "/v1/auth/register", map[string]any{"email": "a@example.com", "password": "long enough", "full_name": "a\x00b"}, 422, []string{"full_name"}},
		{"register: duplicate email", "/v1/auth/register", map[string]any{"email": strings.ToUpper(u.Email), "password": "long enough"}, 409, nil},
		{"register: oversize", "/v1/auth/register", map[string]any{"email": "a@example.com", "password": "long enough", "full_name": strings.Repeat("n", 5000)}, 413, nil},
		{"login: wrong password", "/v1/auth/login", map[string]any{"email": u.Email, "password": "wrong password"}, 401, nil},
		{"login: unknown email", "/v1/auth/login", map[string]any{"email": "nobody@example.com", "password": "wrong password"}, 401, nil},
		{"login: missing fields", "/v1/auth/login", `{}`, 422, []string{"email", "password"}},
		{"login: password is a number", "/v1/auth/login", `{"email": "a@example.com", "password": 12345678}`, 400, []string{"password"}},
		{"login: malformed", "/v1/auth/login", `{"email"`, 400, nil},
		{"login: oversize", "/v1/auth/login", map[string]any{"email": u.Email, "password": strings.Repeat("p", 5000)}, 413, nil},
		{"refresh: missing token", "/v1/auth/refresh", `{}`, 422, []string{"refresh_token"}},
		{"refresh: token is a number", "/v1/auth/refresh", `{"refresh_token": 1}`, 400, []string{"refresh_token"}},
		{"refresh: unknown token", "/v1/auth/refresh", `{"refresh_token": "rt_nope"}`, 401, nil},
		{"refresh: empty body", "/v1/auth/refresh", "", 400, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.do("POST", tt.path, "", tt.body).wantError(t, tt.status, tt.fields...)
		})
	}
	// Wrong password and unknown email are indistinguishable.
	a := e.do("POST", "/v1/auth/login", "", map[string]any{"email": u.Email, "password": "wrong password"})
	b := e.do("POST", "/v1/auth/login", "", map[string]any{"email": "nobody@example.com", "password": "wrong password"})
	if string(a.Body) != string(b.Body) || a.JSON["code"] != "invalid_credentials" {
		t.Fatalf("login failures differ: %s vs %s", a.Body, b.Body)
	}
	if n := e.count(`SELECT count(*) FROM users`); n != before {
		t.Fatalf("bad input created %d users", n-before)
	}
}

func TestBadTokens(t *testing.T) {
	t.Parallel()
	e := newAcctEnv(t)
	u := e.newUser()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	expired := resign(t, u.Token, jwt.SigningMethodHS256, e.secret, func(c jwt.MapClaims) {
		c["iat"], c["exp"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-time.Minute).Unix()
	})
	// The control: re-signing unchanged claims with the real secret works.
	e.do("GET", "/v1/auth/me", resign(t, u.Token, jwt.SigningMethodHS256, e.secret, nil), nil).wantStatus(t, 200)

	// A revoked and a deleted key.
	created := e.do("POST", "/v1/api-keys", u.Token, map[string]any{"name": "to revoke"}).wantStatus(t, 201)
	revoked, revokedID := str(created.JSON["key"]), str(created.JSON["id"])
	e.do("GET", "/v1/auth/me", revoked, nil).wantStatus(t, 200)
	e.do("PATCH", "/v1/api-keys/"+revokedID+"/revoke", u.Token, nil).wantStatus(t, 200)
	created = e.do("POST", "/v1/api-keys", u.Token, map[string]any{"name": "to delete"}).wantStatus(t, 201)
	deleted := str(created.JSON["key"])
	e.do("DELETE", "/v1/api-keys/"+str(created.JSON["id"]), u.Token, nil).wantStatus(t, 204)

	tests := map[string]struct{ token, code string }{
		"expired":            {expired, "invalid_token"},
		"wrong secret":       {resign(t, u.Token, jwt.SigningMethodHS256, []byte("0123456789abcdef0123456789abcdef"), nil), "invalid_token"},
		"alg none":           {resign(t, u.Token, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil), "invalid_token"},
		"RS256":              {resign(t, u.Token, jwt.SigningMethodRS256, rsaKey, nil), "invalid_token"},
		"HS512 real secret":  {resign(t, u.Token, jwt.SigningMethodHS512, e.secret, nil), "invalid_token"},
		"other issuer":       {resign(t, u.Token, jwt.SigningMethodHS256, e.secret, func(c jwt.MapClaims) { c["iss"] = "someone-else" }), "invalid_token"},
		"no expiry":          {resign(t, u.Token, jwt.SigningMethodHS256, e.secret, func(c jwt.MapClaims) { delete(c, "exp") }), "invalid_token"},
		"other user's claim": {resign(t, u.Token, jwt.SigningMethodHS256, e.secret, func(c jwt.MapClaims) { c["sub"] = "usr_other" }), "session_revoked"},
		"garbage":            {"eyJhbGciOiJIUzI1NiJ9.garbage.garbage", "invalid_token"},
		"revoked key":        {revoked, "api_key_revoked"},
		"deleted key":        {deleted, "invalid_api_key"},
		"unknown key":        {"sk_" + strings.Repeat("A", 32), "invalid_api_key"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			for _, path := range []string{"/v1/auth/me", "/v1/api-keys"} {
				r := e.do("GET", path, tt.token, nil)
				r.wantError(t, 401)
				if r.JSON["code"] != tt.code {
					t.Fatalf("%s: code %v, want %s", path, r.JSON["code"], tt.code)
				}
			}
		})
	}
}

func TestAPIKeyRoutes(t *testing.T) {
	t.Parallel()
	e := newAcctEnv(t)
	u := e.newUser() // has one key already ("test")

	r := e.do("POST", "/v1/api-keys", u.Token, map[string]any{"name": "backend"}).wantStatus(t, 201)
	secret, id := str(r.JSON["key"]), str(r.JSON["id"])
	if !strings.HasPrefix(secret, "sk_") || r.JSON["api_key"] != secret || r.JSON["key_prefix"] != secret[:10] ||
		fmt.Sprint(r.JSON["scopes"]) != "[*]" || r.JSON["is_active"] != true || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("create: %s", r.Body)
	}
	if r := e.do("GET", "/v1/auth/me", secret, nil).wantStatus(t, 200); r.JSON["id"] != u.UserID {
		t.Fatalf("me by key: %s", r.Body)
	}

	r = e.do("GET", "/v1/api-keys", u.Token, nil).wantStatus(t, 200)
	keys, _ := r.JSON["api_keys"].([]any)
	if r.JSON["total"] != float64(2) || len(keys) != 2 || r.JSON["has_more"] != false || r.JSON["limit"] != float64(20) {
		t.Fatalf("list: %s", r.Body)
	}
	if strings.Contains(string(r.Body), secret) || strings.Contains(string(r.Body), u.APIKey) {
		t.Fatal("list shows a secret")
	}
	r = e.do("GET", "/v1/api-keys?limit=1&offset=0", secret, nil).wantStatus(t, 200)
	if keys, _ := r.JSON["api_keys"].([]any); len(keys) != 1 || r.JSON["has_more"] != true {
		t.Fatalf("page: %s", r.Body)
	}
	for _, q := range []string{"limit=0", "limit=101", "limit=abc", "offset=-1", "offset=x"} {
		e.do("GET", "/v1/api-keys?"+q, u.Token, nil).wantError(t, 422)
	}

	// Scopes: a read-only key can read keys but not write them, nor grant more than it has.
	r = e.do("POST", "/v1/api-keys", u.Token, map[string]any{"name": "reader", "scopes": []string{"api_keys:read", "agents:read"}}).wantStatus(t, 201)
	reader := str(r.JSON["key"])
	e.do("GET", "/v1/api-keys", reader, nil).wantStatus(t, 200)
	e.do("POST", "/v1/api-keys", reader, map[string]any{"name": "x"}).wantError(t, 403)
	e.do("PATCH", "/v1/api-keys/"+id+"/revoke", reader, nil).wantError(t, 403)
	e.do("GET", "/v1/users/me/stats", reader, nil).wantError(t, 403)
	r = e.do("PATCH", "/v1/users/me", reader, map[string]any{"full_name": "x"})
	r.wantError(t, 403)
	r = e.do("POST", "/v1/api-keys", u.Token, map[string]any{"name": "limited", "scopes": []string{"api_keys:write"}}).wantStatus(t, 201)
	e.do("POST", "/v1/api-keys", str(r.JSON["key"]), map[string]any{"name": "escalate", "scopes": []string{"*"}}).wantError(t, 403)
	e.do("POST", "/v1/api-keys", str(r.JSON["key"]), map[string]any{"name": "same", "scopes": []string{"api_keys:write"}}).wantStatus(t, 201)

	for _, tt := range []struct {
		name   string
		body   any
		status int
		fields []string
	}{
		{"no name", `{}`, 422, []string{"name"}},
		{"name is a number", `{"name": 5}`, 400, []string{"name"}},
		{"scopes is a string", `{"name": "k", "scopes": "*"}`, 400, []string{"scopes"}},
		{"scope is a number", `{"name": "k", "scopes": [1]}`, 400, nil},
		{"unknown scope", map[string]any{"name": "k", "scopes": []string{"agents:read", "everything"}}, 422, []string{"scopes"}},
		{"bad expires_at", `{"name": "k", "expires_at": "tomorrow"}`, 400, nil},
		{"past expires_at", map[string]any{"name": "k", "expires_at": time.Now().Add(-time.Hour)}, 422, []string{"expires_at"}},
		{"malformed", `{"name": "k"`, 400, nil},
		{"empty body", ``, 400, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e.do("POST", "/v1/api-keys", u.Token, tt.body).wantError(t, tt.status, tt.fields...)
		})
	}

	// Usage: the HTTP layer counts each request made with a key, failures included.
	for range 3 {
		e.do("GET", "/v1/auth/me", secret, nil).wantStatus(t, 200)
	}
	e.do("GET", "/v1/api-keys?limit=0", secret, nil).wantError(t, 422)
	deadline := time.Now().Add(3 * time.Second)
	for {
		r = e.do("GET", "/v1/api-keys/"+id+"/usage?days=7", u.Token, nil).wantStatus(t, 200)
		daily, _ := r.JSON["daily"].([]any)
		if len(daily) != 7 {
			t.Fatalf("usage days: %s", r.Body)
		}
		// 1 (me) + 1 (list page) + 3 (me) + 1 (422) requests so far with this key.
		if r.JSON["total_requests"] == float64(6) && r.JSON["total_errors"] == float64(1) && r.JSON["last_used_at"] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage: %s", r.Body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.do("GET", "/v1/api-keys/"+id+"/usage", u.Token, nil).wantStatus(t, 200)
	for _, q := range []string{"days=0", "days=366", "days=abc", "days=-3"} {
		e.do("GET", "/v1/api-keys/"+id+"/usage?"+q, u.Token, nil).wantError(t, 422, "days")
	}

	// Revoke: refused at once; delete: gone.
	r = e.do("PATCH", "/v1/api-keys/"+id+"/revoke", u.Token, nil).wantStatus(t, 200)
	if r.JSON["revoked_at"] == nil || r.JSON["is_active"] != false {
		t.Fatalf("revoke: %s", r.Body)
	}
	e.do("GET", "/v1/auth/me", secret, nil).wantError(t, 401)
	e.do("DELETE", "/v1/api-keys/"+id, u.Token, nil).wantStatus(t, 204)
	e.do("DELETE", "/v1/api-keys/"+id, u.Token, nil).wantError(t, 404)
	e.do("PATCH", "/v1/api-keys/"+id+"/revoke", u.Token, nil).wantError(t, 404)
	e.do("GET", "/v1/api-keys/"+id+"/usage", u.Token, nil).wantError(t, 404)
}

// Another tenant's key or member is 404, never 403, and stays untouched.
func TestAccountsCrossTenant(t *testing.T) {
	t.Parallel()
	e := newAcctEnv(t)
	a, b := e.newUser(), e.newUser()
	for _, tok := range []string{b.Token, b.APIKey} {
		e.do("PATCH", "/v1/api-keys/"+a.APIKeyID+"/revoke", tok, nil).wantError(t, 404)
		e.do("DELETE", "/v1/api-keys/"+a.APIKeyID, tok, nil).wantError(t, 404)
		e.do("GET", "/v1/api-keys/"+a.APIKeyID+"/usage", tok, nil).wantError(t, 404)
		e.do("PATCH", "/v1/users/me/tenant/members/"+a.UserID, tok, map[string]any{"role": "member"}).wantError(t, 404)
		e.do("DELETE", "/v1/users/me/tenant/members/"+a.UserID, tok, nil).wantError(t, 404)
		r := e.do("GET", "/v1/api-keys", tok, nil).wantStatus(t, 200)
		if strings.Contains(string(r.Body), a.APIKeyID) {
			t.Fatal("b lists a's key")
		}
		r = e.do("GET", "/v1/users/me/tenant/members", tok, nil).wantStatus(t, 200)
		if strings.Contains(string(r.Body), a.UserID) || r.JSON["total"] != float64(1) {
			t.Fatalf("b lists a's members: %s", r.Body)
		}
	}
	e.do("GET", "/v1/auth/me", a.APIKey, nil).wantStatus(t, 200)
	e.do("GET", "/v1/auth/me", a.Token, nil).wantStatus(t, 200)
}

func TestMemberRoutes(t *testing.T) {
	t.Parallel()
	e := newAcctEnv(t)
	owner, other := e.newUser(), e.newUser()

	r := e.do("POST", "/v1/users/me/tenant/members", owner.Token, map[string]any{"email": other.Email, "role": "member"}).wantStatus(t, 201)
	if r.JSON["user_id"] != other.UserID || r.JSON["role"] != "member" {
		t.Fatalf("add: %s", r.Body)
	}
	for _, tt := range []struct {
		name   string
		body   any
		status int
		fields []string
	}{
		{"again", map[string]any{"email": other.Email}, 409, nil},
		{"unknown user", map[string]any{"email": "ghost@example.com"}, 404, nil},
		{"no email", `{"role": "admin"}`, 422, []string{"email"}},
		{"bad role", map[string]any{"email": other.Email, "role": "root"}, 422, []string{"role"}},
		{"role is a number", `{"email": "x@example.com", "role": 1}`, 400, []string{"role"}},
		{"malformed", `{"email":`, 400, nil},
	} {
		t.Run("add "+tt.name, func(t *testing.T) {
			e.do("POST", "/v1/users/me/tenant/members", owner.Token, tt.body).wantError(t, tt.status, tt.fields...)
		})
	}

	r = e.do("GET", "/v1/users/me/tenant/members?page=1&per_page=1", owner.Token, nil).wantStatus(t, 200)
	if ms, _ := r.JSON["members"].([]any); len(ms) != 1 || r.JSON["total"] != float64(2) || r.JSON["has_more"] != true || r.JSON["page"] != float64(1) {
		t.Fatalf("members page 1: %s", r.Body)
	}
	r = e.do("GET", "/v1/users/me/tenant/members?page=2&per_page=1", owner.Token, nil).wantStatus(t, 200)
	if ms, _ := r.JSON["members"].([]any); len(ms) != 1 || ms[0].(map[string]any)["user_id"] != other.UserID || r.JSON["has_more"] != false {
		t.Fatalf("members page 2: %s", r.Body)
	}
	r = e.do("GET", "/v1/users/me/tenant/members?limit=5&offset=5", owner.Token, nil).wantStatus(t, 200)
	if ms, _ := r.JSON["members"].([]any); ms == nil || len(ms) != 0 {
		t.Fatalf("members beyond the end: %s", r.Body)
	}
	for _, q := range []string{"page=0", "per_page=101", "page=x", "limit=0"} {
		e.do("GET", "/v1/users/me/tenant/members?"+q, owner.Token, nil).wantError(t, 422)
	}

	// The other user, moved into owner's tenant, logs in there as a member.
	if _, err := e.pool.Exec(context.Background(), `UPDATE users SET tenant_id = $1 WHERE id = $2`, owner.TenantID, other.UserID); err != nil {
		t.Fatal(err)
	}
	r = e.do("POST", "/v1/auth/login", "", map[string]any{"email": other.Email, "password": other.Password}).wantStatus(t, 200)
	member := str(r.JSON["access_token"])
	if r := e.do("GET", "/v1/auth/me", member, nil).wantStatus(t, 200); r.JSON["tenant_id"] != owner.TenantID || r.JSON["role"] != "member" {
		t.Fatalf("member me: %s", r.Body)
	}
	e.do("GET", "/v1/users/me/tenant/members", member, nil).wantStatus(t, 200)
	e.do("POST", "/v1/users/me/tenant/members", member, map[string]any{"email": owner.Email}).wantError(t, 403)
	e.do("PATCH", "/v1/users/me/tenant/members/"+owner.UserID, member, map[string]any{"role": "member"}).wantError(t, 403)
	e.do("DELETE", "/v1/users/me/tenant/members/"+owner.UserID, member, nil).wantError(t, 403)
	e.do("PUT", "/v1/users/me/branding", member, map[string]any{"app_name": "x"}).wantError(t, 403)
	e.do("POST", "/v1/api-keys", member, map[string]any{"name": "x"}).wantError(t, 403)
	e.do("PATCH", "/v1/users/me", member, map[string]any{"full_name": "Members may edit themselves"}).wantStatus(t, 200)

	// Roles.
	e.do("PATCH", "/v1/users/me/tenant/members/"+owner.UserID, owner.Token, map[string]any{"role": "admin"}).wantError(t, 409)
	e.do("DELETE", "/v1/users/me/tenant/members/"+owner.UserID, owner.Token, nil).wantError(t, 409)
	e.do("PATCH", "/v1/users/me/tenant/members/"+other.UserID, owner.Token, map[string]any{"role": "god"}).wantError(t, 422, "role")
	e.do("PATCH", "/v1/users/me/tenant/members/"+other.UserID, owner.Token, map[string]any{"role": 7}).wantError(t, 400, "role")
	e.do("PATCH", "/v1/users/me/tenant/members/"+other.UserID, owner.Token, `{}`).wantError(t, 422, "role")
	e.do("PATCH", "/v1/users/me/tenant/members/usr_nobody", owner.Token, map[string]any{"role": "admin"}).wantError(t, 404)
	r = e.do("PATCH", "/v1/users/me/tenant/members/"+other.UserID, owner.Token, map[string]any{"role": "admin"}).wantStatus(t, 200)
	if r.JSON["role"] != "admin" {
		t.Fatalf("promote: %s", r.Body)
	}
	e.do("PUT", "/v1/users/me/branding", member, map[string]any{"app_name": "admins may"}).wantStatus(t, 200)

	// Removal takes the member's session with it.
	e.do("DELETE", "/v1/users/me/tenant/members/"+other.UserID, owner.Token, nil).wantStatus(t, 204)
	e.do("GET", "/v1/auth/me", member, nil).wantError(t, 401)
	e.do("DELETE", "/v1/users/me/tenant/members/"+other.UserID, owner.Token, nil).wantError(t, 404)
}

func TestBrandingRoutes(t *testing.T) {
	t.Parallel()
	e := newAcctEnv(t)
	a, b := e.newUser(), e.newUser()
	want := map[string]any{"app_name": "Acme Voice", "primary_color": "#112233", "logo_url": "https://cdn.example.com/logo.svg", "domain": "voice.acme.example"}
	r := e.do("PUT", "/v1/users/me/branding", a.Token, want).wantStatus(t, 200)
	for k, v := range want {
		if r.JSON[k] != v {
			t.Fatalf("put: %s", r.Body)
		}
	}
	r = e.do("GET", "/v1/users/me/branding", a.APIKey, nil).wantStatus(t, 200)
	if r.JSON["domain"] != "voice.acme.example" {
		t.Fatalf("get: %s", r.Body)
	}
	r = e.do("GET", "/v1/branding/VOICE.acme.example", "", nil).wantStatus(t, 200)
	if r.JSON["app_name"] != "Acme Voice" || r.JSON["tenant_id"] != nil {
		t.Fatalf("public: %s", r.Body)
	}
	e.do("GET", "/v1/branding/unknown.example", "", nil).wantError(t, 404)
	e.do("GET", "/v1/branding/'%20OR%20'1'='1", "", nil).wantError(t, 404)

	r = e.do("PUT", "/v1/users/me/branding", b.Token, map[string]any{"domain": "voice.acme.example"})
	r.wantError(t, 409)
	if strings.Contains(string(r.Body), a.TenantID) || strings.Contains(string(r.Body), a.Email) {
		t.Fatalf("conflict reveals the other tenant: %s", r.Body)
	}
	for _, tt := range []struct {
		name   string
		body   any
		status int
		fields []string
	}{
		{"bad color", map[string]any{"primary_color": "blue"}, 422, []string{"primary_color"}},
		{"bad logo", map[string]any{"logo_url": "javascript:alert(1)"}, 422, []string{"logo_url"}},
		{"bad domain", map[string]any{"domain": "http://x.example/"}, 422, []string{"domain"}},
		{"all bad", map[string]any{"primary_color": "#12345", "logo_url": "ftp://x", "domain": "-x-.example"}, 422, []string{"primary_color", "logo_url", "domain"}},
		{"app_name is a number", `{"app_name": 5}`, 400, []string{"app_name"}},
		{"malformed", `{`, 400, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e.do("PUT", "/v1/users/me/branding", b.Token, tt.body).wantError(t, tt.status, tt.fields...)
		})
	}
	if r := e.do("GET", "/v1/users/me/branding", b.Token, nil).wantStatus(t, 200); r.JSON["app_name"] != "" || r.JSON["domain"] != "" {
		t.Fatalf("bad input changed b's branding: %s", r.Body)
	}
	// A key needs users:write to change branding.
	r = e.do("POST", "/v1/api-keys", a.Token, map[string]any{"name": "ro", "scopes": []string{"users:read"}}).wantStatus(t, 201)
	e.do("PUT", "/v1/users/me/branding", str(r.JSON["key"]), want).wantError(t, 403)
	e.do("GET", "/v1/users/me/branding", str(r.JSON["key"]), nil).wantStatus(t, 200)
}

func TestUserRoutes(t *testing.T) {
	t.Parallel()
	e := newAcctEnv(t)
	u := e.newUser()
	r := e.do("PATCH", "/v1/users/me", u.Token, map[string]any{"full_name": "Renamed"}).wantStatus(t, 200)
	if r.JSON["full_name"] != "Renamed" || r.JSON["company_name"] != "Acme" {
		t.Fatalf("patch: %s", r.Body)
	}
	e.do("PATCH", "/v1/users/me", u.Token, map[string]any{"full_name": strings.Repeat("x", 201)}).wantError(t, 422, "full_name")
	e.do("PATCH", "/v1/users/me", u.Token, `{"full_name": 5}`).wantError(t, 400, "full_name")
	e.do("PATCH", "/v1/users/me", u.Token, `{"company_name": ["a"]}`).wantError(t, 400, "company_name")
	e.do("PATCH", "/v1/users/me", u.Token, `not json`).wantError(t, 400)
	if r := e.do("GET", "/v1/users/me", u.Token, nil); r.JSON["full_name"] != "Renamed" {
		t.Fatalf("bad patches changed the user: %s", r.Body)
	}

	if _, err := e.pool.Exec(context.Background(), `INSERT INTO calls (id, tenant_id, call_status, duration_ms, cost_usd) VALUES ('call_x1', $1, 'completed', 120000, 0.5)`, u.TenantID); err != nil {
		t.Fatal(err)
	}
	r = e.do("GET", "/v1/users/me/stats", u.APIKey, nil).wantStatus(t, 200)
	if r.JSON["total_calls"] != float64(1) || r.JSON["completed_calls"] != float64(1) || r.JSON["total_minutes"] != float64(2) ||
		r.JSON["api_keys"] != float64(1) || r.JSON["members"] != float64(1) || r.JSON["total_agents"] != float64(0) {
		t.Fatalf("stats: %s", r.Body)
	}
	r = e.do("GET", "/v1/users/me/usage?days=7", u.Token, nil).wantStatus(t, 200)
	if r.JSON["days"] != float64(7) || r.JSON["total_calls"] != float64(1) || r.JSON["total_cost_usd"] != 0.5 {
		t.Fatalf("usage: %s", r.Body)
	}
	if r := e.do("GET", "/v1/users/me/usage", u.Token, nil).wantStatus(t, 200); r.JSON["days"] != float64(30) {
		t.Fatalf("usage default: %s", r.Body)
	}
	r = e.do("GET", "/v1/users/me/usage/daily?days=3", u.Token, nil).wantStatus(t, 200)
	var daily []map[string]any
	json.Unmarshal(r.Body, &daily)
	if len(daily) != 3 || daily[2]["calls"] != float64(1) || daily[0]["calls"] != float64(0) || daily[2]["date"] != time.Now().UTC().Format("2006-01-02") {
		t.Fatalf("daily: %s", r.Body)
	}
	for _, path := range []string{"/v1/users/me/usage", "/v1/users/me/usage/daily"} {
		for _, q := range []string{"days=0", "days=366", "days=seven", "days=1.5"} {
			e.do("GET", path+"?"+q, u.Token, nil).wantError(t, 422, "days")
		}
	}
	// No token at all.
	for _, path := range []string{"/v1/users/me", "/v1/users/me/stats", "/v1/users/me/branding", "/v1/users/me/tenant/members", "/v1/api-keys"} {
		e.do("GET", path, "", nil).wantError(t, 401)
	}
}

// Strings that break naive SQL, JSON, HTML or templates are stored and returned exactly.
func TestAccountsInjectionStrings(t *testing.T) {
	t.Parallel()
	e := newAcctEnv(t)
	for i, inj := range []string{
		`'; DROP TABLE users; --`,
		`" OR "1"="1`,
		`{"$gt": ""}`,
		`</script><script>alert(1)</script>`,
		`\"\\\n`,
		`{{.Secret}} ${7*7} %s%n`,
		`名前 🎉 ünïcode`,
	} {
		email := fmt.Sprintf("o'brien+%d@example.com", i)
		r := e.do("POST", "/v1/auth/register", "", map[string]any{"email": email, "password": inj + "-pass", "full_name": inj, "company_name": inj}).wantStatus(t, 201)
		if r.JSON["full_name"] != inj || r.JSON["company_name"] != inj || r.JSON["email"] != email {
			t.Fatalf("register %q: %s", inj, r.Body)
		}
		r = e.do("POST", "/v1/auth/login", "", map[string]any{"email": email, "password": inj + "-pass"}).wantStatus(t, 200)
		tok := str(r.JSON["access_token"])
		if r := e.do("GET", "/v1/users/me", tok, nil); r.JSON["full_name"] != inj {
			t.Fatalf("me: %s", r.Body)
		}
		if r := e.do("PATCH", "/v1/users/me", tok, map[string]any{"company_name": inj + inj}).wantStatus(t, 200); r.JSON["company_name"] != inj+inj {
			t.Fatalf("patch: %s", r.Body)
		}
		e.do("POST", "/v1/api-keys", tok, map[string]any{"name": inj}).wantStatus(t, 201)
		r = e.do("GET", "/v1/api-keys", tok, nil).wantStatus(t, 200)
		if k := r.JSON["api_keys"].([]any)[0].(map[string]any); k["name"] != inj {
			t.Fatalf("key name: %s", r.Body)
		}
		if r := e.do("PUT", "/v1/users/me/branding", tok, map[string]any{"app_name": inj}).wantStatus(t, 200); r.JSON["app_name"] != inj {
			t.Fatalf("branding: %s", r.Body)
		}
		if r := e.do("GET", "/v1/users/me/branding", tok, nil); r.JSON["app_name"] != inj {
			t.Fatalf("branding get: %s", r.Body)
		}
		e.do("PATCH", "/v1/api-keys/"+url.PathEscape(inj)+"/revoke", tok, nil).wantError(t, 404)
		e.do("DELETE", "/v1/users/me/tenant/members/"+url.PathEscape(inj), tok, nil).wantError(t, 404)
		e.do("POST", "/v1/users/me/tenant/members", tok, map[string]any{"email": inj}).wantError(t, 404)
	}
	if n := e.count(`SELECT count(*) FROM users`); n != 7 {
		t.Fatalf("%d users", n)
	}
}

func TestAccountsOpenAPI(t *testing.T) {
	t.Parallel()
	e := newAcctEnv(t)
	r := e.do("GET", "/openapi.json", "", nil).wantStatus(t, 200)
	schemas := r.JSON["components"].(map[string]any)["schemas"].(map[string]any)
	for _, name := range []string{"User", "APIKey", "Branding", "Member", "KeyUsage", "accountStats", "registerRequest", "createdKey"} {
		if schemas[name] == nil {
			t.Errorf("OpenAPI lacks schema %s", name)
		}
	}
	paths := r.JSON["paths"].(map[string]any)
	for _, p := range []string{"/v1/users/me/tenant/members/{user_id}", "/v1/branding/{domain}"} {
		if paths[p] == nil {
			t.Errorf("OpenAPI lacks %s", p)
		}
	}
	if post := paths["/v1/auth/register"].(map[string]any)["post"].(map[string]any); post["security"] != nil && fmt.Sprint(post["security"]) != "[]" {
		t.Errorf("register documented as authenticated: %v", post["security"])
	}
}

// A member of no tenant left (removed everywhere) can no longer log in; checked over
// HTTP because the error must still be the generic invalid_credentials.
func TestLoginWithoutMembership(t *testing.T) {
	t.Parallel()
	e := newAcctEnv(t)
	u := e.newUser()
	if _, err := e.pool.Exec(context.Background(), `DELETE FROM members WHERE user_id = $1`, u.UserID); err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/v1/auth/login", "", map[string]any{"email": u.Email, "password": u.Password})
	r.wantError(t, http.StatusUnauthorized)
	if r.JSON["code"] != "invalid_credentials" {
		t.Fatalf("login: %s", r.Body)
	}
}
