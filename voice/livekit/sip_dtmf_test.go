package livekit_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	lkproto "github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"

	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/internal/pgcluster"
	"github.com/parleyhq/parley/internal/sipbridge/siptest"
	"github.com/parleyhq/parley/voice"
	"github.com/parleyhq/parley/voice/livekit"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// sippPcaps is where sipp's packaged RTP recordings live (Debian's sip-tester).
const sippPcaps = "/usr/share/sip-tester"

// TestSIPDTMF: a real phone call (sipp through LiveKit SIP) presses 1 and # as RFC 4733
// events; the bridge turns them into SipDTMF packets, the room hands them to the
// session, and the model gets the documented turn. The caller is a SIP participant, so
// Run offers the model send_dtmf by itself, and its keys go back to the bridge.
func TestSIPDTMF(t *testing.T) {
	t.Parallel()
	siptest.RequireTools(t, true, filepath.Join(sippPcaps, "dtmf_2833_pound.pcap"))
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	stack := siptest.StartStack(t)

	const called, caller = "+15550111", "+15550177"
	sc := lksdk.NewSIPClient(stack.Server.HTTPURL(), lkserver.DevKey, lkserver.DevSecret)
	siptest.RouteNumber(t, ctx, sc, "dtmf", called, nil)

	scenario, err := os.ReadFile("testdata/uac_dtmf.xml")
	if err != nil {
		t.Fatal(err)
	}
	// The phone's ear: what the bridge sends to the phone.
	ear, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan rfc4733Event, 64)
	go listenRTP(ear, events)
	t.Cleanup(func() { ear.Close() })
	scenario = bytes.ReplaceAll(scenario, []byte("PCAPDIR"), []byte(sippPcaps))
	scenario = bytes.ReplaceAll(scenario, []byte("RTPPORT"), []byte(strconv.Itoa(ear.LocalAddr().(*net.UDPAddr).Port)))
	sf := filepath.Join(t.TempDir(), "uac_dtmf.xml")
	if err := os.WriteFile(sf, scenario, 0o644); err != nil {
		t.Fatal(err)
	}
	mediaPort, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	sipp := siptest.StartSipp(t, ctx, siptest.SippConfig{Scenario: sf,
		Args: []string{"-s", called, "-key", "caller", caller, "-m", "1", "-mp", strconv.Itoa(mediaPort), stack.Bridge.SIPAddr()}})

	// The call rings in its own room until an agent publishes audio.
	rooms := lksdk.NewRoomServiceClient(stack.Server.HTTPURL(), lkserver.DevKey, lkserver.DevSecret)
	var room string
	for room == "" {
		res, err := rooms.ListRooms(ctx, &lkproto.ListRoomsRequest{})
		if err == nil {
			for _, r := range res.Rooms {
				if strings.HasPrefix(r.Name, "call-") {
					room = r.Name
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no room for the call:\n%s", sipp.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}

	srv := openaitest.New(t, openaitest.Config{Replies: []openaitest.Reply{
		{ToolCalls: []openaitest.ToolCall{{ID: "call_1", Name: voice.ToolSendDTMF, Arguments: `{"digits":"42#"}`}}},
		{Text: "Done."},
	}})
	agent := startAgent(t, stack.Server, room, srv, nil)

	waitEvent(t, agent, "the caller's keys", func(e voice.Event) bool {
		tr, ok := e.(*voice.Transcript)
		return ok && tr.Speaker == voice.SpeakerUser && strings.HasPrefix(tr.Text, "[The caller pressed keys")
	})
	// The turn's transcript comes just before the model is asked.
	waitEvent(t, agent, "the model's answer", func(e voice.Event) bool { return isToolCall(e) })
	chats := srv.Chats()
	if got := chats[0].Request.LastUserText(); got != "[The caller pressed keys: 1 #]" {
		t.Errorf("model got %q", got)
	}
	if names := chats[0].Request.ToolNames(); !slices.Contains(names, voice.ToolSendDTMF) {
		t.Errorf("tools %v: a SIP caller should get send_dtmf", names)
	}
	waitEvent(t, agent, "SendDTMF", func(e voice.Event) bool {
		d, ok := e.(*voice.SendDTMF)
		return ok && d.Digits == "42#"
	})
	// The bridge plays the agent's keys on the line as RFC 4733 events: 4, 2, #.
	var keys []byte
	for len(keys) < 3 {
		select {
		case ev := <-events:
			keys = append(keys, rfc4733Keys[ev.code])
		case <-ctx.Done():
			t.Fatalf("the phone got keys %q, want 42#", keys)
		}
	}
	if string(keys) != "42#" {
		t.Errorf("the phone got keys %q, want 42#", keys)
	}

	if err := sipp.Wait(t, ctx); err != nil {
		t.Fatalf("sipp: %v\n%s", err, sipp.Output())
	}
	if res := agent.wait(t); res.Outcome != livekit.CallerLeft || res.CallerKind != "sip" {
		t.Errorf("result %+v", res)
	}
	if n := agent.room.Stats().DTMFIn.Load(); n != 2 {
		t.Errorf("%d keys in, want 2", n)
	}
}

func isToolCall(e voice.Event) bool { _, ok := e.(*voice.ToolCall); return ok }

// rfc4733Keys maps an RFC 4733 event code to its key.
const rfc4733Keys = "0123456789*#ABCD"

// rfc4733Event is one telephone-event, however many packets carried it.
type rfc4733Event struct{ code byte }

// listenRTP reads RTP from conn until it is closed and reports each RFC 4733 event
// (payload type 101, as the scenario offers) once: an event's packets share its RTP
// timestamp, the last ones with the end bit set.
func listenRTP(conn *net.UDPConn, out chan<- rfc4733Event) {
	buf := make([]byte, 1500)
	seen := map[uint32]bool{}
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return
		}
		// A 12-byte RTP header (no CSRCs or extension from the bridge), then the
		// 4-byte event: code, E|R|volume, duration.
		if n < 16 || buf[0]>>6 != 2 || buf[1]&0x7f != 101 || buf[0]&0x1f != 0 {
			continue
		}
		ts := binary.BigEndian.Uint32(buf[4:8])
		if seen[ts] || buf[12] >= 16 {
			continue
		}
		seen[ts] = true
		select {
		case out <- rfc4733Event{code: buf[12]}:
		default:
		}
	}
}
