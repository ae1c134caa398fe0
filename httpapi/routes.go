package httpapi

import (
	"net/http"

	"github.com/parleyhq/parley/calls"
	"github.com/parleyhq/parley/knowledge"
	"github.com/parleyhq/parley/telephony"
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

		// --- outbound calls (POST /v1/calls/outbound) ---
		{Method: "POST", Path: "/v1/calls/outbound", Auth: authUser, Scope: "calls:write", Handle: s.handleCreateOutboundCall, Tag: "Calls", Summary: "Place an outbound phone call: creates the call (registered) and queues its dial. Send Idempotency-Key to make retries safe; 402 insufficient_balance when billing is enforced and the wallet is empty", Request: outboundRequest{}, Response: callDoc, Status: http.StatusCreated},

		// --- recordings ---
		{Method: "GET", Path: "/v1/calls/{id}/recording", Auth: authUser, Scope: "calls:read", Handle: s.handleCallRecording, Tag: "Calls", Summary: "A call's recording, both sides mixed (audio/ogg or audio/wav; Range requests supported). 404 recording_not_found while the call is live or when it was not recorded"},

		// --- phone numbers and SIP trunks ---
		{Method: "POST", Path: "/v1/sip-trunks", Auth: authUser, Scope: "phone_numbers:write", Handle: s.handleCreateTrunk, Tag: "SIP trunks", Summary: "Create a SIP trunk (mirrored in LiveKit SIP); passwords are write-only", Request: telephony.TrunkInput{}, Response: trunkDoc, Status: http.StatusCreated},
		{Method: "GET", Path: "/v1/sip-trunks", Auth: authUser, Scope: "phone_numbers:read", Handle: s.handleListTrunks, Tag: "SIP trunks", Summary: "List SIP trunks, newest first", Response: listOf{Name: "sip_trunks", Item: trunkDoc}, List: true},
		{Method: "GET", Path: "/v1/sip-trunks/{id}", Auth: authUser, Scope: "phone_numbers:read", Handle: s.handleGetTrunk, Tag: "SIP trunks", Summary: "Get a SIP trunk", Response: trunkDoc},
		{Method: "PATCH", Path: "/v1/sip-trunks/{id}", Auth: authUser, Scope: "phone_numbers:write", Handle: s.handlePatchTrunk, Tag: "SIP trunks", Summary: "Change a SIP trunk (absent fields stay; a password of \"********\" keeps the stored one)", Request: telephony.TrunkInput{}, Response: trunkDoc},
		{Method: "DELETE", Path: "/v1/sip-trunks/{id}", Auth: authUser, Scope: "phone_numbers:write", Handle: s.handleDeleteTrunk, Tag: "SIP trunks", Summary: "Delete a SIP trunk no phone number uses", Status: http.StatusNoContent},
		{Method: "POST", Path: "/v1/sip-trunks/{id}/test", Auth: authUser, Scope: "phone_numbers:write", Handle: s.handleTestTrunk, Tag: "SIP trunks", Summary: "Send a SIP OPTIONS request to the trunk's outbound address and report reachability and latency", Response: telephony.TestResult{}},
		{Method: "GET", Path: "/v1/phone-numbers", Auth: authUser, Scope: "phone_numbers:read", Handle: s.handleListNumbers, Tag: "Phone numbers", Summary: "List phone numbers, newest first", Response: listOf{Name: "phone_numbers", Item: phoneNumberDoc}, List: true},
		{Method: "POST", Path: "/v1/phone-numbers", Auth: authUser, Scope: "phone_numbers:write", Handle: s.handleCreateNumber, Tag: "Phone numbers", Summary: "Register a number you have on a SIP trunk or at Twilio", Request: telephony.NumberInput{}, Response: phoneNumberDoc, Status: http.StatusCreated},
		{Method: "POST", Path: "/v1/phone-numbers/buy", Auth: authUser, Scope: "phone_numbers:write", Handle: s.handleBuyNumber, Tag: "Phone numbers", Summary: "Buy a number from a configured provider (telnyx, twilio): the one named, or the first a search finds", Request: telephony.BuyInput{}, Response: phoneNumberDoc, Status: http.StatusCreated},
		{Method: "GET", Path: "/v1/phone-numbers/{number}", Auth: authUser, Scope: "phone_numbers:read", Handle: s.handleGetNumber, Tag: "Phone numbers", Summary: "Get a phone number (by E.164 number or ID)", Response: phoneNumberDoc},
		{Method: "PATCH", Path: "/v1/phone-numbers/{number}", Auth: authUser, Scope: "phone_numbers:write", Handle: s.handlePatchNumber, Tag: "Phone numbers", Summary: "Change a phone number's nickname, trunk or agent", Request: telephony.NumberPatch{}, Response: phoneNumberDoc},
		{Method: "DELETE", Path: "/v1/phone-numbers/{number}", Auth: authUser, Scope: "phone_numbers:write", Handle: s.handleDeleteNumber, Tag: "Phone numbers", Summary: "Remove a phone number (a bought one is released at its provider)", Status: http.StatusNoContent},
		{Method: "POST", Path: "/v1/phone-numbers/{number}/bind", Auth: authUser, Scope: "phone_numbers:write", Handle: s.handleBindNumber, Tag: "Phone numbers", Summary: "Bind the number to an agent: its calls ring that agent", Request: bindRequest{}, Response: phoneNumberDoc},
		{Method: "POST", Path: "/v1/phone-numbers/{number}/assign", Auth: authUser, Scope: "phone_numbers:write", Handle: s.handleBindNumber, Tag: "Phone numbers", Summary: "Alias of bind (Call2Me)", Request: bindRequest{}, Response: phoneNumberDoc},
		{Method: "POST", Path: "/v1/phone-numbers/{number}/unbind", Auth: authUser, Scope: "phone_numbers:write", Handle: s.handleUnbindNumber, Tag: "Phone numbers", Summary: "Unbind the number's agent: its calls are refused", Response: phoneNumberDoc},

		// --- Call24x7 compatibility ---
		{Method: "POST", Path: "/outbound_call", Auth: authUser, Handle: s.call24x7(s.handleCall24x7Post), Errors: errorsCall24x7, Tag: "Call24x7", Summary: "Call24x7: place an outbound call (needs calls:write); answers {success, call_id, status: RINGING, message} or {success: false, message, error_code}", Request: call24x7Request{}, Response: call24x7Response{}},
		{Method: "GET", Path: "/outbound_call", Auth: authUser, Handle: s.call24x7(s.handleCall24x7Get), Errors: errorsCall24x7, Tag: "Call24x7", Summary: "Call24x7: ?call_id= returns the call's status (calls:read); ?to_phone_number=&agent_id= places a call like POST (calls:write)", Response: call24x7StatusResponse{},
			Query: map[string]string{"call_id": "the call whose status to return", "to_phone_number": "start a call to this E.164 number", "agent_id": "with to_phone_number: the agent that calls", "instruction": "with to_phone_number, instead of agent_id: a temporary agent's system prompt", "webhook_url": "completion webhook of a started call", "external_id": "your reference for a started call"}},

		// --- Twilio ---
		{Method: "POST", Path: "/inbound_call", Auth: authSystem, Handle: s.handleTwilioInbound, Tag: "Twilio", Summary: "Twilio's voice webhook (signed with X-Twilio-Signature): answers TwiML connecting the call to the agent bound to the number called, through a media stream"},
		{Method: "POST", Path: "/v1/twilio/status/{id}", Auth: authSystem, Handle: s.handleTwilioStatus, Tag: "Twilio", Summary: "Twilio's status callback for an outbound call (signed with X-Twilio-Signature)", Status: http.StatusNoContent},
		{Method: "GET", Path: "/v1/twilio/media/{token}", Auth: authSystem, Handle: s.handleTwilioMedia, Tag: "Twilio", Summary: "Twilio Media Streams websocket of one call (the token comes from the TwiML)"},
		{Method: "POST", Path: "/v1/twilio/connect/{id}", Auth: authSystem, Handle: s.handleTwilioConnectEnded, Tag: "Twilio", Summary: "Twilio's request once a call's media stream has ended (signed): TwiML that transfers the call or hangs up"},

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
