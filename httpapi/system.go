package httpapi

import (
	"context"
	"net/http"
	"time"
)

type pingResponse struct {
	Pong string    `json:"pong"`
	Time time.Time `json:"time"`
}

func (s *Server) handlePing(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, pingResponse{Pong: "pong", Time: time.Now().UTC()})
	return nil
}

type healthResponse struct {
	Status  string `json:"status"`
	Version string `json:"version,omitempty"`
}

// handleHealthz is liveness: the process serves HTTP. It checks no dependency, so an
// orchestrator does not restart healthy processes when the database blips.
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, healthResponse{Status: "ok", Version: s.deps.Version})
	return nil
}

type readyCheckResult struct {
	Status    string  `json:"status"`
	Error     string  `json:"error,omitempty"`
	LatencyMS float64 `json:"latency_ms"`
	Optional  bool    `json:"optional,omitempty"`
}

type readyResponse struct {
	Status string                      `json:"status"`
	Checks map[string]readyCheckResult `json:"checks"`
}

// handleReadyz is readiness: every required dependency (database, job queue, and
// LiveKit when configured) answers within 2 s. Checks run in parallel.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	type res struct {
		name string
		readyCheckResult
	}
	out := make(chan res, len(s.deps.Ready))
	for _, c := range s.deps.Ready {
		go func() {
			start := time.Now()
			err := c.Check(ctx)
			rr := res{name: c.Name, readyCheckResult: readyCheckResult{Status: "ok", Optional: c.Optional,
				LatencyMS: float64(time.Since(start).Microseconds()) / 1000}}
			if err != nil {
				rr.Status, rr.Error = "fail", err.Error()
			}
			out <- rr
		}()
	}
	resp := readyResponse{Status: "ok", Checks: map[string]readyCheckResult{}}
	status := http.StatusOK
	for range s.deps.Ready {
		rr := <-out
		resp.Checks[rr.name] = rr.readyCheckResult
		if rr.Status != "ok" && !rr.Optional {
			resp.Status, status = "unavailable", http.StatusServiceUnavailable
		}
	}
	writeJSON(w, status, resp)
	return nil
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) error {
	s.promh.ServeHTTP(w, r)
	return nil
}
