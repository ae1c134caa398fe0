package calls

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/parleyhq/parley/agents"
	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/jobs"
	"github.com/parleyhq/parley/internal/safehttp"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// analysisEnv is a calls service whose finished calls are analysed: a River client on
// the test's database (working jobs when work is set), agents whose LLM is a scripted
// OpenAI-compatible server, and an Analyzer over them.
type analysisEnv struct {
	*env
	agents   *agents.Service
	engine   *Engine
	analyzer *Analyzer
	jobs     *jobs.Client
	srv      *openaitest.Server
}

func newAnalysisEnv(t *testing.T, srv *openaitest.Server, work bool, mods ...func(*AnalysisConfig)) *analysisEnv {
	t.Helper()
	return newAnalysisEnvOn(t, newEnv(t), srv, work, mods...)
}

// newAnalysisEnvOn is newAnalysisEnv on a service the test configured.
func newAnalysisEnvOn(t *testing.T, e *env, srv *openaitest.Server, work bool, mods ...func(*AnalysisConfig)) *analysisEnv {
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
	eng := &Engine{Agents: ag, HTTPClient: guard.HTTPClient(), Logger: log}
	cfg := AnalysisConfig{Logger: log, RequestTimeout: 20 * time.Second}
	for _, m := range mods {
		m(&cfg)
	}
	an, err := NewAnalyzer(e.svc, eng, cfg)
	if err != nil {
		t.Fatal(err)
	}
	workers := river.NewWorkers()
	an.AddWorkers(workers)
	jc, err := jobs.New(e.pool, jobs.Config{Work: work, MaxWorkers: 2}, workers, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	e.svc.SetJobs(jc.Client)
	if err := jc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jc.Stop)
	return &analysisEnv{env: e, agents: ag, engine: eng, analyzer: an, jobs: jc, srv: srv}
}

// newAgent creates an agent of tenant whose LLM is the scripted server; extra adds
// fields to its definition (a leading comma and JSON members).
func (e *analysisEnv) newAgent(t *testing.T, tenantID, extra string) string {
	t.Helper()
	body := fmt.Sprintf(`{"agent_name":"Sales","response_engine":{"system_prompt":"Book a product demo with the caller."},
		"llm":{"provider":"openai","base_url":%q,"api_key":"agent-key","model":"agent-model"}%s}`, e.srv.URL, extra)
	a, err := e.agents.Create(context.Background(), tenantID, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return a.ID
}

// salesCall is a short sales call, both sides.
var salesCall = []Turn{
	{Role: RoleAgent, Content: "Hello, this is Parley. How can I help?", TurnNumber: 0},
	{Role: RoleUser, Content: "Hi, I'm Ada. I'd like a demo of the Pro plan for my team of 12, on Tuesday.", TurnNumber: 1},
	{Role: RoleAgent, Content: "Booked: Tuesday at ten for the Pro plan. Anything else?", TurnNumber: 1},
	{Role: RoleUser, Content: "No, thanks, that's great.", TurnNumber: 2},
}

// finishedCall creates a call of agentID with metadata, begins it and finishes it
// with turns; it returns the call ID.
func (e *analysisEnv) finishedCall(t *testing.T, tenantID, agentID string, metadata map[string]any, status string, turns []Turn) string {
	t.Helper()
	ctx := context.Background()
	c, err := e.svc.CreateWeb(ctx, tenantID, agentID, metadata)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Begin(ctx, c.CallID, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Finish(ctx, c.CallID, Finish{Status: status, Reason: ReasonUserHangup, TranscriptObject: turns}); err != nil {
		t.Fatal(err)
	}
	return c.CallID
}

// analysisJobs counts the call_analysis jobs of a call.
func (e *env) analysisJobs(t *testing.T, callID string) int {
	t.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE kind = 'call_analysis' AND args->>'call_id' = $1`,
		callID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// extracted reads a call's extracted object from the table.
func (e *env) extracted(t *testing.T, callID string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := e.pool.QueryRow(context.Background(), `SELECT extracted FROM calls WHERE id = $1`, callID).Scan(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

const analysisFields = `,"post_call_analysis":[
	{"name":"plan","type":"enum","choices":["Basic","Pro"],"description":"The plan the caller is interested in."},
	{"name":"team_size","type":"integer","description":"How many people are in the caller's team."},
	{"name":"demo_booked","type":"boolean","description":"Whether a demo was booked."},
	{"name":"budget","type":"number","description":"The caller's budget in USD."},
	{"name":"caller_name","type":"string","description":"The caller's first name."}]`

// validAnswer matches the schema of an agent with analysisFields and a call with a
// {"callback_day"} output_parameters template.
const validAnswer = `{"call_summary":"Ada booked a Pro plan demo for Tuesday at ten.","call_successful":true,
	"user_sentiment":"Positive",
	"custom_analysis_data":{"plan":"Pro","team_size":12,"demo_booked":true,"budget":null,"caller_name":"Ada"},
	"output_parameters":{"callback_day":"Tuesday"}}`

// TestAnalysisJobCommitsWithFinish: a call finished with a transcript has exactly one
// analysis job, inserted by Finish; a retried Finish adds none, and inserting the job
// again for the same call is skipped as a duplicate.
func TestAnalysisJobCommitsWithFinish(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{})
	e := newAnalysisEnv(t, srv, false)
	ctx := context.Background()
	tenant := e.tenant(t)
	id := e.finishedCall(t, tenant, e.newAgent(t, tenant, ""), nil, StatusCompleted, salesCall)
	if n := e.analysisJobs(t, id); n != 1 {
		t.Fatalf("%d analysis jobs after Finish, want 1", n)
	}
	// A second hang-up path finishing the call again: the first outcome stands, no job.
	if err := e.svc.Finish(ctx, id, Finish{Status: StatusFailed, Reason: ReasonError, TranscriptObject: salesCall}); err != nil {
		t.Fatal(err)
	}
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.jobs.InsertTx(ctx, tx, AnalysisArgs{CallID: id}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if !res.UniqueSkippedAsDuplicate {
		t.Error("a second analysis job for the same call was not skipped as a duplicate")
	}
	if n := e.analysisJobs(t, id); n != 1 {
		t.Fatalf("%d analysis jobs, want 1", n)
	}
	// Another call gets its own.
	other := e.finishedCall(t, tenant, e.newAgent(t, tenant, ""), nil, StatusFailed, salesCall[:2])
	if n := e.analysisJobs(t, other); n != 1 {
		t.Fatalf("%d analysis jobs for a call that failed after some conversation, want 1", n)
	}
}

// TestAnalysisJobRollsBackWithFinish: the job is written in Finish's transaction, so
// rolling it back leaves neither the final status nor the job.
func TestAnalysisJobRollsBackWithFinish(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{})
	e := newAnalysisEnv(t, srv, false)
	ctx := context.Background()
	tenant := e.tenant(t)
	c, err := e.svc.CreateWeb(ctx, tenant, e.newAgent(t, tenant, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Begin(ctx, c.CallID, time.Time{}); err != nil {
		t.Fatal(err)
	}
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ended, err := e.svc.finishTx(ctx, tx, c.CallID, Finish{Status: StatusCompleted, Reason: ReasonUserHangup, TranscriptObject: salesCall})
	if err != nil || !ended {
		t.Fatalf("finishTx = %v, %v", ended, err)
	}
	var inTx int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'call_analysis' AND args->>'call_id' = $1`, c.CallID).Scan(&inTx); err != nil {
		t.Fatal(err)
	}
	if inTx != 1 {
		t.Fatalf("%d jobs inside the transaction, want 1", inTx)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.analysisJobs(t, c.CallID); n != 0 {
		t.Fatalf("%d analysis jobs after rollback, want 0", n)
	}
	if st, _ := e.status(t, c.CallID); st != StatusInProgress {
		t.Fatalf("status after rollback = %s, want in_progress", st)
	}
}

// TestNoAnalysisWithoutTranscript: calls that never started, or ended with nothing
// said, get no analysis job.
func TestNoAnalysisWithoutTranscript(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{})
	e := newAnalysisEnv(t, srv, false)
	ctx := context.Background()
	tenant := e.tenant(t)
	agentID := e.newAgent(t, tenant, "")

	neverStarted, err := e.svc.CreateWeb(ctx, tenant, agentID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Fail(ctx, neverStarted.CallID, ReasonUserNotJoined); err != nil {
		t.Fatal(err)
	}
	failedBeforeBegin, err := e.svc.CreateWeb(ctx, tenant, agentID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Finish(ctx, failedBeforeBegin.CallID, Finish{Status: StatusFailed, Reason: ReasonError}); err != nil {
		t.Fatal(err)
	}
	silent := e.finishedCall(t, tenant, agentID, nil, StatusCompleted, []Turn{{Role: RoleUser, Content: ""}})
	for _, id := range []string{neverStarted.CallID, failedBeforeBegin.CallID, silent} {
		if n := e.analysisJobs(t, id); n != 0 {
			t.Errorf("call %s: %d analysis jobs, want 0", id, n)
		}
	}
	// The analyzer leaves such a call alone even when asked directly.
	if _, err := e.analyzer.Analyze(ctx, silent); err != nil {
		t.Fatal(err)
	}
	if len(srv.Chats()) != 0 {
		t.Errorf("%d LLM requests for a call without a transcript", len(srv.Chats()))
	}
}

// TestAnalysisStoresValidatedAnswer runs the job on a real River worker: the request
// carries the strict JSON Schema of the agent's fields (enum, integer, boolean,
// number, string, all nullable) and the call's output_parameters template, and the
// valid answer lands in extracted.
func TestAnalysisStoresValidatedAnswer(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{Replies: []openaitest.Reply{{Text: validAnswer}}})
	e := newAnalysisEnv(t, srv, true)
	tenant := e.tenant(t)
	meta := map[string]any{"output_parameters": map[string]any{"callback_day": "The day the caller wants to be called back."}}
	id := e.finishedCall(t, tenant, e.newAgent(t, tenant, analysisFields), meta, StatusCompleted, salesCall)
	eventually(t, "the analysis", func() bool { return e.extracted(t, id)["call_summary"] != nil })

	got := e.extracted(t, id)
	want := map[string]any{
		"call_summary": "Ada booked a Pro plan demo for Tuesday at ten.", "call_successful": true, "user_sentiment": "Positive",
		"custom_analysis_data": map[string]any{"plan": "Pro", "team_size": 12.0, "demo_booked": true, "budget": nil, "caller_name": "Ada"},
		"output_parameters":    map[string]any{"callback_day": "Tuesday"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("extracted = %v\nwant %v", got, want)
	}
	c, err := e.svc.Get(context.Background(), tenant, id)
	if err != nil {
		t.Fatal(err)
	}
	if op := c.OutputParameters(); op != `{"callback_day":"Tuesday"}` {
		t.Errorf("OutputParameters() = %s", op)
	}

	chats := srv.Chats()
	if len(chats) != 1 {
		t.Fatalf("%d LLM requests, want 1", len(chats))
	}
	req := chats[0].Request
	if req.Model != "agent-model" || req.Stream {
		t.Errorf("model %q stream %v, want the agent's model, not streamed", req.Model, req.Stream)
	}
	var rf struct {
		Type       string `json:"type"`
		JSONSchema struct {
			Name   string         `json:"name"`
			Strict bool           `json:"strict"`
			Schema map[string]any `json:"schema"`
		} `json:"json_schema"`
	}
	if err := json.Unmarshal(req.ResponseFormat, &rf); err != nil {
		t.Fatalf("response_format %s: %v", req.ResponseFormat, err)
	}
	if rf.Type != "json_schema" || !rf.JSONSchema.Strict || rf.JSONSchema.Name == "" {
		t.Fatalf("response_format = %s", req.ResponseFormat)
	}
	schema := rf.JSONSchema.Schema
	if schema["additionalProperties"] != false || len(schema["required"].([]any)) != 5 {
		t.Errorf("top-level schema not strict: %v", schema)
	}
	custom := schema["properties"].(map[string]any)["custom_analysis_data"].(map[string]any)
	fields := custom["properties"].(map[string]any)
	wantTypes := map[string]any{
		"plan":        map[string]any{"type": []any{"string", "null"}, "enum": []any{"Basic", "Pro", nil}, "description": "The plan the caller is interested in."},
		"team_size":   map[string]any{"type": []any{"integer", "null"}, "description": "How many people are in the caller's team."},
		"demo_booked": map[string]any{"type": []any{"boolean", "null"}, "description": "Whether a demo was booked."},
		"budget":      map[string]any{"type": []any{"number", "null"}, "description": "The caller's budget in USD."},
		"caller_name": map[string]any{"type": []any{"string", "null"}, "description": "The caller's first name."},
	}
	if !reflect.DeepEqual(fields, wantTypes) {
		t.Errorf("custom_analysis_data properties = %v\nwant %v", fields, wantTypes)
	}
	if len(custom["required"].([]any)) != 5 || custom["additionalProperties"] != false {
		t.Errorf("custom_analysis_data not strict: %v", custom)
	}
	op := schema["properties"].(map[string]any)["output_parameters"].(map[string]any)
	if !reflect.DeepEqual(op["required"], []any{"callback_day"}) {
		t.Errorf("output_parameters schema = %v", op)
	}
	sentiment := schema["properties"].(map[string]any)["user_sentiment"].(map[string]any)
	if !reflect.DeepEqual(sentiment["enum"], []any{"Positive", "Neutral", "Negative"}) {
		t.Errorf("user_sentiment = %v", sentiment)
	}
	// The prompt carries the schema (for servers that ignore response_format), the
	// agent's goal and the transcript.
	sys, user := req.Messages[0].Content, req.Messages[1].Content
	for _, s := range []string{`"custom_analysis_data"`, "Book a product demo"} {
		if !strings.Contains(sys, s) {
			t.Errorf("system prompt lacks %q", s)
		}
	}
	if !strings.Contains(user, "User: Hi, I'm Ada.") || !strings.Contains(user, "Agent: Booked: Tuesday") {
		t.Errorf("user message lacks the transcript:\n%s", user)
	}
}

// TestAnalysisRetriesInvalidAnswer: an answer with a value outside its enum and a
// missing field is sent back with the validation errors; the corrected answer is
// stored.
func TestAnalysisRetriesInvalidAnswer(t *testing.T) {
	t.Parallel()
	invalid := `{"call_summary":"Ada booked a demo.","call_successful":true,"user_sentiment":"Happy",
		"custom_analysis_data":{"plan":"Enterprise","team_size":12,"demo_booked":true,"budget":null}}`
	srv := openaitest.New(t, openaitest.Config{Replies: []openaitest.Reply{{Text: invalid}, {Text: "```json\n" + validAnswer + "\n```"}}})
	e := newAnalysisEnv(t, srv, false)
	tenant := e.tenant(t)
	meta := map[string]any{"output_parameters": `{"callback_day": "The day to call back."}`} // a template sent as a JSON string
	id := e.finishedCall(t, tenant, e.newAgent(t, tenant, analysisFields), meta, StatusCompleted, salesCall)
	res, err := e.analyzer.Analyze(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if res.AnalysisError != "" || res.UserSentiment != "Positive" || res.CustomAnalysisData["plan"] != "Pro" {
		t.Fatalf("result = %+v", res)
	}
	chats := srv.Chats()
	if len(chats) != 2 {
		t.Fatalf("%d LLM requests, want 2", len(chats))
	}
	msgs := chats[1].Request.Messages
	if len(msgs) != 4 || msgs[2].Role != "assistant" || msgs[2].Content != invalid {
		t.Fatalf("retry messages = %+v", msgs)
	}
	feedback := msgs[3].Content
	for _, s := range []string{"/user_sentiment", "/custom_analysis_data/plan", "caller_name", "output_parameters"} {
		if !strings.Contains(feedback, s) {
			t.Errorf("feedback lacks %q:\n%s", s, feedback)
		}
	}
	got := e.extracted(t, id)
	if got["user_sentiment"] != "Positive" || got["output_parameters"].(map[string]any)["callback_day"] != "Tuesday" {
		t.Errorf("extracted = %v", got)
	}
}

// TestAnalysisKeepsOnlyValidatedValues: when the corrected answer is still wrong, the
// values that match their schema are stored, the others are not, and analysis_error
// says why; an answer that is not JSON at all stores nothing but the error.
func TestAnalysisKeepsOnlyValidatedValues(t *testing.T) {
	t.Parallel()
	bad := `{"call_summary":"Ada booked a demo.","call_successful":"yes","user_sentiment":"Neutral",
		"custom_analysis_data":{"plan":"Enterprise","team_size":12.5,"demo_booked":true,"budget":100,"caller_name":"Ada"},"extra":1}`
	srv := openaitest.New(t, openaitest.Config{Replies: []openaitest.Reply{{Text: bad}}})
	e := newAnalysisEnv(t, srv, false)
	ctx := context.Background()
	tenant := e.tenant(t)
	id := e.finishedCall(t, tenant, e.newAgent(t, tenant, analysisFields), nil, StatusCompleted, salesCall)
	if _, err := e.analyzer.Analyze(ctx, id); err != nil {
		t.Fatal(err)
	}
	got := e.extracted(t, id)
	errText, _ := got["analysis_error"].(string)
	delete(got, "analysis_error")
	want := map[string]any{"call_summary": "Ada booked a demo.", "user_sentiment": "Neutral",
		"custom_analysis_data": map[string]any{"demo_booked": true, "budget": 100.0, "caller_name": "Ada"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("extracted = %v\nwant %v", got, want)
	}
	for _, s := range []string{"after 2 attempts", "call_successful", "plan"} {
		if !strings.Contains(errText, s) {
			t.Errorf("analysis_error lacks %q: %s", s, errText)
		}
	}
	if n := len(srv.Chats()); n != 2 {
		t.Errorf("%d LLM requests, want 2", n)
	}

	// Not JSON: nothing but the error; and a later good analysis clears the error.
	srv.SetReplies(openaitest.Reply{Text: "Sure! The call went well."})
	id2 := e.finishedCall(t, tenant, e.newAgent(t, tenant, analysisFields), nil, StatusCompleted, salesCall)
	if _, err := e.analyzer.Analyze(ctx, id2); err != nil {
		t.Fatal(err)
	}
	got = e.extracted(t, id2)
	if len(got) != 1 || !strings.Contains(fmt.Sprint(got["analysis_error"]), "not a JSON value") {
		t.Errorf("extracted = %v", got)
	}
	srv.SetReplies(openaitest.Reply{Text: `{"call_summary":"Ada booked a demo.","call_successful":true,"user_sentiment":"Positive",
		"custom_analysis_data":{"plan":"Pro","team_size":12,"demo_booked":true,"budget":null,"caller_name":null}}`})
	if _, err := e.analyzer.Analyze(ctx, id2); err != nil {
		t.Fatal(err)
	}
	if got := e.extracted(t, id2); got["analysis_error"] != nil || got["call_successful"] != true {
		t.Errorf("extracted after a good analysis = %v", got)
	}
}

// TestAnalysisOfDeletedAgent: with the agent gone, the call is analysed on the
// server's default LLM, with the core questions and the call's own template.
func TestAnalysisOfDeletedAgent(t *testing.T) {
	t.Parallel()
	agentSrv := openaitest.New(t, openaitest.Config{Replies: []openaitest.Reply{{Text: validAnswer}}})
	defSrv := openaitest.New(t, openaitest.Config{Replies: []openaitest.Reply{{Text: `{"call_summary":"A demo was booked.",
		"call_successful":true,"user_sentiment":"Neutral","output_parameters":{"callback_day":null}}`}}})
	e := newAnalysisEnv(t, agentSrv, false)
	e.engine.Defaults = ProviderDefaults{OpenAIBaseURL: defSrv.URL, OpenAIAPIKey: "server-key", LLMModel: "server-model"}
	ctx := context.Background()
	tenant := e.tenant(t)
	agentID := e.newAgent(t, tenant, analysisFields)
	meta := map[string]any{"output_parameters": map[string]any{"callback_day": "The day to call back."}}
	id := e.finishedCall(t, tenant, agentID, meta, StatusCompleted, salesCall)
	if err := e.agents.Delete(ctx, tenant, agentID); err != nil {
		t.Fatal(err)
	}
	res, err := e.analyzer.Analyze(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(agentSrv.Chats()) != 0 || len(defSrv.Chats()) != 1 {
		t.Fatalf("requests: agent's server %d, server default %d", len(agentSrv.Chats()), len(defSrv.Chats()))
	}
	req := defSrv.Chats()[0].Request
	if req.Model != "server-model" {
		t.Errorf("model = %q, want the server default", req.Model)
	}
	if strings.Contains(string(req.ResponseFormat), "custom_analysis_data") || !strings.Contains(string(req.ResponseFormat), "callback_day") {
		t.Errorf("schema = %s", req.ResponseFormat)
	}
	if res.AnalysisError != "" || res.UserSentiment != "Neutral" {
		t.Errorf("result = %+v", res)
	}
	if got := e.extracted(t, id); !reflect.DeepEqual(got["output_parameters"], map[string]any{"callback_day": nil}) {
		t.Errorf("extracted = %v", got)
	}
}

// TestAnalysisWithoutResponseFormatSupport: a server that rejects json_schema
// response formats (400) is asked again without one, and its answer is still
// validated.
func TestAnalysisWithoutResponseFormatSupport(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{Chat: func(r openaitest.ChatRequest) openaitest.Reply {
		if r.ResponseFormat != nil {
			return openaitest.Reply{Status: 400}
		}
		return openaitest.Reply{Text: `{"call_summary":"A demo was booked.","call_successful":true,"user_sentiment":"Positive"}`}
	}})
	e := newAnalysisEnv(t, srv, false)
	tenant := e.tenant(t)
	id := e.finishedCall(t, tenant, e.newAgent(t, tenant, ""), nil, StatusCompleted, salesCall)
	res, err := e.analyzer.Analyze(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if res.CallSummary != "A demo was booked." || res.CallSuccessful == nil || !*res.CallSuccessful {
		t.Fatalf("result = %+v", res)
	}
	if n := len(srv.Chats()); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
}

// TestAnalysisWorkerFailures: a transient provider failure is left to River's
// retries (nothing stored) until the last attempt, which records analysis_error; a
// permanent one (401) is recorded at once and not retried.
func TestAnalysisWorkerFailures(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{Replies: []openaitest.Reply{{Status: 503}}})
	e := newAnalysisEnv(t, srv, false)
	ctx := context.Background()
	tenant := e.tenant(t)
	id := e.finishedCall(t, tenant, e.newAgent(t, tenant, ""), nil, StatusCompleted, salesCall)
	w := &analysisWorker{a: e.analyzer}
	job := func(attempt int) *river.Job[AnalysisArgs] {
		return &river.Job[AnalysisArgs]{JobRow: &rivertype.JobRow{Attempt: attempt, MaxAttempts: analysisMaxAttempts}, Args: AnalysisArgs{CallID: id}}
	}
	if err := w.Work(ctx, job(1)); err == nil {
		t.Fatal("a 503 was not returned for retry")
	}
	if got := e.extracted(t, id); len(got) != 0 {
		t.Fatalf("extracted after a transient failure = %v", got)
	}
	if err := w.Work(ctx, job(analysisMaxAttempts)); err == nil {
		t.Fatal("the last attempt's failure was not returned")
	}
	if got := e.extracted(t, id); !strings.Contains(fmt.Sprint(got["analysis_error"]), "the LLM answered HTTP 503") {
		t.Fatalf("extracted after the last attempt = %v", got)
	}

	srv.SetReplies(openaitest.Reply{Status: 401})
	id2 := e.finishedCall(t, tenant, e.newAgent(t, tenant, ""), nil, StatusCompleted, salesCall)
	j := job(1)
	j.Args.CallID = id2
	if err := w.Work(ctx, j); err != nil {
		t.Fatalf("a 401 was returned for retry: %v", err)
	}
	if got := e.extracted(t, id2); !strings.Contains(fmt.Sprint(got["analysis_error"]), "the LLM answered HTTP 401") {
		t.Fatalf("extracted after a 401 = %v", got)
	}
	var perm *permanentError
	if _, err := e.analyzer.Analyze(ctx, id2); !errors.As(err, &perm) {
		t.Errorf("Analyze after a 401: %v, want a permanent error", err)
	}
}

// TestAnalysisBoundsLongTranscripts: a transcript over the limit loses its middle,
// marked, and keeps its beginning and end.
func TestAnalysisBoundsLongTranscripts(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{Replies: []openaitest.Reply{{Text: `{"call_summary":"Long.","call_successful":false,"user_sentiment":"Negative"}`}}})
	e := newAnalysisEnv(t, srv, false, func(c *AnalysisConfig) { c.MaxTranscriptChars = 2_000 })
	tenant := e.tenant(t)
	var turns []Turn
	turns = append(turns, Turn{Role: RoleUser, Content: "FIRST: I am calling about my invoice."})
	for i := range 200 {
		turns = append(turns, Turn{Role: RoleAgent, Content: fmt.Sprintf("Filler sentence number %d from the agent.", i)})
	}
	turns = append(turns, Turn{Role: RoleUser, Content: "LAST: goodbye, I am cancelling."})
	id := e.finishedCall(t, tenant, e.newAgent(t, tenant, ""), nil, StatusCompleted, turns)
	if _, err := e.analyzer.Analyze(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	user := srv.Chats()[0].Request.Messages[1].Content
	_, transcript, _ := strings.Cut(user, "Transcript:\n")
	if n := len([]rune(transcript)); n > 2_000 {
		t.Errorf("transcript in the prompt is %d characters, want ≤ 2000", n)
	}
	for _, s := range []string{"User: FIRST: I am calling", "User: LAST: goodbye", "characters of the middle of the call omitted", "number 0 from"} {
		if !strings.Contains(transcript, s) {
			t.Errorf("bounded transcript lacks %q", s)
		}
	}
	if strings.Contains(transcript, "number 100 from") {
		t.Error("the middle of the transcript was kept")
	}

	for _, tc := range []struct{ in string }{{strings.Repeat("é", 5_000)}, {strings.Repeat("line\n", 3_000)}} {
		out := boundTranscript(tc.in, 1_000)
		if n := len([]rune(out)); n > 1_000 || !strings.Contains(out, "omitted") {
			t.Errorf("boundTranscript: %d characters", n)
		}
	}
	if s := "short"; boundTranscript(s, 1_000) != s {
		t.Error("a short transcript was changed")
	}
}

// TestAnalysisOfOrphanedCall: a call whose worker died is failed by FailOrphans with
// the live transcript it had saved, and gets its analysis job in that transaction;
// an orphan nobody spoke in gets none.
func TestAnalysisOfOrphanedCall(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{})
	e := newAnalysisEnvOn(t, newEnv(t, func(c *Config) { c.Rooms = newLiveKit(t) }), srv, false)
	ctx := context.Background()
	tenant := e.tenant(t)
	agentID := e.newAgent(t, tenant, "")
	begin := func(turns []Turn) string {
		t.Helper()
		c, err := e.svc.CreateWeb(ctx, tenant, agentID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Begin(ctx, c.CallID, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if turns != nil {
			if err := e.svc.SaveProgress(ctx, c.CallID, turns, Latency{}); err != nil {
				t.Fatal(err)
			}
		}
		// Quiet for ten minutes, and its room (never created here) does not exist.
		if _, err := e.pool.Exec(ctx, `UPDATE calls SET updated_at = now() - interval '10 minutes' WHERE id = $1`, c.CallID); err != nil {
			t.Fatal(err)
		}
		return c.CallID
	}
	talked, silent := begin(salesCall[:2]), begin(nil)
	n, err := e.svc.FailOrphans(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("FailOrphans failed %d calls, want 2", n)
	}
	for id, want := range map[string]int{talked: 1, silent: 0} {
		if st, reason := e.status(t, id); st != StatusFailed || reason != ReasonWorkerLost {
			t.Errorf("call %s: %s (%s)", id, st, reason)
		}
		if got := e.analysisJobs(t, id); got != want {
			t.Errorf("call %s: %d analysis jobs, want %d", id, got, want)
		}
	}
}
