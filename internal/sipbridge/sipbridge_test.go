package sipbridge_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"go.uber.org/goleak"

	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/internal/pgcluster"
	"github.com/parleyhq/parley/internal/sipbridge"
	"github.com/parleyhq/parley/internal/sipbridge/siptest"
	"github.com/parleyhq/parley/voice/livekit/lktest"
)

func TestMain(m *testing.M) {
	// pion's connection-state chatter through the SDK's default logger.
	lksdk.SetLogger(protoLogger.GetDiscardLogger())
	code := m.Run()
	// The server SDK's API clients keep idle keep-alive connections in
	// http.DefaultTransport; they are not ours.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// The stack starts, each piece answers, and Stop (twice) takes every piece down.
func TestStack(t *testing.T) {
	t.Parallel()
	siptest.RequireTools(t, false)
	s := siptest.StartStack(t)
	ctx := context.Background()
	if err := s.Redis.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Server.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Bridge.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	s.Stop()
	if s.Bridge.Ping(ctx) == nil || s.Server.Ping(ctx) == nil || s.Redis.Ping(ctx) == nil {
		t.Fatal("a stopped piece still answers")
	}
}

// A phone call placed with sipp reaches a LiveKit room: the dispatch rule creates a room
// for the call, the bridge joins it as a SIP participant carrying the numbers, answers
// once an agent publishes audio, forwards the caller's speech, and leaves on BYE.
func TestInboundCall(t *testing.T) {
	t.Parallel()
	siptest.RequireTools(t, true)
	s := siptest.StartStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	const called, caller = "+15550100", "+15550123"
	sc := lksdk.NewSIPClient(s.Server.HTTPURL(), lkserver.DevKey, lkserver.DevSecret)
	// An individual rule: a new room per call, named call-<caller>_<random>.
	trunk, _ := siptest.RouteNumber(t, ctx, sc, "test", called, nil)

	dialed := time.Now()
	sipp := siptest.StartSipp(t, ctx, siptest.SippConfig{
		Dir:      "testdata", // rtp_stream opens its file relative to here
		Scenario: "uac_pcmu.xml", Args: []string{"-s", called, "-key", "caller", caller, "-m", "1", s.Bridge.SIPAddr()},
	})

	// The call rings while the bridge waits for an agent: find its room.
	rooms := lksdk.NewRoomServiceClient(s.Server.HTTPURL(), lkserver.DevKey, lkserver.DevSecret)
	var room string
	siptest.Eventually(t, ctx, "the call's room", func() bool {
		res, err := rooms.ListRooms(ctx, &livekit.ListRoomsRequest{})
		if err != nil {
			return false
		}
		for _, r := range res.Rooms {
			if strings.HasPrefix(r.Name, "call-") {
				room = r.Name
				return true
			}
		}
		return false
	})
	t.Logf("room %s after %v", room, time.Since(dialed).Round(time.Millisecond))
	if !strings.Contains(room, caller) {
		t.Errorf("room %q does not name the caller %s", room, caller)
	}

	sipParticipant := func() *livekit.ParticipantInfo {
		res, err := rooms.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: room})
		if err != nil {
			return nil
		}
		for _, p := range res.Participants {
			if p.Kind == livekit.ParticipantInfo_SIP {
				return p
			}
		}
		return nil
	}
	var p *livekit.ParticipantInfo
	siptest.Eventually(t, ctx, "the SIP participant", func() bool { p = sipParticipant(); return p != nil })
	if got := p.Attributes[livekit.AttrSIPPhoneNumber]; got != caller {
		t.Errorf("%s = %q, want the caller %s", livekit.AttrSIPPhoneNumber, got, caller)
	}
	if got := p.Attributes[livekit.AttrSIPTrunkNumber]; got != called {
		t.Errorf("%s = %q, want the called number %s", livekit.AttrSIPTrunkNumber, got, called)
	}
	if got := p.Attributes[livekit.AttrSIPTrunkID]; got != trunk.SipTrunkId {
		t.Errorf("%s = %q, want %s", livekit.AttrSIPTrunkID, got, trunk.SipTrunkId)
	}

	// Until an agent publishes audio the call rings: give the bridge time to (wrongly)
	// answer, then check that it has not.
	select {
	case <-time.After(1500 * time.Millisecond):
	case <-ctx.Done():
	}
	select {
	case <-sipp.Done():
		t.Fatalf("sipp ended before an agent joined (%v):\n%s", sipp.Err(), sipp.Output())
	default:
	}
	if p = sipParticipant(); p == nil {
		t.Fatal("the SIP participant left before an agent joined")
	}
	if st := p.Attributes[livekit.AttrSIPCallStatus]; st != "dialing" && st != "ringing" {
		t.Errorf("call status %q before an agent joined, want it ringing", st)
	}
	t.Logf("call status %q before an agent joined", p.Attributes[livekit.AttrSIPCallStatus])

	tok, err := lktest.Token(lkserver.DevKey, lkserver.DevSecret, room, "agent", true)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := lktest.Join(ctx, s.Server.URL(), tok)
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	joined := time.Now()

	siptest.Eventually(t, ctx, "the call to be active", func() bool {
		p = sipParticipant()
		return p != nil && p.Attributes[livekit.AttrSIPCallStatus] == "active"
	})
	t.Logf("answered %v after the agent joined", time.Since(joined).Round(time.Millisecond))
	var audio bool
	for _, tr := range p.Tracks {
		audio = audio || tr.Type == livekit.TrackType_AUDIO
	}
	if !audio {
		t.Errorf("SIP participant publishes no audio track: %v", p.Tracks)
	}

	// The caller's recorded speech arrives in the room.
	hctx, hcancel := context.WithTimeout(ctx, 20*time.Second)
	heard, err := agent.WaitSpeech(hctx, joined)
	hcancel()
	if err != nil {
		t.Fatalf("no speech from the caller: %v\nsipp:\n%s", err, sipp.Output())
	}
	t.Logf("caller's speech heard %v after the agent joined", heard.Sub(joined).Round(time.Millisecond))

	// sipp hangs up after ~6 s of audio and must count the call as successful.
	if err := sipp.Wait(t, ctx); err != nil {
		t.Fatalf("sipp: %v\n%s", err, sipp.Output())
	}
	t.Logf("call done %v after dialling", time.Since(dialed).Round(time.Millisecond))

	// Most of the 4.7 s recording is speech; more than a second of it must have come
	// through (a click or a burst of noise would not add up to that).
	var speech time.Duration
	for _, ch := range agent.Chunks() {
		if ch.Speech() {
			speech += time.Duration(ch.N) * time.Second / lktest.Rate
		}
	}
	t.Logf("heard %v of the caller's speech", speech.Round(time.Millisecond))
	if speech < time.Second {
		t.Errorf("heard only %v of the caller's speech", speech)
	}

	// The hang-up removes the SIP participant.
	siptest.Eventually(t, ctx, "the SIP participant to leave", func() bool {
		res, err := rooms.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: room})
		if err != nil {
			return true // the room is gone with it
		}
		for _, p := range res.Participants {
			if p.Kind == livekit.ParticipantInfo_SIP {
				return false
			}
		}
		return true
	})
}

// Start reports a bridge that cannot start, with its log, instead of waiting: here its
// Redis does not exist, and livekit-sip gives up at once.
func TestStartFails(t *testing.T) {
	t.Parallel()
	siptest.RequireTools(t, false)
	if _, err := sipbridge.Start(context.Background(), sipbridge.Config{WorkDir: t.TempDir(), LiveKitURL: "ws://127.0.0.1:1"}); err == nil {
		t.Fatal("Start without RedisAddr succeeded")
	}
	port, err := pgcluster.FreePort() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	b, err := sipbridge.Start(context.Background(), sipbridge.Config{
		WorkDir: t.TempDir(), RedisAddr: "127.0.0.1:" + strconv.Itoa(port), LiveKitURL: "ws://127.0.0.1:1",
	})
	if err == nil {
		b.Stop()
		t.Fatal("Start with no Redis succeeded")
	}
	t.Logf("failed after %v: %v", time.Since(begin).Round(time.Millisecond), err)
	if !strings.Contains(err.Error(), "exited during start-up") {
		t.Errorf("error does not say the bridge exited: %v", err)
	}
}
