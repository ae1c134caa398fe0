package agents

import (
	"encoding/json"
	"time"

	"github.com/parleyhq/parley/internal/errs"
)

// ErrNotFound is returned for an unknown agent and for another tenant's agent alike.
var ErrNotFound = errs.NotFound("agent_not_found", "Agent not found")

// Mask is what the API shows instead of a stored provider API key. Sending it back in a
// PATCH keeps the stored key.
const Mask = "********"

// Agent is an agent definition as the API shows it. Its JSON is the contract's agent
// object.
type Agent struct {
	ID     string `json:"agent_id"`
	Name   string `json:"agent_name"`
	Status string `json:"status"` // "active" or "inactive"
	// VoiceID mirrors TTS.Voice (the two names are aliases).
	VoiceID string `json:"voice_id"`
	// Language is a canonical BCP-47 tag, e.g. "en-US".
	Language       string         `json:"language"`
	ResponseEngine ResponseEngine `json:"response_engine"`
	// BeginMessage is what the agent says first; empty lets the caller speak first.
	BeginMessage string     `json:"begin_message"`
	LLM          LLMConfig  `json:"llm"`
	STT          STTConfig  `json:"stt"`
	TTS          TTSConfig  `json:"tts"`
	Functions    []Function `json:"functions"`
	// KnowledgeBaseIDs are knowledge bases of the same tenant the agent searches.
	KnowledgeBaseIDs []string `json:"knowledge_base_ids"`
	// WebhookURL receives the agent's call events.
	WebhookURL string `json:"webhook_url"`
	// InterruptionSensitivity in [0, 1]: 0 never lets the caller barge in, 1 stops
	// speaking at the faintest sound.
	InterruptionSensitivity float64 `json:"interruption_sensitivity"`
	// EndCallAfterSilenceMS hangs up after this much silence from the caller.
	EndCallAfterSilenceMS int64 `json:"end_call_after_silence_ms"`
	// MaxCallDurationMS hangs up after this long, whatever is happening.
	MaxCallDurationMS int64 `json:"max_call_duration_ms"`
	// PostCallAnalysis lists the fields extracted from the transcript when a call ends.
	PostCallAnalysis []AnalysisField `json:"post_call_analysis"`

	// RecordingEnabled records calls (both sides, mixed); off keeps no audio.
	RecordingEnabled bool `json:"recording_enabled"`
	// EnableVoicemailDetection listens first on outbound phone calls and tells an
	// answering machine from a person.
	EnableVoicemailDetection bool `json:"enable_voicemail_detection"`
	// VoicemailAction is what the agent does on reaching a machine: "leave_message"
	// (say VoicemailMessage after the greeting, then hang up) or "hangup".
	VoicemailAction string `json:"voicemail_action" jsonschema:"enum=hangup,enum=leave_message"`
	// VoicemailMessage is left on a machine ({{variables}} are filled in).
	VoicemailMessage string `json:"voicemail_message"`
	// VoicemailDetectionTimeoutMS bounds the listening: undecided by then, the callee
	// is taken for a person.
	VoicemailDetectionTimeoutMS int64 `json:"voicemail_detection_timeout_ms"`
	// TransferDestinations are the numbers (E.164) and SIP URIs (sip:, tel:) the agent
	// may transfer a phone call to with transfer_call; empty offers no transfer.
	TransferDestinations []string  `json:"transfer_destinations"`
	CreatedAt            time.Time `json:"created_at"`
	UpdatedAt            time.Time `json:"updated_at"`
}

// ResponseEngine is the agent's brain. LLMModel and Temperature mirror LLM.Model and
// LLM.Temperature (aliases kept for Call2Me SDKs).
type ResponseEngine struct {
	Type         string   `json:"type"` // "parley-llm" or "custom-llm"
	SystemPrompt string   `json:"system_prompt"`
	LLMModel     string   `json:"llm_model,omitempty"`
	Temperature  *float64 `json:"temperature,omitempty"`
}

// LLMConfig overrides the server's default LLM. Empty fields mean "the server default"
// (PARLEY_OPENAI_BASE_URL, PARLEY_OPENAI_API_KEY, …), resolved when a call starts.
type LLMConfig struct {
	Provider    string   `json:"provider,omitempty"` // "openai" (any OpenAI-compatible API)
	BaseURL     string   `json:"base_url,omitempty"`
	APIKey      Secret   `json:"api_key,omitzero"`
	Model       string   `json:"model,omitempty"`
	Temperature *float64 `json:"temperature,omitempty"` // nil: the provider's default
}

// STTConfig overrides the server's default speech-to-text.
type STTConfig struct {
	Provider string `json:"provider,omitempty"` // "openai" or "deepgram"
	BaseURL  string `json:"base_url,omitempty"`
	APIKey   Secret `json:"api_key,omitzero"`
	Model    string `json:"model,omitempty"`
	// Language the recogniser listens for; empty follows the agent's language.
	Language string `json:"language,omitempty"`
}

// TTSConfig overrides the server's default text-to-speech.
type TTSConfig struct {
	Provider string `json:"provider,omitempty"` // "openai", "elevenlabs" or "espeak"
	BaseURL  string `json:"base_url,omitempty"`
	APIKey   Secret `json:"api_key,omitzero"`
	Model    string `json:"model,omitempty"`
	Voice    string `json:"voice,omitempty"`
}

// Function is a tool the LLM may call during a conversation: Parley sends the
// arguments to URL and gives the response back to the model.
type Function struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// Parameters is a JSON Schema of type object describing the arguments.
	Parameters json.RawMessage   `json:"parameters"`
	URL        string            `json:"url"`
	Method     string            `json:"method"` // GET, POST, PUT, PATCH or DELETE
	Headers    map[string]string `json:"headers"`
	TimeoutMS  int64             `json:"timeout_ms"`
}

// AnalysisField is one value to extract from a finished call's transcript.
type AnalysisField struct {
	Name        string   `json:"name"`
	Type        string   `json:"type"` // string, number, integer, boolean or enum
	Description string   `json:"description"`
	Choices     []string `json:"choices,omitempty"` // enum only
}

// Secret is a write-only credential. It encodes to JSON as Mask when set and is omitted
// (omitzero) when not, and prints as Mask, so an Agent never leaks a key through
// encoding or logging, even one Resolve decrypted.
type Secret struct {
	set   bool
	value string
}

// IsSet reports whether a key is stored.
func (s Secret) IsSet() bool { return s.set }

// IsZero reports whether no key is stored (for omitzero).
func (s Secret) IsZero() bool { return !s.set }

// Value returns the plaintext key. It is empty unless the agent came from Resolve.
func (s Secret) Value() string { return s.value }

// String returns Mask or "", never the key.
func (s Secret) String() string {
	if s.set {
		return Mask
	}
	return ""
}

// MarshalJSON encodes Mask or "".
func (s Secret) MarshalJSON() ([]byte, error) {
	if s.set {
		return []byte(`"` + Mask + `"`), nil
	}
	return []byte(`""`), nil
}

// JSONSchemaAlias documents a Secret as a string in generated schemas (OpenAPI).
func (Secret) JSONSchemaAlias() any { return "" }

// UnmarshalJSON reads back what MarshalJSON wrote: any non-empty string means "set". A
// plaintext key is never kept this way.
func (s *Secret) UnmarshalJSON(b []byte) error {
	var v *string
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = Secret{set: v != nil && *v != ""}
	return nil
}
