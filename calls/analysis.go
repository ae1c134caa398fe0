package calls

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/santhosh-tekuri/jsonschema/v6"
	openai "github.com/sashabaranov/go-openai"

	"github.com/parleyhq/parley/agents"
)

// AnalysisArgs is the River job that analyses a finished call (post-call analysis). It
// is inserted in the transaction that gives the call its final status with a
// non-empty transcript (Finish, FailOrphans), so a call that ends is analysed once
// and a crash between the two cannot lose or repeat it.
type AnalysisArgs struct {
	CallID string `json:"call_id"`
}

// Kind is the job kind.
func (AnalysisArgs) Kind() string { return "call_analysis" }

// InsertOpts makes the job unique per call: a second insert for the same call while
// the first is queued, running or completed (River's default unique states) is
// skipped, so a retried finish never pays for two analyses. A job that was discarded
// after its last attempt no longer blocks a new one.
func (AnalysisArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: analysisMaxAttempts, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// analysisMaxAttempts: River backs off attempt⁴ seconds, so five attempts span about
// eleven minutes, long enough to ride out a provider's rate limit or brief outage
// without leaving a call unanalysed for hours.
const analysisMaxAttempts = 5

// Analysis is what post-call analysis stores in a call's extracted object. Its names
// are Retell's call_analysis, which Call2Me mirrors and its SDKs read:
//
//   - call_summary: a few sentences on what happened;
//   - call_successful: whether the agent achieved the call's purpose;
//   - user_sentiment: "Positive", "Neutral" or "Negative";
//   - custom_analysis_data: the agent's post_call_analysis fields by name, each of its
//     declared type, or null when the conversation did not tell;
//   - output_parameters: the fields of the call's Call24x7 output_parameters template
//     (strings or null), which Call.OutputParameters renders as the JSON string
//     Call24x7's webhook and GET /outbound_call carry;
//   - analysis_error: why the analysis failed, in part or whole.
//
// Every stored value was validated against the JSON Schema the model was asked to
// follow; a value that never validated is left out (and analysis_error says so).
type Analysis struct {
	CallSummary        string         `json:"call_summary,omitempty"`
	CallSuccessful     *bool          `json:"call_successful,omitempty"`
	UserSentiment      string         `json:"user_sentiment,omitempty"`
	CustomAnalysisData map[string]any `json:"custom_analysis_data,omitempty"`
	OutputParameters   map[string]any `json:"output_parameters,omitempty"`
	AnalysisError      string         `json:"analysis_error,omitempty"`
}

// analysisKeys are the keys of extracted that analysis owns: storing an analysis
// replaces all of them (a stale analysis_error goes) and keeps any other key.
var analysisKeys = []string{"call_summary", "call_successful", "user_sentiment",
	"custom_analysis_data", "output_parameters", "analysis_error"}

// Sentiments are the values of user_sentiment.
var Sentiments = []string{"Positive", "Neutral", "Negative"}

// OutputParameters is the call's extracted Call24x7 output parameters as the JSON
// string Call24x7's completion webhook and GET /outbound_call carry: "" when the call
// had no output_parameters template or has not been analysed (yet).
func (c Call) OutputParameters() string {
	v, ok := c.Extracted["output_parameters"]
	if !ok || v == nil {
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

// AnalysisConfig configures post-call analysis. The zero value is usable.
type AnalysisConfig struct {
	// MaxTranscriptChars bounds the transcript in the prompt (default 48,000
	// characters, about 12k tokens). People speak about 150 words a minute, so a call
	// with both sides talking fills that in roughly 40 minutes; with the ~2k tokens of
	// instructions and schema it still fits a 16k-context model, the smallest that
	// common OpenAI-compatible deployments run for this kind of work. A longer
	// transcript loses its middle, marked as such: the opening says why the call
	// happened and the end how it went, which is what a summary and an outcome need.
	MaxTranscriptChars int
	// MaxInstructionsChars bounds the excerpt of the agent's system prompt given as
	// context for call_successful (default 4,000 characters): the goal is stated near
	// the top of a prompt, and long scripts and policies add cost, not judgement.
	MaxInstructionsChars int
	// RequestTimeout bounds one LLM request (default 90 s): a structured answer of a
	// few hundred tokens takes seconds, but a long prompt on a busy or local model can
	// take a minute.
	RequestTimeout time.Duration
	Logger         *slog.Logger
}

func (c *AnalysisConfig) setDefaults() {
	if c.MaxTranscriptChars == 0 {
		c.MaxTranscriptChars = 48_000
	}
	if c.MaxInstructionsChars == 0 {
		c.MaxInstructionsChars = 4_000
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 90 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c AnalysisConfig) validate() error {
	if c.MaxTranscriptChars < 1_000 {
		return errors.New("calls: AnalysisConfig.MaxTranscriptChars must be at least 1000")
	}
	if c.MaxInstructionsChars < 0 || c.RequestTimeout < 0 {
		return errors.New("calls: AnalysisConfig limits must not be negative")
	}
	return nil
}

// Analyzer runs post-call analysis: it asks the agent's LLM (the agent's settings
// over the server's, as for the call itself) for a summary, the outcome, the caller's
// sentiment and the agent's post_call_analysis fields, validates the answer against
// the JSON Schema it asked for, and stores it in the call's extracted object.
type Analyzer struct {
	calls  *Service
	engine *Engine
	cfg    AnalysisConfig
	log    *slog.Logger
}

// NewAnalyzer returns an Analyzer. engine supplies the agents, the provider defaults
// and the (SSRF-guarded) HTTP client, as for calls.
func NewAnalyzer(calls *Service, engine *Engine, cfg AnalysisConfig) (*Analyzer, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if calls == nil || engine == nil || engine.Agents == nil {
		return nil, errors.New("calls: NewAnalyzer needs a Service and an Engine with Agents")
	}
	return &Analyzer{calls: calls, engine: engine, cfg: cfg, log: cfg.Logger}, nil
}

// AddWorkers registers the call_analysis worker.
func (a *Analyzer) AddWorkers(w *river.Workers) {
	river.AddWorker(w, &analysisWorker{a: a})
}

type analysisWorker struct {
	river.WorkerDefaults[AnalysisArgs]
	a *Analyzer
}

// Timeout allows two LLM requests (the answer and one corrected answer) and the
// reads and writes around them.
func (w *analysisWorker) Timeout(*river.Job[AnalysisArgs]) time.Duration {
	return 2*w.a.cfg.RequestTimeout + 30*time.Second
}

// Work analyses the call. A failure the provider may get over (rate limit, 5xx, a
// dropped connection) is returned for River to retry; a permanent one (bad key,
// unknown model, a request the server refuses) and the last attempt's failure are
// recorded in extracted.analysis_error, so GET shows why the analysis is missing.
func (w *analysisWorker) Work(ctx context.Context, job *river.Job[AnalysisArgs]) error {
	_, err := w.a.Analyze(ctx, job.Args.CallID)
	if err == nil {
		return nil
	}
	var perm *permanentError
	last := job.Attempt >= job.MaxAttempts
	if !errors.As(err, &perm) && !last {
		return err
	}
	w.a.log.WarnContext(ctx, "calls: post-call analysis failed", "call_id", job.Args.CallID, "attempt", job.Attempt, "err", err)
	bg := context.WithoutCancel(ctx)
	if serr := w.a.store(bg, job.Args.CallID, Analysis{AnalysisError: "analysis failed: " + publicError(err)}); serr != nil {
		return errors.Join(err, serr)
	}
	if perm != nil {
		return nil
	}
	return err
}

// publicError is what the call's owner is told of a failed analysis: the provider's
// answer, which concerns their agent's settings, but not network errors, which can
// name the server's own default endpoint, nor database errors.
func publicError(err error) string {
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	var perm *permanentError
	switch {
	case errors.As(err, &apiErr):
		return fmt.Sprintf("the LLM answered HTTP %d: %s", apiErr.HTTPStatusCode, truncateRunes(apiErr.Message, 300))
	case errors.As(err, &reqErr):
		return fmt.Sprintf("the LLM answered HTTP %d", reqErr.HTTPStatusCode)
	case errors.As(err, &perm):
		return perm.Error()
	}
	return "the LLM could not be reached or did not answer in time"
}

// permanentError is a failure retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Analyze analyses one call and stores the result in its extracted object, returning
// it. A call without a transcript (or gone) is left alone. Errors from the provider
// or the database are returned for the caller to retry; an answer that never matched
// the schema is not an error: what validated is stored, with analysis_error.
func (a *Analyzer) Analyze(ctx context.Context, callID string) (Analysis, error) {
	c, err := a.calls.load(ctx, callID)
	if errors.Is(err, ErrNotFound) {
		return Analysis{}, nil
	}
	if err != nil {
		return Analysis{}, err
	}
	if strings.TrimSpace(c.Transcript) == "" || c.Live() {
		return Analysis{}, nil
	}
	// The agent may have been deleted since the call (agent_id is then empty, or the
	// row is gone by now): analyse with the server's LLM and what the call itself kept.
	var ag agents.Agent
	if c.AgentID != "" {
		ag, err = a.engine.Agents.Resolve(ctx, c.TenantID, c.AgentID)
		if errors.Is(err, agents.ErrNotFound) {
			ag, err = agents.Agent{}, nil
		}
		if err != nil {
			return Analysis{}, fmt.Errorf("calls: analyse %s: agent: %w", callID, err)
		}
	}
	ep, err := a.engine.llmEndpoint(ag)
	if err != nil {
		return Analysis{}, &permanentError{err}
	}
	spec := newAnalysisSpec(ag.PostCallAnalysis, outputTemplate(c.Metadata))
	res, err := a.run(ctx, ep, spec, a.messages(c, ag, spec))
	if err != nil {
		return Analysis{}, fmt.Errorf("calls: analyse %s: %w", callID, err)
	}
	if err := a.store(ctx, callID, res); err != nil {
		return Analysis{}, err
	}
	return res, nil
}

// store replaces the analysis keys of the call's extracted object with res.
func (a *Analyzer) store(ctx context.Context, callID string, res Analysis) error {
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("calls: store analysis of %s: %w", callID, err)
	}
	if _, err := a.calls.pool.Exec(ctx, `UPDATE calls SET extracted = (extracted - $2::text[]) || $3::jsonb, updated_at = $4
		WHERE id = $1`, callID, analysisKeys, b, a.calls.now()); err != nil {
		return fmt.Errorf("calls: store analysis of %s: %w", callID, err)
	}
	return nil
}

// llmEndpoint is where an agent's LLM requests go: the agent's settings over the
// server's defaults. The voice session (Engine.llm) and post-call analysis both use
// it, so an agent's analysis runs on the same model, account and server as its calls.
type llmEndpoint struct {
	BaseURL, APIKey, Model string
}

func (e *Engine) llmEndpoint(a agents.Agent) (llmEndpoint, error) {
	switch p := pick(a.LLM.Provider, "openai"); p {
	case "openai":
		return llmEndpoint{
			BaseURL: pick(a.LLM.BaseURL, e.Defaults.OpenAIBaseURL),
			APIKey:  pick(a.LLM.APIKey.Value(), e.Defaults.OpenAIAPIKey),
			Model:   pick(a.LLM.Model, e.Defaults.LLMModel),
		}, nil
	default:
		return llmEndpoint{}, fmt.Errorf("calls: unknown LLM provider %q", p)
	}
}

// outputTemplate reads a call's Call24x7 output_parameters template from its
// metadata (MetaOutputParameters): an object of field name → description (or the
// same object as a JSON string, as some clients send it). Non-string descriptions are
// used as their JSON. CreateOutbound validates templates against the bounds below;
// they are enforced again here for calls whose metadata came another way.
func outputTemplate(meta map[string]any) map[string]string {
	raw, ok := meta["output_parameters"]
	if !ok {
		return nil
	}
	if s, ok := raw.(string); ok {
		var m map[string]any
		if json.Unmarshal([]byte(s), &m) != nil {
			return nil
		}
		raw = m
	}
	m, ok := raw.(map[string]any)
	if !ok || len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if k == "" || utf8.RuneCountInString(k) > maxOutputNameLen || len(out) == maxOutputParams {
			continue
		}
		desc, ok := m[k].(string)
		if !ok {
			b, _ := json.Marshal(m[k])
			desc = string(b)
		}
		out[k] = truncateRunes(desc, maxOutputDescLen)
	}
	return out
}

// Bounds on a Call24x7 template, which arrives with the call rather than through the
// agents API's validation: the same as an agent's post_call_analysis fields.
const (
	maxOutputParams  = 32
	maxOutputNameLen = 64
	maxOutputDescLen = 1_024
)

// analysisSpec is the JSON Schema the model must answer to, with the schemas of its
// parts for salvaging the valid parts of an answer that does not match as a whole.
type analysisSpec struct {
	schema map[string]any
	// custom and output are the field names of custom_analysis_data and
	// output_parameters, sorted; nil when there are none.
	custom, output []string
}

// nullable lets a field be null: strict structured outputs require every property,
// and "the conversation did not say" must be answerable without inventing a value.
func nullable(t string) []any { return []any{t, "null"} }

func newAnalysisSpec(fields []agents.AnalysisField, template map[string]string) analysisSpec {
	props := map[string]any{
		"call_summary": map[string]any{"type": "string",
			"description": "A summary of the call in 1 to 3 sentences, in the language of the conversation: why it happened, what was said and how it ended."},
		"call_successful": map[string]any{"type": "boolean",
			"description": "Whether the agent achieved the purpose of the call (given its instructions, if any) without problems."},
		"user_sentiment": map[string]any{"type": "string", "enum": toAny(Sentiments),
			"description": "The user's overall sentiment during the call."},
	}
	required := []any{"call_summary", "call_successful", "user_sentiment"}
	var spec analysisSpec
	if len(fields) > 0 {
		fp := map[string]any{}
		for _, f := range fields {
			var s map[string]any
			switch f.Type {
			case "enum":
				s = map[string]any{"type": nullable("string"), "enum": append(toAny(f.Choices), nil)}
			case "number", "integer", "boolean":
				s = map[string]any{"type": nullable(f.Type)}
			default: // string, and anything newer than this code
				s = map[string]any{"type": nullable("string")}
			}
			if f.Description != "" {
				s["description"] = f.Description
			}
			fp[f.Name] = s
			spec.custom = append(spec.custom, f.Name)
		}
		slices.Sort(spec.custom)
		props["custom_analysis_data"] = objectSchema(fp, spec.custom,
			"The values to extract from the call; null for any the conversation does not establish.")
		required = append(required, "custom_analysis_data")
	}
	if len(template) > 0 {
		op := map[string]any{}
		for name, desc := range template {
			s := map[string]any{"type": nullable("string")}
			if desc != "" {
				s["description"] = desc
			}
			op[name] = s
			spec.output = append(spec.output, name)
		}
		slices.Sort(spec.output)
		props["output_parameters"] = objectSchema(op, spec.output,
			"The output parameters requested for this call, as text; null for any the conversation does not establish.")
		required = append(required, "output_parameters")
	}
	spec.schema = map[string]any{"type": "object", "properties": props, "required": required, "additionalProperties": false}
	return spec
}

func objectSchema(props map[string]any, names []string, desc string) map[string]any {
	return map[string]any{"type": "object", "description": desc, "properties": props,
		"required": toAny(names), "additionalProperties": false}
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// compileSchema compiles a schema built here. No loader is set: nothing can make
// the compiler fetch a URL or read a file.
func compileSchema(s any) (*jsonschema.Schema, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	const loc = "mem://call-analysis.json"
	if err := c.AddResource(loc, doc); err != nil {
		return nil, err
	}
	return c.Compile(loc)
}

// messages is the prompt: the instructions with the schema (servers that ignore
// response_format still see what to answer), then the call.
func (a *Analyzer) messages(c Call, ag agents.Agent, spec analysisSpec) []openai.ChatCompletionMessage {
	schema, _ := json.MarshalIndent(spec.schema, "", "  ")
	var sys strings.Builder
	sys.WriteString("You analyse a finished phone call between an AI voice agent (\"Agent\") and a person (\"User\"). " +
		"Read the transcript and answer with a single JSON object, and nothing else, that matches this JSON Schema:\n\n")
	sys.Write(schema)
	sys.WriteString("\n\nBase every value on the transcript alone. Use null for a field the conversation does not establish; " +
		"never guess. An enum field takes one of its listed values exactly.")
	if p := strings.TrimSpace(ag.ResponseEngine.SystemPrompt); p != "" && a.cfg.MaxInstructionsChars > 0 {
		sys.WriteString("\n\nTo judge call_successful, these were the agent's instructions")
		if utf8.RuneCountInString(p) > a.cfg.MaxInstructionsChars {
			sys.WriteString(" (the beginning of them)")
			p = truncateRunes(p, a.cfg.MaxInstructionsChars)
		}
		sys.WriteString(":\n<instructions>\n" + p + "\n</instructions>")
	}
	var user strings.Builder
	fmt.Fprintf(&user, "Call details: direction %s", c.Direction)
	if c.AgentName != "" {
		fmt.Fprintf(&user, ", agent %q", c.AgentName)
	}
	if c.FromNumber != "" || c.ToNumber != "" {
		fmt.Fprintf(&user, ", from %s to %s", pick(c.FromNumber, "unknown"), pick(c.ToNumber, "unknown"))
	}
	fmt.Fprintf(&user, ", lasted %s, ended as %s (%s).\n\nTranscript:\n", (time.Duration(c.DurationMS) * time.Millisecond).Round(time.Second),
		c.CallStatus, pick(c.DisconnectionReason, "no reason recorded"))
	user.WriteString(boundTranscript(c.Transcript, a.cfg.MaxTranscriptChars))
	return []openai.ChatCompletionMessage{
		{Role: openai.ChatMessageRoleSystem, Content: sys.String()},
		{Role: openai.ChatMessageRoleUser, Content: user.String()},
	}
}

// boundTranscript keeps a transcript of at most limit characters (runes) whole, and
// cuts a longer one's middle, keeping its first and last halves (at line breaks
// where there is one nearby) around a marker that says how much went.
func boundTranscript(s string, limit int) string {
	n := utf8.RuneCountInString(s)
	if n <= limit {
		return s
	}
	rs := []rune(s)
	const marker = "\n[… %d characters of the middle of the call omitted …]\n"
	budget := max(limit-len(marker)-8, 2) // the marker's own characters count too
	head, tail := rs[:budget/2], rs[n-(budget-budget/2):]
	// Prefer whole lines: drop a partial last head line and first tail line when the
	// break is within the last (first) fifth.
	if i := lastIndexRune(head, '\n'); i >= len(head)*4/5 {
		head = head[:i]
	}
	if i := slices.Index(tail, '\n'); i >= 0 && i <= len(tail)/5 {
		tail = tail[i+1:]
	}
	omitted := n - len(head) - len(tail)
	return string(head) + fmt.Sprintf(marker, omitted) + string(tail)
}

func lastIndexRune(rs []rune, r rune) int {
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i] == r {
			return i
		}
	}
	return -1
}

func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

// run asks the model, checks its answer against the schema and, when it does not
// match, asks once more with the validation errors. When the second answer does not
// match either, the parts that do (each top-level value, each field) are kept and
// analysis_error says what was dropped.
func (a *Analyzer) run(ctx context.Context, ep llmEndpoint, spec analysisSpec, msgs []openai.ChatCompletionMessage) (Analysis, error) {
	whole, err := compileSchema(spec.schema)
	if err != nil {
		return Analysis{}, &permanentError{fmt.Errorf("analysis schema: %w", err)}
	}
	client := a.client(ep)
	req := openai.ChatCompletionRequest{
		Model:    pick(ep.Model, defaultAnalysisModel),
		Messages: msgs,
		ResponseFormat: &openai.ChatCompletionResponseFormat{
			Type: openai.ChatCompletionResponseFormatTypeJSONSchema,
			JSONSchema: &openai.ChatCompletionResponseFormatJSONSchema{
				Name: "call_analysis", Schema: rawSchema(spec.schema), Strict: true,
			},
		},
	}
	var answer string
	var problem string
	for attempt := 1; attempt <= 2; attempt++ {
		answer, err = a.complete(ctx, client, &req)
		if err != nil {
			return Analysis{}, err
		}
		var doc any
		doc, problem = parseAnswer(answer, whole)
		if problem == "" {
			return decodeAnalysis(doc), nil
		}
		a.log.InfoContext(ctx, "calls: analysis answer does not match its schema", "attempt", attempt, "problem", problem)
		req.Messages = append(req.Messages,
			openai.ChatCompletionMessage{Role: openai.ChatMessageRoleAssistant, Content: answer},
			openai.ChatCompletionMessage{Role: openai.ChatMessageRoleUser, Content: "Your answer does not match the JSON Schema:\n" + problem +
				"\n\nAnswer again with only the corrected JSON object."})
	}
	res := salvage(answer, spec)
	res.AnalysisError = "the model's answer did not match the analysis schema after 2 attempts; invalid values were dropped: " + problem
	return res, nil
}

// defaultAnalysisModel is the voice LLM adapter's default, for a server with no model
// configured anywhere.
const defaultAnalysisModel = "gpt-4o-mini"

// rawSchema lets go-openai send a schema built as a map.
type rawSchema map[string]any

func (r rawSchema) MarshalJSON() ([]byte, error) { return json.Marshal(map[string]any(r)) }

func (a *Analyzer) client(ep llmEndpoint) *openai.Client {
	oc := openai.DefaultConfig(ep.APIKey)
	oc.BaseURL = strings.TrimRight(pick(ep.BaseURL, "https://api.openai.com/v1"), "/")
	if a.engine.HTTPClient != nil {
		oc.HTTPClient = a.engine.HTTPClient
	}
	return openai.NewClientWithConfig(oc)
}

// complete sends one request. A server that rejects json_schema response formats
// (400: older vLLM, Ollama and others) is asked again without one: the schema is in
// the prompt and the answer is validated here anyway.
func (a *Analyzer) complete(ctx context.Context, client *openai.Client, req *openai.ChatCompletionRequest) (string, error) {
	for {
		rctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
		resp, err := client.CreateChatCompletion(rctx, *req)
		cancel()
		var apiErr *openai.APIError
		var reqErr *openai.RequestError
		status := 0
		if errors.As(err, &apiErr) {
			status = apiErr.HTTPStatusCode
		} else if errors.As(err, &reqErr) {
			status = reqErr.HTTPStatusCode
		}
		switch {
		case err == nil:
			if len(resp.Choices) == 0 {
				return "", errors.New("llm answered no choices")
			}
			return resp.Choices[0].Message.Content, nil
		case status == http.StatusBadRequest && req.ResponseFormat != nil:
			a.log.InfoContext(ctx, "calls: LLM refused response_format json_schema; asking without it", "err", err)
			req.ResponseFormat = nil
			continue
		case status == http.StatusTooManyRequests || status >= 500 || status == 0:
			return "", fmt.Errorf("llm: %w", err) // retry later
		default:
			return "", &permanentError{fmt.Errorf("llm: %w", err)}
		}
	}
}

// parseAnswer decodes and validates an answer. Servers that ignore response_format
// often wrap the JSON in a Markdown code fence; that wrapping is removed, nothing
// else. It returns the decoded document, or what is wrong with it.
func parseAnswer(answer string, schema *jsonschema.Schema) (any, string) {
	s := strings.TrimSpace(answer)
	if strings.HasPrefix(s, "```") {
		s = strings.TrimPrefix(s, "```")
		s = strings.TrimPrefix(s, "json")
		s = strings.TrimSuffix(strings.TrimSpace(s), "```")
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(s))
	if err != nil {
		return nil, "the answer is not a JSON value: " + err.Error()
	}
	if err := schema.Validate(doc); err != nil {
		return nil, validationProblem(err)
	}
	return doc, ""
}

// validationProblem is the validator's message without its first line, which names
// the schema's internal location, bounded so a long list stays a reasonable prompt.
func validationProblem(err error) string {
	msg := err.Error()
	var ve *jsonschema.ValidationError
	if errors.As(err, &ve) {
		if _, rest, ok := strings.Cut(msg, "\n"); ok {
			msg = rest
		}
	}
	return truncateRunes(strings.TrimSpace(msg), 2_000)
}

// decodeAnalysis turns a validated document into an Analysis. Numbers stay as the
// model wrote them (json.Number).
func decodeAnalysis(doc any) Analysis {
	m, _ := doc.(map[string]any)
	var res Analysis
	res.CallSummary, _ = m["call_summary"].(string)
	if b, ok := m["call_successful"].(bool); ok {
		res.CallSuccessful = &b
	}
	res.UserSentiment, _ = m["user_sentiment"].(string)
	res.CustomAnalysisData, _ = m["custom_analysis_data"].(map[string]any)
	res.OutputParameters, _ = m["output_parameters"].(map[string]any)
	return res
}

// salvage keeps the parts of an answer that match their own part of the schema: each
// of the three core values, and each field of custom_analysis_data and
// output_parameters on its own. An answer that is not a JSON object keeps nothing.
func salvage(answer string, spec analysisSpec) Analysis {
	s := strings.TrimSpace(answer)
	if strings.HasPrefix(s, "```") {
		s = strings.TrimSuffix(strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(s, "```"), "json")), "```")
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(s))
	if err != nil {
		return Analysis{}
	}
	m, ok := doc.(map[string]any)
	if !ok {
		return Analysis{}
	}
	props := spec.schema["properties"].(map[string]any)
	valid := func(schema any, v any) bool {
		sch, err := compileSchema(schema)
		return err == nil && sch.Validate(v) == nil
	}
	kept := map[string]any{}
	for _, k := range []string{"call_summary", "call_successful", "user_sentiment"} {
		if v, ok := m[k]; ok && valid(props[k], v) {
			kept[k] = v
		}
	}
	for _, part := range []struct {
		key   string
		names []string
	}{{"custom_analysis_data", spec.custom}, {"output_parameters", spec.output}} {
		got, ok := m[part.key].(map[string]any)
		if !ok || len(part.names) == 0 {
			continue
		}
		fieldSchemas := props[part.key].(map[string]any)["properties"].(map[string]any)
		out := map[string]any{}
		for _, name := range part.names {
			if v, ok := got[name]; ok && valid(fieldSchemas[name], v) {
				out[name] = v
			}
		}
		if len(out) > 0 {
			kept[part.key] = out
		}
	}
	return decodeAnalysis(kept)
}

// enqueueAnalysis inserts the analysis job of a call that has just reached its final
// status, in the transaction that did so, if its transcript has anything in it: a
// call that never started (or where nobody spoke) has nothing to analyse. Without a
// job client (SetJobs not called: tools and tests that only read calls) there is no
// analysis.
func (s *Service) enqueueAnalysis(ctx context.Context, tx pgx.Tx, callID, transcript string) error {
	if s.jobs == nil || strings.TrimSpace(transcript) == "" {
		return nil
	}
	if _, err := s.jobs.InsertTx(ctx, tx, AnalysisArgs{CallID: callID}, nil); err != nil {
		return fmt.Errorf("calls: enqueue analysis of %s: %w", callID, err)
	}
	return nil
}

// SetJobs gives the service the River client it inserts its jobs with (analysis, and
// dialing), always in the transaction that writes the call. Call it before the
// service is used.
func (s *Service) SetJobs(j *river.Client[pgx.Tx]) { s.jobs = j }
