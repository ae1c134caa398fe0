package calls

import (
	"strings"
	"time"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/voice"
)

// Call is a call record as the API shows it (GET /v1/calls/{id}). Field names follow
// Call2Me's SDKs; times are RFC 3339 in UTC and null until they happen.
type Call struct {
	CallID string `json:"call_id"`
	// AgentID is "" once the agent has been deleted; AgentName keeps the name it had
	// when the call was created.
	AgentID             string     `json:"agent_id"`
	AgentName           string     `json:"agent_name"`
	Direction           string     `json:"direction" jsonschema:"enum=inbound,enum=outbound,enum=web"`
	CallStatus          string     `json:"call_status" jsonschema:"enum=registered,enum=ringing,enum=in_progress,enum=completed,enum=failed,enum=no_answer,enum=busy,enum=voicemail"`
	FromNumber          string     `json:"from_number"`
	ToNumber            string     `json:"to_number"`
	StartTimestamp      *time.Time `json:"start_timestamp"`
	EndTimestamp        *time.Time `json:"end_timestamp"`
	DurationMS          int64      `json:"duration_ms"`
	DisconnectionReason string     `json:"disconnection_reason"`
	// Transcript is the conversation as plain text, one "Agent: …" or "User: …" line
	// per turn; TranscriptObject is the same with timing.
	Transcript       string         `json:"transcript"`
	TranscriptObject []Turn         `json:"transcript_object"`
	RecordingURL     string         `json:"recording_url"`
	Extracted        map[string]any `json:"extracted"`
	// Cost is in USD.
	Cost    float64 `json:"cost"`
	Latency Latency `json:"latency"`
	// RoomName is the LiveKit room the call runs in.
	RoomName string `json:"room_name"`
	// Metadata is whatever the creator attached to the call.
	Metadata  map[string]any `json:"metadata"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`

	// TenantID is for the worker, which loads calls without knowing their tenant.
	TenantID string `json:"-"`
}

// Live reports whether the call has not ended yet.
func (c Call) Live() bool { return isLive(c.CallStatus) }

// Turn is one entry of transcript_object: everything one side said in one turn.
// Offsets are milliseconds from the start of the conversation (the voice session).
type Turn struct {
	Role    string `json:"role" jsonschema:"enum=agent,enum=user"`
	Content string `json:"content"`
	StartMS int64  `json:"start_ms"`
	EndMS   int64  `json:"end_ms"`
	// Interrupted: the caller barged in while the agent said this; Content holds only
	// the words that were played.
	Interrupted bool `json:"interrupted,omitempty"`
	// TurnNumber is the engine's turn: the caller's turn n and the agent's reply to it
	// share n (0 is the agent's greeting), which is also the turn in latency.turns.
	TurnNumber int `json:"turn"`
}

// Roles of transcript turns.
const (
	RoleAgent = "agent"
	RoleUser  = "user"
)

// Directions.
const (
	DirectionInbound  = "inbound"
	DirectionOutbound = "outbound"
	DirectionWeb      = "web"
)

// Call statuses (agents.CallStatuses lists them all, for statistics).
const (
	StatusRegistered = "registered"
	StatusRinging    = "ringing"
	StatusInProgress = "in_progress"
	StatusCompleted  = "completed"
	StatusFailed     = "failed"
	StatusNoAnswer   = "no_answer"
	StatusBusy       = "busy"
	StatusVoicemail  = "voicemail"
)

// notStarted are the statuses a call has before its conversation begins; live adds
// in_progress. Every transition in this package starts from one of these sets.
var (
	notStarted = []string{StatusRegistered, StatusRinging}
	live       = []string{StatusRegistered, StatusRinging, StatusInProgress}
)

func isLive(status string) bool {
	for _, s := range live {
		if s == status {
			return true
		}
	}
	return false
}

// Disconnection reasons: the Retell-style names Call2Me's SDKs expect, plus api_ended
// for POST /v1/calls/{id}/end and error_livekit for a room that could not be created.
const (
	ReasonUserHangup      = "user_hangup"          // the caller hung up or left the room
	ReasonAgentHangup     = "agent_hangup"         // the model called end_call
	ReasonCallTransfer    = "call_transfer"        // the model transferred the call
	ReasonInactivity      = "inactivity"           // the caller stayed silent after a reprompt
	ReasonMaxDuration     = "max_duration_reached" // the agent's maximum call duration
	ReasonAPIEnded        = "api_ended"            // POST /v1/calls/{id}/end (the room was deleted)
	ReasonUserNotJoined   = "error_user_not_joined"
	ReasonRegisteredStale = "registered_call_timeout" // no worker ever started the call
	ReasonLiveKit         = "error_livekit"           // LiveKit refused or failed the room
	ReasonError           = "error_unknown"           // the engine ended on an error
	ReasonWorkerLost      = "error_worker_lost"       // the worker holding the call died
	// ReasonVoicemailReached: an answering machine answered an outbound call; the agent
	// left its message or hung up (status voicemail).
	ReasonVoicemailReached = "voicemail_reached"
)

// ReasonFor maps how the voice engine ended a session to a disconnection reason.
//
//	voice.EndStopped      → user_hangup when callerLeft, else api_ended
//	voice.EndCallTool     → agent_hangup
//	voice.EndTransfer     → call_transfer
//	voice.EndSilence      → inactivity
//	voice.EndMaxDuration  → max_duration_reached
//	voice.EndVoicemail    → voicemail_reached (the call's status is voicemail)
//	voice.EndError        → error_unknown
//
// EndStopped only says that something outside the engine stopped it; the transport knows
// what: callerLeft is true when the caller's participant left (or the phone line hung
// up). Otherwise the room went away under the agent, which for a Parley room means POST
// /end deleted it. A transport that knows a better cause (a worker shutting down, say)
// passes its own reason to Finish instead.
func ReasonFor(r voice.EndReason, callerLeft bool) string {
	switch r {
	case voice.EndStopped:
		if callerLeft {
			return ReasonUserHangup
		}
		return ReasonAPIEnded
	case voice.EndCallTool:
		return ReasonAgentHangup
	case voice.EndTransfer:
		return ReasonCallTransfer
	case voice.EndSilence:
		return ReasonInactivity
	case voice.EndMaxDuration:
		return ReasonMaxDuration
	case voice.EndVoicemail:
		return ReasonVoicemailReached
	}
	return ReasonError
}

// Finish is how a conversation ended, for Service.Finish and Recorder.Close.
type Finish struct {
	// Status is StatusCompleted, StatusVoicemail (an answering machine took the call:
	// ReasonFor gives voicemail_reached) or StatusFailed.
	Status string
	// Reason is the disconnection reason (see ReasonFor).
	Reason string
	// EndedAt is the wall-clock end (default: now).
	EndedAt time.Time
	// Duration is how long the conversation lasted (default: EndedAt − start_timestamp).
	Duration time.Duration
	// TranscriptObject and Latency are the final figures; Recorder.Close fills them.
	TranscriptObject []Turn
	Latency          Latency
}

// voicemail gives a call an answering machine took (the session ended with
// EndVoicemail) its outcome status, voicemail, in place of completed.
func (f Finish) voicemail(end voice.EndReason) Finish {
	if end == voice.EndVoicemail && f.Status == StatusCompleted {
		f.Status = StatusVoicemail
	}
	return f
}

// Errors callers can test for with errors.Is.
var (
	ErrNotFound      = errs.NotFound("call_not_found", "Call not found")
	ErrAgentNotFound = errs.NotFound("agent_not_found", "Agent not found")
	ErrAgentInactive = errs.Conflict("agent_inactive", "Agent is inactive; set its status to active to take calls")
	// ErrCallEnded: the call has already completed or failed.
	ErrCallEnded = errs.Conflict("call_ended", "Call has already ended; only a registered or in-progress call can be ended")
	// ErrNotStartable: Begin on a call that is already in progress or over.
	ErrNotStartable = errs.Conflict("call_not_startable", "Call has already started or ended")
	// ErrNotInProgress: SaveProgress or a completed Finish on a call that has not begun.
	ErrNotInProgress = errs.Conflict("call_not_in_progress", "Call is not in progress")
	// ErrLiveKitNotConfigured: web calls and tokens need a LiveKit server.
	ErrLiveKitNotConfigured = errs.New(errs.KindUnavailable, "livekit_not_configured",
		"LiveKit is not configured on this server (set PARLEY_LIVEKIT_URL, PARLEY_LIVEKIT_API_KEY and PARLEY_LIVEKIT_API_SECRET)")
	// ErrLiveKitUnavailable: LiveKit did not do what was asked (down, or refused).
	ErrLiveKitUnavailable = errs.New(errs.KindUnavailable, "livekit_unavailable", "LiveKit is unavailable; try again shortly")
)

// transcriptText renders turns as the plain-text transcript: one "Agent: …" or
// "User: …" line per turn.
func transcriptText(turns []Turn) string {
	var b strings.Builder
	for _, t := range turns {
		if t.Content == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		if t.Role == RoleAgent {
			b.WriteString("Agent: ")
		} else {
			b.WriteString("User: ")
		}
		b.WriteString(t.Content)
	}
	return b.String()
}
