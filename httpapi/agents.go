package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/parleyhq/parley/agents"
	"github.com/parleyhq/parley/internal/errs"
)

// Handlers for /v1/agents. Bodies go to the agents service as raw bytes: it parses them
// itself so that alias fields, merge-patch nulls and type errors are reported precisely.

// Body types of the agents routes, for OpenAPI (routes.go).
var (
	agentDoc       = agents.Agent{}
	statsDoc       = agents.Stats{}
	globalStatsDoc = agents.GlobalStats{}
	testResultDoc  = agents.TestResult{}
	statsQuery     = map[string]string{"days": "window in UTC days ending today, 1 to 365 (default 30)"}
)

func (s *Server) handleCreateAgent(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	a, err := s.deps.Agents.Create(r.Context(), principal(r).TenantID, body)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, a)
	return nil
}

func (s *Server) handleListAgents(w http.ResponseWriter, r *http.Request) error {
	return writeList(w, r, "agents", s.deps.Agents.ListJSON)
}

// handleGetAgent serves the JSON the agents service rendered when the agent was last
// written: the hottest read in the API does one indexed query and no encoding.
func (s *Server) handleGetAgent(w http.ResponseWriter, r *http.Request) error {
	view, err := s.deps.Agents.GetJSON(r.Context(), principal(r).TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeRawJSON(w, http.StatusOK, view)
	return nil
}

func (s *Server) handlePatchAgent(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	a, err := s.deps.Agents.Patch(r.Context(), principal(r).TenantID, r.PathValue("id"), body)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func (s *Server) handleDeleteAgent(w http.ResponseWriter, r *http.Request) error {
	if err := s.deps.Agents.Delete(r.Context(), principal(r).TenantID, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleDuplicateAgent(w http.ResponseWriter, r *http.Request) error {
	a, err := s.deps.Agents.Duplicate(r.Context(), principal(r).TenantID, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, a)
	return nil
}

func (s *Server) handleAgentStats(w http.ResponseWriter, r *http.Request) error {
	days, err := intParam(r, "days", agents.DefaultStatsDays, 1, agents.MaxStatsDays)
	if err != nil {
		return err
	}
	st, err := s.deps.Agents.Stats(r.Context(), principal(r).TenantID, r.PathValue("id"), days)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) handleGlobalAgentStats(w http.ResponseWriter, r *http.Request) error {
	days, err := intParam(r, "days", agents.DefaultStatsDays, 1, agents.MaxStatsDays)
	if err != nil {
		return err
	}
	st, err := s.deps.Agents.GlobalStats(r.Context(), principal(r).TenantID, days)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// testFunctionRequest is the body of POST /v1/agents/{id}/test-function.
type testFunctionRequest struct {
	FunctionName string          `json:"function_name" jsonschema:"required"`
	Arguments    json.RawMessage `json:"arguments,omitempty"`
}

func (s *Server) handleTestFunction(w http.ResponseWriter, r *http.Request) error {
	var req testFunctionRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.FunctionName == "" {
		return errs.Invalid(map[string]string{"function_name": "is required"})
	}
	res, err := s.deps.Agents.TestFunction(r.Context(), principal(r).TenantID, r.PathValue("id"), req.FunctionName, req.Arguments)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// writeRawJSON writes an already-encoded JSON value, newline-terminated like writeJSON.
func writeRawJSON(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
	w.Write([]byte{'\n'})
}
