package accounts

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/dbtest"
	"github.com/parleyhq/parley/internal/errs"
)

func createKey(t *testing.T, s *Service, p Principal, name string, scopes ...string) (APIKey, string) {
	t.Helper()
	k, secret, err := s.CreateAPIKey(context.Background(), p, CreateKeyInput{Name: name, Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return k, secret
}

func TestAPIKeyCreateAndAuthenticate(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	ctx := context.Background()
	a := register(t, s, "keys")

	k, secret := createKey(t, s, a.p, "default scopes")
	if !strings.HasPrefix(secret, "sk_") || len(secret) != 3+32 || strings.Trim(secret[3:], base62) != "" {
		t.Fatalf("secret %q", secret)
	}
	if k.KeyPrefix != secret[:10] || !slices.Equal(k.Scopes, []string{"*"}) || !k.IsActive || k.UserID != a.user.ID || !strings.HasPrefix(k.ID, "key_") {
		t.Fatalf("key = %+v", k)
	}
	var stored []byte
	var prefix string
	s.pool.QueryRow(ctx, `SELECT key_hash, key_prefix FROM api_keys WHERE id = $1`, k.ID).Scan(&stored, &prefix)
	if string(stored) != string(hashToken(secret)) || strings.Contains(prefix, secret[10:]) {
		t.Fatal("key not stored as its SHA-256")
	}

	p, err := s.Authenticate(ctx, "Bearer "+secret)
	if err != nil {
		t.Fatal(err)
	}
	if p.APIKeyID != k.ID || p.TenantID != a.p.TenantID || p.UserID != a.user.ID || p.Role != RoleOwner || p.SessionID != "" || !slices.Equal(p.Scopes, []string{"*"}) {
		t.Fatalf("principal = %+v", p)
	}
	p.Scopes[0] = "mutated"
	if p2, _ := s.Authenticate(ctx, secret); p2.Scopes[0] != "*" {
		t.Fatal("principal scopes alias the cache")
	}

	// Two keys never collide and their secrets differ in their random part.
	_, secret2 := createKey(t, s, a.p, "second")
	if secret2 == secret {
		t.Fatal("same secret twice")
	}

	// Expiry.
	past := time.Now().Add(-time.Hour)
	_, _, err = s.CreateAPIKey(ctx, a.p, CreateKeyInput{Name: "past", ExpiresAt: &past})
	wantKind(t, err, errs.KindInvalid)
	soon := time.Now().Add(300 * time.Millisecond)
	_, short, err := s.CreateAPIKey(ctx, a.p, CreateKeyInput{Name: "short-lived", ExpiresAt: &soon})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, short); err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "expired key refused", func() bool {
		_, err := s.Authenticate(ctx, short)
		return err != nil
	})
	_, err = s.Authenticate(ctx, short)
	wantIs(t, err, ErrAPIKeyExpired)

	keys, total, err := s.ListAPIKeys(ctx, a.p.TenantID, 0, 0)
	if err != nil || total != 3 || len(keys) != 3 || keys[0].Name != "short-lived" || keys[0].IsActive {
		t.Fatalf("list = %+v, %d, %v", keys, total, err)
	}
	keys, total, _ = s.ListAPIKeys(ctx, a.p.TenantID, 1, 1)
	if total != 3 || len(keys) != 1 || keys[0].Name != "second" {
		t.Fatalf("page 2 = %+v", keys)
	}
}

func TestAPIKeyValidation(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	a := register(t, s, "keyval")
	for _, tt := range []struct {
		name  string
		in    CreateKeyInput
		field string
	}{
		{"no name", CreateKeyInput{}, "name"},
		{"blank name", CreateKeyInput{Name: "   "}, "name"},
		{"long name", CreateKeyInput{Name: strings.Repeat("k", 101)}, "name"},
		{"control char", CreateKeyInput{Name: "a\nb"}, "name"},
		{"unknown scope", CreateKeyInput{Name: "k", Scopes: []string{"agents:delete"}}, "scopes"},
		{"unknown resource", CreateKeyInput{Name: "k", Scopes: []string{"root:*"}}, "scopes"},
		{"bare resource", CreateKeyInput{Name: "k", Scopes: []string{"agents"}}, "scopes"},
		{"injection scope", CreateKeyInput{Name: "k", Scopes: []string{"*'; DROP TABLE api_keys; --"}}, "scopes"},
		{"empty scope", CreateKeyInput{Name: "k", Scopes: []string{""}}, "scopes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := s.CreateAPIKey(context.Background(), a.p, tt.in)
			wantKind(t, err, errs.KindInvalid)
			if e, _ := errs.As(err); e.Fields[tt.field] == "" {
				t.Fatalf("no message for %s: %v", tt.field, e.Fields)
			}
		})
	}
	k, _ := createKey(t, s, a.p, "dedupe", "agents:read", "calls:write", "agents:read")
	if !slices.Equal(k.Scopes, []string{"agents:read", "calls:write"}) {
		t.Fatalf("scopes = %v", k.Scopes)
	}
}

func TestScopes(t *testing.T) {
	t.Parallel()
	if len(ValidScopes()) != 1+3*11 {
		t.Fatalf("%d valid scopes", len(ValidScopes()))
	}
	for _, sc := range ValidScopes() {
		if !ValidScope(sc) {
			t.Errorf("ValidScope(%q) = false", sc)
		}
	}
	key := func(role string, scopes ...string) Principal {
		return Principal{TenantID: "ten_x", Role: role, APIKeyID: "key_x", Scopes: scopes}
	}
	jwtP := func(role string) Principal { return Principal{TenantID: "ten_x", Role: role, SessionID: "ses_x"} }
	tests := []struct {
		name  string
		p     Principal
		scope string
		want  bool
	}{
		{"owner jwt", jwtP(RoleOwner), ScopeAPIKeysWrite, true},
		{"admin jwt", jwtP(RoleAdmin), ScopeUsersWrite, true},
		{"member jwt reads", jwtP(RoleMember), ScopeAPIKeysRead, true},
		{"member jwt writes agents", jwtP(RoleMember), ScopeAgentsWrite, true},
		{"member jwt cannot manage keys", jwtP(RoleMember), ScopeAPIKeysWrite, false},
		{"member jwt cannot manage users", jwtP(RoleMember), ScopeUsersWrite, false},
		{"member jwt cannot spend", jwtP(RoleMember), ScopeWalletWrite, false},
		{"unknown role", jwtP("root"), ScopeAgentsRead, false},
		{"no tenant", Principal{Role: RoleOwner}, ScopeAgentsRead, false},
		{"star key", key(RoleOwner, "*"), ScopeWalletWrite, true},
		{"exact", key(RoleOwner, "agents:read"), ScopeAgentsRead, true},
		{"read does not write", key(RoleOwner, "agents:read"), ScopeAgentsWrite, false},
		{"write implies read", key(RoleOwner, "agents:write"), ScopeAgentsRead, true},
		{"resource star", key(RoleOwner, "calls:*"), ScopeCallsWrite, true},
		{"other resource", key(RoleOwner, "calls:*"), ScopeAgentsRead, false},
		{"no scopes", key(RoleOwner), ScopeAgentsRead, false},
		{"key capped by member role", key(RoleMember, "*"), ScopeAPIKeysWrite, false},
		{"member key reads", key(RoleMember, "*"), ScopeAgentsRead, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Can(tt.scope); got != tt.want {
				t.Fatalf("Can(%q) = %v", tt.scope, got)
			}
			if err := tt.p.Require(tt.scope); (err == nil) != tt.want {
				t.Fatalf("Require(%q) = %v", tt.scope, err)
			}
		})
	}
}

func TestAPIKeyGrantRules(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	ctx := context.Background()
	a := register(t, s, "grant")
	_, limited := createKey(t, s, a.p, "limited", "api_keys:write", "agents:read", "calls:*")
	lp, err := s.Authenticate(ctx, limited)
	if err != nil {
		t.Fatal(err)
	}
	_, readOnly := createKey(t, s, a.p, "read only", "api_keys:read")
	rp, _ := s.Authenticate(ctx, readOnly)

	tests := []struct {
		name   string
		p      Principal
		scopes []string
		kind   errs.Kind // 0: allowed
	}{
		{"subset", lp, []string{"agents:read"}, 0},
		{"resource star it has", lp, []string{"calls:*", "calls:read"}, 0},
		{"default star exceeds", lp, nil, errs.KindForbidden},
		{"star exceeds", lp, []string{"*"}, errs.KindForbidden},
		{"write it lacks", lp, []string{"agents:write"}, errs.KindForbidden},
		{"resource star it lacks", lp, []string{"agents:*"}, errs.KindForbidden},
		{"key without api_keys:write", rp, []string{"api_keys:read"}, errs.KindForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := s.CreateAPIKey(ctx, tt.p, CreateKeyInput{Name: "child", Scopes: tt.scopes})
			if tt.kind == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantKind(t, err, tt.kind)
		})
	}

	// A member may use the product but not manage keys.
	m := register(t, s, "member")
	if _, err := s.AddMember(ctx, a.p, m.email, RoleMember); err != nil {
		t.Fatal(err)
	}
	mp := a.p
	mp.UserID, mp.Role, mp.SessionID = m.user.ID, RoleMember, ""
	_, _, err = s.CreateAPIKey(ctx, mp, CreateKeyInput{Name: "nope"})
	wantKind(t, err, errs.KindForbidden)
	k, _ := createKey(t, s, a.p, "target")
	_, err = s.RevokeAPIKey(ctx, mp, k.ID)
	wantKind(t, err, errs.KindForbidden)
	wantKind(t, s.DeleteAPIKey(ctx, mp, k.ID), errs.KindForbidden)
}

func TestAPIKeyRevokeAcrossProcesses(t *testing.T) {
	t.Parallel()
	url := dbtest.URL(t)
	s := newService(t, openPool(t, url))
	other := newService(t, openPool(t, url)) // simulates another `parley serve` process
	ctx := context.Background()
	a := register(t, s, "revoke")

	for _, action := range []string{"revoke", "delete"} {
		t.Run(action, func(t *testing.T) {
			k, secret := createKey(t, s, a.p, action)
			for _, svc := range []*Service{s, other} {
				if _, err := svc.Authenticate(ctx, secret); err != nil {
					t.Fatal(err)
				}
			}
			h := [32]byte(hashToken(secret))
			if _, ok := other.keys.get(h, time.Now()); !ok {
				t.Fatal("other process did not cache the key")
			}
			switch action {
			case "revoke":
				rk, err := s.RevokeAPIKey(ctx, a.p, k.ID)
				if err != nil || rk.RevokedAt == nil || rk.IsActive {
					t.Fatalf("revoke = %+v, %v", rk, err)
				}
				if _, err := s.RevokeAPIKey(ctx, a.p, k.ID); err != nil {
					t.Fatal("second revoke:", err)
				}
			case "delete":
				if err := s.DeleteAPIKey(ctx, a.p, k.ID); err != nil {
					t.Fatal(err)
				}
				wantIs(t, s.DeleteAPIKey(ctx, a.p, k.ID), ErrAPIKeyNotFound)
			}
			// Same process: at once, no waiting.
			_, err := s.Authenticate(ctx, secret)
			wantKind(t, err, errs.KindUnauthorized)
			// Another process: as soon as the notification arrives.
			took := eventually(t, 2*time.Second, "other process refuses the key", func() bool {
				_, err := other.Authenticate(ctx, secret)
				return err != nil
			})
			t.Logf("%s: other process refused the key after %v", action, took)
			if action == "revoke" {
				_, err := other.Authenticate(ctx, secret)
				wantIs(t, err, ErrAPIKeyRevoked)
			}
		})
	}
}

// TestAPIKeyCacheAndNotify shows that lookups are cached (a change made behind the
// service's back is not seen) and that a notification, not the TTL, ends that.
func TestAPIKeyCacheAndNotify(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	ctx := context.Background()
	a := register(t, s, "cache")
	k, secret := createKey(t, s, a.p, "cached", "agents:read")
	if _, err := s.Authenticate(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `UPDATE api_keys SET scopes = '{calls:read}' WHERE id = $1`, k.ID); err != nil {
		t.Fatal(err)
	}
	p, _ := s.Authenticate(ctx, secret)
	if !slices.Equal(p.Scopes, []string{"agents:read"}) {
		t.Fatalf("not served from cache: %v", p.Scopes)
	}
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify('parley_auth', 'flush')`); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "flush notification", func() bool {
		p, _ := s.Authenticate(ctx, secret)
		return slices.Equal(p.Scopes, []string{"calls:read"})
	})

	// Unknown keys are cached as misses, and stay misses.
	for range 3 {
		_, err := s.Authenticate(ctx, "sk_unknownunknownunknownunknown0000")
		wantIs(t, err, ErrInvalidAPIKey)
	}

	// A Service that is not started (or whose listener is down) does not cache at all.
	cold, err := New(s.pool, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer cold.Stop()
	if _, err := cold.Authenticate(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if cold.keys.len() != 0 {
		t.Fatal("an unstarted service cached a key")
	}
}

// TestListenerReconnect kills the listener's connection: the cache goes off and is
// flushed, so a change made while notifications could not arrive is still seen, and
// the listener comes back by itself.
func TestListenerReconnect(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	ctx := context.Background()
	a := register(t, s, "reconnect")
	k, secret := createKey(t, s, a.p, "k", "agents:read")
	if _, err := s.Authenticate(ctx, secret); err != nil {
		t.Fatal(err)
	}
	// A change with no notification, as if it had been lost.
	if _, err := s.pool.Exec(ctx, `UPDATE api_keys SET revoked_at = now() WHERE id = $1`, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, secret); err != nil {
		t.Fatal("expected the stale cached key before the reconnect:", err)
	}
	var killed int
	if err := s.pool.QueryRow(ctx, `
		SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN parley_auth'`).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminated %d listeners: %v", killed, err)
	}
	eventually(t, 5*time.Second, "revoked key refused after the listener lost its connection", func() bool {
		_, err := s.Authenticate(ctx, secret)
		return err != nil
	})
	eventually(t, 10*time.Second, "listener reconnects", s.listening.Load)
	_, err := s.Authenticate(ctx, secret)
	wantIs(t, err, ErrAPIKeyRevoked)
	// And notifications work again on the new connection.
	k2, secret2 := createKey(t, s, a.p, "k2")
	s.Authenticate(ctx, secret2)
	other := newService(t, s.pool)
	if _, err := other.RevokeAPIKey(ctx, a.p, k2.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "notification after reconnect", func() bool {
		_, err := s.Authenticate(ctx, secret2)
		return err != nil
	})
}

func TestUsageAccounting(t *testing.T) {
	t.Parallel()
	pool := dbtest.Pool(t)
	s := newService(t, pool)
	ctx := context.Background()
	a := register(t, s, "usage")
	k, secret := createKey(t, s, a.p, "counted")
	p, err := s.Authenticate(ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() { s.RecordUse(p, i%10 == 0) })
	}
	wg.Wait()
	s.RecordUse(a.p, false) // a JWT principal is not counted
	if got, _ := s.GetAPIKey(ctx, a.p.TenantID, k.ID); got.LastUsedAt != nil {
		t.Fatal("usage written before a flush: it should be batched")
	}
	if err := s.FlushUsage(ctx); err != nil {
		t.Fatal(err)
	}
	var reqs, errCount int64
	pool.QueryRow(ctx, `SELECT requests, errors FROM api_key_usage WHERE api_key_id = $1`, k.ID).Scan(&reqs, &errCount)
	if reqs != 50 || errCount != 5 {
		t.Fatalf("requests %d errors %d, want 50 and 5", reqs, errCount)
	}
	got, _ := s.GetAPIKey(ctx, a.p.TenantID, k.ID)
	if got.LastUsedAt == nil || time.Since(*got.LastUsedAt) > time.Minute {
		t.Fatalf("last_used_at = %v", got.LastUsedAt)
	}

	// Counts add up across flushes, and APIKeyUsage includes unflushed ones and zero days.
	s.RecordUse(p, true)
	u, err := s.APIKeyUsage(ctx, a.p.TenantID, k.ID, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Daily) != 7 || u.TotalRequests != 51 || u.TotalErrors != 6 || u.LastUsedAt == nil {
		t.Fatalf("usage = %+v", u)
	}
	today := time.Now().UTC().Format("2006-01-02")
	if last := u.Daily[6]; last.Date != today || last.Requests != 51 {
		t.Fatalf("today = %+v", last)
	}
	for _, d := range u.Daily[:6] {
		if d.Requests != 0 {
			t.Fatalf("zero day = %+v", d)
		}
	}
	for _, days := range []int{0, -1, 366} {
		_, err := s.APIKeyUsage(ctx, a.p.TenantID, k.ID, days)
		wantKind(t, err, errs.KindInvalid)
	}

	// Counts of a key deleted before the flush are dropped, not an error.
	k2, secret2 := createKey(t, s, a.p, "deleted")
	p2, _ := s.Authenticate(ctx, secret2)
	s.RecordUse(p2, false)
	s.RecordUse(p, false)
	if err := s.DeleteAPIKey(ctx, a.p, k2.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.FlushUsage(ctx); err != nil {
		t.Fatal("flush with a deleted key:", err)
	}

	// Stop flushes what is pending: nothing is lost on shutdown.
	s2, err := New(pool, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for range 7 {
		s2.RecordUse(p, false)
	}
	s2.Stop()
	s2.Stop() // twice is fine
	pool.QueryRow(ctx, `SELECT requests FROM api_key_usage WHERE api_key_id = $1`, k.ID).Scan(&reqs)
	if reqs != 59 {
		t.Fatalf("requests after Stop = %d, want 59", reqs)
	}
	if err := s2.Start(ctx); err == nil {
		t.Fatal("Start after Stop succeeded")
	}
}

func TestUsageFlushesPeriodically(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t), func(c *Config) { c.UsageFlushInterval = 50 * time.Millisecond })
	ctx := context.Background()
	a := register(t, s, "periodic")
	k, secret := createKey(t, s, a.p, "k")
	p, _ := s.Authenticate(ctx, secret)
	s.RecordUse(p, false)
	eventually(t, 3*time.Second, "background flush", func() bool {
		got, _ := s.GetAPIKey(ctx, a.p.TenantID, k.ID)
		return got.LastUsedAt != nil
	})
}

func TestAPIKeysCrossTenant(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	ctx := context.Background()
	a, b := register(t, s, "tenant-a"), register(t, s, "tenant-b")
	k, secret := createKey(t, s, a.p, "a's key")

	_, err := s.GetAPIKey(ctx, b.p.TenantID, k.ID)
	wantIs(t, err, ErrAPIKeyNotFound)
	_, err = s.RevokeAPIKey(ctx, b.p, k.ID)
	wantIs(t, err, ErrAPIKeyNotFound)
	wantIs(t, s.DeleteAPIKey(ctx, b.p, k.ID), ErrAPIKeyNotFound)
	_, err = s.APIKeyUsage(ctx, b.p.TenantID, k.ID, 30)
	wantIs(t, err, ErrAPIKeyNotFound)
	wantKind(t, err, errs.KindNotFound)
	if keys, total, _ := s.ListAPIKeys(ctx, b.p.TenantID, 100, 0); total != 0 || len(keys) != 0 {
		t.Fatalf("b sees %d keys", total)
	}
	if _, err := s.Authenticate(ctx, secret); err != nil {
		t.Fatal("a's key was harmed:", err)
	}
	for _, id := range []string{"", "key_nope", "' OR '1'='1"} {
		_, err := s.GetAPIKey(ctx, a.p.TenantID, id)
		wantIs(t, err, ErrAPIKeyNotFound)
	}
}

// BenchmarkAuthenticateAPIKey measures the hot path: a cached key lookup plus usage
// counting, as every API-key request does.
func BenchmarkAuthenticateAPIKey(b *testing.B) {
	pool := dbtest.Pool(b)
	s, err := New(pool, testConfig())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	u, err := s.Register(ctx, RegisterInput{Email: "bench@example.com", Password: "benchmark-pass"})
	if err != nil {
		b.Fatal(err)
	}
	owner := Principal{TenantID: u.TenantID, UserID: u.ID, Role: RoleOwner, SessionID: "s"}
	_, secret, err := s.CreateAPIKey(ctx, owner, CreateKeyInput{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p, err := s.Authenticate(ctx, "Bearer "+secret)
			if err != nil {
				b.Error(err)
				return
			}
			s.RecordUse(p, false)
		}
	})
}
