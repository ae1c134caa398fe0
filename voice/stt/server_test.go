package stt

import (
	"context"
	"encoding/binary"
	"encoding/json"
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

	"github.com/parleyhq/parley/voice/audio"
)

const testRate = 16000

// frames returns d of audio as 20 ms frames: a 300 Hz tone when loud, else near silence.
func frames(d time.Duration, loud bool) []audio.Frame {
	n := int(d / (20 * time.Millisecond))
	out := make([]audio.Frame, n)
	for i := range out {
		s := make([]int16, 320)
		for j := range s {
			if loud {
				s[j] = int16(6000 * math.Sin(2*math.Pi*300*float64(i*320+j)/testRate))
			} else {
				s[j] = int16(j%3 - 1)
			}
		}
		out[i] = audio.Frame{Samples: s, Rate: testRate}
	}
	return out
}

func write(t *testing.T, s Stream, fs []audio.Frame) {
	t.Helper()
	for _, f := range fs {
		if err := s.WriteFrame(f); err != nil {
			t.Fatalf("WriteFrame: %v", err)
		}
	}
}

// nextEvent waits for one event.
func nextEvent(t *testing.T, s Stream, within time.Duration) (Event, bool) {
	t.Helper()
	select {
	case ev, ok := <-s.Events():
		return ev, ok
	case <-time.After(within):
		t.Fatalf("no event within %s", within)
		return Event{}, false
	}
}

// upload is what the fake transcription server received.
type upload struct {
	model, language, prompt, format, filename, contentType string
	rate, channels, bits, samples                          int
	wavErr                                                 string
}

// parseWAV checks a canonical PCM WAV and returns its format and sample count.
func parseWAV(b []byte) (rate, channels, bits, samples int, err error) {
	if len(b) < 44 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" || string(b[12:16]) != "fmt " || string(b[36:40]) != "data" {
		return 0, 0, 0, 0, fmt.Errorf("not a canonical WAV header: % x", b[:min(44, len(b))])
	}
	if riff := binary.LittleEndian.Uint32(b[4:]); int(riff) != len(b)-8 {
		return 0, 0, 0, 0, fmt.Errorf("RIFF size %d, file %d bytes", riff, len(b))
	}
	if f := binary.LittleEndian.Uint16(b[20:]); f != 1 {
		return 0, 0, 0, 0, fmt.Errorf("format %d, want PCM", f)
	}
	channels = int(binary.LittleEndian.Uint16(b[22:]))
	rate = int(binary.LittleEndian.Uint32(b[24:]))
	bits = int(binary.LittleEndian.Uint16(b[34:]))
	if br := binary.LittleEndian.Uint32(b[28:]); int(br) != rate*channels*bits/8 {
		return 0, 0, 0, 0, fmt.Errorf("byte rate %d inconsistent", br)
	}
	data := int(binary.LittleEndian.Uint32(b[40:]))
	if data != len(b)-44 {
		return 0, 0, 0, 0, fmt.Errorf("data size %d, have %d bytes", data, len(b)-44)
	}
	return rate, channels, bits, data / 2, nil
}

// whisperReply scripts one answer of the fake transcription endpoint. With no text, it
// answers with the duration it received ("1100 ms"), which lets tests check that.
type whisperReply struct {
	status  int
	header  map[string]string
	errBody string
	delay   time.Duration
	text    string
}

type whisperServer struct {
	*httptest.Server
	// delayFor, if set, delays the answer by the uploaded duration.
	delayFor func(time.Duration) time.Duration
	mu       sync.Mutex
	replies  []whisperReply
	uploads  []upload
	stop     chan struct{}
}

func newWhisperServer(t *testing.T, replies ...whisperReply) *whisperServer {
	t.Helper()
	ws := &whisperServer{replies: replies, stop: make(chan struct{})}
	if len(ws.replies) == 0 {
		ws.replies = []whisperReply{{}}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/audio/transcriptions", ws.handle)
	ws.Server = httptest.NewServer(mux)
	t.Cleanup(func() {
		close(ws.stop)
		ws.Server.Close()
	})
	return ws
}

func (ws *whisperServer) got() []upload {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return append([]upload(nil), ws.uploads...)
}

func (ws *whisperServer) handle(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseMultipartForm(8 << 20); err != nil {
		http.Error(w, `{"error":{"message":"bad multipart"}}`, http.StatusBadRequest)
		return
	}
	up := upload{
		model:    r.FormValue("model"),
		language: r.FormValue("language"),
		prompt:   r.FormValue("prompt"),
		format:   r.FormValue("response_format"),
	}
	f, hdr, err := r.FormFile("file")
	if err != nil {
		http.Error(w, `{"error":{"message":"no file"}}`, http.StatusBadRequest)
		return
	}
	b, _ := io.ReadAll(f)
	f.Close()
	up.filename, up.contentType = hdr.Filename, hdr.Header.Get("Content-Type")
	up.rate, up.channels, up.bits, up.samples, err = parseWAV(b)
	if err != nil {
		up.wavErr = err.Error()
	}
	ws.mu.Lock()
	n := len(ws.uploads)
	ws.uploads = append(ws.uploads, up)
	reply := ws.replies[min(n, len(ws.replies)-1)]
	ws.mu.Unlock()

	if ws.delayFor != nil && up.rate > 0 {
		reply.delay = ws.delayFor(time.Duration(up.samples) * time.Second / time.Duration(up.rate))
	}
	if reply.delay > 0 {
		select {
		case <-time.After(reply.delay):
		case <-r.Context().Done():
			return
		case <-ws.stop:
			return
		}
	}
	for k, v := range reply.header {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	if reply.status != 0 && reply.status != http.StatusOK {
		w.WriteHeader(reply.status)
		fmt.Fprint(w, reply.errBody)
		return
	}
	text := reply.text
	if text == "" && up.rate > 0 {
		text = fmt.Sprintf("%d ms", up.samples*1000/up.rate)
	}
	json.NewEncoder(w).Encode(map[string]string{"text": " " + text})
}

func newTestOpenAI(t *testing.T, ws *whisperServer, mod func(*OpenAIConfig)) *OpenAI {
	t.Helper()
	cfg := OpenAIConfig{BaseURL: ws.URL + "/v1", APIKey: "sk-test", HTTPClient: ws.Client()}
	if mod != nil {
		mod(&cfg)
	}
	p, err := NewOpenAI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// dgScript scripts one connection to the fake Deepgram server.
type dgScript struct {
	status      int // refuse the handshake
	header      map[string]string
	body        string
	acceptDelay time.Duration
	// silent: never answer anything (but keep reading until the client leaves).
	silent bool
	// failAfter: once this many audio bytes arrived, close with failCode.
	failAfter int
	failCode  websocket.StatusCode
	// ignoreFinalize: do not answer Finalize.
	ignoreFinalize bool
	finalizeText   string
}

// dgConn is what one connection to the fake Deepgram server saw.
type dgConn struct {
	query       string
	auth        string
	audioBytes  int
	keepAlives  int
	finalizes   int
	closeStream bool
}

type deepgramServer struct {
	*httptest.Server
	mu      sync.Mutex
	scripts []dgScript
	conns   []*dgConn
	dials   int
	stop    chan struct{}
	handled sync.WaitGroup
}

func newDeepgramServer(t *testing.T, scripts ...dgScript) *deepgramServer {
	t.Helper()
	ds := &deepgramServer{scripts: scripts, stop: make(chan struct{})}
	if len(ds.scripts) == 0 {
		ds.scripts = []dgScript{{}}
	}
	ds.Server = httptest.NewServer(http.HandlerFunc(ds.handle))
	t.Cleanup(func() {
		close(ds.stop)
		ds.Server.Close()
		ds.handled.Wait()
	})
	return ds
}

func (ds *deepgramServer) conn(i int) dgConn {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	return *ds.conns[i]
}

func (ds *deepgramServer) dialCount() int {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	return ds.dials
}

func result(text string, isFinal, speechFinal, fromFinalize bool, start, dur float64) string {
	b, _ := json.Marshal(map[string]any{
		"type": "Results", "channel_index": []int{0, 1}, "duration": dur, "start": start,
		"is_final": isFinal, "speech_final": speechFinal, "from_finalize": fromFinalize,
		"channel": map[string]any{"alternatives": []any{map[string]any{
			"transcript": text, "confidence": 0.98, "words": []any{},
		}}},
		"metadata": map[string]any{"request_id": "req-1", "model_info": map[string]any{"name": "2-general-nova"}},
	})
	return string(b)
}

func (ds *deepgramServer) handle(w http.ResponseWriter, r *http.Request) {
	ds.handled.Add(1)
	defer ds.handled.Done()
	ds.mu.Lock()
	sc := ds.scripts[min(ds.dials, len(ds.scripts)-1)]
	ds.dials++
	ds.mu.Unlock()

	if sc.acceptDelay > 0 {
		select {
		case <-time.After(sc.acceptDelay):
		case <-r.Context().Done():
			return
		case <-ds.stop:
			return
		}
	}
	for k, v := range sc.header {
		w.Header().Set(k, v)
	}
	if r.Header.Get("Authorization") != "Token dg-key" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials.","request_id":"x"}`)
		return
	}
	if sc.status != 0 {
		w.WriteHeader(sc.status)
		fmt.Fprint(w, sc.body)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-ds.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	rec := &dgConn{query: r.URL.RawQuery, auth: r.Header.Get("Authorization")}
	ds.mu.Lock()
	ds.conns = append(ds.conns, rec)
	ds.mu.Unlock()
	update := func(f func()) {
		ds.mu.Lock()
		f()
		ds.mu.Unlock()
	}
	send := func(s string) bool {
		return c.Write(ctx, websocket.MessageText, []byte(s)) == nil
	}
	sentInterim, sentFinal := false, false
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary {
			var total int
			update(func() { rec.audioBytes += len(data); total = rec.audioBytes })
			if sc.failAfter > 0 && total >= sc.failAfter {
				c.Close(sc.failCode, "NET-0000")
				return
			}
			if sc.silent {
				continue
			}
			// Half a second in: an interim; a second in: the final for that second.
			if !sentInterim && total >= testRate {
				sentInterim = true
				send(result("hello", false, false, false, 0, 0.5))
			}
			if !sentFinal && total >= 2*testRate {
				sentFinal = true
				send(result("Hello there.", true, true, false, 0, 1))
			}
			continue
		}
		var m struct {
			Type string `json:"type"`
		}
		json.Unmarshal(data, &m)
		switch m.Type {
		case "KeepAlive":
			update(func() { rec.keepAlives++ })
		case "Finalize":
			update(func() { rec.finalizes++ })
			if !sc.silent && !sc.ignoreFinalize {
				var secs float64
				update(func() { secs = float64(rec.audioBytes) / 2 / testRate })
				send(result(sc.finalizeText, true, false, true, 1, secs-1))
			}
		case "CloseStream":
			update(func() { rec.closeStream = true })
			if sc.silent {
				continue
			}
			send(`{"type":"Metadata","transaction_key":"deprecated","request_id":"req-1","sha256":"x","created":"2024-06-01T00:00:00.000Z","duration":2.0,"channels":1}`)
			c.Close(websocket.StatusNormalClosure, "")
			return
		}
	}
}

func newTestDeepgram(t *testing.T, ds *deepgramServer, mod func(*DeepgramConfig)) *Deepgram {
	t.Helper()
	cfg := DeepgramConfig{
		BaseURL:    strings.Replace(ds.URL, "http://", "ws://", 1) + "/v1/listen",
		APIKey:     "dg-key",
		HTTPClient: ds.Client(),
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := NewDeepgram(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
