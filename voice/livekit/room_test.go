package livekit_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	lksdk "github.com/livekit/server-sdk-go/v2"

	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/voice"
	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/livekit"
	"github.com/parleyhq/parley/voice/livekit/lktest"
	"github.com/parleyhq/parley/voice/llm"
	"github.com/parleyhq/parley/voice/stt"
	"github.com/parleyhq/parley/voice/tts"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

var (
	lkOnce sync.Once
	lkSrv  *lkserver.Server
	lkErr  error
	lkDir  string
)

func TestMain(m *testing.M) {
	livekit.SetSDKLogger(slog.New(slog.DiscardHandler))
	code := m.Run()
	if lkSrv != nil {
		lkSrv.Stop()
	}
	if lkDir != "" {
		os.RemoveAll(lkDir)
	}
	os.Exit(code)
}

// liveKit is the package's one real livekit-server, started on first use.
func liveKit(t testing.TB) *lkserver.Server {
	t.Helper()
	lkOnce.Do(func() {
		lkDir, lkErr = os.MkdirTemp("", "parley-lk-")
		if lkErr == nil {
			lkSrv, lkErr = lkserver.Start(context.Background(), lkserver.Config{WorkDir: lkDir})
		}
	})
	if lkErr != nil {
		if os.Getenv("CI") == "" && strings.Contains(lkErr.Error(), "not found") {
			t.Skip(lkErr)
		}
		t.Fatal(lkErr)
	}
	return lkSrv
}

func roomName() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "test-" + hex.EncodeToString(b)
}

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

// agentCall is an agent in a room, answering with providers on srv.
type agentCall struct {
	room   *livekit.Room
	sess   *voice.Session
	rec    *recorder
	result chan livekit.Result
	errc   chan error
}

func startAgent(t *testing.T, lk *lkserver.Server, room string, srv *openaitest.Server, mod func(*voice.Config)) *agentCall {
	t.Helper()
	ctx := t.Context()
	tok, err := lktest.Token(lkserver.DevKey, lkserver.DevSecret, room, "agent-"+room, true)
	if err != nil {
		t.Fatal(err)
	}
	r, err := livekit.Join(ctx, livekit.Config{URL: lk.URL(), Token: tok, CallerWait: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	sttP, err := stt.NewOpenAI(stt.OpenAIConfig{BaseURL: srv.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	llmP, err := llm.NewOpenAI(llm.OpenAIConfig{BaseURL: srv.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	ttsP, err := tts.NewOpenAI(tts.OpenAIConfig{BaseURL: srv.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	cfg := voice.Config{
		CallID: room,
		Agent: voice.Agent{
			SystemPrompt:            "You are a receptionist.",
			BeginMessage:            "Hello, this is Parley.",
			InterruptionSensitivity: 0.8,
		},
		STT: sttP, LLM: llmP, TTS: ttsP,
		Output: r.Output(), OutputRate: r.OutputRate(),
		Events: r.Events(rec),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := voice.NewSession(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := &agentCall{room: r, sess: s, rec: rec, result: make(chan livekit.Result, 1), errc: make(chan error, 1)}
	go func() {
		res, err := r.Run(ctx, s)
		a.result <- res
		a.errc <- err
	}()
	return a
}

func (a *agentCall) wait(t *testing.T) livekit.Result {
	t.Helper()
	select {
	case res := <-a.result:
		if err := <-a.errc; err != nil {
			t.Fatal(err)
		}
		return res
	case <-time.After(20 * time.Second):
		t.Fatal("the agent's Run did not return")
	}
	return livekit.Result{}
}

func joinCaller(t *testing.T, lk *lkserver.Server, room string) *lktest.Caller {
	t.Helper()
	tok, err := lktest.Token(lkserver.DevKey, lkserver.DevSecret, room, "caller-"+room, false)
	if err != nil {
		t.Fatal(err)
	}
	c, err := lktest.Join(t.Context(), lk.URL(), tok)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func speech(t *testing.T, name string) []int16 {
	t.Helper()
	s, err := lktest.LoadSpeech("../testdata/" + name + ".wav")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestConversation: a caller joins a real room, hears the greeting, asks a question in
// espeak-ng speech, and hears the answer; transcripts reach the room as captions and
// the session's ledger has the turn's latency.
func TestConversation(t *testing.T) {
	t.Parallel()
	lk := liveKit(t)
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"What time do you open?"},
		Replies:     []openaitest.Reply{{Text: "We open at nine in the morning."}},
	})
	room := roomName()
	agent := startAgent(t, lk, room, srv, nil)

	caller := joinCaller(t, lk, room)
	var capMu sync.Mutex
	var captions []string
	caller.Room().RegisterTextStreamHandler(livekit.CaptionTopic, func(r *lksdk.TextStreamReader, from string) {
		text := r.ReadAll()
		capMu.Lock()
		captions = append(captions, r.Info.Attributes["parley.speaker"]+": "+text)
		capMu.Unlock()
	})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	joined := time.Now()

	// The greeting.
	if _, err := caller.WaitSpeech(ctx, joined); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	greetEnd, err := caller.WaitSilence(ctx, joined, 300*time.Millisecond)
	if err != nil {
		t.Fatalf("end of greeting: %v", err)
	}

	// The question, then silence so the agent hears the end of it.
	q := speech(t, "hello")
	asked := caller.Say(q)
	caller.Say(lktest.Silence(2 * time.Second))
	spokeUntil := asked.Add(time.Duration(len(q)) * time.Second / lktest.Rate)
	answer, err := caller.WaitSpeech(ctx, spokeUntil)
	if err != nil {
		t.Fatalf("answer: %v (greeting ended %v)", err, greetEnd)
	}
	t.Logf("answer heard %v after the question ended", answer.Sub(spokeUntil).Round(time.Millisecond))
	if _, err := caller.WaitSilence(ctx, answer, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// The agent spoke as long as the fake voice's audio for the answer (60 ms a
	// character): the audio really is the answer.
	var loud time.Duration
	for _, ch := range caller.Chunks() {
		if !ch.At.Before(answer) && ch.Speech() {
			loud += time.Duration(ch.N) * time.Second / lktest.Rate
		}
	}
	want := time.Duration(len("We open at nine in the morning.")) * openaitest.DefaultCharDuration
	if loud < want*8/10 || loud > want*12/10 {
		t.Errorf("heard %v of answer audio, want about %v", loud, want)
	}

	// The recogniser got the caller's speech; the model got the transcript.
	if n := len(srv.Transcriptions()); n < 1 {
		t.Fatalf("transcriptions: %d", n)
	}
	chats := srv.Chats()
	if len(chats) != 1 {
		t.Fatalf("chat requests: %d", len(chats))
	}

	caller.Close()
	res := agent.wait(t)
	if res.Outcome != livekit.CallerLeft || !strings.HasPrefix(res.Caller, "caller-") || res.CallerKind != "standard" {
		t.Errorf("result %+v", res)
	}

	var userFinal, agentSaid bool
	var lat *voice.TurnLatency
	for _, e := range agent.rec.all() {
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
	if lat.VoiceToVoice() <= 0 || lat.LLMTimeToFirstToken() <= 0 {
		t.Errorf("latency ledger %+v", lat)
	}
	capMu.Lock()
	defer capMu.Unlock()
	joinedCaps := strings.Join(captions, "\n")
	if !strings.Contains(joinedCaps, "user: What time do you open?") || !strings.Contains(joinedCaps, "agent: We open at nine") {
		t.Errorf("captions:\n%s", joinedCaps)
	}
}

// TestBargeIn: the caller talks over a long answer; the agent's audio, as heard by the
// caller, stops within 150 ms of the caller's speech onset.
func TestBargeIn(t *testing.T) {
	t.Parallel()
	lk := liveKit(t)
	long := "Our opening hours are nine to five on weekdays, ten to four on Saturdays, " +
		"and we are closed on Sundays and public holidays, except in December when we open every day."
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"What time do you open?", "Wait, stop."},
		Replies:     []openaitest.Reply{{Text: long}, {Text: "Sure."}},
	})
	room := roomName()
	agent := startAgent(t, lk, room, srv, func(c *voice.Config) { c.Agent.BeginMessage = "" })
	caller := joinCaller(t, lk, room)
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()

	q := speech(t, "hello")
	asked := caller.Say(q)
	caller.Say(lktest.Silence(1500 * time.Millisecond))
	answer, err := caller.WaitSpeech(ctx, asked.Add(time.Duration(len(q))*time.Second/lktest.Rate))
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	// Let the answer play for a second, then interrupt it.
	select {
	case <-time.After(time.Until(answer.Add(time.Second))):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	stop := speech(t, "interrupt")
	onsetOff, err := audio.Onset(stop, lktest.Rate, -40)
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
	if took > 150*time.Millisecond {
		t.Errorf("agent kept talking %v after the caller started (want <= 150ms)", took)
	}
	// The reply was cut, not merely paused.
	var barge bool
	for _, e := range agent.rec.all() {
		if in, ok := e.(*voice.Interruption); ok && in.Kind == voice.BargeIn {
			barge = true
		}
	}
	if !barge {
		t.Error("no barge-in event")
	}
	caller.Close()
	agent.wait(t)
}

// TestCallerWithDTX: a caller whose microphone sends nothing in silence (a browser's
// Opus DTX, or a mute right after speaking) is still answered promptly: the room fills
// the missing audio with silence on the clock, so the engine hears the pause.
func TestCallerWithDTX(t *testing.T) {
	t.Parallel()
	lk := liveKit(t)
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"What time do you open?"},
		Replies:     []openaitest.Reply{{Text: "At nine."}},
	})
	room := roomName()
	agent := startAgent(t, lk, room, srv, func(c *voice.Config) { c.Agent.BeginMessage = "" })
	tok, err := lktest.Token(lkserver.DevKey, lkserver.DevSecret, room, "caller-"+room, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	caller, err := lktest.JoinDTX(ctx, lk.URL(), tok)
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	time.Sleep(500 * time.Millisecond) // the agent subscribes
	q := speech(t, "hello")
	asked := caller.Say(q)
	spokeUntil := asked.Add(time.Duration(len(q)) * time.Second / lktest.Rate)
	answer, err := caller.WaitSpeech(ctx, spokeUntil)
	if err != nil {
		t.Fatalf("no answer after the caller's microphone went quiet: %v", err)
	}
	wait := answer.Sub(spokeUntil)
	t.Logf("answer heard %v after the question ended; %d silence frames filled in", wait.Round(time.Millisecond), agent.room.Stats().SilenceFeeds.Load())
	// Endpointing is 400 ms after a complete sentence; the filler adds at most its
	// slack and a tick. Seconds would mean the engine waited for audio that never came.
	if wait > 1500*time.Millisecond {
		t.Errorf("answered %v after the question", wait)
	}
	if agent.room.Stats().SilenceFeeds.Load() == 0 {
		t.Error("no silence was filled in")
	}
	caller.Close()
	agent.wait(t)
}
