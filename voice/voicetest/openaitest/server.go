// Package openaitest runs a scripted OpenAI-compatible HTTP server, in the manner of
// net/http/httptest, for tests and benchmarks that drive the voice engine's real provider
// adapters (voice/llm, voice/stt and voice/tts's OpenAI adapters) over real sockets and
// real wire formats:
//
//   - POST /v1/chat/completions streams server-sent events, text word by word and tool
//     calls with their arguments in pieces, as OpenAI does (or one JSON answer when the
//     request does not ask to stream);
//   - POST /v1/audio/transcriptions takes a multipart upload of a WAV utterance and
//     answers {"text": ...} (response_format json, the adapter's choice), text or
//     verbose_json;
//   - POST /v1/audio/speech streams raw 16-bit mono PCM at 24 kHz (response_format pcm,
//     the adapter's choice) or the same audio as a WAV stream;
//   - GET /v1/models lists three models. No adapter probes it; it is there as a cheap
//     readiness check for commands that start a server and wait for it.
//
// Each endpoint waits a configured provider latency before it answers (time to first
// token, time to first audio byte, transcription time), honouring the client's
// cancellation, and records what it was asked and when, so that a test can check what the
// engine sent and a benchmark can subtract the providers' own time from a turn's latency.
// Nothing global is locked while a request waits or streams: one server carries the
// hundreds of concurrent sessions of a load benchmark.
//
// The package is importable from non-test code (a bench command): NewServer does not need
// a testing.TB; New is the convenience for tests.
package openaitest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Config sets up a Server. The zero value is a server that answers transcriptions with
// empty text, speech with the fake voice as fast as the client reads it, and chat
// completions with an error until a reply is scripted (SetReplies, SetChat). Delays and
// statuses are fixed for the server's life; scripts can be replaced with the Set methods.
type Config struct {
	// Addr is the TCP address to listen on. Default "127.0.0.1:0" (a free port on
	// loopback).
	Addr string
	// APIKey, when set, must come as "Authorization: Bearer <APIKey>"; requests without
	// it get OpenAI's 401. Empty accepts any key or none.
	APIKey string

	// Replies scripts the chat completions: request i gets Replies[i], the last one
	// repeating. Chat, when set, is used instead.
	Replies []Reply
	// Chat computes the reply to each chat request (Echo is one). It is called
	// concurrently, from the request's goroutine, before the TTFT delay.
	Chat func(ChatRequest) Reply
	// LLMTTFT is the time from receiving a chat request to sending its first token (the
	// first text or tool-call chunk). A Reply may override it.
	LLMTTFT time.Duration
	// LLMTokenGap is the time between the later chunks (one per word, and the pieces of
	// a tool call's arguments). A Reply may override it. Default 0: all at once after
	// the first.
	LLMTokenGap time.Duration
	// ChatStatus, when non-zero, fails every chat request with this HTTP status and an
	// OpenAI error body (503 and 429 make the adapter retry, 400 does not).
	ChatStatus int
	// DropMessages keeps chat records light for long benchmarks: the messages and tools
	// of each request are not kept, only its model, reply and timings. Chat still sees
	// them.
	DropMessages bool

	// Transcripts scripts the transcriptions: upload i gets Transcripts[i], the last one
	// repeating; none gives empty text (what whisper says of silence). Transcribe, when
	// set, is used instead.
	Transcripts []string
	// Transcribe computes the text of each upload, e.g. from its duration. It is called
	// concurrently.
	Transcribe func(Upload) string
	// STTDelay is the time from having read the whole upload to answering it.
	STTDelay time.Duration
	// TranscriptionStatus, when non-zero, fails every transcription with this status.
	TranscriptionStatus int

	// TTSTTFB is the time from receiving a speech request to sending its first audio
	// bytes.
	TTSTTFB time.Duration
	// TTSPace is how fast the audio streams after its first bytes, as a multiple of real
	// time, in chunks of 100 ms of audio: 1 streams a 2 s sentence in 2 s, 10 in 0.2 s.
	// Default 0: as fast as the client reads, like a server that synthesises far faster
	// than real time (tts-1 runs at several times real time).
	TTSPace float64
	// CharDuration is how long the fake voice takes per character: see SpeechAudio.
	// Default DefaultCharDuration.
	CharDuration time.Duration
	// SpeechStatus, when non-zero, fails every speech request with this status.
	SpeechStatus int
}

func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	if c.CharDuration == 0 {
		c.CharDuration = DefaultCharDuration
	}
	return c
}

func (c Config) validate() error {
	if c.LLMTTFT < 0 || c.LLMTokenGap < 0 || c.STTDelay < 0 || c.TTSTTFB < 0 || c.CharDuration < 0 {
		return errors.New("openaitest: durations must not be negative")
	}
	if c.TTSPace < 0 {
		return errors.New("openaitest: TTS pace must not be negative")
	}
	for _, st := range []int{c.ChatStatus, c.TranscriptionStatus, c.SpeechStatus} {
		if st != 0 && (st < 400 || st > 599) {
			return fmt.Errorf("openaitest: failure status %d: want 4xx or 5xx", st)
		}
	}
	return nil
}

// Server is a running scripted server. Its methods are safe for concurrent use.
type Server struct {
	// URL is the API root, "http://127.0.0.1:port/v1": what the adapters take as their
	// BaseURL.
	URL string

	cfg    Config
	hs     *http.Server
	ln     net.Listener
	served chan struct{} // closed when Serve has returned
	client *http.Client

	// stop is closed by Close: every wait and stream ends at once.
	stop      chan struct{}
	closeOnce sync.Once
	// handlers counts the requests being handled; gate guards Add against a concurrent
	// Close (Add may not race with Wait).
	gate     sync.Mutex
	closed   bool
	handlers sync.WaitGroup

	// mu guards the scripts and the records. It is only held to read or write them,
	// never while a request waits or streams.
	mu             sync.Mutex
	replies        []Reply
	chat           func(ChatRequest) Reply
	chatNext       int // index into replies of the next chat request
	transcripts    []string
	transcribe     func(Upload) string
	sttNext        int
	chats          []ChatRecord
	transcriptions []TranscriptionRecord
	speeches       []SpeechRecord
	models         int
	changed        chan struct{} // closed and replaced when a record changes

	voice voiceCache
}

// NewServer starts a server for cfg. Close it when done.
func NewServer(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("openaitest: listen: %w", err)
	}
	s := &Server{
		URL:         "http://" + ln.Addr().String() + "/v1",
		cfg:         cfg,
		ln:          ln,
		served:      make(chan struct{}),
		stop:        make(chan struct{}),
		replies:     cfg.Replies,
		chat:        cfg.Chat,
		transcripts: cfg.Transcripts,
		transcribe:  cfg.Transcribe,
		changed:     make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.handleChat)
	mux.HandleFunc("POST /v1/audio/transcriptions", s.handleTranscription)
	mux.HandleFunc("POST /v1/audio/speech", s.handleSpeech)
	mux.HandleFunc("GET /v1/models", s.handleModels)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "invalid_request_error",
			fmt.Sprintf("openaitest: no route for %s %s", r.Method, r.URL.Path))
	})
	s.hs = &http.Server{Handler: s.track(s.auth(mux)), ReadHeaderTimeout: 10 * time.Second}
	s.client = &http.Client{Transport: &http.Transport{
		// A benchmark opens one connection per concurrent request; the default of two
		// idle connections per host would close and redial most of them.
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     90 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}}
	go func() {
		defer close(s.served)
		s.hs.Serve(ln) // returns http.ErrServerClosed after Close
	}()
	return s, nil
}

// New starts a server for a test or benchmark and closes it when tb ends; a bad
// config fails tb.
func New(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	s, err := NewServer(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Client returns an HTTP client for the server, with room for thousands of idle
// keep-alive connections so that concurrent sessions do not redial. Pass it to the
// adapters' HTTPClient. Close closes its idle connections.
func (s *Server) Client() *http.Client { return s.client }

// Close stops the server: it drops every connection, so requests in flight fail
// as with a crashed server (they are recorded as Canceled), and waits for the
// handlers to return.
// It is safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.gate.Lock()
		s.closed = true
		s.gate.Unlock()
		// Drop the connections first, so that a request in flight ends as it would if
		// the server crashed (a truncated stream) rather than with a clean end that
		// the adapters would take for an empty answer; then wake the handlers.
		s.hs.Close()
		close(s.stop)
		s.handlers.Wait()
		<-s.served
		s.client.CloseIdleConnections()
	})
}

// track counts handlers so Close can wait for them, and refuses requests once closing.
func (s *Server) track(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.gate.Lock()
		if s.closed {
			s.gate.Unlock()
			writeError(w, http.StatusServiceUnavailable, "server_error", "openaitest: server closed")
			return
		}
		s.handlers.Add(1)
		s.gate.Unlock()
		defer s.handlers.Done()
		next.ServeHTTP(w, r)
	})
}

func (s *Server) auth(next http.Handler) http.Handler {
	if s.cfg.APIKey == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+s.cfg.APIKey {
			writeError(w, http.StatusUnauthorized, "invalid_request_error", "Incorrect API key provided.")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// SetReplies replaces the chat script and restarts it: the next chat request gets
// replies[0], and so on, the last one repeating. It clears a Chat function.
func (s *Server) SetReplies(replies ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replies, s.chat, s.chatNext = append([]Reply(nil), replies...), nil, 0
}

// SetChat makes fn compute every later chat reply.
func (s *Server) SetChat(fn func(ChatRequest) Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chat = fn
}

// SetTranscripts replaces the transcription script and restarts it: the next upload
// gets texts[0], and so on, the last one repeating. It clears a Transcribe function.
func (s *Server) SetTranscripts(texts ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.transcripts, s.transcribe, s.sttNext = append([]string(nil), texts...), nil, 0
}

// SetTranscribe makes fn compute the text of every later upload.
func (s *Server) SetTranscribe(fn func(Upload) string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.transcribe = fn
}

// Counts is how many requests each endpoint has received, failed ones included.
type Counts struct {
	Chat, Transcriptions, Speech, Models int
}

// Counts returns the request counts so far.
func (s *Server) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Counts{Chat: len(s.chats), Transcriptions: len(s.transcriptions), Speech: len(s.speeches), Models: s.models}
}

// Chats returns a copy of the chat records, in arrival order.
func (s *Server) Chats() []ChatRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ChatRecord(nil), s.chats...)
}

// Transcriptions returns a copy of the transcription records, in arrival order.
func (s *Server) Transcriptions() []TranscriptionRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TranscriptionRecord(nil), s.transcriptions...)
}

// Speeches returns a copy of the speech records, in arrival order.
func (s *Server) Speeches() []SpeechRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SpeechRecord(nil), s.speeches...)
}

// Wait blocks until cond returns true or ctx ends. cond is evaluated now and again after
// every change to the records (a request arriving, its first token or byte, its end),
// and may call the Server's accessors (Counts, Chats...), e.g.
//
//	srv.Wait(ctx, func() bool { return srv.Counts().Speech >= 2 })
func (s *Server) Wait(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// update runs fn on the records under the lock and wakes Wait.
func (s *Server) update(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn()
	close(s.changed)
	s.changed = make(chan struct{})
}

// sleepUntil waits until t, the client's cancellation or Close, whichever comes first,
// and reports whether t was reached.
func (s *Server) sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		select {
		case <-ctx.Done():
			return false
		case <-s.stop:
			return false
		default:
			return true
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
	case <-s.stop:
	}
	return false
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	s.update(func() { s.models++ })
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	var list []model
	for _, id := range []string{"gpt-4o-mini", "whisper-1", "tts-1"} {
		list = append(list, model{ID: id, Object: "model", Created: 1_700_000_000, OwnedBy: "openaitest"})
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": list})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeError answers in OpenAI's error format, which go-openai decodes into an
// *openai.APIError carrying the status.
func writeError(w http.ResponseWriter, status int, typ, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{
		"message": msg, "type": typ, "param": nil, "code": nil,
	}})
}

// failure answers a scripted failure status.
func failure(w http.ResponseWriter, status int) {
	typ := "server_error"
	if status < 500 {
		typ = "invalid_request_error"
	}
	if status == http.StatusTooManyRequests {
		typ = "rate_limit_exceeded"
	}
	writeError(w, status, typ, fmt.Sprintf("openaitest: scripted failure (%d %s)",
		status, strings.ToLower(http.StatusText(status))))
}
