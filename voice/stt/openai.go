package stt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/parleyhq/parley/voice/audio"

	"github.com/parleyhq/parley/voice/internal/providerhttp"
)

var (
	// ErrClosed is returned by WriteFrame and Flush after Close.
	ErrClosed = errors.New("stt: stream closed")
	// errAttemptTimeout marks an attempt cut off by its own timeout (not the caller's),
	// which is worth retrying.
	errAttemptTimeout = errors.New("stt: request timed out")
)

// OpenAIConfig configures an adapter for OpenAI-compatible /v1/audio/transcriptions
// servers (OpenAI, Groq, faster-whisper-server, whisper.cpp's server…).
type OpenAIConfig struct {
	// Name identifies the provider in logs and metrics. Default "openai".
	Name string
	// BaseURL is the API root including the version. Default "https://api.openai.com/v1".
	BaseURL string
	// APIKey is sent as a bearer token. Empty sends none (local servers).
	APIKey string
	// Model is the transcription model. Default "whisper-1".
	Model string
	// Language is used when Options.Language is empty; empty lets the server detect it.
	Language string
	// Prompt guides the transcription (spelling of names, style). Options.Keywords are
	// appended to it.
	Prompt string
	// HTTPClient carries the requests; the caller passes one that guards against SSRF.
	// Default: dial, TLS and response-header timeouts, no overall timeout.
	HTTPClient *http.Client
	// PreRoll is the audio kept from before SpeechStarted and sent with the utterance:
	// VADs fire a little after speech begins, and a clipped first consonant costs words.
	// Default 300 ms.
	PreRoll time.Duration
	// MinSpeech is the shortest utterance (audio after SpeechStarted) worth sending.
	// Shorter ones get an empty Final without a request: OpenAI rejects audio under
	// 100 ms, and whisper tends to invent words ("Thank you.") for clicks and breaths.
	// Default 100 ms.
	MinSpeech time.Duration
	// MaxUtterance caps the audio buffered for one utterance; later audio is dropped
	// until Flush. Default 60 s, far beyond a conversational turn.
	MaxUtterance time.Duration
	// RequestTimeout bounds one transcription request. Whisper transcribes a 10 s turn in
	// about 1 s; default 15 s.
	RequestTimeout time.Duration
	// MaxRetries is how many times a failed transcription is retried (429, 5xx, dropped
	// connection, timeout). Transcribing is idempotent and nothing was emitted yet.
	// Default 2; negative disables retries.
	MaxRetries int
	// MaxRetryAfter is the longest Retry-After the adapter waits for. Default 4 s.
	MaxRetryAfter time.Duration
	// MaxConcurrent is how many utterances may be transcribed at once; their Finals
	// still come out in order. Default 3.
	MaxConcurrent int
	// CloseTimeout is how long Close waits for transcriptions in flight before it
	// abandons them. Default 2 s.
	CloseTimeout time.Duration
}

const (
	defaultSampleRate     = 16000
	defaultPreRoll        = 300 * time.Millisecond
	defaultMinSpeech      = 100 * time.Millisecond
	defaultMaxUtterance   = 60 * time.Second
	defaultRequestTimeout = 15 * time.Second
	defaultMaxRetries     = 2
	defaultMaxRetryAfter  = 4 * time.Second
	defaultMaxConcurrent  = 3
	defaultCloseTimeout   = 2 * time.Second
	// eventBuffer lets a few events wait for a slow reader without stalling the stream.
	eventBuffer = 64
	// maxPendingFlushes bounds utterances waiting to be transcribed; beyond it the
	// server is clearly not keeping up and Flush fails.
	maxPendingFlushes = 32
)

func (c OpenAIConfig) withDefaults() OpenAIConfig {
	if c.Name == "" {
		c.Name = "openai"
	}
	if c.BaseURL == "" {
		c.BaseURL = "https://api.openai.com/v1"
	}
	if c.Model == "" {
		c.Model = openai.Whisper1
	}
	if c.HTTPClient == nil {
		c.HTTPClient = defaultHTTPClient()
	}
	if c.PreRoll == 0 {
		c.PreRoll = defaultPreRoll
	}
	if c.MinSpeech == 0 {
		c.MinSpeech = defaultMinSpeech
	}
	if c.MaxUtterance == 0 {
		c.MaxUtterance = defaultMaxUtterance
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = defaultRequestTimeout
	}
	c.MaxRetries = retriesOrDefault(c.MaxRetries)
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = defaultMaxRetryAfter
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = defaultMaxConcurrent
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = defaultCloseTimeout
	}
	return c
}

func retriesOrDefault(n int) int {
	switch {
	case n == 0:
		return defaultMaxRetries
	case n < 0:
		return 0
	}
	return n
}

func (c OpenAIConfig) validate() error {
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("stt: base URL %q: want an http or https URL", c.BaseURL)
	}
	if c.PreRoll < 0 || c.MinSpeech < 0 || c.MaxUtterance < 0 || c.RequestTimeout < 0 ||
		c.MaxRetryAfter < 0 || c.CloseTimeout < 0 {
		return errors.New("stt: durations must not be negative")
	}
	if c.MaxConcurrent < 1 {
		return errors.New("stt: max concurrent must be at least 1")
	}
	return nil
}

// OpenAI transcribes one utterance at a time through an OpenAI-compatible
// transcription endpoint: it buffers the audio from SpeechStarted (plus a pre-roll) to
// Flush, uploads it as a WAV and emits the text as a Final.
type OpenAI struct {
	cfg    OpenAIConfig
	client *openai.Client
	retry  providerhttp.Policy
}

var _ Provider = (*OpenAI)(nil)

// NewOpenAI returns an adapter for cfg, with defaults filled in.
func NewOpenAI(cfg OpenAIConfig) (*OpenAI, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	oc := openai.DefaultConfig(cfg.APIKey)
	oc.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	oc.HTTPClient = providerhttp.RecordingDoer{Client: cfg.HTTPClient}
	return &OpenAI{
		cfg:    cfg,
		client: openai.NewClientWithConfig(oc),
		retry:  providerhttp.Policy{MaxRetries: cfg.MaxRetries, MaxRetryAfter: cfg.MaxRetryAfter, Transient: transientErrs},
	}, nil
}

// Name implements Provider.
func (p *OpenAI) Name() string { return p.cfg.Name }

// Stream implements Provider. Nothing is sent until the first Flush.
func (p *OpenAI) Stream(ctx context.Context, opts Options) (Stream, error) {
	rate := opts.SampleRate
	if rate == 0 {
		rate = defaultSampleRate
	}
	if rate < 8000 || rate > 48000 {
		return nil, fmt.Errorf("stt: %s: sample rate %d out of range", p.cfg.Name, rate)
	}
	prompt := p.cfg.Prompt
	if len(opts.Keywords) > 0 {
		prompt = strings.TrimSpace(prompt + " " + strings.Join(opts.Keywords, ", "))
	}
	sctx, cancel := context.WithCancelCause(ctx)
	s := &openaiStream{
		p:         p,
		ctx:       sctx,
		cancel:    cancel,
		rate:      rate,
		language:  cmpOr(opts.Language, p.cfg.Language),
		prompt:    prompt,
		preCap:    int(int64(rate) * int64(p.cfg.PreRoll) / int64(time.Second)),
		maxUtter:  int(int64(rate) * int64(p.cfg.MaxUtterance) / int64(time.Second)),
		minSpeech: int(int64(rate) * int64(p.cfg.MinSpeech) / int64(time.Second)),
		jobs:      make(chan *transcription, maxPendingFlushes),
		events:    make(chan Event, eventBuffer),
		sem:       make(chan struct{}, p.cfg.MaxConcurrent),
		emitted:   make(chan struct{}),
	}
	go s.emit()
	return s, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// openaiStream buffers utterances and transcribes each on Flush. Transcriptions run
// concurrently; one goroutine emits their Finals in Flush order.
type openaiStream struct {
	p         *OpenAI
	ctx       context.Context
	cancel    context.CancelCauseFunc
	rate      int
	language  string
	prompt    string
	preCap    int
	maxUtter  int
	minSpeech int

	mu       sync.Mutex
	pre      []int16 // recent audio, the last preCap samples of which are the pre-roll
	utter    []int16 // the utterance since SpeechStarted, pre-roll included
	inSpeech bool
	speech   int   // samples written since SpeechStarted
	start    int64 // stream offset (samples) of utter[0]
	total    int64 // samples written so far
	closed   bool
	err      error

	jobs      chan *transcription
	events    chan Event
	sem       chan struct{}
	workers   sync.WaitGroup
	emitted   chan struct{} // closed when the emitter is done
	closeOnce sync.Once
}

// transcription is one flushed utterance on its way to a Final.
type transcription struct {
	done chan struct{}
	ev   Event
	err  error
}

func (s *openaiStream) WriteFrame(f audio.Frame) error {
	if f.Rate != 0 && f.Rate != s.rate {
		return fmt.Errorf("stt: %s: frame at %d Hz on a %d Hz stream", s.p.cfg.Name, f.Rate, s.rate)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	s.total += int64(len(f.Samples))
	if !s.inSpeech {
		s.pushPreRoll(f.Samples)
		return nil
	}
	s.speech += len(f.Samples)
	if room := s.maxUtter - len(s.utter); room > 0 {
		s.utter = append(s.utter, f.Samples[:min(room, len(f.Samples))]...)
	}
	return nil
}

// pushPreRoll appends to the pre-roll, compacting it once it is twice as long as needed.
func (s *openaiStream) pushPreRoll(samples []int16) {
	s.pre = append(s.pre, samples...)
	if len(s.pre) > 2*s.preCap {
		s.pre = append(s.pre[:0], s.pre[len(s.pre)-s.preCap:]...)
	}
}

func (s *openaiStream) preRoll() []int16 {
	return s.pre[max(0, len(s.pre)-s.preCap):]
}

func (s *openaiStream) usable() error {
	if s.err != nil {
		return s.err
	}
	if s.closed {
		return ErrClosed
	}
	return nil
}

func (s *openaiStream) SpeechStarted() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inSpeech || s.usable() != nil {
		return
	}
	pre := s.preRoll()
	s.utter = append(make([]int16, 0, len(pre)+s.rate*2), pre...)
	s.start = s.total - int64(len(pre))
	s.inSpeech = true
	s.speech = 0
	s.pre = s.pre[:0]
}

func (s *openaiStream) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	utter, speech, start := s.utter, s.speech, s.start
	if !s.inSpeech {
		utter, speech, start = nil, 0, s.total
	}
	s.inSpeech, s.utter, s.speech = false, nil, 0
	// The end of this utterance is the pre-roll of a next one that starts at once.
	s.pre = append(s.pre[:0], utter[max(0, len(utter)-s.preCap):]...)

	t := &transcription{done: make(chan struct{})}
	t.ev = Event{
		Type:  Final,
		Start: s.offset(start),
		End:   s.offset(start + int64(len(utter))),
	}
	select {
	case s.jobs <- t:
	default:
		return fmt.Errorf("stt: %s: %d utterances waiting for transcription", s.p.cfg.Name, maxPendingFlushes)
	}
	if speech < s.minSpeech || speech == 0 {
		t.ev.At = time.Now()
		close(t.done)
		return nil
	}
	s.workers.Add(1)
	go s.transcribe(t, utter)
	return nil
}

func (s *openaiStream) offset(samples int64) time.Duration {
	return time.Duration(samples) * time.Second / time.Duration(s.rate)
}

func (s *openaiStream) transcribe(t *transcription, samples []int16) {
	defer s.workers.Done()
	defer close(t.done)
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	case <-s.ctx.Done():
		t.err = context.Cause(s.ctx)
		return
	}
	wav := encodeWAV(samples, s.rate)
	p := s.p
	for failures := 1; ; failures++ {
		text, info, err := s.attempt(wav)
		if err == nil {
			t.ev.Text = strings.TrimSpace(text)
			t.ev.At = time.Now()
			return
		}
		if s.ctx.Err() != nil {
			t.err = context.Cause(s.ctx)
			return
		}
		wait, ok := p.retry.Next(failures, err, providerhttp.Of(info))
		if !ok {
			t.err = attemptErr("transcribe", failures, p.cfg.MaxRetryAfter, err, info)
			return
		}
		if err := providerhttp.Sleep(s.ctx, wait); err != nil {
			t.err = context.Cause(s.ctx)
			return
		}
	}
}

func (s *openaiStream) attempt(wav []byte) (string, *providerhttp.Attempt, error) {
	info := &providerhttp.Attempt{}
	actx, cancel := context.WithTimeoutCause(providerhttp.WithRecorder(s.ctx, info), s.p.cfg.RequestTimeout, errAttemptTimeout)
	defer cancel()
	resp, err := s.p.client.CreateTranscription(actx, openai.AudioRequest{
		Model:    s.p.cfg.Model,
		FilePath: "utterance.wav",
		Reader:   wavReader{bytes.NewReader(wav)},
		Prompt:   s.prompt,
		Language: s.language,
		Format:   openai.AudioResponseFormatJSON,
	})
	if err != nil {
		if context.Cause(actx) == errAttemptTimeout && s.ctx.Err() == nil {
			err = fmt.Errorf("%w after %s: %w", errAttemptTimeout, s.p.cfg.RequestTimeout, err)
		}
		return "", info, err
	}
	return resp.Text, info, nil
}

// wavReader names the upload's content type for go-openai's multipart writer.
type wavReader struct{ *bytes.Reader }

func (wavReader) ContentType() string { return "audio/wav" }

// emit hands Finals on in Flush order, and fails the stream on the first failed one.
func (s *openaiStream) emit() {
	defer close(s.emitted)
	defer close(s.events)
	for {
		var t *transcription
		select {
		case t = <-s.jobs:
		case <-s.ctx.Done():
			s.fail(context.Cause(s.ctx))
			return
		}
		if t == nil {
			return // jobs closed by Close, all delivered
		}
		select {
		case <-t.done:
		case <-s.ctx.Done():
			s.fail(context.Cause(s.ctx))
			return
		}
		if t.err != nil {
			s.fail(t.err)
			s.cancel(t.err)
			return
		}
		select {
		case s.events <- t.ev:
		case <-s.ctx.Done():
			s.fail(context.Cause(s.ctx))
			return
		}
	}
}

// fail records why the stream ended, unless Close ended it.
func (s *openaiStream) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil && !errors.Is(err, ErrClosed) {
		s.err = fmt.Errorf("stt: %s: %w", s.p.cfg.Name, err)
	}
}

func (s *openaiStream) Events() <-chan Event { return s.events }

func (s *openaiStream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close stops taking audio, waits up to CloseTimeout for the Finals of utterances
// already flushed, then abandons the rest. Events is closed when it returns.
func (s *openaiStream) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.jobs)
		s.mu.Unlock()
		t := time.NewTimer(s.p.cfg.CloseTimeout)
		select {
		case <-s.emitted:
		case <-t.C:
		}
		t.Stop()
		s.cancel(ErrClosed)
		<-s.emitted
		s.workers.Wait()
	})
	return nil
}

// encodeWAV wraps 16-bit mono PCM in a canonical 44-byte RIFF/WAVE header.
func encodeWAV(samples []int16, rate int) []byte {
	dataLen := 2 * len(samples)
	b := make([]byte, 44+dataLen)
	copy(b[0:], "RIFF")
	binary.LittleEndian.PutUint32(b[4:], uint32(36+dataLen))
	copy(b[8:], "WAVE")
	copy(b[12:], "fmt ")
	binary.LittleEndian.PutUint32(b[16:], 16)
	binary.LittleEndian.PutUint16(b[20:], 1) // PCM
	binary.LittleEndian.PutUint16(b[22:], 1) // mono
	binary.LittleEndian.PutUint32(b[24:], uint32(rate))
	binary.LittleEndian.PutUint32(b[28:], uint32(rate*2)) // byte rate
	binary.LittleEndian.PutUint16(b[32:], 2)              // block align
	binary.LittleEndian.PutUint16(b[34:], 16)             // bits per sample
	copy(b[36:], "data")
	binary.LittleEndian.PutUint32(b[40:], uint32(dataLen))
	for i, v := range samples {
		binary.LittleEndian.PutUint16(b[44+2*i:], uint16(v))
	}
	return b
}

// attemptErr describes the final failure of an operation ("transcribe", "connect")
// that was tried attempts times.
func attemptErr(op string, attempts int, maxRetryAfter time.Duration, err error, info *providerhttp.Attempt) error {
	if attempts > 1 {
		op += fmt.Sprintf(" after %d attempts", attempts)
	}
	if info != nil && info.HasRetryAfter && info.RetryAfter > maxRetryAfter {
		op += fmt.Sprintf(" (server asked to retry after %s, more than %s)", info.RetryAfter, maxRetryAfter)
	}
	return fmt.Errorf("%s: %w", op, err)
}
