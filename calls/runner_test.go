package calls

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/agents"
	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/internal/safehttp"
	"github.com/parleyhq/parley/voice/livekit/dispatch"
	"github.com/parleyhq/parley/voice/livekit/lktest"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// runnerEnv is a worker: a dispatch.Worker registered with the real livekit-server,
// running calls with a Runner whose agents talk to a scripted OpenAI-compatible server.
type runnerEnv struct {
	*env
	agents *agents.Service
	srv    *openaitest.Server
	lk     *lkserver.Server
	worker *dispatch.Worker
}

func newRunnerEnv(t *testing.T, srv *openaitest.Server, callerWait time.Duration) *runnerEnv {
	t.Helper()
	return startRunnerEnv(t, srv, "parley-test", func(_ *env, r *Runner) { r.CallerWait = callerWait })
}

// startRunnerEnv starts a runnerEnv whose agent name begins with prefix; mod completes
// the Runner before the worker starts.
func startRunnerEnv(t *testing.T, srv *openaitest.Server, prefix string, mod func(*env, *Runner)) *runnerEnv {
	t.Helper()
	lkSrv := liveKit(t)
	name := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
	rooms := newLiveKit(t, func(c *LiveKitConfig) { c.AgentName = name })
	e := newEnv(t, func(c *Config) { c.Rooms = rooms })
	ag, engine, log := workerParts(t, e)
	runner := &Runner{Calls: e.svc, Engine: engine, Logger: log}
	mod(e, runner)
	w := startWorker(t, lkSrv.URL(), name, runner)
	return &runnerEnv{env: e, agents: ag, srv: srv, lk: lkSrv, worker: w}
}

// workerParts makes what a worker's Runner on e needs: the agents service, an Engine
// whose HTTP client may reach the scripted server on loopback, and the log (text on
// stderr under -v, else nothing). The client's idle connections close when the test
// ends.
func workerParts(t *testing.T, e *env) (*agents.Service, *Engine, *slog.Logger) {
	t.Helper()
	box, err := crypt.New(crypt.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	guard, err := safehttp.New(safehttp.Config{AllowPrivate: true, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(guard.CloseIdleConnections)
	ag, err := agents.New(e.pool, agents.Config{}, box, guard, guard)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return ag, &Engine{Agents: ag, HTTPClient: guard.HTTPClient(), Logger: log}, log
}

// startWorker registers a dispatch worker for the agent name with the livekit-server
// at url, running its calls with runner; it stops when the test ends.
func startWorker(t *testing.T, url, name string, runner *Runner) *dispatch.Worker {
	t.Helper()
	w, err := dispatch.New(dispatch.Config{
		URL: url, APIKey: lkserver.DevKey, APISecret: lkserver.DevSecret,
		AgentName: name, Load: func() float64 { return 0 }, Logger: runner.Logger,
	}, runner.HandleJob)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w
}

// newAgent creates an agent whose three providers are the scripted server.
func (e *runnerEnv) newAgent(t *testing.T, tenantID, extra string) string {
	t.Helper()
	p := fmt.Sprintf(`{"provider":"openai","base_url":%q,"api_key":"test-key"}`, e.srv.URL)
	body := `{"agent_name":"Front desk","begin_message":"Hello, this is Parley.",
		"response_engine":{"system_prompt":"You are the front desk of a dental practice."},
		"llm":` + p + `,"stt":` + p + `,"tts":` + p + extra + `}`
	a, err := e.agents.Create(context.Background(), tenantID, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return a.ID
}

// TestRunnerWebCall is the whole path of a browser call: POST /v1/calls/web's
// StartWeb creates the record and the room with a dispatch; LiveKit dispatches the job
// to the worker; a caller joins with the browser token, hears the greeting, asks a
// question in espeak-ng speech and hears the answer; when it hangs up, the record is
// completed with both sides of the transcript and the turn's latency.
func TestRunnerWebCall(t *testing.T) {
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"Can I book a cleaning on Monday?"},
		Replies:     []openaitest.Reply{{Text: "Yes, Monday at ten is free."}},
	})
	e := newRunnerEnv(t, srv, 15*time.Second)
	tenant := e.tenant(t)
	agentID := e.newAgent(t, tenant, "")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	wc, err := e.svc.StartWeb(ctx, tenant, agentID, map[string]any{"customer_name": "Ada"})
	if err != nil {
		t.Fatal(err)
	}
	caller, err := lktest.Join(ctx, e.lk.URL(), wc.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	joined := time.Now()
	if _, err := caller.WaitSpeech(ctx, joined); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	if _, err := caller.WaitSilence(ctx, joined, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	c, err := e.svc.Get(ctx, tenant, wc.CallID)
	if err != nil || c.CallStatus != StatusInProgress || c.StartTimestamp == nil {
		t.Fatalf("during the call: %+v, %v", c, err)
	}

	q, err := lktest.LoadSpeech("../voice/testdata/hello.wav")
	if err != nil {
		t.Fatal(err)
	}
	asked := caller.Say(q)
	caller.Say(lktest.Silence(2 * time.Second))
	qEnd := asked.Add(time.Duration(len(q)) * time.Second / lktest.Rate)
	answer, err := caller.WaitSpeech(ctx, qEnd)
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	if _, err := caller.WaitSilence(ctx, answer, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// The live transcript is visible while the call goes on.
	eventually(t, "live transcript", func() bool {
		c, err := e.svc.Get(ctx, tenant, wc.CallID)
		return err == nil && strings.Contains(c.Transcript, "Monday at ten")
	})
	// The model got the caller's words.
	if chats := srv.Chats(); len(chats) != 1 || chats[0].Request.LastUserText() != "Can I book a cleaning on Monday?" {
		t.Fatalf("chat requests: %+v", chats)
	}

	caller.Close()
	var done Call
	eventually(t, "the call to complete", func() bool {
		done, err = e.svc.Get(ctx, tenant, wc.CallID)
		return err == nil && done.CallStatus == StatusCompleted
	})
	if done.DisconnectionReason != ReasonUserHangup || done.EndTimestamp == nil || done.DurationMS <= 0 {
		t.Errorf("completed call: reason %q, end %v, duration %d", done.DisconnectionReason, done.EndTimestamp, done.DurationMS)
	}
	var roles []string
	for _, turn := range done.TranscriptObject {
		roles = append(roles, turn.Role+": "+turn.Content)
	}
	got := strings.Join(roles, "\n")
	for _, want := range []string{"agent: Hello, this is Parley.", "user: Can I book a cleaning on Monday?", "agent: Yes, Monday at ten is free."} {
		if !strings.Contains(got, want) {
			t.Errorf("transcript_object lacks %q:\n%s", want, got)
		}
	}
	if done.Latency.E2E == nil || done.Latency.E2E.Num < 1 || done.Latency.LLM == nil || done.Latency.LLM.P50 < 0 {
		t.Errorf("latency: %+v", done.Latency)
	}
	for _, lt := range done.Latency.Turns {
		if lt.E2E != nil && *lt.E2E <= 0 {
			t.Errorf("turn %d: e2e %d ms", lt.Turn, *lt.E2E)
		}
	}
}

// TestRunnerEndByAPI: POST /v1/calls/{id}/end deletes the room; the agent leaves and
// the worker completes the record as api_ended.
func TestRunnerEndByAPI(t *testing.T) {
	srv := openaitest.New(t, openaitest.Config{})
	e := newRunnerEnv(t, srv, 15*time.Second)
	tenant := e.tenant(t)
	agentID := e.newAgent(t, tenant, "")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	wc, err := e.svc.StartWeb(ctx, tenant, agentID, nil)
	if err != nil {
		t.Fatal(err)
	}
	caller, err := lktest.Join(ctx, e.lk.URL(), wc.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	if _, err := caller.WaitSpeech(ctx, time.Now()); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	if _, err := e.svc.End(ctx, tenant, wc.CallID); err != nil {
		t.Fatal(err)
	}
	var done Call
	eventually(t, "the call to complete", func() bool {
		done, err = e.svc.Get(ctx, tenant, wc.CallID)
		return err == nil && !done.Live()
	})
	if done.CallStatus != StatusCompleted || done.DisconnectionReason != ReasonAPIEnded {
		t.Errorf("ended call: %s / %s", done.CallStatus, done.DisconnectionReason)
	}
	eventually(t, "the worker to be idle", func() bool { return e.worker.Running() == 0 })
}

// TestRunnerNoCaller: nobody joins; the worker gives up after CallerWait and fails the
// call as error_user_not_joined.
func TestRunnerNoCaller(t *testing.T) {
	srv := openaitest.New(t, openaitest.Config{})
	e := newRunnerEnv(t, srv, 2*time.Second)
	tenant := e.tenant(t)
	agentID := e.newAgent(t, tenant, "")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	wc, err := e.svc.StartWeb(ctx, tenant, agentID, nil)
	if err != nil {
		t.Fatal(err)
	}
	var done Call
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		done, err = e.svc.Get(ctx, tenant, wc.CallID)
		if err == nil && !done.Live() {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if done.CallStatus != StatusFailed || done.DisconnectionReason != ReasonUserNotJoined {
		t.Errorf("call nobody joined: %s / %s", done.CallStatus, done.DisconnectionReason)
	}
}

// TestFailOrphans: an in-progress call whose room is gone and that has been quiet is
// failed as error_worker_lost; one whose room is open, or that was saved recently, is
// left alone.
func TestFailOrphans(t *testing.T) {
	t.Parallel()
	rooms := newLiveKit(t)
	e := newEnv(t, func(c *Config) { c.Rooms = rooms })
	tenant := e.tenant(t)
	ctx := t.Context()
	agentID := e.agent(t, tenant, "Front desk", "active")
	start := func() Call {
		wc, err := e.svc.StartWeb(ctx, tenant, agentID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Begin(ctx, wc.CallID, time.Now()); err != nil {
			t.Fatal(err)
		}
		return wc.Call
	}
	lost, open, recent := start(), start(), start()
	for _, c := range []Call{lost, recent} {
		if err := rooms.DeleteRoom(ctx, c.RoomName); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.pool.Exec(ctx, `UPDATE calls SET updated_at = now() - interval '10 minutes' WHERE id = ANY ($1)`,
		[]string{lost.CallID, open.CallID}); err != nil {
		t.Fatal(err)
	}
	n, err := e.svc.FailOrphans(ctx, 2*time.Minute)
	if err != nil || n != 1 {
		t.Fatalf("FailOrphans = %d, %v; want 1", n, err)
	}
	for _, c := range []struct {
		id, status, reason string
	}{{lost.CallID, StatusFailed, ReasonWorkerLost}, {open.CallID, StatusInProgress, ""}, {recent.CallID, StatusInProgress, ""}} {
		st, reason := e.status(t, c.id)
		if st != c.status || reason != c.reason {
			t.Errorf("call %s: %s/%s, want %s/%s", c.id, st, reason, c.status, c.reason)
		}
	}
	rooms.DeleteRoom(ctx, open.RoomName)
}

// The URL browsers get is the public one when it is set.
func TestLiveKitPublicURL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ url, public, want string }{
		{"ws://livekit:7880", "", "ws://livekit:7880"},
		{"http://livekit:7880", "", "ws://livekit:7880"},
		{"ws://livekit:7880", "wss://livekit.example.com", "wss://livekit.example.com"},
		{"ws://livekit:7880", "https://livekit.example.com", "wss://livekit.example.com"},
	} {
		l, err := NewLiveKit(LiveKitConfig{URL: c.url, PublicURL: c.public, APIKey: "k", APISecret: strings.Repeat("s", 32)})
		if err != nil {
			t.Fatal(err)
		}
		if got := l.URL(); got != c.want {
			t.Errorf("URL %q public %q: %q, want %q", c.url, c.public, got, c.want)
		}
	}
}
