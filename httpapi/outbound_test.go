package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/agents"
	"github.com/parleyhq/parley/billing"
	"github.com/parleyhq/parley/calls"
	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/dbtest"
	"github.com/parleyhq/parley/internal/safehttp"
	"github.com/parleyhq/parley/telephony"
)

// obLines is the outbound tests' calls.Lines: every tenant dials out from +15550001000
// unless it is in none. (telephony's real service mirrors numbers into LiveKit SIP,
// which the API tests do not need: the dial job is not run here.)
type obLines struct {
	mu   sync.Mutex
	none map[string]bool
}

func (l *obLines) InboundRoute(context.Context, string) (telephony.Route, error) {
	return telephony.Route{}, telephony.ErrNumberNotFound
}

func (l *obLines) OutboundLine(_ context.Context, tenantID, _, from string) (telephony.Line, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.none[tenantID] {
		return telephony.Line{}, telephony.ErrNoLine
	}
	if from == "" {
		from = "+15550001000"
	}
	return telephony.Line{Number: from, Provider: telephony.ProviderSIP, SIPTrunkID: "ST_test", NumberID: "num_test"}, nil
}

// obStack is the real API stack for outbound calls on a fresh database: accounts,
// agents, calls with an insert-only River client (the dial jobs stay in river_job to be
// counted), a wallet, and fixed lines. It takes a testing.TB so the benchmark can use it.
type obStack struct {
	pool   *pgxpool.Pool
	srv    *httptest.Server
	acc    *accounts.Service
	ag     *agents.Service
	calls  *calls.Service
	wallet *billing.Service
	lines  *obLines
}

func newOBStack(tb testing.TB, enforce bool) *obStack {
	tb.Helper()
	ctx := context.Background()
	pool := dbtest.Pool(tb)
	log := slog.New(slog.DiscardHandler)
	secret := make([]byte, 32)
	rand.Read(secret)
	acc, err := accounts.New(pool, accounts.Config{JWTSecret: secret, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	if err := acc.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(acc.Stop)
	box, err := crypt.New(crypt.GenerateKey())
	if err != nil {
		tb.Fatal(err)
	}
	guard, err := safehttp.New(safehttp.Config{AllowPrivate: true})
	if err != nil {
		tb.Fatal(err)
	}
	ag, err := agents.New(pool, agents.Config{}, box, guard, guard)
	if err != nil {
		tb.Fatal(err)
	}
	svc, err := calls.New(pool, calls.Config{Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	jc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	svc.SetJobs(jc)
	wallet, err := billing.New(pool, billing.Config{Enforce: enforce})
	if err != nil {
		tb.Fatal(err)
	}
	lines := &obLines{none: map[string]bool{}}
	svc.SetOutbound(calls.OutboundDeps{Lines: lines, Wallet: wallet, Agents: ag})
	api, err := New(Config{Addr: "127.0.0.1:0", PublicURL: "http://127.0.0.1"},
		Deps{Logger: log, Accounts: acc, Agents: ag, Calls: svc, Version: "test"})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	tb.Cleanup(srv.Close)
	return &obStack{pool: pool, srv: srv, acc: acc, ag: ag, calls: svc, wallet: wallet, lines: lines}
}

// env wraps the stack in a testEnv, for its request helpers.
func (st *obStack) env(t *testing.T) *testEnv {
	return &testEnv{t: t, pool: st.pool, srv: st.srv, accounts: st.acc, agents: st.ag}
}

func (st *obStack) agent(tb testing.TB, tenantID, name string) string {
	tb.Helper()
	a, err := st.ag.Create(context.Background(), tenantID, []byte(fmt.Sprintf(`{"agent_name": %q}`, name)))
	if err != nil {
		tb.Fatal(err)
	}
	return a.ID
}

// count runs a count(*) query.
func (st *obStack) count(tb testing.TB, q string, args ...any) int {
	tb.Helper()
	var n int
	if err := st.pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

func (st *obStack) callCount(tb testing.TB, tenantID string) int {
	return st.count(tb, `SELECT count(*) FROM calls WHERE tenant_id = $1`, tenantID)
}

// decodeResp decodes a JSON response body into v.
func decodeResp(resp *http.Response, v any) {
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(v)
}

func (st *obStack) dialJobs(tb testing.TB) int {
	return st.count(tb, `SELECT count(*) FROM river_job WHERE kind = 'call_dial'`)
}

func TestOutboundCallRoute(t *testing.T) {
	t.Parallel()
	st := newOBStack(t, false)
	e := st.env(t)
	u, other := e.newUser(), e.newUser()
	agent := st.agent(t, u.TenantID, "Sales")
	theirs := st.agent(t, other.TenantID, "Theirs")

	r := e.do("POST", "/v1/calls/outbound", u.APIKey, map[string]any{
		"agent_id": agent, "to_number": "+14155550123",
		"variables": map[string]any{"customer_name": "Ada", "age": 42, "vip": true, "gone": nil},
		"metadata":  map[string]any{"crm": "x1"}, "webhook_url": "https://example.com/done",
	}).wantStatus(t, 201)
	c := r.JSON
	if c["direction"] != "outbound" || c["call_status"] != "registered" || c["from_number"] != "+15550001000" ||
		c["to_number"] != "+14155550123" || c["agent_id"] != agent || c["agent_name"] != "Sales" {
		t.Fatalf("call %s", r.Body)
	}
	meta, _ := c["metadata"].(map[string]any)
	vars, _ := meta["variables"].(map[string]any)
	if len(vars) != 3 || vars["customer_name"] != "Ada" || vars["age"] != "42" || vars["vip"] != "true" ||
		meta["crm"] != "x1" || meta["webhook_url"] != "https://example.com/done" {
		t.Fatalf("metadata %v", meta)
	}
	id := str(c["call_id"])
	if got := e.do("GET", "/v1/calls/"+id, u.APIKey, nil).wantStatus(t, 200); str(got.JSON["call_id"]) != id {
		t.Fatalf("GET %s", got.Body)
	}
	if n := st.count(t, `SELECT count(*) FROM river_job WHERE kind = 'call_dial' AND args->>'call_id' = $1`, id); n != 1 {
		t.Fatalf("%d dial jobs for the call", n)
	}

	// The other names of the number called.
	for _, f := range []string{"phone_number", "to_phone_number"} {
		r := e.do("POST", "/v1/calls/outbound", u.Token, map[string]any{"agent_id": agent, f: "+14155550124"}).wantStatus(t, 201)
		if r.JSON["to_number"] != "+14155550124" {
			t.Fatalf("%s: %s", f, r.Body)
		}
	}

	// Refusals: validation, tenancy, auth, scope, no line.
	e.do("POST", "/v1/calls/outbound", u.APIKey, map[string]any{"agent_id": agent, "to_number": "4155550123"}).wantError(t, 422, "to_number")
	e.do("POST", "/v1/calls/outbound", u.APIKey, map[string]any{"agent_id": agent, "to_number": "+14155550123", "from_number": "+0"}).wantError(t, 422, "from_number")
	e.do("POST", "/v1/calls/outbound", u.APIKey, map[string]any{"to_number": "+14155550123"}).wantError(t, 422, "agent_id")
	e.do("POST", "/v1/calls/outbound", u.APIKey, map[string]any{"agent_id": agent, "to_number": "+14155550123", "webhook_url": "javascript:x"}).wantError(t, 422, "webhook_url")
	e.do("POST", "/v1/calls/outbound", u.APIKey, `{"agent_id": 7}`).wantError(t, 400, "agent_id")
	nf := e.do("POST", "/v1/calls/outbound", u.APIKey, map[string]any{"agent_id": theirs, "to_number": "+14155550123"})
	if nf.wantError(t, 404); nf.JSON["code"] != "agent_not_found" {
		t.Fatalf("%s", nf.Body)
	}
	e.do("POST", "/v1/calls/outbound", "", map[string]any{"agent_id": agent, "to_number": "+14155550123"}).wantError(t, 401)
	ro := scopedKey(t, e, u, "calls:read")
	e.do("POST", "/v1/calls/outbound", ro, map[string]any{"agent_id": agent, "to_number": "+14155550123"}).wantError(t, 403)
	st.lines.mu.Lock()
	st.lines.none[other.TenantID] = true
	st.lines.mu.Unlock()
	e.do("POST", "/v1/calls/outbound", other.APIKey, map[string]any{"agent_id": theirs, "to_number": "+14155550123"}).wantError(t, 422, "from_number")
	if n := st.callCount(t, u.TenantID); n != 3 {
		t.Fatalf("%d calls, want 3", n)
	}
	if n := st.callCount(t, other.TenantID); n != 0 {
		t.Fatalf("other tenant has %d calls", n)
	}
}

// scopedKey makes an API key of u with only scopes.
func scopedKey(t *testing.T, e *testEnv, u testUser, scopes ...string) string {
	t.Helper()
	p, err := e.accounts.Authenticate(context.Background(), u.Token)
	if err != nil {
		t.Fatal(err)
	}
	_, secret, err := e.accounts.CreateAPIKey(context.Background(), p, accounts.CreateKeyInput{Name: "scoped", Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

func TestOutboundCallIdempotency(t *testing.T) {
	t.Parallel()
	st := newOBStack(t, false)
	e := st.env(t)
	u := e.newUser()
	agent := st.agent(t, u.TenantID, "Sales")
	body := map[string]any{"agent_id": agent, "to_number": "+14155550123", "variables": map[string]any{"n": 1}}

	first := e.do("POST", "/v1/calls/outbound", u.APIKey, body, "Idempotency-Key", "order-1").wantStatus(t, 201)
	if first.Header.Get("Idempotent-Replayed") != "" {
		t.Fatal("a first request marked replayed")
	}
	// The dial moves the call on; the retry still answers exactly as the original.
	st.pool.Exec(context.Background(), `UPDATE calls SET call_status = 'ringing'`)
	again := e.do("POST", "/v1/calls/outbound", u.APIKey, body, "Idempotency-Key", "order-1").wantStatus(t, 201)
	if string(again.Body) != string(first.Body) || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry answered\n%s\nnot\n%s", again.Body, first.Body)
	}
	// Another body with the same key: 422, nothing created.
	body2 := map[string]any{"agent_id": agent, "to_number": "+14155550199"}
	r := e.do("POST", "/v1/calls/outbound", u.APIKey, body2, "Idempotency-Key", "order-1")
	if r.wantError(t, 422); r.JSON["code"] != "idempotency_key_reused" {
		t.Fatalf("%s", r.Body)
	}
	if st.callCount(t, u.TenantID) != 1 || st.dialJobs(t) != 1 {
		t.Fatalf("%d calls, %d jobs after retries", st.callCount(t, u.TenantID), st.dialJobs(t))
	}

	// Concurrent duplicates over HTTP: one call, one job, every answer the same call.
	const n = 10
	var wg sync.WaitGroup
	ids := make([]string, n)
	statuses := make([]int, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest("POST", st.srv.URL+"/v1/calls/outbound",
				strings.NewReader(fmt.Sprintf(`{"agent_id": %q, "to_number": "+14155550100"}`, agent)))
			req.Header.Set("Authorization", "Bearer "+u.APIKey)
			req.Header.Set("Idempotency-Key", "burst")
			resp, err := st.srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var c struct {
				CallID string `json:"call_id"`
			}
			decodeResp(resp, &c)
			ids[i], statuses[i] = c.CallID, resp.StatusCode
		}()
	}
	close(start)
	wg.Wait()
	for i := range n {
		if statuses[i] != 201 || ids[i] == "" || ids[i] != ids[0] {
			t.Fatalf("answers %v %v", statuses, ids)
		}
	}
	if st.callCount(t, u.TenantID) != 2 || st.dialJobs(t) != 2 {
		t.Fatalf("%d calls, %d jobs after a burst", st.callCount(t, u.TenantID), st.dialJobs(t))
	}
}

func TestOutboundCallBalance(t *testing.T) {
	t.Parallel()
	st := newOBStack(t, true)
	e := st.env(t)
	u := e.newUser()
	agent := st.agent(t, u.TenantID, "Sales")
	body := map[string]any{"agent_id": agent, "to_number": "+14155550123"}
	r := e.do("POST", "/v1/calls/outbound", u.APIKey, body)
	if r.wantError(t, 402); r.JSON["code"] != "insufficient_balance" {
		t.Fatalf("%s", r.Body)
	}
	if _, err := st.wallet.Credit(context.Background(), u.TenantID, 1, "test"); err != nil {
		t.Fatal(err)
	}
	e.do("POST", "/v1/calls/outbound", u.APIKey, body).wantStatus(t, 201)
}

// BenchmarkOutboundAPI measures POST /outbound_call, request to RINGING response,
// against the real stack (HTTP server, API-key auth, Postgres, River insert in the
// call's transaction), one request at a time, and reports the latency percentiles:
// without and with an Idempotency-Key (a fresh key per request: the lookup, claim and
// stored answer are the extra cost).
//
//	go test -tags nolibopusfile -run '^$' -bench BenchmarkOutboundAPI -benchtime 2000x ./httpapi/
func BenchmarkOutboundAPI(b *testing.B) {
	st := newOBStack(b, false)
	ctx := context.Background()
	email := fmt.Sprintf("bench-%d@example.com", time.Now().UnixNano())
	if _, err := st.acc.Register(ctx, accounts.RegisterInput{Email: email, Password: "correct horse battery", FullName: "B", CompanyName: "B"}); err != nil {
		b.Fatal(err)
	}
	pair, user, err := st.acc.Login(ctx, email, "correct horse battery")
	if err != nil {
		b.Fatal(err)
	}
	p, err := st.acc.Authenticate(ctx, pair.AccessToken)
	if err != nil {
		b.Fatal(err)
	}
	_, key, err := st.acc.CreateAPIKey(ctx, p, accounts.CreateKeyInput{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	body := fmt.Sprintf(`{"to_phone_number": "+14155550123", "agent_id": %q, "input_parameters": {"name": "Ada"}}`,
		st.agent(b, user.TenantID, "Bench"))
	client := st.srv.Client()
	seq := 0
	post := func(b *testing.B, idem bool) time.Duration {
		req, _ := http.NewRequest("POST", st.srv.URL+"/outbound_call", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		if idem {
			seq++
			req.Header.Set("Idempotency-Key", fmt.Sprint("bench-", seq))
		}
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var out call24x7Response
		decodeResp(resp, &out)
		d := time.Since(t0)
		if resp.StatusCode != 200 || out.Status != "RINGING" {
			b.Fatalf("status %d, %+v", resp.StatusCode, out)
		}
		return d
	}
	for _, idem := range []bool{false, true} {
		name := "plain"
		if idem {
			name = "idempotency-key"
		}
		b.Run(name, func(b *testing.B) {
			for range 20 { // warm the connection, the pool and the plan cache
				post(b, idem)
			}
			calls0, jobs0 := st.callCount(b, user.TenantID), st.dialJobs(b)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				lat = append(lat, post(b, idem))
			}
			b.StopTimer()
			// Every request made its call and its dial job.
			if dc, dj := st.callCount(b, user.TenantID)-calls0, st.dialJobs(b)-jobs0; dc != b.N || dj != b.N {
				b.Fatalf("%d requests made %d calls and %d dial jobs", b.N, dc, dj)
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			pct := func(q float64) float64 {
				return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Microseconds()) / 1000
			}
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
		})
	}
}

// With telephony's real line selection (numbers and trunks written as rows; picking a
// line is a query and never contacts LiveKit, so no SIP stack is needed): the agent's
// own number, else the tenant's oldest that can dial out; an explicit from_number of
// the tenant's; another tenant's number is 404; an inbound-only trunk gives no line.
func TestOutboundTelephonyLines(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := newOBStack(t, false)
	box, err := crypt.New(crypt.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	tel, err := telephony.New(st.pool, telephony.Config{LiveKitURL: "http://127.0.0.1:9", APIKey: "k", APISecret: "s"}, box)
	if err != nil {
		t.Fatal(err)
	}
	st.calls.SetOutbound(calls.OutboundDeps{Lines: tel, Wallet: st.wallet, Agents: st.ag})
	e := st.env(t)
	u, other, inboundOnly := e.newUser(), e.newUser(), e.newUser()
	bound := st.agent(t, u.TenantID, "Bound")
	loose := st.agent(t, u.TenantID, "Loose")
	theirs := st.agent(t, other.TenantID, "Theirs")
	solo := st.agent(t, inboundOnly.TenantID, "Solo")
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := st.pool.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	trunk := func(id, tenantID, lkOut string) {
		exec(`INSERT INTO sip_trunks (id, tenant_id, name, outbound_address, lk_outbound_id) VALUES ($1, $2, 'T', $3, $4)`,
			id, tenantID, map[bool]string{true: "sip.example.com", false: ""}[lkOut != ""], lkOut)
	}
	number := func(id, tenantID, n, trunkID string, agent any, age string) {
		exec(`INSERT INTO phone_numbers (id, tenant_id, number, trunk_id, agent_id, created_at) VALUES ($1, $2, $3, $4, $5, now() - $6::interval)`,
			id, tenantID, n, trunkID, agent, age)
	}
	trunk("trk_a", u.TenantID, "ST_a")
	number("num_a_old", u.TenantID, "+15550002002", "trk_a", nil, "2 days")
	number("num_a_bound", u.TenantID, "+15550002001", "trk_a", bound, "1 day")
	trunk("trk_b", other.TenantID, "ST_b")
	number("num_b", other.TenantID, "+15550003001", "trk_b", theirs, "1 day")
	trunk("trk_c", inboundOnly.TenantID, "")
	number("num_c", inboundOnly.TenantID, "+15550004001", "trk_c", solo, "1 day")

	post := func(key string, body map[string]any) response {
		return e.do("POST", "/v1/calls/outbound", key, body)
	}
	for _, c := range []struct {
		agent, from, want string
	}{
		{bound, "", "+15550002001"},             // the agent's own number
		{loose, "", "+15550002002"},             // the tenant's oldest
		{loose, "+15550002001", "+15550002001"}, // asked for
	} {
		r := post(u.APIKey, map[string]any{"agent_id": c.agent, "to_number": "+14155550123", "from_number": c.from}).wantStatus(t, 201)
		if r.JSON["from_number"] != c.want {
			t.Fatalf("agent %s from %q: %s", c.agent, c.from, r.Body)
		}
		id := str(r.JSON["call_id"])
		if n := st.count(t, `SELECT count(*) FROM river_job WHERE kind = 'call_dial' AND args->>'call_id' = $1`, id); n != 1 {
			t.Fatalf("%d dial jobs", n)
		}
	}
	// Another tenant's number is not ours to call from.
	r := post(u.APIKey, map[string]any{"agent_id": bound, "to_number": "+14155550123", "from_number": "+15550003001"})
	if r.wantError(t, 404); r.JSON["code"] != "phone_number_not_found" {
		t.Fatalf("%s", r.Body)
	}
	// A number whose trunk has no outbound side cannot place calls.
	post(inboundOnly.APIKey, map[string]any{"agent_id": solo, "to_number": "+14155550123"}).wantError(t, 422, "from_number")
	e.do("POST", "/outbound_call", inboundOnly.APIKey, map[string]any{"agent_id": solo, "to_phone_number": "+14155550123"}).
		wantCall24x7Error(t, 400, "MISSING_PARAMS", "")
	if st.callCount(t, u.TenantID) != 3 || st.callCount(t, inboundOnly.TenantID) != 0 {
		t.Fatal("wrong number of calls")
	}
}
