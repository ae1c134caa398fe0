package calls

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/parleyhq/parley/agents"
	"github.com/parleyhq/parley/knowledge"
	"github.com/parleyhq/parley/voice"
	"github.com/parleyhq/parley/voice/livekit"
	"github.com/parleyhq/parley/voice/livekit/dispatch"
	"github.com/parleyhq/parley/voice/llm"
	"github.com/parleyhq/parley/voice/stt"
	"github.com/parleyhq/parley/voice/tts"
)

// ProviderDefaults are the server's providers, used where an agent leaves a provider
// field empty. With no OpenAI-compatible endpoint configured at all, speech falls back
// to espeak-ng, which needs no account: enough to hear an agent, not to hold a real
// conversation (that needs an LLM and a recogniser).
type ProviderDefaults struct {
	// OpenAIBaseURL and OpenAIAPIKey are the default OpenAI-compatible endpoint (OpenAI,
	// Groq, Ollama, vLLM, speaches…) of all three stages. Empty base URL: OpenAI's.
	OpenAIBaseURL, OpenAIAPIKey string
	// LLMModel, STTModel, TTSModel and TTSVoice: empty selects each adapter's default
	// (gpt-4o-mini, whisper-1, tts-1 and alloy).
	LLMModel, STTModel, TTSModel, TTSVoice string
	// TTSProvider is "openai", "elevenlabs" or "espeak". Empty: openai when an OpenAI
	// key or base URL is configured, espeak otherwise.
	TTSProvider string
	// DeepgramAPIKey and ElevenLabsAPIKey are used by agents that pick those providers
	// without a key of their own.
	DeepgramAPIKey, ElevenLabsAPIKey string
	// EspeakFallback puts espeak-ng behind every hosted voice: if the voice fails or
	// is slow to start, the caller hears a robotic voice rather than silence.
	EspeakFallback bool
}

// Engine turns an agent definition into a voice session configuration: providers built
// from the agent's settings over the server's defaults, knowledge search bound to the
// agent's tenant and knowledge bases, tools through the SSRF-guarded client.
type Engine struct {
	Agents    *agents.Service
	Knowledge *knowledge.Service // nil: agents get no knowledge lookup
	Defaults  ProviderDefaults
	// HTTPClient carries provider and tool requests: the SSRF-guarded client, since
	// base URLs and tool URLs are user-configured.
	HTTPClient *http.Client
	Metrics    *voice.Metrics
	Logger     *slog.Logger
}

// SessionConfig builds the engine configuration for a call of agent agentID in tenant
// tenantID. Output, OutputRate and Events are left for the transport.
func (e *Engine) SessionConfig(ctx context.Context, tenantID, agentID, callID string, vars map[string]string) (voice.Config, error) {
	a, err := e.Agents.Resolve(ctx, tenantID, agentID)
	if err != nil {
		return voice.Config{}, err
	}
	if a.Status == "inactive" {
		return voice.Config{}, fmt.Errorf("calls: agent %s is inactive", agentID)
	}
	cfg := voice.Config{
		CallID:     callID,
		Agent:      VoiceAgent(a),
		Variables:  vars,
		ToolClient: e.HTTPClient,
		Metrics:    e.Metrics,
		Logger:     e.logger().With("call_id", callID, "agent_id", agentID),
	}
	if cfg.LLM, err = e.llm(a); err != nil {
		return voice.Config{}, err
	}
	if cfg.STT, err = e.stt(a); err != nil {
		return voice.Config{}, err
	}
	if cfg.TTS, err = e.tts(a); err != nil {
		return voice.Config{}, err
	}
	if _, ok := cfg.TTS.(*tts.Espeak); ok && a.TTS.Provider != "espeak" {
		// The server's keyless default voice: a hosted voice name ("alloy") means
		// nothing to espeak-ng, which picks its voice from the language instead.
		cfg.Agent.Voice = ""
	}
	if e.Knowledge != nil && len(a.KnowledgeBaseIDs) > 0 {
		kbs := append([]string(nil), a.KnowledgeBaseIDs...)
		svc := e.Knowledge
		cfg.Knowledge = voice.KnowledgeFunc(func(ctx context.Context, q string, k int) ([]voice.Passage, error) {
			res, err := svc.Search(ctx, tenantID, kbs, q, k)
			if err != nil {
				return nil, err
			}
			out := make([]voice.Passage, len(res))
			for i, r := range res {
				out[i] = voice.Passage{Text: r.Text, Source: r.SourceName, Score: r.Score}
			}
			return out, nil
		})
	}
	return cfg, nil
}

func (e *Engine) logger() *slog.Logger {
	if e.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Logger
}

// VoiceAgent is the engine's view of an agent definition.
func VoiceAgent(a agents.Agent) voice.Agent {
	va := voice.Agent{
		Name:                    a.Name,
		SystemPrompt:            a.ResponseEngine.SystemPrompt,
		BeginMessage:            a.BeginMessage,
		Language:                a.Language,
		Voice:                   a.TTS.Voice,
		LLMModel:                a.LLM.Model,
		Temperature:             a.LLM.Temperature,
		InterruptionSensitivity: a.InterruptionSensitivity,
		EndCallAfterSilenceMS:   a.EndCallAfterSilenceMS,
		MaxCallDurationMS:       a.MaxCallDurationMS,
		TransferDestinations:    append([]string(nil), a.TransferDestinations...),
		// Used only on calls whose transport sets voice.Config.DetectVoicemail
		// (outbound phone calls).
		Voicemail: voice.VoicemailConfig{
			Enabled: a.EnableVoicemailDetection,
			Action:  voice.VoicemailAction(a.VoicemailAction),
			Message: a.VoicemailMessage,
			Timeout: time.Duration(a.VoicemailDetectionTimeoutMS) * time.Millisecond,
		},
	}
	for _, f := range a.Functions {
		va.Functions = append(va.Functions, voice.Function{
			Name: f.Name, Description: f.Description, Parameters: f.Parameters,
			URL: f.URL, Method: f.Method, Headers: f.Headers, TimeoutMS: f.TimeoutMS,
		})
	}
	return va
}

// pick returns the first non-empty string.
func pick(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func (e *Engine) llm(a agents.Agent) (llm.Provider, error) {
	ep, err := e.llmEndpoint(a)
	if err != nil {
		return nil, err
	}
	return llm.NewOpenAI(llm.OpenAIConfig{BaseURL: ep.BaseURL, APIKey: ep.APIKey, Model: ep.Model, HTTPClient: e.HTTPClient})
}

func (e *Engine) stt(a agents.Agent) (stt.Provider, error) {
	lang := pick(a.STT.Language, a.Language)
	switch p := pick(a.STT.Provider, "openai"); p {
	case "openai":
		return stt.NewOpenAI(stt.OpenAIConfig{
			BaseURL:    pick(a.STT.BaseURL, e.Defaults.OpenAIBaseURL),
			APIKey:     pick(a.STT.APIKey.Value(), e.Defaults.OpenAIAPIKey),
			Model:      pick(a.STT.Model, e.Defaults.STTModel),
			Language:   lang,
			HTTPClient: e.HTTPClient,
		})
	case "deepgram":
		key := pick(a.STT.APIKey.Value(), e.Defaults.DeepgramAPIKey)
		if key == "" {
			return nil, errors.New("calls: the agent uses Deepgram but no Deepgram API key is set")
		}
		return stt.NewDeepgram(stt.DeepgramConfig{
			BaseURL: a.STT.BaseURL, APIKey: key, Model: a.STT.Model, Language: lang, HTTPClient: e.HTTPClient,
		})
	default:
		return nil, fmt.Errorf("calls: unknown STT provider %q", p)
	}
}

func (e *Engine) tts(a agents.Agent) (tts.Provider, error) {
	d := e.Defaults
	provider := pick(a.TTS.Provider, d.TTSProvider)
	if provider == "" {
		provider = "espeak"
		if d.OpenAIAPIKey != "" || d.OpenAIBaseURL != "" {
			provider = "openai"
		}
	}
	var primary tts.Provider
	var err error
	switch provider {
	case "openai":
		primary, err = tts.NewOpenAI(tts.OpenAIConfig{
			BaseURL:    pick(a.TTS.BaseURL, d.OpenAIBaseURL),
			APIKey:     pick(a.TTS.APIKey.Value(), d.OpenAIAPIKey),
			Model:      pick(a.TTS.Model, d.TTSModel),
			Voice:      pick(a.TTS.Voice, d.TTSVoice),
			HTTPClient: e.HTTPClient,
		})
	case "elevenlabs":
		key := pick(a.TTS.APIKey.Value(), d.ElevenLabsAPIKey)
		if key == "" {
			return nil, errors.New("calls: the agent uses ElevenLabs but no ElevenLabs API key is set")
		}
		primary, err = tts.NewElevenLabs(tts.ElevenLabsConfig{
			BaseURL: a.TTS.BaseURL, APIKey: key, VoiceID: a.TTS.Voice, Model: a.TTS.Model, HTTPClient: e.HTTPClient,
		})
	case "espeak":
		return tts.NewEspeak(tts.EspeakConfig{})
	default:
		return nil, fmt.Errorf("calls: unknown TTS provider %q", provider)
	}
	if err != nil || !d.EspeakFallback {
		return primary, err
	}
	secondary, err := tts.NewEspeak(tts.EspeakConfig{})
	if err != nil {
		// espeak-ng missing: the hosted voice alone.
		e.logger().Warn("calls: espeak-ng unavailable as a fallback voice", "err", err)
		return primary, nil
	}
	return tts.WithFallback(primary, secondary, tts.FallbackConfig{})
}

// callVariables are the {{variables}} every call has, merged under the caller's own.
func callVariables(c time.Time, vars map[string]string) map[string]string {
	out := map[string]string{
		"current_time": c.UTC().Format(time.RFC1123),
		"current_date": c.UTC().Format("2006-01-02"),
	}
	for k, v := range vars {
		out[k] = v
	}
	return out
}

// Runner holds the calls LiveKit dispatches to this worker: it is the worker's
// dispatch.Handler. One job is one call: the room's dispatch metadata names the call,
// whose record says which tenant's agent to run.
type Runner struct {
	Calls  *Service
	Engine *Engine
	// CallerWait bounds the wait for the caller to join; see livekit.Config.
	CallerWait time.Duration
	// Lines routes inbound phone calls (the telephony service); nil: jobs for inbound
	// calls fail.
	Lines Lines
	// SIP transfers phone calls (transfer_call); nil: transfers fail and the call ends.
	SIP *SIP
	// Recordings records calls (both sides, mixed); nil: no recordings. (issue 6)
	Recordings *Recordings
	Logger     *slog.Logger
}

// lateSink forwards events to a sink set once the call has begun: the session needs
// its sink before it exists, the recorder needs the call's start.
type lateSink struct {
	mu   sync.Mutex
	sink voice.EventSink
}

func (l *lateSink) set(s voice.EventSink) {
	l.mu.Lock()
	l.sink = s
	l.mu.Unlock()
}

func (l *lateSink) HandleEvent(e voice.Event) {
	l.mu.Lock()
	s := l.sink
	l.mu.Unlock()
	if s != nil {
		s.HandleEvent(e)
	}
}

// HandleJob runs one dispatched call to its end and records it. It implements
// dispatch.Handler.
//
// A job names either a call (web and outbound calls: Parley created the record and the
// room) or a phone number (an inbound phone call: LiveKit SIP created the room from the
// number's dispatch rule, and the record is made here; see handleInbound).
func (r *Runner) HandleJob(ctx context.Context, job dispatch.Job) error {
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	meta, err := ParseDispatchMetadata(job.Metadata)
	if err != nil {
		return err
	}
	if meta.CallID == "" {
		return r.handleInbound(ctx, job, meta.PhoneNumber, log)
	}
	callID := meta.CallID
	log = log.With("call_id", callID, "room", job.Room.Name, "job_id", job.ID)
	// Writes after the call must land even when ctx ends (a terminated job, a worker
	// shutting down).
	bg := context.WithoutCancel(ctx)

	call, err := r.Calls.load(ctx, callID)
	if err != nil {
		return err
	}
	if !call.Live() {
		// Ended before the agent got here (POST /end on a registered call).
		log.Info("calls: dispatched call has already ended", "status", call.CallStatus)
		return nil
	}
	cfg, err := r.Engine.SessionConfig(ctx, call.TenantID, call.AgentID, callID, callVariables(time.Now(), CallVariables(call)))
	if err != nil {
		r.Calls.Fail(bg, callID, ReasonError)
		return err
	}
	// An outbound phone call may be answered by a machine: the agent listens first,
	// as its voicemail settings say (a no-op when detection is off).
	cfg.DetectVoicemail = call.Direction == DirectionOutbound
	return r.run(ctx, job, callRun{callID: callID, phone: call.Direction == DirectionOutbound, cfg: cfg}, log)
}

// CallVariables are the {{variables}} a call's metadata gives its prompt: the metadata's
// top-level strings, then its "variables" object (Call2Me's and Call24x7's field for
// them), whose entries win. Numbers and booleans in "variables" are written as JSON
// writes them, since an API client may well send {"age": 42}.
func CallVariables(c Call) map[string]string {
	vars := map[string]string{}
	for k, v := range c.Metadata {
		if s, ok := v.(string); ok {
			vars[k] = s
		}
	}
	if c.FromNumber != "" {
		vars["from_number"] = c.FromNumber
	}
	if c.ToNumber != "" {
		vars["to_number"] = c.ToNumber
	}
	if obj, ok := c.Metadata["variables"].(map[string]any); ok {
		for k, v := range obj {
			switch v := v.(type) {
			case string:
				vars[k] = v
			case float64, bool, json.Number:
				vars[k] = fmt.Sprint(v)
			}
		}
	}
	return vars
}

// callRun is one call for run.
type callRun struct {
	callID string
	// phone: the caller is a phone line, which LiveKit SIP puts in the room while it
	// still rings; the conversation waits until it is answered (sip.callStatus active).
	phone bool
	// answered, for an inbound call, creates the record once the line is answered;
	// until then there is no record to fail.
	// It returns the call's {{variables}}.
	answered func(livekit.SIPCaller) (map[string]string, error)
	cfg      voice.Config
}

// phoneWait bounds the wait for a phone line to be answered: an outbound call rings for
// at most SIPConfig.RingingTimeout (3 minutes at most), and the dial job closes the
// room as soon as it knows the call was not answered, which ends the wait sooner.
const phoneWait = 3 * time.Minute

// run joins the room, waits for the caller, runs the conversation and records it.
func (r *Runner) run(ctx context.Context, job dispatch.Job, cr callRun, log *slog.Logger) error {
	bg := context.WithoutCancel(ctx)
	callID, cfg := cr.callID, cr.cfg
	recorded := cr.answered == nil // is there a record to fail?
	sink := &lateSink{}
	var rec *Recorder
	recording := r.prepareRecording(callID, log) // recordings: nil when not configured
	defer recording.Discard()                    // recordings: a no-op once stored
	room, err := livekit.Join(ctx, livekit.Config{
		URL: job.URL, Token: job.Token, CallerWait: r.CallerWait, Logger: log,
		OnCaller: func(identity, kind string) error {
			now := time.Now()
			if _, err := r.Calls.Begin(ctx, callID, now); err != nil {
				return err
			}
			rec = r.Calls.NewRecorder(callID, now)
			sink.set(rec)
			r.beginRecording(ctx, recording, callID, now, log) // recordings
			log.Info("calls: call started", "caller", identity, "caller_kind", kind)
			return nil
		},
	})
	if err != nil {
		if recorded {
			r.Calls.Fail(bg, callID, ReasonLiveKit)
		} else {
			r.closeRoom(bg, job.Room.Name, log)
		}
		return err
	}
	defer room.Close()
	if cr.phone {
		wait := r.CallerWait
		if wait <= 0 {
			wait = time.Minute
		}
		if recorded {
			wait += phoneWait
		}
		line, err := room.WaitSIPActive(ctx, wait)
		if err != nil {
			// Not answered: an outbound call's dial job records why (busy, no answer)
			// and closes the room; an inbound caller hung up while it rang, before
			// there was a record. Either way there is nothing to run.
			log.Info("calls: the phone line was not answered", "err", err)
			if !recorded {
				r.closeRoom(bg, job.Room.Name, log)
			}
			return nil
		}
		if cr.answered != nil {
			vars, err := cr.answered(line)
			if err != nil {
				r.closeRoom(bg, job.Room.Name, log)
				return err
			}
			cfg.Variables = vars
			recorded = true
		}
	}
	transfer := &transferSink{next: sink}
	cfg.Output, cfg.OutputRate = room.Output(), room.OutputRate()
	if recording != nil { // recordings: the session taps both sides
		cfg.Tap = recording
	}
	cfg.Events = room.Events(transfer)
	sess, err := voice.NewSession(cfg)
	if err != nil {
		r.Calls.Fail(bg, callID, ReasonError)
		return err
	}
	res, runErr := room.Run(ctx, sess)
	log.Info("calls: call ended", "outcome", res.Outcome, "end_reason", res.EndReason, "err", runErr)

	if rec == nil {
		// The conversation never began.
		reason := ReasonUserNotJoined
		if runErr != nil {
			reason = ReasonError
		}
		if err := r.Calls.Fail(bg, callID, reason); err != nil && !errors.Is(err, ErrInProgress) {
			log.Warn("calls: fail call", "err", err)
		}
		if cr.phone {
			r.closeRoom(bg, job.Room.Name, log)
		}
		return runErr
	}
	fin := Finish{Status: StatusCompleted}
	switch res.Outcome {
	case livekit.CallerLeft:
		fin.Reason = ReasonFor(res.EndReason, true)
	case livekit.RoomClosed:
		fin.Reason = ReasonAPIEnded
	case livekit.SessionEnded:
		fin.Reason = ReasonFor(res.EndReason, false)
	case livekit.Disconnected:
		fin.Reason = ReasonLiveKit
	default: // Cancelled: the job was terminated or the worker stopped
		fin.Reason = ReasonAPIEnded
	}
	if res.EndReason == voice.EndError || runErr != nil {
		fin.Status = StatusFailed
		fin.Reason = ReasonError
	}
	if res.Outcome == livekit.SessionEnded && res.EndReason == voice.EndTransfer {
		if err := r.transfer(bg, job.Room.Name, res, transfer.destination()); err != nil {
			log.Warn("calls: transfer", "err", err)
			fin.Reason = ReasonTransferFailed
		} else {
			log.Info("calls: transferred", "to", transfer.destination())
		}
	}
	finishRecording(bg, recording, log) // recordings: stored before the call completes
	if err := rec.Close(bg, fin.voicemail(res.EndReason)); err != nil {
		log.Warn("calls: finish call", "err", err)
	}
	if res.Outcome == livekit.SessionEnded {
		// The agent hung up: close the room so the caller is disconnected too. The
		// agent leaves first, while its connection is up: the SDK's text-stream writer
		// (captions) waits, holding a lock that leaving needs, for its data channel to
		// drain, which a connection cut by the room's deletion never does.
		room.Close()
		r.closeRoom(bg, job.Room.Name, log)
	}
	return runErr
}

// closeRoom deletes a call's room (disconnecting everyone, a phone line included: the
// bridge hangs up, or rejects a call it has not answered).
func (r *Runner) closeRoom(ctx context.Context, name string, log *slog.Logger) {
	if r.Calls.cfg.Rooms == nil {
		return
	}
	if err := r.Calls.cfg.Rooms.DeleteRoom(ctx, name); err != nil {
		log.Warn("calls: close room", "err", err)
	}
}

// transferTimeout bounds a transfer: the REFER's answer, then the bridge waiting for
// the transfer target to ring and answer (LiveKit's default 30 s), and a margin.
const transferTimeout = 45 * time.Second

// transfer hands the phone line to the destination the model chose.
func (r *Runner) transfer(ctx context.Context, room string, res livekit.Result, dest string) error {
	switch {
	case dest == "":
		return errors.New("calls: the session ended in a transfer with no destination")
	case res.CallerKind != "sip":
		return fmt.Errorf("calls: a %s caller cannot be transferred", res.CallerKind)
	case r.SIP == nil:
		return errors.New("calls: SIP is not configured on this worker")
	}
	ctx, cancel := context.WithTimeout(ctx, transferTimeout)
	defer cancel()
	return r.SIP.Transfer(ctx, room, res.Caller, dest)
}

// transferSink notes the destination of the session's Transfer event on its way to next.
type transferSink struct {
	next voice.EventSink
	mu   sync.Mutex
	dest string
}

func (t *transferSink) HandleEvent(e voice.Event) {
	if tr, ok := e.(*voice.Transfer); ok {
		t.mu.Lock()
		t.dest = tr.Destination
		t.mu.Unlock()
	}
	t.next.HandleEvent(e)
}

func (t *transferSink) destination() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.dest
}
