package calls

import (
	"context"

	"github.com/riverqueue/river"

	"github.com/parleyhq/parley/telephony"
)

// DialArgs is the River job that places an outbound call: inserted in the transaction
// that creates the call record, so a call is never created without its dial or dialled
// twice.
type DialArgs struct {
	CallID string `json:"call_id"`
}

// Kind is the job kind.
func (DialArgs) Kind() string { return "call_dial" }

// InsertOpts: three attempts. A dial is retried only for a failure before anybody was
// rung (LiveKit refusing to create the room, no SIP bridge free, the database
// blinking); once the call is marked ringing no other attempt dials it (see SIP.dial),
// so retries cannot ring a phone twice. River waits about 1 s and then 16 s between
// attempts: a blip is ridden out, while an outage fails the call (error_livekit) within
// seconds instead of ringing someone minutes after the call was asked for.
func (DialArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{MaxAttempts: 3} }

// Lines is what calls needs from package telephony (*telephony.Service implements it):
// where an inbound call to a number goes, and which line an outbound call leaves on.
type Lines interface {
	// InboundRoute finds the agent bound to number (E.164): telephony.ErrNumberNotFound
	// or telephony.ErrUnbound when there is none.
	InboundRoute(ctx context.Context, number string) (telephony.Route, error)
	// OutboundLine picks the line of an outbound call by agentID of tenantID from
	// fromNumber ("" picks the agent's own number, else the tenant's first number that
	// can dial out): telephony.ErrNoLine when there is none.
	OutboundLine(ctx context.Context, tenantID, agentID, fromNumber string) (telephony.Line, error)
}

// PhoneDialer places an outbound call through a carrier's own API rather than LiveKit
// SIP: Twilio's REST API, whose call then streams to Parley over Media Streams. The
// call is already marked ringing; Dial returns once the carrier has accepted the call,
// and whoever receives the stream runs the conversation and records the outcome.
type PhoneDialer interface {
	Dial(ctx context.Context, c Call, line telephony.Line) error
}
