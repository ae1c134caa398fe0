package calls

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/sipbridge/siptest"
	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// TestSIPOutboundVoicemail: an outbound call answered by a machine. sipp picks up and
// plays an answering machine's greeting (espeak-ng) and a 1 kHz beep over G.711; the
// agent, with voicemail detection on, stays silent through the greeting, leaves its
// voicemail message after the beep (with the call's variables filled in), hangs up, and
// the call ends with status voicemail (voicemail_reached). No LLM turn is taken.
func TestSIPOutboundVoicemail(t *testing.T) {
	t.Parallel()
	const (
		greeting = "Hi, you have reached Alex Morgan. I am not available to take your call right now. Please leave a message after the tone."
		message  = "Hi Ada, this is the dental practice. Please call us back."
	)
	srv := openaitest.New(t, openaitest.Config{Transcripts: []string{greeting}})
	e := newSIPEnv(t, srv, 20*time.Second)
	tenant := e.tenant(t)
	agentID := e.newAgent(t, tenant, "Hello, this is Parley.",
		`,"enable_voicemail_detection":true,"voicemail_message":"Hi {{customer_name}}, this is the dental practice. Please call us back."`)

	// The machine: greeting, a short gap, a 600 ms beep, then silence while it records.
	dir := t.TempDir()
	g, err := audio.ReadWAVFile("../voice/testdata/greeting.wav")
	if err != nil {
		t.Fatal(err)
	}
	pcm, err := audio.Resample(g.Samples, g.Rate, 8000)
	if err != nil {
		t.Fatal(err)
	}
	pcm = append(pcm, make([]int16, 8000*3/10)...)
	beepAt := time.Duration(len(pcm)) * time.Second / 8000
	for i := range 8000 * 6 / 10 {
		pcm = append(pcm, int16(0.1*32767*math.Sin(2*math.Pi*1000*float64(i)/8000)))
	}
	pcm = append(pcm, make([]int16, 8000*20)...)
	if err := os.WriteFile(filepath.Join(dir, "machine.ulaw"), audio.EncodeUlaw(nil, pcm), 0o644); err != nil {
		t.Fatal(err)
	}
	scenario, err := filepath.Abs("testdata/uas_voicemail.xml")
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	sink := newRTPSink(t)
	// rtp_stream reads machine.ulaw from sipp's working directory.
	sipp := siptest.StartSipp(t, ctx, siptest.SippConfig{Dir: dir, Scenario: scenario,
		Args: []string{"-m", "1", "-key", "rtpport", strconv.Itoa(sink.port())}})
	port := sipp.Port
	e.outboundLine(t, "+15550210", "127.0.0.1:"+strconv.Itoa(port))
	id := e.outboundCall(t, tenant, agentID, "+15550310", map[string]any{"variables": map[string]any{"customer_name": "Ada"}})
	if _, err := e.jobs.Insert(ctx, DialArgs{CallID: id}, nil); err != nil {
		t.Fatal(err)
	}
	live := e.waitCall(t, ctx, tenant, id, "the machine to answer", func(c Call) bool { return c.CallStatus == StatusInProgress || !c.Live() })
	if live.CallStatus != StatusInProgress || live.StartTimestamp == nil {
		t.Fatalf("answered call: %s / %s", live.CallStatus, live.DisconnectionReason)
	}
	if err := sipp.Wait(t, ctx); err != nil {
		t.Fatalf("sipp (the machine) did not get the agent's hang-up: %v\n%s", err, sipp.Output())
	}
	c := e.waitCall(t, ctx, tenant, id, "the call to end", func(c Call) bool { return !c.Live() })
	if c.CallStatus != StatusVoicemail || c.DisconnectionReason != ReasonVoicemailReached {
		t.Fatalf("call ended %s / %s, want voicemail / %s", c.CallStatus, c.DisconnectionReason, ReasonVoicemailReached)
	}
	var spoke []string
	for _, turn := range c.TranscriptObject {
		if turn.Role == RoleAgent {
			spoke = append(spoke, turn.Content)
			// Not before the beep: the agent stays silent over the greeting (offsets
			// run from the conversation's start, the answer).
			if time.Duration(turn.StartMS)*time.Millisecond < beepAt {
				t.Errorf("the agent spoke %d ms after the answer, before the beep at %v", turn.StartMS, beepAt)
			}
		}
	}
	if len(spoke) != 1 || spoke[0] != message {
		t.Errorf("the agent said %q, want only the voicemail message %q", spoke, message)
	}
	if n := len(srv.Chats()); n != 0 {
		t.Errorf("%d LLM requests on a machine, want none", n)
	}
	// The message was heard on the line (the machine's media socket).
	if heard := sink.speechDuration(); heard < time.Second {
		t.Errorf("the machine recorded %v of the agent's speech", heard)
	}
}
