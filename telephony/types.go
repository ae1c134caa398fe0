package telephony

import (
	"encoding/json"
	"time"

	"github.com/parleyhq/parley/internal/errs"
)

// Errors of the trunk and number routes. Another tenant's trunk or number is
// indistinguishable from one that does not exist.
var (
	// ErrTrunkNotFound: no such SIP trunk in the tenant.
	ErrTrunkNotFound = errs.NotFound("sip_trunk_not_found", "SIP trunk not found")
	// ErrAgentNotFound: the agent to bind does not exist in the tenant.
	ErrAgentNotFound = errs.NotFound("agent_not_found", "Agent not found")
	// ErrNumberTaken: the number is already registered (by this or another tenant).
	ErrNumberTaken = errs.Conflict("phone_number_taken", "This phone number is already registered")
	// ErrTrunkInUse: a trunk that phone numbers still use cannot be deleted.
	ErrTrunkInUse = errs.Conflict("sip_trunk_in_use", "Phone numbers still use this SIP trunk; delete them or move them to another trunk first")
	// ErrUnknownCarrier: POST /v1/phone-numbers/buy named a provider this server has no
	// adapter (or no credentials) for.
	ErrUnknownCarrier = errs.Invalid(map[string]string{"provider": "is not a number provider configured on this server"})
)

// Mask is what the API shows instead of a stored SIP password. Sending it back in a
// PATCH keeps the stored password.
const Mask = "********"

// Transports of a trunk's outbound address.
const (
	TransportUDP = "udp"
	TransportTCP = "tcp"
	TransportTLS = "tls"
)

// Trunk is a SIP trunk as the API shows it: a carrier connection that calls come in on
// (from InboundAddresses, optionally with digest auth) and leave through (to
// OutboundAddress). Passwords are write-only.
type Trunk struct {
	ID   string `json:"trunk_id"`
	Name string `json:"name"`
	// OutboundAddress is the carrier's SIP host[:port] outbound calls are sent to; empty
	// for an inbound-only trunk.
	OutboundAddress   string `json:"outbound_address"`
	OutboundTransport string `json:"outbound_transport"` // udp, tcp or tls
	OutboundUsername  string `json:"outbound_username"`
	OutboundPassword  Secret `json:"outbound_password,omitzero"`
	// InboundAddresses are the IPs and CIDRs calls may come from; empty accepts any.
	InboundAddresses []string `json:"inbound_allowed_addresses"`
	InboundUsername  string   `json:"inbound_username"`
	InboundPassword  Secret   `json:"inbound_password,omitzero"`
	// LiveKit's IDs of the trunk's mirrors in LiveKit SIP. LiveKitDispatchRuleID is
	// the trunk-level dispatch rule, which takes the calls to the trunk's unbound
	// numbers (and has the worker refuse them).
	LiveKitInboundTrunkID  string    `json:"livekit_inbound_trunk_id"`
	LiveKitOutboundTrunkID string    `json:"livekit_outbound_trunk_id"`
	LiveKitDispatchRuleID  string    `json:"livekit_dispatch_rule_id"`
	CreatedAt              time.Time `json:"created_at"`
	UpdatedAt              time.Time `json:"updated_at"`
}

// TrunkInput creates or changes a trunk. Nil fields are left as they are (PATCH) or get
// their defaults (create). A password of Mask keeps the stored one; "" removes it.
type TrunkInput struct {
	Name              *string   `json:"name,omitempty"`
	OutboundAddress   *string   `json:"outbound_address,omitempty"`
	OutboundTransport *string   `json:"outbound_transport,omitempty"`
	OutboundUsername  *string   `json:"outbound_username,omitempty"`
	OutboundPassword  *string   `json:"outbound_password,omitempty"`
	InboundAddresses  *[]string `json:"inbound_allowed_addresses,omitempty"`
	InboundUsername   *string   `json:"inbound_username,omitempty"`
	InboundPassword   *string   `json:"inbound_password,omitempty"`
}

// PhoneNumber is a number as the API shows it.
type PhoneNumber struct {
	ID string `json:"phone_number_id"`
	// Number is E.164.
	Number string `json:"phone_number"`
	// Provider is how outbound calls from it leave: ProviderSIP or ProviderTwilio.
	Provider string `json:"provider"`
	// TrunkID is the SIP trunk it rings on and dials out through (nil: none).
	TrunkID *string `json:"trunk_id"`
	// AgentID is the agent that answers it (nil: unbound, calls are rejected).
	AgentID  *string `json:"agent_id"`
	Nickname string  `json:"nickname"`
	// Carrier and CarrierNumberID are set on numbers bought through
	// POST /v1/phone-numbers/buy; deleting such a number releases it at the carrier.
	Carrier         string `json:"carrier,omitempty"`
	CarrierNumberID string `json:"carrier_number_id,omitempty"`
	// LiveKitDispatchRuleID is the dispatch rule of a bound SIP number.
	LiveKitDispatchRuleID string    `json:"livekit_dispatch_rule_id,omitempty"`
	CreatedAt             time.Time `json:"created_at"`
	UpdatedAt             time.Time `json:"updated_at"`
}

// NumberInput registers a number the tenant already has with a SIP trunk or Twilio.
type NumberInput struct {
	PhoneNumber string `json:"phone_number"`
	TrunkID     string `json:"trunk_id,omitempty"`
	// Provider is ProviderSIP (default) or ProviderTwilio.
	Provider string `json:"provider,omitempty"`
	Nickname string `json:"nickname,omitempty"`
	// AgentID binds the number at once.
	AgentID string `json:"agent_id,omitempty"`
}

// NumberPatch changes a number. Nil fields stay. TrunkID "" detaches the trunk; AgentID
// "" unbinds.
type NumberPatch struct {
	Nickname *string `json:"nickname,omitempty"`
	TrunkID  *string `json:"trunk_id,omitempty"`
	AgentID  *string `json:"agent_id,omitempty"`
}

// BuyInput buys a number from a carrier. Without PhoneNumber the carrier is searched
// (AreaCode, Country) and the first number offered is bought.
type BuyInput struct {
	// Provider is the carrier: "telnyx" or "twilio" (those configured).
	Provider    string `json:"provider"`
	PhoneNumber string `json:"phone_number,omitempty"`
	AreaCode    string `json:"area_code,omitempty"`
	Country     string `json:"country,omitempty"`
	TrunkID     string `json:"trunk_id,omitempty"`
	Nickname    string `json:"nickname,omitempty"`
}

// TestResult is what POST /v1/sip-trunks/{id}/test reports: whether the trunk's
// outbound address answered a SIP OPTIONS request.
type TestResult struct {
	Reachable bool `json:"reachable"`
	// StatusCode is the SIP status of the answer (any status means reachable); 0 when
	// none came.
	StatusCode int    `json:"status_code"`
	LatencyMS  int64  `json:"latency_ms"`
	Detail     string `json:"detail"`
	// Address and Transport are what was probed.
	Address   string `json:"address"`
	Transport string `json:"transport"`
}

// Secret is a write-only SIP password: it encodes to JSON as Mask when set and is
// omitted (omitzero) when not, and prints as Mask, so a Trunk never leaks a password.
type Secret struct{ set bool }

// IsSet reports whether a password is stored.
func (s Secret) IsSet() bool { return s.set }

// IsZero reports whether no password is stored (for omitzero).
func (s Secret) IsZero() bool { return !s.set }

// String returns Mask or "".
func (s Secret) String() string {
	if s.set {
		return Mask
	}
	return ""
}

// MarshalJSON encodes Mask or "".
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// UnmarshalJSON reads back what MarshalJSON wrote: any non-empty string means "set".
func (s *Secret) UnmarshalJSON(b []byte) error {
	var v *string
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = Secret{set: v != nil && *v != ""}
	return nil
}

// JSONSchemaAlias documents a Secret as a string in generated schemas (OpenAPI).
func (Secret) JSONSchemaAlias() any { return "" }
