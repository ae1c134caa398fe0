package httpapi

import (
	"net/http"

	"github.com/parleyhq/parley/calls"
	"github.com/parleyhq/parley/internal/errs"
)

// Handlers for /v1/calls and /v1/livekit. Browser calls (POST /v1/calls/web and POST
// /v1/livekit/token) both create a call record and its LiveKit room with the agent
// dispatched; they differ only in the response shape each API's SDKs expect.

var (
	callDoc        = calls.Call{}
	callListQuery  = map[string]string{"agent_id": "only this agent's calls"}
	errCallsAbsent = errs.New(errs.KindUnavailable, "calls_unavailable", "Calls are not available on this server")
)

// webCallRequest is the body of POST /v1/calls/web and POST /v1/livekit/token.
type webCallRequest struct {
	AgentID string `json:"agent_id" jsonschema:"required"`
	// Metadata is stored with the call and shown back on it.
	Metadata map[string]any `json:"metadata,omitempty"`
}

// liveKitTokenResponse is POST /v1/livekit/token's answer.
type liveKitTokenResponse struct {
	Token    string `json:"token"`
	URL      string `json:"url"`
	RoomName string `json:"room_name"`
	CallID   string `json:"call_id"`
}

// transcriptResponse is GET /v1/calls/{id}/transcript's answer.
type transcriptResponse struct {
	CallID           string       `json:"call_id"`
	CallStatus       string       `json:"call_status"`
	Transcript       string       `json:"transcript"`
	TranscriptObject []calls.Turn `json:"transcript_object"`
}

// callsService returns the calls service, or a 503 when the server has none.
func (s *Server) callsService() (*calls.Service, error) {
	if s.deps.Calls == nil {
		return nil, errCallsAbsent
	}
	return s.deps.Calls, nil
}

func (s *Server) handleListCalls(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.callsService()
	if err != nil {
		return err
	}
	limit, offset, err := listParams(r)
	if err != nil {
		return err
	}
	list, total, err := svc.List(r.Context(), principal(r).TenantID,
		calls.ListParams{AgentID: r.URL.Query().Get("agent_id"), Limit: limit, Offset: offset})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, listBody("calls", list, total, limit, offset))
	return nil
}

// pathCall is the tenant's call named in the path.
func (s *Server) pathCall(r *http.Request) (calls.Call, error) {
	svc, err := s.callsService()
	if err != nil {
		return calls.Call{}, err
	}
	return svc.Get(r.Context(), principal(r).TenantID, r.PathValue("id"))
}

func (s *Server) handleGetCall(w http.ResponseWriter, r *http.Request) error {
	c, err := s.pathCall(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

func (s *Server) handleCallTranscript(w http.ResponseWriter, r *http.Request) error {
	c, err := s.pathCall(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, transcriptResponse{CallID: c.CallID, CallStatus: c.CallStatus,
		Transcript: c.Transcript, TranscriptObject: c.TranscriptObject})
	return nil
}

// handleEndCall deletes the call's room. A call that had begun is still in_progress
// in the answer: its worker records the end (api_ended) within moments.
func (s *Server) handleEndCall(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.callsService()
	if err != nil {
		return err
	}
	c, err := svc.End(r.Context(), principal(r).TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

// startWebCall decodes a browser-call request and starts the call.
func (s *Server) startWebCall(r *http.Request) (calls.WebCall, error) {
	svc, err := s.callsService()
	if err != nil {
		return calls.WebCall{}, err
	}
	var req webCallRequest
	if err := decodeJSON(r, &req); err != nil {
		return calls.WebCall{}, err
	}
	return svc.StartWeb(r.Context(), principal(r).TenantID, req.AgentID, req.Metadata)
}

func (s *Server) handleCreateWebCall(w http.ResponseWriter, r *http.Request) error {
	wc, err := s.startWebCall(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, wc)
	return nil
}

func (s *Server) handleLiveKitToken(w http.ResponseWriter, r *http.Request) error {
	wc, err := s.startWebCall(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, liveKitTokenResponse{Token: wc.Token, URL: wc.URL, RoomName: wc.RoomName, CallID: wc.CallID})
	return nil
}

// handleLiveKitHealth reports on LiveKit; it answers 200 whatever the state, since the
// report is the answer (/readyz is the probe that fails).
func (s *Server) handleLiveKitHealth(w http.ResponseWriter, r *http.Request) error {
	if s.deps.Calls == nil {
		writeJSON(w, http.StatusOK, calls.LiveKitHealth{Status: "unconfigured"})
		return nil
	}
	writeJSON(w, http.StatusOK, s.deps.Calls.Health(r.Context()))
	return nil
}
