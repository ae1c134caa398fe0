package voice

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// Voicemail fixtures (testdata/make.sh): an answering machine's espeak-ng greeting
// (7.2 s, three sentences, ending "Please leave a message after the tone."), a short
// one ("Sorry I missed your call. Leave a message.", 2.4 s) and a person's "Hello?"
// (0.4 s). The beep is generated: a sine at -20 dBFS RMS, a typical
// beep level, a little louder than the speech.
func vmFixture(t testing.TB, name string) []int16 {
	t.Helper()
	f, err := audio.ReadWAVFile("testdata/" + name + ".wav")
	if err != nil {
		t.Fatal(err)
	}
	if f.Rate != 16000 {
		t.Fatalf("%s: %d Hz", name, f.Rate)
	}
	return f.Samples
}

func beep(hz float64, d time.Duration) []int16 {
	n := int(d * 16000 / time.Second)
	out := make([]int16, n)
	amp := 32768 * math.Pow(10, -20.0/20) * math.Sqrt2
	for i := range out {
		out[i] = int16(amp * math.Sin(2*math.Pi*hz*float64(i)/16000))
	}
	return out
}

func silence(d time.Duration) []int16 { return make([]int16, int(d*16000/time.Second)) }

const (
	greetingText = "Hi, you have reached Alex Morgan. I am not available to take your call right now. " +
		"Please leave a message after the tone."
	vmMessage1 = "Hi Alice, this is Parley Dental calling about your appointment tomorrow."
	vmMessage2 = "Please call us back."
)

// byLength transcribes the greeting's uploads as the greeting and anything short (a
// beep the VAD took for speech, a click) as nothing, as whisper does.
func byLength(u openaitest.Upload) string {
	if u.Duration >= 1500*time.Millisecond {
		return greetingText
	}
	return ""
}

func vmEnv(t *testing.T, srv *openaitest.Server, vm VoicemailConfig, mod func(*Config)) *env {
	return newEnv(t, srv, func(c *Config) {
		c.DetectVoicemail = true
		c.Agent.Voicemail = vm
		c.Agent.BeginMessage = "Hi, this is Parley Dental calling for {{customer_name}}."
		if mod != nil {
			mod(c)
		}
	})
}

func vmDetected(e Event) bool { return isKind[*VoicemailDetection](e) }

// TestVoicemailLeaveMessage: a machine's greeting then a beep: the agent says nothing
// over the greeting, says its message (variables filled) once the beep has ended, and
// the session ends with EndVoicemail without the model ever being asked.
func TestVoicemailLeaveMessage(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{Transcribe: byLength})
	e := vmEnv(t, srv, VoicemailConfig{
		Enabled: true,
		Message: "Hi {{customer_name}}, this is Parley Dental calling about your appointment tomorrow. " + vmMessage2,
	}, nil)
	c := startCaller(t, e.s, 16000)
	c.sayAndWait(t, silence(500*time.Millisecond)) // the pick-up
	c.sayAndWait(t, vmFixture(t, "greeting"))
	c.sayAndWait(t, silence(700*time.Millisecond))
	c.sayAndWait(t, beep(1000, 600*time.Millisecond))
	beepEnded := time.Now()

	det := e.rec.waitFor(t, timeout, "detection", vmDetected).(*VoicemailDetection)
	if det.Result != VoicemailMachine || (det.Cue != "phrase" && det.Cue != "long_greeting") {
		t.Errorf("detection %+v, want a machine by its greeting", det)
	}
	t.Logf("machine by %s, %v before the beep ended", det.Cue, beepEnded.Sub(det.At))
	if det.At.After(beepEnded) {
		t.Errorf("machine decided at %v, after the beep", det.At)
	}
	first := e.rec.waitFor(t, timeout, "message", agentSaid(vmMessage1)).(*Transcript)
	e.rec.waitFor(t, timeout, "message end", agentSaid(vmMessage2))
	end := e.rec.waitFor(t, timeout, "end", ended).(*CallEnded)
	if end.Reason != EndVoicemail {
		t.Errorf("ended %s, want %s", end.Reason, EndVoicemail)
	}
	// Said after the beep (the caller's clock and the session's are both the system
	// clock; one frame of slack for the last beep frame's write).
	if first.Start.Before(beepEnded.Add(-frameDuration)) {
		t.Errorf("message started %v before the beep ended", beepEnded.Sub(first.Start))
	}
	if got := spoken(srv); !slices.Equal(got, []string{vmMessage1, vmMessage2}) {
		t.Errorf("spoke %q, want only the message", got)
	}
	if n := len(srv.Chats()); n != 0 {
		t.Errorf("%d chat requests: the model has nothing to say to a machine", n)
	}
	<-e.s.Done()
	if r := e.s.EndReason(); r != EndVoicemail {
		t.Errorf("EndReason %s", r)
	}
}

// TestVoicemailShortGreeting: a greeting too short to be long, but with "leave a
// message" in it, is a machine by its words; with no beep after it, the message
// starts once the greeting has been quiet for voicemailQuiet.
func TestVoicemailShortGreeting(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{Transcripts: []string{"Sorry I missed your call. Leave a message."}})
	e := vmEnv(t, srv, VoicemailConfig{Enabled: true, Action: VoicemailLeaveMessage, Message: vmMessage2}, nil)
	c := startCaller(t, e.s, 16000)
	c.sayAndWait(t, silence(300*time.Millisecond))
	c.sayAndWait(t, vmFixture(t, "shortgreeting"))
	greetingEnded := time.Now()
	det := e.rec.waitFor(t, timeout, "detection", vmDetected).(*VoicemailDetection)
	if det.Result != VoicemailMachine || det.Cue != "phrase" {
		t.Errorf("detection %+v, want a machine by its words", det)
	}
	msg := e.rec.waitFor(t, timeout, "message", agentSaid(vmMessage2)).(*Transcript)
	if wait := msg.Start.Sub(greetingEnded); wait < voicemailQuiet-100*time.Millisecond {
		t.Errorf("message began %v after the greeting, want at least %v of quiet", wait, voicemailQuiet)
	}
	if end := e.rec.waitFor(t, timeout, "end", ended).(*CallEnded); end.Reason != EndVoicemail {
		t.Errorf("ended %s", end.Reason)
	}
}

// TestVoicemailBeepOnly: a mailbox that answers with nothing but a beep is a machine
// by the beep, and the message follows the beep's end, also when the beep lost a few
// frames on the way (a gap under voicemailBeepGap is the same beep).
func TestVoicemailBeepOnly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		beep []int16
	}{
		{"clean", beep(850, 500*time.Millisecond)},
		{"with a dropout", slices.Concat(beep(1000, 300*time.Millisecond), silence(60*time.Millisecond), beep(1000, 300*time.Millisecond))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := openaitest.New(t, openaitest.Config{})
			e := vmEnv(t, srv, VoicemailConfig{Enabled: true, Message: vmMessage2}, nil)
			c := startCaller(t, e.s, 16000)
			c.sayAndWait(t, silence(600*time.Millisecond))
			c.sayAndWait(t, tc.beep)
			beepEnded := time.Now()
			det := e.rec.waitFor(t, timeout, "detection", vmDetected).(*VoicemailDetection)
			if det.Result != VoicemailMachine || det.Cue != "beep" {
				t.Errorf("detection %+v, want a machine by its beep", det)
			}
			msg := e.rec.waitFor(t, timeout, "message", agentSaid(vmMessage2)).(*Transcript)
			if msg.Start.Before(beepEnded.Add(-frameDuration)) {
				t.Errorf("message started %v before the beep ended", beepEnded.Sub(msg.Start))
			}
			if end := e.rec.waitFor(t, timeout, "end", ended).(*CallEnded); end.Reason != EndVoicemail {
				t.Errorf("ended %s", end.Reason)
			}
			if got := spoken(srv); len(got) != 1 {
				t.Errorf("spoke %q, want the message once", got)
			}
		})
	}
}

// TestVoicemailHangup: with the hangup action the call ends as soon as the machine is
// recognised, before its greeting is over, and nothing is said.
func TestVoicemailHangup(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{Transcribe: byLength})
	e := vmEnv(t, srv, VoicemailConfig{Enabled: true, Action: VoicemailHangup, Message: "unused"}, nil)
	c := startCaller(t, e.s, 16000)
	c.say(silence(300 * time.Millisecond))
	c.say(vmFixture(t, "greeting"))
	end := e.rec.waitFor(t, timeout, "end", ended).(*CallEnded)
	if end.Reason != EndVoicemail {
		t.Errorf("ended %s, want %s", end.Reason, EndVoicemail)
	}
	det := e.rec.waitFor(t, timeout, "detection", vmDetected).(*VoicemailDetection)
	if det.Result != VoicemailMachine {
		t.Errorf("detection %+v", det)
	}
	if got := spoken(srv); len(got) != 0 {
		t.Errorf("spoke %q to a machine", got)
	}
	if n := len(srv.Chats()); n != 0 {
		t.Errorf("%d chat requests", n)
	}
}

// TestVoicemailHuman: a person's short "Hello?" is a person: the agent says its begin
// message, and the next turn goes to the model with the hello in the history.
func TestVoicemailHuman(t *testing.T) {
	t.Parallel()
	const answer = "Which day suits you?"
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"Hello?", "I would like to book an appointment for Tuesday."},
		Replies:     []openaitest.Reply{{Text: answer}},
	})
	e := vmEnv(t, srv, VoicemailConfig{Enabled: true, Message: "Please call us back."}, nil)
	c := startCaller(t, e.s, 16000)
	c.say(silence(400 * time.Millisecond))
	c.say(vmFixture(t, "pickup"))
	det := e.rec.waitFor(t, timeout, "detection", vmDetected).(*VoicemailDetection)
	if det.Result != VoicemailHuman || det.Cue != "short_greeting" || det.Text != "Hello?" {
		t.Errorf("detection %+v, want a person", det)
	}
	e.rec.waitFor(t, timeout, "greeting", agentSaid("Hi, this is Parley Dental calling for Alice."))
	c.say(fixture(t, "hello"))
	e.rec.waitFor(t, timeout, "answer", agentSaid(answer))

	chats := srv.Chats()
	if len(chats) != 1 {
		t.Fatalf("%d chat requests, want 1", len(chats))
	}
	req := chats[0].Request
	if got := roles(req); !slices.Equal(got, []string{"system", "user", "assistant", "user"}) {
		t.Fatalf("roles %v", got)
	}
	if req.Messages[1].Content != "Hello?" || req.Messages[2].Content != "Hi, this is Parley Dental calling for Alice." ||
		req.Messages[3].Content != "I would like to book an appointment for Tuesday." {
		t.Errorf("messages %+v", req.Messages)
	}
	if e.s.EndReason() != "" {
		t.Errorf("session ended: %s", e.s.EndReason())
	}
	if n := len(vmEvents(e)); n != 1 {
		t.Errorf("%d detection events, want 1", n)
	}
}

func vmEvents(e *env) []*VoicemailDetection {
	var out []*VoicemailDetection
	for _, ev := range e.rec.all() {
		if d, ok := ev.(*VoicemailDetection); ok {
			out = append(out, d)
		}
	}
	return out
}

// TestVoicemailTimeout: nobody says anything: after the detection timeout a person is
// assumed and greeted.
func TestVoicemailTimeout(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{})
	e := vmEnv(t, srv, VoicemailConfig{Enabled: true, Message: "Please call us back.", Timeout: time.Second}, nil)
	startCaller(t, e.s, 16000)
	det := e.rec.waitFor(t, timeout, "detection", vmDetected).(*VoicemailDetection)
	if det.Result != VoicemailHuman || det.Cue != "timeout" {
		t.Errorf("detection %+v, want a person by timeout", det)
	}
	e.rec.waitFor(t, timeout, "greeting", agentSaid("Hi, this is Parley Dental calling for Alice."))
	if got := spoken(srv); !slices.Equal(got, []string{"Hi, this is Parley Dental calling for Alice."}) {
		t.Errorf("spoke %q", got)
	}
}

// TestVoicemailOff: without DetectVoicemail (an inbound call) the agent greets at once,
// whatever the agent's setting.
func TestVoicemailOff(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{})
	e := vmEnv(t, srv, VoicemailConfig{Enabled: true, Message: "Please call us back."}, func(c *Config) {
		c.DetectVoicemail = false
	})
	e.rec.waitFor(t, timeout, "greeting", agentSaid("Hi, this is Parley Dental calling for Alice."))
	if n := len(vmEvents(e)); n != 0 {
		t.Errorf("%d detection events", n)
	}
}

// TestToneDetector: beeps at the frequencies machines use are found, start and end,
// within a few frames; the speech fixtures never look like one.
func TestToneDetector(t *testing.T) {
	t.Parallel()
	frames := func(x []int16) [][]int16 {
		var out [][]int16
		for len(x) >= 320 {
			out = append(out, x[:320])
			x = x[320:]
		}
		return out
	}
	for _, hz := range []float64{440, 850, 1000, 1012.5, 1400} {
		d := newToneDetector(16000)
		clip := slices.Concat(silence(200*time.Millisecond), beep(hz, 400*time.Millisecond), silence(200*time.Millisecond))
		start, end := -1, -1
		for i, f := range frames(clip) {
			switch d.step(f) {
			case toneStart:
				start = i
			case toneEnd:
				end = i
			}
		}
		// The beep is frames 10-29: found after toneMinFrames, ended toneEndFrames
		// after it stops.
		if start != 10+toneMinFrames-1 || end != 30+toneEndFrames-1 {
			t.Errorf("%v Hz: start at frame %d, end at %d", hz, start, end)
		}
	}
	for _, name := range []string{"greeting", "pickup"} {
		d := newToneDetector(16000)
		for i, f := range frames(vmFixture(t, name)) {
			if ev := d.step(f); ev != toneNone {
				t.Errorf("%s: tone event %d at frame %d", name, ev, i)
			}
		}
	}
	for _, name := range []string{"hello", "interrupt", "yeah", "cough"} {
		d := newToneDetector(16000)
		for i, f := range frames(fixture(t, name)) {
			if ev := d.step(f); ev != toneNone {
				t.Errorf("%s: tone event %d at frame %d", name, ev, i)
			}
		}
	}
}

func TestVoicemailPhrase(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		text, lang string
		machine    bool
	}{
		{greetingText, "en-US", true},
		{"You've reached the voicemail of Sam.", "en", true},
		{"The person you are calling is not available.", "en-GB", true},
		{"Please leave your message after the beep", "en", true},
		{"Hola, deje su mensaje después del tono.", "es-ES", true},
		{"Bonjour, laissez un message après le bip.", "fr", true},
		{"Leave a message.", "de", true}, // English always counts
		{"Hello?", "en", false},
		{"Yes, this is Alex speaking.", "en", false},
		{"Hallo, wer ist da?", "de", false},
		{"I'm available tomorrow", "en", false},
		{"Hi, can I call you back in five minutes?", "en", false},
	} {
		if got := voicemailPhrase(tc.text, tc.lang) != ""; got != tc.machine {
			t.Errorf("voicemailPhrase(%q, %s) = %v, want %v", tc.text, tc.lang, got, tc.machine)
		}
	}
}

func TestVoicemailConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   VoicemailConfig
		want VoicemailAction
		ok   bool
	}{
		{VoicemailConfig{Enabled: true}, VoicemailHangup, true},
		{VoicemailConfig{Enabled: true, Message: "Call us."}, VoicemailLeaveMessage, true},
		{VoicemailConfig{Enabled: true, Action: "HANGUP", Message: "Call us."}, VoicemailHangup, true},
		{VoicemailConfig{Enabled: true, Action: "beep"}, "beep", false},
		{VoicemailConfig{Enabled: true, Timeout: 10 * time.Minute}, VoicemailHangup, false},
	} {
		v := tc.in.withDefaults()
		if err := v.validate(); (err == nil) != tc.ok || v.Action != tc.want {
			t.Errorf("%+v: action %q, err %v; want %q, ok %v", tc.in, v.Action, err, tc.want, tc.ok)
		}
	}
}
