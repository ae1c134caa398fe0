package agents

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"strings"
	"time"

	"github.com/parleyhq/parley/internal/errs"
)

// definition is an agent in its canonical input shape: what a client may send once
// aliases are resolved, and — with API keys sealed and name and status moved to their
// columns — what the spec column stores. New settings are added here; rows written
// before a field existed decode it as absent and get its default.
type definition struct {
	Name                    string          `json:"agent_name,omitempty"` // column, not spec
	Status                  string          `json:"status,omitempty"`     // column, not spec
	Language                string          `json:"language,omitempty"`
	ResponseEngine          defEngine       `json:"response_engine"`
	BeginMessage            string          `json:"begin_message,omitempty"`
	LLM                     defLLM          `json:"llm"`
	STT                     defSTT          `json:"stt"`
	TTS                     defTTS          `json:"tts"`
	Functions               []Function      `json:"functions,omitempty"`
	KnowledgeBaseIDs        []string        `json:"knowledge_base_ids,omitempty"`
	WebhookURL              string          `json:"webhook_url,omitempty"`
	InterruptionSensitivity *float64        `json:"interruption_sensitivity,omitempty"`
	EndCallAfterSilenceMS   *int64          `json:"end_call_after_silence_ms,omitempty"`
	MaxCallDurationMS       *int64          `json:"max_call_duration_ms,omitempty"`
	PostCallAnalysis        []AnalysisField `json:"post_call_analysis,omitempty"`
	// Phone-call settings.
	RecordingEnabled            *bool    `json:"recording_enabled,omitempty"`
	EnableVoicemailDetection    *bool    `json:"enable_voicemail_detection,omitempty"`
	VoicemailAction             string   `json:"voicemail_action,omitempty"`
	VoicemailMessage            string   `json:"voicemail_message,omitempty"`
	VoicemailDetectionTimeoutMS *int64   `json:"voicemail_detection_timeout_ms,omitempty"`
	TransferDestinations        []string `json:"transfer_destinations,omitempty"`
}

type defEngine struct {
	Type         string `json:"type,omitempty"`
	SystemPrompt string `json:"system_prompt,omitempty"`
}

// The APIKey fields hold plaintext or Mask on input and a sealed value in storage.

type defLLM struct {
	Provider    string   `json:"provider,omitempty"`
	BaseURL     string   `json:"base_url,omitempty"`
	APIKey      string   `json:"api_key,omitempty"`
	Model       string   `json:"model,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"`
}

type defSTT struct {
	Provider string `json:"provider,omitempty"`
	BaseURL  string `json:"base_url,omitempty"`
	APIKey   string `json:"api_key,omitempty"`
	Model    string `json:"model,omitempty"`
	Language string `json:"language,omitempty"`
}

type defTTS struct {
	Provider string `json:"provider,omitempty"`
	BaseURL  string `json:"base_url,omitempty"`
	APIKey   string `json:"api_key,omitempty"`
	Model    string `json:"model,omitempty"`
	Voice    string `json:"voice,omitempty"`
}

// wireBody is definition plus the alias fields. It is only decoded to check types, so a
// wrong type is reported under the name the client used.
type wireBody struct {
	definition
	SystemPrompt   *string    `json:"system_prompt"`
	VoiceID        *string    `json:"voice_id"`
	ResponseEngine wireEngine `json:"response_engine"`
	TTS            wireTTS    `json:"tts"`
}

type wireEngine struct {
	defEngine
	LLMModel    *string  `json:"llm_model"`
	Temperature *float64 `json:"temperature"`
}

type wireTTS struct {
	defTTS
	VoiceID *string `json:"voice_id"`
}

// aliases maps an alias (path in the body) to its canonical path. The order matters
// only for which conflict is reported first.
var aliases = []struct{ from, to []string }{
	{[]string{"system_prompt"}, []string{"response_engine", "system_prompt"}},
	{[]string{"voice_id"}, []string{"tts", "voice"}},
	{[]string{"tts", "voice_id"}, []string{"tts", "voice"}},
	{[]string{"response_engine", "llm_model"}, []string{"llm", "model"}},
	{[]string{"response_engine", "temperature"}, []string{"llm", "temperature"}},
}

// parsePatch reads a request body into a canonical merge patch: a JSON object with
// aliases moved to their canonical places. Malformed JSON and wrong types are
// BadRequest; an alias that contradicts its canonical field is Invalid.
func parsePatch(body []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errs.BadRequest("invalid_json", "Request body must be a single JSON object")
	}
	doc, ok := v.(map[string]any)
	if !ok {
		return nil, errs.BadRequest("invalid_json", "Request body must be a JSON object")
	}
	var w wireBody
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, jsonError(err)
	}
	f := errs.Fields{}
	// PostgreSQL text and jsonb cannot hold U+0000; refuse it up front, by name,
	// rather than fail the INSERT.
	findNUL(doc, "", f)
	if err := f.Err(); err != nil {
		return nil, err
	}
	for _, a := range aliases {
		moveAlias(doc, a.from, a.to, f)
	}
	if err := f.Err(); err != nil {
		return nil, err
	}
	return doc, nil
}

// findNUL reports the first string (or key) holding U+0000 under path.
func findNUL(v any, path string, f errs.Fields) {
	at := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	switch t := v.(type) {
	case string:
		if strings.ContainsRune(t, 0) {
			f.Add(path, "must not contain the NUL character (\\u0000)")
		}
	case map[string]any:
		for k, x := range t {
			if strings.ContainsRune(k, 0) {
				f.Add(at(strings.ReplaceAll(k, "\x00", "")), "must not contain the NUL character (\\u0000)")
			}
			findNUL(x, at(k), f)
		}
	case []any:
		for i, x := range t {
			findNUL(x, fmt.Sprintf("%s[%d]", path, i), f)
		}
	}
}

// moveAlias moves doc[from] to doc[to]. When both are present they must agree; an
// alias null moves too, so it clears the canonical field in a merge patch.
func moveAlias(doc map[string]any, from, to []string, f errs.Fields) {
	src := walk(doc, from[:len(from)-1], false)
	if src == nil {
		return
	}
	key := from[len(from)-1]
	val, ok := src[key]
	if !ok {
		return
	}
	delete(src, key)
	dst := walk(doc, to[:len(to)-1], true)
	if dst == nil {
		f.Add(dotted(from), "conflicts with %s", dotted(to[:len(to)-1]))
		return
	}
	dkey := to[len(to)-1]
	if cur, ok := dst[dkey]; ok && !sameJSON(cur, val) {
		f.Add(dotted(from), "conflicts with %s (they are aliases; send one)", dotted(to))
		return
	}
	dst[dkey] = val
}

// walk returns the object at path, creating missing objects when create is set. It
// returns nil when something on the path is not an object (null included).
func walk(doc map[string]any, path []string, create bool) map[string]any {
	cur := doc
	for _, k := range path {
		next, ok := cur[k]
		if !ok {
			if !create {
				return nil
			}
			m := map[string]any{}
			cur[k] = m
			cur = m
			continue
		}
		m, ok := next.(map[string]any)
		if !ok {
			return nil
		}
		cur = m
	}
	return cur
}

func dotted(path []string) string {
	s := ""
	for i, p := range path {
		if i > 0 {
			s += "."
		}
		s += p
	}
	return s
}

// sameJSON compares two decoded JSON values; numbers compare by value (0.7 == 0.70).
func sameJSON(a, b any) bool {
	an, aok := a.(json.Number)
	bn, bok := b.(json.Number)
	if aok && bok {
		x, ok1 := new(big.Float).SetString(string(an))
		y, ok2 := new(big.Float).SetString(string(bn))
		return ok1 && ok2 && x.Cmp(y) == 0
	}
	aj, err1 := json.Marshal(a)
	bj, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(aj, bj)
}

// mergePatch applies an RFC 7386 merge patch to target and returns the result. Objects
// merge key by key, null deletes, everything else (arrays included) replaces.
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
		} else {
			t[k] = mergePatch(t[k], v)
		}
	}
	return t
}

// decodeDefinition turns a merged document into a definition.
func decodeDefinition(doc map[string]any) (definition, error) {
	b, err := json.Marshal(doc)
	if err != nil {
		return definition{}, fmt.Errorf("agents: encode merged definition: %w", err)
	}
	var d definition
	if err := json.Unmarshal(b, &d); err != nil {
		return definition{}, jsonError(err)
	}
	return d, nil
}

// baseDocument is the stored definition as a merge-patch target: the spec with its
// sealed keys shown as Mask (so a patch that echoes Mask back keeps them) plus the
// name and status columns.
func baseDocument(name, status string, spec []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(spec))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("agents: decode stored spec: %w", err)
	}
	if doc == nil {
		doc = map[string]any{}
	}
	for _, p := range []string{"llm", "stt", "tts"} {
		if m, ok := doc[p].(map[string]any); ok {
			if k, ok := m["api_key"].(string); ok && k != "" {
				m["api_key"] = Mask
			}
		}
	}
	doc["agent_name"] = name
	doc["status"] = status
	return doc, nil
}

// jsonError turns an encoding/json error into a 400 naming the offending field.
func jsonError(err error) error { return errs.FromJSON(err, stripEmbedded) }

// embedded are the Go names of the structs wireBody embeds; encoding/json puts them in
// UnmarshalTypeError.Field, but the client never wrote them.
var embedded = map[string]bool{"definition": true, "defEngine": true, "defTTS": true}

func stripEmbedded(field string) string {
	parts := strings.Split(field, ".")
	out := parts[:0]
	for _, p := range parts {
		if !embedded[p] {
			out = append(out, p)
		}
	}
	return strings.Join(out, ".")
}

// render builds the public Agent from a validated definition whose keys are sealed (or,
// for Resolve, opened: open maps a stored key to the Secret to show).
func (d *definition) render(id string, created, updated time.Time, open func(string) (Secret, error)) (Agent, error) {
	secret := func(k string) (Secret, error) {
		if k == "" {
			return Secret{}, nil
		}
		if open == nil {
			return Secret{set: true}, nil
		}
		return open(k)
	}
	a := Agent{
		ID:       id,
		Name:     d.Name,
		Status:   d.Status,
		VoiceID:  d.TTS.Voice,
		Language: d.Language,
		ResponseEngine: ResponseEngine{
			Type:         d.ResponseEngine.Type,
			SystemPrompt: d.ResponseEngine.SystemPrompt,
			LLMModel:     d.LLM.Model,
			Temperature:  d.LLM.Temperature,
		},
		BeginMessage: d.BeginMessage,
		LLM: LLMConfig{Provider: d.LLM.Provider, BaseURL: d.LLM.BaseURL, Model: d.LLM.Model,
			Temperature: d.LLM.Temperature},
		STT: STTConfig{Provider: d.STT.Provider, BaseURL: d.STT.BaseURL, Model: d.STT.Model,
			Language: d.STT.Language},
		TTS: TTSConfig{Provider: d.TTS.Provider, BaseURL: d.TTS.BaseURL, Model: d.TTS.Model,
			Voice: d.TTS.Voice},
		Functions:            make([]Function, len(d.Functions)),
		KnowledgeBaseIDs:     append([]string{}, d.KnowledgeBaseIDs...),
		WebhookURL:           d.WebhookURL,
		PostCallAnalysis:     append([]AnalysisField{}, d.PostCallAnalysis...),
		VoicemailAction:      d.VoicemailAction,
		VoicemailMessage:     d.VoicemailMessage,
		TransferDestinations: append([]string{}, d.TransferDestinations...),
		CreatedAt:            created.UTC(),
		UpdatedAt:            updated.UTC(),
	}
	if d.InterruptionSensitivity != nil {
		a.InterruptionSensitivity = *d.InterruptionSensitivity
	}
	if d.EndCallAfterSilenceMS != nil {
		a.EndCallAfterSilenceMS = *d.EndCallAfterSilenceMS
	}
	if d.MaxCallDurationMS != nil {
		a.MaxCallDurationMS = *d.MaxCallDurationMS
	}
	if d.RecordingEnabled != nil {
		a.RecordingEnabled = *d.RecordingEnabled
	}
	if d.EnableVoicemailDetection != nil {
		a.EnableVoicemailDetection = *d.EnableVoicemailDetection
	}
	if d.VoicemailDetectionTimeoutMS != nil {
		a.VoicemailDetectionTimeoutMS = *d.VoicemailDetectionTimeoutMS
	}
	for i, fn := range d.Functions {
		if fn.Headers == nil {
			fn.Headers = map[string]string{}
		}
		a.Functions[i] = fn
	}
	var err error
	if a.LLM.APIKey, err = secret(d.LLM.APIKey); err != nil {
		return Agent{}, fmt.Errorf("llm api key: %w", err)
	}
	if a.STT.APIKey, err = secret(d.STT.APIKey); err != nil {
		return Agent{}, fmt.Errorf("stt api key: %w", err)
	}
	if a.TTS.APIKey, err = secret(d.TTS.APIKey); err != nil {
		return Agent{}, fmt.Errorf("tts api key: %w", err)
	}
	return a, nil
}

// specJSON encodes the definition for the spec column (name and status live in columns).
func (d definition) specJSON() ([]byte, error) {
	d.Name, d.Status = "", ""
	return json.Marshal(d)
}
