package calls

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/utils/xtwirp"
	"github.com/twitchtv/twirp"

	"github.com/parleyhq/parley/telephony"
)

// dialOutcome maps each way CreateSIPParticipant fails, in the shapes the SDK returns
// them (a gRPC status carrying the SIPStatus, as the SDK's client option rebuilds it; a
// bare Twirp error with the SIP code in its metadata; the ringing timeout's Canceled),
// to the call's outcome.
func TestDialOutcome(t *testing.T) {
	t.Parallel()
	sipErr := func(code int) error {
		st := &livekit.SIPStatus{Code: livekit.SIPStatusCode(code)}
		return st.GRPCStatus().Err()
	}
	twirpMeta := func(code int) error {
		return twirp.NewError(twirp.ResourceExhausted, "INVITE failed").WithMeta("sip_status_code", fmt.Sprint(code))
	}
	for _, c := range []struct {
		name            string
		err             error
		status, reason  string
		refusedUndialed bool
	}{
		{"486", sipErr(486), StatusBusy, ReasonDialBusy, false},
		{"600", sipErr(600), StatusBusy, ReasonDialBusy, false},
		{"486 in twirp metadata", twirpMeta(486), StatusBusy, ReasonDialBusy, false},
		{"408", sipErr(408), StatusNoAnswer, ReasonDialNoAnswer, false},
		{"480", sipErr(480), StatusNoAnswer, ReasonDialNoAnswer, false},
		{"487", sipErr(487), StatusNoAnswer, ReasonDialNoAnswer, false},
		{"ringing timeout", twirp.NewError(twirp.Canceled, "sip request timed out"), StatusNoAnswer, ReasonDialNoAnswer, false},
		{"503", sipErr(503), StatusFailed, "dial_failed_sip_503", false},
		{"404 through xtwirp", xtwirp.ToError(sipErr(404)), StatusFailed, "dial_failed_sip_404", false},
		{"cpu exhausted", twirp.NewError(twirp.Unavailable, "cpu exhausted"), StatusFailed, ReasonDialFailed, true},
		{"something else", errors.New("boom"), StatusFailed, ReasonDialFailed, false},
	} {
		st, reason := dialOutcome(c.err)
		if st != c.status || reason != c.reason {
			t.Errorf("%s: %s / %s, want %s / %s", c.name, st, reason, c.status, c.reason)
		}
		if got := refusedBeforeDialling(c.err); got != c.refusedUndialed {
			t.Errorf("%s: refusedBeforeDialling = %v", c.name, got)
		}
	}
}

func TestTransferURI(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"+15550100":                "tel:+15550100",
		" tel:+15550100 ":          "tel:+15550100",
		"sip:desk@pbx.example.com": "sip:desk@pbx.example.com",
		"SIP:desk@pbx.example.com": "SIP:desk@pbx.example.com",
		"15550100":                 "",
		"":                         "",
		"http://example.com":       "",
	} {
		if got := transferURI(in); got != want {
			t.Errorf("transferURI(%q) = %q, want %q", in, got, want)
		}
	}
}

// An inbound call's dispatch names the number, not a call; metadata naming neither is
// refused.
func TestParseDispatchMetadataPhone(t *testing.T) {
	t.Parallel()
	m, err := ParseDispatchMetadata(`{"phone_number":"+15550100"}`)
	if err != nil || m.PhoneNumber != "+15550100" || m.CallID != "" {
		t.Errorf("= %+v, %v", m, err)
	}
	if _, err := ParseDispatchMetadata(`{}`); err == nil {
		t.Error("metadata with neither call_id nor phone_number accepted")
	}
}

// CallVariables: string metadata, the numbers, and the "variables" object, which wins.
func TestCallVariables(t *testing.T) {
	t.Parallel()
	got := CallVariables(Call{FromNumber: "+15550100", ToNumber: "+15550200", Metadata: map[string]any{
		"customer_name": "Bob", "n": 3.0,
		"variables": map[string]any{"customer_name": "Ada", "age": 42.0, "vip": true, "skip": map[string]any{}},
	}})
	want := map[string]string{"customer_name": "Ada", "age": "42", "vip": "true", "from_number": "+15550100", "to_number": "+15550200"}
	if len(got) != len(want) {
		t.Errorf("CallVariables = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

// fixedLines is a Lines with one outbound line or an error.
type fixedLines struct {
	line telephony.Line
	err  error
}

func (l fixedLines) InboundRoute(context.Context, string) (telephony.Route, error) {
	return telephony.Route{}, telephony.ErrNumberNotFound
}

func (l fixedLines) OutboundLine(context.Context, string, string, string) (telephony.Line, error) {
	return l.line, l.err
}

// The dial job fails, without retrying, a call it can never place: no line, or a Twilio
// line on a server with no Twilio dialer; and leaves calls that are not registered
// outbound calls alone.
func TestDialWithoutALine(t *testing.T) {
	t.Parallel()
	rooms, err := NewLiveKit(LiveKitConfig{URL: "ws://127.0.0.1:1", APIKey: "k", APISecret: strings.Repeat("s", 32)})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.Rooms = rooms })
	tenant := e.tenant(t)
	agentID := e.agent(t, tenant, "Ava", "active")
	ctx := t.Context()
	newCall := func(direction string) string {
		id := "call_" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "_")) + fmt.Sprint(e.count(t, tenant))
		if _, err := e.pool.Exec(ctx, `INSERT INTO calls (id, tenant_id, agent_id, agent_name, direction, call_status, to_number, room_name)
			VALUES ($1, $2, $3, 'Ava', $4, 'registered', '+15550100', $5)`, id, tenant, agentID, direction, RoomName(id)); err != nil {
			t.Fatal(err)
		}
		return id
	}
	for _, c := range []struct {
		name   string
		lines  Lines
		reason string
	}{
		{"no line", fixedLines{err: telephony.ErrNoLine}, ReasonNoLine},
		{"twilio without a dialer", fixedLines{line: telephony.Line{Number: "+15550999", Provider: telephony.ProviderTwilio}}, ReasonNoPhoneDialer},
		{"unknown provider", fixedLines{line: telephony.Line{Number: "+15550999", Provider: "carrier-pigeon"}}, ReasonNoLine},
	} {
		sip, err := NewSIP(e.svc, SIPConfig{LiveKit: rooms.cfg, Lines: c.lines})
		if err != nil {
			t.Fatal(err)
		}
		id := newCall(DirectionOutbound)
		if err := sip.dial(ctx, id, false); err != nil {
			t.Errorf("%s: dial: %v", c.name, err)
		}
		if st, reason := e.status(t, id); st != StatusFailed || reason != c.reason {
			t.Errorf("%s: %s / %s, want failed / %s", c.name, st, reason, c.reason)
		}
	}
	sip, err := NewSIP(e.svc, SIPConfig{LiveKit: rooms.cfg, Lines: fixedLines{err: telephony.ErrNoLine}})
	if err != nil {
		t.Fatal(err)
	}
	web := newCall(DirectionWeb)
	if err := sip.dial(ctx, web, false); err == nil {
		t.Error("dialling a web call succeeded")
	}
	if st, _ := e.status(t, web); st != StatusRegistered {
		t.Errorf("web call after a dial: %s", st)
	}
	if err := sip.dial(ctx, "call_missing", false); !errors.Is(err, ErrNotFound) {
		t.Errorf("dial of a missing call: %v", err)
	}
}
