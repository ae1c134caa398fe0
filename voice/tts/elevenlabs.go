package tts

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/parleyhq/parley/voice/audio"

	"github.com/parleyhq/parley/voice/internal/providerhttp"
)

// ElevenLabsConfig configures the ElevenLabs streaming (stream-input websocket) adapter.
type ElevenLabsConfig struct {
	// Name identifies the provider in logs and metrics. Default "elevenlabs".
	Name string
	// BaseURL is the websocket origin. Default "wss://api.elevenlabs.io"; ws, wss, http
	// and https are accepted (tests point it at a local server).
	BaseURL string
	// APIKey is sent in the xi-api-key header of the handshake. Required.
	APIKey string
	// VoiceID is used when Request.Voice is empty. Default "21m00Tcm4TlvDq8ikWAM"
	// ("Rachel", one of the premade voices every account has).
	VoiceID string
	// Model is the model_id. Default "eleven_flash_v2_5", ElevenLabs' lowest-latency model.
	Model string
	// OutputFormat is a raw PCM format, "pcm_<rate>": pcm_8000, pcm_16000, pcm_22050,
	// pcm_24000 or pcm_44100. Default "pcm_16000", the engine's own rate, so nothing
	// needs resampling on the way to a phone line.
	OutputFormat string
	// Stability and SimilarityBoost are the voice settings (0 to 1). Nil means 0.5 and
	// 0.75, ElevenLabs' defaults.
	Stability, SimilarityBoost *float64
	// HTTPClient carries the websocket handshake; the caller passes one that guards
	// against SSRF. Default: dial, TLS and response-header timeouts.
	HTTPClient *http.Client
	// FirstByteTimeout bounds the wait from dialing to the first audio. Flash models
	// answer in about 0.3 s; default 5 s.
	FirstByteTimeout time.Duration
	// StallTimeout bounds the silence between two messages once audio has started.
	// Default 10 s.
	StallTimeout time.Duration
	// MaxRetries is how many times a synthesis that failed before its first audio is
	// retried. Default 2; negative disables retries.
	MaxRetries int
	// MaxRetryAfter is the longest Retry-After the adapter waits for. Default 4 s.
	MaxRetryAfter time.Duration
}

// elevenLabsReadLimit bounds one websocket message. Audio messages carry up to a few
// seconds of base64 PCM plus character alignment; coder/websocket's 32 KiB default is
// too small for them.
const elevenLabsReadLimit = 8 << 20

var pcmFormat = regexp.MustCompile(`^pcm_([0-9]{4,5})$`)

func (c ElevenLabsConfig) withDefaults() ElevenLabsConfig {
	if c.Name == "" {
		c.Name = "elevenlabs"
	}
	if c.BaseURL == "" {
		c.BaseURL = "wss://api.elevenlabs.io"
	}
	if c.VoiceID == "" {
		c.VoiceID = "21m00Tcm4TlvDq8ikWAM"
	}
	if c.Model == "" {
		c.Model = "eleven_flash_v2_5"
	}
	if c.OutputFormat == "" {
		c.OutputFormat = "pcm_16000"
	}
	if c.Stability == nil {
		c.Stability = ptr(0.5)
	}
	if c.SimilarityBoost == nil {
		c.SimilarityBoost = ptr(0.75)
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
	return c
}

func ptr[T any](v T) *T { return &v }

func (c ElevenLabsConfig) validate() error {
	if c.APIKey == "" {
		return errors.New("tts: elevenlabs: API key required")
	}
	u, err := url.Parse(c.BaseURL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("tts: elevenlabs: base URL %q is not a URL", c.BaseURL)
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return fmt.Errorf("tts: elevenlabs: base URL %q: want a ws, wss, http or https URL", c.BaseURL)
	}
	if !pcmFormat.MatchString(c.OutputFormat) {
		return fmt.Errorf("tts: elevenlabs: output format %q: want pcm_<rate>", c.OutputFormat)
	}
	for _, v := range []float64{*c.Stability, *c.SimilarityBoost} {
		if v < 0 || v > 1 {
			return errors.New("tts: elevenlabs: voice settings must be between 0 and 1")
		}
	}
	if c.FirstByteTimeout < 0 || c.StallTimeout < 0 || c.MaxRetryAfter < 0 {
		return errors.New("tts: elevenlabs: timeouts must not be negative")
	}
	return nil
}

// ElevenLabs speaks through ElevenLabs' stream-input websocket, one connection per
// Synthesize call.
type ElevenLabs struct {
	cfg   ElevenLabsConfig
	rate  int
	retry providerhttp.Policy
}

var _ Provider = (*ElevenLabs)(nil)

// NewElevenLabs returns an adapter for cfg, with defaults filled in.
func NewElevenLabs(cfg ElevenLabsConfig) (*ElevenLabs, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rate, _ := strconv.Atoi(pcmFormat.FindStringSubmatch(cfg.OutputFormat)[1])
	return &ElevenLabs{
		cfg:   cfg,
		rate:  rate,
		retry: providerhttp.Policy{MaxRetries: cfg.MaxRetries, MaxRetryAfter: cfg.MaxRetryAfter, Transient: transientErrs},
	}, nil
}

// Name implements Provider.
func (p *ElevenLabs) Name() string { return p.cfg.Name }

// SampleRate implements Provider: the rate of the configured output format.
func (p *ElevenLabs) SampleRate() int { return p.rate }

// The stream-input protocol: a first message opens the stream with a single space and
// the voice settings; text messages follow (each ending in a space, so words are not
// glued across messages); an empty text ends the input. try_trigger_generation asks the
// server to start speaking without waiting for more text.
type elevenInit struct {
	Text          string             `json:"text"`
	VoiceSettings elevenVoiceSetting `json:"voice_settings"`
}

type elevenVoiceSetting struct {
	Stability       float64  `json:"stability"`
	SimilarityBoost float64  `json:"similarity_boost"`
	Speed           *float64 `json:"speed,omitempty"`
}

type elevenText struct {
	Text                 string `json:"text"`
	TryTriggerGeneration bool   `json:"try_trigger_generation,omitempty"`
}

// elevenMessage is what the server sends: audio chunks, then one with isFinal; or an
// error, with message and error fields.
type elevenMessage struct {
	Audio   *string `json:"audio"`
	IsFinal *bool   `json:"isFinal"`
	Message string  `json:"message"`
	Error   string  `json:"error"`
	Code    any     `json:"code"`
}

// ElevenLabsError is an error the server reported in a message.
type ElevenLabsError struct {
	Message, Kind string
	Code          any
}

func (e *ElevenLabsError) Error() string {
	s := "tts: elevenlabs: " + e.Message
	if e.Kind != "" {
		s += " (" + e.Kind + ")"
	}
	return s
}

// Synthesize implements Provider. It returns once the first audio has arrived, so that
// a failing or silent server can be retried before the caller has played anything.
func (p *ElevenLabs) Synthesize(ctx context.Context, req Request) (Stream, error) {
	text := strings.TrimSpace(req.Text)
	if text == "" {
		return emptyStream{}, nil
	}
	voice := cmpOr(req.Voice, p.cfg.VoiceID)
	if strings.ContainsAny(voice, "/?#") {
		return nil, fmt.Errorf("tts: elevenlabs: bad voice id %q", voice)
	}
	for failures := 1; ; failures++ {
		s, info, err := p.open(ctx, voice, text, req.Speed)
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

func (p *ElevenLabs) endpoint(voice string) string {
	q := url.Values{}
	q.Set("model_id", p.cfg.Model)
	q.Set("output_format", p.cfg.OutputFormat)
	return strings.TrimRight(p.cfg.BaseURL, "/") + "/v1/text-to-speech/" + url.PathEscape(voice) + "/stream-input?" + q.Encode()
}

func (p *ElevenLabs) open(ctx context.Context, voice, text string, speed float64) (*wsStream, *providerhttp.Attempt, error) {
	actx, cancel := context.WithCancelCause(ctx)
	s := &wsStream{ctx: actx, cancel: cancel, rate: p.rate, stallTimeout: p.cfg.StallTimeout}
	s.watchdog = newWatchdog(p.cfg.FirstByteTimeout, cancel)
	fail := func(err error, info *providerhttp.Attempt) (*wsStream, *providerhttp.Attempt, error) {
		s.release()
		return nil, info, causeOf(actx, err)
	}

	conn, resp, err := websocket.Dial(actx, p.endpoint(voice), &websocket.DialOptions{
		HTTPClient: p.cfg.HTTPClient,
		HTTPHeader: http.Header{"xi-api-key": {p.cfg.APIKey}},
	})
	if err != nil {
		hs := providerhttp.HandshakeAttempt(resp)
		info := &hs
		if info.Status != 0 {
			err = fmt.Errorf("handshake refused with status %d: %w", info.Status, err)
		}
		return fail(err, info)
	}
	s.conn = conn
	conn.SetReadLimit(elevenLabsReadLimit)

	settings := elevenVoiceSetting{Stability: *p.cfg.Stability, SimilarityBoost: *p.cfg.SimilarityBoost}
	if speed > 0 {
		settings.Speed = ptr(min(max(speed, 0.7), 1.2)) // the range ElevenLabs accepts
	}
	for _, msg := range []any{
		elevenInit{Text: " ", VoiceSettings: settings},
		elevenText{Text: text + " ", TryTriggerGeneration: true},
		elevenText{Text: ""},
	} {
		b, _ := json.Marshal(msg)
		if err := conn.Write(actx, websocket.MessageText, b); err != nil {
			return fail(err, nil)
		}
	}
	for {
		samples, err := s.next()
		if err != nil {
			if errors.Is(err, errFinal) {
				err = ErrNoAudio
			}
			return fail(err, nil)
		}
		if len(samples) > 0 {
			if !s.watchdog.started() {
				return fail(ErrFirstByteTimeout, nil)
			}
			s.pending = samples
			return s, nil, nil
		}
	}
}

// errFinal marks the server's isFinal message inside wsStream.
var errFinal = errors.New("final")

// wsStream reads one synthesis from the websocket.
type wsStream struct {
	ctx          context.Context
	cancel       context.CancelCauseFunc
	conn         *websocket.Conn
	watchdog     *watchdog
	stallTimeout time.Duration
	rate         int
	dec          pcmDecoder
	pending      []int16
	eof          bool
	err          error
	closed       atomic.Bool
	releaseOnce  sync.Once
}

// next reads one message and returns its samples (possibly none), errFinal after the
// last, or the failure.
func (s *wsStream) next() ([]int16, error) {
	typ, data, err := s.conn.Read(s.ctx)
	if err != nil {
		if websocket.CloseStatus(err) == websocket.StatusNormalClosure {
			// The server closed without isFinal; what it sent is all there is.
			return nil, errFinal
		}
		return nil, err
	}
	if typ != websocket.MessageText {
		return nil, nil
	}
	var m elevenMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("bad message: %w", err)
	}
	if m.Error != "" || (m.Message != "" && m.Audio == nil) {
		return nil, &ElevenLabsError{Message: cmpOr(m.Message, m.Error), Kind: m.Error, Code: m.Code}
	}
	var samples []int16
	if m.Audio != nil && *m.Audio != "" {
		pcm, err := base64.StdEncoding.DecodeString(*m.Audio)
		if err != nil {
			return nil, fmt.Errorf("bad audio: %w", err)
		}
		samples = s.dec.decode(pcm)
	}
	if m.IsFinal != nil && *m.IsFinal {
		if len(samples) > 0 {
			s.eof = true
			return samples, nil
		}
		return nil, errFinal
	}
	return samples, nil
}

func (s *wsStream) Recv() (audio.Frame, error) {
	if s.pending != nil {
		f := audio.Frame{Samples: s.pending, Rate: s.rate}
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
		samples, err := s.next()
		s.watchdog.disarm()
		if errors.Is(err, errFinal) {
			break
		}
		if err != nil {
			if s.closed.Load() {
				return audio.Frame{}, ErrClosed
			}
			s.err = fmt.Errorf("tts: elevenlabs stream: %w", causeOf(s.ctx, err))
			s.release()
			return audio.Frame{}, s.err
		}
		if len(samples) > 0 {
			return audio.Frame{Samples: samples, Rate: s.rate}, nil
		}
	}
	s.eof = true
	s.release()
	return audio.Frame{}, io.EOF
}

func (s *wsStream) Close() error {
	s.closed.Store(true)
	s.cancel(ErrClosed)
	s.release()
	return nil
}

func (s *wsStream) release() {
	s.releaseOnce.Do(func() {
		s.watchdog.stop()
		if s.conn != nil {
			// No close handshake: it can wait seconds for the peer, and after isFinal or
			// a barge-in there is nothing left to say.
			s.conn.CloseNow()
		}
		s.cancel(nil)
	})
}
