package httpapi

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"

	"github.com/parleyhq/parley/calls"
	"github.com/parleyhq/parley/internal/lkserver"
)

// callsEnv is newTestEnv plus a calls service, with e.srv pointing at a server that
// has Deps.Calls set; lk is the LiveKit server its rooms go to (nil: not configured).
type callsEnv struct {
	*testEnv
	svc *calls.Service
	lk  *lkserver.Server
}

// startLiveKit starts a livekit-server for the test (skipped when it is not installed,
// unless CI=true).
func startLiveKit(t *testing.T) *lkserver.Server {
	t.Helper()
	if _, err := lkserver.FindBinary(); err != nil {
		if os.Getenv("CI") == "" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	srv, err := lkserver.Start(context.Background(), lkserver.Config{WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

func newCallsTestEnv(t *testing.T, lk *lkserver.Server) *callsEnv {
	t.Helper()
	e := newTestEnv(t)
	log := slog.New(slog.DiscardHandler)
	cfg := calls.Config{Logger: log}
	if lk != nil {
		rooms, err := calls.NewLiveKit(calls.LiveKitConfig{URL: lk.URL(), APIKey: lkserver.DevKey, APISecret: lkserver.DevSecret})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Rooms = rooms
	}
	svc, err := calls.New(e.pool, cfg)
	if err != nil {
		t.Fatal(err)
	}
	api, err := New(Config{Addr: "127.0.0.1:0", PublicURL: "http://127.0.0.1"},
		Deps{Logger: log, Accounts: e.accounts, Agents: e.agents, Calls: svc, Limiter: e.limiter, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	e.srv, e.api = srv, api
	return &callsEnv{testEnv: e, svc: svc, lk: lk}
}

func (e *callsEnv) newAgent(token, name string) string {
	e.t.Helper()
	return str(e.do("POST", "/v1/agents", token, map[string]any{"agent_name": name}).wantStatus(e.t, 201).JSON["agent_id"])
}

func (e *callsEnv) callCount(tenantID string) int {
	return e.count(`SELECT count(*) FROM calls WHERE tenant_id = $1`, tenantID)
}

func (e *callsEnv) roomExists(name string) bool {
	e.t.Helper()
	res, err := lksdk.NewRoomServiceClient(e.lk.URL(), lkserver.DevKey, lkserver.DevSecret).
		ListRooms(context.Background(), &livekit.ListRoomsRequest{Names: []string{name}})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(res.Rooms) > 0
}

// checkToken verifies a browser token's signature and grants: that room only,
// microphone only, no data, no admin.
func checkToken(t *testing.T, tok, room string) {
	t.Helper()
	v, err := auth.ParseAPIToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	_, g, err := v.Verify(lkserver.DevSecret)
	if err != nil {
		t.Fatal(err)
	}
	vg := g.Video
	if vg.Room != room || !vg.RoomJoin || vg.RoomAdmin || vg.RoomCreate || vg.RoomList ||
		!slices.Equal(vg.CanPublishSources, []string{"microphone"}) || vg.GetCanPublishData() || !vg.GetCanSubscribe() {
		t.Fatalf("token grants %+v, want room %s, microphone only", vg, room)
	}
}

func TestCallRoutes(t *testing.T) {
	t.Parallel()
	e := newCallsTestEnv(t, startLiveKit(t))
	ctx := context.Background()
	u, other := e.newUser(), e.newUser()
	ag := e.newAgent(u.Token, "Ava")
	ag2 := e.newAgent(u.Token, "Bob")

	// POST /v1/calls/web: the call, its room with the agent dispatched, and a token.
	r := e.do("POST", "/v1/calls/web", u.APIKey, map[string]any{"agent_id": ag, "metadata": map[string]any{"crm_id": "c-9"}}).wantStatus(t, 201)
	webID, room := str(r.JSON["call_id"]), str(r.JSON["room_name"])
	if r.JSON["call_status"] != "registered" || r.JSON["direction"] != "web" || r.JSON["agent_id"] != ag ||
		r.JSON["url"] != e.lk.URL() || r.JSON["access_token"] == "" || r.JSON["access_token"] != r.JSON["token"] ||
		r.JSON["metadata"].(map[string]any)["crm_id"] != "c-9" {
		t.Fatalf("web call: %s", r.Body)
	}
	checkToken(t, str(r.JSON["access_token"]), room)
	disp, err := lksdk.NewAgentDispatchServiceClient(e.lk.URL(), lkserver.DevKey, lkserver.DevSecret).
		ListDispatch(ctx, &livekit.ListAgentDispatchRequest{Room: room})
	if err != nil || len(disp.AgentDispatches) != 1 || disp.AgentDispatches[0].AgentName != "parley" {
		t.Fatalf("dispatches %v, %v", disp, err)
	}
	if m, err := calls.ParseDispatchMetadata(disp.AgentDispatches[0].Metadata); err != nil || m.CallID != webID {
		t.Fatalf("dispatch metadata %+v %v", m, err)
	}

	// POST /v1/livekit/token: the same, in LiveKit's shape.
	r = e.do("POST", "/v1/livekit/token", u.Token, map[string]any{"agent_id": ag2}).wantStatus(t, 200)
	tokID, tokRoom := str(r.JSON["call_id"]), str(r.JSON["room_name"])
	if tokID == "" || tokRoom != calls.RoomName(tokID) || r.JSON["url"] != e.lk.URL() || !e.roomExists(tokRoom) {
		t.Fatalf("livekit token: %s", r.Body)
	}
	checkToken(t, str(r.JSON["token"]), tokRoom)

	// Lists, newest first, with the agent filter and paging.
	r = e.do("GET", "/v1/calls", u.Token, nil).wantStatus(t, 200)
	list, _ := r.JSON["calls"].([]any)
	if len(list) != 2 || r.JSON["total"] != 2.0 || r.JSON["has_more"] != false || list[0].(map[string]any)["call_id"] != tokID {
		t.Fatalf("list: %s", r.Body)
	}
	r = e.do("GET", "/v1/calls?agent_id="+ag+"&limit=1", u.Token, nil).wantStatus(t, 200)
	if list, _ := r.JSON["calls"].([]any); len(list) != 1 || list[0].(map[string]any)["call_id"] != webID || r.JSON["total"] != 1.0 {
		t.Fatalf("filtered list: %s", r.Body)
	}
	r = e.do("GET", "/v1/calls?limit=1", u.Token, nil).wantStatus(t, 200)
	if r.JSON["has_more"] != true || r.JSON["limit"] != 1.0 {
		t.Fatalf("paged list: %s", r.Body)
	}
	e.do("GET", "/v1/calls?limit=0", u.Token, nil).wantError(t, 422, "limit")

	// The worker's side: the call begins and its live transcript shows in GET.
	if _, err := e.svc.Begin(ctx, webID, time.Now()); err != nil {
		t.Fatal(err)
	}
	turns := []calls.Turn{{Role: "agent", Content: "Hi, Ava here.", EndMS: 900}, {Role: "user", Content: "Hello!", StartMS: 1200, EndMS: 1800, TurnNumber: 1}}
	if err := e.svc.SaveProgress(ctx, webID, turns, calls.Summarize(nil)); err != nil {
		t.Fatal(err)
	}
	r = e.do("GET", "/v1/calls/"+webID, u.Token, nil).wantStatus(t, 200)
	for _, k := range []string{"call_id", "agent_id", "direction", "call_status", "from_number", "to_number", "start_timestamp",
		"end_timestamp", "duration_ms", "disconnection_reason", "transcript", "transcript_object", "recording_url", "extracted",
		"cost", "latency", "created_at"} {
		if _, ok := r.JSON[k]; !ok {
			t.Errorf("GET /v1/calls/{id} lacks %q", k)
		}
	}
	if r.JSON["call_status"] != "in_progress" || r.JSON["start_timestamp"] == nil {
		t.Fatalf("live call: %s", r.Body)
	}
	r = e.do("GET", "/v1/calls/"+webID+"/transcript", u.APIKey, nil).wantStatus(t, 200)
	if r.JSON["transcript"] != "Agent: Hi, Ava here.\nUser: Hello!" || len(r.JSON["transcript_object"].([]any)) != 2 {
		t.Fatalf("transcript: %s", r.Body)
	}

	// Another tenant sees none of it, and changes none of it.
	for _, p := range []string{"/v1/calls/" + webID, "/v1/calls/" + webID + "/transcript"} {
		e.do("GET", p, other.Token, nil).wantError(t, 404)
	}
	e.do("POST", "/v1/calls/"+webID+"/end", other.Token, nil).wantError(t, 404)
	e.do("POST", "/v1/calls/web", other.Token, map[string]any{"agent_id": ag}).wantError(t, 404)
	e.do("POST", "/v1/livekit/token", other.Token, map[string]any{"agent_id": ag}).wantError(t, 404)
	r = e.do("GET", "/v1/calls?agent_id="+ag, other.Token, nil).wantStatus(t, 200)
	if r.JSON["total"] != 0.0 {
		t.Fatalf("another tenant lists %s", r.Body)
	}
	if !e.roomExists(room) || e.callCount(other.TenantID) != 0 {
		t.Fatal("another tenant's requests changed something")
	}

	// Bad input changes nothing.
	before := e.callCount(u.TenantID)
	e.do("POST", "/v1/calls/web", u.Token, map[string]any{}).wantError(t, 422, "agent_id")
	e.do("POST", "/v1/livekit/token", u.Token, map[string]any{"agent_id": ""}).wantError(t, 422, "agent_id")
	e.do("POST", "/v1/calls/web", u.Token, `{"agent_id": 5}`).wantError(t, 400, "agent_id")
	e.do("POST", "/v1/calls/web", u.Token, map[string]any{"agent_id": ag, "metadata": "x"}).wantError(t, 400, "metadata")
	e.do("POST", "/v1/calls/web", u.Token, nil).wantError(t, 400)
	r = e.do("POST", "/v1/calls/web", u.Token, map[string]any{"agent_id": "agent_nope"})
	r.wantError(t, 404)
	if r.JSON["code"] != "agent_not_found" {
		t.Fatalf("unknown agent: %s", r.Body)
	}
	if r := e.do("GET", "/v1/calls/call_nope", u.Token, nil); r.Status != 404 || r.JSON["code"] != "call_not_found" {
		t.Fatalf("unknown call: %d %s", r.Status, r.Body)
	}
	e.do("PATCH", "/v1/agents/"+ag2, u.Token, map[string]any{"status": "inactive"}).wantStatus(t, 200)
	e.do("POST", "/v1/calls/web", u.Token, map[string]any{"agent_id": ag2}).wantError(t, 409)
	if n := e.callCount(u.TenantID); n != before {
		t.Fatalf("refused requests wrote %d calls", n-before)
	}

	// Scopes: a calls:read key reads but neither starts nor ends calls; an agents key
	// does not see calls at all.
	reader := str(e.do("POST", "/v1/api-keys", u.Token, map[string]any{"name": "r", "scopes": []string{"calls:read"}}).wantStatus(t, 201).JSON["key"])
	e.do("GET", "/v1/calls", reader, nil).wantStatus(t, 200)
	e.do("GET", "/v1/calls/"+webID+"/transcript", reader, nil).wantStatus(t, 200)
	e.do("GET", "/v1/livekit/health", reader, nil).wantStatus(t, 200)
	e.do("POST", "/v1/calls/web", reader, map[string]any{"agent_id": ag}).wantError(t, 403)
	e.do("POST", "/v1/livekit/token", reader, map[string]any{"agent_id": ag}).wantError(t, 403)
	e.do("POST", "/v1/calls/"+webID+"/end", reader, nil).wantError(t, 403)
	agentsOnly := str(e.do("POST", "/v1/api-keys", u.Token, map[string]any{"name": "a", "scopes": []string{"agents:read"}}).wantStatus(t, 201).JSON["key"])
	e.do("GET", "/v1/calls", agentsOnly, nil).wantError(t, 403)
	e.do("GET", "/v1/calls", "", nil).wantError(t, 401)

	// POST /end: the room goes. The call in progress stays so until its worker records
	// the end; the one that never began fails at once.
	r = e.do("POST", "/v1/calls/"+webID+"/end", u.APIKey, nil).wantStatus(t, 200)
	if r.JSON["call_status"] != "in_progress" || e.roomExists(room) {
		t.Fatalf("end in progress: %s (room exists %v)", r.Body, e.roomExists(room))
	}
	r = e.do("POST", "/v1/calls/"+tokID+"/end", u.Token, nil).wantStatus(t, 200)
	if r.JSON["call_status"] != "failed" || r.JSON["disconnection_reason"] != "api_ended" || e.roomExists(tokRoom) {
		t.Fatalf("end registered: %s", r.Body)
	}
	r = e.do("POST", "/v1/calls/"+tokID+"/end", u.Token, nil)
	r.wantError(t, 409)
	if r.JSON["code"] != "call_ended" {
		t.Fatalf("ending twice: %s", r.Body)
	}

	// Health.
	r = e.do("GET", "/v1/livekit/health", u.Token, nil).wantStatus(t, 200)
	if r.JSON["status"] != "ok" || r.JSON["configured"] != true || r.JSON["reachable"] != true || r.JSON["credentials_valid"] != true {
		t.Fatalf("health: %s", r.Body)
	}
}

// Without LiveKit, reads work, starting a call is 503 with a clear detail (after input
// checks), and health says so.
func TestCallRoutesWithoutLiveKit(t *testing.T) {
	t.Parallel()
	e := newCallsTestEnv(t, nil)
	u := e.newUser()
	ag := e.newAgent(u.Token, "Ava")
	for _, p := range []string{"/v1/calls/web", "/v1/livekit/token"} {
		r := e.do("POST", p, u.Token, map[string]any{"agent_id": ag})
		r.wantError(t, 503)
		if r.JSON["code"] != "livekit_not_configured" {
			t.Fatalf("%s: %s", p, r.Body)
		}
		e.do("POST", p, u.Token, map[string]any{}).wantError(t, 422, "agent_id")
	}
	if n := e.callCount(u.TenantID); n != 0 {
		t.Fatalf("%d calls written without LiveKit", n)
	}
	r := e.do("GET", "/v1/calls", u.Token, nil).wantStatus(t, 200)
	if list, ok := r.JSON["calls"].([]any); !ok || len(list) != 0 {
		t.Fatalf("empty list: %s", r.Body)
	}
	r = e.do("GET", "/v1/livekit/health", u.Token, nil).wantStatus(t, 200)
	if r.JSON["configured"] != false || r.JSON["status"] != "unconfigured" || r.JSON["reachable"] != false {
		t.Fatalf("health: %s", r.Body)
	}
	// A call from elsewhere cannot be ended without LiveKit to remove its room.
	c, err := e.svc.CreateWeb(context.Background(), u.TenantID, ag, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.do("POST", "/v1/calls/"+c.CallID+"/end", u.Token, nil).wantError(t, 503)
	e.do("GET", "/v1/calls/"+c.CallID, u.Token, nil).wantStatus(t, 200)
}

// A server built without the calls service answers its routes with 503, not a panic.
func TestCallRoutesWithoutService(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	u := e.newUser()
	e.do("GET", "/v1/calls", u.Token, nil).wantError(t, 503)
	e.do("POST", "/v1/calls/web", u.Token, map[string]any{"agent_id": "agent_x"}).wantError(t, 503)
	r := e.do("GET", "/v1/livekit/health", u.Token, nil).wantStatus(t, 200)
	if r.JSON["configured"] != false {
		t.Fatalf("health: %s", r.Body)
	}
}
