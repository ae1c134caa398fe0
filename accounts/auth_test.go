package accounts

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleyhq/parley/internal/dbtest"
	"github.com/parleyhq/parley/internal/errs"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	pool := dbtest.Pool(t)
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{JWTSecret: testSecret}, true},
		{"no secret", Config{}, false},
		{"short secret", Config{JWTSecret: []byte("0123456789abcdef0123456789abcde")}, false},
		{"access not shorter than refresh", Config{JWTSecret: testSecret, AccessTTL: time.Hour, RefreshTTL: time.Hour}, false},
		{"negative ttl", Config{JWTSecret: testSecret, CacheTTL: -time.Second}, false},
		{"bad argon2", Config{JWTSecret: testSecret, Password: PasswordParams{Memory: 1, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(pool, tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("New: err = %v, want ok=%v", err, tt.ok)
			}
			if err == nil {
				defer s.Stop()
				c := s.cfg
				if c.Issuer != "parley" || c.AccessTTL != 15*time.Minute || c.RefreshTTL != 30*24*time.Hour ||
					c.CacheTTL != time.Minute || c.UsageFlushInterval != 2*time.Second || c.Password != DefaultPasswordParams() {
					t.Fatalf("defaults not applied: %+v", c)
				}
			}
		})
	}
	if _, err := New(nil, Config{JWTSecret: testSecret}); err == nil {
		t.Fatal("New(nil pool) succeeded")
	}
}

func TestPasswordHash(t *testing.T) {
	t.Parallel()
	s := &Service{cfg: Config{Password: DefaultPasswordParams()}, hashSem: make(chan struct{}, 2)}
	ctx := context.Background()
	h, err := s.hashPassword(ctx, "pässwörd with ünïcode")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=47104,t=1,p=1$") {
		t.Fatalf("not a PHC argon2id string with the default parameters: %s", h)
	}
	if h2, _ := s.hashPassword(ctx, "pässwörd with ünïcode"); h2 == h {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
	for _, tt := range []struct {
		pw     string
		hash   string
		ok     bool
		stale  bool
		badPHC bool
	}{
		{pw: "pässwörd with ünïcode", hash: h, ok: true},
		{pw: "pässwörd with ünïcodE", hash: h},
		{pw: "", hash: h},
		{pw: "x", hash: hashPHC("x", cheapPasswords), ok: true, stale: true},
		{pw: "x", hash: "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", badPHC: true},
		{pw: "x", hash: "$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", badPHC: true},
		{pw: "x", hash: "plaintext", badPHC: true},
		{pw: "x", hash: "", badPHC: true},
	} {
		ok, stale, err := s.verifyPassword(ctx, tt.pw, tt.hash)
		if (err != nil) != tt.badPHC || ok != tt.ok || (tt.ok && stale != tt.stale) {
			t.Errorf("verify(%q, %q) = %v, %v, %v", tt.pw, tt.hash, ok, stale, err)
		}
	}
}

func TestRegisterValidation(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	ctx := context.Background()
	long := strings.Repeat("a", 201)
	tests := []struct {
		name   string
		in     RegisterInput
		fields []string
	}{
		{"empty", RegisterInput{}, []string{"email", "password"}},
		{"bad email", RegisterInput{Email: "not-an-email", Password: "longenough"}, []string{"email"}},
		{"display name form", RegisterInput{Email: "Bob <bob@example.com>", Password: "longenough"}, []string{"email"}},
		{"no dot in domain", RegisterInput{Email: "bob@localhost", Password: "longenough"}, []string{"email"}},
		{"email too long", RegisterInput{Email: strings.Repeat("a", 250) + "@example.com", Password: "longenough"}, []string{"email"}},
		{"short password", RegisterInput{Email: "a@example.com", Password: "1234567"}, []string{"password"}},
		{"long password", RegisterInput{Email: "a@example.com", Password: strings.Repeat("p", 257)}, []string{"password"}},
		{"long name", RegisterInput{Email: "a@example.com", Password: "longenough", FullName: long}, []string{"full_name"}},
		{"NUL in company", RegisterInput{Email: "a@example.com", Password: "longenough", CompanyName: "a\x00b"}, []string{"company_name"}},
		{"invalid utf-8", RegisterInput{Email: "a@example.com", Password: "longenough", FullName: "\xff\xfe"}, []string{"full_name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Register(ctx, tt.in)
			wantKind(t, err, errs.KindInvalid)
			e, _ := errs.As(err)
			for _, f := range tt.fields {
				if _, ok := e.Fields[f]; !ok {
					t.Errorf("no message for %s in %v", f, e.Fields)
				}
			}
		})
	}
	// Exactly at the limits is fine.
	if _, err := s.Register(ctx, RegisterInput{Email: "limits@example.com", Password: strings.Repeat("é", 256), FullName: strings.Repeat("n", 200)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Register(ctx, RegisterInput{Email: "short@example.com", Password: "12345678"}); err != nil {
		t.Fatal(err)
	}
	var n int
	s.pool.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&n)
	if n != 2 {
		t.Fatalf("%d users after invalid registrations, want 2", n)
	}
}

func TestRegisterAndLogin(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	ctx := context.Background()
	u, err := s.Register(ctx, RegisterInput{Email: "Alice@Example.com", Password: "s3cret-pass", FullName: "Alice", CompanyName: "Acme"})
	if err != nil {
		t.Fatal(err)
	}
	if u.Role != RoleOwner || u.TenantID == "" || !strings.HasPrefix(u.ID, "usr_") || u.Email != "Alice@Example.com" {
		t.Fatalf("user = %+v", u)
	}
	var tenantName, role string
	s.pool.QueryRow(ctx, `SELECT t.name, m.role FROM tenants t JOIN members m ON m.tenant_id = t.id WHERE m.user_id = $1`, u.ID).Scan(&tenantName, &role)
	if tenantName != "Acme" || role != "owner" {
		t.Fatalf("tenant %q, role %q", tenantName, role)
	}

	t.Run("duplicate email in any case", func(t *testing.T) {
		_, err := s.Register(ctx, RegisterInput{Email: "alice@EXAMPLE.com", Password: "another-pass"})
		wantKind(t, err, errs.KindConflict)
		wantIs(t, err, ErrEmailTaken)
	})

	t.Run("login", func(t *testing.T) {
		pair, lu, err := s.Login(ctx, " alice@example.COM ", "s3cret-pass")
		if err != nil {
			t.Fatal(err)
		}
		if pair.TokenType != "bearer" || pair.ExpiresIn != 900 || pair.AccessToken == "" || !strings.HasPrefix(pair.RefreshToken, "rt_") {
			t.Fatalf("pair = %+v", pair)
		}
		if lu.ID != u.ID || lu.Role != RoleOwner {
			t.Fatalf("login user = %+v", lu)
		}
		// The refresh token has 256 random bits and only its SHA-256 is stored.
		raw, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(pair.RefreshToken, "rt_"))
		if len(raw) != 32 {
			t.Fatalf("refresh token carries %d bytes", len(raw))
		}
		var stored int
		s.pool.QueryRow(ctx, `SELECT count(*) FROM refresh_tokens WHERE token_hash = $1`, hashToken(pair.RefreshToken)).Scan(&stored)
		if stored != 1 {
			t.Fatal("refresh token hash not stored")
		}
		p, err := s.Authenticate(ctx, "Bearer "+pair.AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		if p.UserID != u.ID || p.TenantID != u.TenantID || p.Role != RoleOwner || p.SessionID == "" || p.APIKeyID != "" || p.Email != u.Email {
			t.Fatalf("principal = %+v", p)
		}
		if !p.Can(ScopeAPIKeysWrite) || !p.Can(ScopeAgentsWrite) {
			t.Fatal("owner JWT cannot do everything")
		}
	})

	for _, tt := range []struct{ name, email, pass string }{
		{"wrong password", "alice@example.com", "s3cret-pasS"},
		{"unknown email", "nobody@example.com", "s3cret-pass"},
		{"empty", "", ""},
		{"huge password", "alice@example.com", strings.Repeat("x", 10000)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := s.Login(ctx, tt.email, tt.pass)
			wantKind(t, err, errs.KindUnauthorized)
			wantIs(t, err, ErrInvalidCredentials)
		})
	}
}

// TestLoginUnknownEmailDoesHashWork checks the defence against user enumeration by
// timing: a login for an unknown email runs the same argon2 work as a wrong password.
func TestLoginUnknownEmailDoesHashWork(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t), func(c *Config) {
		c.Password = PasswordParams{Memory: 16 * 1024, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}
	})
	ctx := context.Background()
	a := register(t, s, "timing")
	measure := func(email string) time.Duration {
		best := time.Hour
		for range 3 {
			start := time.Now()
			s.Login(ctx, email, "wrong password")
			best = min(best, time.Since(start))
		}
		return best
	}
	known, unknown := measure(a.email), measure("nobody-here@example.com")
	if unknown < known/3 {
		t.Fatalf("unknown email took %v, a known one %v: no dummy hash?", unknown, known)
	}
	p, _, _, err := parsePHC(s.dummyHash)
	if err != nil || p.Memory != s.cfg.Password.Memory || p.Time != s.cfg.Password.Time {
		t.Fatalf("dummy hash %q does not use the configured parameters", s.dummyHash)
	}
}

func TestLoginUpgradesStaleHash(t *testing.T) {
	t.Parallel()
	pool := dbtest.Pool(t)
	old := newService(t, pool)
	a := register(t, old, "upgrade")
	stronger := PasswordParams{Memory: 128, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}
	s := newService(t, pool, func(c *Config) { c.Password = stronger })
	if _, _, err := s.Login(context.Background(), a.email, a.pass); err != nil {
		t.Fatal(err)
	}
	var h string
	pool.QueryRow(context.Background(), `SELECT password_hash FROM users WHERE id = $1`, a.user.ID).Scan(&h)
	if !strings.Contains(h, "m=128,t=2,p=1") {
		t.Fatalf("hash not upgraded: %s", h)
	}
	if _, _, err := s.Login(context.Background(), a.email, a.pass); err != nil {
		t.Fatal("login after upgrade:", err)
	}
}

func TestRefreshRotationAndReuse(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	ctx := context.Background()
	a := register(t, s, "rotate")

	p1, err := s.Refresh(ctx, a.pair.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	if p1.RefreshToken == a.pair.RefreshToken || p1.AccessToken == a.pair.AccessToken {
		t.Fatal("refresh did not rotate")
	}
	pr, err := s.Authenticate(ctx, p1.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if pr.SessionID != a.p.SessionID {
		t.Fatal("refresh opened a new session")
	}
	p2, err := s.Refresh(ctx, p1.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}

	// The first token again: theft. Refused, and the whole session dies with it.
	_, err = s.Refresh(ctx, a.pair.RefreshToken)
	wantKind(t, err, errs.KindUnauthorized)
	wantIs(t, err, ErrRefreshTokenReused)
	var reason string
	s.pool.QueryRow(ctx, `SELECT revoke_reason FROM auth_sessions WHERE id = $1`, a.p.SessionID).Scan(&reason)
	if reason != "refresh_token_reuse" {
		t.Fatalf("revoke_reason = %q", reason)
	}
	_, err = s.Refresh(ctx, p2.RefreshToken)
	wantIs(t, err, ErrInvalidRefreshToken)
	for _, tok := range []string{a.pair.AccessToken, p1.AccessToken, p2.AccessToken} {
		_, err := s.Authenticate(ctx, tok)
		wantIs(t, err, ErrSessionRevoked)
	}

	// Other sessions of the same user are untouched.
	b := login(t, s, a.email, a.pass, a.user)
	if _, err := s.Refresh(ctx, b.pair.RefreshToken); err != nil {
		t.Fatal(err)
	}

	for _, tok := range []string{"", "rt_unknown", strings.Repeat("x", 600)} {
		_, err := s.Refresh(ctx, tok)
		wantIs(t, err, ErrInvalidRefreshToken)
	}
}

func TestConcurrentRefreshIsReuse(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	a := register(t, s, "race")
	var wg sync.WaitGroup
	results := make([]error, 4)
	for i := range results {
		wg.Go(func() {
			_, results[i] = s.Refresh(context.Background(), a.pair.RefreshToken)
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range results {
		if err == nil {
			ok++
		} else {
			wantKind(t, err, errs.KindUnauthorized)
		}
	}
	if ok > 1 {
		t.Fatalf("%d concurrent refreshes of one token succeeded", ok)
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	url := dbtest.URL(t)
	s := newService(t, openPool(t, url))
	other := newService(t, openPool(t, url)) // another process on the same database
	ctx := context.Background()
	a := register(t, s, "logout")
	b := login(t, s, a.email, a.pass, a.user) // a second session of the same user

	if _, err := other.Authenticate(ctx, a.pair.AccessToken); err != nil {
		t.Fatal(err) // now cached in the other process too
	}
	if err := s.Logout(ctx, a.p, ""); err != nil {
		t.Fatal(err)
	}
	_, err := s.Authenticate(ctx, a.pair.AccessToken)
	wantIs(t, err, ErrSessionRevoked)
	took := eventually(t, 2*time.Second, "other process refuses the logged-out token", func() bool {
		_, err := other.Authenticate(ctx, a.pair.AccessToken)
		return err != nil
	})
	t.Logf("other process refused the token after %v", took)
	_, err = s.Refresh(ctx, a.pair.RefreshToken)
	wantIs(t, err, ErrInvalidRefreshToken)

	// The other session lives until it is named by its refresh token.
	if _, err := s.Authenticate(ctx, b.pair.AccessToken); err != nil {
		t.Fatal(err)
	}
	if err := s.Logout(ctx, a.p, b.pair.RefreshToken); err != nil { // a.p's session is already gone: fine
		t.Fatal(err)
	}
	_, err = s.Authenticate(ctx, b.pair.AccessToken)
	wantIs(t, err, ErrSessionRevoked)

	// Someone else's refresh token is not ours to revoke.
	c := register(t, s, "bystander")
	if err := s.Logout(ctx, a.p, c.pair.RefreshToken); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, c.pair.AccessToken); err != nil {
		t.Fatal("bystander logged out:", err)
	}
}

func TestExpiredSession(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	ctx := context.Background()
	a := register(t, s, "expire")
	if _, err := s.pool.Exec(ctx, `UPDATE auth_sessions SET expires_at = now() - interval '1 second' WHERE id = $1`, a.p.SessionID); err != nil {
		t.Fatal(err)
	}
	s.flushCaches() // the row was changed behind the service's back
	_, err := s.Refresh(ctx, a.pair.RefreshToken)
	wantIs(t, err, ErrInvalidRefreshToken)
	_, err = s.Authenticate(ctx, a.pair.AccessToken)
	wantIs(t, err, ErrSessionRevoked)

	n, err := s.PurgeExpired(ctx)
	if err != nil || n != 1 {
		t.Fatalf("PurgeExpired = %d, %v", n, err)
	}
	var left int
	s.pool.QueryRow(ctx, `SELECT count(*) FROM refresh_tokens WHERE session_id = $1`, a.p.SessionID).Scan(&left)
	if left != 0 {
		t.Fatal("refresh tokens of the purged session remain")
	}
	if n, _ := s.PurgeExpired(ctx); n != 0 {
		t.Fatalf("second purge removed %d", n)
	}
}

func TestBadAccessTokens(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	ctx := context.Background()
	a := register(t, s, "forge")
	now := time.Now()
	claims := func(mod func(*accessClaims)) *accessClaims {
		c := &accessClaims{TenantID: a.p.TenantID, SessionID: a.p.SessionID, Role: RoleOwner,
			RegisteredClaims: jwt.RegisteredClaims{Subject: a.p.UserID, Issuer: "parley",
				IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))}}
		if mod != nil {
			mod(c)
		}
		return c
	}
	sign := func(m jwt.SigningMethod, key any, c *accessClaims) string {
		tok, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	// A control: a token made like the forgeries but correctly is accepted.
	if _, err := s.Authenticate(ctx, sign(jwt.SigningMethodHS256, testSecret, claims(nil))); err != nil {
		t.Fatal("control token refused:", err)
	}
	valid := a.pair.AccessToken
	parts := strings.Split(valid, ".")
	b64 := base64.RawURLEncoding
	tampered := parts[0] + "." + b64.EncodeToString([]byte(`{"sub":"usr_other","tid":"`+a.p.TenantID+`","sid":"`+a.p.SessionID+`","iss":"parley","exp":9999999999}`)) + "." + parts[2]
	noneHeader := b64.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))

	tests := map[string]string{
		"alg none":                 sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil)),
		"alg none by hand":         noneHeader + "." + parts[1] + ".",
		"RS256 signed":             sign(jwt.SigningMethodRS256, rsaKey, claims(nil)),
		"HS256 with public key":    sign(jwt.SigningMethodHS256, pubPEM, claims(nil)),
		"HS384 with the secret":    sign(jwt.SigningMethodHS384, testSecret, claims(nil)),
		"wrong secret":             sign(jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), claims(nil)),
		"expired":                  sign(jwt.SigningMethodHS256, testSecret, claims(func(c *accessClaims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Minute)) })),
		"no expiry":                sign(jwt.SigningMethodHS256, testSecret, claims(func(c *accessClaims) { c.ExpiresAt = nil })),
		"issued in the future":     sign(jwt.SigningMethodHS256, testSecret, claims(func(c *accessClaims) { c.IssuedAt = jwt.NewNumericDate(now.Add(time.Hour)) })),
		"wrong issuer":             sign(jwt.SigningMethodHS256, testSecret, claims(func(c *accessClaims) { c.Issuer = "evil" })),
		"no issuer":                sign(jwt.SigningMethodHS256, testSecret, claims(func(c *accessClaims) { c.Issuer = "" })),
		"other user's session":     sign(jwt.SigningMethodHS256, testSecret, claims(func(c *accessClaims) { c.Subject = "usr_someoneelse" })),
		"other tenant":             sign(jwt.SigningMethodHS256, testSecret, claims(func(c *accessClaims) { c.TenantID = "ten_other" })),
		"unknown session":          sign(jwt.SigningMethodHS256, testSecret, claims(func(c *accessClaims) { c.SessionID = "ses_nope" })),
		"missing session claim":    sign(jwt.SigningMethodHS256, testSecret, claims(func(c *accessClaims) { c.SessionID = "" })),
		"tampered payload":         tampered,
		"signature stripped":       parts[0] + "." + parts[1] + ".",
		"garbage":                  "not.a.jwt",
		"huge":                     strings.Repeat("a", 5000),
		"bearer with nothing":      "Bearer ",
		"empty":                    "",
		"unknown api key":          "sk_doesnotexist",
		"api key lookalike spaces": "sk_ ' OR 1=1 --",
	}
	for name, tok := range tests {
		t.Run(name, func(t *testing.T) {
			p, err := s.Authenticate(ctx, tok)
			wantKind(t, err, errs.KindUnauthorized)
			if p.TenantID != "" {
				t.Fatalf("principal returned with error: %+v", p)
			}
		})
	}
}
