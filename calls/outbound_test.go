package calls

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/parleyhq/parley/agents"
	"github.com/parleyhq/parley/billing"
	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/safehttp"
	"github.com/parleyhq/parley/telephony"
)

// outLines is the tests' calls.Lines: a fixed line per tenant (telephony's real
// service mirrors numbers into LiveKit SIP, which these tests do not need).
type outLines struct {
	mu    sync.Mutex
	lines map[string]telephony.Line
	asked []string // "tenant agent from" of every OutboundLine call
}

func (l *outLines) InboundRoute(context.Context, string) (telephony.Route, error) {
	return telephony.Route{}, telephony.ErrNumberNotFound
}

func (l *outLines) OutboundLine(_ context.Context, tenantID, agentID, from string) (telephony.Line, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.asked = append(l.asked, tenantID+" "+agentID+" "+from)
	line, ok := l.lines[tenantID]
	if !ok {
		return telephony.Line{}, telephony.ErrNoLine
	}
	if from != "" {
		line.Number = from
	}
	return line, nil
}

type outEnv struct {
	*env
	lines  *outLines
	agents *agents.Service
	wallet *billing.Service
}

// newOutEnv is a calls service able to place outbound calls: a River client that only
// inserts (no worker runs, so the dial jobs stay in river_job to be counted), the real
// agents service, fixed lines, and a wallet (enforced when enforce).
func newOutEnv(t *testing.T, enforce bool) *outEnv {
	t.Helper()
	e := newEnv(t)
	jc, err := river.NewClient(riverpgxv5.New(e.pool), &river.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	e.svc.SetJobs(jc)
	box, err := crypt.New(crypt.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	guard, err := safehttp.New(safehttp.Config{AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	ag, err := agents.New(e.pool, agents.Config{}, box, guard, guard)
	if err != nil {
		t.Fatal(err)
	}
	w, err := billing.New(e.pool, billing.Config{Enforce: enforce})
	if err != nil {
		t.Fatal(err)
	}
	lines := &outLines{lines: map[string]telephony.Line{}}
	e.svc.SetOutbound(OutboundDeps{Lines: lines, Wallet: w, Agents: ag})
	return &outEnv{env: e, lines: lines, agents: ag, wallet: w}
}

// tenantWithLine is a tenant whose calls leave from +15550001000 over a SIP trunk.
func (e *outEnv) tenantWithLine(t *testing.T) string {
	t.Helper()
	id := e.tenant(t)
	e.lines.mu.Lock()
	e.lines.lines[id] = telephony.Line{Number: "+15550001000", Provider: telephony.ProviderSIP, SIPTrunkID: "ST_test", NumberID: "num_test"}
	e.lines.mu.Unlock()
	return id
}

// dialJobs counts the call_dial jobs of callID ("" : of every call in the database).
func (e *outEnv) dialJobs(t *testing.T, callID string) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job
		WHERE kind = 'call_dial' AND ($1 = '' OR args->>'call_id' = $1)`, callID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *outEnv) agentCount(t *testing.T, tenantID string) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM agents WHERE tenant_id = $1`, tenantID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCreateOutbound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newOutEnv(t, false)
	ten := e.tenantWithLine(t)
	agent := e.agent(t, ten, "Sales", "active")

	c, err := e.svc.CreateOutbound(ctx, ten, OutboundInput{
		AgentID: agent, ToNumber: " +14155550123 ",
		Variables:  map[string]string{"customer_name": "Ada", "plan": "pro"},
		WebhookURL: "https://example.com/hook", Metadata: map[string]any{"crm_id": 42},
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Direction != DirectionOutbound || c.CallStatus != StatusRegistered || c.FromNumber != "+15550001000" ||
		c.ToNumber != "+14155550123" || c.AgentID != agent || c.AgentName != "Sales" || c.RoomName != RoomName(c.CallID) {
		t.Fatalf("call %+v", c)
	}
	got, err := e.svc.Get(ctx, ten, c.CallID)
	if err != nil {
		t.Fatal(err)
	}
	// What the API answered is what a read shows.
	if jsonOf(t, got) != jsonOf(t, c) {
		t.Fatalf("created\n%s\nread\n%s", jsonOf(t, c), jsonOf(t, got))
	}
	vars, _ := got.Metadata[MetaVariables].(map[string]any)
	if vars["customer_name"] != "Ada" || vars["plan"] != "pro" || got.Metadata[MetaWebhookURL] != "https://example.com/hook" ||
		got.Metadata["crm_id"] != float64(42) {
		t.Fatalf("metadata %v", got.Metadata)
	}
	// The runner's view of the variables: they reach the prompt.
	if cv := CallVariables(got); cv["customer_name"] != "Ada" {
		t.Fatalf("CallVariables %v", cv)
	}
	if n := e.dialJobs(t, c.CallID); n != 1 {
		t.Fatalf("%d dial jobs", n)
	}
	// The line was asked for this agent with no caller ID; an explicit one is passed on.
	c2, err := e.svc.CreateOutbound(ctx, ten, OutboundInput{AgentID: agent, ToNumber: "+14155550124", FromNumber: "+15550001001"})
	if err != nil || c2.FromNumber != "+15550001001" {
		t.Fatalf("%+v, %v", c2, err)
	}
	e.lines.mu.Lock()
	asked := strings.Join(e.lines.asked, ",")
	e.lines.mu.Unlock()
	if asked != ten+" "+agent+" ,"+ten+" "+agent+" +15550001001" {
		t.Fatalf("lines asked %q", asked)
	}
}

func TestCreateOutboundValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newOutEnv(t, false)
	ten := e.tenantWithLine(t)
	agent := e.agent(t, ten, "Sales", "active")
	ok := func(mod func(*OutboundInput)) OutboundInput {
		in := OutboundInput{AgentID: agent, ToNumber: "+14155550123"}
		mod(&in)
		return in
	}
	cases := []struct {
		name  string
		in    OutboundInput
		field string
	}{
		{"no number", ok(func(in *OutboundInput) { in.ToNumber = "" }), "to_number"},
		{"no plus", ok(func(in *OutboundInput) { in.ToNumber = "14155550123" }), "to_number"},
		{"leading zero", ok(func(in *OutboundInput) { in.ToNumber = "+04155550123" }), "to_number"},
		{"too long", ok(func(in *OutboundInput) { in.ToNumber = "+1415555012345678" }), "to_number"},
		{"too short", ok(func(in *OutboundInput) { in.ToNumber = "+1" }), "to_number"},
		{"formatted", ok(func(in *OutboundInput) { in.ToNumber = "+1 (415) 555-0123" }), "to_number"},
		{"bad from", ok(func(in *OutboundInput) { in.FromNumber = "555-0100" }), "from_number"},
		{"no agent", ok(func(in *OutboundInput) { in.AgentID = "" }), "agent_id"},
		{"agent and instruction", ok(func(in *OutboundInput) { in.Instruction = "Sell" }), "instruction"},
		{"ftp webhook", ok(func(in *OutboundInput) { in.WebhookURL = "ftp://example.com/x" }), "webhook_url"},
		{"relative webhook", ok(func(in *OutboundInput) { in.WebhookURL = "/hook" }), "webhook_url"},
		{"webhook credentials", ok(func(in *OutboundInput) { in.WebhookURL = "https://u:p@example.com/" }), "webhook_url"},
		{"variable name", ok(func(in *OutboundInput) { in.Variables = map[string]string{"{{x}}": "y"} }), "variables"},
		{"long variable", ok(func(in *OutboundInput) { in.Variables = map[string]string{"x": strings.Repeat("y", 5000)} }), "variables.x"},
		{"reserved metadata", ok(func(in *OutboundInput) { in.Metadata = map[string]any{"variables": "x"} }), "metadata.variables"},
		{"forged Twilio SID", ok(func(in *OutboundInput) {
			in.Metadata = map[string]any{"twilio_call_sid": "CA0123456789abcdef0123456789abcdef"}
		}), "metadata.twilio_call_sid"},
		{"huge metadata", ok(func(in *OutboundInput) { in.Metadata = map[string]any{"x": strings.Repeat("y", 20000)} }), "metadata"},
		{"key with space", ok(func(in *OutboundInput) { in.IdempotencyKey = "a b" }), "idempotency_key"},
		{"long key", ok(func(in *OutboundInput) { in.IdempotencyKey = strings.Repeat("k", 256) }), "idempotency_key"},
		{"long external id", ok(func(in *OutboundInput) { in.ExternalID = strings.Repeat("e", 256) }), "external_id"},
		{"many outputs", ok(func(in *OutboundInput) {
			in.OutputParameters = map[string]string{}
			for i := range 33 {
				in.OutputParameters[fmt.Sprint("f", i)] = "d"
			}
		}), "output_parameters"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.svc.CreateOutbound(ctx, ten, c.in)
			ee := wantKind(t, err, errs.KindInvalid)
			if _, ok := ee.Fields[c.field]; !ok {
				t.Fatalf("fields %v lack %s", ee.Fields, c.field)
			}
		})
	}
	if n := e.count(t, ten); n != 0 {
		t.Fatalf("%d calls created by invalid requests", n)
	}
	if n := e.dialJobs(t, ""); n != 0 {
		t.Fatalf("%d dial jobs", n)
	}
	// The longest and shortest E.164 numbers are fine.
	for _, n := range []string{"+12", "+123456789012345"} {
		if _, err := e.svc.CreateOutbound(ctx, ten, OutboundInput{AgentID: agent, ToNumber: n}); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
}

func TestCreateOutboundRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newOutEnv(t, false)
	ten, other := e.tenantWithLine(t), e.tenantWithLine(t)
	mine := e.agent(t, ten, "Mine", "active")
	theirs := e.agent(t, other, "Theirs", "active")
	off := e.agent(t, ten, "Off", "inactive")
	noLine := e.tenant(t)
	lonely := e.agent(t, noLine, "Lonely", "active")

	_, err := e.svc.CreateOutbound(ctx, ten, OutboundInput{AgentID: theirs, ToNumber: "+14155550123"})
	wantErr(t, err, ErrAgentNotFound)
	_, err = e.svc.CreateOutbound(ctx, ten, OutboundInput{AgentID: "agent_nope", ToNumber: "+14155550123"})
	wantErr(t, err, ErrAgentNotFound)
	_, err = e.svc.CreateOutbound(ctx, ten, OutboundInput{AgentID: off, ToNumber: "+14155550123"})
	wantErr(t, err, ErrAgentInactive)
	_, err = e.svc.CreateOutbound(ctx, noLine, OutboundInput{AgentID: lonely, ToNumber: "+14155550123"})
	wantErr(t, err, telephony.ErrNoLine)
	for _, id := range []string{ten, other, noLine} {
		if n := e.count(t, id); n != 0 {
			t.Fatalf("tenant %s has %d calls", id, n)
		}
	}
	if n := e.dialJobs(t, ""); n != 0 {
		t.Fatalf("%d dial jobs", n)
	}

	// Without a job client or lines there are no outbound calls at all.
	bare := newEnv(t)
	_, err = bare.svc.CreateOutbound(ctx, ten, OutboundInput{AgentID: mine, ToNumber: "+14155550123"})
	wantErr(t, err, ErrOutboundUnavailable)
}

func TestCreateOutboundBalance(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newOutEnv(t, true)
	ten := e.tenantWithLine(t)
	agent := e.agent(t, ten, "Sales", "active")
	in := OutboundInput{AgentID: agent, ToNumber: "+14155550123"}
	_, err := e.svc.CreateOutbound(ctx, ten, in)
	wantErr(t, err, billing.ErrInsufficientBalance)
	// Nor does an instruction call leave a temporary agent behind.
	_, err = e.svc.CreateOutbound(ctx, ten, OutboundInput{Instruction: "Sell", ToNumber: "+14155550123"})
	wantErr(t, err, billing.ErrInsufficientBalance)
	if n := e.count(t, ten); n != 0 || e.agentCount(t, ten) != 1 {
		t.Fatalf("%d calls, %d agents after refusals", n, e.agentCount(t, ten))
	}
	if _, err := e.wallet.Credit(ctx, ten, 5, "test top-up"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateOutbound(ctx, ten, in); err != nil {
		t.Fatal(err)
	}
}

// The call and its dial job commit together: when the job cannot be inserted, neither
// the call, nor the idempotency key, nor the temporary agent made for it remain.
func TestCreateOutboundAtomic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newOutEnv(t, false)
	ten := e.tenantWithLine(t)
	agent := e.agent(t, ten, "Sales", "active")
	// The job insert fails after the call row was written in the same transaction.
	if _, err := e.pool.Exec(ctx, `
		CREATE FUNCTION refuse_dial() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'no dialing today'; END $$;
		CREATE TRIGGER refuse_dial BEFORE INSERT ON river_job FOR EACH ROW
			WHEN (NEW.kind = 'call_dial') EXECUTE FUNCTION refuse_dial();`); err != nil {
		t.Fatal(err)
	}
	for _, in := range []OutboundInput{
		{AgentID: agent, ToNumber: "+14155550123", IdempotencyKey: "k1"},
		{Instruction: "Sell the pro plan", ToNumber: "+14155550123", IdempotencyKey: "k2"},
	} {
		_, err := e.svc.CreateOutbound(ctx, ten, in)
		if err == nil || !strings.Contains(err.Error(), "no dialing today") {
			t.Fatalf("err = %v", err)
		}
	}
	var keys int
	e.pool.QueryRow(ctx, `SELECT count(*) FROM call_idempotency_keys`).Scan(&keys)
	if n := e.count(t, ten); n != 0 || keys != 0 || e.agentCount(t, ten) != 1 {
		t.Fatalf("after failed inserts: %d calls, %d keys, %d agents", n, keys, e.agentCount(t, ten))
	}
	if _, err := e.pool.Exec(ctx, `DROP TRIGGER refuse_dial ON river_job`); err != nil {
		t.Fatal(err)
	}
	// The same key works once the failure is gone: it was never taken.
	c, err := e.svc.CreateOutbound(ctx, ten, OutboundInput{AgentID: agent, ToNumber: "+14155550123", IdempotencyKey: "k1"})
	if err != nil || e.dialJobs(t, c.CallID) != 1 {
		t.Fatalf("retry: %v", err)
	}
}

func TestCreateOutboundIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newOutEnv(t, false)
	ten, other := e.tenantWithLine(t), e.tenantWithLine(t)
	agent := e.agent(t, ten, "Sales", "active")
	otherAgent := e.agent(t, other, "Sales", "active")
	in := OutboundInput{AgentID: agent, ToNumber: "+14155550123", IdempotencyKey: "retry-1",
		Variables: map[string]string{"a": "1", "b": "2"}}

	first, replayed, err := e.svc.CreateOutboundReplay(ctx, ten, in)
	if err != nil || replayed {
		t.Fatalf("first: %v, replayed %v", err, replayed)
	}
	// The call moves on (the dial worker marks it ringing): a retry still answers as the
	// original did.
	e.pool.Exec(ctx, `UPDATE calls SET call_status = 'ringing' WHERE id = $1`, first.CallID)
	in.Variables = map[string]string{"b": "2", "a": "1"} // same map, built another way
	again, replayed, err := e.svc.CreateOutboundReplay(ctx, ten, in)
	if err != nil || !replayed || jsonOf(t, again) != jsonOf(t, first) {
		t.Fatalf("retry: %v, replayed %v\n%s\n%s", err, replayed, jsonOf(t, again), jsonOf(t, first))
	}
	if e.count(t, ten) != 1 || e.dialJobs(t, "") != 1 {
		t.Fatalf("%d calls, %d jobs after a retry", e.count(t, ten), e.dialJobs(t, ""))
	}

	// The same key with another request is refused, and creates nothing.
	diff := in
	diff.ToNumber = "+14155550199"
	_, _, err = e.svc.CreateOutboundReplay(ctx, ten, diff)
	wantErr(t, err, ErrIdempotencyMismatch)
	if wantKind(t, err, errs.KindInvalid); e.count(t, ten) != 1 {
		t.Fatal("a mismatched key created a call")
	}

	// Keys are per tenant: another tenant's identical key is its own call.
	oc, replayed, err := e.svc.CreateOutboundReplay(ctx, other, OutboundInput{AgentID: otherAgent, ToNumber: "+14155550123", IdempotencyKey: "retry-1"})
	if err != nil || replayed || oc.CallID == first.CallID {
		t.Fatalf("other tenant: %+v %v %v", oc, replayed, err)
	}

	// After 24 hours a key is forgotten: the same request is a new call...
	if _, err := e.pool.Exec(ctx, `UPDATE call_idempotency_keys SET created_at = created_at - interval '25 hours'
		WHERE tenant_id = $1`, ten); err != nil {
		t.Fatal(err)
	}
	fresh, replayed, err := e.svc.CreateOutboundReplay(ctx, ten, in)
	if err != nil || replayed || fresh.CallID == first.CallID {
		t.Fatalf("expired key: %v %v", replayed, err)
	}
	// ... and the sweep drops only expired keys (none now: the reuse renewed it).
	if _, err := e.pool.Exec(ctx, `UPDATE call_idempotency_keys SET created_at = created_at - interval '25 hours'
		WHERE tenant_id = $1`, other); err != nil {
		t.Fatal(err)
	}
	n, err := e.svc.DeleteExpiredIdempotencyKeys(ctx)
	if err != nil || n != 1 {
		t.Fatalf("swept %d, %v", n, err)
	}
	var left string
	e.pool.QueryRow(ctx, `SELECT string_agg(tenant_id || ' ' || key, ',') FROM call_idempotency_keys`).Scan(&left)
	if left != ten+" retry-1" {
		t.Fatalf("keys left: %q", left)
	}
}

// Concurrent duplicates (a client retrying before the first answer came back) create
// one call and one dial job; every request gets that call. With an instruction, the
// temporary agents the losers made are deleted again.
func TestCreateOutboundIdempotentConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newOutEnv(t, false)
	ten := e.tenantWithLine(t)
	agent := e.agent(t, ten, "Sales", "active")
	for _, in := range []OutboundInput{
		{AgentID: agent, ToNumber: "+14155550123", IdempotencyKey: "burst-agent"},
		{Instruction: "Remind them of the appointment", ToNumber: "+14155550123", IdempotencyKey: "burst-instruction"},
	} {
		const n = 12
		var wg sync.WaitGroup
		type result struct {
			c        Call
			replayed bool
			err      error
		}
		res := make([]result, n)
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				c, r, err := e.svc.CreateOutboundReplay(ctx, ten, in)
				res[i] = result{c, r, err}
			}()
		}
		close(start)
		wg.Wait()
		created := 0
		for _, r := range res {
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.c.CallID != res[0].c.CallID {
				t.Fatalf("two calls for one key: %s and %s", r.c.CallID, res[0].c.CallID)
			}
			if !r.replayed {
				created++
			}
		}
		if created != 1 || e.dialJobs(t, res[0].c.CallID) != 1 {
			t.Fatalf("%s: %d created, %d jobs", in.IdempotencyKey, created, e.dialJobs(t, res[0].c.CallID))
		}
	}
	if n := e.count(t, ten); n != 2 || e.dialJobs(t, "") != 2 {
		t.Fatalf("%d calls, %d jobs", n, e.dialJobs(t, ""))
	}
	var temps int
	e.pool.QueryRow(ctx, `SELECT count(*) FROM agents WHERE tenant_id = $1 AND temporary`, ten).Scan(&temps)
	if all := e.agentCount(t, ten); all != 2 || temps != 1 {
		t.Fatalf("%d agents, %d temporary; want the real one and one temporary", all, temps)
	}
}

func TestCreateOutboundInstruction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newOutEnv(t, false)
	ten := e.tenantWithLine(t)
	c, err := e.svc.CreateOutbound(ctx, ten, OutboundInput{
		Instruction: "You are Sam from Acme. Confirm {{customer_name}}'s delivery.", ToNumber: "+14155550123",
		Variables: map[string]string{"customer_name": "Ada"}, ExternalID: "order-77",
		OutputParameters: map[string]string{"confirmed": "whether the delivery was confirmed"},
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := e.agents.Get(ctx, ten, c.AgentID)
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "Call24x7 instruction "+c.CallID || c.AgentName != a.Name || a.Status != "active" ||
		a.ResponseEngine.SystemPrompt != "You are Sam from Acme. Confirm {{customer_name}}'s delivery." {
		t.Fatalf("temporary agent %+v", a)
	}
	var temporary bool
	e.pool.QueryRow(ctx, `SELECT temporary FROM agents WHERE id = $1`, a.ID).Scan(&temporary)
	if !temporary {
		t.Fatal("the agent is not marked temporary")
	}
	got, _ := e.svc.Get(ctx, ten, c.CallID)
	if got.Metadata[MetaTemporaryAgent] != true || got.Metadata[MetaExternalID] != "order-77" ||
		outputTemplate(got.Metadata)["confirmed"] != "whether the delivery was confirmed" {
		t.Fatalf("metadata %v", got.Metadata)
	}
	// An instruction the agents service refuses is named as such.
	_, err = e.svc.CreateOutbound(ctx, ten, OutboundInput{Instruction: strings.Repeat("x", 100_001), ToNumber: "+14155550123"})
	if ee := wantKind(t, err, errs.KindInvalid); ee.Fields["instruction"] == "" {
		t.Fatalf("fields %v", ee.Fields)
	}
	// A temporary agent whose call failed to insert is gone; here, the one above stays.
	if n := e.agentCount(t, ten); n != 1 {
		t.Fatalf("%d agents", n)
	}
}

// The agent is checked in the insert itself: deactivated between the check and the
// insert, the call is still refused (and nothing is left half-written).
func TestCreateOutboundAgentRace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newOutEnv(t, false)
	ten := e.tenantWithLine(t)
	agent := e.agent(t, ten, "Sales", "active")
	c := Call{CallID: "call_race", TenantID: ten, AgentID: agent, ToNumber: "+14155550123", FromNumber: "+15550001000",
		RoomName: RoomName("call_race"), CreatedAt: time.Now().UTC()}
	e.pool.Exec(ctx, `UPDATE agents SET status = 'inactive' WHERE id = $1`, agent)
	_, _, err := e.svc.insertOutbound(ctx, c, []byte(`{}`), "race", []byte("h"), "")
	wantErr(t, err, ErrAgentInactive)
	e.pool.Exec(ctx, `DELETE FROM agents WHERE id = $1`, agent)
	_, _, err = e.svc.insertOutbound(ctx, c, []byte(`{}`), "race", []byte("h"), "")
	wantErr(t, err, ErrAgentNotFound)
	var keys int
	e.pool.QueryRow(ctx, `SELECT count(*) FROM call_idempotency_keys`).Scan(&keys)
	if e.count(t, ten) != 0 || keys != 0 || e.dialJobs(t, "") != 0 {
		t.Fatal("a refused insert left rows behind")
	}
}
