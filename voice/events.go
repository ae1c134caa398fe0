package voice

import (
	"time"
)

// EventSink receives what happens in a session. HandleEvent is called from the session's
// control goroutine, one event at a time, in order; it must return quickly (hand slow
// work such as database writes to a queue), since the conversation waits for it.
type EventSink interface {
	HandleEvent(Event)
}

// EventSinkFunc adapts a function to EventSink.
type EventSinkFunc func(Event)

// HandleEvent implements EventSink.
func (f EventSinkFunc) HandleEvent(e Event) { f(e) }

// Event is one of *Transcript, *TurnLatency, *Interruption, *ToolCall, *Transfer,
// *SendDTMF, *VoicemailDetection and *CallEnded.
type Event interface{ event() }

// Speaker says who spoke.
type Speaker string

const (
	SpeakerUser  Speaker = "user"
	SpeakerAgent Speaker = "agent"
)

// Transcript is text the caller or the agent said.
//
// User text comes as interim hypotheses (Final false) while the recogniser listens, then
// as finals. Agent text comes once per sentence, when its audio has finished playing
// (or was cut off: Interrupted, and Text holds only the words that were played).
type Transcript struct {
	Speaker Speaker
	Turn    int
	Text    string
	Final   bool
	// Interrupted: the caller barged in while this agent sentence played.
	Interrupted bool
	// Filler: an agent phrase the engine said while a tool ran (not in the LLM history).
	Filler bool
	// Backchannel: caller speech over the agent that did not interrupt it ("mm-hm", a
	// cough); it is not part of any user turn.
	Backchannel bool
	// Start and End: for the agent, when the sentence's audio started and stopped
	// playing; for the caller, when the speech began and (for finals) ended, as the
	// VAD heard it. Times are on the session's clock.
	Start, End time.Time
}

// TurnLatency is the latency ledger of one reply: timestamps on the session's clock
// (monotonic) for each stage. A zero time means the stage did not happen (no
// transcript needed, the reply was interrupted first, a scripted reply has no LLM).
type TurnLatency struct {
	Turn int
	// SpeechEnded is when the caller's words actually stopped (the VAD's speech end,
	// not the moment it decided so).
	SpeechEnded time.Time
	// EndOfTurn is when the engine decided the caller's turn was over.
	EndOfTurn time.Time
	// EndpointingDelay is the delay the adaptive endpointer chose for this turn.
	EndpointingDelay time.Duration
	// STTFinal is when the last final transcript of the turn arrived.
	STTFinal time.Time
	// LLMRequest is when the model was asked (after the transcript and the knowledge
	// lookup), LLMFirstToken when its first text or tool call arrived.
	LLMRequest    time.Time
	LLMFirstToken time.Time
	// FirstSentence is when the first piece of text was sent to TTS, TTSFirstByte when
	// its first audio came back. A filler phrase said during a slow tool counts: it
	// is what the caller heard first.
	FirstSentence time.Time
	TTSFirstByte  time.Time
	// FirstAudio is when the first frame of the reply was handed to the output.
	FirstAudio time.Time
	// KnowledgeWait is how long the knowledge lookup held up the model request.
	KnowledgeWait time.Duration
}

// VoiceToVoice is from the end of the caller's words to the agent's first audio.
func (l TurnLatency) VoiceToVoice() time.Duration { return since(l.SpeechEnded, l.FirstAudio) }

// Response is from the end-of-turn decision to the agent's first audio: everything
// after endpointing, providers included.
func (l TurnLatency) Response() time.Duration { return since(l.EndOfTurn, l.FirstAudio) }

// LLMTimeToFirstToken is the model's time to first token.
func (l TurnLatency) LLMTimeToFirstToken() time.Duration { return since(l.LLMRequest, l.LLMFirstToken) }

// TTSTimeToFirstByte is the voice's time to first audio for the first sentence.
func (l TurnLatency) TTSTimeToFirstByte() time.Duration {
	return since(l.FirstSentence, l.TTSFirstByte)
}

// STTDelay is from the end of the caller's words to the turn's final transcript.
func (l TurnLatency) STTDelay() time.Duration { return since(l.SpeechEnded, l.STTFinal) }

// since is b-a, or 0 if either is unset.
func since(a, b time.Time) time.Duration {
	if a.IsZero() || b.IsZero() {
		return 0
	}
	return b.Sub(a)
}

// InterruptionKind says how caller speech over the agent ended.
type InterruptionKind string

const (
	// BargeIn: the caller took the floor; the agent stopped and its reply was cut.
	BargeIn InterruptionKind = "barge_in"
	// FalseInterruption: a cough or backchannel; the agent paused and resumed.
	FalseInterruption InterruptionKind = "false_interruption"
)

// Interruption reports caller speech over the agent.
type Interruption struct {
	Kind InterruptionKind
	Turn int
	// At is when the engine decided; SpeechStarted when the caller's speech began;
	// PausedAt when playback paused (the VAD's onset, before the decision). At most
	// the one frame already being written goes out after PausedAt.
	At, SpeechStarted, PausedAt time.Time
	// Paused is how long playback was paused (false interruptions).
	Paused time.Duration
	// Played is the agent text kept in the history (barge-in): what was actually heard.
	Played string
}

// ToolCall reports a tool the model called, built-in or HTTP.
type ToolCall struct {
	Turn      int
	ID        string
	Name      string
	Arguments string
	// Result is what the model was given back.
	Result string
	// Status is the HTTP status (0 for built-ins and failures before a response).
	Status   int
	Err      string
	Duration time.Duration
	// Filler: a filler phrase was spoken while it ran.
	Filler bool
}

// Transfer asks the transport to transfer the call. The session ends (reason
// EndTransfer) right after emitting it, once the agent's last words have played.
type Transfer struct {
	Destination string
	Turn        int
}

// SendDTMF asks the transport to press keys on the line (the model called send_dtmf;
// only offered when Config.DTMFOut is set). Digits are one or more of 0-9, *, # and
// A-D, already validated, in the order to send. The call goes on.
type SendDTMF struct {
	Digits string
	Turn   int
}

// VoicemailResult is what voicemail detection decided.
type VoicemailResult string

const (
	// VoicemailHuman: a person answered; the conversation goes on as usual.
	VoicemailHuman VoicemailResult = "human"
	// VoicemailMachine: an answering machine or voicemail greeting; the agent leaves
	// its message or hangs up, and the session ends with EndVoicemail.
	VoicemailMachine VoicemailResult = "machine"
)

// VoicemailDetection reports the outcome of voicemail detection on an outbound call
// (Config.DetectVoicemail with Agent.Voicemail.Enabled). It is emitted once.
type VoicemailDetection struct {
	Result VoicemailResult
	// Cue says what decided: "phrase" (the transcript matched a voicemail phrase),
	// "long_greeting" (one run of speech longer than a person's hello), "beep" (a
	// steady tone), "short_greeting" (a short answer without voicemail words), "dtmf"
	// (the callee pressed a key) or "timeout" (no decision in time: a person is
	// assumed).
	Cue string
	// Text is the callee's transcript so far.
	Text string
	At   time.Time
}

// EndReason says why a call ended.
type EndReason string

const (
	EndStopped     EndReason = "stopped"      // Stop was called or Start's ctx ended (hang-up)
	EndCallTool    EndReason = "end_call"     // the model called end_call
	EndTransfer    EndReason = "transfer"     // the model transferred the call
	EndSilence     EndReason = "silence"      // the caller stayed silent after a reprompt
	EndMaxDuration EndReason = "max_duration" // the call hit the agent's maximum duration
	EndError       EndReason = "error"        // a provider failed for good (see CallEnded.Err)
	EndVoicemail   EndReason = "voicemail"    // an answering machine answered (message left or hung up)
)

// CallEnded is the last event of a session.
type CallEnded struct {
	Reason   EndReason
	At       time.Time
	Duration time.Duration
	Err      error
}

func (*Transcript) event()         {}
func (*TurnLatency) event()        {}
func (*Interruption) event()       {}
func (*ToolCall) event()           {}
func (*Transfer) event()           {}
func (*SendDTMF) event()           {}
func (*VoicemailDetection) event() {}
func (*CallEnded) event()          {}
