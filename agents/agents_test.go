package agents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/parleyhq/parley/internal/errs"
)

const fullAgent = `{
	"agent_name": "Front desk",
	"status": "inactive",
	"language": "de-de",
	"response_engine": {"type": "parley-llm", "system_prompt": "You are helpful.", "llm_model": "gpt-4o-mini", "temperature": 0.3},
	"begin_message": "Hello!",
	"llm": {"provider": "openai", "base_url": "https://llm.example.com/v1", "api_key": "sk-llm-secret-1"},
	"stt": {"provider": "deepgram", "api_key": "dg-secret-2", "model": "nova-3", "language": "de"},
	"tts": {"provider": "elevenlabs", "api_key": "el-secret-3", "model": "eleven_flash_v2_5", "voice": "rachel"},
	"functions": [{
		"name": "book_slot",
		"description": "Books a slot",
		"parameters": {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]},
		"url": "https://hooks.example.com/book",
		"method": "post",
		"headers": {"X-Token": "abc"},
		"timeout_ms": 5000
	}],
	"webhook_url": "https://hooks.example.com/events",
	"interruption_sensitivity": 0.8,
	"end_call_after_silence_ms": 20000,
	"max_call_duration_ms": 600000,
	"post_call_analysis": [
		{"name": "intent", "type": "enum", "description": "why they called", "choices": ["book", "cancel"]},
		{"name": "rating", "type": "integer"}
	],
	"recording_enabled": false,
	"enable_voicemail_detection": true,
	"voicemail_message": "Hi {{name}}, please call us back.",
	"voicemail_detection_timeout_ms": 20000,
	"transfer_destinations": ["+15550100", "sip:desk@pbx.example.com", "+15550100"]
}`

func TestCreateGetRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ten := e.tenant(t)
	kb := e.kb(t, ten)
	body := strings.Replace(fullAgent, `"webhook_url"`, `"knowledge_base_ids": ["`+kb+`", "`+kb+`"], "webhook_url"`, 1)
	a := e.create(t, ten, body)

	if !strings.HasPrefix(a.ID, "agent_") {
		t.Errorf("id %q lacks the agent_ prefix", a.ID)
	}
	temp := 0.3
	want := Agent{
		ID: a.ID, Name: "Front desk", Status: "inactive", VoiceID: "rachel", Language: "de-DE",
		ResponseEngine: ResponseEngine{Type: "parley-llm", SystemPrompt: "You are helpful.", LLMModel: "gpt-4o-mini", Temperature: &temp},
		BeginMessage:   "Hello!",
		LLM:            LLMConfig{Provider: "openai", BaseURL: "https://llm.example.com/v1", APIKey: Secret{set: true}, Model: "gpt-4o-mini", Temperature: &temp},
		STT:            STTConfig{Provider: "deepgram", APIKey: Secret{set: true}, Model: "nova-3", Language: "de"},
		TTS:            TTSConfig{Provider: "elevenlabs", APIKey: Secret{set: true}, Model: "eleven_flash_v2_5", Voice: "rachel"},
		Functions: []Function{{
			Name: "book_slot", Description: "Books a slot",
			Parameters: json.RawMessage(`{"properties":{"day":{"type":"string"}},"required":["day"],"type":"object"}`),
			URL:        "https://hooks.example.com/book", Method: "POST", Headers: map[string]string{"X-Token": "abc"}, TimeoutMS: 5000,
		}},
		KnowledgeBaseIDs:        []string{kb},
		WebhookURL:              "https://hooks.example.com/events",
		InterruptionSensitivity: 0.8, EndCallAfterSilenceMS: 20000, MaxCallDurationMS: 600000,
		PostCallAnalysis: []AnalysisField{
			{Name: "intent", Type: "enum", Description: "why they called", Choices: []string{"book", "cancel"}},
			{Name: "rating", Type: "integer"},
		},
		RecordingEnabled: false, EnableVoicemailDetection: true,
		VoicemailAction: "leave_message", VoicemailMessage: "Hi {{name}}, please call us back.",
		VoicemailDetectionTimeoutMS: 20000,
		TransferDestinations:        []string{"+15550100", "sip:desk@pbx.example.com"},
		CreatedAt:                   a.CreatedAt, UpdatedAt: a.UpdatedAt,
	}
	if !reflect.DeepEqual(a, want) {
		t.Fatalf("created\n%s\nwant\n%s", mustJSON(t, a), mustJSON(t, want))
	}
	if a.CreatedAt.IsZero() || !a.CreatedAt.Equal(a.UpdatedAt) || a.CreatedAt.Location().String() != "UTC" {
		t.Errorf("timestamps %v %v", a.CreatedAt, a.UpdatedAt)
	}

	got, err := e.svc.Get(ctx, ten, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, a) {
		t.Fatalf("Get\n%s\nwant\n%s", mustJSON(t, got), mustJSON(t, a))
	}
	raw, err := e.svc.GetJSON(ctx, ten, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != mustJSON(t, a) {
		t.Fatalf("GetJSON\n%s\nwant\n%s", raw, mustJSON(t, a))
	}

	// The JSON has exactly the contract's keys.
	var m map[string]any
	json.Unmarshal(raw, &m)
	keys := []string{"agent_id", "agent_name", "status", "voice_id", "language", "response_engine", "begin_message",
		"llm", "stt", "tts", "functions", "knowledge_base_ids", "webhook_url", "interruption_sensitivity",
		"end_call_after_silence_ms", "max_call_duration_ms", "post_call_analysis", "recording_enabled", "enable_voicemail_detection", "voicemail_action",
		"voicemail_message", "voicemail_detection_timeout_ms", "transfer_destinations", "created_at", "updated_at"}
	if len(m) != len(keys) {
		t.Errorf("agent JSON has %d keys, want %d: %s", len(m), len(keys), raw)
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("agent JSON lacks %q", k)
		}
	}
	if llm := m["llm"].(map[string]any); llm["api_key"] != Mask || llm["model"] != "gpt-4o-mini" || llm["temperature"] != 0.3 {
		t.Errorf("llm = %v", llm)
	}
	if re := m["response_engine"].(map[string]any); re["llm_model"] != "gpt-4o-mini" || re["temperature"] != 0.3 {
		t.Errorf("response_engine = %v", re)
	}
}

func TestCreateDefaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ten := e.tenant(t)
	a := e.create(t, ten, `{"agent_name": "  Minimal  "}`)
	raw, _ := e.svc.GetJSON(context.Background(), ten, a.ID)
	var m map[string]any
	json.Unmarshal(raw, &m)
	want := map[string]any{
		"agent_name": "Minimal", "status": "active", "language": "en-US", "voice_id": "", "begin_message": "",
		"webhook_url": "", "interruption_sensitivity": 0.5, "end_call_after_silence_ms": 30000.0,
		"max_call_duration_ms": 3600000.0, "functions": []any{}, "knowledge_base_ids": []any{}, "post_call_analysis": []any{},
		"response_engine": map[string]any{"type": "parley-llm", "system_prompt": ""},
		"llm":             map[string]any{}, "stt": map[string]any{}, "tts": map[string]any{},
	}
	for k, v := range want {
		if !reflect.DeepEqual(m[k], v) {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}

	// A function's method, timeout and parameters default too.
	a = e.create(t, ten, `{"agent_name": "f", "functions": [{"name": "ping", "url": "https://x.example.com"}]}`)
	fn := a.Functions[0]
	if fn.Method != "POST" || fn.TimeoutMS != 10000 || string(fn.Parameters) != `{"properties":{},"type":"object"}` || fn.Headers == nil {
		t.Errorf("function defaults: %+v", fn)
	}

	// Config.DefaultLanguage applies to agents created without a language.
	e2 := envOn(t, e.pool, Config{DefaultLanguage: "fr-fr"}, nil)
	if a := e2.create(t, ten, `{"agent_name": "fr"}`); a.Language != "fr-FR" {
		t.Errorf("language = %q, want fr-FR", a.Language)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ten, other := e.tenant(t), e.tenant(t)
	var created []string
	for i := range 5 {
		created = append(created, e.create(t, ten, fmt.Sprintf(`{"agent_name": "a%d"}`, i)).ID)
	}
	e.create(t, other, `{"agent_name": "not mine"}`)
	// A temporary agent (made for one Call24x7 call) is not listed, nor counted, but
	// can still be read by ID.
	tmp := e.create(t, ten, `{"agent_name": "Call24x7 instruction"}`).ID
	if _, err := e.pool.Exec(ctx, `UPDATE agents SET temporary = true WHERE id = $1`, tmp); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Get(ctx, ten, tmp); err != nil {
		t.Errorf("temporary agent by ID: %v", err)
	}

	cases := []struct {
		limit, offset int
		want          []string // newest first
	}{
		{0, 0, []string{created[4], created[3], created[2], created[1], created[0]}},
		{2, 0, []string{created[4], created[3]}},
		{2, 2, []string{created[2], created[1]}},
		{2, 4, []string{created[0]}},
		{2, 10, nil},
		{1000, 0, []string{created[4], created[3], created[2], created[1], created[0]}},
	}
	for _, c := range cases {
		got, total, err := e.svc.List(ctx, ten, c.limit, c.offset)
		if err != nil {
			t.Fatal(err)
		}
		if total != 5 {
			t.Errorf("limit %d offset %d: total %d, want 5", c.limit, c.offset, total)
		}
		var gotIDs []string
		for _, a := range got {
			gotIDs = append(gotIDs, a.ID)
		}
		if !reflect.DeepEqual(gotIDs, c.want) {
			t.Errorf("limit %d offset %d: %v, want %v", c.limit, c.offset, gotIDs, c.want)
		}
	}
	got, total, err := e.svc.List(ctx, e.tenant(t), 20, 0)
	if err != nil || total != 0 || len(got) != 0 {
		t.Errorf("empty tenant: %v %d %v", got, total, err)
	}
}

func TestPatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ten := e.tenant(t)
	cases := []struct {
		name  string
		patch string
		check func(t *testing.T, a Agent)
	}{
		{"rename", `{"agent_name": "Renamed"}`, func(t *testing.T, a Agent) {
			if a.Name != "Renamed" || a.Language != "de-DE" || a.BeginMessage != "Hello!" {
				t.Errorf("%+v", a)
			}
		}},
		{"empty patch keeps everything", `{}`, func(t *testing.T, a Agent) {
			if a.Name != "Front desk" || len(a.Functions) != 1 || !a.LLM.APIKey.IsSet() {
				t.Errorf("%+v", a)
			}
		}},
		{"null resets to default", `{"interruption_sensitivity": null, "language": null, "status": null}`, func(t *testing.T, a Agent) {
			if a.InterruptionSensitivity != 0.5 || a.Language != "en-US" || a.Status != "active" {
				t.Errorf("%+v", a)
			}
		}},
		{"nested objects merge", `{"stt": {"model": "nova-2"}}`, func(t *testing.T, a Agent) {
			if a.STT.Model != "nova-2" || a.STT.Provider != "deepgram" || !a.STT.APIKey.IsSet() {
				t.Errorf("%+v", a.STT)
			}
		}},
		{"null removes a nested field", `{"stt": {"language": null}}`, func(t *testing.T, a Agent) {
			if a.STT.Language != "" || a.STT.Model != "nova-3" {
				t.Errorf("%+v", a.STT)
			}
		}},
		{"arrays replace", `{"post_call_analysis": [{"name": "summary", "type": "string"}]}`, func(t *testing.T, a Agent) {
			if len(a.PostCallAnalysis) != 1 || a.PostCallAnalysis[0].Name != "summary" {
				t.Errorf("%+v", a.PostCallAnalysis)
			}
		}},
		{"null clears a list", `{"functions": null}`, func(t *testing.T, a Agent) {
			if len(a.Functions) != 0 || a.Functions == nil {
				t.Errorf("%#v", a.Functions)
			}
		}},
		{"alias system_prompt", `{"system_prompt": "New prompt"}`, func(t *testing.T, a Agent) {
			if a.ResponseEngine.SystemPrompt != "New prompt" || a.ResponseEngine.Type != "parley-llm" {
				t.Errorf("%+v", a.ResponseEngine)
			}
		}},
		{"alias llm_model updates llm.model", `{"response_engine": {"llm_model": "gpt-4.1"}}`, func(t *testing.T, a Agent) {
			if a.LLM.Model != "gpt-4.1" || a.ResponseEngine.LLMModel != "gpt-4.1" || a.ResponseEngine.SystemPrompt != "You are helpful." {
				t.Errorf("%+v %+v", a.LLM, a.ResponseEngine)
			}
		}},
		{"llm.temperature updates the alias", `{"llm": {"temperature": 1.5}}`, func(t *testing.T, a Agent) {
			if *a.LLM.Temperature != 1.5 || *a.ResponseEngine.Temperature != 1.5 {
				t.Errorf("%v %v", *a.LLM.Temperature, *a.ResponseEngine.Temperature)
			}
		}},
		{"alias temperature null clears", `{"response_engine": {"temperature": null}}`, func(t *testing.T, a Agent) {
			if a.LLM.Temperature != nil || a.ResponseEngine.Temperature != nil {
				t.Errorf("%v", a.LLM.Temperature)
			}
		}},
		{"voice_id", `{"voice_id": "adam"}`, func(t *testing.T, a Agent) {
			if a.TTS.Voice != "adam" || a.VoiceID != "adam" || a.TTS.Provider != "elevenlabs" {
				t.Errorf("%+v", a.TTS)
			}
		}},
		{"tts.voice_id", `{"tts": {"voice_id": "bella"}}`, func(t *testing.T, a Agent) {
			if a.TTS.Voice != "bella" || a.VoiceID != "bella" {
				t.Errorf("%+v", a.TTS)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			a := e.create(t, ten, fullAgent)
			p, err := e.svc.Patch(context.Background(), ten, a.ID, []byte(c.patch))
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, p)
			if !p.UpdatedAt.After(a.UpdatedAt) || !p.CreatedAt.Equal(a.CreatedAt) {
				t.Errorf("timestamps: created %v→%v updated %v→%v", a.CreatedAt, p.CreatedAt, a.UpdatedAt, p.UpdatedAt)
			}
			got, err := e.svc.Get(context.Background(), ten, a.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, p) {
				t.Errorf("Get after Patch\n%s\nwant\n%s", mustJSON(t, got), mustJSON(t, p))
			}
		})
	}
}

func TestPatchInvalidWritesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ten := e.tenant(t)
	a := e.create(t, ten, fullAgent)
	before, _ := e.svc.GetJSON(ctx, ten, a.ID)
	spec := e.rawSpec(t, a.ID)
	for _, p := range []string{
		`{"agent_name": "ok", "status": "paused"}`,
		`{"agent_name": ""}`,
		`{"agent_name": null}`, // name is required: null removes it
		`{"llm": {"temperature": 3}}`,
		`{"functions": [{"name": "end_call", "url": "https://x.example.com"}]}`,
		`{"webhook_url": "http://blocked.example.com/x"}`,
		`{"temperature": "hot", "response_engine": {"temperature": "hot"}}`,
		`{"agent_name": 5}`,
		`not json`,
	} {
		if _, err := e.svc.Patch(ctx, ten, a.ID, []byte(p)); err == nil {
			t.Errorf("Patch(%s) succeeded", p)
		} else if k := errs.KindOf(err); k != errs.KindInvalid && k != errs.KindBadRequest {
			t.Errorf("Patch(%s): %v", p, err)
		}
	}
	after, _ := e.svc.GetJSON(ctx, ten, a.ID)
	if string(before) != string(after) || spec != e.rawSpec(t, a.ID) {
		t.Errorf("a refused patch changed the agent:\n%s\n%s", before, after)
	}
	if _, err := e.svc.Patch(ctx, ten, "agent_nope", []byte(`{}`)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Patch unknown id: %v", err)
	}
}

// Concurrent patches of different fields all land: none overwrites another's change.
func TestPatchConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ten := e.tenant(t)
	a := e.create(t, ten, `{"agent_name": "busy"}`)
	patches := []string{
		`{"begin_message": "hi"}`, `{"system_prompt": "p"}`, `{"voice_id": "v"}`, `{"language": "fr"}`,
		`{"interruption_sensitivity": 0.1}`, `{"end_call_after_silence_ms": 5000}`, `{"max_call_duration_ms": 60000}`,
		`{"webhook_url": "https://w.example.com"}`,
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(patches))
	for _, p := range patches {
		wg.Go(func() {
			if _, err := e.svc.Patch(ctx, ten, a.ID, []byte(p)); err != nil {
				errc <- err
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		// Heavy contention may exhaust the retries; that is a clean Conflict, not a lost write.
		wantKind(t, err, errs.KindConflict)
		return
	}
	got, _ := e.svc.Get(ctx, ten, a.ID)
	if got.BeginMessage != "hi" || got.ResponseEngine.SystemPrompt != "p" || got.VoiceID != "v" || got.Language != "fr" ||
		got.InterruptionSensitivity != 0.1 || got.EndCallAfterSilenceMS != 5000 || got.MaxCallDurationMS != 60000 ||
		got.WebhookURL != "https://w.example.com" {
		t.Errorf("lost update: %s", mustJSON(t, got))
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ten := e.tenant(t)
	a := e.create(t, ten, `{"agent_name": "x"}`)
	if _, err := e.pool.Exec(ctx, `INSERT INTO calls (id, tenant_id, agent_id) VALUES ('call_1', $1, $2)`, ten, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Delete(ctx, ten, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Get(ctx, ten, a.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete: %v", err)
	}
	if err := e.svc.Delete(ctx, ten, a.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete: %v", err)
	}
	var agentID *string
	e.pool.QueryRow(ctx, `SELECT agent_id FROM calls WHERE id = 'call_1'`).Scan(&agentID)
	if agentID != nil {
		t.Errorf("call keeps agent_id %v", *agentID)
	}
}

func TestDuplicate(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ten := e.tenant(t)
	a := e.create(t, ten, fullAgent)
	d, err := e.svc.Duplicate(ctx, ten, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d.ID == a.ID || d.Name != "Front desk (copy)" || !d.CreatedAt.After(a.CreatedAt) && !d.CreatedAt.Equal(a.CreatedAt) {
		t.Errorf("duplicate %s %q %v", d.ID, d.Name, d.CreatedAt)
	}
	// Everything else is the same.
	norm := func(x Agent) string {
		x.ID, x.Name, x.CreatedAt, x.UpdatedAt = "", "", a.CreatedAt, a.CreatedAt
		return mustJSON(t, x)
	}
	if norm(a) != norm(d) {
		t.Errorf("duplicate differs:\n%s\n%s", norm(a), norm(d))
	}
	if got, err := e.svc.Get(ctx, ten, d.ID); err != nil || mustJSON(t, got) != mustJSON(t, d) {
		t.Errorf("Get duplicate: %v", err)
	}
	// The very same sealed keys, which still open to the original secrets.
	if e.rawSpec(t, a.ID) != e.rawSpec(t, d.ID) {
		t.Errorf("spec differs")
	}
	r, err := e.svc.Resolve(ctx, ten, d.ID)
	if err != nil || r.LLM.APIKey.Value() != "sk-llm-secret-1" || r.TTS.APIKey.Value() != "el-secret-3" {
		t.Errorf("resolve duplicate: %v %q", err, r.LLM.APIKey.Value())
	}

	// A name at the limit is shortened to make room for the suffix.
	long := strings.Repeat("é", maxNameLen)
	a = e.create(t, ten, `{"agent_name": "`+long+`"}`)
	d, err = e.svc.Duplicate(ctx, ten, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := len([]rune(d.Name)); n != maxNameLen || !strings.HasSuffix(d.Name, " (copy)") {
		t.Errorf("duplicate name has %d runes: %q", n, d.Name)
	}
	if _, err := e.svc.Duplicate(ctx, ten, "agent_nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Duplicate unknown: %v", err)
	}
}

func TestAPIKeysWriteOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ten := e.tenant(t)
	secrets := []string{"sk-llm-secret-1", "dg-secret-2", "el-secret-3"}
	a := e.create(t, ten, fullAgent)

	list, _, _ := e.svc.List(ctx, ten, 10, 0)
	get, _ := e.svc.Get(ctx, ten, a.ID)
	raw, _ := e.svc.GetJSON(ctx, ten, a.ID)
	dup, _ := e.svc.Duplicate(ctx, ten, a.ID)
	resolved, err := e.svc.Resolve(ctx, ten, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"create": mustJSON(t, a), "get": mustJSON(t, get), "getjson": string(raw), "list": mustJSON(t, list),
		"duplicate": mustJSON(t, dup), "resolve json": mustJSON(t, resolved),
		"resolve %v": fmt.Sprintf("%v", resolved), "resolve %+v": fmt.Sprintf("%+v", resolved),
		"spec": e.rawSpec(t, a.ID),
	}
	for name, out := range outputs {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s leaks %q: %s", name, s, out)
			}
		}
	}
	if strings.Count(string(raw), `"api_key":"********"`) != 3 {
		t.Errorf("masked keys missing: %s", raw)
	}
	// At rest: three sealed values that open to the keys.
	var spec definition
	json.Unmarshal([]byte(e.rawSpec(t, a.ID)), &spec)
	for i, sealed := range []string{spec.LLM.APIKey, spec.STT.APIKey, spec.TTS.APIKey} {
		if !strings.HasPrefix(sealed, "v1:") {
			t.Errorf("key %d stored as %q", i, sealed)
		}
		if pt, err := e.box.Open(sealed); err != nil || pt != secrets[i] {
			t.Errorf("key %d opens to %q, %v", i, pt, err)
		}
	}
	if resolved.LLM.APIKey.Value() != secrets[0] || resolved.STT.APIKey.Value() != secrets[1] || resolved.TTS.APIKey.Value() != secrets[2] {
		t.Errorf("Resolve keys: %q %q %q", resolved.LLM.APIKey.Value(), resolved.STT.APIKey.Value(), resolved.TTS.APIKey.Value())
	}
	if get.LLM.APIKey.Value() != "" {
		t.Errorf("Get decrypted a key")
	}

	// Merge-patch semantics of keys.
	sealedLLM := spec.LLM.APIKey
	cases := []struct {
		patch   string
		llm     string // "" unset, "same", or the new plaintext
		wantErr bool
	}{
		{`{"llm": {"api_key": "********"}}`, "same", false},
		{`{"llm": {"model": "gpt-4.1"}}`, "same", false},
		{`{"llm": {"api_key": "sk-new"}}`, "sk-new", false},
		{`{"llm": {"api_key": ""}}`, "", false},
		{`{"llm": {"api_key": "********"}}`, "", true}, // nothing stored any more
		{`{"llm": {"api_key": "sk-again"}}`, "sk-again", false},
		{`{"llm": {"api_key": null}}`, "", false},
		{`{"llm": {"api_key": "sk-3"}}`, "sk-3", false},
		{`{"llm": null}`, "", false},
	}
	for _, c := range cases {
		before := e.rawSpec(t, a.ID)
		p, err := e.svc.Patch(ctx, ten, a.ID, []byte(c.patch))
		if c.wantErr {
			fe := wantKind(t, err, errs.KindInvalid)
			if fe.Fields["llm.api_key"] == "" {
				t.Errorf("%s: fields %v", c.patch, fe.Fields)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.patch, err)
		}
		var d definition
		json.Unmarshal([]byte(e.rawSpec(t, a.ID)), &d)
		switch c.llm {
		case "":
			if d.LLM.APIKey != "" || p.LLM.APIKey.IsSet() {
				t.Errorf("%s: key still set", c.patch)
			}
		case "same":
			var b definition
			json.Unmarshal([]byte(before), &b)
			if d.LLM.APIKey != b.LLM.APIKey || !p.LLM.APIKey.IsSet() {
				t.Errorf("%s: key changed", c.patch)
			}
			if d.LLM.APIKey != sealedLLM {
				t.Errorf("%s: not the original sealed key", c.patch)
			}
		default:
			if pt, _ := e.box.Open(d.LLM.APIKey); pt != c.llm || !p.LLM.APIKey.IsSet() {
				t.Errorf("%s: key opens to %q", c.patch, pt)
			}
			if strings.Contains(mustJSON(t, p), c.llm) {
				t.Errorf("%s: patch result leaks the key", c.patch)
			}
		}
		// Other providers' keys are untouched throughout.
		if pt, _ := e.box.Open(d.TTS.APIKey); pt != secrets[2] {
			t.Errorf("%s: tts key now %q", c.patch, pt)
		}
	}
	// Creating with the mask is refused: there is nothing to keep.
	_, err = e.svc.Create(ctx, ten, []byte(`{"agent_name": "x", "tts": {"api_key": "********"}}`))
	if fe := wantKind(t, err, errs.KindInvalid); fe.Fields["tts.api_key"] == "" {
		t.Errorf("fields %v", fe.Fields)
	}
}

func TestResolveWrongKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ten := e.tenant(t)
	a := e.create(t, ten, fullAgent)
	other := envOn(t, e.pool, Config{}, nil) // same database, a different server key
	if _, err := other.svc.Resolve(context.Background(), ten, a.ID); err == nil || errs.KindOf(err) != errs.KindInternal {
		t.Errorf("Resolve under another key: %v", err)
	}
}

func TestCrossTenant(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	mine, theirs := e.tenant(t), e.tenant(t)
	a := e.create(t, theirs, fullAgent)
	before, _ := e.svc.GetJSON(ctx, theirs, a.ID)

	ops := map[string]func() error{
		"Get":       func() error { _, err := e.svc.Get(ctx, mine, a.ID); return err },
		"GetJSON":   func() error { _, err := e.svc.GetJSON(ctx, mine, a.ID); return err },
		"Patch":     func() error { _, err := e.svc.Patch(ctx, mine, a.ID, []byte(`{"agent_name": "pwned"}`)); return err },
		"Delete":    func() error { return e.svc.Delete(ctx, mine, a.ID) },
		"Duplicate": func() error { _, err := e.svc.Duplicate(ctx, mine, a.ID); return err },
		"Stats":     func() error { _, err := e.svc.Stats(ctx, mine, a.ID, 7); return err },
		"Resolve":   func() error { _, err := e.svc.Resolve(ctx, mine, a.ID); return err },
		"TestFunction": func() error {
			_, err := e.svc.TestFunction(ctx, mine, a.ID, "book_slot", json.RawMessage(`{}`))
			return err
		},
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s with another tenant's id: %v, want ErrNotFound", name, err)
		}
	}
	if list, total, _ := e.svc.List(ctx, mine, 100, 0); total != 0 || len(list) != 0 {
		t.Errorf("List shows another tenant's agents")
	}
	g, _ := e.svc.GlobalStats(ctx, mine, 7)
	if len(g.Agents) != 0 {
		t.Errorf("GlobalStats shows another tenant's agents")
	}
	after, _ := e.svc.GetJSON(ctx, theirs, a.ID)
	if string(before) != string(after) || e.count(t, mine) != 0 || e.count(t, theirs) != 1 {
		t.Errorf("another tenant's agent changed")
	}

	// Knowledge bases: another tenant's id is refused exactly like an unknown one.
	theirKB, myKB := e.kb(t, theirs), e.kb(t, mine)
	msg := func(kb string) string {
		_, err := e.svc.Create(ctx, mine, []byte(`{"agent_name": "x", "knowledge_base_ids": ["`+myKB+`", "`+kb+`"]}`))
		return strings.ReplaceAll(wantKind(t, err, errs.KindInvalid).Fields["knowledge_base_ids"], kb, "ID")
	}
	if m1, m2 := msg(theirKB), msg("kb_doesnotexist00000000"); m1 != m2 || m1 == "" {
		t.Errorf("messages differ: %q vs %q", m1, m2)
	}
	if e.count(t, mine) != 0 {
		t.Errorf("refused create wrote a row")
	}
	ag := e.create(t, mine, `{"agent_name": "x", "knowledge_base_ids": ["`+myKB+`"]}`)
	if _, err := e.svc.Patch(ctx, mine, ag.ID, []byte(`{"knowledge_base_ids": ["`+theirKB+`"]}`)); errs.KindOf(err) != errs.KindInvalid {
		t.Errorf("patch with another tenant's kb: %v", err)
	}
}

func TestInjectionStringsStoredVerbatim(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ten := e.tenant(t)
	for _, s := range []string{
		`'); DROP TABLE agents;--`,
		`{"$gt":""}`,
		`<script>alert(1)</script>`,
		`Robert'); DELETE FROM tenants; --`,
		"\u202e rtl, emoji 🎙️, quotes \" ' ` and \\ backslash",
		`${jndi:ldap://x}`,
		`{{7*7}}`,
	} {
		t.Run(s, func(t *testing.T) {
			t.Parallel()
			body, _ := json.Marshal(map[string]any{
				"agent_name": s, "begin_message": s, "system_prompt": s, "voice_id": s,
				"post_call_analysis": []any{map[string]any{"name": "f", "type": "enum", "choices": []string{s}, "description": s}},
				"functions": []any{map[string]any{"name": "f", "description": s, "url": "https://x.example.com/?q=" + url.QueryEscape(s),
					"headers": map[string]string{"X-Test": strings.NewReplacer("\n", "", "\u0000", "").Replace(s)}}},
			})
			a, err := e.svc.Create(ctx, ten, body)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.svc.Get(ctx, ten, a.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != strings.TrimSpace(s) || got.BeginMessage != s || got.ResponseEngine.SystemPrompt != s ||
				got.VoiceID != s || got.Functions[0].Description != s || got.PostCallAnalysis[0].Choices[0] != s {
				t.Errorf("not verbatim: %s", mustJSON(t, got))
			}
			raw, _ := e.svc.GetJSON(ctx, ten, a.ID)
			if want := mustJSON(t, got); string(raw) != want {
				t.Errorf("GetJSON %s\nwant %s", raw, want)
			}
		})
	}
	var n int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM tenants`).Scan(&n); err != nil || n != 1 {
		t.Errorf("tenants: %d %v", n, err)
	}
}

// A view written by an older release is re-rendered from spec on read.
func TestStaleViewRerendered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	ten := e.tenant(t)
	a := e.create(t, ten, fullAgent)
	if _, err := e.pool.Exec(ctx, `UPDATE agents SET view = '{"old":true}', view_version = 0 WHERE id = $1`, a.ID); err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.Get(ctx, ten, a.ID)
	if err != nil || mustJSON(t, got) != mustJSON(t, a) {
		t.Fatalf("Get of stale view: %v %s", err, mustJSON(t, got))
	}
	list, _, _ := e.svc.List(ctx, ten, 10, 0)
	if len(list) != 1 || mustJSON(t, list[0]) != mustJSON(t, a) {
		t.Errorf("List of stale view")
	}
	var v int
	e.pool.QueryRow(ctx, `SELECT view_version FROM agents WHERE id = $1`, a.ID).Scan(&v)
	if v != viewVersion {
		t.Errorf("view not refreshed: version %d", v)
	}

	// A row whose spec predates every setting (as if written by an old release) reads
	// with the defaults, and can be patched.
	if _, err := e.pool.Exec(ctx, `INSERT INTO agents (id, tenant_id, name, status) VALUES ('agent_legacy', $1, 'Legacy', 'inactive')`, ten); err != nil {
		t.Fatal(err)
	}
	got, err = e.svc.Get(ctx, ten, "agent_legacy")
	if err != nil || got.Name != "Legacy" || got.Status != "inactive" || got.Language != "en-US" || got.ResponseEngine.Type != "parley-llm" ||
		got.InterruptionSensitivity != 0.5 || got.EndCallAfterSilenceMS != 30000 || got.MaxCallDurationMS != 3600000 {
		t.Errorf("legacy row: %v %s", err, mustJSON(t, got))
	}
	if p, err := e.svc.Patch(ctx, ten, "agent_legacy", []byte(`{"begin_message": "hi"}`)); err != nil || p.BeginMessage != "hi" || p.Status != "inactive" {
		t.Errorf("patch legacy: %v", err)
	}
}

func TestSecret(t *testing.T) {
	t.Parallel()
	s := Secret{set: true, value: "plain"}
	if b, _ := json.Marshal(s); string(b) != `"********"` {
		t.Errorf("json %s", b)
	}
	if fmt.Sprint(s) != Mask {
		t.Errorf("fmt leaks")
	}
	if strings.Contains(fmt.Sprintf("%v %+v %v", s, LLMConfig{APIKey: s}, struct{ K Secret }{s}), "plain") {
		t.Errorf("fmt leaks the key")
	}
	if b, _ := json.Marshal(LLMConfig{}); string(b) != `{}` {
		t.Errorf("unset key not omitted: %s", b)
	}
	var back Secret
	json.Unmarshal([]byte(`"********"`), &back)
	if !back.IsSet() || back.Value() != "" {
		t.Errorf("unmarshal %+v", back)
	}
}

func TestNewRequiresDependencies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := New(e.pool, Config{}, nil, e.guard, e.svc.doer); err == nil {
		t.Error("nil box accepted")
	}
	if _, err := New(e.pool, Config{}, e.box, nil, e.svc.doer); err == nil {
		t.Error("nil checker accepted")
	}
	if _, err := New(e.pool, Config{}, e.box, e.guard, nil); err == nil {
		t.Error("nil doer accepted")
	}
	if _, err := New(e.pool, Config{DefaultLanguage: "not a language"}, e.box, e.guard, e.svc.doer); err == nil {
		t.Error("bad DefaultLanguage accepted")
	}
}
