package telephony

import "github.com/parleyhq/parley/internal/errs"

// Route is where an inbound call to one of Parley's numbers goes: the agent bound to
// the number called, in the tenant that owns it.
type Route struct {
	TenantID string
	AgentID  string
	NumberID string
	// Number is the number called, in E.164.
	Number string
}

// Line is how an outbound call leaves Parley: the caller ID it shows and the carrier
// path it takes.
type Line struct {
	// Number is the caller ID, in E.164.
	Number string
	// Provider is ProviderSIP (a LiveKit SIP outbound trunk) or ProviderTwilio
	// (Twilio's REST API with a Media Stream back to Parley).
	Provider string
	// SIPTrunkID is the LiveKit outbound trunk ID (ProviderSIP only).
	SIPTrunkID string
	// NumberID is the phone number's ID in Parley.
	NumberID string
}

// Providers of a Line.
const (
	ProviderSIP    = "sip"
	ProviderTwilio = "twilio"
)

// Errors of route and line lookups.
var (
	// ErrNumberNotFound: no such number (or another tenant's).
	ErrNumberNotFound = errs.NotFound("phone_number_not_found", "Phone number not found")
	// ErrUnbound: the number exists but no agent is bound to it.
	ErrUnbound = errs.Conflict("phone_number_unbound", "No agent is bound to this phone number")
	// ErrNoLine: the tenant has no number that can place this outbound call.
	ErrNoLine = errs.Invalid(map[string]string{"from_number": "no phone number of this account can place outbound calls; add one with an outbound SIP trunk or a Twilio number"})
)
