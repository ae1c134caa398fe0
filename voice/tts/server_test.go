package tts

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// tone is a 440 Hz sine of n samples at rate, the audio the fake servers speak.
func tone(n, rate int) []int16 {
	out := make([]int16, n)
	for i := range out {
		out[i] = int16(8000 * math.Sin(2*math.Pi*440*float64(i)/float64(rate)))
	}
	return out
}

func pcmBytes(samples []int16) []byte {
	b := make([]byte, 2*len(samples))
	for i, s := range samples {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(s))
	}
	return b
}

// oddPieces splits b into pieces of awkward sizes, most of them odd, so that samples
// straddle writes.
func oddPieces(b []byte) [][]byte {
	sizes := []int{1, 333, 7, 1001, 2, 4095, 13, 2048}
	var out [][]byte
	for i := 0; len(b) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

// speechReply scripts one answer of the fake /v1/audio/speech endpoint.
type speechReply struct {
	status     int
	header     map[string]string
	errBody    string
	delay      time.Duration // before the headers
	firstDelay time.Duration // after the headers, before the audio
	gap        time.Duration // between writes
	samples    []int16
	hangAfter  int // if > 0, go silent after this many pieces
}

type speechServer struct {
	*httptest.Server
	mu      sync.Mutex
	replies []speechReply
	bodies  []map[string]any
	auth    []string
	stop    chan struct{}
	// done is closed by the handler when it has written every piece.
	done chan struct{}
}

func newSpeechServer(t *testing.T, replies ...speechReply) *speechServer {
	t.Helper()
	ss := &speechServer{replies: replies, stop: make(chan struct{}), done: make(chan struct{}, 16)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/audio/speech", ss.handle)
	ss.Server = httptest.NewServer(mux)
	t.Cleanup(func() {
		close(ss.stop)
		ss.Server.Close()
	})
	return ss
}

func (ss *speechServer) requests() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.bodies)
}

func (ss *speechServer) body(i int) map[string]any {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.bodies[i]
}

func (ss *speechServer) wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
	case <-ss.stop:
	}
	return false
}

func (ss *speechServer) handle(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	ss.mu.Lock()
	n := len(ss.bodies)
	ss.bodies = append(ss.bodies, body)
	ss.auth = append(ss.auth, r.Header.Get("Authorization"))
	reply := ss.replies[min(n, len(ss.replies)-1)]
	ss.mu.Unlock()

	if !ss.wait(r, reply.delay) {
		return
	}
	for k, v := range reply.header {
		w.Header().Set(k, v)
	}
	if reply.status != 0 && reply.status != http.StatusOK {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(reply.status)
		fmt.Fprint(w, reply.errBody)
		return
	}
	if body["response_format"] != "pcm" {
		http.Error(w, `{"error":{"message":"want pcm"}}`, http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "audio/pcm")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	fl.Flush()
	if !ss.wait(r, reply.firstDelay) {
		return
	}
	for i, piece := range oddPieces(pcmBytes(reply.samples)) {
		if reply.hangAfter > 0 && i == reply.hangAfter {
			ss.wait(r, time.Hour)
			return
		}
		if i > 0 && !ss.wait(r, reply.gap) {
			return
		}
		w.Write(piece)
		fl.Flush()
	}
	ss.done <- struct{}{}
}

func newTestOpenAI(t *testing.T, srv *speechServer, mod func(*OpenAIConfig)) *OpenAI {
	t.Helper()
	cfg := OpenAIConfig{
		BaseURL:          srv.URL + "/v1",
		APIKey:           "sk-test",
		HTTPClient:       srv.Client(),
		FirstByteTimeout: 2 * time.Second,
		StallTimeout:     2 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := NewOpenAI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// readAll drains a stream, checking every frame's rate.
func readAll(t *testing.T, s Stream, rate int) ([]int16, int, error) {
	t.Helper()
	var all []int16
	frames := 0
	for {
		f, err := s.Recv()
		if err != nil {
			return all, frames, err
		}
		if f.Rate != rate {
			t.Errorf("frame rate %d, want %d", f.Rate, rate)
		}
		frames++
		all = append(all, f.Samples...)
	}
}

func equalSamples(a, b []int16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// elevenScript scripts one websocket session of the fake ElevenLabs server.
type elevenScript struct {
	status     int // refuse the handshake with this status
	header     map[string]string
	firstDelay time.Duration // after the end of input, before the audio
	gap        time.Duration
	samples    []int16
	messages   []string // sent instead of audio when set
	closeCode  websocket.StatusCode
	hang       bool // after the messages, stay silent
}

type elevenSession struct {
	path, query, key string
	init             map[string]any
	texts            []map[string]any
}

type elevenServer struct {
	*httptest.Server
	t        *testing.T
	mu       sync.Mutex
	scripts  []elevenScript
	sessions []elevenSession
	attempts int
	stop     chan struct{}
}

func newElevenServer(t *testing.T, scripts ...elevenScript) *elevenServer {
	t.Helper()
	es := &elevenServer{t: t, scripts: scripts, stop: make(chan struct{})}
	es.Server = httptest.NewServer(http.HandlerFunc(es.handle))
	t.Cleanup(func() {
		close(es.stop)
		es.Server.Close()
	})
	return es
}

func (es *elevenServer) session(i int) elevenSession {
	es.mu.Lock()
	defer es.mu.Unlock()
	return es.sessions[i]
}

func (es *elevenServer) count() int {
	es.mu.Lock()
	defer es.mu.Unlock()
	return es.attempts
}

func (es *elevenServer) handle(w http.ResponseWriter, r *http.Request) {
	es.mu.Lock()
	sc := es.scripts[min(es.attempts, len(es.scripts)-1)]
	es.attempts++
	es.mu.Unlock()
	if !strings.HasPrefix(r.URL.Path, "/v1/text-to-speech/") || !strings.HasSuffix(r.URL.Path, "/stream-input") {
		http.NotFound(w, r)
		return
	}
	for k, v := range sc.header {
		w.Header().Set(k, v)
	}
	if sc.status != 0 {
		w.WriteHeader(sc.status)
		fmt.Fprint(w, `{"detail":{"status":"too_many_concurrent_requests"}}`)
		return
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-es.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	sess := elevenSession{path: r.URL.Path, query: r.URL.RawQuery, key: r.Header.Get("xi-api-key")}
	// Read the opening message, the text and the empty end-of-input message.
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			return
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			conn.Close(websocket.StatusUnsupportedData, "bad json")
			return
		}
		if sess.init == nil {
			sess.init = m
			continue
		}
		sess.texts = append(sess.texts, m)
		if m["text"] == "" {
			break
		}
	}
	es.mu.Lock()
	es.sessions = append(es.sessions, sess)
	es.mu.Unlock()

	sleep := func(d time.Duration) bool {
		if d <= 0 {
			return true
		}
		select {
		case <-time.After(d):
			return true
		case <-ctx.Done():
			return false
		}
	}
	if !sleep(sc.firstDelay) {
		return
	}
	msgs := sc.messages
	if msgs == nil {
		for _, piece := range oddPieces(pcmBytes(sc.samples)) {
			msgs = append(msgs, fmt.Sprintf(`{"audio":%q,"isFinal":null,"normalizedAlignment":{"charStartTimesMs":[0,3],"charsDurationsMs":[3,5],"chars":["H","i"]},"alignment":null}`,
				base64.StdEncoding.EncodeToString(piece)))
		}
		msgs = append(msgs, `{"isFinal":true}`)
	}
	for i, m := range msgs {
		if i > 0 && !sleep(sc.gap) {
			return
		}
		if err := conn.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			return
		}
	}
	if sc.hang {
		<-ctx.Done()
		return
	}
	code := sc.closeCode
	if code == 0 {
		code = websocket.StatusNormalClosure
	}
	conn.Close(code, "")
}

func newTestElevenLabs(t *testing.T, es *elevenServer, mod func(*ElevenLabsConfig)) *ElevenLabs {
	t.Helper()
	cfg := ElevenLabsConfig{
		BaseURL:          strings.Replace(es.URL, "http://", "ws://", 1),
		APIKey:           "xi-test-key",
		HTTPClient:       es.Client(),
		FirstByteTimeout: 2 * time.Second,
		StallTimeout:     2 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := NewElevenLabs(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }
