package carrier

import (
	"fmt"
	"strings"

	"github.com/parleyhq/parley/internal/errs"
)

// The kinds of carrier failure. Every error an adapter returns wraps exactly one of them
// (errors.Is), and they are *errs.Error values so the HTTP layer maps them without
// knowing about carriers. The details shown to the API caller are these generic ones;
// the carrier's own code and message travel in *Error and reach the server log (the HTTP
// layer logs 5xx-kind errors in full).
var (
	// ErrAuth: the carrier rejected Parley's own credentials (HTTP 401/403). It is the
	// operator's configuration, not the API caller's fault, so it is a 503, not a 401.
	ErrAuth = errs.New(errs.KindUnavailable, "carrier_auth_failed",
		"The carrier rejected the platform's credentials; check the carrier configuration")
	// ErrNotAvailable: the number cannot be bought: somebody else took it since the
	// search, the carrier never offered it, or the carrier failed the order (409).
	ErrNotAvailable = errs.Conflict("number_not_available",
		"The phone number is not available to buy; search again and pick another")
	// ErrInvalid: the carrier rejected the request as malformed, e.g. a bad area code or
	// a number not in E.164 (422).
	ErrInvalid = errs.New(errs.KindInvalid, "carrier_rejected_request",
		"The carrier rejected the request as invalid")
	// ErrPending: a Telnyx number order has not completed, so there is no phone number
	// to release yet (409; retry later).
	ErrPending = errs.Conflict("carrier_order_pending",
		"The carrier has not finished the number order yet; try again shortly")
	// ErrRateLimited: the carrier throttled Parley (HTTP 429).
	ErrRateLimited = errs.New(errs.KindRateLimited, "carrier_rate_limited",
		"The carrier is throttling requests; try again shortly")
	// ErrUpstream: the carrier failed (5xx), could not be reached, or answered something
	// that is not its documented wire format (503).
	ErrUpstream = errs.New(errs.KindUnavailable, "carrier_unavailable",
		"The carrier did not complete the request; try again later")
)

// Error is one failed carrier call. Kind is one of the Err* values above; Err is the
// underlying cause when there is one (a transport or decoding error, ctx.Err()).
type Error struct {
	Provider string // "telnyx" or "twilio"
	Op       string // "search", "order", "release", …
	Status   int    // HTTP status the carrier answered; 0 when it did not answer
	Code     string // the carrier's error code ("10009", "21422"), if it sent one
	Message  string // the carrier's title/detail, if it sent one
	Kind     error
	Err      error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "carrier: %s %s", e.Provider, e.Op)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, ": code %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.Kind != nil {
		if k, ok := e.Kind.(*errs.Error); ok {
			fmt.Fprintf(&b, " (%s)", k.Code)
		}
	}
	return b.String()
}

// Unwrap exposes both the kind and the cause, so errors.Is(err, ErrAuth) and
// errors.Is(err, context.Canceled) both work.
func (e *Error) Unwrap() []error {
	out := make([]error, 0, 2)
	if e.Kind != nil {
		out = append(out, e.Kind)
	}
	if e.Err != nil {
		out = append(out, e.Err)
	}
	return out
}

// kindForStatus classifies an HTTP error status the same way for both carriers; the
// adapters refine it with the carrier's own error codes.
func kindForStatus(status int) error {
	switch {
	case status == 401 || status == 403:
		return ErrAuth
	case status == 429:
		return ErrRateLimited
	case status >= 400 && status < 500:
		return ErrInvalid
	default:
		return ErrUpstream
	}
}
