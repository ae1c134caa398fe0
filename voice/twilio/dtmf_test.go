package twilio_test

import (
	"testing"
	"time"

	"github.com/parleyhq/parley/voice"
	"github.com/parleyhq/parley/voice/twilio"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// TestDTMFReachesModel: keys pressed on a Twilio call reach the model as the caller's
// turn (voice.Session.DTMF), and the model is offered no send_dtmf: a Media Stream
// cannot send keys.
func TestDTMFReachesModel(t *testing.T) {
	t.Parallel()
	prov := openaitest.New(t, openaitest.Config{Replies: []openaitest.Reply{{Text: "Connecting you to billing."}}})
	b := startBridge(t, prov, func(c *voice.Config) { c.Agent.BeginMessage = "" }, twilio.Config{})
	caller := connect(t, b, nil)
	for _, d := range []string{"2", "#"} {
		if err := caller.DTMF(d); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(prov.Chats()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the model was never asked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	req := prov.Chats()[0].Request
	if got := req.LastUserText(); got != "[The caller pressed keys: 2 #]" {
		t.Errorf("model got %q", got)
	}
	for _, n := range req.ToolNames() {
		if n == voice.ToolSendDTMF {
			t.Error("send_dtmf offered on a Twilio stream")
		}
	}
	caller.Stop()
	if r := b.wait(t); r.err != nil || r.res.Outcome != twilio.CallerHungUp {
		t.Errorf("run: %+v, %v", r.res, r.err)
	}
}
