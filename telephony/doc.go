// Package telephony owns phone numbers and SIP trunks: their records, their binding to
// agents, keeping them in sync with LiveKit SIP (inbound and outbound trunks, one
// dispatch rule per bound number), and the carrier adapters that buy numbers (Telnyx,
// Twilio, in telephony/carrier). Package calls asks it where an inbound call goes
// (Route) and how an outbound call leaves (Line).
//
// The LiveKit side. Every trunk has a LiveKit inbound trunk listing all the trunk's
// numbers, bound or not, and, when it has an outbound address, a LiveKit outbound trunk
// listing them too. Every bound SIP number has an individual dispatch rule (rooms
// "call-<caller>_<random>", the number's inbound trunk, that number only) that
// dispatches the Parley agent with metadata {"phone_number": "+1…"}. Every trunk also
// has one trunk-level rule (the same, but listing no numbers) with metadata
// {"unbound":true}: LiveKit prefers a rule listing the number called, so only calls to
// unbound numbers reach it, and the worker refuses those by deleting the room unjoined,
// which LiveKit SIP answers 486 Busy Here. (A number in no inbound trunk would get no
// answer at all: livekit-server v1.13.5 with livekit-sip v1.8.0 drops such a call, its
// flood protection, and the caller hears ringing until they give up.)
//
// Consistency. Changes lock their rows, change LiveKit inside the database transaction
// and undo what they did there if anything fails; see the comment on change in
// service.go for the rules, and Reconcile for what repairs a crash between the two.
//
// Secrets. Trunk passwords are sealed with internal/crypt at rest and are write-only
// in the API ("********"); LiveKit receives them in the clear, as it must answer and
// send digest authentication.
//
// Tenancy. Every query on tenant data filters on tenant_id = $1, and phone_numbers'
// (tenant_id, trunk_id) key makes a number on another tenant's trunk impossible.
// InboundRoute alone looks a number up without a tenant: numbers are unique across
// tenants, and the number called is all an inbound call carries.
package telephony
