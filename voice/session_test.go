package voice

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// TestCompleteTurn: the agent greets, the caller (espeak-ng speech at 48 kHz, as WebRTC
// delivers it) asks for an appointment, and the agent answers through the real STT, LLM
// and TTS adapters. It checks the prompt, the clause-cut streaming to TTS, the audio
// that went out, the history and the latency ledger.
func TestCompleteTurn(t *testing.T) {
	t.Parallel()
	const question = "Hello, I would like to book an appointment for Tuesday."
	const answer = "Sure, I can book that for you on Tuesday, what time works best?"
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{question},
		Replies:     []openaitest.Reply{{Text: answer}},
		LLMTokenGap: 5 * time.Millisecond,
	})
	e := newEnv(t, srv, func(c *Config) { c.Agent.BeginMessage = "Hi {{customer_name}}, this is Parley Dental." })
	const greeting = "Hi Alice, this is Parley Dental."

	c := startCaller(t, e.s, 48000)
	e.rec.waitFor(t, timeout, "greeting played", agentSaid(greeting))
	c.say(resampleAll(t, fixture(t, "hello"), 16000, 48000))

	first, second := "Sure, I can book that for you on Tuesday,", "what time works best?"
	e.rec.waitFor(t, timeout, "answer played", agentSaid(second))

	// The first piece went to TTS at the clause, the rest as its own sentence.
	if got, want := spoken(srv), []string{greeting, first, second}; !slices.Equal(got, want) {
		t.Errorf("TTS requests %q, want %q", got, want)
	}
	// The voice was asked for raw PCM, which is what the engine reads.
	for _, sp := range srv.Speeches() {
		if sp.Format != "pcm" || sp.Status != 200 {
			t.Errorf("speech request for %q: format %q, status %d; want pcm, 200", sp.Text, sp.Format, sp.Status)
		}
	}
	chats := srv.Chats()
	if len(chats) != 1 {
		t.Fatalf("%d chat requests, want 1", len(chats))
	}
	req := chats[0].Request
	msgs := req.Messages
	if got := roles(req); !slices.Equal(got, []string{"system", "assistant", "user"}) {
		t.Fatalf("roles %v", got)
	}
	sys := msgs[0].Content
	if !strings.Contains(sys, "The caller is Alice.") || strings.Contains(sys, "{{") {
		t.Errorf("system prompt not filled in: %q", sys)
	}
	if msgs[1].Content != greeting || msgs[2].Content != question {
		t.Errorf("messages %+v", msgs)
	}
	if req.Model != "gpt-test" || req.Temperature == nil || *req.Temperature != 0.3 {
		t.Errorf("model %v temperature %v", req.Model, req.Temperature)
	}
	if tools := req.ToolNames(); !slices.Equal(tools, []string{"end_call"}) {
		t.Errorf("tools %v, want just end_call", tools)
	}
	// The caller's utterance reached the recogniser with its pre-roll.
	var uploads []time.Duration
	for _, tr := range srv.Transcriptions() {
		uploads = append(uploads, tr.Duration)
	}
	if len(uploads) != 1 || uploads[0] < 2800*time.Millisecond || uploads[0] > 4500*time.Millisecond {
		t.Errorf("uploads %v, want one of about 3.1 s of speech plus pre-roll and hangover", uploads)
	}

	// Every sample the voice produced went out, in 20 ms frames at 48 kHz.
	want := outSamples(greeting, 48000) + outSamples(first, 48000) + outSamples(second, 48000)
	got := len(e.out.audio())
	if got < want || got > want+3*960 {
		t.Errorf("%d output samples, want %d (+ at most a padded frame per spurt)", got, want)
	}
	if e.out.bad != 0 {
		t.Errorf("%d malformed output frames", e.out.bad)
	}

	h := e.waitHistory(t, 3)
	if len(h) != 3 || h[0].Content != greeting || h[1].Content != question || h[2].Content != answer {
		t.Errorf("history %+v", h)
	}

	led := e.rec.waitFor(t, timeout, "ledger", isKind[*TurnLatency]).(*TurnLatency)
	stamps := []time.Time{led.SpeechEnded, led.EndOfTurn, led.LLMRequest, led.LLMFirstToken, led.FirstSentence, led.TTSFirstByte, led.FirstAudio}
	for i, ts := range stamps {
		if ts.IsZero() {
			t.Fatalf("ledger stamp %d unset: %+v", i, led)
		}
		if i > 0 && ts.Before(stamps[i-1]) {
			t.Errorf("ledger stamp %d before %d: %+v", i, i-1, led)
		}
	}
	if led.STTFinal.Before(led.SpeechEnded) || led.LLMRequest.Before(led.STTFinal) {
		t.Errorf("STT final out of order: %+v", led)
	}
	// A complete sentence: the shortest endpointing delay, measured from where speech
	// really ended.
	if led.EndpointingDelay != defaultEndpointingMin {
		t.Errorf("endpointing delay %v, want %v for a complete sentence", led.EndpointingDelay, defaultEndpointingMin)
	}
	if d := led.EndOfTurn.Sub(led.SpeechEnded); d < defaultEndpointingMin {
		t.Errorf("turn ended %v after speech, before the %v delay", d, defaultEndpointingMin)
	}
	if got := latencyCounts(t, e); len(got) != 6 || got["response"] != 1 || got["voice_to_voice"] != 1 {
		t.Errorf("latency histograms %v, want one observation in each of 6 stages", got)
	}

	// Order of events: greeting, the caller's words, the ledger, the answer.
	iGreet := e.rec.index(agentSaid(greeting))
	iUser := e.rec.index(userFinal)
	iLed := e.rec.index(isKind[*TurnLatency])
	iAns := e.rec.index(agentSaid(first))
	if !(iGreet < iUser && iUser < iLed && iLed < iAns) {
		t.Errorf("event order greet %d user %d ledger %d answer %d:\n%s", iGreet, iUser, iLed, iAns, describe(e.rec.all()))
	}

	e.s.Stop()
	e.s.Stop()
	ev := e.rec.waitFor(t, timeout, "end", ended).(*CallEnded)
	if ev.Reason != EndStopped || e.s.EndReason() != EndStopped {
		t.Errorf("end reason %v", ev.Reason)
	}
}

// TestAdaptiveEndpointing: the wait after the caller stops depends on how finished the
// transcript sounds.
func TestAdaptiveEndpointing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, transcript string
		want             time.Duration
	}{
		{"complete sentence", "I would like to book an appointment for Tuesday.", defaultEndpointingMin},
		{"trailing and", "I would like to book an appointment for Tuesday and", defaultEndpointingMax},
		{"trailing um", "I would like to book an appointment for, um...", defaultEndpointingMax},
		{"no punctuation", "I would like to book an appointment for Tuesday", (defaultEndpointingMin + defaultEndpointingMax) / 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := openaitest.New(t, openaitest.Config{
				Transcripts: []string{tc.transcript},
				Replies:     []openaitest.Reply{{Text: "Okay."}},
			})
			e := newEnv(t, srv, nil)
			c := startCaller(t, e.s, 16000)
			c.say(fixture(t, "hello"))
			led := e.rec.waitFor(t, timeout, "ledger", isKind[*TurnLatency]).(*TurnLatency)
			if led.EndpointingDelay != tc.want {
				t.Errorf("endpointing delay %v, want %v", led.EndpointingDelay, tc.want)
			}
			if d := led.EndOfTurn.Sub(led.SpeechEnded); d < tc.want {
				t.Errorf("turn ended %v after the speech, sooner than %v", d, tc.want)
			}
		})
	}
}

// TestBargeIn: the caller talks over a long answer. Playback stops within a frame of
// the pause, the model's stream and the sentence being synthesised are cancelled, the
// history keeps only the words that were played, and the caller's words start the next
// turn.
func TestBargeIn(t *testing.T) {
	t.Parallel()
	const question = "When are you open?"
	const s1 = "Our clinic is open from nine in the morning until six in the evening on weekdays."
	const rest = "On Saturdays we open at ten and close at two in the afternoon, and on Sundays we are closed."
	const interruptText = "Wait, stop. I have a different question about my bill."
	const answer2 = "Of course, what would you like to know about your bill?"
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{question, interruptText},
		Replies: []openaitest.Reply{
			// The first sentence and the next word come at once, the rest slowly: the
			// model is still writing when the caller barges in.
			{Text: s1 + " " + rest, SlowFrom: 1 + len(strings.Fields(s1)), SlowGap: 300 * time.Millisecond},
			{Text: answer2},
		},
		LLMTokenGap: 5 * time.Millisecond,
		TTSPace:     1, // the voice streams in real time: synthesis is in flight too
	})
	e := newEnv(t, srv, nil)
	c := startCaller(t, e.s, 16000)
	c.say(fixture(t, "hello"))

	led1 := e.rec.waitFor(t, timeout, "first answer audio", isKind[*TurnLatency]).(*TurnLatency)
	// Let about 1.2 s of the answer play, then talk over it.
	e.out.waitFrames(t, e.out.framesSince(led1.FirstAudio)+60, timeout)
	c.say(fixture(t, "interrupt"))

	in := e.rec.waitFor(t, timeout, "barge-in", interruption(BargeIn)).(*Interruption)
	e.rec.waitFor(t, timeout, "second answer", agentSaid(answer2))
	led2 := e.rec.waitFor(t, timeout, "second ledger", func(ev Event) bool {
		l, ok := ev.(*TurnLatency)
		return ok && l.Turn == 2
	}).(*TurnLatency)

	// Within one frame: at most the frame being written when playback paused.
	if n := e.out.framesSince(in.PausedAt) - e.out.framesSince(led2.FirstAudio); n > 1 {
		t.Errorf("%d frames went out after playback paused, want at most 1", n)
	}
	if in.At.Before(in.PausedAt) || in.PausedAt.Before(in.SpeechStarted) {
		t.Errorf("speech %v, pause %v, decision %v out of order", in.SpeechStarted, in.PausedAt, in.At)
	}
	// The history keeps what was heard: a prefix of the first sentence, cut at a word.
	played := in.Played
	if played == "" || len(played) >= len(s1) || !strings.HasPrefix(s1, played) || s1[len(played)] != ' ' {
		t.Fatalf("played text %q is not a word-boundary prefix of %q", played, s1)
	}
	// …and about as much of it as the audio that went out.
	heard := e.out.framesSince(led1.FirstAudio) - e.out.framesSince(in.PausedAt)
	frac := float64(heard*960) / float64(outSamples(s1, 48000))
	if want := frac * float64(len(s1)); float64(len(played)) < want-12 || float64(len(played)) > want+6 {
		t.Errorf("kept %d chars (%q) for %.0f%% of the audio, want about %.0f", len(played), played, 100*frac, want)
	}
	h := e.waitHistory(t, 4)
	wantRoles := []string{"user", "assistant", "user", "assistant"}
	if len(h) != 4 || h[1].Content != played || h[2].Content != interruptText || h[3].Content != answer2 {
		t.Fatalf("history %+v, want roles %v with the cut answer", h, wantRoles)
	}
	if i := e.rec.index(func(ev Event) bool {
		tr, ok := ev.(*Transcript)
		return ok && tr.Interrupted && tr.Text == played
	}); i < 0 {
		t.Errorf("no interrupted transcript for %q", played)
	}
	// The model saw the cut answer.
	chats := srv.Chats()
	if len(chats) != 2 {
		t.Fatalf("%d chat requests", len(chats))
	}
	msgs := chats[1].Request.Messages
	if got := roles(chats[1].Request); !slices.Equal(got, []string{"system", "user", "assistant", "user"}) || msgs[2].Content != played {
		t.Errorf("second request messages %+v", msgs)
	}
	// The in-flight work was cancelled: the model's stream and the sentence's synthesis.
	speechCancelled := slices.ContainsFunc(srv.Speeches(), func(r openaitest.SpeechRecord) bool { return r.Canceled })
	said := spoken(srv)
	if !chats[0].Canceled {
		t.Error("the first answer's stream was not cancelled")
	}
	if !speechCancelled {
		t.Errorf("no synthesis was cancelled; spoken %q", said)
	}
	if slices.Contains(said, "and on Sundays we are closed.") {
		t.Error("the rest of the first answer was synthesised after the barge-in")
	}
	if st := e.s.Stats(); st.BargeIns != 1 || st.FalseInterruptions != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestFalseInterruption: a backchannel or a cough over the agent pauses it, and it then
// resumes exactly where it paused: every sample of the answer is played once, the turn
// is not cut, and no new turn starts.
func TestFalseInterruption(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, fixture, transcript string }{
		{"backchannel", "yeah", "Yeah."},
		{"cough", "cough", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const s1 = "Your appointment is booked for Tuesday at three in the afternoon."
			const s2 = "We will send you a reminder the day before."
			srv := openaitest.New(t, openaitest.Config{
				Transcripts: []string{"Please book me for Tuesday at three.", tc.transcript},
				Replies:     []openaitest.Reply{{Text: s1 + " " + s2}},
			})
			// 24 kHz out, the voice's own rate: no resampling, so the output can be
			// compared sample for sample with what the voice said.
			e := newEnv(t, srv, func(c *Config) { c.OutputRate = 24000 })
			c := startCaller(t, e.s, 16000)
			c.say(fixture(t, "hello"))
			led := e.rec.waitFor(t, timeout, "answer audio", isKind[*TurnLatency]).(*TurnLatency)
			e.out.waitFrames(t, e.out.framesSince(led.FirstAudio)+50, timeout)
			c.say(fixture(t, tc.fixture))

			in := e.rec.waitFor(t, timeout, "false interruption", interruption(FalseInterruption)).(*Interruption)
			e.rec.waitFor(t, timeout, "answer played", agentSaid(s2))
			if in.Paused <= 0 {
				t.Errorf("paused for %v", in.Paused)
			}
			// Played once, in order, nothing lost or repeated across the pause.
			want := append(openaitest.SpeechAudio(s1, 0), openaitest.SpeechAudio(s2, 0)...)
			got := e.out.audio()
			if len(got) != len(want) || !slices.Equal(got, want) {
				t.Errorf("output differs from the voice's audio: %d samples, want %d", len(got), len(want))
			}
			// Give the backchannel's transcript time to arrive: it must not start a turn.
			time.Sleep(1500 * time.Millisecond)
			if i := e.rec.index(interruption(BargeIn)); i >= 0 {
				t.Fatalf("a barge-in was declared:\n%s", describe(e.rec.all()))
			}
			if n := srv.Counts().Chat; n != 1 {
				t.Errorf("%d chat requests, want 1", n)
			}
			h := e.waitHistory(t, 2)
			if len(h) != 2 || h[1].Content != s1+" "+s2 {
				t.Errorf("history %+v", h)
			}
			if tc.transcript != "" {
				tr := e.rec.waitFor(t, timeout, "backchannel transcript", func(ev Event) bool {
					tr, ok := ev.(*Transcript)
					return ok && tr.Speaker == SpeakerUser && tr.Text == tc.transcript
				}).(*Transcript)
				if !tr.Backchannel {
					t.Errorf("backchannel transcript not marked: %+v", tr)
				}
			}
		})
	}
}

// TestBargeInDisabled: with interruption sensitivity 0 the agent neither pauses nor
// stops for the caller, and speech over it that ends before it does is not a turn.
func TestBargeInDisabled(t *testing.T) {
	t.Parallel()
	const answer = "Our clinic is open from nine in the morning until six in the evening on weekdays, and from ten to two on Saturdays."
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"When are you open?", "Wait, stop. I have a different question about my bill."},
		Replies:     []openaitest.Reply{{Text: answer}},
	})
	e := newEnv(t, srv, func(c *Config) { c.Agent.InterruptionSensitivity = 0 })
	c := startCaller(t, e.s, 16000)
	c.say(fixture(t, "hello"))
	led := e.rec.waitFor(t, timeout, "answer audio", isKind[*TurnLatency]).(*TurnLatency)
	e.out.waitFrames(t, e.out.framesSince(led.FirstAudio)+50, timeout)
	c.sayAndWait(t, fixture(t, "interrupt"))
	e.rec.waitFor(t, timeout, "answer played", agentSaid("and from ten to two on Saturdays."))
	if i := e.rec.index(isKind[*Interruption]); i >= 0 {
		t.Fatalf("interruption with barge-in off:\n%s", describe(e.rec.all()))
	}
	want := outSamples("Our clinic is open from nine in the morning until six in the evening on weekdays,", 48000) +
		outSamples("and from ten to two on Saturdays.", 48000)
	if got := len(e.out.audio()); got < want || got > want+2*960 {
		t.Errorf("%d samples played, want the whole answer (%d)", got, want)
	}
	time.Sleep(time.Second)
	if n := srv.Counts().Chat; n != 1 {
		t.Errorf("%d chat requests: the speech over the agent became a turn", n)
	}
}

// TestShortInterruptionWithWords: speech over the agent too short to be a barge-in by
// its length, whose transcript has words that are not backchannels ("No, stop."), is a
// barge-in after all once the transcript arrives: playback, which resumed, stops, and
// the words start the caller's next turn.
func TestShortInterruptionWithWords(t *testing.T) {
	t.Parallel()
	const s1 = "Your appointment is booked for Tuesday at three in the afternoon."
	const s2 = "We will send you a reminder the day before."
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"Please book me for Tuesday at three.", "No, stop."},
		Replies:     []openaitest.Reply{{Text: s1 + " " + s2}, {Text: "Okay, I stopped."}},
		// Whisper takes a moment: the transcript arrives after playback has resumed.
		STTDelay: 300 * time.Millisecond,
	})
	e := newEnv(t, srv, nil)
	c := startCaller(t, e.s, 16000)
	c.say(fixture(t, "hello"))
	led := e.rec.waitFor(t, timeout, "answer audio", isKind[*TurnLatency]).(*TurnLatency)
	e.out.waitFrames(t, e.out.framesSince(led.FirstAudio)+50, timeout)
	c.say(fixture(t, "yeah"))

	e.rec.waitFor(t, timeout, "second answer", agentSaid("Okay, I stopped."))
	iFalse := e.rec.index(interruption(FalseInterruption))
	iBarge := e.rec.index(interruption(BargeIn))
	if iFalse < 0 || iBarge < iFalse {
		t.Fatalf("want a false interruption, then a barge-in on the words:\n%s", describe(e.rec.all()))
	}
	if e.rec.index(agentSaid(s2)) >= 0 {
		t.Error("the answer played to the end")
	}
	h := e.waitHistory(t, 4)
	if len(h) != 4 || h[2].Content != "No, stop." || !strings.HasPrefix(s1+" "+s2, h[1].Content) || h[1].Content == s1+" "+s2 {
		t.Errorf("history %+v", h)
	}
}
