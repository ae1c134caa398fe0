package telephony_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/livekit/protocol/livekit"

	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/internal/safehttp"
	"github.com/parleyhq/parley/telephony"
)

// lkInbound returns LiveKit's copy of an inbound trunk (nil when it does not exist).
func (e *env) lkInbound(id string) *livekit.SIPInboundTrunkInfo {
	e.t.Helper()
	res, err := e.sip.ListSIPInboundTrunk(context.Background(), &livekit.ListSIPInboundTrunkRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, t := range res.Items {
		if t.SipTrunkId == id {
			return t
		}
	}
	return nil
}

func (e *env) lkOutbound(id string) *livekit.SIPOutboundTrunkInfo {
	e.t.Helper()
	res, err := e.sip.ListSIPOutboundTrunk(context.Background(), &livekit.ListSIPOutboundTrunkRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, t := range res.Items {
		if t.SipTrunkId == id {
			return t
		}
	}
	return nil
}

// lkRules returns LiveKit's dispatch rules that belong to this env's service.
func (e *env) lkRules() []*livekit.SIPDispatchRuleInfo {
	e.t.Helper()
	res, err := e.sip.ListSIPDispatchRule(context.Background(), &livekit.ListSIPDispatchRuleRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*livekit.SIPDispatchRuleInfo
	for _, r := range res.Items {
		if strings.HasPrefix(r.Name, "parley/"+e.agent+"/") {
			out = append(out, r)
		}
	}
	return out
}

// numberRules returns this env's dispatch rules that list numbers: the bound numbers'
// rules, not the trunks'.
func (e *env) numberRules() []*livekit.SIPDispatchRuleInfo {
	e.t.Helper()
	return slices.DeleteFunc(e.lkRules(), func(r *livekit.SIPDispatchRuleInfo) bool { return len(r.Numbers) == 0 })
}

// wantTrunkRule checks that LiveKit holds the trunk's own dispatch rule as the contract
// says: individual rooms call-*, the trunk's inbound trunk, no numbers, Parley's agent
// with metadata {"unbound":true}.
func (e *env) wantTrunkRule(tr telephony.Trunk) {
	e.t.Helper()
	if tr.LiveKitDispatchRuleID == "" {
		e.t.Fatalf("trunk %s has no dispatch rule", tr.ID)
	}
	for _, r := range e.lkRules() {
		if r.SipDispatchRuleId != tr.LiveKitDispatchRuleID {
			continue
		}
		a := r.GetRoomConfig().GetAgents()
		if r.GetRule().GetDispatchRuleIndividual().GetRoomPrefix() != "call-" || r.GetRule().GetDispatchRuleIndividual().GetPin() != "" ||
			!slices.Equal(r.TrunkIds, []string{tr.LiveKitInboundTrunkID}) || len(r.Numbers) != 0 ||
			len(a) != 1 || a[0].AgentName != e.agent || a[0].Metadata != `{"unbound":true}` {
			e.t.Errorf("trunk rule %v", r)
		}
		return
	}
	e.t.Errorf("trunk rule %s not in LiveKit", tr.LiveKitDispatchRuleID)
}

func (e *env) trunk(tenantID string, in telephony.TrunkInput) telephony.Trunk {
	e.t.Helper()
	if in.Name == nil {
		in.Name = ptr("carrier")
	}
	tr, err := e.svc.CreateTrunk(context.Background(), tenantID, in)
	if err != nil {
		e.t.Fatal(err)
	}
	return tr
}

func wantKind(t *testing.T, err error, kind errs.Kind, fields ...string) {
	t.Helper()
	e, ok := errs.As(err)
	if !ok || e.Kind != kind {
		t.Fatalf("error %v, want kind %d", err, kind)
	}
	for _, f := range fields {
		if _, ok := e.Fields[f]; !ok {
			t.Fatalf("error %v does not name field %q", err, f)
		}
	}
}

// A trunk is mirrored in LiveKit SIP as it is created, changed and deleted; its
// passwords reach LiveKit but are sealed in the database and never shown.
func TestTrunkLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tenant := e.tenant()
	tr := e.trunk(tenant, telephony.TrunkInput{
		Name: ptr("Carrier A"), OutboundAddress: ptr("sip.example.com:5080"), OutboundTransport: ptr("tcp"),
		OutboundUsername: ptr("out-user"), OutboundPassword: ptr("out-secret-1"),
		InboundAddresses: &[]string{"192.0.2.10", "198.51.100.0/24"}, InboundUsername: ptr("in-user"), InboundPassword: ptr("in-secret-1"),
	})
	if !strings.HasPrefix(tr.ID, "trk_") || tr.LiveKitInboundTrunkID == "" || tr.LiveKitOutboundTrunkID == "" {
		t.Fatalf("trunk %+v", tr)
	}
	in := e.lkInbound(tr.LiveKitInboundTrunkID)
	if in == nil {
		t.Fatal("no inbound trunk in LiveKit")
	}
	if !slices.Equal(in.AllowedAddresses, []string{"192.0.2.10", "198.51.100.0/24"}) || in.AuthUsername != "in-user" || in.AuthPassword != "in-secret-1" {
		t.Errorf("inbound trunk %v", in)
	}
	// No number at all: LiveKit must not take the trunk for a wildcard.
	if len(in.Numbers) != 1 || telephony.ValidNumber(in.Numbers[0]) {
		t.Errorf("inbound trunk numbers %v, want only the placeholder", in.Numbers)
	}
	e.wantTrunkRule(tr)
	if r := e.lkRules(); len(r) != 1 {
		t.Errorf("rules %v, want only the trunk's", r)
	}
	out := e.lkOutbound(tr.LiveKitOutboundTrunkID)
	if out == nil {
		t.Fatal("no outbound trunk in LiveKit")
	}
	if out.Address != "sip.example.com:5080" || out.Transport != livekit.SIPTransport_SIP_TRANSPORT_TCP ||
		out.AuthUsername != "out-user" || out.AuthPassword != "out-secret-1" {
		t.Errorf("outbound trunk %v", out)
	}

	// Sealed at rest.
	var outPass, inPass string
	if err := e.pool.QueryRow(ctx, `SELECT outbound_password, inbound_password FROM sip_trunks WHERE id = $1`, tr.ID).Scan(&outPass, &inPass); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{outPass, inPass} {
		if !crypt.IsSealed(p) || strings.Contains(p, "secret") {
			t.Errorf("stored password %q is not sealed", p)
		}
	}
	// Never shown.
	got, err := e.svc.GetTrunk(ctx, tenant, tr.ID)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(got)
	if strings.Contains(string(raw), "secret") || !strings.Contains(string(raw), `"outbound_password":"********"`) {
		t.Errorf("trunk JSON %s", raw)
	}

	// Changing the inbound side and dropping the outbound address: the inbound trunk is
	// replaced under the same ID, the outbound one goes.
	up, err := e.svc.UpdateTrunk(ctx, tenant, tr.ID, telephony.TrunkInput{
		OutboundAddress: ptr(""), InboundAddresses: &[]string{"203.0.113.7"}, InboundPassword: ptr(telephony.Mask),
	})
	if err != nil {
		t.Fatal(err)
	}
	if up.LiveKitInboundTrunkID != tr.LiveKitInboundTrunkID || up.LiveKitOutboundTrunkID != "" || !up.UpdatedAt.After(tr.UpdatedAt) ||
		up.LiveKitDispatchRuleID != tr.LiveKitDispatchRuleID {
		t.Errorf("updated trunk %+v", up)
	}
	e.wantTrunkRule(up)
	in = e.lkInbound(tr.LiveKitInboundTrunkID)
	if in == nil || !slices.Equal(in.AllowedAddresses, []string{"203.0.113.7"}) || in.AuthPassword != "in-secret-1" {
		t.Errorf("inbound trunk after update %v (Mask must keep the password)", in)
	}
	if e.lkOutbound(tr.LiveKitOutboundTrunkID) != nil {
		t.Error("outbound trunk still in LiveKit after its address was removed")
	}
	// An outbound address again: a new outbound trunk.
	up, err = e.svc.UpdateTrunk(ctx, tenant, tr.ID, telephony.TrunkInput{OutboundAddress: ptr("10.0.0.5")})
	if err != nil {
		t.Fatal(err)
	}
	if out := e.lkOutbound(up.LiveKitOutboundTrunkID); out == nil || out.Address != "10.0.0.5" || out.AuthPassword != "out-secret-1" {
		t.Errorf("recreated outbound trunk %v", out)
	}

	list, total, err := e.svc.ListTrunks(ctx, tenant, 10, 0)
	if err != nil || total != 1 || len(list) != 1 || list[0].ID != tr.ID {
		t.Fatalf("list %v %d %v", list, total, err)
	}

	if err := e.svc.DeleteTrunk(ctx, tenant, tr.ID); err != nil {
		t.Fatal(err)
	}
	if e.lkInbound(up.LiveKitInboundTrunkID) != nil || e.lkOutbound(up.LiveKitOutboundTrunkID) != nil {
		t.Error("LiveKit trunks remain after delete")
	}
	if r := e.lkRules(); len(r) != 0 {
		t.Errorf("rules remain after delete: %v", r)
	}
	if _, err := e.svc.GetTrunk(ctx, tenant, tr.ID); !errors.Is(err, telephony.ErrTrunkNotFound) {
		t.Errorf("get after delete: %v", err)
	}
	if err := e.svc.DeleteTrunk(ctx, tenant, tr.ID); !errors.Is(err, telephony.ErrTrunkNotFound) {
		t.Errorf("second delete: %v", err)
	}
}

// Every number is in its inbound trunk's numbers, bound or not, so that the trunk's rule
// catches calls to unbound ones. Binding a SIP number gives it a dispatch rule exactly
// as the calls contract says and unbinding takes it away, neither touching the trunk's
// numbers; deleting the number takes both away.
func TestBindUnbind(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tenant := e.tenant()
	agent := e.agentOf(tenant)
	tr := e.trunk(tenant, telephony.TrunkInput{OutboundAddress: ptr("sip.example.com"), InboundAddresses: &[]string{"127.0.0.1"}})
	n1, n2 := number(), number()
	p1, err := e.svc.CreateNumber(ctx, tenant, telephony.NumberInput{PhoneNumber: n1, TrunkID: tr.ID, Nickname: "main"})
	if err != nil {
		t.Fatal(err)
	}
	if p1.AgentID != nil || p1.Provider != "sip" || *p1.TrunkID != tr.ID || !strings.HasPrefix(p1.ID, "pn_") {
		t.Fatalf("number %+v", p1)
	}
	// Created but unbound: in both trunks' numbers; only the trunk's rule.
	if in := e.lkInbound(tr.LiveKitInboundTrunkID); !slices.Equal(in.Numbers, []string{n1}) {
		t.Errorf("inbound trunk numbers %v, want the unbound number", in.Numbers)
	}
	if out := e.lkOutbound(tr.LiveKitOutboundTrunkID); !slices.Equal(out.Numbers, []string{n1}) {
		t.Errorf("outbound trunk numbers %v", out.Numbers)
	}
	if r := e.numberRules(); len(r) != 0 {
		t.Fatalf("rules before binding: %v", r)
	}
	e.wantTrunkRule(tr)

	b1, err := e.svc.Bind(ctx, tenant, n1, agent)
	if err != nil {
		t.Fatal(err)
	}
	if b1.AgentID == nil || *b1.AgentID != agent || b1.LiveKitDispatchRuleID == "" {
		t.Fatalf("bound %+v", b1)
	}
	rules := e.numberRules()
	if len(rules) != 1 || len(e.lkRules()) != 2 {
		t.Fatalf("rules %v", e.lkRules())
	}
	r := rules[0]
	ind := r.GetRule().GetDispatchRuleIndividual()
	if r.SipDispatchRuleId != b1.LiveKitDispatchRuleID || ind == nil || ind.RoomPrefix != "call-" ||
		!slices.Equal(r.TrunkIds, []string{tr.LiveKitInboundTrunkID}) || !slices.Equal(r.Numbers, []string{n1}) {
		t.Errorf("rule %v", r)
	}
	if a := r.GetRoomConfig().GetAgents(); len(a) != 1 || a[0].AgentName != e.agent || a[0].Metadata != `{"phone_number":"`+n1+`"}` {
		t.Errorf("rule agents %v", a)
	}
	if in := e.lkInbound(tr.LiveKitInboundTrunkID); !slices.Equal(in.Numbers, []string{n1}) {
		t.Errorf("inbound numbers after binding %v", in.Numbers)
	}
	e.wantTrunkRule(tr)
	// Binding again (another agent) keeps the rule: it names the number only.
	agent2 := e.agentOf(tenant)
	b1b, err := e.svc.Bind(ctx, tenant, p1.ID, agent2) // by ID, as Call2Me's SDKs do
	if err != nil {
		t.Fatal(err)
	}
	if *b1b.AgentID != agent2 || b1b.LiveKitDispatchRuleID != b1.LiveKitDispatchRuleID {
		t.Errorf("rebound %+v", b1b)
	}

	if _, err := e.svc.CreateNumber(ctx, tenant, telephony.NumberInput{PhoneNumber: n2, TrunkID: tr.ID, AgentID: agent}); err != nil {
		t.Fatal(err)
	}
	if in := e.lkInbound(tr.LiveKitInboundTrunkID); !slices.Equal(in.Numbers, sorted(n1, n2)) {
		t.Errorf("inbound numbers %v, want both", in.Numbers)
	}
	if len(e.numberRules()) != 2 {
		t.Errorf("want two number rules: %v", e.lkRules())
	}

	u1, err := e.svc.Unbind(ctx, tenant, n1)
	if err != nil {
		t.Fatal(err)
	}
	if u1.AgentID != nil || u1.LiveKitDispatchRuleID != "" {
		t.Errorf("unbound %+v", u1)
	}
	if in := e.lkInbound(tr.LiveKitInboundTrunkID); !slices.Equal(in.Numbers, sorted(n1, n2)) {
		t.Errorf("inbound numbers after unbind %v, want both still", in.Numbers)
	}
	for _, r := range e.lkRules() {
		if slices.Contains(r.Numbers, n1) {
			t.Errorf("rule for the unbound number remains: %v", r)
		}
	}
	if len(e.numberRules()) != 1 {
		t.Errorf("number rules after unbind %v", e.numberRules())
	}
	e.wantTrunkRule(tr)

	if err := e.svc.DeleteTrunk(ctx, tenant, tr.ID); !errors.Is(err, telephony.ErrTrunkInUse) {
		t.Errorf("delete trunk in use: %v", err)
	}
	if err := e.svc.DeleteNumber(ctx, tenant, n2); err != nil {
		t.Fatal(err)
	}
	if len(e.numberRules()) != 0 {
		t.Errorf("rules after deleting the bound number: %v", e.lkRules())
	}
	if in := e.lkInbound(tr.LiveKitInboundTrunkID); !slices.Equal(in.Numbers, []string{n1}) {
		t.Errorf("inbound numbers after deleting %s: %v", n2, in.Numbers)
	}
	if out := e.lkOutbound(tr.LiveKitOutboundTrunkID); !slices.Equal(out.Numbers, []string{n1}) {
		t.Errorf("outbound numbers %v", out.Numbers)
	}
	// Deleting the agent unbinds (agent_id is set NULL); the route says so.
	if _, err := e.svc.Bind(ctx, tenant, n1, agent); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `DELETE FROM agents WHERE id = $1`, agent); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.InboundRoute(ctx, n1); !errors.Is(err, telephony.ErrUnbound) {
		t.Errorf("route of a number whose agent was deleted: %v", err)
	}
	// The last number goes: the placeholder is back, the trunk's rule stays.
	if err := e.svc.DeleteNumber(ctx, tenant, n1); err != nil {
		t.Fatal(err)
	}
	if in := e.lkInbound(tr.LiveKitInboundTrunkID); len(in.Numbers) != 1 || telephony.ValidNumber(in.Numbers[0]) {
		t.Errorf("inbound numbers with no numbers %v, want only the placeholder", in.Numbers)
	}
	if len(e.numberRules()) != 0 {
		t.Errorf("rules after deleting every number: %v", e.lkRules())
	}
	e.wantTrunkRule(tr)
}

func sorted(s ...string) []string { slices.Sort(s); return s }

// Every rule a request breaks is a 422 naming the field; references to what the
// tenant does not have are 404s.
func TestValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tenant, other := e.tenant(), e.tenant()
	tr := e.trunk(tenant, telephony.TrunkInput{})
	otherTrunk := e.trunk(other, telephony.TrunkInput{})
	otherAgent := e.agentOf(other)
	for _, tc := range []struct {
		name   string
		in     telephony.TrunkInput
		fields []string
	}{
		{"no name", telephony.TrunkInput{Name: ptr(" ")}, []string{"name"}},
		{"sip uri", telephony.TrunkInput{Name: ptr("x"), OutboundAddress: ptr("sip:foo@example.com")}, []string{"outbound_address"}},
		{"bad port", telephony.TrunkInput{Name: ptr("x"), OutboundAddress: ptr("example.com:99999")}, []string{"outbound_address"}},
		{"bad host", telephony.TrunkInput{Name: ptr("x"), OutboundAddress: ptr("exa_mple.com")}, []string{"outbound_address"}},
		{"transport", telephony.TrunkInput{Name: ptr("x"), OutboundTransport: ptr("sctp")}, []string{"outbound_transport"}},
		{"cidr", telephony.TrunkInput{Name: ptr("x"), InboundAddresses: &[]string{"10.0.0.0/33", "nope"}}, []string{"inbound_allowed_addresses"}},
		{"half auth", telephony.TrunkInput{Name: ptr("x"), InboundUsername: ptr("u")}, []string{"inbound_password"}},
		{"password without user", telephony.TrunkInput{Name: ptr("x"), OutboundPassword: ptr("p")}, []string{"outbound_username"}},
		{"all at once", telephony.TrunkInput{Name: ptr(""), OutboundTransport: ptr("x"), OutboundAddress: ptr("a b")}, []string{"name", "outbound_transport", "outbound_address"}},
	} {
		_, err := e.svc.CreateTrunk(ctx, tenant, tc.in)
		t.Run("trunk "+tc.name, func(t *testing.T) { wantKind(t, err, errs.KindInvalid, tc.fields...) })
	}
	for _, tc := range []struct {
		name   string
		in     telephony.NumberInput
		fields []string
	}{
		{"missing", telephony.NumberInput{TrunkID: tr.ID}, []string{"phone_number"}},
		{"not e164", telephony.NumberInput{PhoneNumber: "0155501234", TrunkID: tr.ID}, []string{"phone_number"}},
		{"too long", telephony.NumberInput{PhoneNumber: "+1234567890123456", TrunkID: tr.ID}, []string{"phone_number"}},
		{"provider", telephony.NumberInput{PhoneNumber: number(), Provider: "skype", TrunkID: tr.ID}, []string{"provider"}},
		{"sip without trunk", telephony.NumberInput{PhoneNumber: number()}, []string{"trunk_id"}},
	} {
		_, err := e.svc.CreateNumber(ctx, tenant, tc.in)
		t.Run("number "+tc.name, func(t *testing.T) { wantKind(t, err, errs.KindInvalid, tc.fields...) })
	}
	// Another tenant's trunk or agent is not found.
	if _, err := e.svc.CreateNumber(ctx, tenant, telephony.NumberInput{PhoneNumber: number(), TrunkID: otherTrunk.ID}); !errors.Is(err, telephony.ErrTrunkNotFound) {
		t.Errorf("other tenant's trunk: %v", err)
	}
	n := number()
	if _, err := e.svc.CreateNumber(ctx, tenant, telephony.NumberInput{PhoneNumber: n, TrunkID: tr.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Bind(ctx, tenant, n, otherAgent); !errors.Is(err, telephony.ErrAgentNotFound) {
		t.Errorf("other tenant's agent: %v", err)
	}
	// A number belongs to one tenant only.
	if _, err := e.svc.CreateNumber(ctx, other, telephony.NumberInput{PhoneNumber: n, TrunkID: otherTrunk.ID}); !errors.Is(err, telephony.ErrNumberTaken) {
		t.Errorf("same number in another tenant: %v", err)
	}
	// …and is invisible to the others.
	if _, err := e.svc.GetNumber(ctx, other, n); !errors.Is(err, telephony.ErrNumberNotFound) {
		t.Errorf("other tenant's number: %v", err)
	}
	if _, err := e.svc.Unbind(ctx, other, n); !errors.Is(err, telephony.ErrNumberNotFound) {
		t.Errorf("unbind other tenant's number: %v", err)
	}
	if err := e.svc.DeleteNumber(ctx, other, n); !errors.Is(err, telephony.ErrNumberNotFound) {
		t.Errorf("delete other tenant's number: %v", err)
	}
	if _, err := e.svc.UpdateTrunk(ctx, other, tr.ID, telephony.TrunkInput{Name: ptr("mine")}); !errors.Is(err, telephony.ErrTrunkNotFound) {
		t.Errorf("update other tenant's trunk: %v", err)
	}
}

// When LiveKit refuses a step half-way, the steps already taken are undone and the
// database is unchanged: here a rule another installation made for the same trunk and
// number makes LiveKit refuse the number's rule after the inbound trunk had already
// been given the number.
func TestCompensation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tenant := e.tenant()
	agent := e.agentOf(tenant)
	tr := e.trunk(tenant, telephony.TrunkInput{InboundAddresses: &[]string{"127.0.0.1"}})
	n := number()
	before := e.lkInbound(tr.LiveKitInboundTrunkID)
	foreign, err := e.sip.CreateSIPDispatchRule(ctx, &livekit.CreateSIPDispatchRuleRequest{DispatchRule: &livekit.SIPDispatchRuleInfo{
		Name: "someone else", TrunkIds: []string{tr.LiveKitInboundTrunkID}, Numbers: []string{n},
		Rule: &livekit.SIPDispatchRule{Rule: &livekit.SIPDispatchRule_DispatchRuleIndividual{
			DispatchRuleIndividual: &livekit.SIPDispatchRuleIndividual{RoomPrefix: "x-"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.CreateNumber(ctx, tenant, telephony.NumberInput{PhoneNumber: n, TrunkID: tr.ID, AgentID: agent})
	wantKind(t, err, errs.KindConflict)
	if _, err := e.svc.GetNumber(ctx, tenant, n); !errors.Is(err, telephony.ErrNumberNotFound) {
		t.Errorf("number stored by a failed create: %v", err)
	}
	if after := e.lkInbound(tr.LiveKitInboundTrunkID); !slices.Equal(after.Numbers, before.Numbers) {
		t.Errorf("inbound trunk numbers %v after a failed create, want %v restored", after.Numbers, before.Numbers)
	}
	// Unbound, the number needs no rule of its own; binding it fails the same way.
	if _, err := e.svc.CreateNumber(ctx, tenant, telephony.NumberInput{PhoneNumber: n, TrunkID: tr.ID}); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Bind(ctx, tenant, n, agent)
	wantKind(t, err, errs.KindConflict)
	got, err := e.svc.GetNumber(ctx, tenant, n)
	if err != nil {
		t.Fatal(err)
	}
	if got.AgentID != nil || got.LiveKitDispatchRuleID != "" {
		t.Errorf("number changed by a failed bind: %+v", got)
	}
	if after := e.lkInbound(tr.LiveKitInboundTrunkID); !slices.Equal(after.Numbers, []string{n}) {
		t.Errorf("inbound trunk numbers %v after a failed bind", after.Numbers)
	}
	if r := e.numberRules(); len(r) != 0 {
		t.Errorf("rules left by a failed bind: %v", r)
	}
	e.wantTrunkRule(tr)
	// Once the obstacle is gone the same bind succeeds.
	if _, err := e.sip.DeleteSIPDispatchRule(ctx, &livekit.DeleteSIPDispatchRuleRequest{SipDispatchRuleId: foreign.SipDispatchRuleId}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Bind(ctx, tenant, n, agent); err != nil {
		t.Fatal(err)
	}
}

// Reconcile recreates what LiveKit lost (a restarted, non-persistent Redis) and removes
// what no row refers to, leaving other installations' objects alone.
func TestReconcile(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tenant := e.tenant()
	agent := e.agentOf(tenant)
	tr := e.trunk(tenant, telephony.TrunkInput{OutboundAddress: ptr("sip.example.com"), InboundAddresses: &[]string{"127.0.0.1"}})
	n := number()
	p, err := e.svc.CreateNumber(ctx, tenant, telephony.NumberInput{PhoneNumber: n, TrunkID: tr.ID, AgentID: agent})
	if err != nil {
		t.Fatal(err)
	}
	// A second bound number whose rule survives: it must follow the recreated trunk.
	n2 := number()
	p2, err := e.svc.CreateNumber(ctx, tenant, telephony.NumberInput{PhoneNumber: n2, TrunkID: tr.ID, AgentID: agent})
	if err != nil {
		t.Fatal(err)
	}
	// LiveKit loses the inbound trunk, its rule and the first number's rule.
	if _, err := e.sip.DeleteSIPTrunk(ctx, &livekit.DeleteSIPTrunkRequest{SipTrunkId: tr.LiveKitInboundTrunkID}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{p.LiveKitDispatchRuleID, tr.LiveKitDispatchRuleID} {
		if _, err := e.sip.DeleteSIPDispatchRule(ctx, &livekit.DeleteSIPDispatchRuleRequest{SipDispatchRuleId: id}); err != nil {
			t.Fatal(err)
		}
	}
	// An orphan of ours and an object of someone else's.
	orphan, err := e.sip.CreateSIPInboundTrunk(ctx, &livekit.CreateSIPInboundTrunkRequest{Trunk: &livekit.SIPInboundTrunkInfo{
		Name: "parley/" + e.agent + "/trk_gone", Numbers: []string{number()}}})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := e.sip.CreateSIPInboundTrunk(ctx, &livekit.CreateSIPInboundTrunkRequest{Trunk: &livekit.SIPInboundTrunkInfo{
		Name: "parley/another-" + e.agent + "/trk_x", Numbers: []string{number()}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.sip.DeleteSIPTrunk(context.Background(), &livekit.DeleteSIPTrunkRequest{SipTrunkId: foreign.SipTrunkId})
	})

	if err := e.svc.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.GetTrunk(ctx, tenant, tr.ID)
	if err != nil {
		t.Fatal(err)
	}
	in := e.lkInbound(got.LiveKitInboundTrunkID)
	if got.LiveKitInboundTrunkID == tr.LiveKitInboundTrunkID || in == nil || !slices.Equal(in.Numbers, sorted(n, n2)) {
		t.Errorf("inbound trunk not recreated: %+v %v", got, in)
	}
	if got.LiveKitDispatchRuleID == tr.LiveKitDispatchRuleID {
		t.Errorf("trunk rule not recreated: %+v", got)
	}
	e.wantTrunkRule(got)
	pn, err := e.svc.GetNumber(ctx, tenant, n)
	if err != nil {
		t.Fatal(err)
	}
	rules := e.lkRules()
	byID := map[string]*livekit.SIPDispatchRuleInfo{}
	for _, r := range rules {
		byID[r.SipDispatchRuleId] = r
	}
	if r := byID[pn.LiveKitDispatchRuleID]; len(rules) != 3 || pn.LiveKitDispatchRuleID == p.LiveKitDispatchRuleID || r == nil ||
		!slices.Equal(r.TrunkIds, []string{got.LiveKitInboundTrunkID}) || !slices.Equal(r.Numbers, []string{n}) {
		t.Errorf("rule not recreated: %+v %v", pn, rules)
	}
	if r := byID[p2.LiveKitDispatchRuleID]; r == nil || !slices.Equal(r.TrunkIds, []string{got.LiveKitInboundTrunkID}) {
		t.Errorf("surviving rule %s not moved to the new inbound trunk: %v", p2.LiveKitDispatchRuleID, rules)
	}
	if e.lkInbound(orphan.SipTrunkId) != nil {
		t.Error("orphan trunk not removed")
	}
	if e.lkInbound(foreign.SipTrunkId) == nil {
		t.Error("another installation's trunk removed")
	}
}

// A trunk rule LiveKit lost is recreated by the next change to the trunk, even when a
// leftover of this installation (a rule created by a change that crashed before its
// commit) claims the same trunk, which LiveKit would otherwise refuse as a duplicate.
func TestTrunkRuleRepair(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tenant := e.tenant()
	tr := e.trunk(tenant, telephony.TrunkInput{InboundAddresses: &[]string{"127.0.0.1"}})
	if _, err := e.sip.DeleteSIPDispatchRule(ctx, &livekit.DeleteSIPDispatchRuleRequest{SipDispatchRuleId: tr.LiveKitDispatchRuleID}); err != nil {
		t.Fatal(err)
	}
	leftover, err := e.sip.CreateSIPDispatchRule(ctx, &livekit.CreateSIPDispatchRuleRequest{DispatchRule: &livekit.SIPDispatchRuleInfo{
		Name: "parley/" + e.agent + "/" + tr.ID, TrunkIds: []string{tr.LiveKitInboundTrunkID},
		Rule: &livekit.SIPDispatchRule{Rule: &livekit.SIPDispatchRule_DispatchRuleIndividual{
			DispatchRuleIndividual: &livekit.SIPDispatchRuleIndividual{RoomPrefix: "call-"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	up, err := e.svc.UpdateTrunk(ctx, tenant, tr.ID, telephony.TrunkInput{Name: ptr("renamed")})
	if err != nil {
		t.Fatal(err)
	}
	if up.LiveKitDispatchRuleID == tr.LiveKitDispatchRuleID || up.LiveKitDispatchRuleID == leftover.SipDispatchRuleId {
		t.Errorf("trunk rule %s, want a new one", up.LiveKitDispatchRuleID)
	}
	e.wantTrunkRule(up)
	if r := e.lkRules(); len(r) != 1 {
		t.Errorf("rules %v, want only the new trunk rule", r)
	}
}

// InboundRoute finds the tenant and agent of a number; OutboundLine picks a number that
// can dial out.
func TestRoutesAndLines(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tenant := e.tenant()
	agent, agent2 := e.agentOf(tenant), e.agentOf(tenant)
	inOnly := e.trunk(tenant, telephony.TrunkInput{InboundAddresses: &[]string{"127.0.0.1"}})
	both := e.trunk(tenant, telephony.TrunkInput{OutboundAddress: ptr("sip.example.com")})
	nIn, nOut, nTw := number(), number(), number()
	mustNumber := func(in telephony.NumberInput) telephony.PhoneNumber {
		p, err := e.svc.CreateNumber(ctx, tenant, in)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	pIn := mustNumber(telephony.NumberInput{PhoneNumber: nIn, TrunkID: inOnly.ID, AgentID: agent})

	if _, err := e.svc.OutboundLine(ctx, tenant, agent, ""); !errors.Is(err, telephony.ErrNoLine) {
		t.Errorf("line with only an inbound trunk: %v", err)
	}
	if _, err := e.svc.OutboundLine(ctx, tenant, agent, nIn); !errors.Is(err, telephony.ErrNoLine) {
		t.Errorf("line from an inbound-only number: %v", err)
	}
	pOut := mustNumber(telephony.NumberInput{PhoneNumber: nOut, TrunkID: both.ID})
	pTw := mustNumber(telephony.NumberInput{PhoneNumber: nTw, Provider: "twilio", AgentID: agent2})

	r, err := e.svc.InboundRoute(ctx, strings.TrimPrefix(nIn, "+")) // LiveKit may drop the +
	if err != nil {
		t.Fatal(err)
	}
	if r != (telephony.Route{TenantID: tenant, AgentID: agent, NumberID: pIn.ID, Number: nIn}) {
		t.Errorf("route %+v", r)
	}
	if _, err := e.svc.InboundRoute(ctx, nOut); !errors.Is(err, telephony.ErrUnbound) {
		t.Errorf("route of an unbound number: %v", err)
	}
	if _, err := e.svc.InboundRoute(ctx, number()); !errors.Is(err, telephony.ErrNumberNotFound) {
		t.Errorf("route of an unknown number: %v", err)
	}

	// agent has no number that dials out: the tenant's oldest that can (nOut).
	l, err := e.svc.OutboundLine(ctx, tenant, agent, "")
	if err != nil {
		t.Fatal(err)
	}
	if l != (telephony.Line{Number: nOut, Provider: "sip", SIPTrunkID: both.LiveKitOutboundTrunkID, NumberID: pOut.ID}) {
		t.Errorf("line %+v", l)
	}
	// agent2 has its own Twilio number.
	if l, err = e.svc.OutboundLine(ctx, tenant, agent2, ""); err != nil || l != (telephony.Line{Number: nTw, Provider: "twilio", NumberID: pTw.ID}) {
		t.Errorf("line %+v %v", l, err)
	}
	if l, err = e.svc.OutboundLine(ctx, tenant, agent2, nOut); err != nil || l.Number != nOut {
		t.Errorf("line from %s: %+v %v", nOut, l, err)
	}
	if _, err := e.svc.OutboundLine(ctx, e.tenant(), agent, nOut); !errors.Is(err, telephony.ErrNumberNotFound) {
		t.Errorf("line from another tenant's number: %v", err)
	}
}

// With the SSRF guard configured, a trunk cannot point LiveKit (or the trunk test) at
// an internal address.
func TestAddressGuard(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	guard, err := safehttp.New(safehttp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	box, err := crypt.New(crypt.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := telephony.New(e.pool, telephony.Config{LiveKitURL: e.stack.Server.URL(), APIKey: lkserver.DevKey,
		APISecret: lkserver.DevSecret, AgentName: e.agent, AddressChecker: guard, Logger: slog.New(slog.DiscardHandler)}, box)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tenant := e.tenant()
	for _, addr := range []string{"127.0.0.1:5060", "10.1.2.3", "169.254.169.254", "localhost"} {
		_, err := svc.CreateTrunk(ctx, tenant, telephony.TrunkInput{Name: ptr("x"), OutboundAddress: ptr(addr)})
		wantKind(t, err, errs.KindInvalid, "outbound_address")
	}
	tr, err := svc.CreateTrunk(ctx, tenant, telephony.TrunkInput{Name: ptr("x"), OutboundAddress: ptr("8.8.8.8:5060")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.UpdateTrunk(ctx, tenant, tr.ID, telephony.TrunkInput{OutboundAddress: ptr("192.168.1.1")})
	wantKind(t, err, errs.KindInvalid, "outbound_address")
	// A trunk saved before the guard (here: by the unguarded service) is not probed.
	old := e.trunk(tenant, telephony.TrunkInput{OutboundAddress: ptr("127.0.0.1:5060")})
	res, err := svc.TestTrunk(ctx, tenant, old.ID)
	if err != nil {
		t.Fatal(err)
	}
	if res.Reachable || !strings.Contains(res.Detail, "not probed") {
		t.Errorf("probe of a blocked address: %+v", res)
	}
}

// A LiveKit server without Redis has no SIP store: changes are refused as unavailable
// (503), not as internal errors, and nothing is stored.
func TestLiveKitWithoutRedis(t *testing.T) {
	t.Parallel()
	requireTools(t, false)
	lk, err := lkserver.Start(context.Background(), lkserver.Config{WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lk.Stop)
	e := newEnv(t)
	box, _ := crypt.New(crypt.GenerateKey())
	svc, err := telephony.New(e.pool, telephony.Config{LiveKitURL: lk.URL(), APIKey: lkserver.DevKey, APISecret: lkserver.DevSecret,
		Logger: slog.New(slog.DiscardHandler)}, box)
	if err != nil {
		t.Fatal(err)
	}
	tenant := e.tenant()
	_, err = svc.CreateTrunk(context.Background(), tenant, telephony.TrunkInput{Name: ptr("x")})
	wantKind(t, err, errs.KindUnavailable)
	if list, _, _ := svc.ListTrunks(context.Background(), tenant, 10, 0); len(list) != 0 {
		t.Errorf("a trunk was stored: %v", list)
	}
}
