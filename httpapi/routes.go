package httpapi

import "net/http"

// routes is Parley's one route table. Every public path is here, with its auth mode,
// the API-key scope it needs and the body types OpenAPI documents.
func (s *Server) routes() []route {
	return []route{
		// --- system ---
		{Method: "GET", Path: "/v1/ping", Auth: authSystem, Handle: s.handlePing, Tag: "System", Summary: "Ping", Response: pingResponse{}},
		{Method: "GET", Path: "/healthz", Auth: authSystem, Handle: s.handleHealthz, Tag: "System", Summary: "Liveness", Response: healthResponse{}},
		{Method: "GET", Path: "/readyz", Auth: authSystem, Handle: s.handleReadyz, Tag: "System", Summary: "Readiness: database, job queue and LiveKit reachable", Response: readyResponse{}},
		{Method: "GET", Path: "/metrics", Auth: authSystem, Handle: s.handleMetrics, Tag: "System", Summary: "Prometheus metrics"},
		{Method: "GET", Path: "/openapi.json", Auth: authSystem, Handle: s.handleOpenAPI, Tag: "System", Summary: "This API's OpenAPI 3.1 document"},
		{Method: "GET", Path: "/docs", Auth: authSystem, Handle: s.handleDocs, Tag: "System", Summary: "Human-readable API reference"},
		{Method: "GET", Path: "/{$}", Auth: authSystem, Handle: s.handleIndex, Tag: "System", Summary: "Landing page"},

		// --- accounts ---

		// --- agents ---
	}
}

func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request) error {
	http.Redirect(w, r, "/docs", http.StatusFound)
	return nil
}
