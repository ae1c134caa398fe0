package httpapi

import (
	"net/http"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/telephony"
)

// Handlers for /v1/sip-trunks and /v1/phone-numbers. A number in a path is its E.164
// form ("+14155550100", "%2B14155550100" or, as LiveKit writes them, without the "+") or
// its ID (pn_…), which Call2Me's SDKs send.

var (
	trunkDoc       = telephony.Trunk{}
	phoneNumberDoc = telephony.PhoneNumber{}
	errTelephony   = errs.New(errs.KindUnavailable, "telephony_unavailable", "Phone numbers and SIP trunks are not available on this server (LiveKit is not configured)")
)

// bindRequest is the body of POST /v1/phone-numbers/{number}/bind (and /assign).
type bindRequest struct {
	AgentID string `json:"agent_id" jsonschema:"required"`
}

// telephonyService returns the telephony service, or a 503 when the server has none.
func (s *Server) telephonyService() (*telephony.Service, error) {
	if s.deps.Telephony == nil {
		return nil, errTelephony
	}
	return s.deps.Telephony, nil
}

func (s *Server) handleCreateTrunk(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.telephonyService()
	if err != nil {
		return err
	}
	var in telephony.TrunkInput
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	if in.Name == nil {
		in.Name = new(string) // reported as required
	}
	t, err := svc.CreateTrunk(r.Context(), principal(r).TenantID, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, t)
	return nil
}

func (s *Server) handleListTrunks(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.telephonyService()
	if err != nil {
		return err
	}
	return writeList(w, r, "sip_trunks", svc.ListTrunks)
}

func (s *Server) handleGetTrunk(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.telephonyService()
	if err != nil {
		return err
	}
	t, err := svc.GetTrunk(r.Context(), principal(r).TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (s *Server) handlePatchTrunk(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.telephonyService()
	if err != nil {
		return err
	}
	var in telephony.TrunkInput
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	t, err := svc.UpdateTrunk(r.Context(), principal(r).TenantID, r.PathValue("id"), in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (s *Server) handleDeleteTrunk(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.telephonyService()
	if err != nil {
		return err
	}
	if err := svc.DeleteTrunk(r.Context(), principal(r).TenantID, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleTestTrunk answers 200 whatever the outcome: an unreachable trunk is the report
// (reachable false), not a failure of the request.
func (s *Server) handleTestTrunk(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.telephonyService()
	if err != nil {
		return err
	}
	res, err := svc.TestTrunk(r.Context(), principal(r).TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) handleListNumbers(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.telephonyService()
	if err != nil {
		return err
	}
	return writeList(w, r, "phone_numbers", svc.ListNumbers)
}

func (s *Server) handleCreateNumber(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.telephonyService()
	if err != nil {
		return err
	}
	var in telephony.NumberInput
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	n, err := svc.CreateNumber(r.Context(), principal(r).TenantID, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, n)
	return nil
}

func (s *Server) handleBuyNumber(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.telephonyService()
	if err != nil {
		return err
	}
	var in telephony.BuyInput
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	n, err := svc.Buy(r.Context(), principal(r).TenantID, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, n)
	return nil
}

func (s *Server) handleGetNumber(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.telephonyService()
	if err != nil {
		return err
	}
	n, err := svc.GetNumber(r.Context(), principal(r).TenantID, r.PathValue("number"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, n)
	return nil
}

func (s *Server) handlePatchNumber(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.telephonyService()
	if err != nil {
		return err
	}
	var p telephony.NumberPatch
	if err := decodeJSON(r, &p); err != nil {
		return err
	}
	n, err := svc.UpdateNumber(r.Context(), principal(r).TenantID, r.PathValue("number"), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, n)
	return nil
}

func (s *Server) handleDeleteNumber(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.telephonyService()
	if err != nil {
		return err
	}
	if err := svc.DeleteNumber(r.Context(), principal(r).TenantID, r.PathValue("number")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleBindNumber(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.telephonyService()
	if err != nil {
		return err
	}
	var req bindRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	n, err := svc.Bind(r.Context(), principal(r).TenantID, r.PathValue("number"), req.AgentID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, n)
	return nil
}

func (s *Server) handleUnbindNumber(w http.ResponseWriter, r *http.Request) error {
	svc, err := s.telephonyService()
	if err != nil {
		return err
	}
	n, err := svc.Unbind(r.Context(), principal(r).TenantID, r.PathValue("number"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, n)
	return nil
}
