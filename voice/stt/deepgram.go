package stt

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/parleyhq/parley/voice/audio"

	"github.com/parleyhq/parley/voice/internal/providerhttp"
)

// ErrBackpressure is returned by a Deepgram stream's WriteFrame when audio cannot be
// sent as fast as it comes (the connection is stuck) for longer than WriteTimeout.
var ErrBackpressure = errors.New("stt: audio is not being sent fast enough")

// DeepgramConfig configures the Deepgram live-streaming adapter.
type DeepgramConfig struct {
	// Name identifies the provider in logs and metrics. Default "deepgram".
	Name string
	// BaseURL is the listen endpoint. Default "wss://api.deepgram.com/v1/listen"; ws,
	// wss, http and https are accepted (tests point it at a local server).
	BaseURL string
	// APIKey is sent as "Authorization: Token <key>". Required.
	APIKey string
	// Model is the recognition model. Default "nova-2".
	Model string
	// Language is used when Options.Language is empty. With neither, Deepgram assumes
	// English.
	Language string
	// Endpointing is the silence after which Deepgram finalises speech on its own.
	// Deepgram's default of 10 ms splits sentences at every comma; 300 ms keeps a
	// sentence whole yet lets Finals arrive soon after the caller stops, ahead of the
	// engine's own VAD, whose Flush then finds little left to finalise. Default 300 ms;
	// negative turns endpointing off.
	Endpointing time.Duration
	// ExtraParams are added to the query string (e.g. "utterance_end_ms", "diarize").
	ExtraParams url.Values
	// HTTPClient carries the websocket handshake; the caller passes one that guards
	// against SSRF. Default: dial, TLS and response-header timeouts.
	HTTPClient *http.Client
	// ConnectTimeout bounds one connection attempt (dial, TLS and handshake). Default 5 s.
	ConnectTimeout time.Duration
	// MaxRetries is how many times a failed connection attempt is retried (429, 5xx,
	// network errors, timeouts). A stream that has started is never re-opened: audio in
	// flight would be lost. Default 2; negative disables retries.
	MaxRetries int
	// MaxRetryAfter is the longest Retry-After the adapter waits for. Default 4 s.
	MaxRetryAfter time.Duration
	// KeepAliveInterval is how long the stream may go without audio before a KeepAlive
	// is sent. Deepgram closes a stream that gets neither for 10 s. Default 4 s.
	KeepAliveInterval time.Duration
	// FinalizeTimeout is how long a Flush waits for Deepgram's answer to Finalize before
	// an empty Final is emitted in its place, so the engine is never left waiting.
	// Default 3 s.
	FinalizeTimeout time.Duration
	// CloseTimeout is how long Close waits, after CloseStream, for the last results.
	// Default 2 s.
	CloseTimeout time.Duration
	// SendQueue is how many frames may wait to be sent. Default 250 (5 s of 20 ms frames).
	SendQueue int
	// WriteTimeout is how long WriteFrame waits for room in a full queue before it
	// fails with ErrBackpressure. Default 1 s.
	WriteTimeout time.Duration
}

func (c DeepgramConfig) withDefaults() DeepgramConfig {
	if c.Name == "" {
		c.Name = "deepgram"
	}
	if c.BaseURL == "" {
		c.BaseURL = "wss://api.deepgram.com/v1/listen"
	}
	if c.Model == "" {
		c.Model = "nova-2"
	}
	if c.Endpointing == 0 {
		c.Endpointing = 300 * time.Millisecond
	}
	if c.HTTPClient == nil {
		c.HTTPClient = defaultHTTPClient()
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	c.MaxRetries = retriesOrDefault(c.MaxRetries)
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = defaultMaxRetryAfter
	}
	if c.KeepAliveInterval == 0 {
		c.KeepAliveInterval = 4 * time.Second
	}
	if c.FinalizeTimeout == 0 {
		c.FinalizeTimeout = 3 * time.Second
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = defaultCloseTimeout
	}
	if c.SendQueue == 0 {
		c.SendQueue = 250
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = time.Second
	}
	return c
}

func (c DeepgramConfig) validate() error {
	if c.APIKey == "" {
		return errors.New("stt: deepgram: API key required")
	}
	u, err := url.Parse(c.BaseURL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("stt: deepgram: base URL %q is not a URL", c.BaseURL)
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return fmt.Errorf("stt: deepgram: base URL %q: want a ws, wss, http or https URL", c.BaseURL)
	}
	if c.ConnectTimeout < 0 || c.MaxRetryAfter < 0 || c.KeepAliveInterval < 0 || c.FinalizeTimeout < 0 ||
		c.CloseTimeout < 0 || c.WriteTimeout < 0 {
		return errors.New("stt: deepgram: durations must not be negative")
	}
	if c.SendQueue < 1 {
		return errors.New("stt: deepgram: send queue must hold at least one frame")
	}
	return nil
}

// Deepgram recognises speech over Deepgram's live-streaming websocket: every frame is
// sent as it comes, interim and final results come back as the caller speaks.
type Deepgram struct {
	cfg   DeepgramConfig
	retry providerhttp.Policy
}

var _ Provider = (*Deepgram)(nil)

// NewDeepgram returns an adapter for cfg, with defaults filled in.
func NewDeepgram(cfg DeepgramConfig) (*Deepgram, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Deepgram{cfg: cfg, retry: providerhttp.Policy{MaxRetries: cfg.MaxRetries, MaxRetryAfter: cfg.MaxRetryAfter, Transient: transientErrs}}, nil
}

// Name implements Provider.
func (p *Deepgram) Name() string { return p.cfg.Name }

func (p *Deepgram) listenURL(rate int, opts Options) string {
	q := url.Values{}
	q.Set("encoding", "linear16")
	q.Set("sample_rate", strconv.Itoa(rate))
	q.Set("channels", "1")
	q.Set("interim_results", "true")
	q.Set("punctuate", "true")
	q.Set("smart_format", "true")
	if p.cfg.Endpointing < 0 {
		q.Set("endpointing", "false")
	} else {
		q.Set("endpointing", strconv.FormatInt(p.cfg.Endpointing.Milliseconds(), 10))
	}
	q.Set("model", p.cfg.Model)
	if lang := cmpOr(opts.Language, p.cfg.Language); lang != "" {
		q.Set("language", lang)
	}
	// Nova-3 takes key terms; earlier models take keywords.
	kw := "keywords"
	if strings.HasPrefix(p.cfg.Model, "nova-3") {
		kw = "keyterm"
	}
	for _, k := range opts.Keywords {
		if k = strings.TrimSpace(k); k != "" {
			q.Add(kw, k)
		}
	}
	for k, vs := range p.cfg.ExtraParams {
		q[k] = vs
	}
	return p.cfg.BaseURL + "?" + q.Encode()
}

// Stream implements Provider. It returns once connected; connection attempts that fail
// are retried.
func (p *Deepgram) Stream(ctx context.Context, opts Options) (Stream, error) {
	rate := opts.SampleRate
	if rate == 0 {
		rate = defaultSampleRate
	}
	if rate < 8000 || rate > 48000 {
		return nil, fmt.Errorf("stt: %s: sample rate %d out of range", p.cfg.Name, rate)
	}
	u := p.listenURL(rate, opts)
	sctx, cancel := context.WithCancelCause(ctx)
	var conn *websocket.Conn
	for failures := 1; ; failures++ {
		c, info, err := p.dial(sctx, u)
		if err == nil {
			conn = c
			break
		}
		if ctx.Err() != nil {
			cancel(nil)
			return nil, fmt.Errorf("stt: %s: connect: %w", p.cfg.Name, ctx.Err())
		}
		wait, ok := p.retry.Next(failures, err, providerhttp.Of(info))
		if !ok {
			cancel(nil)
			return nil, fmt.Errorf("stt: %s: %w", p.cfg.Name, attemptErr("connect", failures, p.cfg.MaxRetryAfter, err, info))
		}
		if err := providerhttp.Sleep(ctx, wait); err != nil {
			cancel(nil)
			return nil, fmt.Errorf("stt: %s: connect: %w", p.cfg.Name, err)
		}
	}
	// Results carry word timings; a long final can exceed the 32 KiB default.
	conn.SetReadLimit(1 << 20)
	s := &dgStream{
		p:          p,
		ctx:        sctx,
		cancel:     cancel,
		conn:       conn,
		rate:       rate,
		out:        make(chan outMsg, p.cfg.SendQueue),
		results:    make(chan dgMessage, 16),
		flushes:    make(chan struct{}, maxPendingFlushes),
		events:     make(chan Event, eventBuffer),
		readerDone: make(chan struct{}),
	}
	s.wg.Add(3)
	go s.readLoop()
	go s.writeLoop()
	go s.dispatch()
	return s, nil
}

func (p *Deepgram) dial(ctx context.Context, u string) (*websocket.Conn, *providerhttp.Attempt, error) {
	dctx, cancel := context.WithTimeoutCause(ctx, p.cfg.ConnectTimeout, errAttemptTimeout)
	defer cancel()
	conn, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{
		HTTPClient: p.cfg.HTTPClient,
		HTTPHeader: http.Header{"Authorization": {"Token " + p.cfg.APIKey}},
	})
	if err == nil {
		return conn, nil, nil
	}
	hs := providerhttp.HandshakeAttempt(resp)
	info := &hs
	if info.Status != 0 {
		err = fmt.Errorf("handshake refused with status %d%s: %w", info.Status, deepgramErrorDetail(resp), err)
	}
	if context.Cause(dctx) == errAttemptTimeout && ctx.Err() == nil {
		err = fmt.Errorf("%w after %s: %w", errAttemptTimeout, p.cfg.ConnectTimeout, err)
	}
	return nil, info, err
}

// deepgramErrorDetail pulls Deepgram's explanation out of a refused handshake: the
// dg-error header or the err_msg of the JSON body.
func deepgramErrorDetail(resp *http.Response) string {
	if resp == nil {
		return ""
	}
	if h := resp.Header.Get("dg-error"); h != "" {
		return " (" + h + ")"
	}
	if resp.Body == nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	var body struct {
		ErrCode string `json:"err_code"`
		ErrMsg  string `json:"err_msg"`
	}
	if json.Unmarshal(b, &body) == nil && body.ErrMsg != "" {
		return " (" + strings.TrimSpace(body.ErrCode+" "+body.ErrMsg) + ")"
	}
	return ""
}

// Deepgram's messages. Results carry a transcript; Metadata, SpeechStarted and
// UtteranceEnd are informational; errors come as close frames or an Error message.
type dgMessage struct {
	Type    string `json:"type"`
	Channel struct {
		Alternatives []struct {
			Transcript string  `json:"transcript"`
			Confidence float64 `json:"confidence"`
		} `json:"alternatives"`
	} `json:"channel"`
	IsFinal      bool    `json:"is_final"`
	SpeechFinal  bool    `json:"speech_final"`
	FromFinalize bool    `json:"from_finalize"`
	Start        float64 `json:"start"`
	Duration     float64 `json:"duration"`
	Description  string  `json:"description"`
	Message      string  `json:"message"`
	Variant      string  `json:"variant"`
}

// DeepgramError is an error Deepgram reported in an Error message.
type DeepgramError struct {
	Description, Message, Variant string
}

func (e *DeepgramError) Error() string {
	msg := strings.TrimSpace(e.Description + " " + e.Message)
	if e.Variant != "" {
		msg += " (" + e.Variant + ")"
	}
	return "deepgram error: " + msg
}

type outMsg struct {
	typ         websocket.MessageType
	data        []byte
	closeStream bool
}

var (
	msgKeepAlive   = []byte(`{"type":"KeepAlive"}`)
	msgFinalize    = []byte(`{"type":"Finalize"}`)
	msgCloseStream = []byte(`{"type":"CloseStream"}`)
)

// dgStream runs three goroutines: the writer (audio, control messages, keep-alives),
// the reader (parses results) and the dispatcher (turns results and flush deadlines
// into events, and is the only one that sends on events).
type dgStream struct {
	p      *Deepgram
	ctx    context.Context
	cancel context.CancelCauseFunc
	conn   *websocket.Conn
	rate   int

	out        chan outMsg
	results    chan dgMessage
	flushes    chan struct{}
	events     chan Event
	readerDone chan struct{}
	wg         sync.WaitGroup

	mu        sync.Mutex
	err       error
	closed    bool
	closeOnce sync.Once
}

func (s *dgStream) usable() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if s.closed {
		return ErrClosed
	}
	return nil
}

// fail records why the stream ended (the first reason wins, and nothing counts once
// Close has begun) and stops it.
func (s *dgStream) fail(err error) {
	s.mu.Lock()
	if s.err == nil && !s.closed && err != nil {
		s.err = fmt.Errorf("stt: %s: %w", s.p.cfg.Name, err)
	}
	s.mu.Unlock()
	s.cancel(err)
}

func (s *dgStream) WriteFrame(f audio.Frame) error {
	if f.Rate != 0 && f.Rate != s.rate {
		return fmt.Errorf("stt: %s: frame at %d Hz on a %d Hz stream", s.p.cfg.Name, f.Rate, s.rate)
	}
	if err := s.usable(); err != nil {
		return err
	}
	if len(f.Samples) == 0 {
		return nil
	}
	b := make([]byte, 2*len(f.Samples))
	for i, v := range f.Samples {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(v))
	}
	return s.enqueue(outMsg{typ: websocket.MessageBinary, data: b})
}

func (s *dgStream) enqueue(m outMsg) error {
	select {
	case s.out <- m:
		return nil
	default:
	}
	t := time.NewTimer(s.p.cfg.WriteTimeout)
	defer t.Stop()
	select {
	case s.out <- m:
		return nil
	case <-t.C:
		return ErrBackpressure
	case <-s.ctx.Done():
		if err := s.usable(); err != nil {
			return err
		}
		return ErrClosed
	}
}

// SpeechStarted implements Stream; Deepgram hears speech start on its own.
func (s *dgStream) SpeechStarted() {}

// Flush asks Deepgram to finalise what it has heard (Finalize). Its answer comes as a
// Final; if none comes within FinalizeTimeout an empty Final stands in for it.
func (s *dgStream) Flush() error {
	if err := s.usable(); err != nil {
		return err
	}
	// Tell the dispatcher first, so it expects the answer before it can arrive.
	select {
	case s.flushes <- struct{}{}:
	case <-s.ctx.Done():
		return s.usable()
	}
	return s.enqueue(outMsg{typ: websocket.MessageText, data: msgFinalize})
}

func (s *dgStream) Events() <-chan Event { return s.events }

func (s *dgStream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close sends CloseStream after the audio already queued, waits up to CloseTimeout for
// Deepgram to deliver its last results and close, then tears the connection down.
// Events is closed when it returns.
func (s *dgStream) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		t := time.NewTimer(s.p.cfg.CloseTimeout)
		select {
		case s.out <- outMsg{typ: websocket.MessageText, data: msgCloseStream, closeStream: true}:
			select {
			case <-s.readerDone:
			case <-t.C:
			}
		case <-t.C:
		case <-s.ctx.Done():
		}
		t.Stop()
		s.cancel(ErrClosed)
		s.conn.CloseNow()
		s.wg.Wait()
	})
	return nil
}

// sendFailed records a failed write. A cancelled stream's connection is closed under
// the writer, which then fails with "use of closed network connection": the cause to
// report is the cancellation.
func (s *dgStream) sendFailed(what string, err error) {
	if s.ctx.Err() != nil {
		s.fail(context.Cause(s.ctx))
		return
	}
	s.fail(fmt.Errorf("%s: %w", what, err))
}

func (s *dgStream) writeLoop() {
	defer s.wg.Done()
	interval := s.p.cfg.KeepAliveInterval
	ka := time.NewTimer(interval)
	defer ka.Stop()
	for {
		select {
		case m := <-s.out:
			if err := s.conn.Write(s.ctx, m.typ, m.data); err != nil {
				s.sendFailed("send", err)
				return
			}
			if m.closeStream {
				return
			}
			if m.typ == websocket.MessageBinary {
				ka.Reset(interval)
			}
		case <-ka.C:
			if err := s.conn.Write(s.ctx, websocket.MessageText, msgKeepAlive); err != nil {
				s.sendFailed("send keep-alive", err)
				return
			}
			ka.Reset(interval)
		case <-s.ctx.Done():
			return
		}
	}
}

func (s *dgStream) readLoop() {
	defer s.wg.Done()
	defer close(s.readerDone)
	defer close(s.results)
	for {
		typ, data, err := s.conn.Read(s.ctx)
		if err != nil {
			s.readEnded(err)
			return
		}
		if typ != websocket.MessageText {
			continue
		}
		var m dgMessage
		if err := json.Unmarshal(data, &m); err != nil {
			s.fail(fmt.Errorf("bad message from server: %w", err))
			return
		}
		switch m.Type {
		case "Results":
			select {
			case s.results <- m:
			case <-s.ctx.Done():
				return
			}
		case "Error":
			s.fail(&DeepgramError{Description: m.Description, Message: m.Message, Variant: m.Variant})
			return
		}
	}
}

// readEnded sorts the end of the connection into a clean close (after CloseStream) and
// a failure.
func (s *dgStream) readEnded(err error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	switch {
	case closed:
	case websocket.CloseStatus(err) == websocket.StatusNormalClosure:
		s.fail(errors.New("server ended the stream"))
	case s.ctx.Err() != nil:
		s.fail(context.Cause(s.ctx))
	default:
		s.fail(err)
	}
}

func (s *dgStream) dispatch() {
	defer s.wg.Done()
	defer close(s.events)
	pending := 0 // Flushes whose Finalize has not been answered
	deadline := time.NewTimer(time.Hour)
	deadline.Stop()
	defer deadline.Stop()
	var deadlineC <-chan time.Time
	for {
		select {
		case m, ok := <-s.results:
			if !ok {
				return
			}
			// A Flush announced before this result arrived must count, even if select
			// happened to pick the result first.
			for more := true; more; {
				select {
				case <-s.flushes:
					pending++
					deadline.Reset(s.p.cfg.FinalizeTimeout)
					deadlineC = deadline.C
				default:
					more = false
				}
			}
			ev, emit := s.event(m, pending > 0)
			if m.FromFinalize && pending > 0 {
				pending--
				if pending == 0 {
					deadlineC = nil
				}
			}
			if emit && !s.emit(ev) {
				return
			}
		case <-s.flushes:
			pending++
			deadline.Reset(s.p.cfg.FinalizeTimeout)
			deadlineC = deadline.C
		case <-deadlineC:
			deadlineC = nil
			if pending > 0 {
				pending = 0
				if !s.emit(Event{Type: Final, At: time.Now()}) {
					return
				}
			}
		case <-s.ctx.Done():
			s.fail(context.Cause(s.ctx))
			return
		}
	}
}

// event turns a Results message into an Event. Empty interims are dropped, and so are
// empty finals (Deepgram finalises silence too) unless they answer a Flush.
func (s *dgStream) event(m dgMessage, flushPending bool) (Event, bool) {
	var text string
	var conf float64
	if alts := m.Channel.Alternatives; len(alts) > 0 {
		text, conf = strings.TrimSpace(alts[0].Transcript), alts[0].Confidence
	}
	ev := Event{
		Type:       Interim,
		Text:       text,
		Confidence: conf,
		Start:      seconds(m.Start),
		End:        seconds(m.Start + m.Duration),
		At:         time.Now(),
	}
	if !m.IsFinal {
		return ev, text != ""
	}
	ev.Type = Final
	return ev, text != "" || (m.FromFinalize && flushPending)
}

func seconds(s float64) time.Duration {
	return time.Duration(s * float64(time.Second))
}

func (s *dgStream) emit(ev Event) bool {
	select {
	case s.events <- ev:
		return true
	case <-s.ctx.Done():
		return false
	}
}
