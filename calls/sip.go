package calls

// Phone calls over LiveKit SIP.
//
// Inbound: a call to a bound number matches the number's dispatch rule (made by package
// telephony), which creates a room call-<caller>_<random>, puts the caller in it as a
// SIP participant (ringing) and dispatches the agent with {"phone_number": number}.
// Runner.handleInbound routes the number (Lines.InboundRoute) before joining, since
// joining is what answers the call; once the line is active it creates the record
// (CreateInbound: inbound, from the caller's sip.phoneNumber, to the number called) and
// the conversation runs as a web call's does. A call to an unbound number, or one
// unbound since, is refused by deleting its room unanswered, and leaves no record.
//
// Outbound: POST /v1/calls/outbound writes the call (registered) and a call_dial job in
// one transaction. The job (SIP.dial) creates the call's room with the agent
// dispatched, moves the call to ringing (the one conditional UPDATE that makes dialling
// happen at most once), and asks LiveKit SIP to dial (CreateSIPParticipant, waiting
// until answered). The agent meanwhile waits in the room for the line to turn active
// and only then Begins the call and greets; a call that is not answered ends as busy,
// no_answer or failed from the SIP outcome, and its room is closed. Lines on Twilio go
// to the PhoneDialer instead.
//
// Transfer: the transfer_call tool ends the session with a Transfer event; the runner
// then sends the phone line a SIP REFER (TransferSIPParticipant) and completes the
// call as call_transfer.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/riverqueue/river"
	"github.com/twitchtv/twirp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/parleyhq/parley/internal/ids"
	"github.com/parleyhq/parley/telephony"
	vlk "github.com/parleyhq/parley/voice/livekit"
	"github.com/parleyhq/parley/voice/livekit/dispatch"
)

// Disconnection reasons of phone calls that never connected, in the names Retell's
// (and so Call2Me's) SDKs use; a failure with a SIP status of its own keeps the code
// ("dial_failed_sip_503") so the cause is not lost.
const (
	ReasonDialBusy     = "dial_busy"      // 486 Busy Here, 600 Busy Everywhere
	ReasonDialNoAnswer = "dial_no_answer" // ringing timeout, 408, 480, 487
	ReasonDialFailed   = "dial_failed"    // anything else; with its SIP code when there is one
	// ReasonNoPhoneDialer: the call's line is a Twilio number and this server has no
	// Twilio dialer configured.
	ReasonNoPhoneDialer = "error_no_phone_dialer"
	// ReasonNoLine: the tenant has no number that can place the call.
	ReasonNoLine = "error_no_line"
	// ReasonTransferFailed: the agent asked for a transfer and the SIP REFER failed; the
	// conversation itself completed.
	ReasonTransferFailed = "transfer_failed"
)

// SIPIdentity is the participant identity of the phone line in an outbound call's
// room.
const SIPIdentity = "phone"

// InboundCall describes a phone call that has reached one of Parley's numbers.
type InboundCall struct {
	// CallID is chosen by the worker (ids.New("call")) so the session can carry it
	// before the record exists.
	CallID string
	Route  telephony.Route
	// From is the caller's number, To the number called; RoomName the LiveKit room the
	// dispatch rule created.
	From, To, RoomName string
}

// CreateInbound records an inbound phone call, registered, for the agent its route
// names. The agent must still exist in the route's tenant and be active
// (ErrAgentNotFound, ErrAgentInactive): a number whose agent was deleted between the
// dispatch and now gets no call.
func (s *Service) CreateInbound(ctx context.Context, in InboundCall) (Call, error) {
	if in.CallID == "" || in.Route.TenantID == "" || in.Route.AgentID == "" {
		return Call{}, errors.New("calls: inbound call needs a call ID, a tenant and an agent")
	}
	now := s.now()
	c := Call{
		CallID: in.CallID, TenantID: in.Route.TenantID, AgentID: in.Route.AgentID,
		Direction: DirectionInbound, CallStatus: StatusRegistered, FromNumber: in.From, ToNumber: in.To,
		TranscriptObject: []Turn{}, Latency: Latency{Turns: []LatencyTurn{}},
		Extracted: map[string]any{}, RoomName: in.RoomName, Metadata: map[string]any{},
		CreatedAt: now, UpdatedAt: now,
	}
	var err error
	if c.AgentName, err = insertCall(ctx, s.pool, c, []byte("{}"), "create inbound call"); err != nil {
		return Call{}, err
	}
	return c, nil
}

// markRinging moves a registered outbound call to ringing, filling from_number with
// the line's number when the call did not name one. It reports whether this caller
// won: the one conditional UPDATE is what makes dialling happen at most once, however
// many times River runs the job.
func (s *Service) markRinging(ctx context.Context, callID, from string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE calls SET call_status = 'ringing',
			from_number = CASE WHEN from_number = '' THEN $2 ELSE from_number END, updated_at = $3
		WHERE id = $1 AND call_status = 'registered' AND direction = 'outbound'`, callID, from, s.now())
	if err != nil {
		return false, fmt.Errorf("calls: ring %s: %w", callID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// endUnconnected ends a call that never connected (registered or ringing) with one of
// the outbound outcomes: failed, no_answer, busy or voicemail. Like Fail, a call that
// has already ended keeps its first outcome, and one in progress is left to its worker.
func (s *Service) endUnconnected(ctx context.Context, callID, status, reason string) error {
	switch status {
	case StatusFailed, StatusNoAnswer, StatusBusy, StatusVoicemail:
	default:
		return fmt.Errorf("calls: %q is not an outcome of an unconnected call", status)
	}
	now := s.now()
	_, err := s.pool.Exec(ctx, `UPDATE calls SET call_status = $2, disconnection_reason = $3,
		end_timestamp = $4, duration_ms = 0, updated_at = $4
		WHERE id = $1 AND call_status = ANY ($5)`, callID, status, reason, now, notStarted)
	if err != nil {
		return fmt.Errorf("calls: end %s as %s: %w", callID, status, err)
	}
	return nil
}

// SIPConfig configures outbound phone calls and transfers.
type SIPConfig struct {
	// LiveKit is the server whose SIP service places calls (URL and keys; the same as
	// the rooms adapter's).
	LiveKit LiveKitConfig
	// RingingTimeout is how long an outbound call may ring before it counts as not
	// answered (PARLEY_SIP_RINGING_TIMEOUT, default 30 s: about six rings, when most
	// carriers' voicemail would pick up anyway; 5 s to 3 minutes).
	RingingTimeout time.Duration
	// Lines says which line an outbound call leaves on (the telephony service).
	Lines Lines
	// Phone places calls on Twilio lines; nil fails them with ReasonNoPhoneDialer.
	Phone  PhoneDialer
	Logger *slog.Logger
}

func (c *SIPConfig) setDefaults() {
	if c.RingingTimeout == 0 {
		c.RingingTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c SIPConfig) validate() error {
	if !c.LiveKit.Configured() {
		return errors.New("calls: SIP needs the LiveKit URL, API key and secret")
	}
	if c.RingingTimeout < time.Second || c.RingingTimeout > 3*time.Minute {
		return fmt.Errorf("calls: SIP RingingTimeout %s must be from 1s to 3m", c.RingingTimeout)
	}
	if c.Lines == nil {
		return errors.New("calls: SIP needs Lines")
	}
	return nil
}

// SIP places outbound phone calls (the call_dial job) and transfers phone calls, through
// LiveKit's SIP service. It is safe for concurrent use.
type SIP struct {
	calls  *Service
	cfg    SIPConfig
	client *lksdk.SIPClient
	log    *slog.Logger
}

// NewSIP returns the SIP side of calls. calls must have a Rooms adapter: an outbound
// call's room is created with the agent dispatched before the phone is dialled.
func NewSIP(calls *Service, cfg SIPConfig) (*SIP, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if calls == nil || calls.cfg.Rooms == nil {
		return nil, errors.New("calls: SIP needs a calls service with LiveKit configured")
	}
	return &SIP{
		calls: calls, cfg: cfg, log: cfg.Logger,
		client: lksdk.NewSIPClient(cfg.LiveKit.URL, cfg.LiveKit.APIKey, cfg.LiveKit.APISecret),
	}, nil
}

// AddWorkers registers the call_dial worker.
func (s *SIP) AddWorkers(w *river.Workers) { river.AddWorker(w, &dialWorker{sip: s}) }

type dialWorker struct {
	river.WorkerDefaults[DialArgs]
	sip *SIP
}

// Timeout: the dial waits for the answer, so the ringing time and a margin for the
// room and the bridge.
func (w *dialWorker) Timeout(*river.Job[DialArgs]) time.Duration {
	return w.sip.cfg.RingingTimeout + time.Minute
}

func (w *dialWorker) Work(ctx context.Context, job *river.Job[DialArgs]) error {
	return w.sip.dial(ctx, job.Args.CallID, job.Attempt >= job.MaxAttempts)
}

// dial places the outbound call callID and records its outcome; last is true on the
// job's last attempt (a failure then fails the call instead of leaving it to a retry).
//
// The order makes it safe to run twice: a call that is not registered any more has
// been dialled (or ended) already and is left alone; the room is created before the
// call is marked ringing (creating it twice is harmless), and the phone is only dialled
// by the one run whose UPDATE moved the call from registered to ringing. An error is
// returned, for River to retry, only before that point.
func (s *SIP) dial(ctx context.Context, callID string, last bool) error {
	log := s.log.With("call_id", callID)
	bg := context.WithoutCancel(ctx)
	c, err := s.calls.load(ctx, callID)
	if errors.Is(err, ErrNotFound) {
		return river.JobCancel(err)
	}
	if err != nil {
		return err
	}
	if c.Direction != DirectionOutbound {
		return river.JobCancel(fmt.Errorf("calls: dial %s: a %s call", callID, c.Direction))
	}
	if c.CallStatus != StatusRegistered {
		log.Info("calls: dial: already dialled or ended", "status", c.CallStatus)
		return nil
	}
	// retry returns err for River while attempts remain, and fails the call on the last.
	retry := func(err error, reason string) error {
		if !last {
			return err
		}
		log.Warn("calls: dial: giving up", "err", err)
		if ferr := s.calls.endUnconnected(bg, callID, StatusFailed, reason); ferr != nil {
			log.Warn("calls: dial: fail call", "err", ferr)
		}
		return river.JobCancel(err)
	}
	line, err := s.cfg.Lines.OutboundLine(ctx, c.TenantID, c.AgentID, c.FromNumber)
	if errors.Is(err, telephony.ErrNoLine) || errors.Is(err, telephony.ErrNumberNotFound) {
		log.Info("calls: dial: no line", "err", err)
		return s.calls.endUnconnected(bg, callID, StatusFailed, ReasonNoLine)
	}
	if err != nil {
		return retry(err, ReasonDialFailed)
	}
	log = log.With("provider", line.Provider, "from", line.Number)

	switch line.Provider {
	case telephony.ProviderTwilio:
		if s.cfg.Phone == nil {
			log.Warn("calls: dial: a Twilio line, and no Twilio dialer is configured")
			return s.calls.endUnconnected(bg, callID, StatusFailed, ReasonNoPhoneDialer)
		}
		won, err := s.calls.markRinging(ctx, callID, line.Number)
		if err != nil || !won {
			return err
		}
		if c.FromNumber == "" {
			c.FromNumber = line.Number
		}
		c.CallStatus = StatusRinging
		if err := s.cfg.Phone.Dial(ctx, c, line); err != nil {
			log.Warn("calls: dial: twilio", "err", err)
			return s.calls.endUnconnected(bg, callID, StatusFailed, ReasonDialFailed)
		}
		return nil
	case telephony.ProviderSIP:
	default:
		return s.calls.endUnconnected(bg, callID, StatusFailed, ReasonNoLine)
	}

	room := c.RoomName
	if room == "" {
		room = RoomName(callID)
	}
	meta, _ := json.Marshal(DispatchMetadata{CallID: callID})
	if err := s.calls.cfg.Rooms.CreateCallRoom(ctx, room, string(meta)); err != nil {
		return retry(err, ReasonLiveKit)
	}
	won, err := s.calls.markRinging(ctx, callID, line.Number)
	if err != nil {
		return retry(err, ReasonDialFailed)
	}
	if !won {
		log.Info("calls: dial: another run dialled this call")
		return nil
	}
	// WaitUntilAnswered: the request returns when the callee picks up (the runner,
	// watching sip.callStatus, Begins the call then) or with the SIP outcome.
	_, err = s.client.CreateSIPParticipant(ctx, &livekit.CreateSIPParticipantRequest{
		SipTrunkId:          line.SIPTrunkID,
		SipNumber:           line.Number,
		SipCallTo:           c.ToNumber,
		RoomName:            room,
		ParticipantIdentity: SIPIdentity,
		ParticipantName:     c.ToNumber,
		WaitUntilAnswered:   true,
		RingingTimeout:      durationpb.New(s.cfg.RingingTimeout),
	})
	if err == nil {
		log.Info("calls: dial: answered")
		return nil
	}
	if refusedBeforeDialling(err) {
		// The bridge refused the call before sending an INVITE (no bridge free, or one
		// shedding load): nobody was rung, so the call goes back to registered for
		// River's next attempt.
		log.Warn("calls: dial: LiveKit SIP refused the call before dialling", "err", err)
		if _, uerr := s.calls.pool.Exec(bg, `UPDATE calls SET call_status = 'registered', updated_at = $2
			WHERE id = $1 AND call_status = 'ringing'`, callID, s.calls.now()); uerr != nil {
			log.Warn("calls: dial: back to registered", "err", uerr)
		}
		if last {
			s.calls.cfg.Rooms.DeleteRoom(bg, room)
		}
		return retry(err, ReasonLiveKit)
	}
	st, reason := dialOutcome(err)
	log.Info("calls: dial: not answered", "status", st, "reason", reason, "err", err)
	if err := s.calls.endUnconnected(bg, callID, st, reason); err != nil {
		log.Warn("calls: dial: record outcome", "err", err)
	}
	// The agent is waiting in the room for a callee who will not come.
	if err := s.calls.cfg.Rooms.DeleteRoom(bg, room); err != nil {
		log.Warn("calls: dial: close room", "err", err)
	}
	return nil
}

// dialOutcome maps a failed CreateSIPParticipant to the call's outcome.
//
// How the failure arrives (livekit-sip v1.8.0, livekit-server v1.13.5): a final SIP
// response to the INVITE becomes a *livekit.SIPStatus error on the bridge, which
// psrpc carries to the server as a gRPC status with the SIPStatus as a detail; the
// server's Twirp layer (xtwirp.ServerPassErrorDetails) puts it in the error's metadata
// ("error_details", plus "sip_status_code"), and the SDK's client option turns it back
// into a gRPC status, from which lksdk.SIPStatusFrom reads it. The ringing timeout is
// different: the bridge cancels the INVITE and answers psrpc Canceled ("sip request
// timed out") with no SIP status at all.
func dialOutcome(err error) (outcome, reason string) {
	code := sipStatusCode(err)
	switch code {
	case 486, 600:
		return StatusBusy, ReasonDialBusy
	case 408, 480, 487:
		return StatusNoAnswer, ReasonDialNoAnswer
	case 0:
	default:
		return StatusFailed, ReasonDialFailed + "_sip_" + strconv.Itoa(code)
	}
	if st, ok := status.FromError(err); ok && (st.Code() == codes.Canceled || st.Code() == codes.DeadlineExceeded) {
		return StatusNoAnswer, ReasonDialNoAnswer
	}
	var te twirp.Error
	if errors.As(err, &te) && (te.Code() == twirp.Canceled || te.Code() == twirp.DeadlineExceeded) {
		return StatusNoAnswer, ReasonDialNoAnswer
	}
	return StatusFailed, ReasonDialFailed
}

// refusedBeforeDialling reports whether CreateSIPParticipant failed before any INVITE
// was sent: Unavailable with no SIP status is what the server answers when no bridge
// takes the request and what a bridge answers when it sheds load ("cpu exhausted").
// Every failure after the INVITE carries a SIP status or is Canceled (the ringing
// timeout), and livekit-sip turns its own errors after the INVITE into
// FailedPrecondition precisely so that callers do not retry them.
func refusedBeforeDialling(err error) bool {
	if sipStatusCode(err) != 0 {
		return false
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
		return true
	}
	var te twirp.Error
	return errors.As(err, &te) && te.Code() == twirp.Unavailable
}

// sipStatusCode is the SIP response code an error carries, 0 if none.
func sipStatusCode(err error) int {
	if st := lksdk.SIPStatusFrom(err); st != nil {
		return int(st.Code)
	}
	var te twirp.Error
	if errors.As(err, &te) {
		if n, err := strconv.Atoi(te.Meta("sip_status_code")); err == nil {
			return n
		}
	}
	return 0
}

// Transfer hands the phone line in room (participant identity) to destination with a
// SIP REFER: "+15551234567" (dialled as tel:+15551234567), a tel: URI or a sip: URI.
// The bridge returns once the far side has accepted the transfer, and then hangs up
// its leg.
func (s *SIP) Transfer(ctx context.Context, room, identity, destination string) error {
	to := transferURI(destination)
	if to == "" {
		return fmt.Errorf("calls: transfer: %q is not a phone number or a SIP URI", destination)
	}
	_, err := s.client.TransferSIPParticipant(ctx, &livekit.TransferSIPParticipantRequest{
		RoomName: room, ParticipantIdentity: identity, TransferTo: to,
	})
	if err != nil {
		return fmt.Errorf("calls: transfer %s to %s: %w", identity, to, err)
	}
	return nil
}

// transferURI is destination as LiveKit's TransferTo wants it.
func transferURI(d string) string {
	d = strings.TrimSpace(d)
	lower := strings.ToLower(d)
	switch {
	case strings.HasPrefix(lower, "sip:"), strings.HasPrefix(lower, "sips:"), strings.HasPrefix(lower, "tel:"):
		return d
	case strings.HasPrefix(d, "+") && len(d) > 1:
		return "tel:" + d
	}
	return ""
}

// handleInbound runs an inbound phone call: number is the number called, from the
// dispatch rule's metadata ("" for a call that reached a trunk's catch-all rule, which
// only unbound numbers do: it is rejected at once). The number is routed before the agent joins, because
// joining (publishing the agent's voice) is what makes LiveKit SIP answer: a number
// that was unbound, or whose agent was deleted or deactivated, between the call's
// arrival and now is turned away unanswered by deleting the room (the bridge then
// rejects the INVITE), and leaves no record. The record is created once the line is
// answered (a caller who hangs up while it rings leaves none either), with the caller's
// number from the SIP participant.
func (r *Runner) handleInbound(ctx context.Context, job dispatch.Job, number string, log *slog.Logger) error {
	log = log.With("room", job.Room.Name, "job_id", job.ID, "number", number)
	bg := context.WithoutCancel(ctx)
	if number == "" {
		// A trunk's catch-all rule: a number with no agent.
		log.Info("calls: inbound call to an unbound number; rejecting it")
		r.closeRoom(bg, job.Room.Name, log)
		return nil
	}
	if r.Lines == nil {
		r.closeRoom(bg, job.Room.Name, log)
		return errors.New("calls: an inbound phone call, and this worker has no Lines to route it")
	}
	route, err := r.Lines.InboundRoute(ctx, number)
	if errors.Is(err, telephony.ErrNumberNotFound) || errors.Is(err, telephony.ErrUnbound) {
		log.Info("calls: inbound call to a number with no agent; rejecting it", "err", err)
		r.closeRoom(bg, job.Room.Name, log)
		return nil
	}
	if err != nil {
		r.closeRoom(bg, job.Room.Name, log)
		return err
	}
	callID := ids.New("call")
	log = log.With("call_id", callID, "tenant_id", route.TenantID, "agent_id", route.AgentID)
	cfg, err := r.Engine.SessionConfig(ctx, route.TenantID, route.AgentID, callID, nil)
	if err != nil {
		log.Warn("calls: inbound call: agent unusable; rejecting the call", "err", err)
		r.closeRoom(bg, job.Room.Name, log)
		return nil
	}
	return r.run(ctx, job, callRun{callID: callID, phone: true, cfg: cfg,
		answered: func(line vlk.SIPCaller) (map[string]string, error) {
			to := pick(line.Attributes[livekit.AttrSIPTrunkNumber], number)
			c, err := r.Calls.CreateInbound(bg, InboundCall{
				CallID: callID, Route: route, RoomName: job.Room.Name,
				From: line.Attributes[livekit.AttrSIPPhoneNumber], To: to,
			})
			if err != nil {
				return nil, err
			}
			log.Info("calls: inbound call answered", "from", c.FromNumber, "to", c.ToNumber)
			return callVariables(time.Now(), CallVariables(c)), nil
		},
	}, log)
}
