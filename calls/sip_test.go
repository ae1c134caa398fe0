package calls

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/riverqueue/river"

	"github.com/parleyhq/parley/agents"
	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/ids"
	"github.com/parleyhq/parley/internal/jobs"
	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/internal/sipbridge"
	"github.com/parleyhq/parley/internal/sipbridge/siptest"
	"github.com/parleyhq/parley/telephony"
	"github.com/parleyhq/parley/voice/livekit/dispatch"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// sipStack is the package's one Redis + livekit-server + livekit-sip, started by the
// first SIP test; stopSIPStack (from TestMain) takes it down.
var sipStack siptest.SharedStack

// sipPeers returns the shared stack, skipping the test when a program it needs is
// missing (failing instead when CI=true).
func sipPeers(t *testing.T) *sipbridge.Stack {
	t.Helper()
	siptest.RequireTools(t, true)
	return sipStack.Get(t)
}

func stopSIPStack() { sipStack.Stop() }

// testLines routes numbers as the telephony service would, from what the test set up
// in LiveKit itself; or, once real is set, through the real telephony service.
type testLines struct {
	mu     sync.Mutex
	routes map[string]telephony.Route
	line   telephony.Line
	real   *telephony.Service
}

func (l *testLines) InboundRoute(ctx context.Context, number string) (telephony.Route, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.real != nil {
		return l.real.InboundRoute(ctx, number)
	}
	r, ok := l.routes[number]
	if !ok {
		return telephony.Route{}, telephony.ErrNumberNotFound
	}
	if r.AgentID == "" {
		return telephony.Route{}, telephony.ErrUnbound
	}
	return r, nil
}

func (l *testLines) OutboundLine(ctx context.Context, tenantID, agentID, from string) (telephony.Line, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.real != nil {
		return l.real.OutboundLine(ctx, tenantID, agentID, from)
	}
	if l.line.Number == "" {
		return telephony.Line{}, telephony.ErrNoLine
	}
	return l.line, nil
}

// sipEnv is a voice worker and a dial worker on the SIP stack's livekit-server.
type sipEnv struct {
	*env
	agents    *agents.Service
	srv       *openaitest.Server
	stack     *sipbridge.Stack
	sip       *SIP
	lines     *testLines
	sc        *lksdk.SIPClient
	agentName string
	jobs      *jobs.Client
	worker    *dispatch.Worker
}

func newSIPEnv(t *testing.T, srv *openaitest.Server, ringing time.Duration) *sipEnv {
	t.Helper()
	stack := sipPeers(t)
	name := fmt.Sprintf("parley-sip-%d", time.Now().UnixNano())
	lkc := LiveKitConfig{URL: stack.Server.URL(), APIKey: lkserver.DevKey, APISecret: lkserver.DevSecret, AgentName: name}
	rooms, err := NewLiveKit(lkc)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.Rooms = rooms })
	ag, engine, log := workerParts(t, e)
	lines := &testLines{routes: map[string]telephony.Route{}}
	sip, err := NewSIP(e.svc, SIPConfig{LiveKit: lkc, RingingTimeout: ringing, Lines: lines, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	runner := &Runner{
		Calls:      e.svc,
		Engine:     engine,
		CallerWait: 20 * time.Second,
		Lines:      lines,
		SIP:        sip,
		Logger:     log,
	}
	w := startWorker(t, stack.Server.URL(), name, runner)
	workers := river.NewWorkers()
	sip.AddWorkers(workers)
	jc, err := jobs.New(e.pool, jobs.Config{Work: true, MaxWorkers: 4}, workers, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := jc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jc.Stop)
	return &sipEnv{env: e, agents: ag, srv: srv, stack: stack, sip: sip, lines: lines, agentName: name, jobs: jc, worker: w,
		sc: lksdk.NewSIPClient(stack.Server.HTTPURL(), lkserver.DevKey, lkserver.DevSecret)}
}

// newAgent creates an agent whose three providers are the scripted server.
func (e *sipEnv) newAgent(t *testing.T, tenantID, greeting, extra string) string {
	t.Helper()
	p := fmt.Sprintf(`{"provider":"openai","base_url":%q,"api_key":"test-key"}`, e.srv.URL)
	body := `{"agent_name":"Front desk","begin_message":` + strconv.Quote(greeting) + `,
		"response_engine":{"system_prompt":"You are the front desk of a dental practice. You are talking to {{from_number}}."},
		"llm":` + p + `,"stt":` + p + `,"tts":` + p + extra + `}`
	a, err := e.agents.Create(context.Background(), tenantID, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return a.ID
}

// bindNumber does in LiveKit what the telephony service does for a bound number: an
// inbound trunk for it and an individual dispatch rule that dispatches the Parley agent
// with {"phone_number": number}; and routes the number to agentID in Lines.
func (e *sipEnv) bindNumber(t *testing.T, number, tenantID, agentID string) {
	t.Helper()
	ctx := t.Context()
	meta, _ := json.Marshal(DispatchMetadata{PhoneNumber: number})
	trunk, rule := siptest.RouteNumber(t, ctx, e.sc, "test "+number, number,
		&livekit.RoomConfiguration{Agents: []*livekit.RoomAgentDispatch{{AgentName: e.agentName, Metadata: string(meta)}}})
	t.Cleanup(func() {
		ctx := context.Background()
		e.sc.DeleteSIPDispatchRule(ctx, &livekit.DeleteSIPDispatchRuleRequest{SipDispatchRuleId: rule.SipDispatchRuleId})
		e.sc.DeleteSIPTrunk(ctx, &livekit.DeleteSIPTrunkRequest{SipTrunkId: trunk.SipTrunkId})
	})
	e.lines.mu.Lock()
	e.lines.routes[number] = telephony.Route{TenantID: tenantID, AgentID: agentID, NumberID: "num_" + number[1:], Number: number}
	e.lines.mu.Unlock()
}

// outboundLine creates an outbound trunk to a phone (sipp) at addr and makes it the
// line Lines returns.
func (e *sipEnv) outboundLine(t *testing.T, from, addr string) {
	t.Helper()
	trunk, err := e.sc.CreateSIPOutboundTrunk(t.Context(), &livekit.CreateSIPOutboundTrunkRequest{Trunk: &livekit.SIPOutboundTrunkInfo{
		Name: "test out " + from, Address: addr, Numbers: []string{from}, Transport: livekit.SIPTransport_SIP_TRANSPORT_UDP,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.sc.DeleteSIPTrunk(context.Background(), &livekit.DeleteSIPTrunkRequest{SipTrunkId: trunk.SipTrunkId})
	})
	e.lines.mu.Lock()
	e.lines.line = telephony.Line{Number: from, Provider: telephony.ProviderSIP, SIPTrunkID: trunk.SipTrunkId, NumberID: "num_out"}
	e.lines.mu.Unlock()
}

// outboundCall inserts a registered outbound call, as POST /v1/calls/outbound does.
func (e *sipEnv) outboundCall(t *testing.T, tenantID, agentID, to string, metadata map[string]any) string {
	t.Helper()
	id := ids.New("call")
	if metadata == nil {
		metadata = map[string]any{}
	}
	meta, _ := json.Marshal(metadata)
	if _, err := e.pool.Exec(t.Context(), `INSERT INTO calls (id, tenant_id, agent_id, agent_name, direction, call_status, to_number, room_name, metadata)
		VALUES ($1, $2, $3, 'Front desk', 'outbound', 'registered', $4, $5, $6)`, id, tenantID, agentID, to, RoomName(id), meta); err != nil {
		t.Fatal(err)
	}
	return id
}

// rtpSink is the phone's media socket: it counts the RTP the bridge sends and how much
// of it is speech.
type rtpSink struct{ *siptest.RTPSink }

func newRTPSink(t *testing.T) *rtpSink {
	t.Helper()
	return &rtpSink{siptest.NewRTPSink(t)}
}

func (s *rtpSink) port() int { return s.Port() }

// speechDuration is how much speech the phone heard.
func (s *rtpSink) speechDuration() time.Duration { return s.Speech() }

// sippRun is a sipp process.
type sippRun struct {
	*siptest.Sipp
	port int
}

// output is sipp's output and the tail of its SIP message trace.
func (r *sippRun) output() string { return r.Output() }

// startSipp runs sipp with scenario (in testdata) and args; it is killed when the test
// ends.
func startSipp(t *testing.T, ctx context.Context, scenario string, args ...string) *sippRun {
	t.Helper()
	s := siptest.StartSipp(t, ctx, siptest.SippConfig{Dir: "testdata", Scenario: scenario, Timeout: 120 * time.Second, Args: args})
	return &sippRun{Sipp: s, port: s.Port}
}

// wait waits for sipp to exit and returns its error.
func (r *sippRun) wait(t *testing.T, ctx context.Context) error {
	t.Helper()
	return r.Wait(t, ctx)
}

func tail(s string) string { return siptest.Tail(s) }

// waitCall polls the call until cond holds.
func (e *sipEnv) waitCall(t *testing.T, ctx context.Context, tenantID, id, what string, cond func(Call) bool) Call {
	t.Helper()
	for {
		c, err := e.svc.Get(ctx, tenantID, id)
		if err == nil && cond(c) {
			return c
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s: %+v, %v", what, c, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestSIPInboundCall: sipp phones a bound number. LiveKit SIP puts the call in a room
// and dispatches the agent with the number; the worker routes it, the agent answers
// (publishing its voice), greets, hears the caller's question and answers; the phone
// receives the agent's voice as RTP. The record is inbound, with both numbers, the
// transcript, and on the caller's BYE, completed as user_hangup with the call's length.
func TestSIPInboundCall(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"Can I book a cleaning on Monday?"},
		Replies:     []openaitest.Reply{{Text: "Yes, Monday at ten is free."}},
	})
	e := newSIPEnv(t, srv, 0)
	tenant := e.tenant(t)
	agentID := e.newAgent(t, tenant, "Hello, this is Parley.", "")
	const called, caller = "+15550101", "+15550123"
	e.bindNumber(t, called, tenant, agentID)
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()

	sink := newRTPSink(t)
	dialed := time.Now()
	sipp := startSipp(t, ctx, "uac_call.xml", "-s", called, "-key", "caller", caller,
		"-key", "rtpport", strconv.Itoa(sink.port()), "-m", "1", e.stack.Bridge.SIPAddr())
	if err := sipp.wait(t, ctx); err != nil {
		t.Fatalf("sipp: %v\n%s", err, sipp.output())
	}
	hungUp := time.Now()

	var c Call
	eventually(t, "the inbound call to be recorded and completed", func() bool {
		list, _, err := e.svc.List(ctx, tenant, ListParams{})
		if err != nil || len(list) != 1 {
			return false
		}
		c = list[0]
		return c.CallStatus == StatusCompleted
	})
	if c.Direction != DirectionInbound || c.FromNumber != caller || c.ToNumber != called || c.AgentID != agentID ||
		c.AgentName != "Front desk" || !strings.HasPrefix(c.RoomName, "call-") {
		t.Errorf("record: direction %q from %q to %q agent %q/%q room %q", c.Direction, c.FromNumber, c.ToNumber, c.AgentID, c.AgentName, c.RoomName)
	}
	if c.DisconnectionReason != ReasonUserHangup {
		t.Errorf("reason %q, want %q", c.DisconnectionReason, ReasonUserHangup)
	}
	// sipp holds the line 15 s after the answer; the record's duration is the
	// conversation's, from the answer to the BYE.
	if d := time.Duration(c.DurationMS) * time.Millisecond; d < 13*time.Second || d > hungUp.Sub(dialed)+2*time.Second {
		t.Errorf("duration %v; sipp's call lasted %v from dialling", d, hungUp.Sub(dialed))
	}
	var turns []string
	for _, turn := range c.TranscriptObject {
		turns = append(turns, turn.Role+": "+turn.Content)
	}
	got := strings.Join(turns, "\n")
	for _, want := range []string{"agent: Hello, this is Parley.", "user: Can I book a cleaning on Monday?", "agent: Yes, Monday at ten is free."} {
		if !strings.Contains(got, want) {
			t.Errorf("transcript lacks %q:\n%s", want, got)
		}
	}
	// The caller's number reached the prompt ({{from_number}}).
	if chats := srv.Chats(); len(chats) != 1 || len(chats[0].Request.Messages) == 0 ||
		!strings.Contains(chats[0].Request.Messages[0].Content, "You are talking to "+caller) {
		t.Errorf("chat requests: %+v", chats)
	}
	// The phone heard the agent: the greeting and the answer, well over a second of
	// speech (silence or comfort noise alone would not add up to that).
	t.Logf("the phone got %d RTP packets, %v of speech", sink.Packets(), sink.speechDuration())
	if sink.speechDuration() < time.Second {
		t.Errorf("the phone heard %v of speech in %d RTP packets", sink.speechDuration(), sink.Packets())
	}
}

// TestSIPInboundUnbound: a number whose agent was unbound after LiveKit dispatched the
// call is turned away unanswered: sipp gets a final error response instead of 200, and
// no record is made.
func TestSIPInboundUnbound(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{})
	e := newSIPEnv(t, srv, 0)
	tenant := e.tenant(t)
	agentID := e.newAgent(t, tenant, "Hello, this is Parley.", "")
	const called = "+15550102"
	e.bindNumber(t, called, tenant, agentID)
	// Unbound in Parley; LiveKit still has the rule (the race the worker must handle).
	e.lines.mu.Lock()
	e.lines.routes[called] = telephony.Route{}
	e.lines.mu.Unlock()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	sink := newRTPSink(t)
	sipp := startSipp(t, ctx, "uac_call.xml", "-s", called, "-key", "caller", "+15550124",
		"-key", "rtpport", strconv.Itoa(sink.port()), "-m", "1", e.stack.Bridge.SIPAddr())
	if err := sipp.wait(t, ctx); err == nil {
		t.Fatalf("sipp's call to an unbound number succeeded:\n%s", sipp.output())
	}
	if n := e.count(t, tenant); n != 0 {
		t.Errorf("%d call records for a rejected call", n)
	}
}

// TestSIPOutboundAnswered: the dial job rings sipp; the call is ringing until it
// answers, and only then does the conversation begin (the agent greets the callee,
// whose phone hears it); the callee's BYE completes the call.
func TestSIPOutboundAnswered(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{})
	e := newSIPEnv(t, srv, 20*time.Second)
	tenant := e.tenant(t)
	agentID := e.newAgent(t, tenant, "Hello {{customer_name}}, this is Parley.", "")
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	sink := newRTPSink(t)
	logFile := filepath.Join(t.TempDir(), "invites.log")
	sipp := startSipp(t, ctx, "uas_answer.xml", "-key", "rtpport", strconv.Itoa(sink.port()), "-m", "1",
		"-trace_logs", "-log_file", logFile)
	e.outboundLine(t, "+15550200", "127.0.0.1:"+strconv.Itoa(sipp.port))
	id := e.outboundCall(t, tenant, agentID, "+15550301", map[string]any{"variables": map[string]any{"customer_name": "Ada"}})
	if _, err := e.jobs.Insert(ctx, DialArgs{CallID: id}, nil); err != nil {
		t.Fatal(err)
	}
	rang := e.waitCall(t, ctx, tenant, id, "the call to ring", func(c Call) bool { return c.CallStatus != StatusRegistered })
	if rang.CallStatus != StatusRinging || rang.StartTimestamp != nil || rang.FromNumber != "+15550200" {
		t.Fatalf("after dialling: %s, start %v, from %q", rang.CallStatus, rang.StartTimestamp, rang.FromNumber)
	}
	ringing := time.Now()
	live := e.waitCall(t, ctx, tenant, id, "the call to be answered", func(c Call) bool { return c.CallStatus != StatusRinging })
	if live.CallStatus != StatusInProgress {
		t.Fatalf("answered call: %s / %s", live.CallStatus, live.DisconnectionReason)
	}
	// sipp rings for 2 s before it answers; the conversation starts at the answer.
	if live.StartTimestamp == nil || live.StartTimestamp.Sub(ringing) < time.Second {
		t.Errorf("the conversation began at %v, %v after the call was seen ringing", live.StartTimestamp, live.StartTimestamp.Sub(ringing))
	}
	if err := sipp.wait(t, ctx); err != nil {
		t.Fatalf("sipp: %v\n%s", err, sipp.output())
	}
	done := e.waitCall(t, ctx, tenant, id, "the call to complete", func(c Call) bool { return !c.Live() })
	if done.CallStatus != StatusCompleted || done.DisconnectionReason != ReasonUserHangup || done.DurationMS < 5000 {
		t.Errorf("completed call: %s / %s, %d ms", done.CallStatus, done.DisconnectionReason, done.DurationMS)
	}
	// The call's variables reached the prompt: the greeting names the callee.
	if len(done.TranscriptObject) == 0 || done.TranscriptObject[0].Content != "Hello Ada, this is Parley." {
		t.Errorf("transcript: %+v", done.TranscriptObject)
	}
	t.Logf("the callee got %d RTP packets, %v of speech", sink.Packets(), sink.speechDuration())
	if sink.speechDuration() < 500*time.Millisecond {
		t.Errorf("the callee heard %v of speech", sink.speechDuration())
	}
	if n := countInvites(t, logFile); n != 1 {
		t.Errorf("the phone was dialled %d times", n)
	}
	// A retry of the job (River runs it again after a crash) dials nobody.
	if err := e.sip.dial(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	if c, _ := e.svc.Get(ctx, tenant, id); c.CallStatus != StatusCompleted {
		t.Errorf("after a second run: %s", c.CallStatus)
	}
}

// countInvites counts the INVITEs sipp logged.
func countInvites(t *testing.T, logFile string) int {
	t.Helper()
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("sipp log: %v", err)
	}
	return strings.Count(string(b), "INVITE ")
}

// TestSIPOutboundBusy: 486 Busy Here makes the call busy (dial_busy), and the room the
// agent waited in is closed.
func TestSIPOutboundBusy(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{})
	e := newSIPEnv(t, srv, 20*time.Second)
	tenant := e.tenant(t)
	agentID := e.newAgent(t, tenant, "Hello, this is Parley.", "")
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	sipp := startSipp(t, ctx, "uas_busy.xml", "-m", "1")
	e.outboundLine(t, "+15550210", "127.0.0.1:"+strconv.Itoa(sipp.port))
	id := e.outboundCall(t, tenant, agentID, "+15550311", nil)
	if _, err := e.jobs.Insert(ctx, DialArgs{CallID: id}, nil); err != nil {
		t.Fatal(err)
	}
	c := e.waitCall(t, ctx, tenant, id, "the outcome", func(c Call) bool { return !c.Live() })
	if c.CallStatus != StatusBusy || c.DisconnectionReason != ReasonDialBusy || c.StartTimestamp != nil || c.EndTimestamp == nil {
		t.Errorf("busy call: %s / %s, start %v end %v", c.CallStatus, c.DisconnectionReason, c.StartTimestamp, c.EndTimestamp)
	}
	if err := sipp.wait(t, ctx); err != nil {
		t.Errorf("sipp: %v\n%s", err, sipp.output())
	}
	eventually(t, "the worker to be idle", func() bool { return e.worker.Running() == 0 })
}

// TestSIPOutboundNoAnswer: a phone that rings past the ringing timeout is cancelled
// (sipp sees the CANCEL) and the call is no_answer.
func TestSIPOutboundNoAnswer(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{})
	e := newSIPEnv(t, srv, 3*time.Second)
	tenant := e.tenant(t)
	agentID := e.newAgent(t, tenant, "Hello, this is Parley.", "")
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	sipp := startSipp(t, ctx, "uas_noanswer.xml", "-m", "1")
	e.outboundLine(t, "+15550220", "127.0.0.1:"+strconv.Itoa(sipp.port))
	id := e.outboundCall(t, tenant, agentID, "+15550321", nil)
	if _, err := e.jobs.Insert(ctx, DialArgs{CallID: id}, nil); err != nil {
		t.Fatal(err)
	}
	c := e.waitCall(t, ctx, tenant, id, "the outcome", func(c Call) bool { return !c.Live() })
	if c.CallStatus != StatusNoAnswer || c.DisconnectionReason != ReasonDialNoAnswer {
		t.Errorf("unanswered call: %s / %s", c.CallStatus, c.DisconnectionReason)
	}
	if err := sipp.wait(t, ctx); err != nil {
		t.Errorf("sipp (should have been cancelled): %v\n%s", err, sipp.output())
	}
}

// TestSIPInboundTransfer: the caller asks for a human; the model calls transfer_call
// with one of the agent's transfer destinations; the worker sends the phone a SIP REFER
// to it (TransferSIPParticipant), the phone accepts and reports the transfer done, the
// bridge hangs up, and the call is completed as call_transfer.
func TestSIPInboundTransfer(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"Can I speak to a person, please?"},
		Replies: []openaitest.Reply{{Text: "Of course, transferring you now.", ToolCalls: []openaitest.ToolCall{
			{Name: "transfer_call", Arguments: `{"destination":"+15550199"}`},
		}}},
	})
	e := newSIPEnv(t, srv, 0)
	tenant := e.tenant(t)
	agentID := e.newAgent(t, tenant, "Hello, this is Parley.", `,"transfer_destinations":["+15550199","sip:desk@pbx.example.com"]`)
	const called, caller = "+15550103", "+15550125"
	e.bindNumber(t, called, tenant, agentID)
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	sink := newRTPSink(t)
	logFile := filepath.Join(t.TempDir(), "refer.log")
	sipp := startSipp(t, ctx, "uac_transfer.xml", "-s", called, "-key", "caller", caller,
		"-key", "rtpport", strconv.Itoa(sink.port()), "-m", "1", "-trace_logs", "-log_file", logFile, e.stack.Bridge.SIPAddr())
	if err := sipp.wait(t, ctx); err != nil {
		t.Fatalf("sipp: %v\n%s", err, sipp.output())
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "tel:+15550199") {
		t.Errorf("the REFER's Refer-To is not tel:+15550199:\n%s", b)
	}
	var c Call
	eventually(t, "the call to end", func() bool {
		list, _, err := e.svc.List(ctx, tenant, ListParams{})
		if err != nil || len(list) != 1 {
			return false
		}
		c = list[0]
		return !c.Live()
	})
	if c.CallStatus != StatusCompleted || c.DisconnectionReason != ReasonCallTransfer {
		t.Errorf("transferred call: %s / %s", c.CallStatus, c.DisconnectionReason)
	}
	if !strings.Contains(c.Transcript, "transferring you now") {
		t.Errorf("transcript: %q", c.Transcript)
	}
}

// TestSIPDialTwice: two runs of one dial job at once (a River retry racing a run that
// is still dialling, after a worker was presumed lost) ring the phone once, and the
// call goes on normally.
func TestSIPDialTwice(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{})
	e := newSIPEnv(t, srv, 20*time.Second)
	tenant := e.tenant(t)
	agentID := e.newAgent(t, tenant, "Hello, this is Parley.", "")
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	sink := newRTPSink(t)
	logFile := filepath.Join(t.TempDir(), "invites.log")
	sipp := startSipp(t, ctx, "uas_answer.xml", "-key", "rtpport", strconv.Itoa(sink.port()), "-m", "2",
		"-trace_logs", "-log_file", logFile)
	e.outboundLine(t, "+15550230", "127.0.0.1:"+strconv.Itoa(sipp.port))
	id := e.outboundCall(t, tenant, agentID, "+15550331", nil)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.sip.dial(ctx, id, false)
		}()
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("dial: %v, %v", errs[0], errs[1])
	}
	done := e.waitCall(t, ctx, tenant, id, "the call to end", func(c Call) bool { return !c.Live() })
	if done.CallStatus != StatusCompleted || done.DisconnectionReason != ReasonUserHangup {
		t.Errorf("call: %s / %s", done.CallStatus, done.DisconnectionReason)
	}
	// sipp (-m 2) would have taken a second call; give a stray INVITE time to arrive.
	time.Sleep(time.Second)
	if n := countInvites(t, logFile); n != 1 {
		t.Errorf("the phone was dialled %d times", n)
	}
}

// TestSIPWithTelephony runs calls through the real telephony service instead of
// testLines: its trunk, number and binding make the LiveKit trunks and dispatch rules
// (the contract between the two packages is the dispatch metadata), and its
// InboundRoute and OutboundLine route the calls. A call to the bound number is
// answered and recorded; a call to the trunk's other, unbound, number reaches the
// trunk's catch-all rule and is turned away with no record; an outbound call leaves on
// the trunk's outbound side (here to a busy phone).
func TestSIPWithTelephony(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"Can I book a cleaning on Monday?"},
		Replies:     []openaitest.Reply{{Text: "Yes, Monday at ten is free."}},
	})
	e := newSIPEnv(t, srv, 20*time.Second)
	box, err := crypt.New(crypt.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	tel, err := telephony.New(e.pool, telephony.Config{LiveKitURL: e.stack.Server.URL(), APIKey: lkserver.DevKey,
		APISecret: lkserver.DevSecret, AgentName: e.agentName, Logger: slog.New(slog.DiscardHandler)}, box)
	if err != nil {
		t.Fatal(err)
	}
	// The runner and the dial job route through the telephony service from here on.
	e.lines.mu.Lock()
	e.lines.real = tel
	e.lines.mu.Unlock()
	tenant := e.tenant(t)
	agentID := e.newAgent(t, tenant, "Hello, this is Parley.", "")
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()

	busy := startSipp(t, ctx, "uas_busy.xml", "-m", "1")
	str := func(s string) *string { return &s }
	trunk, err := tel.CreateTrunk(ctx, tenant, telephony.TrunkInput{Name: str("test"),
		OutboundAddress: str("127.0.0.1:" + strconv.Itoa(busy.port)), InboundAddresses: &[]string{"127.0.0.1/32"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.DeleteTrunk(context.Background(), tenant, trunk.ID) })
	const bound, unbound, caller = "+15550401", "+15550402", "+15550499"
	if _, err := tel.CreateNumber(ctx, tenant, telephony.NumberInput{PhoneNumber: bound, TrunkID: trunk.ID, AgentID: agentID}); err != nil {
		t.Fatal(err)
	}
	if _, err := tel.CreateNumber(ctx, tenant, telephony.NumberInput{PhoneNumber: unbound, TrunkID: trunk.ID}); err != nil {
		t.Fatal(err)
	}

	// The unbound number: rejected, no record.
	sink := newRTPSink(t)
	rejected := startSipp(t, ctx, "uac_call.xml", "-s", unbound, "-key", "caller", caller,
		"-key", "rtpport", strconv.Itoa(sink.port()), "-m", "1", e.stack.Bridge.SIPAddr())
	if err := rejected.wait(t, ctx); err == nil {
		t.Errorf("sipp's call to an unbound number succeeded:\n%s", rejected.output())
	}
	if n := e.count(t, tenant); n != 0 {
		t.Fatalf("%d call records after a call to an unbound number", n)
	}

	// The bound number: answered, recorded with both numbers, completed on hang-up.
	answered := startSipp(t, ctx, "uac_call.xml", "-s", bound, "-key", "caller", caller,
		"-key", "rtpport", strconv.Itoa(sink.port()), "-m", "1", e.stack.Bridge.SIPAddr())
	if err := answered.wait(t, ctx); err != nil {
		t.Fatalf("sipp: %v\n%s", err, answered.output())
	}
	var c Call
	eventually(t, "the inbound call to complete", func() bool {
		list, _, err := e.svc.List(ctx, tenant, ListParams{})
		if err != nil || len(list) != 1 {
			return false
		}
		c = list[0]
		return c.CallStatus == StatusCompleted
	})
	if c.Direction != DirectionInbound || c.FromNumber != caller || c.ToNumber != bound || c.AgentID != agentID ||
		c.DisconnectionReason != ReasonUserHangup || !strings.Contains(c.Transcript, "Monday at ten") {
		t.Errorf("inbound record: %s %s→%s agent %s, %s, transcript %q", c.Direction, c.FromNumber, c.ToNumber, c.AgentID, c.DisconnectionReason, c.Transcript)
	}

	// Outbound from the bound number (the agent's own): the busy phone.
	id := e.outboundCall(t, tenant, agentID, "+15550403", nil)
	if _, err := e.jobs.Insert(ctx, DialArgs{CallID: id}, nil); err != nil {
		t.Fatal(err)
	}
	out := e.waitCall(t, ctx, tenant, id, "the outbound outcome", func(c Call) bool { return !c.Live() })
	if out.CallStatus != StatusBusy || out.FromNumber != bound {
		t.Errorf("outbound call: %s / %s from %q", out.CallStatus, out.DisconnectionReason, out.FromNumber)
	}
	if err := busy.wait(t, ctx); err != nil {
		t.Errorf("busy sipp: %v\n%s", err, busy.output())
	}
}
