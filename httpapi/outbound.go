package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/parleyhq/parley/billing"
	"github.com/parleyhq/parley/calls"
	"github.com/parleyhq/parley/internal/errs"
)

// POST /v1/calls/outbound: Call2Me's outbound call. It answers 201 with the call as
// created (call_status registered; the dial job moves it to ringing). With an
// Idempotency-Key header a retry of the same request gets the same answer (and the
// header Idempotent-Replayed: true) and creates nothing; the same key with another
// request is 422 idempotency_key_reused. Keys are remembered 24 hours.

// outboundRequest is the body of POST /v1/calls/outbound. The number called may also be
// sent as phone_number or to_phone_number (names other Call2Me SDK versions use).
type outboundRequest struct {
	AgentID       string `json:"agent_id" jsonschema:"required"`
	ToNumber      string `json:"to_number" jsonschema:"required"`
	PhoneNumber   string `json:"phone_number,omitempty"`
	ToPhoneNumber string `json:"to_phone_number,omitempty"`
	// FromNumber is one of the account's numbers; omitted, the agent's own number (or
	// the account's first that can dial out) is used.
	FromNumber string `json:"from_number,omitempty"`
	// Variables fill the agent prompt's {{variables}}; values that are not strings are
	// used as their JSON.
	Variables  map[string]any `json:"variables,omitempty"`
	WebhookURL string         `json:"webhook_url,omitempty"`
	// Metadata is stored with the call; variables, webhook_url, external_id,
	// output_parameters and temporary_agent are reserved keys.
	Metadata map[string]any `json:"metadata,omitempty"`
}

// idempotencyHeader is the request header that makes call creation safe to retry.
const idempotencyHeader = "Idempotency-Key"

func (s *Server) handleCreateOutboundCall(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.callsService()
	if err != nil {
		return err
	}
	var req outboundRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	to := firstNonEmpty(req.ToNumber, req.PhoneNumber, req.ToPhoneNumber)
	vars, err := stringValues("variables", req.Variables)
	if err != nil {
		return err
	}
	c, replayed, err := svc.CreateOutboundReplay(r.Context(), principal(r).TenantID, calls.OutboundInput{
		AgentID: req.AgentID, ToNumber: to, FromNumber: req.FromNumber, Variables: vars,
		WebhookURL: req.WebhookURL, Metadata: req.Metadata,
		IdempotencyKey: r.Header.Get(idempotencyHeader),
	})
	if errors.Is(err, billing.ErrInsufficientBalance) {
		// errs has no 402 kind; this is the one answer that needs it.
		e, _ := errs.As(err)
		writeJSON(w, http.StatusPaymentRequired, errorBody{Detail: e.Detail, Code: e.Code})
		return nil
	}
	if err != nil {
		return err
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, http.StatusCreated, c)
	return nil
}

// stringValues turns a JSON object of call variables into strings: strings stay,
// numbers and booleans (and objects, arrays) become their JSON text, null drops the
// entry. Prompts are text, and clients send {"age": 42} as readily as {"age": "42"}.
func stringValues(field string, in map[string]any) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(in))
	for k, v := range in {
		switch v := v.(type) {
		case nil:
		case string:
			out[k] = v
		default:
			b, err := json.Marshal(v)
			if err != nil {
				return nil, errs.Invalid(map[string]string{field + "." + k: "must be a JSON value"})
			}
			out[k] = string(b)
		}
	}
	return out, nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
