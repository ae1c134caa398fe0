package calls

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/ids"
	"github.com/parleyhq/parley/telephony"
)

// twilioNumbers routes numbers as telephony.Service.InboundRoute does: an unknown
// number is ErrNumberNotFound, a known one with no agent ErrUnbound.
type twilioNumbers map[string]telephony.Route

func (m twilioNumbers) InboundRoute(_ context.Context, number string) (telephony.Route, error) {
	r, ok := m[number]
	switch {
	case !ok:
		return telephony.Route{}, telephony.ErrNumberNotFound
	case r.AgentID == "":
		return telephony.Route{}, telephony.ErrUnbound
	}
	return r, nil
}

func newTwilio(t *testing.T, e *env, routes TwilioRoutes, mod func(*TwilioConfig)) *Twilio {
	t.Helper()
	cfg := TwilioConfig{AccountSID: testTwilioAccount, AuthToken: testTwilioToken,
		PublicURL: "https://parley.example.com/base/"}
	if mod != nil {
		mod(&cfg)
	}
	tw, err := NewTwilio(e.svc, &Engine{}, routes, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tw.Stop)
	return tw
}

// parsedTwiML is the TwiML the bridge answers, read back.
type parsedTwiML struct {
	Say     string `xml:"Say"`
	Hangup  *struct{}
	Connect *struct {
		Stream struct {
			URL        string `xml:"url,attr"`
			Parameters []struct {
				Name  string `xml:"name,attr"`
				Value string `xml:"value,attr"`
			} `xml:"Parameter"`
		}
	}
}

func parseTwiML(t *testing.T, doc []byte) parsedTwiML {
	t.Helper()
	var p parsedTwiML
	if err := xml.Unmarshal(doc, &p); err != nil {
		t.Fatalf("TwiML %s: %v", doc, err)
	}
	return p
}

func (p parsedTwiML) param(name string) string {
	if p.Connect == nil {
		return ""
	}
	for _, x := range p.Connect.Stream.Parameters {
		if x.Name == name {
			return x.Value
		}
	}
	return ""
}

// TestTwilioMediaToken: a token names its call and expires; any change to it, or a
// token of another key, is refused.
func TestTwilioMediaToken(t *testing.T) {
	t.Parallel()
	e := &env{svc: &Service{}}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return now }
	tw := newTwilio(t, e, nil, func(c *TwilioConfig) { c.Now = clock })
	other := newTwilio(t, e, nil, func(c *TwilioConfig) { c.Now = clock; c.AuthToken = "ffffffffffffffffffffffffffffffff" })
	callID := ids.New("call")
	good := tw.MediaToken(callID, time.Minute)
	parts := strings.Split(good, ".")
	for _, tc := range []struct {
		name, token string
		at          time.Time
		ok          bool
	}{
		{"valid", good, now, true},
		{"valid until expiry", good, now.Add(time.Minute), true},
		{"expired", good, now.Add(time.Minute + time.Second), false},
		{"another call", ids.New("call") + "." + parts[1] + "." + parts[2], now, false},
		{"later expiry", parts[0] + "." + "99999999999" + "." + parts[2], now, false},
		{"altered mac", parts[0] + "." + parts[1] + "." + strings.ToUpper(parts[2]), now, false},
		{"other key", other.MediaToken(callID, time.Minute), now, false},
		{"not a call", strings.Replace(good, "call_", "agent_", 1), now, false},
		{"empty", "", now, false},
		{"garbage", "a.b.c.d", now, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := tc.at
			tw := newTwilio(t, e, nil, func(c *TwilioConfig) { c.Now = func() time.Time { return now } })
			id, err := tw.VerifyMediaToken(tc.token)
			if tc.ok && (err != nil || id != callID) {
				t.Fatalf("VerifyMediaToken = %q, %v; want %q", id, err, callID)
			}
			if !tc.ok && !errors.Is(err, ErrTwilioToken) {
				t.Fatalf("VerifyMediaToken = %q, %v; want ErrTwilioToken", id, err)
			}
		})
	}
	if got, want := tw.MediaURL("tok"), "wss://parley.example.com/base/v1/twilio/media/tok"; got != want {
		t.Errorf("MediaURL = %q, want %q", got, want)
	}
	if got, want := tw.WebhookURL("/inbound_call?x=1"), "https://parley.example.com/base/inbound_call?x=1"; got != want {
		t.Errorf("WebhookURL = %q, want %q", got, want)
	}
}

// TestTwilioInbound: a call to a bound number creates a registered inbound call and
// answers a <Connect><Stream> whose token names it; Twilio repeating the webhook gets
// the same call; numbers with no agent (unknown, unbound, inactive) hear that the
// number is not in service, and no call is created.
func TestTwilioInbound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tenant := e.tenant(t)
	active := e.agent(t, tenant, "Ava", "active")
	inactive := e.agent(t, tenant, "Bo", "inactive")
	tw := newTwilio(t, e, twilioNumbers{
		"+15550000001": {TenantID: tenant, AgentID: active, Number: "+15550000001"},
		"+15550000002": {TenantID: tenant, Number: "+15550000002"},
		"+15550000003": {TenantID: tenant, AgentID: inactive, Number: "+15550000003"},
	}, nil)

	in := TwilioInbound{CallSID: "CA11111111111111111111111111111111", AccountSID: "AC1", From: "+15557654321", To: "+15550000001"}
	doc, err := tw.Inbound(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	p := parseTwiML(t, doc)
	if p.Connect == nil || p.Hangup != nil {
		t.Fatalf("TwiML %s", doc)
	}
	callID := p.param("call_id")
	token, ok := strings.CutPrefix(p.Connect.Stream.URL, "wss://parley.example.com/base/v1/twilio/media/")
	if !ok {
		t.Fatalf("stream URL %q", p.Connect.Stream.URL)
	}
	if id, err := tw.VerifyMediaToken(token); err != nil || id != callID {
		t.Fatalf("token names %q (%v), the TwiML call %q", id, err, callID)
	}
	if p.param("agent_id") != active {
		t.Errorf("agent_id parameter %q", p.param("agent_id"))
	}
	c, err := e.svc.Get(ctx, tenant, callID)
	if err != nil {
		t.Fatal(err)
	}
	if c.Direction != DirectionInbound || c.CallStatus != StatusRegistered || c.FromNumber != in.From ||
		c.ToNumber != in.To || c.AgentID != active || c.AgentName != "Ava" || c.Metadata[MetaTwilioCallSID] != in.CallSID {
		t.Fatalf("call %+v", c)
	}

	again, err := tw.Inbound(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if got := parseTwiML(t, again).param("call_id"); got != callID {
		t.Errorf("repeated webhook answered call %q, want %q", got, callID)
	}

	for _, to := range []string{"+15550000002", "+15550000003", "+15550000009"} {
		doc, err := tw.Inbound(ctx, TwilioInbound{CallSID: "CA2" + to, From: in.From, To: to})
		if err != nil {
			t.Fatal(err)
		}
		if p := parseTwiML(t, doc); p.Connect != nil || p.Hangup == nil || !strings.Contains(p.Say, "not in service") {
			t.Errorf("call to %s: TwiML %s", to, doc)
		}
	}
	if n := e.count(t, tenant); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

// TestTwilioStatus: status callbacks move a dialled call to ringing and record the
// outcome of one that never connected; the first outcome stands, a call in progress is
// its stream's to finish, and a callback naming another Twilio call is refused.
func TestTwilioStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tenant := e.tenant(t)
	agent := e.agent(t, tenant, "Ava", "active")
	tw := newTwilio(t, e, nil, nil)
	const sid = "CA22222222222222222222222222222222"
	outbound := func(status string) string {
		t.Helper()
		id := ids.New("call")
		meta, _ := json.Marshal(map[string]string{MetaTwilioCallSID: sid})
		start := "NULL"
		if status == StatusInProgress {
			start = "now()"
		}
		if _, err := e.pool.Exec(ctx, `INSERT INTO calls (id, tenant_id, agent_id, agent_name, direction, call_status, to_number, metadata, start_timestamp)
			VALUES ($1, $2, $3, 'Ava', 'outbound', $4, '+15551112222', $5, `+start+`)`, id, tenant, agent, status, meta); err != nil {
			t.Fatal(err)
		}
		return id
	}
	for _, tc := range []struct {
		from     string
		statuses []string
		duration int
		want     string
		reason   string
	}{
		{StatusRegistered, []string{"initiated"}, 0, StatusRinging, ""},
		{StatusRinging, []string{"ringing", "in-progress"}, 0, StatusRinging, ""},
		{StatusRinging, []string{"busy"}, 0, StatusBusy, ReasonDialBusy},
		{StatusRinging, []string{"no-answer"}, 0, StatusNoAnswer, ReasonDialNoAnswer},
		{StatusRinging, []string{"failed"}, 0, StatusFailed, ReasonDialFailed},
		{StatusRinging, []string{"canceled"}, 0, StatusFailed, ReasonAPIEnded},
		{StatusRinging, []string{"completed"}, 0, StatusNoAnswer, ReasonDialNoAnswer},
		{StatusRinging, []string{"completed"}, 12, StatusFailed, twilioReasonNoStream},
		{StatusRinging, []string{"busy", "completed"}, 0, StatusBusy, ReasonDialBusy},
		{StatusInProgress, []string{"completed"}, 12, StatusInProgress, ""},
	} {
		t.Run(fmt.Sprintf("%s/%s/%ds", tc.from, strings.Join(tc.statuses, ","), tc.duration), func(t *testing.T) {
			id := outbound(tc.from)
			for _, s := range tc.statuses {
				if err := tw.Status(ctx, id, TwilioStatus{CallSID: sid, CallStatus: s, CallDuration: tc.duration}); err != nil {
					t.Fatal(err)
				}
			}
			if st, reason := e.status(t, id); st != tc.want || reason != tc.reason {
				t.Fatalf("status %q (%q), want %q (%q)", st, reason, tc.want, tc.reason)
			}
		})
	}
	id := outbound(StatusRinging)
	wantErr(t, tw.Status(ctx, id, TwilioStatus{CallSID: "CA99999999999999999999999999999999", CallStatus: "busy"}), ErrNotFound)
	if st, _ := e.status(t, id); st != StatusRinging {
		t.Fatalf("a callback for another Twilio call moved the call to %q", st)
	}
	wantErr(t, tw.Status(ctx, ids.New("call"), TwilioStatus{CallSID: sid, CallStatus: "busy"}), ErrNotFound)
}
