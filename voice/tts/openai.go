package tts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/parleyhq/parley/voice/audio"

	"github.com/parleyhq/parley/voice/internal/providerhttp"
)

var (
	// ErrFirstByteTimeout means a server accepted the request but sent no audio within the
	// adapter's FirstByteTimeout. Synthesize retries it; it surfaces once retries run out.
	ErrFirstByteTimeout = errors.New("tts: no audio in time")
	// ErrStalled means a stream that had started sending audio went quiet for longer
	// than its StallTimeout. It is never retried: the caller has already played part.
	ErrStalled = errors.New("tts: stream stalled")
	// ErrNoAudio means the server finished without sending any audio for non-empty text.
	ErrNoAudio = errors.New("tts: server sent no audio")
	// ErrClosed is returned by Recv after Close.
	ErrClosed = errors.New("tts: stream closed")
)

// OpenAISampleRate is the rate of OpenAI's "pcm" response format: 24 kHz, 16-bit
// little-endian, mono, without a header.
const OpenAISampleRate = 24000

// OpenAIConfig configures an adapter for OpenAI-compatible /v1/audio/speech servers.
type OpenAIConfig struct {
	// Name identifies the provider in logs and metrics. Default "openai".
	Name string
	// BaseURL is the API root including the version. Default "https://api.openai.com/v1".
	BaseURL string
	// APIKey is sent as a bearer token. Empty sends none (local servers).
	APIKey string
	// Model is the speech model. Default "tts-1", OpenAI's lowest-latency one.
	Model string
	// Voice is used when Request.Voice is empty. Default "alloy".
	Voice string
	// Instructions steer tone for models that take them (gpt-4o-mini-tts).
	Instructions string
	// HTTPClient carries the requests; the caller passes one that guards against SSRF.
	// Default: dial, TLS and response-header timeouts, no overall timeout (it would cut a
	// long sentence off).
	HTTPClient *http.Client
	// FirstByteTimeout bounds the wait from sending the request to the first audio. tts-1
	// starts streaming in 0.3 to 0.6 s; 5 s means the server is in trouble. Default 5 s.
	FirstByteTimeout time.Duration
	// StallTimeout bounds the silence between two reads once audio has started.
	// Default 10 s.
	StallTimeout time.Duration
	// MaxRetries is how many times a request that failed before its first audio is
	// retried (429, 5xx, dropped connection, first-byte timeout). Default 2; negative
	// disables retries.
	MaxRetries int
	// MaxRetryAfter is the longest Retry-After the adapter waits for. Default 4 s.
	MaxRetryAfter time.Duration
	// ReadSize is the most bytes one Recv reads; a Recv returns whatever has arrived, up
	// to this. Default 4800 bytes, 100 ms of audio.
	ReadSize int
}

const (
	defaultFirstByteTimeout = 5 * time.Second
	defaultStallTimeout     = 10 * time.Second
	defaultMaxRetries       = 2
	defaultMaxRetryAfter    = 4 * time.Second
	defaultReadSize         = 4800
)

func (c OpenAIConfig) withDefaults() OpenAIConfig {
	if c.Name == "" {
		c.Name = "openai"
	}
	if c.BaseURL == "" {
		c.BaseURL = "https://api.openai.com/v1"
	}
	if c.Model == "" {
		c.Model = string(openai.TTSModel1)
	}
	if c.Voice == "" {
		c.Voice = string(openai.VoiceAlloy)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = defaultHTTPClient()
	}
	if c.FirstByteTimeout == 0 {
		c.FirstByteTimeout = defaultFirstByteTimeout
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = defaultStallTimeout
	}
	c.MaxRetries = retriesOrDefault(c.MaxRetries)
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = defaultMaxRetryAfter
	}
	if c.ReadSize == 0 {
		c.ReadSize = defaultReadSize
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
		return fmt.Errorf("tts: base URL %q: want an http or https URL", c.BaseURL)
	}
	if c.FirstByteTimeout < 0 || c.StallTimeout < 0 || c.MaxRetryAfter < 0 {
		return errors.New("tts: timeouts must not be negative")
	}
	if c.ReadSize < 2 {
		return errors.New("tts: read size must be at least 2 bytes")
	}
	return nil
}

// OpenAI speaks through an OpenAI-compatible /v1/audio/speech endpoint, asking for raw
// PCM and handing it on as it arrives.
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

// SampleRate implements Provider: 24 kHz.
func (p *OpenAI) SampleRate() int { return OpenAISampleRate }

// Synthesize implements Provider. It returns once the first audio has arrived, so that
// a failing or silent server can be retried before the caller has played anything.
func (p *OpenAI) Synthesize(ctx context.Context, req Request) (Stream, error) {
	text := strings.TrimSpace(req.Text)
	if text == "" {
		return emptyStream{}, nil
	}
	sreq := openai.CreateSpeechRequest{
		Model:          openai.SpeechModel(p.cfg.Model),
		Input:          text,
		Voice:          openai.SpeechVoice(cmpOr(req.Voice, p.cfg.Voice)),
		Instructions:   p.cfg.Instructions,
		ResponseFormat: openai.SpeechResponseFormatPcm,
	}
	if req.Speed > 0 {
		// OpenAI accepts 0.25 to 4.
		sreq.Speed = min(max(req.Speed, 0.25), 4)
	}
	for failures := 1; ; failures++ {
		s, info, err := p.open(ctx, sreq)
		if err == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("tts: %s: %w", p.cfg.Name, ctx.Err())
		}
		wait, ok := p.retry.Next(failures, err, providerhttp.Of(info))
		if !ok {
			return nil, wrapAttemptErr(p.cfg.Name, failures, p.cfg.MaxRetryAfter, err, info)
		}
		if err := providerhttp.Sleep(ctx, wait); err != nil {
			return nil, fmt.Errorf("tts: %s: %w", p.cfg.Name, err)
		}
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func wrapAttemptErr(name string, attempts int, maxRetryAfter time.Duration, err error, info *providerhttp.Attempt) error {
	var extra string
	if attempts > 1 {
		extra = fmt.Sprintf(" after %d attempts", attempts)
	}
	if info != nil && info.HasRetryAfter && info.RetryAfter > maxRetryAfter {
		extra += fmt.Sprintf(" (server asked to retry after %s, more than %s)", info.RetryAfter, maxRetryAfter)
	}
	return fmt.Errorf("tts: %s%s: %w", name, extra, err)
}

// open makes one attempt and reads until the first whole sample.
func (p *OpenAI) open(ctx context.Context, sreq openai.CreateSpeechRequest) (*httpStream, *providerhttp.Attempt, error) {
	info := &providerhttp.Attempt{}
	actx, cancel := context.WithCancelCause(providerhttp.WithRecorder(ctx, info))
	s := &httpStream{
		ctx: actx, cancel: cancel, stallTimeout: p.cfg.StallTimeout,
		buf: make([]byte, p.cfg.ReadSize),
	}
	s.watchdog = newWatchdog(p.cfg.FirstByteTimeout, cancel)
	raw, err := p.client.CreateSpeech(actx, sreq)
	if err != nil {
		s.watchdog.stop()
		cancel(nil)
		return nil, info, causeOf(actx, err)
	}
	s.body = raw.ReadCloser
	for {
		n, err := s.body.Read(s.buf)
		samples := s.dec.decode(s.buf[:n])
		if len(samples) > 0 {
			if !s.watchdog.started() {
				s.release()
				return nil, info, ErrFirstByteTimeout
			}
			s.pending = samples
			s.eof = errors.Is(err, io.EOF)
			return s, info, nil
		}
		if errors.Is(err, io.EOF) {
			s.release()
			return nil, info, ErrNoAudio
		}
		if err != nil {
			s.release()
			return nil, info, causeOf(actx, err)
		}
	}
}

// httpStream reads the PCM body of one speech request.
type httpStream struct {
	ctx          context.Context
	cancel       context.CancelCauseFunc
	watchdog     *watchdog
	stallTimeout time.Duration
	body         io.ReadCloser
	buf          []byte
	dec          pcmDecoder
	pending      []int16
	eof          bool
	err          error
	closed       atomic.Bool
	releaseOnce  sync.Once
}

func (s *httpStream) Recv() (audio.Frame, error) {
	if s.pending != nil {
		f := audio.Frame{Samples: s.pending, Rate: OpenAISampleRate}
		s.pending = nil
		return f, nil
	}
	if s.closed.Load() {
		return audio.Frame{}, ErrClosed
	}
	if s.err != nil {
		return audio.Frame{}, s.err
	}
	for !s.eof {
		s.watchdog.arm(s.stallTimeout)
		n, err := s.body.Read(s.buf)
		s.watchdog.disarm()
		samples := s.dec.decode(s.buf[:n])
		if errors.Is(err, io.EOF) {
			s.eof = true
		} else if err != nil {
			if s.closed.Load() {
				return audio.Frame{}, ErrClosed
			}
			s.err = fmt.Errorf("tts: stream: %w", causeOf(s.ctx, err))
			s.release()
			return audio.Frame{}, s.err
		}
		if len(samples) > 0 {
			return audio.Frame{Samples: samples, Rate: OpenAISampleRate}, nil
		}
	}
	// A dangling odd byte at the end is half a sample; there is nothing to play.
	s.release()
	return audio.Frame{}, io.EOF
}

func (s *httpStream) Close() error {
	s.closed.Store(true)
	s.cancel(ErrClosed)
	s.release()
	return nil
}

func (s *httpStream) release() {
	s.releaseOnce.Do(func() {
		s.watchdog.stop()
		if s.body != nil {
			s.body.Close()
		}
		s.cancel(nil)
	})
}

// causeOf prefers our own cancellation cause (a timeout) to the error it produced.
func causeOf(ctx context.Context, err error) error {
	cause := context.Cause(ctx)
	if cause != nil && !errors.Is(err, cause) &&
		(errors.Is(cause, ErrFirstByteTimeout) || errors.Is(cause, ErrStalled) || errors.Is(cause, ErrClosed)) {
		return cause
	}
	return err
}

// watchdog cancels an attempt that goes quiet: before the first audio after the
// first-byte timeout (cause ErrFirstByteTimeout), afterwards after the stall timeout of
// each wait (cause ErrStalled).
type watchdog struct {
	t     *time.Timer
	first atomic.Bool // first audio seen
}

func newWatchdog(firstByte time.Duration, cancel context.CancelCauseFunc) *watchdog {
	w := &watchdog{}
	w.t = time.AfterFunc(firstByte, func() {
		if w.first.Load() {
			cancel(ErrStalled)
		} else {
			cancel(ErrFirstByteTimeout)
		}
	})
	return w
}

// started marks the first audio; false means the first-byte timeout fired first.
func (w *watchdog) started() bool {
	if !w.t.Stop() {
		return false // it fired, or is firing: the attempt's context is cancelled
	}
	w.first.Store(true)
	return true
}

func (w *watchdog) arm(d time.Duration) { w.t.Reset(d) }
func (w *watchdog) disarm()             { w.t.Stop() }
func (w *watchdog) stop()               { w.t.Stop() }
