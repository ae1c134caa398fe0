package twilio_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/parleyhq/parley/voice"
	"github.com/parleyhq/parley/voice/llm"
	"github.com/parleyhq/parley/voice/stt"
	"github.com/parleyhq/parley/voice/tts"
	"github.com/parleyhq/parley/voice/twilio"
	"github.com/parleyhq/parley/voice/twilio/twiliotest"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder keeps the session's events.
type recorder struct {
	mu  sync.Mutex
	evs []voice.Event
}

func (r *recorder) HandleEvent(e voice.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, e)
	r.mu.Unlock()
}

func (r *recorder) all() []voice.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]voice.Event(nil), r.evs...)
}

// bridge is an httptest server hosting the stream, as Parley's calls package will:
// accept, build a session from the start message, run.
type bridge struct {
	srv    *httptest.Server
	url    string
	rec    *recorder
	digits chan string
	start  chan twilio.Start
	stream chan *twilio.Stream
	done   chan runResult
}

type runResult struct {
	res twilio.Result
	err error // from Accept or Run
}

func startBridge(t *testing.T, prov *openaitest.Server, mod func(*voice.Config), tcfg twilio.Config) *bridge {
	t.Helper()
	b := &bridge{
		rec: &recorder{}, digits: make(chan string, 16), start: make(chan twilio.Start, 1),
		stream: make(chan *twilio.Stream, 1), done: make(chan runResult, 1),
	}
	tcfg.OnDTMF = func(d string) { b.digits <- d }
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := twilio.AcceptHTTP(w, r, tcfg)
		if err != nil {
			b.done <- runResult{err: err}
			return
		}
		b.start <- st.Start()
		b.stream <- st
		var sttP stt.Provider
		var llmP llm.Provider
		var ttsP tts.Provider
		if prov != nil {
			sttP, _ = stt.NewOpenAI(stt.OpenAIConfig{BaseURL: prov.URL, APIKey: "k"})
			llmP, _ = llm.NewOpenAI(llm.OpenAIConfig{BaseURL: prov.URL, APIKey: "k"})
			ttsP, _ = tts.NewOpenAI(tts.OpenAIConfig{BaseURL: prov.URL, APIKey: "k"})
		}
		cfg := voice.Config{
			CallID: st.Start().CustomParameters["call_id"],
			Agent: voice.Agent{
				SystemPrompt:            "You are a receptionist.",
				BeginMessage:            "Hello, this is Parley.",
				InterruptionSensitivity: 0.8,
			},
			STT: sttP, LLM: llmP, TTS: ttsP,
			Output: st.Output(), OutputRate: st.OutputRate(),
			Events: b.rec,
		}
		if mod != nil {
			mod(&cfg)
		}
		s, err := voice.NewSession(cfg)
		if err != nil {
			st.Close()
			b.done <- runResult{err: err}
			return
		}
		res, err := st.Run(context.Background(), s)
		b.done <- runResult{res: res, err: err}
	}))
	b.url = "ws" + strings.TrimPrefix(b.srv.URL, "http")
	t.Cleanup(b.srv.Close)
	return b
}

func (b *bridge) wait(t *testing.T) runResult {
	t.Helper()
	select {
	case r := <-b.done:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("the bridge did not return")
	}
	return runResult{}
}

func connect(t *testing.T, b *bridge, params map[string]string) *twiliotest.Caller {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := twiliotest.Connect(ctx, b.url, twiliotest.Options{CustomParameters: params})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func speech(t *testing.T, name string) []int16 {
	t.Helper()
	s, err := twiliotest.LoadSpeech("../testdata/" + name + ".wav")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestConversation: Twilio connects, the caller hears the greeting, asks a question in
// espeak-ng speech (8 kHz μ-law, as a phone line carries it), and hears the answer;
// the marks come back; "stop" ends Run with CallerHungUp.
func TestConversation(t *testing.T) {
	t.Parallel()
	prov := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"What time do you open?"},
		Replies:     []openaitest.Reply{{Text: "We open at nine in the morning."}},
	})
	b := startBridge(t, prov, nil, twilio.Config{})
	caller := connect(t, b, map[string]string{"call_id": "call-1", "agent_id": "agent-1"})
	joined := time.Now()
	st := <-b.start
	if st.StreamSID != "MZ00000000000000000000000000000001" || st.CallSID != "CA00000000000000000000000000000001" ||
		st.AccountSID == "" || st.CustomParameters["call_id"] != "call-1" || st.CustomParameters["agent_id"] != "agent-1" ||
		len(st.Tracks) != 1 || st.Tracks[0] != "inbound" {
		t.Fatalf("start %+v", st)
	}
	stream := <-b.stream
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	if _, err := caller.WaitSpeech(ctx, joined); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	greetEnd, err := caller.WaitSilence(ctx, joined, 300*time.Millisecond)
	if err != nil {
		t.Fatalf("end of greeting: %v", err)
	}

	q := speech(t, "hello")
	asked := caller.Say(q)
	spokeUntil := asked.Add(time.Duration(len(q)) * time.Second / twiliotest.Rate)
	answer, err := caller.WaitSpeech(ctx, spokeUntil)
	if err != nil {
		t.Fatalf("answer: %v (greeting ended %v)", err, greetEnd)
	}
	t.Logf("answer heard %v after the question ended", answer.Sub(spokeUntil).Round(time.Millisecond))
	if _, err := caller.WaitSilence(ctx, answer, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// The agent spoke as long as the fake voice's audio for the answer: the audio
	// really is the answer, through μ-law both ways.
	var loud time.Duration
	for _, ch := range caller.Chunks() {
		if !ch.At.Before(answer) && ch.Speech() {
			loud += time.Duration(ch.N) * time.Second / twiliotest.Rate
		}
	}
	want := time.Duration(len("We open at nine in the morning.")) * openaitest.DefaultCharDuration
	if loud < want*8/10 || loud > want*12/10 {
		t.Errorf("heard %v of answer audio, want about %v", loud, want)
	}
	if n := len(prov.Transcriptions()); n < 1 {
		t.Fatalf("transcriptions: %d", n)
	}
	if n := len(prov.Chats()); n != 1 {
		t.Fatalf("chat requests: %d", n)
	}
	// Marks went out and came back; with the agent silent, nothing is left unplayed.
	stats := stream.Stats()
	if stats.MarksSent.Load() == 0 || stats.MarksEchoed.Load() == 0 || caller.MarksEchoed() == 0 {
		t.Errorf("marks: sent %d, echoed %d", stats.MarksSent.Load(), stats.MarksEchoed.Load())
	}
	if u := stats.Unplayed(); u > 300*time.Millisecond {
		t.Errorf("%v of agent audio unplayed after the answer", u)
	}
	if stats.MediaIn.Load() == 0 || stats.MediaOut.Load() == 0 {
		t.Errorf("media in %d, out %d", stats.MediaIn.Load(), stats.MediaOut.Load())
	}

	if err := caller.Stop(); err != nil {
		t.Fatal(err)
	}
	r := b.wait(t)
	if r.err != nil || r.res.Outcome != twilio.CallerHungUp || r.res.EndReason != voice.EndStopped {
		t.Errorf("run: %+v, %v", r.res, r.err)
	}
	if errs := caller.Errors(); len(errs) > 0 {
		t.Errorf("protocol errors: %v", errs)
	}

	var userFinal, agentSaid bool
	var lat *voice.TurnLatency
	for _, e := range b.rec.all() {
		switch e := e.(type) {
		case *voice.Transcript:
			if e.Speaker == voice.SpeakerUser && e.Final && e.Text == "What time do you open?" {
				userFinal = true
			}
			if e.Speaker == voice.SpeakerAgent && strings.Contains(e.Text, "nine in the morning") {
				agentSaid = true
			}
		case *voice.TurnLatency:
			if !e.LLMRequest.IsZero() {
				lat = e
			}
		}
	}
	if !userFinal || !agentSaid || lat == nil {
		t.Fatalf("events: user final %v, agent said %v, latency %v", userFinal, agentSaid, lat)
	}
	if lat.VoiceToVoice() <= 0 {
		t.Errorf("latency ledger %+v", lat)
	}
}

// TestBargeIn: the caller talks over a long answer; the bridge sends "clear", and the
// agent's audio, as the caller hears it, stops soon after the caller's speech onset.
func TestBargeIn(t *testing.T) {
	t.Parallel()
	long := "Our opening hours are nine to five on weekdays, ten to four on Saturdays, " +
		"and we are closed on Sundays and public holidays, except in December when we open every day."
	prov := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"What time do you open?", "Wait, stop."},
		Replies:     []openaitest.Reply{{Text: long}, {Text: "Sure."}},
	})
	b := startBridge(t, prov, func(c *voice.Config) { c.Agent.BeginMessage = "" }, twilio.Config{})
	caller := connect(t, b, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()

	q := speech(t, "hello")
	asked := caller.Say(q)
	answer, err := caller.WaitSpeech(ctx, asked.Add(time.Duration(len(q))*time.Second/twiliotest.Rate))
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	select {
	case <-time.After(time.Until(answer.Add(time.Second))):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	if n := len(caller.Clears()); n != 0 {
		t.Fatalf("%d clears before the caller spoke", n)
	}
	stop := speech(t, "interrupt")
	onsetOff, err := twiliotest.Onset(stop, -40)
	if err != nil {
		t.Fatal(err)
	}
	said := caller.Say(stop)
	onset := said.Add(onsetOff)
	quiet, err := caller.WaitSilence(ctx, said, 400*time.Millisecond)
	if err != nil {
		t.Fatalf("the agent never stopped: %v", err)
	}
	took := quiet.Sub(onset)
	t.Logf("agent audio stopped %v after the caller's speech onset", took.Round(time.Millisecond))
	// The engine pauses at about 40 ms of loud, voiced sound; the rest is the 20 ms
	// chunking both ways. A generous bound: the machine is shared.
	if took > 400*time.Millisecond {
		t.Errorf("agent kept talking %v after the caller started", took)
	}
	clears := caller.Clears()
	if len(clears) == 0 {
		t.Fatal("no clear message")
	}
	if clears[0].Before(onset) {
		t.Errorf("clear %v before the caller's onset", onset.Sub(clears[0]))
	}
	var barge bool
	for _, e := range b.rec.all() {
		if in, ok := e.(*voice.Interruption); ok && in.Kind == voice.BargeIn {
			barge = true
		}
	}
	if !barge {
		t.Error("no barge-in event")
	}
	caller.Close()
	r := b.wait(t)
	if r.err != nil || r.res.Outcome != twilio.Disconnected {
		t.Errorf("run: %+v, %v", r.res, r.err)
	}
	if errs := caller.Errors(); len(errs) > 0 {
		t.Errorf("protocol errors: %v", errs)
	}
}

// TestMediaGap: the caller's media stops right after the question (an outage between
// Twilio and Parley); the stream fills the gap with silence on the clock, so the engine
// hears the end of the turn and answers promptly.
func TestMediaGap(t *testing.T) {
	t.Parallel()
	prov := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"What time do you open?"},
		Replies:     []openaitest.Reply{{Text: "At nine."}},
	})
	b := startBridge(t, prov, func(c *voice.Config) { c.Agent.BeginMessage = "" }, twilio.Config{})
	caller := connect(t, b, nil)
	stream := <-b.stream
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	q := speech(t, "hello")
	asked := caller.Say(q)
	spokeUntil := asked.Add(time.Duration(len(q)) * time.Second / twiliotest.Rate)
	caller.MuteFrom(spokeUntil)
	answer, err := caller.WaitSpeech(ctx, spokeUntil)
	if err != nil {
		t.Fatalf("no answer after the media stopped: %v", err)
	}
	wait := answer.Sub(spokeUntil)
	fills := stream.Stats().SilenceFeeds.Load()
	t.Logf("answer heard %v after the question ended; %d silence frames filled in", wait.Round(time.Millisecond), fills)
	// Endpointing is 400 ms after a complete sentence; the filler adds at most its
	// slack and a tick. Seconds would mean the engine waited for audio that never came.
	if wait > 1500*time.Millisecond {
		t.Errorf("answered %v after the question", wait)
	}
	if fills == 0 {
		t.Error("no silence was filled in")
	}
	caller.Stop()
	b.wait(t)
}

// TestDTMF: key presses reach the callback, in order.
func TestDTMF(t *testing.T) {
	t.Parallel()
	prov := openaitest.New(t, openaitest.Config{})
	b := startBridge(t, prov, func(c *voice.Config) { c.Agent.BeginMessage = "" }, twilio.Config{})
	caller := connect(t, b, nil)
	for _, d := range []string{"1", "#"} {
		if err := caller.DTMF(d); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"1", "#"} {
		select {
		case got := <-b.digits:
			if got != want {
				t.Errorf("digit %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("digit %q never arrived", want)
		}
	}
	caller.Stop()
	if r := b.wait(t); r.err != nil || r.res.Outcome != twilio.CallerHungUp {
		t.Errorf("run: %+v, %v", r.res, r.err)
	}
}

// TestSessionEnds: when the engine ends the call (here the silence timeout, after its
// reprompt), Run waits for Twilio to confirm the last words played, then closes the
// socket normally: the caller heard the reprompt in full.
func TestSessionEnds(t *testing.T) {
	t.Parallel()
	prov := openaitest.New(t, openaitest.Config{})
	b := startBridge(t, prov, func(c *voice.Config) {
		c.Agent.BeginMessage = ""
		c.Agent.EndCallAfterSilenceMS = 1000
		c.Agent.RepromptMessage = "Still there?"
	}, twilio.Config{})
	caller := connect(t, b, nil)
	stream := <-b.stream
	r := b.wait(t)
	if r.err != nil || r.res.Outcome != twilio.SessionEnded || r.res.EndReason != voice.EndSilence {
		t.Fatalf("run: %+v, %v", r.res, r.err)
	}
	// Run returned only once Twilio had echoed every mark, the final one included.
	st := stream.Stats()
	if sent, echoed := st.MarksSent.Load(), st.MarksEchoed.Load(); sent == 0 || echoed != sent || st.Unplayed() != 0 {
		t.Errorf("marks sent %d, echoed %d, %v unplayed when Run returned", sent, echoed, st.Unplayed())
	}
	select {
	case <-caller.Closed():
	case <-time.After(10 * time.Second):
		t.Fatal("the bridge did not close the socket")
	}
	if s := caller.CloseStatus(); s != websocket.StatusNormalClosure {
		t.Errorf("close status %v", s)
	}
	var loud time.Duration
	for _, ch := range caller.Chunks() {
		if ch.Speech() {
			loud += time.Duration(ch.N) * time.Second / twiliotest.Rate
		}
	}
	want := time.Duration(len("Still there?")) * openaitest.DefaultCharDuration
	if loud < want*8/10 {
		t.Errorf("heard %v of the reprompt, want about %v", loud, want)
	}
}

// TestMalformed: openings that are not Twilio's fail Accept with a protocol error and
// a policy-violation close; a malformed message mid-call fails Run the same way.
func TestMalformed(t *testing.T) {
	t.Parallel()
	const format = `"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}`
	connected := `{"event":"connected","protocol":"Call","version":"1.0.0"}`
	for _, tc := range []struct {
		name string
		msgs []string
	}{
		{"bad JSON", []string{connected, `{"event":"start",`}},
		{"no event", []string{`{"protocol":"Call"}`}},
		{"media before start", []string{connected, `{"event":"media","streamSid":"MZ1","media":{"payload":""}}`}},
		{"wrong encoding", []string{connected, `{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{"streamSid":"MZ1","callSid":"CA1","mediaFormat":{"encoding":"audio/l16","sampleRate":8000,"channels":1}}}`}},
		{"wrong rate", []string{connected, `{"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{"streamSid":"MZ1","callSid":"CA1","mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":16000,"channels":1}}}`}},
		{"missing streamSid", []string{connected, `{"event":"start","sequenceNumber":"1","start":{"callSid":"CA1",` + format + `}}`}},
		{"no start object", []string{connected, `{"event":"start","streamSid":"MZ1"}`}},
		{"two connected", []string{connected, connected}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := startBridge(t, nil, nil, twilio.Config{StartTimeout: 5 * time.Second})
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			conn, err := twiliotest.Dial(ctx, b.url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseNow()
			for _, m := range tc.msgs {
				if err := conn.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
					t.Fatal(err)
				}
			}
			// Reading answers the bridge's close handshake.
			_, _, err = conn.Read(ctx)
			if s := websocket.CloseStatus(err); s != websocket.StatusPolicyViolation {
				t.Errorf("close: %v, want policy violation", err)
			}
			r := b.wait(t)
			if !errors.Is(r.err, twilio.ErrProtocol) {
				t.Fatalf("accept: %v, want a protocol error", r.err)
			}
			t.Log(r.err)
		})
	}

	t.Run("mid-call", func(t *testing.T) {
		t.Parallel()
		for _, bad := range []string{
			`{"event":"media",`,
			`{"event":"media","streamSid":"MZ00000000000000000000000000000001","media":{"payload":"%%%"}}`,
			`{"event":"media","streamSid":"MZ99","media":{"payload":""}}`,
		} {
			prov := openaitest.New(t, openaitest.Config{})
			b := startBridge(t, prov, func(c *voice.Config) { c.Agent.BeginMessage = "" }, twilio.Config{})
			caller := connect(t, b, nil)
			time.Sleep(100 * time.Millisecond) // a few good chunks first
			if err := caller.SendRaw(bad); err != nil {
				t.Fatal(err)
			}
			r := b.wait(t)
			if !errors.Is(r.err, twilio.ErrProtocol) || r.res.Outcome != twilio.Disconnected {
				t.Errorf("%s: run %+v, %v", bad, r.res, r.err)
			}
			select {
			case <-caller.Closed():
			case <-time.After(10 * time.Second):
				t.Fatal("the bridge did not close the socket")
			}
			if s := caller.CloseStatus(); s != websocket.StatusPolicyViolation {
				t.Errorf("%s: close status %v", bad, s)
			}
			caller.Close()
		}
	})
}

// TestStartTimeout: a peer that connects and says nothing is dropped.
func TestStartTimeout(t *testing.T) {
	t.Parallel()
	b := startBridge(t, nil, nil, twilio.Config{StartTimeout: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := twiliotest.Dial(ctx, b.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	r := b.wait(t)
	if r.err == nil || !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("accept: %v", r.err)
	}
}
