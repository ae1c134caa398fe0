package agents

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/parleyhq/parley/internal/errs"
)

// fn returns a function JSON object with the given fields merged over a valid one.
func fn(extra string) string {
	base := `"name": "lookup", "url": "https://hooks.example.com/lookup"`
	if extra != "" {
		base += ", " + extra
	}
	return `{"agent_name": "v", "functions": [{` + base + `}]}`
}

func TestValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ten := e.tenant(t)
	long := func(n int) string { return strings.Repeat("a", n) }
	manyFns := make([]string, maxFunctions+1)
	for i := range manyFns {
		manyFns[i] = fmt.Sprintf(`{"name": "f%d", "url": "https://x.example.com"}`, i)
	}
	manyKBs := make([]string, maxKnowledgeBases+1)
	for i := range manyKBs {
		manyKBs[i] = fmt.Sprintf(`"kb_%d"`, i)
	}
	manyFields := make([]string, maxAnalysisFields+1)
	for i := range manyFields {
		manyFields[i] = fmt.Sprintf(`{"name": "f%d", "type": "string"}`, i)
	}
	manyHeaders := make([]string, maxHeaders+1)
	for i := range manyHeaders {
		manyHeaders[i] = fmt.Sprintf(`"X-H%d": "v"`, i)
	}

	cases := []struct {
		name, body, field string
	}{
		// name
		{"name missing", `{}`, "agent_name"},
		{"name empty", `{"agent_name": ""}`, "agent_name"},
		{"name blank", `{"agent_name": "   \t "}`, "agent_name"},
		{"name too long", `{"agent_name": "` + long(maxNameLen+1) + `"}`, "agent_name"},
		// enums
		{"status unknown", `{"agent_name": "v", "status": "paused"}`, "status"},
		{"status wrong case", `{"agent_name": "v", "status": "Active"}`, "status"},
		{"engine unknown", `{"agent_name": "v", "response_engine": {"type": "retell-llm"}}`, "response_engine.type"},
		{"llm provider unknown", `{"agent_name": "v", "llm": {"provider": "anthropic"}}`, "llm.provider"},
		{"stt provider unknown", `{"agent_name": "v", "stt": {"provider": "whisper.cpp"}}`, "stt.provider"},
		{"tts provider unknown", `{"agent_name": "v", "tts": {"provider": "polly"}}`, "tts.provider"},
		{"method unknown", fn(`"method": "FETCH"`), "functions[0].method"},
		{"analysis type unknown", `{"agent_name": "v", "post_call_analysis": [{"name": "x", "type": "date"}]}`, "post_call_analysis[0].type"},
		{"analysis type missing", `{"agent_name": "v", "post_call_analysis": [{"name": "x"}]}`, "post_call_analysis[0].type"},
		// language
		{"language invalid", `{"agent_name": "v", "language": "english"}`, "language"},
		{"language garbage", `{"agent_name": "v", "language": "en_US!"}`, "language"},
		{"language und", `{"agent_name": "v", "language": "und"}`, "language"},
		{"stt language invalid", `{"agent_name": "v", "stt": {"language": "klingon!"}}`, "stt.language"},
		// numbers
		{"temperature negative", `{"agent_name": "v", "llm": {"temperature": -0.1}}`, "llm.temperature"},
		{"temperature too high", `{"agent_name": "v", "llm": {"temperature": 2.01}}`, "llm.temperature"},
		{"alias temperature too high", `{"agent_name": "v", "response_engine": {"temperature": 5}}`, "llm.temperature"},
		{"sensitivity negative", `{"agent_name": "v", "interruption_sensitivity": -0.01}`, "interruption_sensitivity"},
		{"sensitivity above 1", `{"agent_name": "v", "interruption_sensitivity": 1.5}`, "interruption_sensitivity"},
		{"silence too short", `{"agent_name": "v", "end_call_after_silence_ms": 999}`, "end_call_after_silence_ms"},
		{"silence too long", `{"agent_name": "v", "end_call_after_silence_ms": 600001}`, "end_call_after_silence_ms"},
		{"silence zero", `{"agent_name": "v", "end_call_after_silence_ms": 0}`, "end_call_after_silence_ms"},
		{"duration too short", `{"agent_name": "v", "max_call_duration_ms": 9999}`, "max_call_duration_ms"},
		{"duration too long", `{"agent_name": "v", "max_call_duration_ms": 14400001}`, "max_call_duration_ms"},
		{"voicemail action unknown", `{"agent_name": "v", "voicemail_action": "beep"}`, "voicemail_action"},
		{"leave_message without a message", `{"agent_name": "v", "voicemail_action": "leave_message"}`, "voicemail_message"},
		{"voicemail timeout too short", `{"agent_name": "v", "voicemail_detection_timeout_ms": 4999}`, "voicemail_detection_timeout_ms"},
		{"voicemail timeout too long", `{"agent_name": "v", "voicemail_detection_timeout_ms": 120001}`, "voicemail_detection_timeout_ms"},
		{"transfer to a local number", `{"agent_name": "v", "transfer_destinations": ["5550100"]}`, "transfer_destinations[0]"},
		{"transfer to a sip URI without host", `{"agent_name": "v", "transfer_destinations": ["+15550100", "sip:desk"]}`, "transfer_destinations[1]"},
		{"transfer to a web URL", `{"agent_name": "v", "transfer_destinations": ["https://example.com"]}`, "transfer_destinations[0]"},
		// texts
		{"prompt too long", `{"agent_name": "v", "system_prompt": "` + long(maxPromptLen+1) + `"}`, "response_engine.system_prompt"},
		{"begin message too long", `{"agent_name": "v", "begin_message": "` + long(maxBeginMessageLen+1) + `"}`, "begin_message"},
		{"model too long", `{"agent_name": "v", "llm": {"model": "` + long(maxModelLen+1) + `"}}`, "llm.model"},
		{"api key too long", `{"agent_name": "v", "llm": {"api_key": "` + long(maxAPIKeyLen+1) + `"}}`, "llm.api_key"},
		{"api key with newline", `{"agent_name": "v", "stt": {"api_key": "abc\ndef"}}`, "stt.api_key"},
		{"NUL in a string", `{"agent_name": "v\u0000"}`, "agent_name"},
		{"NUL nested", `{"agent_name": "v", "functions": [{"name": "x", "description": "\u0000"}]}`, "functions[0].description"},
		// functions
		{"too many functions", `{"agent_name": "v", "functions": [` + strings.Join(manyFns, ",") + `]}`, "functions"},
		{"function name missing", fn(`"name": ""`), "functions[0].name"},
		{"function name bad start", fn(`"name": "1lookup"`), "functions[0].name"},
		{"function name space", fn(`"name": "look up"`), "functions[0].name"},
		{"function name dot", fn(`"name": "look.up"`), "functions[0].name"},
		{"function name too long", fn(`"name": "a` + long(64) + `"`), "functions[0].name"},
		{"function name end_call", fn(`"name": "end_call"`), "functions[0].name"},
		{"function name transfer_call", fn(`"name": "transfer_call"`), "functions[0].name"},
		{"function name builtin case", fn(`"name": "End_Call"`), "functions[0].name"},
		{"function names duplicate", `{"agent_name": "v", "functions": [{"name": "a", "url": "https://x.example.com"}, {"name": "a", "url": "https://y.example.com"}]}`, "functions[1].name"},
		{"function url missing", `{"agent_name": "v", "functions": [{"name": "a"}]}`, "functions[0].url"},
		{"function url relative", fn(`"url": "/hook"`), "functions[0].url"},
		{"function url ftp", fn(`"url": "ftp://x.example.com/f"`), "functions[0].url"},
		{"function url javascript", fn(`"url": "javascript:alert(1)"`), "functions[0].url"},
		{"function url file", fn(`"url": "file:///etc/passwd"`), "functions[0].url"},
		{"function url no host", fn(`"url": "https://"`), "functions[0].url"},
		{"function url too long", fn(`"url": "https://x.example.com/` + long(maxURLLen) + `"`), "functions[0].url"},
		{"function url blocked", fn(`"url": "http://blocked.example.com/hook"`), "functions[0].url"},
		{"function url metadata", fn(`"url": "http://169.254.169.254/latest/meta-data"`), "functions[0].url"},
		{"function timeout too small", fn(`"timeout_ms": 50`), "functions[0].timeout_ms"},
		{"function timeout too big", fn(`"timeout_ms": 30001`), "functions[0].timeout_ms"},
		{"function timeout negative", fn(`"timeout_ms": -1`), "functions[0].timeout_ms"},
		{"function description too long", fn(`"description": "` + long(maxFunctionDescLen+1) + `"`), "functions[0].description"},
		{"header name invalid", fn(`"headers": {"X Bad": "v"}`), "functions[0].headers"},
		{"header value newline", fn(`"headers": {"X-A": "v\r\nX-Injected: 1"}`), "functions[0].headers"},
		{"header reserved", fn(`"headers": {"host": "internal"}`), "functions[0].headers"},
		{"too many headers", fn(`"headers": {` + strings.Join(manyHeaders, ",") + `}`), "functions[0].headers"},
		{"parameters not object type", fn(`"parameters": {"type": "array", "items": {}}`), "functions[0].parameters"},
		{"parameters no type", fn(`"parameters": {"properties": {}}`), "functions[0].parameters"},
		{"parameters a string", fn(`"parameters": "object"`), "functions[0].parameters"},
		{"parameters an array", fn(`"parameters": [1]`), "functions[0].parameters"},
		{"parameters bad keyword type", fn(`"parameters": {"type": "object", "properties": {"a": {"type": "strnig"}}}`), "functions[0].parameters"},
		{"parameters bad required", fn(`"parameters": {"type": "object", "required": "a"}`), "functions[0].parameters"},
		{"parameters bad minimum", fn(`"parameters": {"type": "object", "properties": {"n": {"type": "number", "minimum": "0"}}}`), "functions[0].parameters"},
		{"parameters remote ref", fn(`"parameters": {"type": "object", "properties": {"a": {"$ref": "https://evil.example.com/s.json"}}}`), "functions[0].parameters"},
		{"parameters file ref", fn(`"parameters": {"type": "object", "properties": {"a": {"$ref": "file:///etc/passwd"}}}`), "functions[0].parameters"},
		{"parameters dangling ref", fn(`"parameters": {"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}}`), "functions[0].parameters"},
		{"parameters too big", fn(`"parameters": {"type": "object", "description": "` + long(maxParametersBytes) + `"}`), "functions[0].parameters"},
		// urls
		{"webhook not http", `{"agent_name": "v", "webhook_url": "gopher://x.example.com"}`, "webhook_url"},
		{"webhook not a url", `{"agent_name": "v", "webhook_url": "not a url"}`, "webhook_url"},
		{"webhook blocked", `{"agent_name": "v", "webhook_url": "https://internal.example/hook"}`, "webhook_url"},
		{"llm base_url blocked", `{"agent_name": "v", "llm": {"base_url": "http://blocked-llm.local/v1"}}`, "llm.base_url"},
		{"stt base_url bad", `{"agent_name": "v", "stt": {"base_url": "wss://x.example.com"}}`, "stt.base_url"},
		{"tts base_url blocked", `{"agent_name": "v", "tts": {"base_url": "http://169.254.169.254"}}`, "tts.base_url"},
		{"custom-llm needs base_url", `{"agent_name": "v", "response_engine": {"type": "custom-llm"}}`, "llm.base_url"},
		// knowledge bases
		{"kb unknown", `{"agent_name": "v", "knowledge_base_ids": ["kb_nope"]}`, "knowledge_base_ids"},
		{"kb empty id", `{"agent_name": "v", "knowledge_base_ids": [""]}`, "knowledge_base_ids"},
		{"too many kbs", `{"agent_name": "v", "knowledge_base_ids": [` + strings.Join(manyKBs, ",") + `]}`, "knowledge_base_ids"},
		// post-call analysis
		{"too many analysis fields", `{"agent_name": "v", "post_call_analysis": [` + strings.Join(manyFields, ",") + `]}`, "post_call_analysis"},
		{"analysis name invalid", `{"agent_name": "v", "post_call_analysis": [{"name": "my-field", "type": "string"}]}`, "post_call_analysis[0].name"},
		{"analysis name duplicate", `{"agent_name": "v", "post_call_analysis": [{"name": "a", "type": "string"}, {"name": "a", "type": "number"}]}`, "post_call_analysis[1].name"},
		{"enum without choices", `{"agent_name": "v", "post_call_analysis": [{"name": "a", "type": "enum"}]}`, "post_call_analysis[0].choices"},
		{"enum empty choice", `{"agent_name": "v", "post_call_analysis": [{"name": "a", "type": "enum", "choices": ["x", ""]}]}`, "post_call_analysis[0].choices"},
		{"enum repeated choice", `{"agent_name": "v", "post_call_analysis": [{"name": "a", "type": "enum", "choices": ["x", "x"]}]}`, "post_call_analysis[0].choices"},
		{"choices on non-enum", `{"agent_name": "v", "post_call_analysis": [{"name": "a", "type": "string", "choices": ["x"]}]}`, "post_call_analysis[0].choices"},
		// aliases that contradict their canonical field
		{"system_prompt conflict", `{"agent_name": "v", "system_prompt": "a", "response_engine": {"system_prompt": "b"}}`, "system_prompt"},
		{"llm_model conflict", `{"agent_name": "v", "response_engine": {"llm_model": "a"}, "llm": {"model": "b"}}`, "response_engine.llm_model"},
		{"temperature conflict", `{"agent_name": "v", "response_engine": {"temperature": 0.1}, "llm": {"temperature": 0.2}}`, "response_engine.temperature"},
		{"voice_id conflict", `{"agent_name": "v", "voice_id": "a", "tts": {"voice": "b"}}`, "voice_id"},
		{"tts.voice_id conflict", `{"agent_name": "v", "tts": {"voice_id": "a", "voice": "b"}}`, "tts.voice_id"},
		{"alias into null object", `{"agent_name": "v", "response_engine": {"llm_model": "a"}, "llm": null}`, "response_engine.llm_model"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ten := e.tenant(t)
			_, err := e.svc.Create(context.Background(), ten, []byte(c.body))
			fe := wantKind(t, err, errs.KindInvalid)
			if fe.Code != "validation_error" || fe.Fields[c.field] == "" {
				t.Fatalf("fields = %v, want a message for %q", fe.Fields, c.field)
			}
			if len(fe.Fields) != 1 {
				t.Errorf("extra messages: %v", fe.Fields)
			}
			if n := e.count(t, ten); n != 0 {
				t.Errorf("a refused create wrote %d rows", n)
			}
		})
	}
	_ = ten
}

// The guard's explanation reaches the caller.
func TestValidationGuardMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, err := e.svc.Create(context.Background(), e.tenant(t), []byte(`{"agent_name": "v", "webhook_url": "https://blocked.example.com"}`))
	msg := wantKind(t, err, errs.KindInvalid).Fields["webhook_url"]
	if !strings.Contains(msg, "non-public address") || !strings.Contains(msg, "not allowed") {
		t.Errorf("message %q does not explain", msg)
	}
	// A guard that cannot decide is not the URL's fault: 503, not 422, nothing written.
	ten := e.tenant(t)
	_, err = e.svc.Create(context.Background(), ten, []byte(`{"agent_name": "v", "webhook_url": "https://dns-down.example.com"}`))
	if fe := wantKind(t, err, errs.KindUnavailable); !strings.Contains(fe.Detail, "webhook_url") {
		t.Errorf("detail %q", fe.Detail)
	}
	if e.count(t, ten) != 0 {
		t.Error("written")
	}
	// Each distinct URL is checked once.
	e.guard.calls.Store(0)
	e.create(t, e.tenant(t), `{"agent_name": "v", "webhook_url": "https://a.example.com",
		"functions": [{"name": "a", "url": "https://a.example.com"}, {"name": "b", "url": "https://b.example.com"}]}`)
	if n := e.guard.calls.Load(); n != 2 {
		t.Errorf("guard called %d times, want 2", n)
	}
}

// Several broken rules are reported together.
func TestValidationReportsAll(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, err := e.svc.Create(context.Background(), e.tenant(t), []byte(`{"status": "x", "language": "??", "interruption_sensitivity": 2,
		"functions": [{"name": "end_call", "url": "ftp://x"}]}`))
	fe := wantKind(t, err, errs.KindInvalid)
	for _, f := range []string{"agent_name", "status", "language", "interruption_sensitivity", "functions[0].name", "functions[0].url"} {
		if fe.Fields[f] == "" {
			t.Errorf("no message for %s: %v", f, fe.Fields)
		}
	}
}

func TestValidationAccepts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ten := e.tenant(t)
	cases := []struct{ name, body string }{
		{"name at limit", `{"agent_name": "` + strings.Repeat("é", maxNameLen) + `"}`},
		{"temperature bounds", `{"agent_name": "v", "llm": {"temperature": 0}, "response_engine": {"temperature": 0}}`},
		{"temperature 2", `{"agent_name": "v", "llm": {"temperature": 2}}`},
		{"sensitivity 0 and bounds", `{"agent_name": "v", "interruption_sensitivity": 0, "end_call_after_silence_ms": 1000, "max_call_duration_ms": 14400000}`},
		{"sensitivity 1", `{"agent_name": "v", "interruption_sensitivity": 1, "end_call_after_silence_ms": 600000, "max_call_duration_ms": 10000}`},
		{"voicemail bounds", `{"agent_name": "v", "enable_voicemail_detection": true, "voicemail_action": "hangup", "voicemail_detection_timeout_ms": 5000}`},
		{"transfer targets", `{"agent_name": "v", "transfer_destinations": ["+15550100", "tel:+442071234567", "sips:desk@pbx.example.com"]}`},
		{"languages", `{"agent_name": "v", "language": "zh-Hant-TW", "stt": {"language": "multi"}}`},
		{"all providers", `{"agent_name": "v", "llm": {"provider": "openai"}, "stt": {"provider": "openai"}, "tts": {"provider": "espeak"}}`},
		{"custom llm", `{"agent_name": "v", "response_engine": {"type": "custom-llm"}, "llm": {"base_url": "https://my-llm.example.com/v1"}}`},
		{"all methods", `{"agent_name": "v", "functions": [
			{"name": "g", "url": "https://x.example.com", "method": "GET"}, {"name": "p", "url": "https://x.example.com", "method": "put"},
			{"name": "pa", "url": "https://x.example.com", "method": "PATCH"}, {"name": "d", "url": "http://x.example.com:8080/a?b=c", "method": "DELETE"},
			{"name": "_x-1", "url": "https://x.example.com", "timeout_ms": 30000}]}`},
		{"rich schema", fn(`"parameters": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
			"properties": {"when": {"type": "string", "format": "date-time"}, "n": {"type": "integer", "minimum": 1},
			"kind": {"enum": ["a", "b"]}, "addr": {"$ref": "#/$defs/addr"}}, "required": ["when"], "additionalProperties": false,
			"$defs": {"addr": {"type": "object", "properties": {"city": {"type": "string"}}}}}`)},
		{"draft-07 schema", fn(`"parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": {"a": {"type": "string"}}}`)},
		{"analysis types", `{"agent_name": "v", "post_call_analysis": [{"name": "a", "type": "string"}, {"name": "b", "type": "number"},
			{"name": "c", "type": "integer"}, {"name": "d", "type": "boolean"}, {"name": "e", "type": "enum", "choices": ["x", "y"]}]}`},
		{"max functions", `{"agent_name": "v", "functions": [` + func() string {
			s := make([]string, maxFunctions)
			for i := range s {
				s[i] = fmt.Sprintf(`{"name": "f%d", "url": "https://x.example.com"}`, i)
			}
			return strings.Join(s, ",")
		}() + `]}`},
		{"unknown fields ignored", `{"agent_name": "v", "future_setting": {"x": 1}, "llm": {"top_p": 0.5}}`},
		// SDKs send "" for unset strings: it means the default, like absence.
		{"empty strings", `{"agent_name": "v", "language": "", "status": "", "response_engine": {"type": ""}, "llm": {"provider": ""}}`},
		{"null everything", `{"agent_name": "v", "language": null, "llm": null, "functions": null, "status": null}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			a, err := e.svc.Create(context.Background(), ten, []byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.svc.Get(context.Background(), ten, a.ID); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Canonical forms are stored.
	a := e.create(t, ten, `{"agent_name": "v", "language": "ZH-hant-tw", "functions": [{"name": "p", "url": " https://x.example.com ", "method": "put"}]}`)
	if a.Language != "zh-Hant-TW" || a.Functions[0].Method != "PUT" || a.Functions[0].URL != "https://x.example.com" {
		t.Errorf("not canonical: %s %s %q", a.Language, a.Functions[0].Method, a.Functions[0].URL)
	}
	// Unknown fields are not stored.
	a = e.create(t, ten, `{"agent_name": "v", "future_setting": 1, "llm": {"top_p": 0.5}}`)
	if spec := e.rawSpec(t, a.ID); strings.Contains(spec, "future_setting") || strings.Contains(spec, "top_p") {
		t.Errorf("unknown fields stored: %s", spec)
	}
}

func TestBadRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ten := e.tenant(t)
	cases := []struct {
		name, body, code, field string
	}{
		{"empty", ``, "invalid_json", ""},
		{"syntax", `{"agent_name": }`, "invalid_json", ""},
		{"truncated", `{"agent_name": "x"`, "invalid_json", ""},
		{"trailing garbage", `{"agent_name": "x"} {}`, "invalid_json", ""},
		{"array", `[{"agent_name": "x"}]`, "invalid_json", ""},
		{"string", `"agent"`, "invalid_json", ""},
		{"null", `null`, "invalid_json", ""},
		{"name number", `{"agent_name": 5}`, "invalid_type", "agent_name"},
		{"temperature string", `{"agent_name": "x", "llm": {"temperature": "hot"}}`, "invalid_type", "llm.temperature"},
		{"alias temperature string", `{"agent_name": "x", "response_engine": {"temperature": "hot"}}`, "invalid_type", "response_engine.temperature"},
		{"flat system_prompt number", `{"agent_name": "x", "system_prompt": 1}`, "invalid_type", "system_prompt"},
		{"voice_id object", `{"agent_name": "x", "voice_id": {}}`, "invalid_type", "voice_id"},
		{"sensitivity string", `{"agent_name": "x", "interruption_sensitivity": "0.5"}`, "invalid_type", "interruption_sensitivity"},
		{"silence float", `{"agent_name": "x", "end_call_after_silence_ms": 1000.5}`, "invalid_type", "end_call_after_silence_ms"},
		{"functions object", `{"agent_name": "x", "functions": {}}`, "invalid_type", "functions"},
		{"function timeout string", `{"agent_name": "x", "functions": [{"name": "a", "timeout_ms": "10"}]}`, "invalid_type", "functions.timeout_ms"},
		{"header value number", `{"agent_name": "x", "functions": [{"name": "a", "headers": {"X-A": 1}}]}`, "invalid_type", "functions.headers"},
		{"kb ids string", `{"agent_name": "x", "knowledge_base_ids": "kb_1"}`, "invalid_type", "knowledge_base_ids"},
		{"kb id number", `{"agent_name": "x", "knowledge_base_ids": [1]}`, "invalid_type", "knowledge_base_ids"},
		{"llm string", `{"agent_name": "x", "llm": "openai"}`, "invalid_type", "llm"},
		{"api key number", `{"agent_name": "x", "tts": {"api_key": 123}}`, "invalid_type", "tts.api_key"},
		{"status bool", `{"agent_name": "x", "status": true}`, "invalid_type", "status"},
		{"choices string", `{"agent_name": "x", "post_call_analysis": [{"name": "a", "type": "enum", "choices": "a,b"}]}`, "invalid_type", "post_call_analysis.choices"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := e.svc.Create(context.Background(), ten, []byte(c.body))
			fe := wantKind(t, err, errs.KindBadRequest)
			if fe.Code != c.code {
				t.Errorf("code %q, want %q (%v)", fe.Code, c.code, fe)
			}
			if c.field != "" && fe.Fields[c.field] == "" {
				t.Errorf("fields %v, want %q", fe.Fields, c.field)
			}
		})
	}
	if n := e.count(t, ten); n != 0 {
		t.Errorf("%d rows written", n)
	}
	// The message names the expected type.
	_, err := e.svc.Create(context.Background(), ten, []byte(`{"agent_name": "x", "llm": {"temperature": "hot"}}`))
	if got := wantKind(t, err, errs.KindBadRequest).Fields["llm.temperature"]; got != "must be a number" {
		t.Errorf("message %q", got)
	}
}

func TestAliases(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ten := e.tenant(t)
	cases := []struct {
		name, body string
		check      func(a Agent) bool
	}{
		{"flat system_prompt", `{"agent_name": "v", "system_prompt": "flat"}`,
			func(a Agent) bool { return a.ResponseEngine.SystemPrompt == "flat" }},
		{"flat and nested agree", `{"agent_name": "v", "system_prompt": "same", "response_engine": {"system_prompt": "same"}}`,
			func(a Agent) bool { return a.ResponseEngine.SystemPrompt == "same" }},
		{"llm_model sets llm.model", `{"agent_name": "v", "response_engine": {"llm_model": "gpt-4o"}}`,
			func(a Agent) bool { return a.LLM.Model == "gpt-4o" && a.ResponseEngine.LLMModel == "gpt-4o" }},
		{"llm.model shows as llm_model", `{"agent_name": "v", "llm": {"model": "gpt-4o"}}`,
			func(a Agent) bool { return a.ResponseEngine.LLMModel == "gpt-4o" }},
		{"temperature alias", `{"agent_name": "v", "response_engine": {"temperature": 0.9}}`,
			func(a Agent) bool { return *a.LLM.Temperature == 0.9 && *a.ResponseEngine.Temperature == 0.9 }},
		{"temperatures agree numerically", `{"agent_name": "v", "response_engine": {"temperature": 0.50}, "llm": {"temperature": 0.5}}`,
			func(a Agent) bool { return *a.LLM.Temperature == 0.5 }},
		{"top-level voice_id", `{"agent_name": "v", "voice_id": "alloy"}`,
			func(a Agent) bool { return a.TTS.Voice == "alloy" && a.VoiceID == "alloy" }},
		{"tts.voice_id", `{"agent_name": "v", "tts": {"voice_id": "nova", "provider": "openai"}}`,
			func(a Agent) bool { return a.TTS.Voice == "nova" && a.VoiceID == "nova" && a.TTS.Provider == "openai" }},
		{"tts.voice shows as voice_id", `{"agent_name": "v", "tts": {"voice": "echo"}}`,
			func(a Agent) bool { return a.VoiceID == "echo" }},
		{"all three voice names agree", `{"agent_name": "v", "voice_id": "x", "tts": {"voice_id": "x", "voice": "x"}}`,
			func(a Agent) bool { return a.VoiceID == "x" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			a := e.create(t, ten, c.body)
			if !c.check(a) {
				t.Errorf("%s", mustJSON(t, a))
			}
			// Aliases are resolved, not stored.
			spec := e.rawSpec(t, a.ID)
			for _, alias := range []string{`"voice_id"`, `"llm_model"`} {
				if strings.Contains(spec, alias) {
					t.Errorf("spec stores %s: %s", alias, spec)
				}
			}
			var d map[string]any
			json.Unmarshal([]byte(spec), &d)
			if _, ok := d["system_prompt"]; ok {
				t.Errorf("spec stores flat system_prompt")
			}
		})
	}
}
