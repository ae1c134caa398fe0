package accounts

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/dbtest"
	"github.com/parleyhq/parley/internal/errs"
)

func TestMembers(t *testing.T) {
	t.Parallel()
	url := dbtest.URL(t)
	s := newService(t, openPool(t, url))
	other := newService(t, openPool(t, url))
	ctx := context.Background()
	owner := register(t, s, "owner")
	adm, mem := register(t, s, "admin"), register(t, s, "member")

	for _, tt := range []struct {
		name  string
		email string
		role  string
		err   error
		kind  errs.Kind
	}{
		{"bad role", adm.email, "superuser", nil, errs.KindInvalid},
		{"unknown user", "ghost@example.com", RoleMember, ErrUserNotFound, errs.KindNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.AddMember(ctx, owner.p, tt.email, tt.role)
			wantKind(t, err, tt.kind)
			if tt.err != nil {
				wantIs(t, err, tt.err)
			}
		})
	}
	if _, err := s.AddMember(ctx, owner.p, strings.ToUpper(adm.email), RoleAdmin); err != nil {
		t.Fatal(err)
	}
	_, err := s.AddMember(ctx, owner.p, adm.email, RoleAdmin)
	wantIs(t, err, ErrAlreadyMember)
	m, err := s.AddMember(ctx, owner.p, mem.email, RoleMember)
	if err != nil || m.Role != RoleMember || m.UserID != mem.user.ID || m.Email != mem.email {
		t.Fatalf("AddMember = %+v, %v", m, err)
	}
	ms, total, err := s.ListMembers(ctx, owner.p.TenantID, 0, 0)
	if err != nil || total != 3 || len(ms) != 3 || ms[0].UserID != owner.user.ID || ms[0].Role != RoleOwner {
		t.Fatalf("ListMembers = %+v, %d, %v", ms, total, err)
	}
	if ms, total, _ := s.ListMembers(ctx, owner.p.TenantID, 1, 2); total != 3 || len(ms) != 1 || ms[0].UserID != mem.user.ID {
		t.Fatalf("page = %+v", ms)
	}

	// Principals acting in owner's tenant.
	inTenant := func(a account, role string) Principal {
		return Principal{TenantID: owner.p.TenantID, UserID: a.user.ID, Email: a.email, Role: role, SessionID: "ses_x"}
	}
	admP, memP := inTenant(adm, RoleAdmin), inTenant(mem, RoleMember)

	_, err = s.AddMember(ctx, memP, "x@example.com", RoleMember)
	wantKind(t, err, errs.KindForbidden)
	_, err = s.UpdateMemberRole(ctx, memP, adm.user.ID, RoleMember)
	wantKind(t, err, errs.KindForbidden)
	_, err = s.UpdateMemberRole(ctx, admP, owner.user.ID, RoleMember)
	wantKind(t, err, errs.KindForbidden) // admins cannot touch owners
	_, err = s.UpdateMemberRole(ctx, admP, mem.user.ID, RoleOwner)
	wantKind(t, err, errs.KindForbidden) // nor make them
	wantKind(t, s.RemoveMember(ctx, admP, owner.user.ID), errs.KindForbidden)
	_, err = s.UpdateMemberRole(ctx, owner.p, owner.user.ID, RoleAdmin)
	wantIs(t, err, ErrLastOwner)
	wantIs(t, s.RemoveMember(ctx, owner.p, owner.user.ID), ErrLastOwner)
	_, err = s.UpdateMemberRole(ctx, owner.p, "usr_nobody", RoleAdmin)
	wantIs(t, err, ErrMemberNotFound)

	// The member works with a key and a session in owner's tenant; demotion and
	// removal take effect at once, here and in the other process.
	if _, err := s.UpdateMemberRole(ctx, owner.p, mem.user.ID, RoleAdmin); err != nil {
		t.Fatal(err)
	}
	memAdmin := inTenant(mem, RoleAdmin)
	_, secret := createKey(t, s, memAdmin, "member's key")
	for _, svc := range []*Service{s, other} {
		p, err := svc.Authenticate(ctx, secret)
		if err != nil || p.Role != RoleAdmin || !p.Can(ScopeAPIKeysWrite) {
			t.Fatalf("before demotion: %+v, %v", p, err)
		}
	}
	if _, err := s.UpdateMemberRole(ctx, admP, mem.user.ID, RoleMember); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.Authenticate(ctx, secret); p.Role != RoleMember || p.Can(ScopeAPIKeysWrite) {
		t.Fatalf("after demotion, same process: %+v", p)
	}
	eventually(t, 2*time.Second, "other process sees the demotion", func() bool {
		p, _ := other.Authenticate(ctx, secret)
		return p.Role == RoleMember
	})
	if err := s.RemoveMember(ctx, admP, mem.user.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.Authenticate(ctx, secret)
	wantIs(t, err, ErrInvalidAPIKey)
	eventually(t, 2*time.Second, "other process refuses the removed member's key", func() bool {
		_, err := other.Authenticate(ctx, secret)
		return err != nil
	})
	wantIs(t, s.RemoveMember(ctx, owner.p, mem.user.ID), ErrMemberNotFound)

	// A second owner makes the first removable.
	if _, err := s.UpdateMemberRole(ctx, owner.p, adm.user.ID, RoleOwner); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateMemberRole(ctx, owner.p, owner.user.ID, RoleAdmin); err != nil {
		t.Fatal(err)
	}
}

func TestLastOwnerUnderConcurrency(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	ctx := context.Background()
	a, b := register(t, s, "co-owner-a"), register(t, s, "co-owner-b")
	if _, err := s.AddMember(ctx, a.p, b.email, RoleOwner); err != nil {
		t.Fatal(err)
	}
	bp := Principal{TenantID: a.p.TenantID, UserID: b.user.ID, Role: RoleOwner, SessionID: "ses_x"}
	var wg sync.WaitGroup
	wg.Go(func() { s.UpdateMemberRole(ctx, a.p, b.user.ID, RoleMember) })
	wg.Go(func() { s.UpdateMemberRole(ctx, bp, a.user.ID, RoleMember) })
	wg.Wait()
	var owners int
	s.pool.QueryRow(ctx, `SELECT count(*) FROM members WHERE tenant_id = $1 AND role = 'owner'`, a.p.TenantID).Scan(&owners)
	if owners != 1 {
		t.Fatalf("%d owners left", owners)
	}
}

func TestMembersCrossTenant(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	ctx := context.Background()
	a, b := register(t, s, "cross-a"), register(t, s, "cross-b")
	_, err := s.UpdateMemberRole(ctx, b.p, a.user.ID, RoleMember)
	wantIs(t, err, ErrMemberNotFound)
	wantKind(t, s.RemoveMember(ctx, b.p, a.user.ID), errs.KindNotFound)
	_, err = s.GetUser(ctx, b.p.TenantID, a.user.ID)
	wantIs(t, err, ErrUserNotFound)
	if ms, total, _ := s.ListMembers(ctx, b.p.TenantID, 100, 0); total != 1 || ms[0].UserID != b.user.ID {
		t.Fatalf("b's members = %+v", ms)
	}
	if u, err := s.GetUser(ctx, a.p.TenantID, a.user.ID); err != nil || u.Role != RoleOwner {
		t.Fatalf("a intact: %+v %v", u, err)
	}
}

func TestUpdateUser(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	ctx := context.Background()
	a := register(t, s, "profile")
	name, company := "New Name", ""
	u, err := s.UpdateUser(ctx, a.p, UserPatch{FullName: &name, CompanyName: &company})
	if err != nil || u.FullName != name || u.CompanyName != "" || !u.UpdatedAt.After(a.user.UpdatedAt) {
		t.Fatalf("UpdateUser = %+v, %v", u, err)
	}
	u, err = s.UpdateUser(ctx, a.p, UserPatch{})
	if err != nil || u.FullName != name {
		t.Fatalf("empty patch = %+v, %v", u, err)
	}
	long := strings.Repeat("x", 201)
	_, err = s.UpdateUser(ctx, a.p, UserPatch{FullName: &long})
	wantKind(t, err, errs.KindInvalid)
	ctl := "tab\tname"
	_, err = s.UpdateUser(ctx, a.p, UserPatch{CompanyName: &ctl})
	wantKind(t, err, errs.KindInvalid)

	_, readKey := createKey(t, s, a.p, "read", "users:read")
	rp, _ := s.Authenticate(ctx, readKey)
	_, err = s.UpdateUser(ctx, rp, UserPatch{FullName: &name})
	wantKind(t, err, errs.KindForbidden)
	_, writeKey := createKey(t, s, a.p, "write", "users:write")
	wp, _ := s.Authenticate(ctx, writeKey)
	if _, err := s.UpdateUser(ctx, wp, UserPatch{FullName: &name}); err != nil {
		t.Fatal(err)
	}
	stranger := Principal{TenantID: "ten_other", UserID: a.user.ID, Role: RoleOwner, SessionID: "s"}
	_, err = s.UpdateUser(ctx, stranger, UserPatch{FullName: &name})
	wantIs(t, err, ErrUserNotFound)
}

func TestBranding(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	ctx := context.Background()
	a, b := register(t, s, "brand-a"), register(t, s, "brand-b")

	if br, err := s.GetBranding(ctx, a.p.TenantID); err != nil || br != (Branding{}) {
		t.Fatalf("initial = %+v, %v", br, err)
	}
	want := Branding{AppName: "Acme Voice", PrimaryColor: "#1a2B3c", LogoURL: "https://cdn.example.com/logo.png?v=1", Domain: "Voice.Acme.Example."}
	got, err := s.SetBranding(ctx, a.p, want)
	if err != nil {
		t.Fatal(err)
	}
	want.Domain = "voice.acme.example"
	if got != want {
		t.Fatalf("SetBranding = %+v", got)
	}
	if got, _ := s.GetBranding(ctx, a.p.TenantID); got != want {
		t.Fatalf("GetBranding = %+v", got)
	}
	for _, d := range []string{"voice.acme.example", "VOICE.ACME.EXAMPLE"} {
		if got, err := s.BrandingByDomain(ctx, d); err != nil || got != want {
			t.Fatalf("BrandingByDomain(%q) = %+v, %v", d, got, err)
		}
	}
	for _, d := range []string{"unknown.example", "", "not a domain", "' OR '1'='1"} {
		_, err := s.BrandingByDomain(ctx, d)
		wantIs(t, err, ErrBrandingNotFound)
	}

	_, err = s.SetBranding(ctx, b.p, Branding{Domain: "voice.acme.example"})
	wantIs(t, err, ErrDomainTaken)
	if e, _ := errs.As(err); strings.Contains(e.Detail, a.p.TenantID) || strings.Contains(err.Error(), a.p.TenantID) {
		t.Fatal("conflict names the other tenant")
	}

	for _, tt := range []struct {
		name  string
		b     Branding
		field string
	}{
		{"short color", Branding{PrimaryColor: "#fff"}, "primary_color"},
		{"named color", Branding{PrimaryColor: "red"}, "primary_color"},
		{"javascript logo", Branding{LogoURL: "javascript:alert(1)"}, "logo_url"},
		{"relative logo", Branding{LogoURL: "/logo.png"}, "logo_url"},
		{"ftp logo", Branding{LogoURL: "ftp://example.com/l.png"}, "logo_url"},
		{"credentials in logo", Branding{LogoURL: "https://u:p@example.com/l.png"}, "logo_url"},
		{"domain with scheme", Branding{Domain: "https://acme.example"}, "domain"},
		{"domain with path", Branding{Domain: "acme.example/x"}, "domain"},
		{"single label", Branding{Domain: "localhost"}, "domain"},
		{"underscore", Branding{Domain: "a_b.example"}, "domain"},
		{"long app name", Branding{AppName: strings.Repeat("a", 101)}, "app_name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.SetBranding(ctx, a.p, tt.b)
			wantKind(t, err, errs.KindInvalid)
			if e, _ := errs.As(err); e.Fields[tt.field] == "" {
				t.Fatalf("no message for %s: %v", tt.field, e.Fields)
			}
		})
	}
	if got, _ := s.GetBranding(ctx, a.p.TenantID); got != want {
		t.Fatal("invalid input changed the branding")
	}

	mp := Principal{TenantID: a.p.TenantID, UserID: b.user.ID, Role: RoleMember, SessionID: "s"}
	_, err = s.SetBranding(ctx, mp, Branding{AppName: "x"})
	wantKind(t, err, errs.KindForbidden)

	// Clearing the domain frees it.
	if _, err := s.SetBranding(ctx, a.p, Branding{AppName: "Acme"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetBranding(ctx, b.p, Branding{Domain: "voice.acme.example"}); err != nil {
		t.Fatal(err)
	}
}

func TestStatsAndUsage(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	ctx := context.Background()
	a, b := register(t, s, "stats-a"), register(t, s, "stats-b")
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := s.pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	for _, ten := range []string{a.p.TenantID, b.p.TenantID} {
		exec(`INSERT INTO agents (id, tenant_id, name, status) VALUES ($1||'1', $2, 'one', 'active'), ($1||'2', $2, 'two', 'inactive')`, "agent_"+ten, ten)
		exec(`INSERT INTO knowledge_bases (id, tenant_id, name) VALUES ($1, $2, 'kb')`, "kb_"+ten, ten)
	}
	// Tenant a: two calls today (90 s completed, 30 s failed), one 3 days ago (60 s).
	exec(`INSERT INTO calls (id, tenant_id, call_status, duration_ms, cost_usd, created_at) VALUES
		('call_1', $1, 'completed', 90000, 0.25, now()),
		('call_2', $1, 'failed', 30000, 0.05, now()),
		('call_3', $1, 'completed', 60000, 0.10, now() - interval '3 days'),
		('call_4', $1, 'completed', 600000, 9.99, now() - interval '40 days'),
		('call_5', $2, 'completed', 999000, 5, now())`, a.p.TenantID, b.p.TenantID)
	createKey(t, s, a.p, "one")
	k2, _ := createKey(t, s, a.p, "two")
	if _, err := s.RevokeAPIKey(ctx, a.p, k2.ID); err != nil {
		t.Fatal(err)
	}

	st, err := s.Stats(ctx, a.p.TenantID)
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{TotalAgents: 2, ActiveAgents: 1, TotalCalls: 4, CompletedCalls: 3, TotalMinutes: 13, KnowledgeBases: 1, APIKeys: 1, Members: 1}
	if st != want {
		t.Fatalf("Stats = %+v, want %+v", st, want)
	}

	u, err := s.Usage(ctx, a.p.TenantID, 7)
	if err != nil {
		t.Fatal(err)
	}
	if u.Days != 7 || u.Calls != 3 || u.Minutes != 3 || u.CostUSD != 0.4 {
		t.Fatalf("Usage = %+v", u)
	}
	if u.Since.Hour() != 0 || u.Since.Location() != time.UTC || time.Since(u.Since) > 7*24*time.Hour {
		t.Fatalf("since = %v", u.Since)
	}
	if u, _ := s.Usage(ctx, a.p.TenantID, 1); u.Calls != 2 || u.Minutes != 2 {
		t.Fatalf("Usage(1) = %+v", u)
	}

	daily, err := s.DailyUsage(ctx, a.p.TenantID, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(daily) != 7 {
		t.Fatalf("%d days", len(daily))
	}
	today := time.Now().UTC()
	if d := daily[6]; d.Date != today.Format("2006-01-02") || d.Calls != 2 || d.Minutes != 2 || d.CostUSD != 0.3 {
		t.Fatalf("today = %+v", d)
	}
	if d := daily[3]; d.Date != today.AddDate(0, 0, -3).Format("2006-01-02") || d.Calls != 1 || d.Minutes != 1 {
		t.Fatalf("3 days ago = %+v", d)
	}
	if d := daily[0]; d.Calls != 0 || d.Minutes != 0 || d.CostUSD != 0 {
		t.Fatalf("zero day = %+v", d)
	}
	if d, _ := s.DailyUsage(ctx, a.p.TenantID, 365); len(d) != 365 {
		t.Fatalf("365 days gave %d rows", len(d))
	}
	for _, days := range []int{0, -5, 366} {
		_, err := s.Usage(ctx, a.p.TenantID, days)
		wantKind(t, err, errs.KindInvalid)
		_, err = s.DailyUsage(ctx, a.p.TenantID, days)
		wantKind(t, err, errs.KindInvalid)
	}
	if st, _ := s.Stats(ctx, "ten_nobody"); st != (Stats{}) {
		t.Fatalf("unknown tenant stats = %+v", st)
	}
}

// injections are strings that break naive SQL, JSON, HTML or format-string handling.
var injections = []string{
	`'; DROP TABLE users; --`,
	`" OR "1"="1`,
	`Robert'); DELETE FROM tenants WHERE ('1'='1`,
	`{"$ne": null, "role": "owner"}`,
	`</script><script>alert(1)</script>`,
	`\'\"\\ \u0000 %00`,
	`%s%d%n%x {{.Secret}} ${jndi:ldap://x/a}`,
	`名前 — 🎉 ünïcode`,
	`$1 $2 ::text`,
}

func TestInjectionStringsStoredVerbatim(t *testing.T) {
	t.Parallel()
	s := newService(t, dbtest.Pool(t))
	ctx := context.Background()
	for i, inj := range injections {
		email := "o'brien+" + string(rune('a'+i)) + "=1@example.com"
		u, err := s.Register(ctx, RegisterInput{Email: email, Password: inj + "pw", FullName: inj, CompanyName: inj})
		if err != nil {
			t.Fatalf("%q: %v", inj, err)
		}
		a := login(t, s, email, inj+"pw", u)
		got, err := s.GetUser(ctx, a.p.TenantID, a.user.ID)
		if err != nil || got.FullName != inj || got.CompanyName != inj || got.Email != email {
			t.Fatalf("user = %+v, %v", got, err)
		}
		var tenantName string
		s.pool.QueryRow(ctx, `SELECT name FROM tenants WHERE id = $1`, a.p.TenantID).Scan(&tenantName)
		if tenantName != inj {
			t.Fatalf("tenant name %q", tenantName)
		}
		patched := inj + " (edited)"
		if got, err := s.UpdateUser(ctx, a.p, UserPatch{FullName: &patched}); err != nil || got.FullName != patched {
			t.Fatalf("patch = %+v, %v", got, err)
		}
		k, secret := createKey(t, s, a.p, inj)
		if k.Name != inj {
			t.Fatalf("key name %q", k.Name)
		}
		if keys, _, _ := s.ListAPIKeys(ctx, a.p.TenantID, 10, 0); keys[0].Name != inj {
			t.Fatalf("listed key name %q", keys[0].Name)
		}
		if _, err := s.Authenticate(ctx, secret); err != nil {
			t.Fatal(err)
		}
		br, err := s.SetBranding(ctx, a.p, Branding{AppName: inj, LogoURL: "https://example.com/l.png?q=" + strings.ReplaceAll(inj, " ", "%20")})
		if err != nil {
			t.Fatalf("branding %q: %v", inj, err)
		}
		if got, _ := s.GetBranding(ctx, a.p.TenantID); got != br || got.AppName != inj {
			t.Fatalf("branding = %+v", got)
		}
		// Where a string is an identifier, it is looked up, not interpreted.
		_, err = s.GetAPIKey(ctx, a.p.TenantID, inj)
		wantIs(t, err, ErrAPIKeyNotFound)
		_, err = s.UpdateMemberRole(ctx, a.p, inj, RoleMember)
		wantIs(t, err, ErrMemberNotFound)
		_, err = s.AddMember(ctx, a.p, inj, RoleMember)
		wantIs(t, err, ErrUserNotFound)
		_, _, err = s.Login(ctx, inj, inj)
		wantIs(t, err, ErrInvalidCredentials)
	}
	var users, tenants int
	s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM tenants)`).Scan(&users, &tenants)
	if users != len(injections) || tenants != len(injections) {
		t.Fatalf("%d users, %d tenants", users, tenants)
	}
}

func TestBootstrapAdmin(t *testing.T) {
	t.Parallel()
	pool := dbtest.Pool(t)
	s := newService(t, pool)
	ctx := context.Background()

	// Several processes starting at once create exactly one admin.
	type result struct {
		email, pass string
		created     bool
		err         error
	}
	results := make([]result, 4)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			var r result
			r.email, r.pass, r.created, r.err = s.EnsureBootstrapAdmin(ctx)
			results[i] = r
		})
	}
	wg.Wait()
	var created *result
	for i, r := range results {
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.created {
			if created != nil {
				t.Fatal("two admins created")
			}
			created = &results[i]
		}
	}
	if created == nil || created.email != BootstrapAdminEmail || len(created.pass) < 20 {
		t.Fatalf("results = %+v", results)
	}
	a := login(t, s, created.email, created.pass, User{})
	if a.p.Role != RoleOwner {
		t.Fatalf("admin role %q", a.p.Role)
	}
	var super bool
	pool.QueryRow(ctx, `SELECT is_superadmin FROM users WHERE id = $1`, a.p.UserID).Scan(&super)
	if !super {
		t.Fatal("bootstrap admin is not superadmin")
	}
	email, pass, again, err := s.EnsureBootstrapAdmin(ctx)
	if err != nil || again || email != "" || pass != "" {
		t.Fatalf("second call = %q %q %v %v", email, pass, again, err)
	}

	// Any existing user means there is nothing to bootstrap.
	s2 := newService(t, dbtest.Pool(t))
	register(t, s2, "first")
	if _, _, c, err := s2.EnsureBootstrapAdmin(ctx); err != nil || c {
		t.Fatalf("bootstrap with a user present: %v %v", c, err)
	}
}

func TestStopWithoutStart(t *testing.T) {
	t.Parallel()
	s, err := New(dbtest.Pool(t), testConfig())
	if err != nil {
		t.Fatal(err)
	}
	s.Stop()
	s.Stop()
	s2 := newService(t, s.pool)
	if err := s2.Start(context.Background()); err == nil {
		t.Fatal("second Start succeeded")
	}
}
