package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/agents"
	"github.com/parleyhq/parley/httpapi/ratelimit"
	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/dbtest"
	"github.com/parleyhq/parley/internal/ids"
	"github.com/parleyhq/parley/internal/safehttp"
)

// agentBody is a full agent with a provider key and a function on hookURL.
func agentBody(hookURL string) map[string]any {
	return map[string]any{
		"agent_name":      "Front desk",
		"system_prompt":   "You are helpful.",
		"voice_id":        "alloy",
		"language":        "en-gb",
		"response_engine": map[string]any{"llm_model": "gpt-4o-mini", "temperature": 0.4},
		"llm":             map[string]any{"provider": "openai", "api_key": "sk-http-secret"},
		"functions": []any{map[string]any{
			"name": "book", "url": hookURL + "/book", "method": "POST",
			"parameters": map[string]any{"type": "object", "properties": map[string]any{"day": map[string]any{"type": "string"}}},
		}},
	}
}

func (e *testEnv) agentCount(tenantID string) int {
	e.t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM agents WHERE tenant_id = $1`, tenantID).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func TestAgentRoutes(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	u := e.newUser()

	created := e.do("POST", "/v1/agents", u.Token, agentBody("https://hooks.example.com")).wantStatus(t, 201)
	id, _ := created.JSON["agent_id"].(string)
	if !strings.HasPrefix(id, "agent_") || created.JSON["language"] != "en-GB" || created.JSON["voice_id"] != "alloy" {
		t.Fatalf("created: %s", created.Body)
	}
	re := created.JSON["response_engine"].(map[string]any)
	llm := created.JSON["llm"].(map[string]any)
	if re["system_prompt"] != "You are helpful." || llm["model"] != "gpt-4o-mini" || llm["api_key"] != "********" {
		t.Fatalf("aliases/keys: %s", created.Body)
	}

	// GET serves exactly what POST returned.
	got := e.do("GET", "/v1/agents/"+id, u.Token, nil).wantStatus(t, 200)
	if string(got.Body) != string(created.Body) || got.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET body differs from POST:\n%s\n%s", got.Body, created.Body)
	}
	// The API key works as well as the JWT.
	e.do("GET", "/v1/agents/"+id, u.APIKey, nil).wantStatus(t, 200)

	e.do("POST", "/v1/agents", u.Token, map[string]any{"agent_name": "Second"}).wantStatus(t, 201)
	list := e.do("GET", "/v1/agents?limit=1", u.Token, nil).wantStatus(t, 200)
	items, _ := list.JSON["agents"].([]any)
	if len(items) != 1 || list.JSON["total"] != 2.0 || list.JSON["has_more"] != true || list.JSON["limit"] != 1.0 {
		t.Fatalf("list: %s", list.Body)
	}
	if items[0].(map[string]any)["agent_name"] != "Second" {
		t.Fatalf("list order: %s", list.Body)
	}
	list = e.do("GET", "/v1/agents?offset=1", u.Token, nil).wantStatus(t, 200)
	if items, _ := list.JSON["agents"].([]any); len(items) != 1 || items[0].(map[string]any)["agent_id"] != id || list.JSON["has_more"] != false {
		t.Fatalf("list page 2: %s", list.Body)
	}
	e.do("GET", "/v1/agents?limit=0", u.Token, nil).wantError(t, 422, "limit")
	e.do("GET", "/v1/agents?limit=101", u.Token, nil).wantError(t, 422, "limit")

	patched := e.do("PATCH", "/v1/agents/"+id, u.Token, `{"agent_name": "Renamed", "llm": {"api_key": "********"}, "voice_id": null}`).wantStatus(t, 200)
	if patched.JSON["agent_name"] != "Renamed" || patched.JSON["voice_id"] != "" || patched.JSON["llm"].(map[string]any)["api_key"] != "********" {
		t.Fatalf("patched: %s", patched.Body)
	}
	if got := e.do("GET", "/v1/agents/"+id, u.Token, nil); string(got.Body) != string(patched.Body) {
		t.Fatalf("GET after PATCH:\n%s\n%s", got.Body, patched.Body)
	}

	dup := e.do("POST", "/v1/agents/"+id+"/duplicate", u.Token, nil).wantStatus(t, 201)
	if dup.JSON["agent_name"] != "Renamed (copy)" || dup.JSON["agent_id"] == id {
		t.Fatalf("duplicate: %s", dup.Body)
	}

	st := e.do("GET", "/v1/agents/"+id+"/stats?days=7", u.Token, nil).wantStatus(t, 200)
	if st.JSON["days"] != 7.0 || len(st.JSON["daily"].([]any)) != 7 || st.JSON["agent_id"] != id {
		t.Fatalf("stats: %s", st.Body)
	}
	e.do("GET", "/v1/agents/"+id+"/stats?days=0", u.Token, nil).wantError(t, 422, "days")
	e.do("GET", "/v1/agents/"+id+"/stats?days=abc", u.Token, nil).wantError(t, 422, "days")
	g := e.do("GET", "/v1/agents/stats/global", u.Token, nil).wantStatus(t, 200)
	if g.JSON["days"] != 30.0 || g.JSON["total_agents"] != 3.0 || len(g.JSON["agents"].([]any)) != 3 {
		t.Fatalf("global stats: %s", g.Body)
	}
	e.do("GET", "/v1/agents/stats/global?days=366", u.Token, nil).wantError(t, 422, "days")

	del := e.do("DELETE", "/v1/agents/"+id, u.Token, nil).wantStatus(t, 204)
	if len(del.Body) != 0 {
		t.Fatalf("204 with a body: %s", del.Body)
	}
	e.do("GET", "/v1/agents/"+id, u.Token, nil).wantError(t, 404)
	r := e.do("DELETE", "/v1/agents/"+id, u.Token, nil)
	r.wantError(t, 404)
	if r.JSON["code"] != "agent_not_found" || r.JSON["detail"] != "Agent not found" {
		t.Fatalf("404 body: %s", r.Body)
	}

	// Nothing in any response carries the key.
	for _, b := range [][]byte{created.Body, got.Body, list.Body, patched.Body, dup.Body} {
		if strings.Contains(string(b), "sk-http-secret") {
			t.Fatalf("a response leaks the API key: %s", b)
		}
	}
}

func TestAgentBadInput(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(c *Config, _ *safehttp.Config) { c.MaxBodyBytes = 64 << 10 })
	u := e.newUser()
	id := e.do("POST", "/v1/agents", u.Token, `{"agent_name": "x"}`).wantStatus(t, 201).JSON["agent_id"].(string)
	before := e.do("GET", "/v1/agents/"+id, u.Token, nil).Body

	cases := []struct {
		name, method, path, body string
		status                   int
		fields                   []string
	}{
		{"malformed", "POST", "/v1/agents", `{"agent_name": "x",}`, 400, nil},
		{"truncated", "POST", "/v1/agents", `{"agent_name": "x"`, 400, nil},
		{"not an object", "POST", "/v1/agents", `["x"]`, 400, nil},
		{"empty body", "POST", "/v1/agents", ``, 400, nil},
		{"wrong type", "POST", "/v1/agents", `{"agent_name": "x", "response_engine": {"temperature": "warm"}}`, 400, []string{"response_engine.temperature"}},
		{"wrong nested type", "POST", "/v1/agents", `{"agent_name": "x", "llm": {"temperature": true}}`, 400, []string{"llm.temperature"}},
		{"wrong list type", "POST", "/v1/agents", `{"agent_name": "x", "functions": "none"}`, 400, []string{"functions"}},
		{"unknown status", "POST", "/v1/agents", `{"agent_name": "x", "status": "paused"}`, 422, []string{"status"}},
		{"unknown provider", "POST", "/v1/agents", `{"agent_name": "x", "tts": {"provider": "polly"}}`, 422, []string{"tts.provider"}},
		{"unknown method", "POST", "/v1/agents", `{"agent_name": "x", "functions": [{"name": "a", "url": "https://x.example.com", "method": "TRACE"}]}`, 422, []string{"functions[0].method"}},
		{"unknown engine", "POST", "/v1/agents", `{"agent_name": "x", "response_engine": {"type": "gpt"}}`, 422, []string{"response_engine.type"}},
		{"unknown analysis type", "POST", "/v1/agents", `{"agent_name": "x", "post_call_analysis": [{"name": "a", "type": "date"}]}`, 422, []string{"post_call_analysis[0].type"}},
		{"several rules", "POST", "/v1/agents", `{"language": "xx-!!", "interruption_sensitivity": 3}`, 422, []string{"agent_name", "language", "interruption_sensitivity"}},
		{"bad schema", "POST", "/v1/agents", `{"agent_name": "x", "functions": [{"name": "a", "url": "https://x.example.com", "parameters": {"type": "array"}}]}`, 422, []string{"functions[0].parameters"}},
		{"patch malformed", "PATCH", "/v1/agents/" + id, `{"agent_name": }`, 400, nil},
		{"patch wrong type", "PATCH", "/v1/agents/" + id, `{"max_call_duration_ms": "long"}`, 400, []string{"max_call_duration_ms"}},
		{"patch unknown enum", "PATCH", "/v1/agents/" + id, `{"status": "archived"}`, 422, []string{"status"}},
		{"patch clears the name", "PATCH", "/v1/agents/" + id, `{"agent_name": null}`, 422, []string{"agent_name"}},
		{"test-function malformed", "POST", "/v1/agents/" + id + "/test-function", `{"function_name": `, 400, nil},
		{"test-function wrong type", "POST", "/v1/agents/" + id + "/test-function", `{"function_name": 7}`, 400, []string{"function_name"}},
		{"test-function no name", "POST", "/v1/agents/" + id + "/test-function", `{"arguments": {}}`, 422, []string{"function_name"}},
		{"test-function unknown name", "POST", "/v1/agents/" + id + "/test-function", `{"function_name": "nope"}`, 422, []string{"function_name"}},
		{"oversize create", "POST", "/v1/agents", `{"agent_name": "x", "system_prompt": "` + strings.Repeat("a", 70<<10) + `"}`, 413, nil},
		{"oversize patch", "PATCH", "/v1/agents/" + id, `{"system_prompt": "` + strings.Repeat("a", 70<<10) + `"}`, 413, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(c.method, c.path, u.Token, c.body)
			r.wantError(t, c.status, c.fields...)
		})
	}
	// Nothing was written by any of them.
	if n := e.agentCount(u.TenantID); n != 1 {
		t.Fatalf("%d agents, want 1", n)
	}
	if after := e.do("GET", "/v1/agents/"+id, u.Token, nil).Body; string(after) != string(before) {
		t.Fatalf("a refused request changed the agent:\n%s\n%s", before, after)
	}
}

// Every agent route answers 404 for another tenant's agent, exactly as for an unknown id,
// and changes nothing.
func TestAgentRoutesCrossTenant(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	owner, intruder := e.newUser(), e.newUser()
	id := e.do("POST", "/v1/agents", owner.Token, agentBody("https://hooks.example.com")).wantStatus(t, 201).JSON["agent_id"].(string)
	before := e.do("GET", "/v1/agents/"+id, owner.Token, nil).Body

	routes := []struct{ method, path, body string }{
		{"GET", "/v1/agents/" + id, ""},
		{"PATCH", "/v1/agents/" + id, `{"agent_name": "pwned"}`},
		{"DELETE", "/v1/agents/" + id, ""},
		{"POST", "/v1/agents/" + id + "/duplicate", ""},
		{"GET", "/v1/agents/" + id + "/stats", ""},
		{"POST", "/v1/agents/" + id + "/test-function", `{"function_name": "book", "arguments": {}}`},
	}
	unknown := "agent_" + strings.Repeat("a", 20)
	for _, rt := range routes {
		for _, token := range []string{intruder.Token, intruder.APIKey} {
			var body any
			if rt.body != "" {
				body = rt.body
			}
			r := e.do(rt.method, rt.path, token, body)
			r.wantError(t, 404)
			u := e.do(rt.method, strings.Replace(rt.path, id, unknown, 1), token, body)
			if string(r.Body) != string(u.Body) {
				t.Errorf("%s %s: another tenant's agent answers %s, an unknown one %s", rt.method, rt.path, r.Body, u.Body)
			}
		}
	}
	// Lists and global stats do not show it.
	if r := e.do("GET", "/v1/agents", intruder.Token, nil).wantStatus(t, 200); r.JSON["total"] != 0.0 {
		t.Errorf("list: %s", r.Body)
	}
	if r := e.do("GET", "/v1/agents/stats/global", intruder.Token, nil).wantStatus(t, 200); len(r.JSON["agents"].([]any)) != 0 {
		t.Errorf("global stats: %s", r.Body)
	}
	if after := e.do("GET", "/v1/agents/"+id, owner.Token, nil).wantStatus(t, 200).Body; string(after) != string(before) {
		t.Fatalf("the owner's agent changed:\n%s\n%s", before, after)
	}
	if n := e.agentCount(intruder.TenantID); n != 0 {
		t.Fatalf("the intruder's tenant has %d agents", n)
	}

	// A knowledge base of the owner's tenant cannot be attached by the intruder, and the
	// answer is the one an unknown id gets.
	kb := ids.New("kb")
	if _, err := e.pool.Exec(context.Background(), `INSERT INTO knowledge_bases (id, tenant_id, name) VALUES ($1, $2, 'kb')`, kb, owner.TenantID); err != nil {
		t.Fatal(err)
	}
	r1 := e.do("POST", "/v1/agents", intruder.Token, `{"agent_name": "x", "knowledge_base_ids": ["`+kb+`"]}`)
	r1.wantError(t, 422, "knowledge_base_ids")
	r2 := e.do("POST", "/v1/agents", intruder.Token, `{"agent_name": "x", "knowledge_base_ids": ["kb_unknown"]}`)
	m1 := strings.ReplaceAll(r1.JSON["fields"].(map[string]any)["knowledge_base_ids"].(string), kb, "ID")
	m2 := strings.ReplaceAll(r2.JSON["fields"].(map[string]any)["knowledge_base_ids"].(string), "kb_unknown", "ID")
	if m1 != m2 {
		t.Errorf("another tenant's KB: %q, an unknown KB: %q", m1, m2)
	}
	e.do("POST", "/v1/agents", owner.Token, `{"agent_name": "x", "knowledge_base_ids": ["`+kb+`"]}`).wantStatus(t, 201)
}

func TestAgentInjectionStringsVerbatim(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	u := e.newUser()
	for _, s := range []string{`'); DROP TABLE agents;--`, `{"$gt":""}`, `<script>alert("x")</script>`, `' OR '1'='1`, `../../etc/passwd`} {
		r := e.do("POST", "/v1/agents", u.Token, map[string]any{"agent_name": s, "begin_message": s, "system_prompt": s}).wantStatus(t, 201)
		id := r.JSON["agent_id"].(string)
		g := e.do("GET", "/v1/agents/"+id, u.Token, nil).wantStatus(t, 200)
		if g.JSON["agent_name"] != s || g.JSON["begin_message"] != s || g.JSON["response_engine"].(map[string]any)["system_prompt"] != s {
			t.Errorf("%q not stored verbatim: %s", s, g.Body)
		}
	}
	// A hostile id in the path is just an unknown agent.
	for _, id := range []string{"'%20OR%20'1'='1", "%7B%22$gt%22:%22%22%7D", "agent_x%27;DROP%20TABLE%20agents;--"} {
		e.do("GET", "/v1/agents/"+id, u.Token, nil).wantError(t, 404)
	}
	if r := e.do("GET", "/v1/agents", u.Token, nil).wantStatus(t, 200); r.JSON["total"] != 5.0 {
		t.Fatalf("list after injection strings: %s", r.Body)
	}
}

// API-key scopes: agents:read may look but not touch.
func TestAgentScopes(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	u := e.newUser()
	id := e.do("POST", "/v1/agents", u.Token, `{"agent_name": "x", "functions": [{"name": "f", "url": "https://x.example.com"}]}`).wantStatus(t, 201).JSON["agent_id"].(string)
	key := func(scopes ...string) string {
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
	read, write, other := key("agents:read"), key("agents:write"), key("calls:read")

	reads := []struct{ method, path string }{
		{"GET", "/v1/agents"}, {"GET", "/v1/agents/" + id}, {"GET", "/v1/agents/" + id + "/stats"}, {"GET", "/v1/agents/stats/global"},
	}
	writes := []struct{ method, path, body string }{
		{"POST", "/v1/agents", `{"agent_name": "y"}`},
		{"PATCH", "/v1/agents/" + id, `{"agent_name": "z"}`},
		{"POST", "/v1/agents/" + id + "/duplicate", ""},
		{"POST", "/v1/agents/" + id + "/test-function", `{"function_name": "f"}`},
		{"DELETE", "/v1/agents/" + id, ""},
	}
	for _, rt := range reads {
		e.do(rt.method, rt.path, read, nil).wantStatus(t, 200)
		e.do(rt.method, rt.path, write, nil).wantStatus(t, 200) // write implies read
		r := e.do(rt.method, rt.path, other, nil)
		r.wantError(t, 403)
	}
	before := e.agentCount(u.TenantID)
	for _, rt := range writes {
		var body any
		if rt.body != "" {
			body = rt.body
		}
		r := e.do(rt.method, rt.path, read, body)
		r.wantError(t, 403)
		if r.JSON["code"] != "insufficient_scope" {
			t.Errorf("%s %s: %s", rt.method, rt.path, r.Body)
		}
	}
	if e.agentCount(u.TenantID) != before {
		t.Fatal("a read-only key wrote")
	}
	if r := e.do("GET", "/v1/agents/"+id, read, nil); r.JSON["agent_name"] != "x" {
		t.Fatalf("a read-only key changed the agent: %s", r.Body)
	}
	e.do("POST", "/v1/agents", write, `{"agent_name": "w"}`).wantStatus(t, 201)
	e.do("DELETE", "/v1/agents/"+id, write, nil).wantStatus(t, 204)
}

func TestAgentTestFunctionRoute(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t) // private URLs allowed: the webhook runs on loopback
	u := e.newUser()
	got := make(chan string, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r.Method + " " + r.URL.Path + " " + string(b)
		switch r.URL.Path {
		case "/book":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"confirmed": true}`)
		default:
			w.WriteHeader(http.StatusBadGateway)
		}
	}))
	t.Cleanup(hook.Close)
	body := agentBody(hook.URL)
	body["functions"] = append(body["functions"].([]any), map[string]any{"name": "broken", "url": hook.URL + "/broken"})
	id := e.do("POST", "/v1/agents", u.Token, body).wantStatus(t, 201).JSON["agent_id"].(string)

	r := e.do("POST", "/v1/agents/"+id+"/test-function", u.Token, `{"function_name": "book", "arguments": {"day": "friday"}}`).wantStatus(t, 200)
	if r.JSON["success"] != true || r.JSON["status_code"] != 200.0 || r.JSON["body"].(map[string]any)["confirmed"] != true || r.JSON["latency_ms"] == nil {
		t.Fatalf("result: %s", r.Body)
	}
	select {
	case req := <-got:
		if req != `POST /book {"day": "friday"}` {
			t.Fatalf("webhook got %q", req)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("webhook not called")
	}
	// A failing webhook is a 200 with success false: the test ran.
	r = e.do("POST", "/v1/agents/"+id+"/test-function", u.Token, `{"function_name": "broken"}`).wantStatus(t, 200)
	if r.JSON["success"] != false || r.JSON["status_code"] != 502.0 || r.JSON["error"] == "" {
		t.Fatalf("result: %s", r.Body)
	}
	e.do("POST", "/v1/agents/"+id+"/test-function", u.Token, `{"function_name": "book", "arguments": [1]}`).wantError(t, 422, "arguments")
}

// With the SSRF guard on, private webhook URLs are refused with an explanation.
func TestAgentURLsGuarded(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, func(_ *Config, s *safehttp.Config) { s.AllowPrivate = false })
	u := e.newUser()
	for _, c := range []struct{ body, field string }{
		{`{"agent_name": "x", "webhook_url": "http://127.0.0.1:8080/hook"}`, "webhook_url"},
		{`{"agent_name": "x", "llm": {"base_url": "http://169.254.169.254/v1"}}`, "llm.base_url"},
		{`{"agent_name": "x", "functions": [{"name": "f", "url": "http://10.0.0.5/f"}]}`, "functions[0].url"},
		{`{"agent_name": "x", "webhook_url": "http://user:pass@example.com/hook"}`, "webhook_url"},
	} {
		r := e.do("POST", "/v1/agents", u.Token, c.body)
		r.wantError(t, 422, c.field)
		if msg := r.JSON["fields"].(map[string]any)[c.field].(string); !strings.Contains(msg, "not allowed") {
			t.Errorf("%s: %q does not explain", c.field, msg)
		}
	}
	if n := e.agentCount(u.TenantID); n != 0 {
		t.Fatalf("%d agents written", n)
	}
}

// The OpenAPI document describes agents with the contract's fields.
func TestAgentOpenAPI(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	r := e.do("GET", "/openapi.json", "", nil).wantStatus(t, 200)
	doc, _ := json.Marshal(r.JSON)
	for _, want := range []string{`"agent_name"`, `"knowledge_base_ids"`, `"post_call_analysis"`, `"function_name"`, `"success_rate"`} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("OpenAPI lacks %s", want)
		}
	}
}

// BenchmarkGetAgentHTTP measures GET /v1/agents/{id} end to end: a real HTTP server on
// loopback, authentication, the rate limiter (with a limit that never denies) and the
// agents read path, against the test PostgreSQL on the same machine.
func BenchmarkGetAgentHTTP(b *testing.B) {
	ctx := context.Background()
	pool := dbtest.Pool(b)
	secret := make([]byte, 32)
	rand.Read(secret)
	acc, err := accounts.New(pool, accounts.Config{JWTSecret: secret, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	if err := acc.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(acc.Stop)
	box, _ := crypt.New(crypt.GenerateKey())
	guard, _ := safehttp.New(safehttp.Config{AllowPrivate: true})
	ag, err := agents.New(pool, agents.Config{}, box, guard, guard)
	if err != nil {
		b.Fatal(err)
	}
	lim, err := ratelimit.New(ratelimit.Config{}, ratelimit.NewPostgresStore(pool))
	if err != nil {
		b.Fatal(err)
	}
	api, err := New(Config{Addr: "127.0.0.1:0", PublicURL: "http://127.0.0.1", RateLimitUser: 1 << 30},
		Deps{Logger: slog.New(slog.DiscardHandler), Accounts: acc, Agents: ag, Limiter: lim})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	b.Cleanup(srv.Close)

	if _, err := acc.Register(ctx, accounts.RegisterInput{Email: "bench@example.com", Password: "correct horse battery"}); err != nil {
		b.Fatal(err)
	}
	pair, _, err := acc.Login(ctx, "bench@example.com", "correct horse battery")
	if err != nil {
		b.Fatal(err)
	}
	p, err := acc.Authenticate(ctx, pair.AccessToken)
	if err != nil {
		b.Fatal(err)
	}
	_, apiKey, err := acc.CreateAPIKey(ctx, p, accounts.CreateKeyInput{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	body, _ := json.Marshal(agentBody("https://hooks.example.com"))
	a, err := ag.Create(ctx, p.TenantID, body)
	if err != nil {
		b.Fatal(err)
	}
	url := srv.URL + "/v1/agents/" + a.ID
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

	for _, c := range []struct{ name, token string }{{"jwt", pair.AccessToken}, {"apikey", apiKey}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetParallelism(8) // 16 concurrent clients on 2 cores
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set("Authorization", "Bearer "+c.token)
				for pb.Next() {
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
}
