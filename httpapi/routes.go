package httpapi

import (
	"net/http"

	"github.com/parleyhq/parley/calls"
	"github.com/parleyhq/parley/knowledge"
)

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
		{Method: "GET", Path: "/call", Auth: authSystem, Handle: s.handleCallPage, Tag: "System", Summary: "Test-call page: talk to an agent in the browser"},
		{Method: "GET", Path: "/assets/{file}", Auth: authSystem, Handle: s.handleAsset, Tag: "System", Summary: "Built browser assets"},

		// --- accounts ---
		// Auth
		{Method: "POST", Path: "/v1/auth/register", Auth: authPublic, Handle: s.handleRegister, Tag: "Auth", Summary: "Register a user and their tenant", Request: registerRequest{}, Response: userBody{}, Status: 201},
		{Method: "POST", Path: "/v1/auth/login", Auth: authPublic, Handle: s.handleLogin, Tag: "Auth", Summary: "Log in; returns an access and a refresh token", Request: loginRequest{}, Response: loginResponse{}},
		{Method: "POST", Path: "/v1/auth/refresh", Auth: authPublic, Handle: s.handleRefresh, Tag: "Auth", Summary: "Rotate a refresh token for a new token pair; reusing an old one revokes the session", Request: refreshRequest{}, Response: tokenPairBody{}},
		{Method: "GET", Path: "/v1/auth/me", Auth: authUser, Handle: s.handleMe, Tag: "Auth", Summary: "The current user", Response: userBody{}},
		{Method: "POST", Path: "/v1/auth/logout", Auth: authUser, Handle: s.handleLogout, Tag: "Auth", Summary: "Revoke the current session (and that of refresh_token, if given)", Request: logoutRequest{}, Response: okResponse{}},

		// Users
		{Method: "GET", Path: "/v1/users/me", Auth: authUser, Scope: "users:read", Handle: s.handleMe, Tag: "Users", Summary: "The current user", Response: userBody{}},
		{Method: "PATCH", Path: "/v1/users/me", Auth: authUser, Handle: s.handleUpdateMe, Tag: "Users", Summary: "Change the current user's profile (API keys need users:write)", Request: updateUserRequest{}, Response: userBody{}},
		{Method: "GET", Path: "/v1/users/me/stats", Auth: authUser, Scope: "users:read", Handle: s.handleUserStats, Tag: "Users", Summary: "Account statistics", Response: accountStats{}},
		{Method: "GET", Path: "/v1/users/me/usage", Auth: authUser, Scope: "users:read", Handle: s.handleUserUsage, Tag: "Users", Summary: "Call usage over a period", Response: usageBody{}, Query: daysQuery},
		{Method: "GET", Path: "/v1/users/me/usage/daily", Auth: authUser, Scope: "users:read", Handle: s.handleUserDailyUsage, Tag: "Users", Summary: "Call usage per day, zero days included", Response: []dailyUsageBody{}, Query: daysQuery},
		{Method: "GET", Path: "/v1/users/me/branding", Auth: authUser, Scope: "users:read", Handle: s.handleGetBranding, Tag: "Users", Summary: "White-label settings", Response: brandingBody{}},
		{Method: "PUT", Path: "/v1/users/me/branding", Auth: authUser, Scope: "users:write", Handle: s.handleSetBranding, Tag: "Users", Summary: "Set white-label settings (owners and admins)", Request: brandingBody{}, Response: brandingBody{}},
		{Method: "GET", Path: "/v1/users/me/tenant/members", Auth: authUser, Scope: "users:read", Handle: s.handleListMembers, Tag: "Users", Summary: "Members of the tenant", Response: memberList{}, List: true,
			Query: map[string]string{"page": "page number from 1 (with per_page, instead of offset)", "per_page": "members per page, 1 to 100"}},
		{Method: "POST", Path: "/v1/users/me/tenant/members", Auth: authUser, Scope: "users:write", Handle: s.handleAddMember, Tag: "Users", Summary: "Add an existing user to the tenant (owners and admins)", Request: addMemberRequest{}, Response: memberBody{}, Status: 201},
		{Method: "PATCH", Path: "/v1/users/me/tenant/members/{user_id}", Auth: authUser, Scope: "users:write", Handle: s.handleUpdateMember, Tag: "Users", Summary: "Change a member's role (owners and admins)", Request: updateMemberRequest{}, Response: memberBody{}},
		{Method: "DELETE", Path: "/v1/users/me/tenant/members/{user_id}", Auth: authUser, Scope: "users:write", Handle: s.handleRemoveMember, Tag: "Users", Summary: "Remove a member (owners and admins)", Status: 204},

		// API keys
		{Method: "POST", Path: "/v1/api-keys", Auth: authUser, Scope: "api_keys:write", Handle: s.handleCreateAPIKey, Tag: "API keys", Summary: "Create an API key; the secret is returned once", Request: createKeyRequest{}, Response: createdKey{}, Status: 201},
		{Method: "GET", Path: "/v1/api-keys", Auth: authUser, Scope: "api_keys:read", Handle: s.handleListAPIKeys, Tag: "API keys", Summary: "List API keys", Response: listOf{Name: "api_keys", Item: apiKeyBody{}}, List: true},
		{Method: "PATCH", Path: "/v1/api-keys/{id}/revoke", Auth: authUser, Scope: "api_keys:write", Handle: s.handleRevokeAPIKey, Tag: "API keys", Summary: "Revoke an API key", Response: apiKeyBody{}},
		{Method: "DELETE", Path: "/v1/api-keys/{id}", Auth: authUser, Scope: "api_keys:write", Handle: s.handleDeleteAPIKey, Tag: "API keys", Summary: "Delete an API key", Status: 204},
		{Method: "GET", Path: "/v1/api-keys/{id}/usage", Auth: authUser, Scope: "api_keys:read", Handle: s.handleAPIKeyUsage, Tag: "API keys", Summary: "Requests per day made with an API key", Response: keyUsageBody{}, Query: daysQuery},

		// Public
		{Method: "GET", Path: "/v1/branding/{domain}", Auth: authPublic, Handle: s.handleBrandingByDomain, Tag: "Public", Summary: "White-label branding for a domain", Response: brandingBody{}},

		// --- agents ---
		{Method: "POST", Path: "/v1/agents", Auth: authUser, Scope: "agents:write", Handle: s.handleCreateAgent, Tag: "Agents", Summary: "Create an agent", Request: agentDoc, Response: agentDoc, Status: http.StatusCreated},
		{Method: "GET", Path: "/v1/agents", Auth: authUser, Scope: "agents:read", Handle: s.handleListAgents, Tag: "Agents", Summary: "List agents, newest first", Response: listOf{Name: "agents", Item: agentDoc}, List: true},
		{Method: "GET", Path: "/v1/agents/stats/global", Auth: authUser, Scope: "agents:read", Handle: s.handleGlobalAgentStats, Tag: "Agents", Summary: "Call statistics for all agents", Response: globalStatsDoc, Query: statsQuery},
		{Method: "GET", Path: "/v1/agents/{id}", Auth: authUser, Scope: "agents:read", Handle: s.handleGetAgent, Tag: "Agents", Summary: "Get an agent", Response: agentDoc},
		{Method: "PATCH", Path: "/v1/agents/{id}", Auth: authUser, Scope: "agents:write", Handle: s.handlePatchAgent, Tag: "Agents", Summary: "Change an agent (JSON merge patch; null resets a field)", Request: agentDoc, Response: agentDoc},
		{Method: "DELETE", Path: "/v1/agents/{id}", Auth: authUser, Scope: "agents:write", Handle: s.handleDeleteAgent, Tag: "Agents", Summary: "Delete an agent", Status: http.StatusNoContent},
		{Method: "POST", Path: "/v1/agents/{id}/duplicate", Auth: authUser, Scope: "agents:write", Handle: s.handleDuplicateAgent, Tag: "Agents", Summary: "Copy an agent", Response: agentDoc, Status: http.StatusCreated},
		{Method: "GET", Path: "/v1/agents/{id}/stats", Auth: authUser, Scope: "agents:read", Handle: s.handleAgentStats, Tag: "Agents", Summary: "Call statistics for one agent", Response: statsDoc, Query: statsQuery},
		{Method: "POST", Path: "/v1/agents/{id}/test-function", Auth: authUser, Scope: "agents:write", Handle: s.handleTestFunction, Tag: "Agents", Summary: "Call one of the agent's function webhooks and report status, body and latency", Request: testFunctionRequest{}, Response: testResultDoc},

		// --- knowledge ---
		{Method: "POST", Path: "/v1/knowledge-base", Auth: authUser, Scope: "knowledge:write", Handle: s.handleCreateKB, Tag: "Knowledge base", Summary: "Create a knowledge base", Request: kbCreateRequest{}, Response: kbDoc, Status: http.StatusCreated},
		{Method: "GET", Path: "/v1/knowledge-base", Auth: authUser, Scope: "knowledge:read", Handle: s.handleListKBs, Tag: "Knowledge base", Summary: "List knowledge bases", Response: listOf{Name: "knowledge_bases", Item: kbDoc}, List: true},
		{Method: "GET", Path: "/v1/knowledge-base/{id}", Auth: authUser, Scope: "knowledge:read", Handle: s.handleGetKB, Tag: "Knowledge base", Summary: "Get a knowledge base with its sources", Response: kbWithSources{}},
		{Method: "PATCH", Path: "/v1/knowledge-base/{id}", Auth: authUser, Scope: "knowledge:write", Handle: s.handlePatchKB, Tag: "Knowledge base", Summary: "Change a knowledge base (a new embedder re-embeds in the background)", Request: kbCreateRequest{}, Response: kbDoc},
		{Method: "DELETE", Path: "/v1/knowledge-base/{id}", Auth: authUser, Scope: "knowledge:write", Handle: s.handleDeleteKB, Tag: "Knowledge base", Summary: "Delete a knowledge base (and detach it from agents)", Status: http.StatusNoContent},
		{Method: "GET", Path: "/v1/knowledge-base/{id}/sources", Auth: authUser, Scope: "knowledge:read", Handle: s.handleListSources, Tag: "Knowledge base", Summary: "List a knowledge base's sources with ingestion status", Response: listOf{Name: "sources", Item: sourceDoc}, List: true},
		{Method: "POST", Path: "/v1/knowledge-base/{id}/sources", Auth: authUser, Scope: "knowledge:write", Handle: s.handleAddSource, Tag: "Knowledge base", Summary: "Add a source: JSON {type: text|url|file, content, name} or multipart with a file part", Request: sourceRequest{}, Response: sourceDoc, Status: http.StatusAccepted, MaxBody: s.uploadLimit()},
		{Method: "GET", Path: "/v1/knowledge-base/{id}/sources/{src}", Auth: authUser, Scope: "knowledge:read", Handle: s.handleGetSource, Tag: "Knowledge base", Summary: "Get a source and its ingestion progress", Response: sourceDoc},
		{Method: "DELETE", Path: "/v1/knowledge-base/{id}/sources/{src}", Auth: authUser, Scope: "knowledge:write", Handle: s.handleDeleteSource, Tag: "Knowledge base", Summary: "Remove a source and its chunks", Status: http.StatusNoContent},
		{Method: "POST", Path: "/v1/knowledge-base/{id}/query", Auth: authUser, Scope: "knowledge:read", Handle: s.handleQueryKB, Tag: "Knowledge base", Summary: "Hybrid search: ranked chunks with scores and their sources", Request: knowledge.Query{}, Response: queryResponse{}},

		// --- calls ---
		{Method: "GET", Path: "/v1/calls", Auth: authUser, Scope: "calls:read", Handle: s.handleListCalls, Tag: "Calls", Summary: "List calls, newest first", Response: listOf{Name: "calls", Item: callDoc}, List: true, Query: callListQuery},
		{Method: "POST", Path: "/v1/calls/web", Auth: authUser, Scope: "calls:write", Handle: s.handleCreateWebCall, Tag: "Calls", Summary: "Start a browser call: creates the call and its LiveKit room with the agent dispatched, and returns the call with an access token", Request: webCallRequest{}, Response: calls.WebCall{}, Status: http.StatusCreated},
		{Method: "GET", Path: "/v1/calls/{id}", Auth: authUser, Scope: "calls:read", Handle: s.handleGetCall, Tag: "Calls", Summary: "Get a call with its transcript and latency (live while it runs)", Response: callDoc},
		{Method: "GET", Path: "/v1/calls/{id}/transcript", Auth: authUser, Scope: "calls:read", Handle: s.handleCallTranscript, Tag: "Calls", Summary: "A call's transcript", Response: transcriptResponse{}},
		{Method: "POST", Path: "/v1/calls/{id}/end", Auth: authUser, Scope: "calls:write", Handle: s.handleEndCall, Tag: "Calls", Summary: "End a live call (deletes its room; the record shows api_ended once the agent has left)", Response: callDoc},

		// --- livekit ---
		{Method: "POST", Path: "/v1/livekit/token", Auth: authUser, Scope: "calls:write", Handle: s.handleLiveKitToken, Tag: "LiveKit", Summary: "Start a browser voice call and get its LiveKit token", Request: webCallRequest{}, Response: liveKitTokenResponse{}},
		{Method: "GET", Path: "/v1/livekit/health", Auth: authUser, Scope: "calls:read", Handle: s.handleLiveKitHealth, Tag: "LiveKit", Summary: "LiveKit configuration check: configured, reachable, credentials accepted", Response: calls.LiveKitHealth{}},
	}
}

// uploadLimit is the body limit of source uploads: the file limit plus room for
// multipart framing or base64 (4/3) in JSON.
func (s *Server) uploadLimit() int64 {
	return s.cfg.MaxUploadBytes*4/3 + 1<<20
}

func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request) error {
	http.Redirect(w, r, "/docs", http.StatusFound)
	return nil
}
