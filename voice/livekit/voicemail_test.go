package livekit_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice"
	"github.com/parleyhq/parley/voice/livekit"
	"github.com/parleyhq/parley/voice/livekit/lktest"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// TestVoicemailThroughRoom: an answering machine's greeting and its 1 kHz beep, sent
// through a real room (Opus both ways), are told from a person: the agent stays
// silent over the greeting, leaves its message after the beep, and the session ends
// with EndVoicemail.
func TestVoicemailThroughRoom(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		greeting bool
		wantCue  string // "" for any
	}{
		// Long before the beep the greeting gives the machine away (by its length or
		// its words); the beep then marks its end.
		{"greeting and beep", true, ""},
		// A bare mailbox beep: the tone alone decides, so it survived Opus.
		{"beep only", false, "beep"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lk := liveKit(t)
			srv := openaitest.New(t, openaitest.Config{Transcribe: func(u openaitest.Upload) string {
				if u.Duration >= 1500*time.Millisecond {
					return "Hi, you have reached Alex Morgan. I am not available to take your call right now. Please leave a message after the tone."
				}
				return ""
			}})
			room := roomName()
			agent := startAgent(t, lk, room, srv, func(c *voice.Config) {
				c.DetectVoicemail = true
				c.Agent.Voicemail = voice.VoicemailConfig{Enabled: true, Message: "This is Parley Dental. Please call us back."}
			})
			machine := joinCaller(t, lk, room)
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()

			// The line's silence as the machine picks up.
			start := machine.Say(lktest.Silence(time.Second))
			if tc.greeting {
				machine.Say(speech(t, "greeting"))
				machine.Say(lktest.Silence(700 * time.Millisecond))
			}
			beepAt := machine.Say(beep1k(600 * time.Millisecond))
			beepEnd := beepAt.Add(600 * time.Millisecond)
			machine.Say(lktest.Silence(10 * time.Second))

			// Nothing from the agent until the beep is over; then the message.
			heard, err := machine.WaitSpeech(ctx, start)
			if err != nil {
				t.Fatalf("no message: %v", err)
			}
			if heard.Before(beepEnd) {
				t.Errorf("the agent spoke %v before the beep ended", beepEnd.Sub(heard))
			}
			res := agent.wait(t)
			if res.Outcome != livekit.SessionEnded || res.EndReason != voice.EndVoicemail {
				t.Errorf("result %+v, want the session ended by voicemail", res)
			}
			var det *voice.VoicemailDetection
			for _, e := range agent.rec.all() {
				if d, ok := e.(*voice.VoicemailDetection); ok {
					det = d
				}
			}
			if det == nil || det.Result != voice.VoicemailMachine || (tc.wantCue != "" && det.Cue != tc.wantCue) {
				t.Errorf("detection %+v, want a machine (cue %q)", det, tc.wantCue)
			}
			if got := len(srv.Speeches()); got != 2 {
				t.Errorf("%d sentences spoken, want the message's 2", got)
			}
		})
	}
}

// beep1k is a 1 kHz tone at lktest.Rate, -20 dBFS RMS.
func beep1k(d time.Duration) []int16 {
	out := make([]int16, int(d*lktest.Rate/time.Second))
	amp := 32768 * math.Pow(10, -20.0/20) * math.Sqrt2
	for i := range out {
		out[i] = int16(amp * math.Sin(2*math.Pi*1000*float64(i)/lktest.Rate))
	}
	return out
}
