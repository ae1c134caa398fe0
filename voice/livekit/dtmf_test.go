package livekit_test

import (
	"context"
	"sync"
	"testing"
	"time"

	lkproto "github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"

	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/voice"
	"github.com/parleyhq/parley/voice/livekit/lktest"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// phone is a participant standing in for LiveKit SIP's: it publishes a microphone and
// exchanges SipDTMF data packets, as the SIP bridge does for the phone's keys
// (livekit-sip v1.8.0 publishes one SipDTMF per key the phone sends, and plays every
// SipDTMF it receives on the line as RFC 4733 events).
type phone struct {
	room *lksdk.Room
	mu   sync.Mutex
	got  []*lkproto.SipDTMF
	from []string
}

func joinPhone(t *testing.T, url, token string) *phone {
	t.Helper()
	p := &phone{}
	cb := lksdk.NewRoomCallback()
	cb.OnDataPacket = func(data lksdk.DataPacket, params lksdk.DataReceiveParams) {
		if d, ok := data.(*lkproto.SipDTMF); ok {
			p.mu.Lock()
			p.got = append(p.got, d)
			p.from = append(p.from, params.SenderIdentity)
			p.mu.Unlock()
		}
	}
	room := lksdk.NewRoom(cb)
	room.SetLogger(protoLogger.GetDiscardLogger())
	if err := room.JoinWithContextAndToken(t.Context(), url, token, lksdk.WithLogger(protoLogger.GetDiscardLogger()),
		lksdk.WithConnectTimeout(20*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(room.Disconnect)
	mic, err := lktest.NewBoundTrack(lktest.Rate, protoLogger.GetDiscardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mic.Close() })
	if _, err := room.LocalParticipant.PublishTrack(mic, &lksdk.TrackPublicationOptions{Name: "microphone", Source: lkproto.TrackSource_MICROPHONE}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-mic.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("the phone's microphone was never bound")
	}
	// A line carries sound all the time; the agent takes the caller on from their first
	// audio.
	mic.WriteSample(lktest.Silence(30 * time.Second))
	p.room = room
	return p
}

func (p *phone) press(t *testing.T, key string, code uint32) {
	t.Helper()
	if err := p.room.LocalParticipant.PublishDataPacket(&lkproto.SipDTMF{Code: code, Digit: key},
		lksdk.WithDataPublishReliable(true)); err != nil {
		t.Fatal(err)
	}
}

func (p *phone) received() ([]*lkproto.SipDTMF, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*lkproto.SipDTMF(nil), p.got...), append([]string(nil), p.from...)
}

// TestDTMF: through a real livekit-server, the caller's SipDTMF packets reach the
// session (and the model, as the caller's turn), and the model's send_dtmf reaches the
// caller as a SipDTMF packet from the agent.
func TestDTMF(t *testing.T) {
	t.Parallel()
	lk := liveKit(t)
	srv := openaitest.New(t, openaitest.Config{Replies: []openaitest.Reply{
		{ToolCalls: []openaitest.ToolCall{{ID: "call_1", Name: voice.ToolSendDTMF, Arguments: `{"digits":"1234#"}`}}},
		{Text: "I entered your code."},
	}})
	room := roomName()
	agent := startAgent(t, lk, room, srv, func(c *voice.Config) {
		// The test's phone joins as a standard participant, for which Run does not
		// turn send_dtmf on by itself (it does for a SIP participant).
		c.DTMFOut = true
	})
	tok, err := lktest.Token(lkserver.DevKey, lkserver.DevSecret, room, "phone-"+room, false)
	if err != nil {
		t.Fatal(err)
	}
	ph := joinPhone(t, lk.URL(), tok)

	// The greeting has played: the agent has taken the phone as its caller.
	waitEvent(t, agent, "greeting", func(e voice.Event) bool {
		tr, ok := e.(*voice.Transcript)
		return ok && tr.Speaker == voice.SpeakerAgent
	})
	ph.press(t, "7", 7)
	ph.press(t, "#", 11)

	waitEvent(t, agent, "key transcript", func(e voice.Event) bool {
		tr, ok := e.(*voice.Transcript)
		return ok && tr.Speaker == voice.SpeakerUser && tr.Text == "[The caller pressed keys: 7 #]"
	})
	if chats := srv.Chats(); len(chats) == 0 || chats[0].Request.LastUserText() != "[The caller pressed keys: 7 #]" {
		t.Errorf("model requests %+v", chats)
	}
	waitEvent(t, agent, "SendDTMF", func(e voice.Event) bool {
		d, ok := e.(*voice.SendDTMF)
		return ok && d.Digits == "1234#"
	})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	for {
		got, from := ph.received()
		if len(got) > 0 {
			if len(got) != 1 || got[0].GetDigit() != "1234#" || from[0] != agent.room.Identity() {
				t.Errorf("phone got %v from %v", got, from)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the phone never received the agent's keys")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if in, out := agent.room.Stats().DTMFIn.Load(), agent.room.Stats().DTMFOut.Load(); in != 2 || out != 1 {
		t.Errorf("stats: %d keys in, %d packets out", in, out)
	}
	ph.room.Disconnect()
	agent.wait(t)
}

// waitEvent waits until the agent's session emitted an event matching pred.
func waitEvent(t *testing.T, a *agentCall, what string, pred func(voice.Event) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, e := range a.rec.all() {
			if pred(e) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30s; %d events", what, len(a.rec.all()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
