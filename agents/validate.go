package agents

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/safehttp"
)

// Limits. Each bounds what one agent may hold, so that a definition stays cheap to load
// on every call and every prompt fits an LLM context with room for the conversation.
const (
	maxNameLen = 200
	// 100k characters is roughly 25k tokens: room for long call scripts and policies,
	// yet well inside current context windows with the conversation and retrieved
	// knowledge on top. Every character is paid for on every turn.
	maxPromptLen       = 100_000
	maxBeginMessageLen = 5_000
	// OpenAI accepts up to 128 tools, but tool choice degrades well before that; 64 is
	// generous for one conversational agent.
	maxFunctions          = 64
	maxFunctionDescLen    = 4_096
	maxParametersBytes    = 32 << 10 // a tool schema is sent to the LLM on every turn
	maxHeaders            = 32
	maxHeaderValueLen     = 8_192
	maxKnowledgeBases     = 20 // retrieval fans out to each one within a turn's latency budget
	maxAnalysisFields     = 32
	maxAnalysisDescLen    = 1_024
	maxChoices            = 50
	maxChoiceLen          = 200
	maxURLLen             = 2_048
	maxAPIKeyLen          = 4_096
	maxModelLen           = 200
	maxVoiceLen           = 200
	maxKnowledgeBaseIDLen = 100
)

// Defaults and bounds of the call-control settings.
const (
	// DefaultLanguage is the language of an agent created without one.
	DefaultLanguage = "en-US"
	// DefaultEngine is the response engine of an agent created without one.
	DefaultEngine = "parley-llm"
	// 0.5 sits between barging in on every cough (1) and never yielding the floor (0).
	defaultInterruptionSensitivity = 0.5
	// 30 s of silence: longer than anyone pauses mid-thought or while fetching a card,
	// short enough that an abandoned line does not run up minutes.
	defaultEndCallAfterSilenceMS = 30_000
	// Below 1 s the agent would hang up on callers taking a breath; above 10 min a dead
	// line keeps burning STT and telephony minutes.
	minEndCallAfterSilenceMS = 1_000
	maxEndCallAfterSilenceMS = 600_000
	// One hour covers long support calls; the cap of 4 h bounds what a stuck call can
	// cost, and the floor of 10 s leaves room for at least a greeting.
	defaultMaxCallDurationMS = 3_600_000
	minMaxCallDurationMS     = 10_000
	maxMaxCallDurationMS     = 14_400_000
	// A function webhook answers inside a live conversation: 10 s is already a long
	// pause on the phone, and 30 s is the most any caller will wait.
	// Answering machines greet for 5 to 20 s; 30 s outlasts nearly all of them, so an
	// undecided call is a person who said nothing, and 5 s to 2 min are the bounds.
	defaultVoicemailTimeoutMS = 30_000
	minVoicemailTimeoutMS     = 5_000
	maxVoicemailTimeoutMS     = 120_000
	// A voicemail message is spoken once; a minute of speech is plenty.
	maxVoicemailMessageLen = 2_000
	// Transfer targets are a short list the model picks from.
	maxTransferDestinations  = 20
	defaultFunctionTimeoutMS = 10_000
	minFunctionTimeoutMS     = 100
	maxFunctionTimeoutMS     = 30_000
)

var (
	engines        = []string{"parley-llm", "custom-llm"}
	statuses       = []string{"active", "inactive"}
	llmProviders   = []string{"openai"}
	sttProviders   = []string{"openai", "deepgram"}
	ttsProviders   = []string{"openai", "elevenlabs", "espeak"}
	methods        = []string{"GET", "POST", "PUT", "PATCH", "DELETE"}
	analysisTypes  = []string{"string", "number", "integer", "boolean", "enum"}
	builtinTools   = []string{"end_call", "transfer_call"}
	functionNameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_-]{0,63}$`)
	// Analysis fields become JSON keys and tool-schema properties: no dashes.
	analysisNameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]{0,63}$`)
	// headerNameRE is RFC 9110's token.
	headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	// Headers the HTTP client owns; letting an agent set them would break framing.
	reservedHeaders = []string{"Host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "Te", "Trailer"}
)

func oneOf(list []string) string { return strings.Join(list, ", ") }

// validation carries what checking a definition needs beyond the definition itself.
type validation struct {
	svc      *Service
	tenantID string
	// old is the stored definition, for keys sent back as Mask (nil on create).
	old *definition
	f   errs.Fields
}

// check validates d in place: it fills defaults, canonicalises values (language tags,
// method case, trimmed name and URLs), seals new API keys and restores Mask ones. It
// writes nothing; the caller stores d only when check returns nil.
func (v *validation) check(ctx context.Context, d *definition) error {
	f := v.f
	d.applyDefaults(v.svc.cfg.DefaultLanguage)

	d.Name = strings.TrimSpace(d.Name)
	switch n := utf8.RuneCountInString(d.Name); {
	case n == 0:
		f.Add("agent_name", "is required")
	case n > maxNameLen:
		f.Add("agent_name", "must be at most %d characters", maxNameLen)
	}
	if !slices.Contains(statuses, d.Status) {
		f.Add("status", "must be one of %s", oneOf(statuses))
	}

	if tag, ok := parseTag(d.Language); ok {
		d.Language = tag
	} else {
		f.Add("language", "must be a BCP-47 language tag such as en-US, not %q", d.Language)
	}

	if !slices.Contains(engines, d.ResponseEngine.Type) {
		f.Add("response_engine.type", "must be one of %s", oneOf(engines))
	}
	if utf8.RuneCountInString(d.ResponseEngine.SystemPrompt) > maxPromptLen {
		f.Add("response_engine.system_prompt", "must be at most %d characters", maxPromptLen)
	}
	if utf8.RuneCountInString(d.BeginMessage) > maxBeginMessageLen {
		f.Add("begin_message", "must be at most %d characters", maxBeginMessageLen)
	}

	// Providers. An empty provider means the server's configured default.
	if d.LLM.Provider != "" && !slices.Contains(llmProviders, d.LLM.Provider) {
		f.Add("llm.provider", "must be %s", oneOf(llmProviders))
	}
	if t := d.LLM.Temperature; t != nil && (*t < 0 || *t > 2 || math.IsNaN(*t)) {
		f.Add("llm.temperature", "must be from 0 to 2")
	}
	// A custom LLM is one the user runs: without its address there is nothing to call.
	if d.ResponseEngine.Type == "custom-llm" && d.LLM.BaseURL == "" {
		f.Add("llm.base_url", "is required when response_engine.type is custom-llm")
	}
	if d.STT.Provider != "" && !slices.Contains(sttProviders, d.STT.Provider) {
		f.Add("stt.provider", "must be one of %s", oneOf(sttProviders))
	}
	if d.STT.Language != "" {
		// Deepgram's "multi" (code-switching) is the one non-BCP-47 value worth accepting.
		if tag, ok := parseTag(d.STT.Language); ok {
			d.STT.Language = tag
		} else if d.STT.Language != "multi" {
			f.Add("stt.language", "must be a BCP-47 language tag or \"multi\"")
		}
	}
	if d.TTS.Provider != "" && !slices.Contains(ttsProviders, d.TTS.Provider) {
		f.Add("tts.provider", "must be one of %s", oneOf(ttsProviders))
	}
	maxLen(f, "llm.model", d.LLM.Model, maxModelLen)
	maxLen(f, "stt.model", d.STT.Model, maxModelLen)
	maxLen(f, "tts.model", d.TTS.Model, maxModelLen)
	maxLen(f, "tts.voice", d.TTS.Voice, maxVoiceLen)

	var old definition
	if v.old != nil {
		old = *v.old
	}
	d.LLM.APIKey = v.secret("llm.api_key", d.LLM.APIKey, old.LLM.APIKey)
	d.STT.APIKey = v.secret("stt.api_key", d.STT.APIKey, old.STT.APIKey)
	d.TTS.APIKey = v.secret("tts.api_key", d.TTS.APIKey, old.TTS.APIKey)

	// Call control.
	if s := *d.InterruptionSensitivity; s < 0 || s > 1 || math.IsNaN(s) {
		f.Add("interruption_sensitivity", "must be from 0 to 1")
	}
	if ms := *d.EndCallAfterSilenceMS; ms < minEndCallAfterSilenceMS || ms > maxEndCallAfterSilenceMS {
		f.Add("end_call_after_silence_ms", "must be from %d to %d", minEndCallAfterSilenceMS, maxEndCallAfterSilenceMS)
	}
	if ms := *d.MaxCallDurationMS; ms < minMaxCallDurationMS || ms > maxMaxCallDurationMS {
		f.Add("max_call_duration_ms", "must be from %d to %d", minMaxCallDurationMS, maxMaxCallDurationMS)
	}

	checkPhone(d, f)
	v.checkFunctions(d)
	v.checkAnalysis(d)

	if len(d.KnowledgeBaseIDs) > maxKnowledgeBases {
		f.Add("knowledge_base_ids", "must list at most %d knowledge bases", maxKnowledgeBases)
	}
	d.KnowledgeBaseIDs = dedupe(d.KnowledgeBaseIDs)

	// Checks that reach outside (the SSRF guard may resolve DNS; knowledge bases are a
	// query) run last, and only on values that are otherwise well-formed.
	urls := newURLChecks()
	d.WebhookURL = urls.add(f, "webhook_url", d.WebhookURL, false)
	d.LLM.BaseURL = urls.add(f, "llm.base_url", d.LLM.BaseURL, false)
	d.STT.BaseURL = urls.add(f, "stt.base_url", d.STT.BaseURL, false)
	d.TTS.BaseURL = urls.add(f, "tts.base_url", d.TTS.BaseURL, false)
	for i := range d.Functions {
		d.Functions[i].URL = urls.add(f, fmt.Sprintf("functions[%d].url", i), d.Functions[i].URL, true)
	}
	if err := urls.run(ctx, v.svc.checker, f); err != nil {
		return err
	}
	if len(d.KnowledgeBaseIDs) > 0 && len(d.KnowledgeBaseIDs) <= maxKnowledgeBases {
		if err := v.checkKnowledgeBases(ctx, d.KnowledgeBaseIDs); err != nil {
			return err
		}
	}
	return f.Err()
}

// applyDefaults fills every unset setting with its default. Validation runs it first,
// and so does loading a stored definition: a row written before a setting existed gets
// the setting's default, which is what makes the spec column safe to extend.
func (d *definition) applyDefaults(language string) {
	if d.Status == "" {
		d.Status = "active"
	}
	if d.Language == "" {
		d.Language = language
	}
	if d.ResponseEngine.Type == "" {
		d.ResponseEngine.Type = DefaultEngine
	}
	if d.InterruptionSensitivity == nil {
		d.InterruptionSensitivity = ptr(defaultInterruptionSensitivity)
	}
	if d.EndCallAfterSilenceMS == nil {
		d.EndCallAfterSilenceMS = ptr[int64](defaultEndCallAfterSilenceMS)
	}
	if d.MaxCallDurationMS == nil {
		d.MaxCallDurationMS = ptr[int64](defaultMaxCallDurationMS)
	}
	if d.RecordingEnabled == nil {
		d.RecordingEnabled = ptr(true)
	}
	if d.EnableVoicemailDetection == nil {
		d.EnableVoicemailDetection = ptr(false)
	}
	if d.VoicemailDetectionTimeoutMS == nil {
		d.VoicemailDetectionTimeoutMS = ptr[int64](defaultVoicemailTimeoutMS)
	}
	if d.VoicemailAction == "" {
		d.VoicemailAction = "hangup"
		if d.VoicemailMessage != "" {
			d.VoicemailAction = "leave_message"
		}
	}
	for i := range d.Functions {
		fn := &d.Functions[i]
		if fn.Method == "" {
			fn.Method = "POST"
		}
		if fn.TimeoutMS == 0 {
			fn.TimeoutMS = defaultFunctionTimeoutMS
		}
		if len(fn.Parameters) == 0 || string(fn.Parameters) == "null" {
			fn.Parameters = emptyParameters
		}
	}
}

// secret resolves one API key field: "" clears it, Mask keeps the stored one, anything
// else is a new key, sealed here.
func (v *validation) secret(field, in, stored string) string {
	switch {
	case in == "":
		return ""
	case in == Mask:
		if stored == "" {
			v.f.Add(field, "is %q, which stands for a stored key, but none is stored: send the key itself", Mask)
		}
		return stored
	case len(in) > maxAPIKeyLen:
		v.f.Add(field, "must be at most %d characters", maxAPIKeyLen)
		return ""
	case strings.TrimSpace(in) != in || strings.ContainsAny(in, "\r\n"):
		v.f.Add(field, "must not contain surrounding whitespace or line breaks")
		return ""
	}
	sealed, err := v.svc.box.Seal(in)
	if err != nil {
		v.f.Add(field, "could not be stored")
		return ""
	}
	return sealed
}

func (v *validation) checkFunctions(d *definition) {
	f := v.f
	if len(d.Functions) > maxFunctions {
		f.Add("functions", "must list at most %d functions", maxFunctions)
		return
	}
	seen := map[string]int{}
	for i := range d.Functions {
		fn := &d.Functions[i]
		p := fmt.Sprintf("functions[%d]", i)
		switch {
		case !functionNameRE.MatchString(fn.Name):
			f.Add(p+".name", "must start with a letter or underscore and contain only letters, digits, _ and -, at most 64 characters")
		case slices.Contains(builtinTools, strings.ToLower(fn.Name)):
			f.Add(p+".name", "%q is a built-in tool; choose another name", fn.Name)
		default:
			if j, dup := seen[fn.Name]; dup {
				f.Add(p+".name", "duplicates functions[%d].name", j)
			}
			seen[fn.Name] = i
		}
		if utf8.RuneCountInString(fn.Description) > maxFunctionDescLen {
			f.Add(p+".description", "must be at most %d characters", maxFunctionDescLen)
		}
		if m := strings.ToUpper(fn.Method); slices.Contains(methods, m) {
			fn.Method = m
		} else {
			f.Add(p+".method", "must be one of %s", oneOf(methods))
		}
		if fn.TimeoutMS < minFunctionTimeoutMS || fn.TimeoutMS > maxFunctionTimeoutMS {
			f.Add(p+".timeout_ms", "must be from %d to %d", minFunctionTimeoutMS, maxFunctionTimeoutMS)
		}
		if len(fn.Headers) > maxHeaders {
			f.Add(p+".headers", "must have at most %d headers", maxHeaders)
		}
		for name, val := range fn.Headers {
			switch {
			case !headerNameRE.MatchString(name):
				f.Add(p+".headers", "%q is not a valid header name", name)
			case slices.ContainsFunc(reservedHeaders, func(h string) bool { return strings.EqualFold(h, name) }):
				f.Add(p+".headers", "%s is set by Parley and cannot be overridden", name)
			case len(val) > maxHeaderValueLen || strings.ContainsAny(val, "\r\n\x00"):
				f.Add(p+".headers", "the value of %s must be at most %d characters on one line", name, maxHeaderValueLen)
			}
		}
		if len(fn.Headers) == 0 {
			fn.Headers = nil
		}
		params, msg := checkParameters(fn.Parameters)
		if msg != "" {
			f.Add(p+".parameters", "%s", msg)
		}
		fn.Parameters = params
	}
}

// emptyParameters is the schema of a function that takes no arguments.
var emptyParameters = json.RawMessage(`{"properties":{},"type":"object"}`) // canonical (sorted) form

// checkParameters returns the compacted schema, or a message saying why it is not a
// usable tool schema: valid JSON Schema (2020-12 unless it says otherwise, checked
// against the metaschema) whose top level is an object, as LLM tool calling requires.
func checkParameters(raw json.RawMessage) (json.RawMessage, string) {
	if len(raw) == 0 || string(raw) == "null" {
		return emptyParameters, ""
	}
	if len(raw) > maxParametersBytes {
		return raw, fmt.Sprintf("must be at most %d bytes", maxParametersBytes)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return raw, "must be a JSON Schema"
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return raw, "must be a JSON Schema object with \"type\": \"object\""
	}
	if t, _ := obj["type"].(string); t != "object" {
		return raw, "must have \"type\": \"object\" at the top level"
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	// No loader: a $ref may point inside the schema only, never at a URL or a file,
	// so compiling a tenant's schema cannot make Parley fetch anything.
	const loc = "mem://parameters.json"
	if err := c.AddResource(loc, doc); err != nil {
		return raw, "must be a JSON Schema: " + err.Error()
	}
	if _, err := c.Compile(loc); err != nil {
		return raw, "is not a valid JSON Schema: " + schemaError(err)
	}
	canon, err := canonicalJSON(raw)
	if err != nil {
		return raw, "must be a JSON Schema"
	}
	return canon, ""
}

// canonicalJSON re-encodes a JSON value compactly with object keys sorted, numbers
// kept as written. Stored schemas are canonical so that the same agent renders the
// same bytes however it was loaded (JSONB does not keep key order).
func canonicalJSON(raw json.RawMessage) (json.RawMessage, error) {
	if len(raw) == 0 {
		return raw, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// schemaError shortens the compiler's message: drop the mem:// location it invents.
func schemaError(err error) string {
	s := err.Error()
	s = strings.ReplaceAll(s, "mem://parameters.json", "parameters")
	if len(s) > 500 {
		s = s[:500] + "…"
	}
	return s
}

func (v *validation) checkAnalysis(d *definition) {
	f := v.f
	if len(d.PostCallAnalysis) > maxAnalysisFields {
		f.Add("post_call_analysis", "must list at most %d fields", maxAnalysisFields)
		return
	}
	seen := map[string]int{}
	for i := range d.PostCallAnalysis {
		a := &d.PostCallAnalysis[i]
		p := fmt.Sprintf("post_call_analysis[%d]", i)
		if !analysisNameRE.MatchString(a.Name) {
			f.Add(p+".name", "must start with a letter or underscore and contain only letters, digits and _, at most 64 characters")
		} else if j, dup := seen[a.Name]; dup {
			f.Add(p+".name", "duplicates post_call_analysis[%d].name", j)
		} else {
			seen[a.Name] = i
		}
		if !slices.Contains(analysisTypes, a.Type) {
			f.Add(p+".type", "must be one of %s", oneOf(analysisTypes))
		}
		if utf8.RuneCountInString(a.Description) > maxAnalysisDescLen {
			f.Add(p+".description", "must be at most %d characters", maxAnalysisDescLen)
		}
		if a.Type == "enum" {
			switch {
			case len(a.Choices) == 0:
				f.Add(p+".choices", "is required for type enum")
			case len(a.Choices) > maxChoices:
				f.Add(p+".choices", "must list at most %d choices", maxChoices)
			default:
				for _, c := range a.Choices {
					if c == "" || utf8.RuneCountInString(c) > maxChoiceLen {
						f.Add(p+".choices", "each choice must be 1 to %d characters", maxChoiceLen)
					}
				}
				if len(dedupe(a.Choices)) != len(a.Choices) {
					f.Add(p+".choices", "must not repeat a choice")
				}
			}
		} else if len(a.Choices) > 0 {
			f.Add(p+".choices", "is only allowed for type enum")
		}
	}
}

// checkKnowledgeBases reports ids that are not knowledge bases of this tenant. Unknown
// ids and other tenants' ids get the same message, so the answer reveals nothing.
func (v *validation) checkKnowledgeBases(ctx context.Context, ids []string) error {
	for _, id := range ids {
		if id == "" || len(id) > maxKnowledgeBaseIDLen {
			v.f.Add("knowledge_base_ids", "unknown knowledge base %q", id)
			return nil
		}
	}
	rows, err := v.svc.pool.Query(ctx, `SELECT id FROM knowledge_bases WHERE tenant_id = $1 AND id = ANY($2)`, v.tenantID, ids)
	if err != nil {
		return fmt.Errorf("agents: check knowledge bases: %w", err)
	}
	found := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("agents: check knowledge bases: %w", err)
		}
		found[id] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("agents: check knowledge bases: %w", err)
	}
	for _, id := range ids {
		if !found[id] {
			v.f.Add("knowledge_base_ids", "unknown knowledge base %q", id)
			break
		}
	}
	return nil
}

// urlChecks collects URL fields to pass through the SSRF guard once each.
type urlChecks struct {
	fields map[string][]string // url -> fields using it
	order  []string
}

func newURLChecks() *urlChecks { return &urlChecks{fields: map[string][]string{}} }

// add checks the syntax of one URL field and queues it for the guard; it returns the
// trimmed URL.
func (u *urlChecks) add(f errs.Fields, field, raw string, required bool) string {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		if required {
			f.Add(field, "is required")
		}
		return ""
	}
	if msg := urlSyntax(raw); msg != "" {
		f.Add(field, "%s", msg)
		return raw
	}
	if _, ok := u.fields[raw]; !ok {
		u.order = append(u.order, raw)
	}
	u.fields[raw] = append(u.fields[raw], field)
	return raw
}

// urlSyntax returns why raw is not an absolute http(s) URL, or "".
func urlSyntax(raw string) string {
	if len(raw) > maxURLLen {
		return fmt.Sprintf("must be at most %d characters", maxURLLen)
	}
	p, err := url.Parse(raw)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.Hostname() == "" {
		return "must be an absolute http:// or https:// URL"
	}
	return ""
}

// run asks the guard about each distinct URL. A refusal (safehttp.ErrBlocked or
// ErrBadURL) is a validation message carrying the guard's explanation, which is written
// for the person who typed the URL. Any other failure means the guard could not decide
// (a DNS server timing out is not the URL's fault): that is Unavailable, not Invalid.
func (u *urlChecks) run(ctx context.Context, c URLChecker, f errs.Fields) error {
	for _, raw := range u.order {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := c.CheckURL(ctx, raw)
		switch {
		case err == nil:
		case refused(err):
			for _, field := range u.fields[raw] {
				f.Add(field, "is not allowed: %v", err)
			}
		case ctx.Err() != nil:
			return ctx.Err()
		default:
			return &errs.Error{Kind: errs.KindUnavailable, Code: "url_check_failed",
				Detail: fmt.Sprintf("Could not check %s right now (%v); try again", u.fields[raw][0], err)}
		}
	}
	return nil
}

// refused reports whether err is the SSRF guard refusing a URL.
func refused(err error) bool {
	return errors.Is(err, safehttp.ErrBlocked) || errors.Is(err, safehttp.ErrBadURL)
}

// parseTag canonicalises a BCP-47 tag ("en-us" → "en-US"). The undetermined tag "und"
// is refused: an agent must speak something.
func parseTag(s string) (string, bool) {
	if len(s) > 64 {
		return "", false
	}
	tag, err := language.Parse(s)
	if err != nil || tag == language.Und {
		return "", false
	}
	return tag.String(), true
}

func maxLen(f errs.Fields, field, s string, n int) {
	if utf8.RuneCountInString(s) > n {
		f.Add(field, "must be at most %d characters", n)
	}
}

func dedupe(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	seen := make(map[string]bool, len(in))
	out := make([]string, 0, len(in))
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func ptr[T any](v T) *T { return &v }

// bumped returns a new updated_at strictly after prev, at the microsecond precision
// PostgreSQL stores, so that optimistic concurrency on updated_at always sees a change.
func bumped(now, prev time.Time) time.Time {
	now = now.UTC().Truncate(time.Microsecond)
	if !now.After(prev) {
		now = prev.Add(time.Microsecond)
	}
	return now
}

var (
	voicemailActions = []string{"hangup", "leave_message"}
	// e164RE is an E.164 number: + then up to 15 digits, no leading zero.
	e164RE = regexp.MustCompile(`^\+[1-9]\d{1,14}$`)
)

// checkPhone validates the phone-call settings (after applyDefaults).
func checkPhone(d *definition, f errs.Fields) {
	if !slices.Contains(voicemailActions, d.VoicemailAction) {
		f.Add("voicemail_action", "must be one of %s", oneOf(voicemailActions))
	}
	if d.VoicemailAction == "leave_message" && strings.TrimSpace(d.VoicemailMessage) == "" {
		f.Add("voicemail_message", "is required when voicemail_action is leave_message")
	}
	maxLen(f, "voicemail_message", d.VoicemailMessage, maxVoicemailMessageLen)
	if ms := *d.VoicemailDetectionTimeoutMS; ms < minVoicemailTimeoutMS || ms > maxVoicemailTimeoutMS {
		f.Add("voicemail_detection_timeout_ms", "must be from %d to %d", minVoicemailTimeoutMS, maxVoicemailTimeoutMS)
	}
	if len(d.TransferDestinations) > maxTransferDestinations {
		f.Add("transfer_destinations", "must list at most %d destinations", maxTransferDestinations)
	}
	for i, t := range d.TransferDestinations {
		if !validTransferTarget(t) {
			f.Add(fmt.Sprintf("transfer_destinations[%d]", i), "must be an E.164 number (+15551234567) or a sip: or tel: URI")
		}
	}
	d.TransferDestinations = dedupe(d.TransferDestinations)
}

// validTransferTarget accepts what LiveKit SIP can REFER a call to: an E.164 number,
// tel:+E164, or sip:user@host (sips: too), without spaces or control characters.
func validTransferTarget(t string) bool {
	switch {
	case e164RE.MatchString(t):
		return true
	case strings.HasPrefix(t, "tel:"):
		return e164RE.MatchString(strings.TrimPrefix(t, "tel:"))
	case strings.HasPrefix(t, "sip:"), strings.HasPrefix(t, "sips:"):
		rest := t[strings.IndexByte(t, ':')+1:]
		user, host, ok := strings.Cut(rest, "@")
		return ok && user != "" && host != "" && len(t) <= 256 &&
			!strings.ContainsAny(t, " \t\r\n<>\"")
	}
	return false
}
