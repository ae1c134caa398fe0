package voice

import (
	"slices"
	"sync"
	"testing"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// tapRec is an AudioTap that keeps copies of everything.
type tapRec struct {
	mu            sync.Mutex
	caller, agent []int16
	callerRates   []int
	agentRates    []int
}

func (r *tapRec) CallerAudio(f audio.Frame) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.caller = append(r.caller, f.Samples...)
	r.callerRates = append(r.callerRates, f.Rate)
}

func (r *tapRec) AgentAudio(f audio.Frame) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.agent = append(r.agent, f.Samples...)
	r.agentRates = append(r.agentRates, f.Rate)
}

// TestTap: the tap sees every caller sample the session takes in, at the caller's
// rate, and exactly the agent's audio the transport was given, sample for sample.
func TestTap(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"Hello there."},
		Replies:     []openaitest.Reply{{Text: "Hi, how can I help?"}},
	})
	tap := &tapRec{}
	e := newEnv(t, srv, func(c *Config) {
		c.Agent.BeginMessage = "Hello, this is Parley."
		c.Tap = tap
	})
	// The caller at 8 kHz, as a phone line.
	c := startCaller(t, e.s, 8000)
	e.rec.waitFor(t, timeout, "greeting played", agentSaid("Hello, this is Parley."))
	speech := resampleAll(t, fixture(t, "hello"), 16000, 8000)
	c.sayAndWait(t, speech)
	e.rec.waitFor(t, timeout, "answer played", agentSaid("Hi, how can I help?"))
	c.close()
	e.s.Stop()

	tap.mu.Lock()
	defer tap.mu.Unlock()
	if got, want := tap.agent, e.out.audio(); !slices.Equal(got, want) || len(got) == 0 {
		t.Errorf("tap has %d agent samples, the transport got %d (or they differ)", len(got), len(want))
	}
	for _, r := range tap.agentRates {
		if r != 48000 {
			t.Fatalf("agent frame at %d Hz, want the output rate", r)
		}
	}
	for _, r := range tap.callerRates {
		if r != 8000 {
			t.Fatalf("caller frame at %d Hz, want the caller's", r)
		}
	}
	// Every 20 ms frame the caller wrote while the session was open reached the tap:
	// the speech is in it, intact.
	if len(tap.caller) < len(speech) {
		t.Fatalf("tap has %d caller samples for %d of speech", len(tap.caller), len(speech))
	}
	found := false
	for i := 0; i+len(speech) <= len(tap.caller); i += 160 {
		if slices.Equal(tap.caller[i:i+len(speech)], speech) {
			found = true
			break
		}
	}
	if !found {
		t.Error("the caller's speech is not in the tap as written")
	}
}

type flushOut struct{ flushed int }

func (f *flushOut) WriteFrame(audio.Frame) error { return nil }
func (f *flushOut) Flush()                       { f.flushed++ }

// TestTapOutputKeepsFlusher: wrapping the Output for the tap must not hide its
// Flusher, or barge-ins would stop dropping the transport's queue.
func TestTapOutputKeepsFlusher(t *testing.T) {
	t.Parallel()
	tap := &tapRec{}
	fo := &flushOut{}
	w := tapOutput(fo, tap)
	fl, ok := w.(audio.Flusher)
	if !ok {
		t.Fatal("tapped output lost its Flusher")
	}
	fl.Flush()
	if fo.flushed != 1 {
		t.Errorf("flushed %d times", fo.flushed)
	}
	plain := audio.WriterFunc(func(audio.Frame) error { return nil })
	if _, ok := tapOutput(plain, tap).(audio.Flusher); ok {
		t.Error("tapped output claims a Flusher its transport does not have")
	}
	if w := tapOutput(plain, nil); w == nil {
		t.Error("no tap: want the output itself")
	}
	if err := w.WriteFrame(audio.Frame{Samples: make([]int16, 960), Rate: 48000}); err != nil || len(tap.agent) != 960 {
		t.Errorf("write through the tap: %v, %d samples tapped", err, len(tap.agent))
	}
}
