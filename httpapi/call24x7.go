package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"

	"github.com/parleyhq/parley/billing"
	"github.com/parleyhq/parley/calls"
	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/telephony"
)

// Call24x7's outbound routes, at the root with Call24x7's own envelopes:
//
//	POST /outbound_call  {to_phone_number, agent_id | instruction, webhook_url?,
//	                      external_id?, input_parameters?, output_parameters?, call_id?}
//	GET  /outbound_call?call_id=…                          the call's status
//	GET  /outbound_call?to_phone_number=…&agent_id=…       starts a call, like POST
//
// A success is {"success": true, "call_id", "status", "message"}; a failure is
// {"success": false, "message", "error_code"} with exactly these codes and statuses:
//
//	MISSING_PARAMS        400  a parameter is missing or invalid: the phone number is not
//	                           E.164 (^\+[1-9]\d{1,14}$), the JSON is malformed, the
//	                           Idempotency-Key was used for another request, or the
//	                           account has no number that can dial out
//	UNAUTHORIZED          401  no API key, a bad one, or one without the calls scope
//	INSUFFICIENT_BALANCE  402  billing is enforced and the wallet is at or below zero
//	AGENT_NOT_FOUND       404  no such agent in this account (another account's
//	                           included), or the agent is inactive
//	CALL_NOT_FOUND        404  no such call in this account
//	INTERNAL_ERROR        500  anything else
//
// (The middleware's own refusals keep their statuses in this envelope: 429 RATE_LIMITED,
// and 413 for an oversized body.)
//
// Parley's call statuses map onto Call24x7's:
//
//	registered, ringing                → RINGING
//	in_progress                        → IN_PROGRESS
//	completed, voicemail               → COMPLETED
//	failed, no_answer, busy            → FAILED
//
// IDLE is never answered: every Parley call is at least registered, which already
// means a dial is queued.
//
// input_parameters become the call's variables ({{name}} in the prompt),
// output_parameters (field → description, or the same as a JSON string) the template
// post-call analysis fills, external_id is stored and echoed. call_id is the client's
// own reference for the call: it is kept in metadata (call24x7_call_id) and, when no
// Idempotency-Key header is sent, serves as one, so re-sending a POST with the same
// call_id does not place a second call (the call_id answered is always Parley's).

// call24x7Request is POST /outbound_call's body (and GET's query when starting a call).
type call24x7Request struct {
	ToPhoneNumber string `json:"to_phone_number" jsonschema:"required"`
	AgentID       string `json:"agent_id,omitempty"`
	// Instruction, instead of agent_id, makes a temporary agent with this system prompt.
	Instruction      string         `json:"instruction,omitempty"`
	WebhookURL       string         `json:"webhook_url,omitempty"`
	ExternalID       string         `json:"external_id,omitempty"`
	InputParameters  map[string]any `json:"input_parameters,omitempty"`
	OutputParameters any            `json:"output_parameters,omitempty"`
	CallID           string         `json:"call_id,omitempty"`
}

// call24x7Response is the success envelope.
type call24x7Response struct {
	Success bool   `json:"success"`
	CallID  string `json:"call_id"`
	Status  string `json:"status" jsonschema:"enum=IDLE,enum=RINGING,enum=IN_PROGRESS,enum=COMPLETED,enum=FAILED"`
	Message string `json:"message"`
}

// call24x7StatusResponse is GET /outbound_call?call_id=…'s answer: the envelope and
// the fields of Call24x7's completion webhook that are known while the call runs.
type call24x7StatusResponse struct {
	call24x7Response
	CallDirection   string  `json:"call_direction"`
	FromPhoneNumber string  `json:"from_phone_number"`
	ToPhoneNumber   string  `json:"to_phone_number"`
	AgentID         string  `json:"agent_id"`
	DurationSeconds float64 `json:"duration_seconds"`
	ExternalID      string  `json:"external_id,omitempty"`
	RecordingURL    string  `json:"recording_url"`
	Transcription   string  `json:"transcription"`
	// OutputParameters is the extracted output_parameters as a JSON string ("" until
	// the call has been analysed).
	OutputParameters string `json:"output_parameters"`
}

// call24x7ErrorBody is the failure envelope.
type call24x7ErrorBody struct {
	Success   bool   `json:"success"`
	Message   string `json:"message"`
	ErrorCode string `json:"error_code" jsonschema:"enum=MISSING_PARAMS,enum=UNAUTHORIZED,enum=INSUFFICIENT_BALANCE,enum=AGENT_NOT_FOUND,enum=CALL_NOT_FOUND,enum=INTERNAL_ERROR"`
}

// Call24x7Status maps a Parley call status to Call24x7's (see the table above).
func Call24x7Status(status string) string {
	switch status {
	case calls.StatusRegistered, calls.StatusRinging:
		return "RINGING"
	case calls.StatusInProgress:
		return "IN_PROGRESS"
	case calls.StatusCompleted, calls.StatusVoicemail:
		return "COMPLETED"
	case calls.StatusFailed, calls.StatusNoAnswer, calls.StatusBusy:
		return "FAILED"
	}
	return "IDLE"
}

// call24x7 adapts a handler to Call24x7's error envelope with the exact codes and
// statuses above; the route's errorsCall24x7 style covers what the middleware refuses
// before the handler runs.
func (s *Server) call24x7(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		err := h(w, r)
		if err == nil {
			return nil
		}
		status, body := s.call24x7Failure(r, err)
		if sw, ok := w.(*statusWriter); ok && sw.wroteHeader {
			return nil
		}
		writeJSON(w, status, body)
		return nil
	}
}

// call24x7Failure maps err to Call24x7's status and envelope, logging 5xx.
func (s *Server) call24x7Failure(r *http.Request, err error) (int, call24x7ErrorBody) {
	fail := func(status int, code, msg string) (int, call24x7ErrorBody) {
		return status, call24x7ErrorBody{Message: msg, ErrorCode: code}
	}
	e, ok := errs.As(err)
	switch {
	case errors.Is(err, billing.ErrInsufficientBalance):
		return fail(http.StatusPaymentRequired, "INSUFFICIENT_BALANCE", e.Detail)
	case errors.Is(err, calls.ErrAgentNotFound), errors.Is(err, calls.ErrAgentInactive):
		return fail(http.StatusNotFound, "AGENT_NOT_FOUND", e.Detail)
	case errors.Is(err, calls.ErrNotFound):
		return fail(http.StatusNotFound, "CALL_NOT_FOUND", e.Detail)
	case errors.Is(err, telephony.ErrNoLine):
		return fail(http.StatusBadRequest, "MISSING_PARAMS", telephony.ErrNoLine.Fields["from_number"])
	case ok && (e.Kind == errs.KindUnauthorized || e.Kind == errs.KindForbidden):
		return fail(http.StatusUnauthorized, "UNAUTHORIZED", e.Detail)
	case ok && (e.Kind == errs.KindBadRequest || e.Kind == errs.KindInvalid || e.Kind == errs.KindTooLarge):
		return fail(http.StatusBadRequest, "MISSING_PARAMS", call24x7Message(e))
	}
	s.log.ErrorContext(r.Context(), "request failed", "request_id", requestID(r.Context()),
		"method", r.Method, "path", r.URL.Path, "err", err)
	return fail(http.StatusInternalServerError, "INTERNAL_ERROR", "Internal server error (request "+requestID(r.Context())+")")
}

// call24x7Fields renames Parley's field names to the ones Call24x7 clients sent.
var call24x7Fields = map[string]string{
	"to_number":       "to_phone_number",
	"variables":       "input_parameters",
	"idempotency_key": "Idempotency-Key",
}

func call24x7Field(f string) string {
	head, rest, dotted := strings.Cut(f, ".")
	if n, ok := call24x7Fields[head]; ok {
		head = n
	}
	if dotted {
		return head + "." + rest
	}
	return head
}

// call24x7Message words a validation error as Call24x7 does: "Missing required
// parameter: to_phone_number", or what is wrong with each invalid one.
func call24x7Message(e *errs.Error) string {
	if len(e.Fields) == 0 {
		return e.Detail
	}
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var missing, invalid []string
	for _, k := range keys {
		msg := e.Fields[k]
		if strings.HasPrefix(msg, "is required") {
			missing = append(missing, call24x7Field(k))
			continue
		}
		invalid = append(invalid, call24x7Field(k)+" "+msg)
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "Missing required parameter: "+strings.Join(missing, ", "))
	}
	if len(invalid) > 0 {
		parts = append(parts, "Invalid parameter: "+strings.Join(invalid, "; "))
	}
	return strings.Join(parts, ". ")
}

// requireScope checks an API key's scope inside a handler, for routes whose scope
// depends on the request (GET /outbound_call reads or starts a call).
func requireScope(r *http.Request, scope string) error {
	return principal(r).Require(scope)
}

func (s *Server) handleCall24x7Post(w http.ResponseWriter, r *http.Request) error {
	if err := requireScope(r, "calls:write"); err != nil {
		return err
	}
	var req call24x7Request
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	return s.startCall24x7(w, r, req)
}

func (s *Server) handleCall24x7Get(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if id := strings.TrimSpace(q.Get("call_id")); id != "" {
		if err := requireScope(r, "calls:read"); err != nil {
			return err
		}
		return s.call24x7CallStatus(w, r, id)
	}
	if q.Get("to_phone_number") == "" && q.Get("agent_id") == "" && q.Get("instruction") == "" {
		return errs.Invalid(map[string]string{"call_id": "is required (or to_phone_number with agent_id to start a call)"})
	}
	if err := requireScope(r, "calls:write"); err != nil {
		return err
	}
	return s.startCall24x7(w, r, call24x7Request{
		ToPhoneNumber: q.Get("to_phone_number"), AgentID: q.Get("agent_id"), Instruction: q.Get("instruction"),
		WebhookURL: q.Get("webhook_url"), ExternalID: q.Get("external_id"),
	})
}

func (s *Server) call24x7CallStatus(w http.ResponseWriter, r *http.Request, id string) error {
	svc, err := s.callsService()
	if err != nil {
		return err
	}
	c, err := svc.Get(r.Context(), principal(r).TenantID, id)
	if err != nil {
		return err
	}
	ext, _ := c.Metadata[calls.MetaExternalID].(string)
	writeJSON(w, http.StatusOK, call24x7StatusResponse{
		call24x7Response: call24x7Response{Success: true, CallID: c.CallID, Status: Call24x7Status(c.CallStatus),
			Message: "Call status retrieved successfully"},
		CallDirection: c.Direction, FromPhoneNumber: c.FromNumber, ToPhoneNumber: c.ToNumber,
		AgentID: c.AgentID, DurationSeconds: float64(c.DurationMS) / 1000, ExternalID: ext,
		RecordingURL: c.RecordingURL, Transcription: c.Transcript, OutputParameters: c.OutputParameters(),
	})
	return nil
}

// startCall24x7 places the call of a POST (or a starting GET).
func (s *Server) startCall24x7(w http.ResponseWriter, r *http.Request, req call24x7Request) error {
	svc, err := s.callsService()
	if err != nil {
		return err
	}
	if strings.TrimSpace(req.ToPhoneNumber) == "" {
		// Checked first so that its message is Call24x7's own example, whatever else
		// is missing too.
		return errs.Invalid(map[string]string{"to_phone_number": "is required"})
	}
	vars, err := stringValues("input_parameters", req.InputParameters)
	if err != nil {
		return err
	}
	out, err := outputTemplate(req.OutputParameters)
	if err != nil {
		return err
	}
	key := r.Header.Get(idempotencyHeader)
	var meta map[string]any
	if id := strings.TrimSpace(req.CallID); id != "" {
		if len(id) > 255 {
			return errs.Invalid(map[string]string{"call_id": "must be at most 255 characters"})
		}
		meta = map[string]any{"call24x7_call_id": id}
		if key == "" {
			// Hashed: any string the client chose makes a valid key.
			sum := sha256.Sum256([]byte(id))
			key = "call24x7-call-id:" + hex.EncodeToString(sum[:])
		}
	}
	in := calls.OutboundInput{
		AgentID: req.AgentID, Instruction: req.Instruction, ToNumber: req.ToPhoneNumber,
		Variables: vars, WebhookURL: req.WebhookURL, ExternalID: req.ExternalID,
		OutputParameters: out, Metadata: meta, IdempotencyKey: key,
	}
	if strings.TrimSpace(in.AgentID) == "" && strings.TrimSpace(in.Instruction) == "" {
		return errs.Invalid(map[string]string{"agent_id": "is required (or instruction)"})
	}
	c, replayed, err := svc.CreateOutboundReplay(r.Context(), principal(r).TenantID, in)
	if err != nil {
		return err
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	// The call is queued for dialling: Call24x7 calls that RINGING.
	writeJSON(w, http.StatusOK, call24x7Response{Success: true, CallID: c.CallID, Status: Call24x7Status(c.CallStatus),
		Message: "Call initiated successfully"})
	return nil
}

// outputTemplate reads output_parameters: an object of field → description, or the
// same object as a JSON string (as some clients send it). Descriptions that are not
// strings are used as their JSON.
func outputTemplate(v any) (map[string]string, error) {
	bad := errs.Invalid(map[string]string{"output_parameters": "must be an object of field name to description"})
	switch t := v.(type) {
	case nil:
		return nil, nil
	case string:
		if strings.TrimSpace(t) == "" {
			return nil, nil
		}
		var m map[string]any
		if json.Unmarshal([]byte(t), &m) != nil {
			return nil, bad
		}
		v = m
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, bad
	}
	out, err := stringValues("output_parameters", m)
	if err != nil {
		return nil, err
	}
	return out, nil
}
