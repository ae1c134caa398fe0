package voice

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/llm"
	"github.com/parleyhq/parley/voice/stt"
	"github.com/parleyhq/parley/voice/tts"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// This file is the tests' world: a scripted OpenAI-compatible server (openaitest, the
// real wire formats: SSE chat completions with tool calls, multipart WAV
// transcriptions, streamed PCM speech), a caller that plays espeak-ng speech into a
// Session in real time, and recorders for events and audio.

// ---- events ----

type recorder struct {
	mu      sync.Mutex
	events  []Event
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) HandleEvent(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *recorder) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// waitFor returns the first event matching pred, waiting up to timeout for it.
func (r *recorder) waitFor(t *testing.T, timeout time.Duration, what string, pred func(Event) bool) Event {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for _, e := range r.events {
			if pred(e) {
				r.mu.Unlock()
				return e
			}
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("no %s within %v; events:\n%s", what, timeout, describe(r.all()))
			return nil
		}
	}
}

// waitCount waits until n events match pred.
func (r *recorder) waitCount(t *testing.T, timeout time.Duration, what string, n int, pred func(Event) bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		k := 0
		for _, e := range r.events {
			if pred(e) {
				k++
			}
		}
		ch := r.changed
		r.mu.Unlock()
		if k >= n {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%d of %d %s within %v; events:\n%s", k, n, what, timeout, describe(r.all()))
		}
	}
}

// index is the position of the first event matching pred, or -1.
func (r *recorder) index(pred func(Event) bool) int {
	for i, e := range r.all() {
		if pred(e) {
			return i
		}
	}
	return -1
}

func describe(evs []Event) string {
	var b strings.Builder
	for i, e := range evs {
		switch e := e.(type) {
		case *Transcript:
			fmt.Fprintf(&b, "%2d transcript %s final=%v int=%v filler=%v bc=%v %q\n", i, e.Speaker, e.Final, e.Interrupted, e.Filler, e.Backchannel, e.Text)
		case *TurnLatency:
			fmt.Fprintf(&b, "%2d latency turn %d response %v\n", i, e.Turn, e.Response())
		case *Interruption:
			fmt.Fprintf(&b, "%2d interruption %s played %q\n", i, e.Kind, e.Played)
		case *ToolCall:
			fmt.Fprintf(&b, "%2d tool %s %s -> %s (%d %s)\n", i, e.Name, e.Arguments, e.Result, e.Status, e.Err)
		case *Transfer:
			fmt.Fprintf(&b, "%2d transfer %s\n", i, e.Destination)
		case *CallEnded:
			fmt.Fprintf(&b, "%2d ended %s %v\n", i, e.Reason, e.Err)
		}
	}
	return b.String()
}

func agentSaid(text string) func(Event) bool {
	return func(e Event) bool {
		tr, ok := e.(*Transcript)
		return ok && tr.Speaker == SpeakerAgent && tr.Final && !tr.Interrupted && tr.Text == text
	}
}

func userFinal(e Event) bool {
	tr, ok := e.(*Transcript)
	return ok && tr.Speaker == SpeakerUser && tr.Final && !tr.Backchannel && tr.Text != ""
}

func isKind[T Event](e Event) bool { _, ok := e.(T); return ok }

func interruption(kind InterruptionKind) func(Event) bool {
	return func(e Event) bool {
		in, ok := e.(*Interruption)
		return ok && in.Kind == kind
	}
}

func ended(e Event) bool { return isKind[*CallEnded](e) }

// ---- audio out ----

// outRec is the transport's side of Config.Output.
type outRec struct {
	mu      sync.Mutex
	rate    int
	samples []int16
	times   []time.Time // write time of each frame
	bad     int         // frames of the wrong size or rate
}

func (o *outRec) WriteFrame(f audio.Frame) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if f.Rate != o.rate || len(f.Samples) != o.rate/50 {
		o.bad++
	}
	o.samples = append(o.samples, f.Samples...)
	o.times = append(o.times, time.Now())
	return nil
}

func (o *outRec) frames() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.times)
}

// framesSince counts frames written at or after t.
func (o *outRec) framesSince(t time.Time) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, ft := range o.times {
		if !ft.Before(t) {
			n++
		}
	}
	return n
}

func (o *outRec) audio() []int16 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]int16(nil), o.samples...)
}

// waitFrames waits until at least n frames went out.
func (o *outRec) waitFrames(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for o.frames() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d output frames within %v", o.frames(), n, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ---- audio in ----

var (
	fixtureOnce sync.Once
	fixtures    map[string][]int16
	fixtureErr  error
)

// fixture returns a 16 kHz speech fixture from testdata (see testdata/make.sh).
func fixture(t testing.TB, name string) []int16 {
	t.Helper()
	fixtureOnce.Do(func() {
		fixtures = map[string][]int16{}
		for _, n := range []string{"hello", "interrupt", "yeah", "cough"} {
			f, err := audio.ReadWAVFile("testdata/" + n + ".wav")
			if err != nil {
				fixtureErr = err
				return
			}
			if f.Rate != 16000 {
				fixtureErr = fmt.Errorf("%s: %d Hz", n, f.Rate)
				return
			}
			fixtures[n] = f.Samples
		}
	})
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	return fixtures[name]
}

// resampleAll converts a whole clip.
func resampleAll(t testing.TB, in []int16, from, to int) []int16 {
	t.Helper()
	out, err := audio.Resample(in, from, to)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// caller plays audio into a session in real time, 20 ms at a time, and near-silence
// (a ±1 LSB dither) when it has nothing to say, as a phone line does.
type caller struct {
	s      *Session
	rate   int
	queue  chan []int16
	said   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	frames int
}

func startCaller(t *testing.T, s *Session, rate int) *caller {
	c := &caller{s: s, rate: rate, queue: make(chan []int16, 8), said: make(chan struct{}, 8),
		stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	t.Cleanup(c.close)
	return c
}

func (c *caller) close() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

// say queues speech (at the caller's rate); sayAndWait also waits until it has all
// been written.
func (c *caller) say(samples []int16) { c.queue <- samples }

func (c *caller) sayAndWait(t *testing.T, samples []int16) {
	t.Helper()
	c.say(samples)
	select {
	case <-c.said:
	case <-time.After(30 * time.Second):
		t.Fatal("caller could not say its line")
	}
}

func (c *caller) run() {
	defer close(c.done)
	n := c.rate / 50
	silence := make([]int16, n)
	for i := range silence {
		silence[i] = int16(i%3 - 1)
	}
	var cur []int16
	start := time.Now()
	written := 0
	for {
		due := int(time.Since(start)/frameDuration) - written
		// A loaded machine may fall behind; catch up in a small burst, as a jitter
		// buffer would release audio, never more than 100 ms at once.
		due = min(due, 5)
		for ; due > 0; due-- {
			if len(cur) == 0 {
				select {
				case cur = <-c.queue:
				default:
				}
			}
			frame := silence
			if len(cur) > 0 {
				k := min(n, len(cur))
				frame = cur[:k]
				cur = cur[k:]
				if len(cur) == 0 {
					c.said <- struct{}{}
				}
			}
			if err := c.s.WriteFrame(audio.Frame{Samples: frame, Rate: c.rate}); err != nil {
				return
			}
			written++
		}
		if lag := int(time.Since(start)/frameDuration) - written; lag > 5 {
			// Skip what could not be caught up, like a receiver dropping late audio.
			written += lag - 5
		}
		next := start.Add(time.Duration(written+1) * frameDuration)
		select {
		case <-c.stop:
			return
		case <-time.After(time.Until(next)):
		}
	}
}

// ---- sessions ----

type env struct {
	rec *recorder
	out *outRec
	s   *Session
	reg *prometheus.Registry
}

// newEnv builds a session on srv through the real OpenAI-compatible adapters and
// starts it. mod adjusts the config.
func newEnv(t *testing.T, srv *openaitest.Server, mod func(*Config)) *env {
	t.Helper()
	var cfg Config
	e := newEnvConfig(t, srv, &cfg)
	if mod != nil {
		mod(&cfg)
	}
	e.out.rate = cfg.OutputRate
	s, err := NewSession(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	e.s = s
	return e
}

// newEnvConfig fills cfg with the test defaults: the real adapters pointed at srv.
func newEnvConfig(t *testing.T, srv *openaitest.Server, cfg *Config) *env {
	t.Helper()
	sttP, err := stt.NewOpenAI(stt.OpenAIConfig{BaseURL: srv.URL, APIKey: "sk-test", HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	llmP, err := llm.NewOpenAI(llm.OpenAIConfig{BaseURL: srv.URL, APIKey: "sk-test", HTTPClient: srv.Client(),
		FirstTokenTimeout: 10 * time.Second, StallTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ttsP, err := tts.NewOpenAI(tts.OpenAIConfig{BaseURL: srv.URL, APIKey: "sk-test", HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{rec: newRecorder(), out: &outRec{rate: 48000}, reg: reg}
	temp := 0.3
	*cfg = Config{
		CallID: t.Name(),
		Agent: Agent{
			Name:                    "test",
			SystemPrompt:            "You are the booking assistant of Parley Dental. The caller is {{customer_name}}.",
			Language:                "en",
			Voice:                   "alloy",
			LLMModel:                "gpt-test",
			Temperature:             &temp,
			InterruptionSensitivity: 0.5,
		},
		Variables:  map[string]string{"customer_name": "Alice"},
		STT:        sttP,
		LLM:        llmP,
		TTS:        ttsP,
		Events:     e.rec,
		Output:     e.out,
		OutputRate: 48000,
		ToolClient: srv.Client(),
		Metrics:    m,
	}
	return e
}

// outSamples is how many output samples the fake voice (openaitest.SpeechAudio, at its
// default pace) produces for text at rate.
func outSamples(text string, rate int) int {
	return len([]rune(text)) * int(int64(openaitest.DefaultCharDuration)*int64(rate)/int64(time.Second))
}

// roles lists the roles of a chat request's messages.
func roles(req openaitest.ChatRequest) []string {
	var out []string
	for _, m := range req.Messages {
		out = append(out, m.Role)
	}
	return out
}

// spoken lists the texts the voice was asked to say, in order.
func spoken(srv *openaitest.Server) []string {
	var out []string
	for _, r := range srv.Speeches() {
		out = append(out, r.Text)
	}
	return out
}

const timeout = 30 * time.Second

// latencyCounts reads the sample count of each stage's latency histogram from the
// session's registry.
func latencyCounts(t *testing.T, e *env) map[string]uint64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "parley_voice_turn_latency_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "stage" {
					out[lp.GetValue()] = m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return out
}

// ---- a clock tests can run faster than real time ----

// fakeClock is an audio.Clock whose time moves only when Advance is called.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c     *fakeClock
	ch    chan time.Time
	when  time.Time
	armed bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) audio.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1), when: c.now.Add(d), armed: true}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.armed
	t.armed = false
	// Like time.Timer since Go 1.23: no stale tick after Stop.
	select {
	case <-t.ch:
	default:
	}
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.armed
	select {
	case <-t.ch:
	default:
	}
	t.when, t.armed = t.c.now.Add(d), true
	return was
}

// Advance moves time forward by d, firing due timers in order of their deadlines.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	live := c.timers[:0]
	for _, t := range c.timers {
		if t.armed && !t.when.After(c.now) {
			t.armed = false
			select {
			case t.ch <- c.now:
			default:
			}
		}
		// Keep every timer: a stopped one may be Reset.
		live = append(live, t)
	}
	c.timers = live
}

// run advances the clock by step every tick of real time until stop is closed: time
// flies at step/tick times real time.
func (c *fakeClock) run(step, tick time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			c.Advance(step)
		}
	}
}

func silenceFrame() audio.Frame { return audio.Frame{Samples: make([]int16, 320), Rate: 16000} }

// waitHistory waits until the history holds n messages (a reply is committed when its
// last sentence has played and its goroutines have reported, just after the sentence's
// transcript event) and returns it.
func (e *env) waitHistory(t *testing.T, n int) []llm.Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		h := e.s.History()
		if len(h) >= n || time.Now().After(deadline) {
			return h
		}
		time.Sleep(5 * time.Millisecond)
	}
}
