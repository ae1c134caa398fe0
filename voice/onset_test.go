package voice

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/vad"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// The onset pause: caller speech over the agent stops its audio within a couple of
// frames of the caller's first sound, not at the VAD's SpeechStart 200 ms later; an
// onset the VAD drops resumes it; the Output's queue is flushed after the last frame
// written; and with barge-in off nothing of this happens.

// TestOnsetThresholds: every sensitivity that allows barge-in pauses at the same onset,
// and sensitivity 0 never pauses.
func TestOnsetThresholds(t *testing.T) {
	t.Parallel()
	for _, s := range []float64{0.01, 0.1, 0.34, 0.5, 0.67, 1} {
		if got := thresholdsFor(s).OnsetFrames; got != onsetFrames {
			t.Errorf("sensitivity %v: onset run %d frames, want %d", s, got, onsetFrames)
		}
	}
	if th := thresholdsFor(0); th.OnsetFrames != 0 || th.Enabled {
		t.Errorf("sensitivity 0: %+v, want no onset pause", th)
	}
	o := newOnsetTracker(onsetFrames, vad.Config{EnergyGateDBFS: -30})
	if o.floor != -30 {
		t.Errorf("floor %v with the VAD's gate at -30 dBFS, want -30", o.floor)
	}
}

// TestOnsetTrackerMirrorsDetector runs the real Detector and the onset tracker over
// the fixtures, whole and cut short (the first 20, 40, … ms of the cough: a click, a
// bump, a clipped cough), after and before a quiet line, and checks what the session
// relies on: every onset is settled by exactly one of SpeechStart and a fizzle, a
// fizzle never precedes a SpeechStart of the same sound, speech pauses on its second
// frame, and a single loud frame (a click) does not pause at all, although the
// classifier flags it and holds its flag for its overhang.
func TestOnsetTrackerMirrorsDetector(t *testing.T) {
	t.Parallel()
	type clip struct {
		name    string
		samples []int16
	}
	var clips []clip
	for _, n := range []string{"hello", "interrupt", "yeah", "cough"} {
		clips = append(clips, clip{n, fixture(t, n)})
	}
	cough := fixture(t, "cough")
	for k := 1; k*320 <= len(cough); k++ {
		clips = append(clips, clip{"cough[:" + (time.Duration(k) * frameDuration).String() + "]", cough[:k*320]})
	}
	for _, gate := range []float64{0, -30} {
		for _, c := range clips {
			d, err := vad.NewDetector(vad.Config{SampleRate: inputRate, FrameDuration: frameDuration, EnergyGateDBFS: gate})
			if err != nil {
				t.Fatal(err)
			}
			tr := newOnsetTracker(onsetFrames, d.Config())
			var frames [][]int16
			quiet := ditherFrame()
			for i := 0; i < 50; i++ {
				frames = append(frames, quiet)
			}
			first := len(frames)
			for i := 0; i+320 <= len(c.samples); i += 320 {
				frames = append(frames, c.samples[i:i+320])
			}
			for i := 0; i < 40; i++ {
				frames = append(frames, quiet)
			}
			var (
				open              bool // an onset awaits SpeechStart or a fizzle
				onsets, fizzles   int
				starts            int
				firstOnset        = -1
				lastFizzle        time.Duration
				fizzled           bool
				where             = c.name + " gate " + fmtDB(gate)
				onsetAt, startAtK = -1, -1
			)
			for k, f := range frames {
				res, err := d.Process(audio.Frame{Samples: f, Rate: inputRate})
				if err != nil {
					t.Fatal(err)
				}
				switch tr.step(res, true) {
				case onsetBegin:
					if open {
						t.Errorf("%s: frame %d: a second onset before the first was settled", where, k)
					}
					open = true
					onsets++
					if firstOnset < 0 {
						firstOnset = k - first
						onsetAt = k
					}
				case onsetFizzle:
					if !open {
						t.Errorf("%s: frame %d: a fizzle with no onset", where, k)
					}
					open = false
					fizzles++
					fizzled, lastFizzle = true, res.Offset
				}
				if res.Event == vad.SpeechStart {
					starts++
					if startAtK < 0 {
						startAtK = k
					}
					if fizzled && res.SpeechStartedAt < lastFizzle {
						t.Errorf("%s: speech from %v confirmed after its onset fizzled at %v", where, res.SpeechStartedAt, lastFizzle)
					}
					open = false
				}
			}
			if open {
				t.Errorf("%s: an onset was never settled", where)
			}
			switch {
			case c.name == "cough[:20ms]":
				if onsets != 0 {
					t.Errorf("%s: a single frame paused (%d onsets)", where, onsets)
				}
			case strings.HasPrefix(c.name, "cough[:"):
				if onsets == 0 {
					t.Errorf("%s: no onset", where)
				}
				if starts == 0 && fizzles != onsets {
					t.Errorf("%s: %d onsets, %d fizzles and no speech", where, onsets, fizzles)
				}
			default:
				// Whole utterances and the cough: the pause comes on the second frame
				// loud enough (the first, with no gate, in every fixture), long before
				// the VAD's SpeechStart.
				want := onsetFrames - 1
				if gate != 0 {
					want = firstAbove(c.samples, gate) + onsetFrames - 1
				}
				if firstOnset != want {
					t.Errorf("%s: paused on frame %d of the clip, want %d", where, firstOnset, want)
				}
				if startAtK <= onsetAt {
					t.Errorf("%s: SpeechStart on frame %d, not after the onset on %d", where, startAtK, onsetAt)
				}
			}
		}
	}
	// Barge-in off, or no reply: nothing is reported.
	d, _ := vad.NewDetector(vad.Config{SampleRate: inputRate, FrameDuration: frameDuration})
	off, idle := newOnsetTracker(0, d.Config()), newOnsetTracker(onsetFrames, d.Config())
	for i := 0; i+320 <= len(fixture(t, "interrupt")); i += 320 {
		res, _ := d.Process(audio.Frame{Samples: fixture(t, "interrupt")[i : i+320], Rate: inputRate})
		if off.step(res, true) != onsetNone || idle.step(res, false) != onsetNone {
			t.Fatalf("frame %d: an onset reported with barge-in off or the agent silent", i/320)
		}
	}
}

func fmtDB(v float64) string {
	if v == 0 {
		return "off"
	}
	return fmt.Sprintf("%g dBFS", v)
}

// TestOnsetPauseBargeIn: the caller talks over the agent. Counted from the frame in
// which the caller's speech begins (found from the fixture's samples), at most the
// onset run plus the one frame that may be on its way out are written to the Output:
// in audio time, 60 ms, where the VAD's SpeechStart alone lets 200 ms through. The
// Output, a Flusher, is flushed after the last frame of the interrupted answer and
// never during a write, and again when the barge-in clears the answer.
func TestOnsetPauseBargeIn(t *testing.T) {
	t.Parallel()
	const question = "When are you open?"
	const s1 = "Our clinic is open from nine in the morning until six in the evening on weekdays."
	const s2 = "On Saturdays we open at ten and close at two in the afternoon."
	const interruptText = "Wait, stop. I have a different question about my bill."
	const answer2 = "Of course, what about your bill?"
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{question, interruptText},
		Replies:     []openaitest.Reply{{Text: s1 + " " + s2}, {Text: answer2}},
	})
	var fo *flushRec
	e := newEnv(t, srv, func(c *Config) {
		fo = &flushRec{outRec: c.Output.(*outRec)}
		c.Output = fo
	})
	c := startTalker(t, e.s)
	c.say(fixture(t, "hello"))
	led1 := e.rec.waitFor(t, timeout, "first answer audio", isKind[*TurnLatency]).(*TurnLatency)
	e.out.waitFrames(t, e.out.framesSince(led1.FirstAudio)+50, timeout)
	speech := fixture(t, "interrupt")
	c.say(speech)

	in := e.rec.waitFor(t, timeout, "barge-in", interruption(BargeIn)).(*Interruption)
	led2 := e.rec.waitFor(t, timeout, "second ledger", func(ev Event) bool {
		l, ok := ev.(*TurnLatency)
		return ok && l.Turn == 2
	}).(*TurnLatency)
	e.rec.waitFor(t, timeout, "second answer", agentSaid(answer2))

	times := c.clipTimes()
	onset := firstAbove(speech, -50)
	minFrames := int(vad.DefaultMinSpeech / frameDuration)
	if len(times) <= minFrames {
		t.Fatalf("only %d frames of the caller's speech written", len(times))
	}
	spoke := times[onset]
	after := e.out.framesSince(spoke) - e.out.framesSince(led2.FirstAudio)
	t.Logf("speech onset in frame %d; %d agent frames after it (%d after the pause)",
		onset, after, e.out.framesSince(in.PausedAt)-e.out.framesSince(led2.FirstAudio))
	if limit := onsetFrames + 1; after > limit {
		t.Errorf("%d agent frames (%v of audio) went out after the caller began speaking, want at most %d",
			after, time.Duration(after)*frameDuration, limit)
	}
	// The pause came before the VAD could even have reported speech.
	if !in.PausedAt.Before(times[onset+minFrames-1]) {
		t.Errorf("paused %v after the speech began, not before the VAD's onset (%v)",
			in.PausedAt.Sub(spoke), times[onset+minFrames-1].Sub(spoke))
	}
	if in.At.Before(in.PausedAt) || in.PausedAt.Before(in.SpeechStarted) {
		t.Errorf("speech %v, pause %v, decision %v out of order", in.SpeechStarted, in.PausedAt, in.At)
	}

	// The flushes: one after the last frame of the interrupted answer, before the first
	// of the next, and one at the barge-in itself.
	ops, overlaps := fo.log()
	if overlaps > 0 {
		t.Errorf("Flush was called %d times while a frame was being written", overlaps)
	}
	lastOld, firstNew, pauseFlush, bargeFlush := -1, -1, -1, -1
	for i, op := range ops {
		switch {
		case !op.flush && op.at.Before(led2.FirstAudio):
			lastOld = i
		case !op.flush && firstNew < 0:
			firstNew = i
		case op.flush && pauseFlush < 0 && !op.at.Before(in.PausedAt):
			pauseFlush = i
		}
		if op.flush && !op.at.Before(in.At) && bargeFlush < 0 {
			bargeFlush = i
		}
	}
	if pauseFlush < 0 || lastOld > pauseFlush || (firstNew >= 0 && firstNew < pauseFlush) {
		t.Errorf("pause flush at op %d, last frame of the first answer at %d, first of the second at %d",
			pauseFlush, lastOld, firstNew)
	}
	if bargeFlush < 0 || (firstNew >= 0 && bargeFlush > firstNew) {
		t.Errorf("no flush at the barge-in before the second answer (flush at op %d, next audio at %d)", bargeFlush, firstNew)
	}
	h := e.waitHistory(t, 4)
	if len(h) != 4 || h[2].Content != interruptText || h[3].Content != answer2 || !strings.HasPrefix(s1, h[1].Content) {
		t.Errorf("history %+v", h)
	}
	if st := e.s.Stats(); st.BargeIns != 1 || st.FalseInterruptions != 0 || st.FalseOnsets != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestOnsetPauseResumes: noise over the agent. A whole cough is long enough for the
// VAD's SpeechStart, so the pause taken at its onset carries into the false
// interruption (PausedAt is the onset); the first 60 ms of it, a bump, never reach
// SpeechStart, so the VAD drops the onset and playback resumes on its own, counted as a
// false onset and reported as no event. Either way the answer goes on where it paused,
// every sample played once, and the history is whole.
func TestOnsetPauseResumes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		frames int // of the cough; 0: all
	}{
		{"cough", 0},
		{"bump", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const s1 = "Your appointment is booked for Tuesday at three in the afternoon."
			const s2 = "We will send you a reminder the day before."
			srv := openaitest.New(t, openaitest.Config{
				Transcripts: []string{"Please book me for Tuesday at three.", ""},
				Replies:     []openaitest.Reply{{Text: s1 + " " + s2}},
			})
			var fo *flushRec
			// 24 kHz out, the voice's own rate: the output compares sample for sample.
			e := newEnv(t, srv, func(c *Config) {
				c.OutputRate = 24000
				fo = &flushRec{outRec: c.Output.(*outRec)}
				c.Output = fo
			})
			c := startTalker(t, e.s)
			c.say(fixture(t, "hello"))
			led := e.rec.waitFor(t, timeout, "answer audio", isKind[*TurnLatency]).(*TurnLatency)
			e.out.waitFrames(t, e.out.framesSince(led.FirstAudio)+50, timeout)
			noise := fixture(t, "cough")
			if tc.frames > 0 {
				noise = noise[:tc.frames*320]
			}
			c.say(noise)
			c.waitSaid(t)
			e.rec.waitFor(t, timeout, "answer played", agentSaid(s2))
			times := c.clipTimes()

			want := append(openaitest.SpeechAudio(s1, 0), openaitest.SpeechAudio(s2, 0)...)
			if got := e.out.audio(); !slices.Equal(got, want) {
				t.Errorf("output differs from the voice's audio: %d samples, want %d", len(got), len(want))
			}
			if gap := e.out.maxGapSince(times[0]); gap < 2*frameDuration {
				t.Errorf("longest gap in the agent's audio after the noise %v: it did not pause", gap)
			}
			if n := fo.flushes(); n == 0 {
				t.Error("the pause did not flush the Output")
			}
			if i := e.rec.index(interruption(BargeIn)); i >= 0 {
				t.Fatalf("a barge-in was declared:\n%s", describe(e.rec.all()))
			}
			h := e.waitHistory(t, 2)
			if len(h) != 2 || h[1].Content != s1+" "+s2 {
				t.Errorf("history %+v", h)
			}
			if n := srv.Counts().Chat; n != 1 {
				t.Errorf("%d chat requests, want 1", n)
			}
			st := e.s.Stats()
			if tc.frames == 0 {
				in := e.rec.waitFor(t, timeout, "false interruption", interruption(FalseInterruption)).(*Interruption)
				minFrames := int(vad.DefaultMinSpeech / frameDuration)
				if !in.PausedAt.Before(times[minFrames-1]) {
					t.Errorf("paused %v into the cough, not at its onset", in.PausedAt.Sub(times[0]))
				}
				if in.Paused <= 0 || st.FalseInterruptions != 1 || st.FalseOnsets != 0 {
					t.Errorf("paused %v; stats %+v", in.Paused, st)
				}
				return
			}
			if i := e.rec.index(isKind[*Interruption]); i >= 0 {
				t.Errorf("an interruption event for a bump:\n%s", describe(e.rec.all()))
			}
			if st.FalseOnsets != 1 || st.FalseInterruptions != 0 {
				t.Errorf("stats %+v, want one false onset", st)
			}
			if v := counterValue(t, e.reg, "parley_voice_interruptions_total", "kind", falseOnsetKind); v != 1 {
				t.Errorf("false_onset counter %v, want 1", v)
			}
		})
	}
}

// TestOnsetPauseDisabled: with interruption sensitivity 0 the caller's speech over the
// agent never pauses it, not even for a moment, and the Output is never flushed: the
// answer plays to its end, and nothing was cut.
func TestOnsetPauseDisabled(t *testing.T) {
	t.Parallel()
	const answer = "Our clinic is open from nine in the morning until six in the evening on weekdays, and from ten to two on Saturdays."
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"When are you open?", "Wait, stop. I have a different question about my bill."},
		Replies:     []openaitest.Reply{{Text: answer}},
	})
	var fo *flushRec
	e := newEnv(t, srv, func(c *Config) {
		c.Agent.InterruptionSensitivity = 0
		fo = &flushRec{outRec: c.Output.(*outRec)}
		c.Output = fo
	})
	c := startTalker(t, e.s)
	c.say(fixture(t, "hello"))
	led := e.rec.waitFor(t, timeout, "answer audio", isKind[*TurnLatency]).(*TurnLatency)
	e.out.waitFrames(t, e.out.framesSince(led.FirstAudio)+50, timeout)
	// Watch the playout's pause flag while the caller talks over the agent: the speech,
	// and a bump, and the speech again.
	stop := make(chan struct{})
	paused := make(chan int)
	go func() {
		n := 0
		defer func() { paused <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			e.s.play.mu.Lock()
			if e.s.play.paused {
				n++
			}
			e.s.play.mu.Unlock()
		}
	}()
	c.say(fixture(t, "interrupt"))
	c.say(fixture(t, "cough")[:3*320])
	c.say(fixture(t, "yeah"))
	c.waitSaid(t)
	c.waitSaid(t)
	c.waitSaid(t)
	close(stop)
	if n := <-paused; n > 0 {
		t.Errorf("playback was seen paused %d times with barge-in off", n)
	}
	e.rec.waitFor(t, timeout, "answer played", agentSaid("and from ten to two on Saturdays."))
	if e.s.onsetWatch.Load() {
		t.Error("onsets watched with barge-in off")
	}
	if i := e.rec.index(isKind[*Interruption]); i >= 0 {
		t.Fatalf("interruption with barge-in off:\n%s", describe(e.rec.all()))
	}
	if n := fo.flushes(); n != 0 {
		t.Errorf("%d flushes with barge-in off and nothing cut", n)
	}
	if st := e.s.Stats(); st.FalseOnsets != 0 || st.FalseInterruptions != 0 || st.BargeIns != 0 {
		t.Errorf("stats %+v", st)
	}
	want := outSamples("Our clinic is open from nine in the morning until six in the evening on weekdays,", 48000) +
		outSamples("and from ten to two on Saturdays.", 48000)
	if got := len(e.out.audio()); got < want || got > want+2*960 {
		t.Errorf("%d samples played, want the whole answer (%d)", got, want)
	}
}

// TestFlushOnStop: a hang-up while the agent talks flushes the Output after the last
// frame; a goodbye that has played to its end before end_call is not flushed (its
// last frames may still sit in the transport's queue, and must go out).
func TestFlushOnStop(t *testing.T) {
	t.Parallel()
	t.Run("hang-up", func(t *testing.T) {
		t.Parallel()
		srv := openaitest.New(t, openaitest.Config{})
		var fo *flushRec
		e := newEnv(t, srv, func(c *Config) {
			c.Agent.BeginMessage = "This is a rather long greeting that the caller will not wait for."
			fo = &flushRec{outRec: c.Output.(*outRec)}
			c.Output = fo
		})
		e.out.waitFrames(t, 10, timeout)
		e.s.Stop()
		ops, overlaps := fo.log()
		if overlaps > 0 || len(ops) == 0 || !ops[len(ops)-1].flush || fo.flushes() != 1 {
			t.Errorf("%d ops (last a flush: %v), %d flushes, %d during a write",
				len(ops), len(ops) > 0 && ops[len(ops)-1].flush, fo.flushes(), overlaps)
		}
	})
	t.Run("goodbye", func(t *testing.T) {
		t.Parallel()
		srv := openaitest.New(t, openaitest.Config{
			Transcripts: []string{"That is all, thanks."},
			Replies: []openaitest.Reply{{Text: "Goodbye!",
				ToolCalls: []openaitest.ToolCall{{ID: "call_1", Name: ToolEndCall, Arguments: `{}`}}}},
		})
		var fo *flushRec
		e := newEnv(t, srv, func(c *Config) {
			fo = &flushRec{outRec: c.Output.(*outRec)}
			c.Output = fo
		})
		c := startTalker(t, e.s)
		c.say(fixture(t, "hello"))
		end := e.rec.waitFor(t, timeout, "end", ended).(*CallEnded)
		<-e.s.Done()
		if end.Reason != EndCallTool || e.rec.index(agentSaid("Goodbye!")) < 0 {
			t.Fatalf("ended %v:\n%s", end.Reason, describe(e.rec.all()))
		}
		if n := fo.flushes(); n != 0 {
			t.Errorf("%d flushes after a goodbye that played in full", n)
		}
	})
}

// ---- helpers ----

// firstAbove is the index of the first 20 ms frame (at 16 kHz) of samples whose RMS
// level reaches dbfs: where a sound begins.
func firstAbove(samples []int16, dbfs float64) int {
	for k := 0; (k+1)*320 <= len(samples); k++ {
		var sum float64
		for _, v := range samples[k*320 : (k+1)*320] {
			sum += float64(v) * float64(v)
		}
		if 10*math.Log10(sum/320/(32768*32768)) >= dbfs {
			return k
		}
	}
	return -1
}

// ditherFrame is a 20 ms frame of a quiet line: ±1 LSB, as the harness's caller sends.
func ditherFrame() []int16 {
	f := make([]int16, 320)
	for i := range f {
		f[i] = int16(i%3 - 1)
	}
	return f
}

// talker plays 16 kHz audio into a session in real time, 20 ms at a time, and a quiet
// line when it has nothing to say, like the harness's caller; it also notes when it
// handed each frame of the latest clip to WriteFrame, so that a test knows when a sound
// in the clip reached the session.
type talker struct {
	s     *Session
	queue chan []int16
	said  chan struct{}
	stop  chan struct{}
	done  chan struct{}

	mu    sync.Mutex
	times []time.Time
}

func startTalker(t *testing.T, s *Session) *talker {
	c := &talker{s: s, queue: make(chan []int16, 8), said: make(chan struct{}, 8),
		stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	t.Cleanup(func() {
		close(c.stop)
		<-c.done
	})
	return c
}

func (c *talker) say(samples []int16) { c.queue <- samples }

// waitSaid waits until one more clip has been written in full.
func (c *talker) waitSaid(t *testing.T) {
	t.Helper()
	select {
	case <-c.said:
	case <-time.After(timeout):
		t.Fatal("the talker could not say its line")
	}
}

// clipTimes returns when each frame of the latest clip was written.
func (c *talker) clipTimes() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.times)
}

func (c *talker) run() {
	defer close(c.done)
	quiet := ditherFrame()
	var cur []int16
	start := time.Now()
	written := 0
	for {
		// Behind schedule on a loaded machine: catch up in a burst of at most 100 ms, as
		// a jitter buffer would release audio.
		due := min(int(time.Since(start)/frameDuration)-written, 5)
		for ; due > 0; due-- {
			if len(cur) == 0 {
				select {
				case cur = <-c.queue:
					c.mu.Lock()
					c.times = c.times[:0]
					c.mu.Unlock()
				default:
				}
			}
			frame := quiet
			if len(cur) > 0 {
				k := min(320, len(cur))
				frame, cur = cur[:k], cur[k:]
				c.mu.Lock()
				c.times = append(c.times, time.Now())
				c.mu.Unlock()
				if len(cur) == 0 {
					c.said <- struct{}{}
				}
			}
			if err := c.s.WriteFrame(audio.Frame{Samples: frame, Rate: inputRate}); err != nil {
				return
			}
			written++
		}
		if lag := int(time.Since(start)/frameDuration) - written; lag > 5 {
			written += lag - 5
		}
		select {
		case <-c.stop:
			return
		case <-time.After(time.Until(start.Add(time.Duration(written+1) * frameDuration))):
		}
	}
}

// flushRec is an Output with a send queue, as a WebRTC track has: it records the order
// of writes and flushes, and whether a flush ever came while a frame was being written
// (each write takes a moment, as an encoder's does, to give such an overlap a chance).
type flushRec struct {
	*outRec
	mu       sync.Mutex
	writing  bool
	ops      []outOp
	overlaps int
}

type outOp struct {
	flush bool
	at    time.Time
}

func (f *flushRec) WriteFrame(fr audio.Frame) error {
	f.mu.Lock()
	f.writing = true
	f.mu.Unlock()
	err := f.outRec.WriteFrame(fr)
	time.Sleep(200 * time.Microsecond)
	f.mu.Lock()
	f.writing = false
	f.ops = append(f.ops, outOp{at: time.Now()})
	f.mu.Unlock()
	return err
}

// Flush implements audio.Flusher.
func (f *flushRec) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.writing {
		f.overlaps++
	}
	f.ops = append(f.ops, outOp{flush: true, at: time.Now()})
}

func (f *flushRec) log() ([]outOp, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ops), f.overlaps
}

func (f *flushRec) flushes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, op := range f.ops {
		if op.flush {
			n++
		}
	}
	return n
}

var _ audio.Flusher = (*flushRec)(nil)

// maxGapSince is the longest time between two consecutive frames written after t.
func (o *outRec) maxGapSince(t time.Time) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	var gap time.Duration
	for i := 1; i < len(o.times); i++ {
		if o.times[i-1].Before(t) {
			continue
		}
		gap = max(gap, o.times[i].Sub(o.times[i-1]))
	}
	return gap
}

// counterValue reads one series of a counter from the session's registry.
func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
