package calls

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/twitchtv/twirp"

	"github.com/parleyhq/parley/internal/ids"
	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/internal/pgcluster"
)

func TestLiveKitConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []LiveKitConfig{
		{},
		{URL: "ws://x", APIKey: "k"},
		{URL: "tcp://x", APIKey: "k", APISecret: "s"},
		{URL: "ws://x", APIKey: "k", APISecret: "s", TokenTTL: time.Second},
		{URL: "ws://x", APIKey: "k", APISecret: "s", MaxParticipants: 1},
	} {
		if _, err := NewLiveKit(cfg); err == nil {
			t.Errorf("NewLiveKit(%+v) accepted", cfg)
		}
	}
	l, err := NewLiveKit(LiveKitConfig{URL: "https://lk.example.com", APIKey: "k", APISecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if l.URL() != "wss://lk.example.com" || l.AgentName() != "parley" {
		t.Fatalf("URL %s agent %s", l.URL(), l.AgentName())
	}
	if _, err := ParseDispatchMetadata(`{"call_id":""}`); err == nil {
		t.Error("metadata without call_id accepted")
	}
	if m, err := ParseDispatchMetadata(`{"call_id":"call_x"}`); err != nil || m.CallID != "call_x" {
		t.Errorf("ParseDispatchMetadata = %+v, %v", m, err)
	}
}

// admin is a server API client with full rights, to look at what the adapter did.
func admin(t testing.TB) *lksdk.RoomServiceClient {
	srv := liveKit(t)
	return lksdk.NewRoomServiceClient(srv.URL(), lkserver.DevKey, lkserver.DevSecret)
}

func roomExists(t testing.TB, name string) *livekit.Room {
	t.Helper()
	res, err := admin(t).ListRooms(context.Background(), &livekit.ListRoomsRequest{Names: []string{name}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rooms) == 0 {
		return nil
	}
	return res.Rooms[0]
}

// A call room is created with the agent dispatched, carrying the call's metadata.
func TestCreateCallRoomDispatchesAgent(t *testing.T) {
	t.Parallel()
	l := newLiveKit(t, func(c *LiveKitConfig) { c.AgentName = "parley-test" })
	ctx := context.Background()
	name := RoomName(ids.New("call"))
	meta := `{"call_id":"call_abc"}`
	if err := l.CreateCallRoom(ctx, name, meta); err != nil {
		t.Fatal(err)
	}
	if err := l.CreateCallRoom(ctx, name, meta); err != nil {
		t.Fatalf("creating the room again (a retry): %v", err)
	}
	room := roomExists(t, name)
	if room == nil || room.Metadata != meta || room.MaxParticipants != 3 || room.EmptyTimeout != 120 || room.DepartureTimeout != 10 {
		t.Fatalf("room %v", room)
	}
	srv := liveKit(t)
	disp, err := lksdk.NewAgentDispatchServiceClient(srv.URL(), lkserver.DevKey, lkserver.DevSecret).
		ListDispatch(ctx, &livekit.ListAgentDispatchRequest{Room: name})
	if err != nil {
		t.Fatal(err)
	}
	if len(disp.AgentDispatches) != 1 {
		t.Fatalf("%d dispatches: %v", len(disp.AgentDispatches), disp.AgentDispatches)
	}
	d := disp.AgentDispatches[0]
	if d.AgentName != "parley-test" || d.Metadata != meta || d.Room != name {
		t.Fatalf("dispatch %v", d)
	}
	if m, err := ParseDispatchMetadata(d.Metadata); err != nil || m.CallID != "call_abc" {
		t.Fatalf("dispatch metadata %+v, %v", m, err)
	}

	if err := l.DeleteRoom(ctx, name); err != nil {
		t.Fatal(err)
	}
	if roomExists(t, name) != nil {
		t.Fatal("room still there after DeleteRoom")
	}
	if err := l.DeleteRoom(ctx, name); err != nil {
		t.Fatalf("deleting a missing room: %v", err)
	}
}

func publishTrack(room *lksdk.Room, kind string) (*lksdk.LocalTrackPublication, error) {
	var codec webrtc.RTPCodecCapability
	source := livekit.TrackSource_MICROPHONE
	if kind == "video" {
		codec = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
		source = livekit.TrackSource_CAMERA
	} else {
		codec = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}
	}
	track, err := webrtc.NewTrackLocalStaticSample(codec, kind, "caller-"+kind)
	if err != nil {
		return nil, err
	}
	return room.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{Name: kind, Source: source})
}

// The browser token joins its room only, with the microphone as the one thing it may
// publish: a camera track is refused by the server, and the token is no key to the
// server API for any room.
func TestBrowserToken(t *testing.T) {
	t.Parallel()
	l := newLiveKit(t, func(c *LiveKitConfig) { c.TokenTTL = 5 * time.Minute })
	srv := liveKit(t)
	ctx := context.Background()
	name, other := RoomName(ids.New("call")), RoomName(ids.New("call"))
	for _, r := range []string{name, other} {
		if err := l.CreateCallRoom(ctx, r, `{"call_id":"x"}`); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.DeleteRoom(context.Background(), r) })
	}
	tok, err := l.BrowserToken(name, BrowserIdentity, "Caller")
	if err != nil {
		t.Fatal(err)
	}

	// The grants, as signed.
	v, err := auth.ParseAPIToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	claims, grants, err := v.Verify(lkserver.DevSecret)
	if err != nil {
		t.Fatal(err)
	}
	g := grants.Video
	if g.Room != name || !g.RoomJoin || g.RoomAdmin || g.RoomCreate || g.RoomList || g.RoomRecord || g.Agent || g.Hidden ||
		!slices.Equal(g.CanPublishSources, []string{"microphone"}) || g.GetCanPublishData() || !g.GetCanSubscribe() ||
		g.GetCanUpdateOwnMetadata() || grants.Identity != BrowserIdentity {
		t.Fatalf("grants %+v", g)
	}
	if ttl := claims.ExpiresAt.Sub(claims.NotBefore.Time); ttl != 5*time.Minute {
		t.Fatalf("token valid for %s", ttl)
	}

	// It joins its room.
	disconnected := make(chan struct{})
	cb := lksdk.NewRoomCallback()
	cb.OnDisconnected = func() { close(disconnected) }
	room, err := lksdk.ConnectToRoomWithToken(srv.URL(), tok, cb, lksdk.WithAutoSubscribe(false))
	if err != nil {
		t.Fatal(err)
	}
	defer room.Disconnect()
	if room.Name() != name {
		t.Fatalf("joined %q, want %q", room.Name(), name)
	}
	// The server holds it to the microphone: the permission it applied says so, and a
	// camera track is never accepted, while the microphone is.
	if _, err := publishTrack(room, "audio"); err != nil {
		t.Fatalf("publishing the microphone: %v", err)
	}
	if _, err := publishTrack(room, "video"); !errors.Is(err, lksdk.ErrTrackPublishTimeout) {
		t.Fatalf("publishing a camera: err = %v, want the server to refuse it", err)
	}
	parts, err := admin(t).ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: name})
	if err != nil {
		t.Fatal(err)
	}
	if len(parts.Participants) != 1 {
		t.Fatalf("%d participants in the room", len(parts.Participants))
	}
	p := parts.Participants[0]
	perm := p.Permission
	if p.Identity != BrowserIdentity || !perm.CanPublish || !perm.CanSubscribe || perm.CanPublishData ||
		!slices.Equal(perm.CanPublishSources, []livekit.TrackSource{livekit.TrackSource_MICROPHONE}) {
		t.Fatalf("participant %s permission %v", p.Identity, perm)
	}
	if len(p.Tracks) != 1 || p.Tracks[0].Type != livekit.TrackType_AUDIO || p.Tracks[0].Source != livekit.TrackSource_MICROPHONE {
		t.Fatalf("published tracks %v, want the microphone only", p.Tracks)
	}
	if others, err := admin(t).ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: other}); err != nil || len(others.Participants) != 0 {
		t.Fatalf("the other room has %v (%v)", others, err)
	}

	// As a key to the server API, the token opens nothing: not the other room, not
	// even its own room's administration.
	api, err := lksdk.NewLiveKitAPI(lksdk.WithURL(srv.URL()), lksdk.WithToken(tok))
	if err != nil {
		t.Fatal(err)
	}
	denied := func(what string, err error) {
		t.Helper()
		var te twirp.Error
		if !errors.As(err, &te) || (te.Code() != twirp.PermissionDenied && te.Code() != twirp.Unauthenticated) {
			t.Errorf("%s with the browser token: err = %v, want permission denied", what, err)
		}
	}
	_, err = api.Room().ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: other})
	denied("listing the other room", err)
	_, err = api.Room().ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: name})
	denied("listing its own room", err)
	_, err = api.Room().CreateRoom(ctx, &livekit.CreateRoomRequest{Name: other})
	denied("creating a room", err)
	_, err = api.Room().DeleteRoom(ctx, &livekit.DeleteRoomRequest{Room: other})
	denied("deleting the other room", err)
	if roomExists(t, other) == nil {
		t.Fatal("the other room was deleted with the browser token")
	}

	// Deleting the room (POST /end) disconnects the browser.
	if err := l.DeleteRoom(ctx, name); err != nil {
		t.Fatal(err)
	}
	select {
	case <-disconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("the browser was not disconnected when its room was deleted")
	}
}

func TestLiveKitHealth(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h, err := newLiveKit(t).Health(ctx)
	if err != nil || h.Status != "ok" || !h.Configured || !h.Reachable || !h.CredentialsValid || h.LatencyMS < 0 ||
		h.URL != liveKit(t).URL() || h.AgentName != "parley" {
		t.Fatalf("healthy server: %+v, %v", h, err)
	}

	h, err = newLiveKit(t, func(c *LiveKitConfig) { c.APISecret = "wrong" }).Health(ctx)
	if err == nil || h.Status != "unauthorized" || !h.Reachable || h.CredentialsValid {
		t.Fatalf("wrong secret: %+v, %v", h, err)
	}

	port, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	closed, err := NewLiveKit(LiveKitConfig{URL: "ws://127.0.0.1:" + strconv.Itoa(port), APIKey: "k", APISecret: "s",
		HealthTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	h, err = closed.Health(ctx)
	if err == nil || h.Status != "unreachable" || h.Reachable || h.CredentialsValid || !h.Configured || h.Error == "" {
		t.Fatalf("closed port: %+v, %v", h, err)
	}

	svc := newEnv(t).svc
	if h := svc.Health(ctx); h.Status != "unconfigured" || h.Configured {
		t.Fatalf("service without LiveKit: %+v", h)
	}
}

// StartWeb creates the call, the room with the agent dispatched to it, and the
// browser's token; End deletes the room and fails a call that had not begun.
func TestStartWebAndEnd(t *testing.T) {
	t.Parallel()
	l := newLiveKit(t)
	e := newEnv(t, func(c *Config) { c.Rooms = l })
	ctx := context.Background()
	ten := e.tenant(t)
	ag := e.agent(t, ten, "Ava", "active")

	wc, err := e.svc.StartWeb(ctx, ten, ag, map[string]any{"source": "test"})
	if err != nil {
		t.Fatal(err)
	}
	if wc.CallStatus != StatusRegistered || wc.AccessToken == "" || wc.Token != wc.AccessToken || wc.URL != liveKit(t).URL() ||
		wc.RoomName != RoomName(wc.CallID) {
		t.Fatalf("web call %+v", wc)
	}
	room := roomExists(t, wc.RoomName)
	if room == nil {
		t.Fatal("no room")
	}
	if m, err := ParseDispatchMetadata(room.Metadata); err != nil || m.CallID != wc.CallID {
		t.Fatalf("room metadata %q: %+v %v", room.Metadata, m, err)
	}
	v, _ := auth.ParseAPIToken(wc.AccessToken)
	if _, g, err := v.Verify(lkserver.DevSecret); err != nil || g.Video.Room != wc.RoomName {
		t.Fatalf("token for %v (%v)", g, err)
	}

	ended, err := e.svc.End(ctx, ten, wc.CallID)
	if err != nil {
		t.Fatal(err)
	}
	if ended.CallStatus != StatusFailed || ended.DisconnectionReason != ReasonAPIEnded || ended.EndTimestamp == nil {
		t.Fatalf("ended before it began: %s/%s", ended.CallStatus, ended.DisconnectionReason)
	}
	if roomExists(t, wc.RoomName) != nil {
		t.Fatal("End left the room")
	}
	_, err = e.svc.End(ctx, ten, wc.CallID)
	wantErr(t, err, ErrCallEnded)

	// A call in progress: End deletes the room and leaves the outcome to the worker,
	// whose session ends as stopped with the caller still there.
	wc2, err := e.svc.StartWeb(ctx, ten, ag, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Begin(ctx, wc2.CallID, time.Now()); err != nil {
		t.Fatal(err)
	}
	live, err := e.svc.End(ctx, ten, wc2.CallID)
	if err != nil {
		t.Fatal(err)
	}
	if live.CallStatus != StatusInProgress || roomExists(t, wc2.RoomName) != nil {
		t.Fatalf("in-progress call after End: %s, room %v", live.CallStatus, roomExists(t, wc2.RoomName))
	}
	if err := e.svc.Finish(ctx, wc2.CallID, Finish{Status: StatusCompleted, Reason: ReasonFor("stopped", false)}); err != nil {
		t.Fatal(err)
	}
	if st, reason := e.status(t, wc2.CallID); st != StatusCompleted || reason != ReasonAPIEnded {
		t.Fatalf("worker's finish: %s/%s", st, reason)
	}
}

// When LiveKit fails, StartWeb answers unavailable and the call is recorded as failed.
func TestStartWebLiveKitDown(t *testing.T) {
	t.Parallel()
	port, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewLiveKit(LiveKitConfig{URL: "ws://127.0.0.1:" + strconv.Itoa(port), APIKey: "k", APISecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.Rooms = l })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	ten := e.tenant(t)
	_, err = e.svc.StartWeb(ctx, ten, e.agent(t, ten, "Ava", "active"), nil)
	wantErr(t, err, ErrLiveKitUnavailable)
	list, _, err := e.svc.List(context.Background(), ten, ListParams{})
	if err != nil || len(list) != 1 {
		t.Fatalf("%d calls, %v", len(list), err)
	}
	if c := list[0]; c.CallStatus != StatusFailed || c.DisconnectionReason != ReasonLiveKit ||
		!strings.HasPrefix(c.CallID, "call_") {
		t.Fatalf("call after LiveKit failed: %s/%s", c.CallStatus, c.DisconnectionReason)
	}
}
