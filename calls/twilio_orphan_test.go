package calls

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	twclient "github.com/twilio/twilio-go/client"

	"github.com/parleyhq/parley/internal/ids"
)

// The account and auth token newTwilio configures.
const (
	testTwilioAccount = "AC0123456789abcdef0123456789abcdef"
	testTwilioToken   = "0123456789abcdef0123456789abcdef"
)

// twilioCallsREST plays Twilio's REST API for fetching a call
// (https://www.twilio.com/docs/voice/api/call-resource#fetch-a-call-resource):
// GET /2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json with HTTP Basic auth (the
// account SID and auth token), answering the JSON call resource, or a JSON error
// ({code, message, more_info, status}) for a call it does not know.
type twilioCallsREST struct {
	srv *httptest.Server
	mu  sync.Mutex
	// status is each known call's Twilio status, by call SID.
	status map[string]string
	// got are the paths of the fetches it answered.
	got []string
}

var twilioCallPath = regexp.MustCompile(`^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Calls/(CA[0-9a-f]{32})\.json$`)

func newTwilioCallsREST(t *testing.T, status map[string]string) *twilioCallsREST {
	t.Helper()
	s := &twilioCallsREST{status: status}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fail := func(status, code int, msg string) {
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg,
				"more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code), "status": status})
		}
		if user, pass, _ := r.BasicAuth(); user != testTwilioAccount || pass != testTwilioToken {
			fail(401, 20003, "Authenticate")
			return
		}
		m := twilioCallPath.FindStringSubmatch(r.URL.Path)
		if r.Method != http.MethodGet || m == nil {
			fail(404, 20404, "The requested resource "+r.URL.Path+" was not found")
			return
		}
		s.mu.Lock()
		s.got = append(s.got, r.URL.Path)
		st, ok := s.status[m[2]]
		s.mu.Unlock()
		if !ok {
			fail(404, 20404, "The requested resource "+r.URL.Path+" was not found")
			return
		}
		now := time.Now().UTC().Format(time.RFC1123Z)
		json.NewEncoder(w).Encode(map[string]any{
			"sid": m[2], "account_sid": m[1], "status": st, "direction": "inbound", "api_version": "2010-04-01",
			"to": "+15550000001", "from": "+15557654321", "date_created": now, "date_updated": now,
			"start_time": now, "end_time": nil, "duration": nil, "price": nil, "price_unit": "USD",
			"uri": r.URL.Path,
		})
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// fetched reports the call SIDs fetched, each with the account of its path.
func (s *twilioCallsREST) fetched() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for _, p := range s.got {
		m := twilioCallPath.FindStringSubmatch(p)
		out[m[2]] = m[1]
	}
	return out
}

// twilioSIDOf makes a well-formed Twilio SID with prefix from n.
func twilioSIDOf(prefix string, n int) string { return fmt.Sprintf("%s%032x", prefix, n) }

// TestFailTwilioOrphans: a quiet in-progress Twilio call whose process died is failed
// as error_worker_lost, with its duration and, if it had a transcript, its analysis
// job, once Twilio says the call is over, whichever tenant it belongs to; one Twilio
// says is still up is left alone, as is one Twilio does not know, one with a
// malformed SID and one saved recently, which is not even looked up. LiveKit-room
// calls are swept as before, but an outbound Twilio call, whose room_name names a
// room never created, is not taken for one. Without Twilio configured, Twilio calls
// are not touched.
func TestFailTwilioOrphans(t *testing.T) {
	t.Parallel()
	e := newAnalysisEnvOn(t, newEnv(t, func(c *Config) { c.Rooms = newLiveKit(t) }), nil, false)
	ctx := t.Context()
	tenantA, tenantB := e.tenant(t), e.tenant(t)
	agentA, agentB := e.agent(t, tenantA, "Ava", "active"), e.agent(t, tenantB, "Bo", "active")
	now := time.Now()
	start := now.Add(-15 * time.Minute)

	type call struct {
		name, tenant, agent, direction string
		sid, account                   string // Twilio metadata ("": none)
		twilioStatus                   string // what Twilio says ("": Twilio does not know it)
		room                           bool   // has a room_name (never created)
		quiet                          time.Duration
		transcript                     string
		// wantFailed: FailOrphans fails it; wantFetched: it asks Twilio about it.
		wantFailed, wantFetched bool
	}
	otherAccount := twilioSIDOf("AC", 0xabc)
	cases := []call{
		{name: "completed", tenant: tenantA, agent: agentA, direction: DirectionInbound, sid: twilioSIDOf("CA", 1), account: otherAccount,
			twilioStatus: "completed", quiet: 10 * time.Minute, transcript: "Agent: Hello\nUser: Hi", wantFailed: true, wantFetched: true},
		{name: "busy", tenant: tenantA, agent: agentA, direction: DirectionOutbound, sid: twilioSIDOf("CA", 2), account: testTwilioAccount,
			twilioStatus: "busy", room: true, quiet: 10 * time.Minute, wantFailed: true, wantFetched: true},
		{name: "failed", tenant: tenantA, agent: agentA, direction: DirectionInbound, sid: twilioSIDOf("CA", 3),
			twilioStatus: "failed", quiet: 3 * time.Minute, wantFailed: true, wantFetched: true},
		{name: "no-answer", tenant: tenantB, agent: agentB, direction: DirectionOutbound, sid: twilioSIDOf("CA", 4),
			twilioStatus: "no-answer", room: true, quiet: 10 * time.Minute, wantFailed: true, wantFetched: true},
		{name: "canceled", tenant: tenantB, agent: agentB, direction: DirectionInbound, sid: twilioSIDOf("CA", 5),
			twilioStatus: "canceled", quiet: 10 * time.Minute, wantFailed: true, wantFetched: true},
		// Still up: its room_name names no room, and that must not count against it.
		{name: "in-progress outbound", tenant: tenantB, agent: agentB, direction: DirectionOutbound, sid: twilioSIDOf("CA", 6),
			twilioStatus: "in-progress", room: true, quiet: 10 * time.Minute, transcript: "Agent: Hello", wantFetched: true},
		{name: "in-progress", tenant: tenantA, agent: agentA, direction: DirectionInbound, sid: twilioSIDOf("CA", 7),
			twilioStatus: "in-progress", quiet: 10 * time.Minute, wantFetched: true},
		{name: "ringing", tenant: tenantB, agent: agentB, direction: DirectionOutbound, sid: twilioSIDOf("CA", 8),
			twilioStatus: "ringing", room: true, quiet: 10 * time.Minute, wantFetched: true},
		{name: "queued", tenant: tenantB, agent: agentB, direction: DirectionInbound, sid: twilioSIDOf("CA", 9),
			twilioStatus: "queued", quiet: 10 * time.Minute, wantFetched: true},
		{name: "unknown to twilio", tenant: tenantA, agent: agentA, direction: DirectionInbound, sid: twilioSIDOf("CA", 10),
			quiet: 10 * time.Minute, wantFetched: true},
		{name: "recent", tenant: tenantA, agent: agentA, direction: DirectionInbound, sid: twilioSIDOf("CA", 11),
			twilioStatus: "completed", quiet: 10 * time.Second},
		{name: "malformed sid", tenant: tenantA, agent: agentA, direction: DirectionInbound, sid: "CA../../Calls",
			twilioStatus: "completed", quiet: 10 * time.Minute},
		// LiveKit calls whose room is gone: failed as before, Twilio never asked (a
		// web call's metadata is the client's, twilio_call_sid included).
		{name: "web, room gone", tenant: tenantB, agent: agentB, direction: DirectionWeb, room: true,
			quiet: 10 * time.Minute, wantFailed: true},
		{name: "web with a twilio sid, room gone", tenant: tenantA, agent: agentA, direction: DirectionWeb, sid: twilioSIDOf("CA", 12),
			twilioStatus: "in-progress", room: true, quiet: 10 * time.Minute, wantFailed: true},
	}
	status := map[string]string{}
	id := map[string]string{}
	for _, c := range cases {
		meta := map[string]string{}
		if c.sid != "" {
			meta[MetaTwilioCallSID] = c.sid
		}
		if c.account != "" {
			meta[MetaTwilioAccountSID] = c.account
		}
		if c.twilioStatus != "" {
			status[c.sid] = c.twilioStatus
		}
		metaJSON, _ := json.Marshal(meta)
		id[c.name] = ids.New("call")
		room := ""
		if c.room {
			room = RoomName(id[c.name])
		}
		if _, err := e.pool.Exec(ctx, `INSERT INTO calls (id, tenant_id, agent_id, agent_name, direction, call_status,
				to_number, room_name, metadata, transcript, start_timestamp, created_at, updated_at)
			VALUES ($1, $2, $3, 'Agent', $4, 'in_progress', '+15551112222', $5, $6, $7, $8, $8, $9)`,
			id[c.name], c.tenant, c.agent, c.direction, room, metaJSON, c.transcript, start, now.Add(-c.quiet)); err != nil {
			t.Fatal(err)
		}
	}
	rest := newTwilioCallsREST(t, status)

	// Without Twilio (and LiveKit), nothing is asked and nothing changes.
	bare := envOn(t, e.pool)
	if n, err := bare.svc.FailOrphans(ctx, 2*time.Minute); n != 0 || err != nil {
		t.Fatalf("FailOrphans without Twilio = %d, %v; want 0", n, err)
	}
	newTwilio(t, e.env, nil, func(c *TwilioConfig) { c.APIBaseURL = rest.srv.URL })
	if got := rest.fetched(); len(got) != 0 {
		t.Fatalf("Twilio was asked about %v without being configured", got)
	}
	for _, c := range cases {
		if st, _ := e.status(t, id[c.name]); st != StatusInProgress {
			t.Fatalf("call %q is %s after a sweep without Twilio", c.name, st)
		}
	}

	n, err := e.svc.FailOrphans(ctx, 2*time.Minute)
	// The call Twilio does not know is an error of the sweep, which goes on.
	var restErr *twclient.TwilioRestError
	if !errors.As(err, &restErr) || restErr.Status != 404 {
		t.Errorf("FailOrphans err = %v, want Twilio's 404 for the unknown call", err)
	}
	want := 0
	for _, c := range cases {
		if c.wantFailed {
			want++
		}
	}
	if n != want {
		t.Errorf("FailOrphans failed %d calls, want %d", n, want)
	}

	fetched := rest.fetched()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := e.svc.Get(ctx, c.tenant, id[c.name])
			if err != nil {
				t.Fatal(err)
			}
			if c.wantFailed {
				if got.CallStatus != StatusFailed || got.DisconnectionReason != ReasonWorkerLost || got.EndTimestamp == nil {
					t.Errorf("call %s / %s, ended %v; want failed / %s", got.CallStatus, got.DisconnectionReason, got.EndTimestamp, ReasonWorkerLost)
				}
				// From start_timestamp to the sweep: 15 minutes and a little.
				if d := time.Duration(got.DurationMS) * time.Millisecond; d < 15*time.Minute || d > 20*time.Minute {
					t.Errorf("duration %v, want from the call's start to the sweep (15 min)", d)
				}
			} else if got.CallStatus != StatusInProgress || got.DisconnectionReason != "" {
				t.Errorf("call %s / %s, want left in progress", got.CallStatus, got.DisconnectionReason)
			}
			wantJobs := 0
			if c.wantFailed && c.transcript != "" {
				wantJobs = 1
			}
			if jobs := e.analysisJobs(t, id[c.name]); jobs != wantJobs {
				t.Errorf("%d analysis jobs, want %d", jobs, wantJobs)
			}
			account, asked := fetched[c.sid]
			if asked != c.wantFetched {
				t.Errorf("Twilio asked about it: %v, want %v", asked, c.wantFetched)
			}
			wantAccount := testTwilioAccount
			if c.account != "" {
				wantAccount = c.account
			}
			if asked && account != wantAccount {
				t.Errorf("fetched in account %s, want %s", account, wantAccount)
			}
		})
	}

	// A second sweep finds nothing more to fail and asks again only about the calls
	// still in progress.
	rest.mu.Lock()
	rest.got = nil
	rest.mu.Unlock()
	if n, _ := e.svc.FailOrphans(ctx, 2*time.Minute); n != 0 {
		t.Errorf("second FailOrphans failed %d calls, want 0", n)
	}
	var again []string
	for sid := range rest.fetched() {
		again = append(again, sid)
	}
	slices.Sort(again)
	wantAgain := []string{twilioSIDOf("CA", 6), twilioSIDOf("CA", 7), twilioSIDOf("CA", 8), twilioSIDOf("CA", 9), twilioSIDOf("CA", 10)}
	if !slices.Equal(again, wantAgain) {
		t.Errorf("second sweep asked about %s, want %s", strings.Join(again, ","), strings.Join(wantAgain, ","))
	}
}

// TestTwilioSID: only Twilio's own SID shape goes into a REST path.
func TestTwilioSID(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		sid, prefix string
		ok          bool
	}{
		{twilioSIDOf("CA", 1), "CA", true},
		{"CA0123456789ABCDEF0123456789abcdef", "CA", true},
		{twilioSIDOf("AC", 1), "CA", false},
		{"CA0123", "CA", false},
		{"CA0123456789abcdef0123456789abcdeg", "CA", false},
		{"CA0123456789abcdef0123456789abc/..", "CA", false},
		{"", "CA", false},
	} {
		if got := twilioSID(c.sid, c.prefix); got != c.ok {
			t.Errorf("twilioSID(%q, %q) = %v, want %v", c.sid, c.prefix, got, c.ok)
		}
	}
}
