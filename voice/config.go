package voice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/llm"
	"github.com/parleyhq/parley/voice/stt"
	"github.com/parleyhq/parley/voice/tts"
	"github.com/parleyhq/parley/voice/vad"
)

// Agent is the engine's own view of an agent definition: what it says, how it listens
// and what it may do. It mirrors the fields of agents.Agent that a conversation needs
// (the calls package converts one into the other); the engine does not import agents.
type Agent struct {
	// Name is used in logs.
	Name string
	// SystemPrompt instructs the model. {{variable}} placeholders are filled from
	// Config.Variables; see Config.Variables for the syntax. The engine appends two
	// sentences telling the model its words are spoken (short sentences, no Markdown),
	// which the splitter and the voices depend on.
	SystemPrompt string
	// BeginMessage is what the agent says first ({{variables}} allowed); empty lets the
	// caller speak first.
	BeginMessage string
	// Language is a BCP-47 tag ("en-US"), passed to STT and TTS.
	Language string
	// Voice is the TTS voice ID.
	Voice string
	// LLMModel overrides the LLM provider's default model when set.
	LLMModel string
	// Temperature of the model; nil keeps the provider's default.
	Temperature *float64
	// MaxTokens bounds one model answer; 0 leaves it to the provider. Spoken answers are
	// short, and a bound keeps a runaway answer from talking for minutes.
	MaxTokens int
	// Functions are the HTTP tools the model may call.
	Functions []Function
	// InterruptionSensitivity in [0, 1]: 0 never lets the caller barge in, 1 stops the
	// agent at the first sound of speech. See interruptionThresholds for the mapping.
	InterruptionSensitivity float64
	// EndpointingMinMS and EndpointingMaxMS bound the wait, after the caller stops
	// speaking, before the agent takes its turn: the minimum after a complete sentence,
	// the maximum after a trailing "and", "um" or comma. 0 selects the defaults (400
	// and 1600 ms, see defaultEndpointingMin).
	EndpointingMinMS int64
	EndpointingMaxMS int64
	// EndCallAfterSilenceMS: after this much silence from the caller (with the agent
	// silent too) the agent reprompts once, and after as much again it hangs up. 0
	// selects the default, 30 s (agents' default); negative disables it.
	EndCallAfterSilenceMS int64
	// MaxCallDurationMS hangs up after this long, whatever is happening. 0 selects the
	// default, 1 h (agents' default); negative disables it.
	MaxCallDurationMS int64
	// RepromptMessage is said after EndCallAfterSilenceMS of silence. Default "Are you
	// still there?".
	RepromptMessage string
	// FillerPhrases are said, in turn, when a tool call takes longer than the filler
	// delay. Default: "One moment, please.", "Let me check that for you.".
	FillerPhrases []string
	// TransferDestinations are the numbers or SIP URIs the model may transfer the call
	// to with the built-in transfer_call tool. Empty: the tool is not offered. The list
	// is an allow-list: a model talked into dialling elsewhere is refused.
	TransferDestinations []string
	// Voicemail is what to do when an answering machine picks up an outbound call. It
	// only applies when the transport sets Config.DetectVoicemail (outbound phone
	// calls); see VoicemailConfig.
	Voicemail VoicemailConfig
}

// Function is an HTTP tool the model may call. Mirrors agents.Function.
type Function struct {
	Name        string
	Description string
	// Parameters is a JSON Schema of type object describing the arguments.
	Parameters json.RawMessage
	// URL receives the call: the arguments as a JSON body, or as the query string for GET.
	URL string
	// Method is GET, POST, PUT, PATCH or DELETE. Default POST.
	Method string
	// Headers are sent with every call (API keys, for instance).
	Headers map[string]string
	// TimeoutMS bounds one call. 0 selects the default, 10 s.
	TimeoutMS int64
}

// Knowledge looks up passages relevant to what the caller said. The caller adapts
// knowledge.Service.Search (tenant and knowledge bases bound in) to it. Search must
// honour ctx: the engine gives it a time budget and cancels it when the budget is spent.
type Knowledge interface {
	Search(ctx context.Context, query string, k int) ([]Passage, error)
}

// KnowledgeFunc adapts a function to Knowledge.
type KnowledgeFunc func(ctx context.Context, query string, k int) ([]Passage, error)

// Search implements Knowledge.
func (f KnowledgeFunc) Search(ctx context.Context, query string, k int) ([]Passage, error) {
	return f(ctx, query, k)
}

// Passage is one retrieved piece of knowledge.
type Passage struct {
	Text string
	// Source names where it came from (a document title), shown to the model.
	Source string
	Score  float64
}

// Config configures a Session. Zero values select the documented defaults.
type Config struct {
	// CallID identifies the call in logs and events.
	CallID string
	Agent  Agent
	// Variables fill {{name}} placeholders in the system prompt and begin message.
	// Names are letters, digits, '_', '-' and '.'; spaces inside the braces are
	// ignored. {{name|fallback}} uses fallback when the variable is missing. A missing
	// variable without a fallback becomes the empty string (never the raw
	// "{{name}}", which a model would read out), and is listed by
	// Session.MissingVariables and logged.
	Variables map[string]string

	// STT, LLM and TTS are the providers. Required. Wrap them with the packages'
	// WithFallback to survive an outage.
	STT stt.Provider
	LLM llm.Provider
	TTS tts.Provider
	// Knowledge, if set, is searched at the end of every caller turn.
	Knowledge Knowledge
	// KnowledgeTopK is how many passages to ask for. Default 4.
	KnowledgeTopK int
	// KnowledgeBudget bounds the wait for a lookup. The lookup runs while the prompt
	// is assembled and the model request prepared; if it has not answered by then plus
	// this budget, the model is asked without it. Hybrid search over pgvector answers
	// in 20-80 ms; 250 ms means something is wrong, and every millisecond here adds to
	// the caller's wait. Default 250 ms.
	KnowledgeBudget time.Duration

	// Events receives transcripts, latency figures, tool calls, transfers and the end
	// of the call. Optional.
	Events EventSink
	// ToolClient carries tool calls. The caller passes the SSRF-guarded client.
	// Required when the agent has functions.
	ToolClient *http.Client

	// Output receives the agent's audio: 20 ms frames at OutputRate, paced in real
	// time. Its WriteFrame is called from the engine's goroutines, never concurrently,
	// and must return promptly (encode and queue; never wait on the network): the next
	// frame is due 20 ms later. Required.
	//
	// If Output also implements audio.Flusher (a WebRTC track with a send queue, say),
	// the engine calls Flush whenever it stops the agent with audio still to play: the
	// tentative pause at the first sign of caller speech, a barge-in, the end of the
	// call. Flush comes after the last WriteFrame has returned and before the next one
	// begins, never concurrently with it, so nothing written before the stop is sent
	// after it. A pause that the caller's speech does not confirm resumes from where the
	// engine paused: what Flush dropped (the frame or two the queue held) is not
	// written again.
	Output audio.Writer
	// OutputRate of the frames written to Output. Default 48000 (WebRTC's Opus rate);
	// Twilio and SIP want 8000.
	OutputRate int
	// PlayoutBuffer is how much synthesised audio the engine holds ahead of playback.
	// TTS runs faster than real time; the buffer lets the next sentence be synthesised
	// while the current one plays, hiding its time-to-first-byte (0.2 to 0.6 s for
	// hosted voices), and bounds memory: 2 s at 48 kHz is 192 KB. Default 2 s.
	PlayoutBuffer time.Duration

	// VAD tunes the voice activity detector. SampleRate and FrameDuration are fixed by
	// the engine (16 kHz, 20 ms); zero fields select the vad package's defaults.
	VAD vad.Config
	// MaxToolRounds bounds model → tool → model round trips in one turn, so a model
	// stuck calling tools cannot keep the caller waiting for ever. Default 4.
	MaxToolRounds int
	// ToolFillerDelay is how long a tool may run before a filler phrase is spoken.
	// Conversation analysis finds the gap between turns is about 200 ms across
	// languages and that a silence past about 700 ms reads as trouble (a dispreferred
	// answer, or a lost line); tools under that answer within a natural pause, slower
	// ones get a "One moment, please." Default 700 ms.
	ToolFillerDelay time.Duration
	// STTFinalTimeout bounds the wait for the transcript after the end of the caller's
	// turn has been decided. Default 5 s.
	STTFinalTimeout time.Duration

	// DTMFOut offers the model the built-in send_dtmf tool, which emits SendDTMF
	// events. Transports that can press keys on the line set it (LiveKit with a SIP
	// caller); a browser or a Twilio Media Stream cannot, and leaves it false. See
	// Session.SetDTMFOut for a transport that learns it only once the caller is known.
	DTMFOut bool
	// DTMFInterDigit is how long after the caller's last key press their entry is
	// considered complete (a '#' completes it at once); see Session.DTMF. Default 2 s.
	DTMFInterDigit time.Duration
	// DetectVoicemail runs voicemail detection (Agent.Voicemail, when Enabled) at the
	// start of the call: the agent listens before it speaks. Set it for outbound phone
	// calls only: on an inbound call the caller talks to the agent, never a machine.
	DetectVoicemail bool

	// Tap, if set, gets a copy of the call's audio in both directions (for a
	// recording); see AudioTap.
	Tap AudioTap

	// Clock is the engine's time source, for every timer and every ledger timestamp.
	// Default: the system clock. Tests may inject a fake.
	Clock audio.Clock
	// Metrics, if set, receives latency histograms. One Metrics serves many sessions.
	Metrics *Metrics
	// Logger; default discards.
	Logger *slog.Logger
}

// Defaults of Agent and Config; see the fields for why.
const (
	// defaultEndpointingMin: after a complete sentence the caller is probably done;
	// 400 ms is about the longest natural gap between two turns, so the agent answers
	// as promptly as a person would, while the VAD's own 400 ms hangover already
	// bridges pauses between words.
	defaultEndpointingMin = 400 * time.Millisecond
	// defaultEndpointingMax: after "and", "um" or a comma the caller is mid-thought.
	// Thinking pauses run to a second or more; 1.6 s lets most of them pass, and
	// beyond it an agent that waits feels unresponsive.
	defaultEndpointingMax = 1600 * time.Millisecond
	// minEndpointing: below one 20 ms frame the bound would mean nothing.
	minEndpointing = 20 * time.Millisecond
	// maxEndpointing: a wait over 5 s is not turn-taking any more.
	maxEndpointing = 5 * time.Second

	defaultEndCallAfterSilence = 30 * time.Second
	defaultMaxCallDuration     = time.Hour
	defaultReprompt            = "Are you still there?"
	defaultToolTimeout         = 10 * time.Second
	// maxToolTimeout: a caller will not wait two minutes for a tool.
	maxToolTimeout = 2 * time.Minute

	defaultOutputRate      = 48000
	defaultPlayoutBuffer   = 2 * time.Second
	defaultKnowledgeTopK   = 4
	defaultKnowledgeBudget = 250 * time.Millisecond
	defaultMaxToolRounds   = 4
	defaultToolFillerDelay = 700 * time.Millisecond
	defaultSTTFinalTimeout = 5 * time.Second
	// defaultDTMFInterDigit: people key a number they know at 3-5 digits a second and
	// one they read off a card at about one a second; phone menus (IVRs) wait 2-5 s
	// between digits before acting. 2 s lets a caller who reads an account number
	// finish it, while a single menu choice ("press 1") is answered within 2 s; '#'
	// ends an entry at once for a caller in a hurry.
	defaultDTMFInterDigit = 2 * time.Second
	// maxDTMFInterDigit: beyond 10 s the caller has moved on.
	maxDTMFInterDigit = 10 * time.Second

	// inputRate is the rate of the audio the VAD and STT see: 16 kHz is what both were
	// built for (telephone audio at 8 kHz is upsampled, WebRTC's 48 kHz downsampled).
	inputRate = 16000
	// frameDuration is the engine's frame, in both directions.
	frameDuration = 20 * time.Millisecond
)

var defaultFillers = []string{"One moment, please.", "Let me check that for you."}

// Built-in tool names.
const (
	ToolEndCall  = "end_call"
	ToolTransfer = "transfer_call"
	ToolSendDTMF = "send_dtmf"
)

var toolName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (c Config) withDefaults() Config {
	a := &c.Agent
	if a.EndpointingMinMS == 0 {
		a.EndpointingMinMS = defaultEndpointingMin.Milliseconds()
	}
	if a.EndpointingMaxMS == 0 {
		a.EndpointingMaxMS = max(defaultEndpointingMax.Milliseconds(), a.EndpointingMinMS)
	}
	if a.EndCallAfterSilenceMS == 0 {
		a.EndCallAfterSilenceMS = defaultEndCallAfterSilence.Milliseconds()
	}
	if a.MaxCallDurationMS == 0 {
		a.MaxCallDurationMS = defaultMaxCallDuration.Milliseconds()
	}
	if a.RepromptMessage == "" {
		a.RepromptMessage = defaultReprompt
	}
	if len(a.FillerPhrases) == 0 {
		a.FillerPhrases = defaultFillers
	}
	if c.OutputRate == 0 {
		c.OutputRate = defaultOutputRate
	}
	if c.PlayoutBuffer == 0 {
		c.PlayoutBuffer = defaultPlayoutBuffer
	}
	if c.KnowledgeTopK == 0 {
		c.KnowledgeTopK = defaultKnowledgeTopK
	}
	if c.KnowledgeBudget == 0 {
		c.KnowledgeBudget = defaultKnowledgeBudget
	}
	if c.MaxToolRounds == 0 {
		c.MaxToolRounds = defaultMaxToolRounds
	}
	if c.ToolFillerDelay == 0 {
		c.ToolFillerDelay = defaultToolFillerDelay
	}
	if c.STTFinalTimeout == 0 {
		c.STTFinalTimeout = defaultSTTFinalTimeout
	}
	if c.DTMFInterDigit == 0 {
		c.DTMFInterDigit = defaultDTMFInterDigit
	}
	a.Voicemail = a.Voicemail.withDefaults()
	c.VAD.SampleRate = inputRate
	c.VAD.FrameDuration = frameDuration
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf("voice: "+format, args...)) }
	if c.STT == nil || c.LLM == nil || c.TTS == nil {
		add("STT, LLM and TTS providers are required")
	}
	if c.Output == nil {
		add("an Output writer is required")
	}
	a := c.Agent
	if s := a.InterruptionSensitivity; !(s >= 0 && s <= 1) {
		add("interruption sensitivity %v is outside 0..1", s)
	}
	lo, hi := ms(a.EndpointingMinMS), ms(a.EndpointingMaxMS)
	if lo < minEndpointing || hi > maxEndpointing || lo > hi {
		add("endpointing bounds %v..%v: want %v <= min <= max <= %v", lo, hi, minEndpointing, maxEndpointing)
	}
	if a.Temperature != nil && (*a.Temperature < 0 || *a.Temperature > 2) {
		add("temperature %v is outside 0..2", *a.Temperature)
	}
	if a.MaxTokens < 0 {
		add("max tokens %d is negative", a.MaxTokens)
	}
	seen := map[string]bool{}
	for i, f := range a.Functions {
		if !toolName.MatchString(f.Name) {
			add("function %d: name %q: want 1-64 letters, digits, '_' or '-'", i, f.Name)
		}
		if seen[f.Name] {
			add("function %q is defined twice", f.Name)
		}
		seen[f.Name] = true
		if f.Name == ToolEndCall || f.Name == ToolTransfer || f.Name == ToolSendDTMF {
			add("function %q: the name is reserved for the built-in tool", f.Name)
		}
		u, err := url.Parse(f.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("function %q: URL %q: want an http or https URL", f.Name, f.URL)
		}
		switch strings.ToUpper(f.Method) {
		case "", http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		default:
			add("function %q: method %q: want GET, POST, PUT, PATCH or DELETE", f.Name, f.Method)
		}
		if len(f.Parameters) > 0 && !json.Valid(f.Parameters) {
			add("function %q: parameters are not valid JSON", f.Name)
		}
		if f.TimeoutMS < 0 || ms(f.TimeoutMS) > maxToolTimeout {
			add("function %q: timeout %d ms: want 0..%d", f.Name, f.TimeoutMS, maxToolTimeout.Milliseconds())
		}
	}
	if len(a.Functions) > 0 && c.ToolClient == nil {
		add("a ToolClient is required when the agent has functions")
	}
	for _, d := range a.TransferDestinations {
		if strings.TrimSpace(d) == "" {
			add("empty transfer destination")
		}
	}
	if c.OutputRate < 8000 || c.OutputRate > audio.MaxSampleRate ||
		int64(c.OutputRate)*int64(frameDuration)%int64(time.Second) != 0 {
		add("output rate %d Hz: want 8000 or more, with a whole number of samples in 20 ms", c.OutputRate)
	}
	if c.PlayoutBuffer < 100*time.Millisecond || c.PlayoutBuffer > time.Minute {
		add("playout buffer %v: want 100ms..1m", c.PlayoutBuffer)
	}
	if c.DTMFInterDigit < 0 || c.DTMFInterDigit > maxDTMFInterDigit {
		add("DTMF inter-digit timeout %v: want 0..%v", c.DTMFInterDigit, maxDTMFInterDigit)
	}
	if err := a.Voicemail.validate(); err != nil {
		add("%v", err)
	}
	if c.KnowledgeTopK < 1 || c.KnowledgeBudget < 0 || c.MaxToolRounds < 1 ||
		c.ToolFillerDelay < 0 || c.STTFinalTimeout <= 0 {
		add("knowledge top-k, max tool rounds and timeouts must be positive")
	}
	return errors.Join(errs...)
}

func ms(v int64) time.Duration { return time.Duration(v) * time.Millisecond }

// systemClock is audio's Clock on the real time of the machine.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) audio.Timer { return sysTimer{time.NewTimer(d)} }

type sysTimer struct{ t *time.Timer }

func (t sysTimer) C() <-chan time.Time        { return t.t.C }
func (t sysTimer) Stop() bool                 { return t.t.Stop() }
func (t sysTimer) Reset(d time.Duration) bool { return t.t.Reset(d) }
