package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/parleyhq/parley/calls"
)

// wantCall24x7Error checks a failure: the status, and exactly Call24x7's envelope
// {"success": false, "message", "error_code"} with that code (and message, when given).
func (r response) wantCall24x7Error(t *testing.T, status int, code, message string) {
	t.Helper()
	r.wantStatus(t, status)
	var keys []string
	for k := range r.JSON {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"error_code", "message", "success"}) || r.JSON["success"] != false ||
		r.JSON["error_code"] != code || str(r.JSON["message"]) == "" {
		t.Fatalf("want %d %s envelope, got %s", status, code, r.Body)
	}
	if message != "" && r.JSON["message"] != message {
		t.Fatalf("message %q, want %q", r.JSON["message"], message)
	}
}

// wantCall24x7Success checks a started call's answer: exactly the success envelope
// with RINGING; it returns the call ID.
func (r response) wantCall24x7Success(t *testing.T) string {
	t.Helper()
	r.wantStatus(t, 200)
	want := map[string]any{"success": true, "call_id": r.JSON["call_id"], "status": "RINGING", "message": "Call initiated successfully"}
	if len(r.JSON) != 4 || fmt.Sprint(r.JSON) != fmt.Sprint(want) || !strings.HasPrefix(str(r.JSON["call_id"]), "call_") {
		t.Fatalf("success envelope %s", r.Body)
	}
	return str(r.JSON["call_id"])
}

// Every Call24x7 error code is reachable, with its status and exact envelope.
func TestCall24x7Errors(t *testing.T) {
	t.Parallel()
	st := newOBStack(t, false)
	e := st.env(t)
	u, other := e.newUser(), e.newUser()
	agent := st.agent(t, u.TenantID, "Sales")
	theirs := st.agent(t, other.TenantID, "Theirs")
	theirCall := e.do("POST", "/outbound_call", other.APIKey, map[string]any{"to_phone_number": "+14155550123", "agent_id": theirs}).
		wantCall24x7Success(t)
	inactive := st.agent(t, u.TenantID, "Off")
	st.pool.Exec(context.Background(), `UPDATE agents SET status = 'inactive' WHERE id = $1`, inactive)
	readOnly := scopedKey(t, e, u, "calls:read")
	agentsOnly := scopedKey(t, e, u, "agents:read")

	cases := []struct {
		name              string
		method, path, key string
		body              any
		status            int
		code, message     string
	}{
		// MISSING_PARAMS
		{"no number", "POST", "/outbound_call", u.APIKey, map[string]any{"agent_id": agent}, 400, "MISSING_PARAMS", "Missing required parameter: to_phone_number"},
		{"nothing", "POST", "/outbound_call", u.APIKey, map[string]any{}, 400, "MISSING_PARAMS", "Missing required parameter: to_phone_number"},
		{"no agent", "POST", "/outbound_call", u.APIKey, map[string]any{"to_phone_number": "+14155550123"}, 400, "MISSING_PARAMS", "Missing required parameter: agent_id"},
		{"not E.164", "POST", "/outbound_call", u.APIKey, map[string]any{"to_phone_number": "4155550123", "agent_id": agent}, 400, "MISSING_PARAMS",
			"Invalid parameter: to_phone_number must be an E.164 phone number such as +14155550123"},
		{"too long", "POST", "/outbound_call", u.APIKey, map[string]any{"to_phone_number": "+1234567890123456", "agent_id": agent}, 400, "MISSING_PARAMS", ""},
		{"agent and instruction", "POST", "/outbound_call", u.APIKey, map[string]any{"to_phone_number": "+14155550123", "agent_id": agent, "instruction": "x"}, 400, "MISSING_PARAMS", ""},
		{"bad webhook", "POST", "/outbound_call", u.APIKey, map[string]any{"to_phone_number": "+14155550123", "agent_id": agent, "webhook_url": "nope"}, 400, "MISSING_PARAMS", ""},
		{"bad output template", "POST", "/outbound_call", u.APIKey, map[string]any{"to_phone_number": "+14155550123", "agent_id": agent, "output_parameters": "[1]"}, 400, "MISSING_PARAMS", ""},
		{"malformed JSON", "POST", "/outbound_call", u.APIKey, `{"to_phone_number": `, 400, "MISSING_PARAMS", ""},
		{"empty body", "POST", "/outbound_call", u.APIKey, nil, 400, "MISSING_PARAMS", ""},
		{"wrong type", "POST", "/outbound_call", u.APIKey, `{"to_phone_number": 14155550123}`, 400, "MISSING_PARAMS", ""},
		{"GET nothing", "GET", "/outbound_call", u.APIKey, nil, 400, "MISSING_PARAMS", "Missing required parameter: call_id"},
		{"GET start no agent", "GET", "/outbound_call?to_phone_number=%2B14155550123", u.APIKey, nil, 400, "MISSING_PARAMS", "Missing required parameter: agent_id"},
		{"GET start bad number", "GET", "/outbound_call?to_phone_number=123&agent_id=" + agent, u.APIKey, nil, 400, "MISSING_PARAMS", ""},
		// UNAUTHORIZED: the middleware's refusals and the handlers' scope checks alike.
		{"no key", "POST", "/outbound_call", "", map[string]any{"to_phone_number": "+14155550123", "agent_id": agent}, 401, "UNAUTHORIZED", ""},
		{"bad key", "POST", "/outbound_call", "sk_nope", map[string]any{"to_phone_number": "+14155550123", "agent_id": agent}, 401, "UNAUTHORIZED", ""},
		{"GET no key", "GET", "/outbound_call?call_id=" + theirCall, "", nil, 401, "UNAUTHORIZED", ""},
		{"read-only key starts", "POST", "/outbound_call", readOnly, map[string]any{"to_phone_number": "+14155550123", "agent_id": agent}, 401, "UNAUTHORIZED", ""},
		{"read-only key GET start", "GET", "/outbound_call?to_phone_number=%2B14155550123&agent_id=" + agent, readOnly, nil, 401, "UNAUTHORIZED", ""},
		{"agents key reads", "GET", "/outbound_call?call_id=" + theirCall, agentsOnly, nil, 401, "UNAUTHORIZED", ""},
		// AGENT_NOT_FOUND
		{"other tenant's agent", "POST", "/outbound_call", u.APIKey, map[string]any{"to_phone_number": "+14155550123", "agent_id": theirs}, 404, "AGENT_NOT_FOUND", "Agent not found"},
		{"unknown agent", "POST", "/outbound_call", u.APIKey, map[string]any{"to_phone_number": "+14155550123", "agent_id": "agent_nope"}, 404, "AGENT_NOT_FOUND", "Agent not found"},
		{"inactive agent", "POST", "/outbound_call", u.APIKey, map[string]any{"to_phone_number": "+14155550123", "agent_id": inactive}, 404, "AGENT_NOT_FOUND", ""},
		{"GET start other's agent", "GET", "/outbound_call?to_phone_number=%2B14155550123&agent_id=" + theirs, u.APIKey, nil, 404, "AGENT_NOT_FOUND", ""},
		// CALL_NOT_FOUND
		{"other tenant's call", "GET", "/outbound_call?call_id=" + theirCall, u.APIKey, nil, 404, "CALL_NOT_FOUND", "Call not found"},
		{"unknown call", "GET", "/outbound_call?call_id=call_nope", u.APIKey, nil, 404, "CALL_NOT_FOUND", "Call not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := st.env(t)
			e.do(c.method, c.path, c.key, c.body).wantCall24x7Error(t, c.status, c.code, c.message)
		})
	}
	if n := st.callCount(t, u.TenantID); n != 0 {
		t.Fatalf("refused requests created %d calls", n)
	}

	// The same key with another request.
	e.do("POST", "/outbound_call", u.APIKey, map[string]any{"to_phone_number": "+14155550123", "agent_id": agent}, "Idempotency-Key", "k").wantCall24x7Success(t)
	e.do("POST", "/outbound_call", u.APIKey, map[string]any{"to_phone_number": "+14155550124", "agent_id": agent}, "Idempotency-Key", "k").
		wantCall24x7Error(t, 400, "MISSING_PARAMS", "")

	// An account with no number that can dial out.
	st.lines.mu.Lock()
	st.lines.none[other.TenantID] = true
	st.lines.mu.Unlock()
	e.do("POST", "/outbound_call", other.APIKey, map[string]any{"to_phone_number": "+14155550123", "agent_id": theirs}).
		wantCall24x7Error(t, 400, "MISSING_PARAMS", "")

	// INTERNAL_ERROR: the job queue refuses the dial (the call is rolled back with it).
	if _, err := st.pool.Exec(context.Background(), `
		CREATE FUNCTION refuse_dial() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'queue down'; END $$;
		CREATE TRIGGER refuse_dial BEFORE INSERT ON river_job FOR EACH ROW EXECUTE FUNCTION refuse_dial();`); err != nil {
		t.Fatal(err)
	}
	before := st.callCount(t, u.TenantID)
	r := e.do("POST", "/outbound_call", u.APIKey, map[string]any{"to_phone_number": "+14155550123", "agent_id": agent})
	r.wantCall24x7Error(t, 500, "INTERNAL_ERROR", "")
	if strings.Contains(string(r.Body), "queue down") || st.callCount(t, u.TenantID) != before {
		t.Fatalf("internal error leaked or left a call: %s", r.Body)
	}
}

func TestCall24x7InsufficientBalance(t *testing.T) {
	t.Parallel()
	st := newOBStack(t, true)
	e := st.env(t)
	u := e.newUser()
	agent := st.agent(t, u.TenantID, "Sales")
	body := map[string]any{"to_phone_number": "+14155550123", "agent_id": agent}
	e.do("POST", "/outbound_call", u.APIKey, body).wantCall24x7Error(t, 402, "INSUFFICIENT_BALANCE", "")
	e.do("GET", "/outbound_call?to_phone_number=%2B14155550123&agent_id="+agent, u.APIKey, nil).
		wantCall24x7Error(t, 402, "INSUFFICIENT_BALANCE", "")
	if _, err := st.wallet.Credit(context.Background(), u.TenantID, 0.01, "test"); err != nil {
		t.Fatal(err)
	}
	e.do("POST", "/outbound_call", u.APIKey, body).wantCall24x7Success(t)
}

func TestCall24x7Calls(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := newOBStack(t, false)
	e := st.env(t)
	u := e.newUser()
	agent := st.agent(t, u.TenantID, "Sales")

	id := e.do("POST", "/outbound_call", u.APIKey, map[string]any{
		"to_phone_number": "+14155550123", "agent_id": agent, "webhook_url": "https://example.com/done",
		"external_id": "lead-9", "input_parameters": map[string]any{"name": "Ada", "amount": 12.5},
		"output_parameters": map[string]any{"interested": "did they want a demo", "budget": "their budget"},
	}).wantCall24x7Success(t)
	c, err := st.calls.Get(ctx, u.TenantID, id)
	if err != nil {
		t.Fatal(err)
	}
	vars, _ := c.Metadata["variables"].(map[string]any)
	outs, _ := c.Metadata["output_parameters"].(map[string]any)
	if c.Direction != "outbound" || c.ToNumber != "+14155550123" || c.AgentID != agent || vars["name"] != "Ada" || vars["amount"] != "12.5" ||
		outs["interested"] != "did they want a demo" || c.Metadata["external_id"] != "lead-9" || c.Metadata["webhook_url"] != "https://example.com/done" {
		t.Fatalf("call %+v", c)
	}
	if cv := calls.CallVariables(c); cv["name"] != "Ada" {
		t.Fatalf("prompt variables %v", cv)
	}

	// output_parameters as a JSON string, as some clients send it.
	id2 := e.do("POST", "/outbound_call", u.APIKey, map[string]any{"to_phone_number": "+14155550124", "agent_id": agent,
		"output_parameters": `{"callback_time": "when to call back"}`}).wantCall24x7Success(t)
	c2, _ := st.calls.Get(ctx, u.TenantID, id2)
	if outs, _ := c2.Metadata["output_parameters"].(map[string]any); outs["callback_time"] != "when to call back" {
		t.Fatalf("metadata %v", c2.Metadata)
	}

	// GET starts a call too.
	q := url.Values{"to_phone_number": {"+14155550125"}, "agent_id": {agent}, "external_id": {"q-1"}}
	id3 := e.do("GET", "/outbound_call?"+q.Encode(), u.APIKey, nil).wantCall24x7Success(t)
	if c3, _ := st.calls.Get(ctx, u.TenantID, id3); c3.ToNumber != "+14155550125" || c3.Metadata["external_id"] != "q-1" {
		t.Fatalf("GET-started call %+v", c3)
	}

	// Status: each Parley status and what Call24x7 calls it.
	for status, want := range map[string]string{
		"registered": "RINGING", "ringing": "RINGING", "in_progress": "IN_PROGRESS", "completed": "COMPLETED",
		"voicemail": "COMPLETED", "failed": "FAILED", "no_answer": "FAILED", "busy": "FAILED",
	} {
		if _, err := st.pool.Exec(ctx, `UPDATE calls SET call_status = $2, duration_ms = 61500 WHERE id = $1`, id, status); err != nil {
			t.Fatal(err)
		}
		r := e.do("GET", "/outbound_call?call_id="+id, u.APIKey, nil).wantStatus(t, 200)
		if r.JSON["success"] != true || r.JSON["call_id"] != id || r.JSON["status"] != want || str(r.JSON["message"]) == "" {
			t.Fatalf("%s: %s", status, r.Body)
		}
		if r.JSON["call_direction"] != "outbound" || r.JSON["to_phone_number"] != "+14155550123" ||
			r.JSON["from_phone_number"] != "+15550001000" || r.JSON["agent_id"] != agent ||
			r.JSON["duration_seconds"] != 61.5 || r.JSON["external_id"] != "lead-9" {
			t.Fatalf("%s: %s", status, r.Body)
		}
	}
	if Call24x7Status("anything else") != "IDLE" {
		t.Fatal("unknown statuses are IDLE")
	}
	// A read-only key reads status.
	e.do("GET", "/outbound_call?call_id="+id, scopedKey(t, e, u, "calls:read"), nil).wantStatus(t, 200)
}

// instruction without agent_id: a temporary agent with that prompt, marked temporary.
func TestCall24x7Instruction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := newOBStack(t, false)
	e := st.env(t)
	u := e.newUser()
	id := e.do("POST", "/outbound_call", u.APIKey, map[string]any{"to_phone_number": "+14155550123",
		"instruction": "Call {{name}} and confirm Friday's appointment.", "input_parameters": map[string]any{"name": "Ada"}}).
		wantCall24x7Success(t)
	c, _ := st.calls.Get(ctx, u.TenantID, id)
	a, err := st.ag.Get(ctx, u.TenantID, c.AgentID)
	if err != nil {
		t.Fatal(err)
	}
	if a.ResponseEngine.SystemPrompt != "Call {{name}} and confirm Friday's appointment." || a.Name != "Call24x7 instruction "+id {
		t.Fatalf("agent %+v", a)
	}
	if n := st.count(t, `SELECT count(*) FROM agents WHERE id = $1 AND temporary`, a.ID); n != 1 {
		t.Fatal("agent not marked temporary")
	}
	if n := st.count(t, `SELECT count(*) FROM agents WHERE tenant_id = $1`, u.TenantID); n != 1 {
		t.Fatalf("%d agents", n)
	}
}

// call_id in the body is the client's reference and, with no Idempotency-Key, the
// retry key: re-sending it (sequentially or all at once) places one call.
func TestCall24x7ClientCallID(t *testing.T) {
	t.Parallel()
	st := newOBStack(t, false)
	e := st.env(t)
	u := e.newUser()
	agent := st.agent(t, u.TenantID, "Sales")
	body := map[string]any{"to_phone_number": "+14155550123", "agent_id": agent, "call_id": "client-42"}
	first := e.do("POST", "/outbound_call", u.APIKey, body).wantCall24x7Success(t)
	again := e.do("POST", "/outbound_call", u.APIKey, body)
	if again.wantCall24x7Success(t) != first || again.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry %s", again.Body)
	}
	c, _ := st.calls.Get(context.Background(), u.TenantID, first)
	if c.Metadata["call24x7_call_id"] != "client-42" {
		t.Fatalf("metadata %v", c.Metadata)
	}

	// A burst of the same instruction request: one call, one job, one temporary agent.
	raw, _ := json.Marshal(map[string]any{"to_phone_number": "+14155550199", "instruction": "Say hi", "call_id": "burst"})
	const n = 10
	var wg sync.WaitGroup
	got := make([]string, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest("POST", st.srv.URL+"/outbound_call", strings.NewReader(string(raw)))
			req.Header.Set("Authorization", "Bearer "+u.APIKey)
			resp, err := st.srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			var out call24x7Response
			decodeResp(resp, &out)
			if resp.StatusCode == 200 && out.Success && out.Status == "RINGING" {
				got[i] = out.CallID
			}
		}()
	}
	close(start)
	wg.Wait()
	for i := range n {
		if got[i] == "" || got[i] != got[0] {
			t.Fatalf("burst answers %v", got)
		}
	}
	if st.callCount(t, u.TenantID) != 2 || st.dialJobs(t) != 2 {
		t.Fatalf("%d calls, %d jobs", st.callCount(t, u.TenantID), st.dialJobs(t))
	}
	if n := st.count(t, `SELECT count(*) FROM agents WHERE tenant_id = $1 AND temporary`, u.TenantID); n != 1 {
		t.Fatalf("%d temporary agents", n)
	}
}
