package voice

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/llm"
	"github.com/parleyhq/parley/voice/stt"
	"github.com/parleyhq/parley/voice/tts"
)

// This file is the tests' world: a scripted OpenAI-compatible server speaking the real
// wire formats (SSE chat completions with tool calls, /v1/audio/transcriptions with
// multipart WAV uploads, /v1/audio/speech streaming raw PCM), a caller that plays
// espeak-ng speech into a Session in real time, and recorders for events and audio.

// ---- scripted server ----

// chatReply scripts one /v1/chat/completions answer.
type chatReply struct {
	delay  time.Duration // before the response headers
	events []string      // chunk JSON objects, one SSE event each
	gap    time.Duration // between events
	// slowFrom: events from this index on are sent slowGap apart (0: none).
	slowFrom int
	slowGap  time.Duration
}

// speechRate is how long the fake voice takes per character of text: 60 ms, about
// 165 words a minute. It is a whole number of 20 ms frames at every rate used, so the
// audio of each sentence is whole frames.
const speechRate = 60 * time.Millisecond

// ttsAudio is what the fake voice says for text: a tone whose pitch depends on the
// text, speechRate per character, at 24 kHz.
func ttsAudio(text string) []int16 {
	h := fnv.New32a()
	io.WriteString(h, text)
	freq := 200 + float64(h.Sum32()%400)
	n := int(int64(len([]rune(text))) * int64(speechRate) * tts.OpenAISampleRate / int64(time.Second))
	out := make([]int16, n)
	for i := range out {
		out[i] = int16(6000 * math.Sin(2*math.Pi*freq*float64(i)/tts.OpenAISampleRate))
	}
	return out
}

type server struct {
	*httptest.Server
	t    *testing.T
	stop chan struct{}

	mu         sync.Mutex
	chat       []chatReply
	chatBodies []map[string]any
	chatCancel []bool // the client went away before the answer ended

	// whisper answers transcription i with whisper[i] (the last repeats); empty text
	// answers "".
	whisper      []string
	whisperDelay time.Duration
	uploads      []time.Duration // audio duration of each upload

	// speechPace: audio is streamed at this multiple of real time (0: all at once).
	speechPace   float64
	speechStatus int // non-200: fail every request
	speechTexts  []string
	speechCancel []bool

	tools map[string]http.HandlerFunc
}

func newServer(t *testing.T) *server {
	t.Helper()
	srv := &server{t: t, stop: make(chan struct{}), tools: map[string]http.HandlerFunc{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", srv.handleChat)
	mux.HandleFunc("POST /v1/audio/transcriptions", srv.handleWhisper)
	mux.HandleFunc("POST /v1/audio/speech", srv.handleSpeech)
	mux.HandleFunc("/tools/{name}", func(w http.ResponseWriter, r *http.Request) {
		srv.mu.Lock()
		h := srv.tools[r.PathValue("name")]
		srv.mu.Unlock()
		if h == nil {
			http.NotFound(w, r)
			return
		}
		h(w, r)
	})
	srv.Server = httptest.NewServer(mux)
	t.Cleanup(func() {
		close(srv.stop)
		srv.Server.Close()
	})
	return srv
}

func (srv *server) sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
	case <-srv.stop:
	}
	return false
}

func (srv *server) handleChat(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, `{"error":{"message":"bad json"}}`, http.StatusBadRequest)
		return
	}
	srv.mu.Lock()
	i := len(srv.chatBodies)
	srv.chatBodies = append(srv.chatBodies, body)
	srv.chatCancel = append(srv.chatCancel, false)
	if len(srv.chat) == 0 {
		srv.mu.Unlock()
		http.Error(w, `{"error":{"message":"no script"}}`, http.StatusInternalServerError)
		return
	}
	reply := srv.chat[min(i, len(srv.chat)-1)]
	srv.mu.Unlock()
	cancelled := func() {
		srv.mu.Lock()
		srv.chatCancel[i] = true
		srv.mu.Unlock()
	}
	if !srv.sleep(r, reply.delay) {
		cancelled()
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	fl.Flush()
	for j, ev := range reply.events {
		gap := reply.gap
		if reply.slowFrom > 0 && j >= reply.slowFrom {
			gap = reply.slowGap
		}
		if j > 0 && !srv.sleep(r, gap) {
			cancelled()
			return
		}
		fmt.Fprintf(w, "data: %s\n\n", ev)
		fl.Flush()
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	fl.Flush()
}

func (srv *server) handleWhisper(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseMultipartForm(8 << 20); err != nil {
		http.Error(w, `{"error":{"message":"bad multipart"}}`, http.StatusBadRequest)
		return
	}
	f, _, err := r.FormFile("file")
	if err != nil {
		http.Error(w, `{"error":{"message":"no file"}}`, http.StatusBadRequest)
		return
	}
	wav, err := audio.ReadWAV(f)
	f.Close()
	if err != nil {
		http.Error(w, `{"error":{"message":"bad wav"}}`, http.StatusBadRequest)
		return
	}
	srv.mu.Lock()
	i := len(srv.uploads)
	srv.uploads = append(srv.uploads, wav.Duration())
	text := ""
	if len(srv.whisper) > 0 {
		text = srv.whisper[min(i, len(srv.whisper)-1)]
	}
	delay := srv.whisperDelay
	srv.mu.Unlock()
	if !srv.sleep(r, delay) {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"text": text})
}

func (srv *server) handleSpeech(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Input          string `json:"input"`
		ResponseFormat string `json:"response_format"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.ResponseFormat != "pcm" {
		http.Error(w, `{"error":{"message":"want JSON asking for pcm"}}`, http.StatusBadRequest)
		return
	}
	srv.mu.Lock()
	i := len(srv.speechTexts)
	srv.speechTexts = append(srv.speechTexts, body.Input)
	srv.speechCancel = append(srv.speechCancel, false)
	pace, status := srv.speechPace, srv.speechStatus
	srv.mu.Unlock()
	if status != 0 {
		http.Error(w, `{"error":{"message":"voice unavailable"}}`, status)
		return
	}
	pcm := ttsAudio(body.Input)
	w.Header().Set("Content-Type", "audio/pcm")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	const chunk = 2400 // 100 ms at 24 kHz
	buf := make([]byte, 2*chunk)
	for off := 0; off < len(pcm); off += chunk {
		n := min(chunk, len(pcm)-off)
		for k := 0; k < n; k++ {
			binary.LittleEndian.PutUint16(buf[2*k:], uint16(pcm[off+k]))
		}
		if _, err := w.Write(buf[:2*n]); err != nil {
			return
		}
		fl.Flush()
		if pace > 0 && off+n < len(pcm) && !srv.sleep(r, time.Duration(float64(100*time.Millisecond)/pace)) {
			srv.mu.Lock()
			srv.speechCancel[i] = true
			srv.mu.Unlock()
			return
		}
	}
}

func (srv *server) setChat(replies ...chatReply) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.chat = replies
}

func (srv *server) setWhisper(texts ...string) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.whisper = texts
}

func (srv *server) chatRequests() []map[string]any {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return append([]map[string]any(nil), srv.chatBodies...)
}

func (srv *server) spoken() []string {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return append([]string(nil), srv.speechTexts...)
}

// ---- chat chunk builders (OpenAI's streaming format) ----

func chunkJSON(delta, finish string) string {
	fr := "null"
	if finish != "" {
		fr = `"` + finish + `"`
	}
	return `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1717000000,` +
		`"model":"gpt-test","choices":[{"index":0,"delta":` + delta + `,"logprobs":null,"finish_reason":` + fr + `}]}`
}

// textEvents streams text word by word, as a model does.
func textEvents(text string) []string {
	out := []string{chunkJSON(`{"role":"assistant","content":""}`, "")}
	out = append(out, wordEvents(text)...)
	return append(out, chunkJSON(`{}`, "stop"))
}

func wordEvents(text string) []string {
	var out []string
	words := strings.SplitAfter(text, " ")
	for _, w := range words {
		if w == "" {
			continue
		}
		b, _ := json.Marshal(w)
		out = append(out, chunkJSON(`{"content":`+string(b)+`}`, ""))
	}
	return out
}

// toolEvents streams optional text and then one tool call whose arguments arrive in
// three pieces, as OpenAI sends them.
func toolEvents(pre, id, name, args string) []string {
	out := []string{chunkJSON(`{"role":"assistant","content":""}`, "")}
	out = append(out, wordEvents(pre)...)
	out = append(out, chunkJSON(`{"tool_calls":[{"index":0,"id":"`+id+`","type":"function","function":{"name":"`+name+`","arguments":""}}]}`, ""))
	third := max(1, len(args)/3)
	for len(args) > 0 {
		n := min(third, len(args))
		b, _ := json.Marshal(args[:n])
		out = append(out, chunkJSON(`{"tool_calls":[{"index":0,"function":{"arguments":`+string(b)+`}}]}`, ""))
		args = args[n:]
	}
	return append(out, chunkJSON(`{}`, "tool_calls"))
}

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
	var out []int16
	r, err := audio.NewResampler(from, to, audio.WriterFunc(func(f audio.Frame) error {
		out = append(out, f.Samples...)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WriteFrame(audio.Frame{Samples: in, Rate: from}); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
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
	srv *server
	rec *recorder
	out *outRec
	s   *Session
	reg *prometheus.Registry
}

// newEnv builds a session on srv through the real OpenAI-compatible adapters and
// starts it. mod adjusts the config.
func newEnv(t *testing.T, srv *server, mod func(*Config)) *env {
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
func newEnvConfig(t *testing.T, srv *server, cfg *Config) *env {
	t.Helper()
	sttP, err := stt.NewOpenAI(stt.OpenAIConfig{BaseURL: srv.URL + "/v1", APIKey: "sk-test", HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	llmP, err := llm.NewOpenAI(llm.OpenAIConfig{BaseURL: srv.URL + "/v1", APIKey: "sk-test", HTTPClient: srv.Client(),
		FirstTokenTimeout: 10 * time.Second, StallTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ttsP, err := tts.NewOpenAI(tts.OpenAIConfig{BaseURL: srv.URL + "/v1", APIKey: "sk-test", HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{srv: srv, rec: newRecorder(), out: &outRec{rate: 48000}, reg: reg}
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

// outSamples is how many output samples the fake voice produces for text at rate.
func outSamples(text string, rate int) int {
	return len([]rune(text)) * int(int64(speechRate)*int64(rate)/int64(time.Second))
}

// messages extracts role and content of a chat request's messages.
func messages(body map[string]any) []map[string]any {
	raw, _ := body["messages"].([]any)
	out := make([]map[string]any, 0, len(raw))
	for _, m := range raw {
		if mm, ok := m.(map[string]any); ok {
			out = append(out, mm)
		}
	}
	return out
}

func roles(msgs []map[string]any) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, fmt.Sprint(m["role"]))
	}
	return out
}

const timeout = 30 * time.Second

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

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
