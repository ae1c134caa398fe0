package llm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/parleyhq/parley/voice/internal/providerhttp"
)

var (
	// ErrFirstTokenTimeout means the server accepted the request but wrote no token within
	// OpenAIConfig.FirstTokenTimeout. Stream retries it; it surfaces once retries run out.
	ErrFirstTokenTimeout = errors.New("llm: no first token in time")
	// ErrStalled means the stream went quiet for longer than OpenAIConfig.StallTimeout
	// after it had started. It is never retried: the caller already has part of the answer.
	ErrStalled = errors.New("llm: stream stalled")
	// ErrClosed is returned by Recv after Close.
	ErrClosed = errors.New("llm: stream closed")
)

// OpenAIConfig configures an adapter for any server that speaks OpenAI's streaming
// chat-completions API.
type OpenAIConfig struct {
	// Name identifies the provider in logs and metrics. Default "openai".
	Name string
	// BaseURL is the API root including the version, without /chat/completions.
	// Default "https://api.openai.com/v1". Groq: "https://api.groq.com/openai/v1";
	// Ollama: "http://localhost:11434/v1"; vLLM: "http://host:8000/v1".
	BaseURL string
	// APIKey is sent as a bearer token. Empty sends none (local servers need none).
	APIKey string
	// Model is used when Request.Model is empty. Default "gpt-4o-mini".
	Model string
	// HTTPClient carries the requests; the caller passes one that guards against SSRF.
	// Default: a client with dial, TLS and response-header timeouts but no overall
	// timeout, which would cut long answers off.
	HTTPClient *http.Client
	// FirstTokenTimeout bounds the wait from sending the request to the first token (text
	// or tool call). Hosted models answer in well under a second at the median and about
	// 3 s at the tail with a long prompt; past 6 s a caller hears dead air, and a retry (or
	// the fallback provider) is the better bet. Default 6 s.
	FirstTokenTimeout time.Duration
	// StallTimeout bounds the silence between two chunks once the answer has started.
	// Default 15 s.
	StallTimeout time.Duration
	// MaxRetries is how many times a request is retried when it failed before its first
	// token (429, 5xx, dropped connection, first-token timeout). Default 2; negative
	// disables retries.
	MaxRetries int
	// MaxRetryAfter is the longest Retry-After the adapter waits for; a longer one fails
	// the request at once so a fallback can answer. Default 4 s.
	MaxRetryAfter time.Duration
	// UseMaxCompletionTokens sends Request.MaxTokens as max_completion_tokens, which
	// OpenAI's reasoning models require, instead of max_tokens, which every compatible
	// server understands.
	UseMaxCompletionTokens bool
}

const (
	defaultOpenAIBaseURL     = "https://api.openai.com/v1"
	defaultOpenAIModel       = "gpt-4o-mini"
	defaultFirstTokenTimeout = 6 * time.Second
	defaultStallTimeout      = 15 * time.Second
	defaultMaxRetries        = 2
	defaultMaxRetryAfter     = 4 * time.Second
	// drainTimeout bounds the read of what follows the final chunk (a usage chunk and
	// [DONE]); reading it lets the connection go back to the pool.
	drainTimeout = 2 * time.Second
)

func (c OpenAIConfig) withDefaults() OpenAIConfig {
	if c.Name == "" {
		c.Name = "openai"
	}
	if c.BaseURL == "" {
		c.BaseURL = defaultOpenAIBaseURL
	}
	if c.Model == "" {
		c.Model = defaultOpenAIModel
	}
	if c.HTTPClient == nil {
		c.HTTPClient = defaultHTTPClient()
	}
	if c.FirstTokenTimeout == 0 {
		c.FirstTokenTimeout = defaultFirstTokenTimeout
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = defaultStallTimeout
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = defaultMaxRetries
	} else if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = defaultMaxRetryAfter
	}
	return c
}

func (c OpenAIConfig) validate() error {
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("llm: base URL %q: want an http or https URL", c.BaseURL)
	}
	if c.FirstTokenTimeout < 0 || c.StallTimeout < 0 || c.MaxRetryAfter < 0 {
		return errors.New("llm: timeouts must not be negative")
	}
	return nil
}

// OpenAI streams chat completions from an OpenAI-compatible server through go-openai.
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

// Stream implements Provider. It returns once the first token has arrived, so that a
// server that fails or stays silent can be retried before anything reached the caller;
// after that, failures surface from Recv and are never retried.
func (p *OpenAI) Stream(ctx context.Context, req Request) (Stream, error) {
	creq, err := p.chatRequest(req)
	if err != nil {
		return nil, err
	}
	for failures := 1; ; failures++ {
		s, info, err := p.open(ctx, creq)
		if err == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("llm: %s %s: %w", p.cfg.Name, creq.Model, ctx.Err())
		}
		wait, ok := p.retry.Next(failures, err, providerhttp.Of(info))
		if !ok {
			return nil, p.wrapErr(creq.Model, failures, err, info)
		}
		if err := providerhttp.Sleep(ctx, wait); err != nil {
			return nil, fmt.Errorf("llm: %s %s: %w", p.cfg.Name, creq.Model, err)
		}
	}
}

func (p *OpenAI) wrapErr(model string, attempts int, err error, info *providerhttp.Attempt) error {
	var extra string
	if attempts > 1 {
		extra = fmt.Sprintf(" after %d attempts", attempts)
	}
	if info != nil && info.HasRetryAfter && info.RetryAfter > p.cfg.MaxRetryAfter {
		extra += fmt.Sprintf(" (server asked to retry after %s, more than %s)", info.RetryAfter, p.cfg.MaxRetryAfter)
	}
	return fmt.Errorf("llm: %s %s%s: %w", p.cfg.Name, model, extra, err)
}

// open makes one attempt: it sends the request and reads until the first token.
func (p *OpenAI) open(ctx context.Context, creq openai.ChatCompletionRequest) (*openaiStream, *providerhttp.Attempt, error) {
	info := &providerhttp.Attempt{}
	actx, cancel := context.WithCancelCause(providerhttp.WithRecorder(ctx, info))
	s := &openaiStream{cancel: cancel, ctx: actx, stallTimeout: p.cfg.StallTimeout}
	// One watchdog serves both phases: before the first token it enforces
	// FirstTokenTimeout, after it StallTimeout.
	s.watchdog = time.AfterFunc(p.cfg.FirstTokenTimeout, func() {
		if s.started.Load() {
			cancel(ErrStalled)
		} else {
			cancel(ErrFirstTokenTimeout)
		}
	})
	cs, err := p.client.CreateChatCompletionStream(actx, creq)
	if err != nil {
		s.watchdog.Stop()
		cancel(nil)
		return nil, info, causeOf(actx, err)
	}
	s.cs = cs
	for {
		resp, err := cs.Recv()
		if errors.Is(err, io.EOF) {
			// The server finished without a single token: an empty answer, not a failure.
			s.started.Store(true)
			s.pending = s.endOfStream()
			s.eof = true
			s.release()
			return s, info, nil
		}
		if err != nil {
			s.release()
			return nil, info, causeOf(actx, err)
		}
		chunk, emit, progressed := s.absorb(resp)
		if !progressed {
			continue
		}
		if !s.watchdog.Stop() {
			// The watchdog fired as the token arrived; the attempt's context is gone.
			s.release()
			return nil, info, ErrFirstTokenTimeout
		}
		s.started.Store(true)
		if emit {
			s.pending = &chunk
		}
		return s, info, nil
	}
}

// causeOf prefers our own cancellation cause (a timeout) to the error it produced.
func causeOf(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
		if errors.Is(cause, ErrFirstTokenTimeout) || errors.Is(cause, ErrStalled) || errors.Is(cause, ErrClosed) {
			return cause
		}
	}
	return err
}

func (p *OpenAI) chatRequest(req Request) (openai.ChatCompletionRequest, error) {
	model := req.Model
	if model == "" {
		model = p.cfg.Model
	}
	if len(req.Messages) == 0 {
		return openai.ChatCompletionRequest{}, errors.New("llm: request has no messages")
	}
	creq := openai.ChatCompletionRequest{Model: model, Stream: true}
	for i, m := range req.Messages {
		switch m.Role {
		case System, User, Assistant, ToolRole:
		default:
			return creq, fmt.Errorf("llm: message %d: unknown role %q", i, m.Role)
		}
		cm := openai.ChatCompletionMessage{
			Role:       string(m.Role),
			Content:    m.Content,
			Name:       m.Name,
			ToolCallID: m.ToolCallID,
		}
		for _, tc := range m.ToolCalls {
			cm.ToolCalls = append(cm.ToolCalls, openai.ToolCall{
				ID:       tc.ID,
				Type:     openai.ToolTypeFunction,
				Function: openai.FunctionCall{Name: tc.Name, Arguments: tc.Arguments},
			})
		}
		creq.Messages = append(creq.Messages, cm)
	}
	for _, t := range req.Tools {
		if t.Name == "" {
			return creq, errors.New("llm: tool without a name")
		}
		params := t.Parameters
		if len(params) == 0 {
			// Servers reject a function without a parameters schema; this one takes none.
			params = json.RawMessage(`{"type":"object","properties":{}}`)
		} else if !json.Valid(params) {
			return creq, fmt.Errorf("llm: tool %s: parameters are not valid JSON", t.Name)
		}
		creq.Tools = append(creq.Tools, openai.Tool{
			Type: openai.ToolTypeFunction,
			Function: &openai.FunctionDefinition{
				Name:        t.Name,
				Description: t.Description,
				Parameters:  params,
			},
		})
	}
	if req.Temperature != nil {
		t := *req.Temperature
		if t == 0 {
			// go-openai drops a zero temperature (omitempty), and the server would then use
			// its default of 1. The smallest positive float is greedy decoding in effect.
			t = math.SmallestNonzeroFloat32
		}
		creq.Temperature = t
	}
	if req.MaxTokens > 0 {
		if p.cfg.UseMaxCompletionTokens {
			creq.MaxCompletionTokens = req.MaxTokens
		} else {
			creq.MaxTokens = req.MaxTokens
		}
	}
	return creq, nil
}

// openaiStream is one completion being read. Recv is called from one goroutine; Close
// may be called from any.
type openaiStream struct {
	cs           *openai.ChatCompletionStream
	ctx          context.Context
	cancel       context.CancelCauseFunc
	watchdog     *time.Timer
	stallTimeout time.Duration
	started      atomic.Bool // first token seen: the watchdog now means "stalled"

	pending  *Chunk // a chunk read ahead (the first token) not yet returned
	finished bool   // the final chunk was built
	eof      bool
	err      error
	tools    toolAssembler

	releaseOnce sync.Once
	closed      atomic.Bool
}

// Recv implements Stream.
func (s *openaiStream) Recv() (Chunk, error) {
	if s.pending != nil {
		c := *s.pending
		s.pending = nil
		return c, nil
	}
	if s.closed.Load() {
		return Chunk{}, ErrClosed
	}
	if s.err != nil {
		return Chunk{}, s.err
	}
	if s.eof {
		return Chunk{}, io.EOF
	}
	if s.finished {
		s.drain()
		return Chunk{}, io.EOF
	}
	for {
		s.watchdog.Reset(s.stallTimeout)
		resp, err := s.cs.Recv()
		s.watchdog.Stop()
		if errors.Is(err, io.EOF) {
			s.eof = true
			last := s.endOfStream()
			s.release()
			if last != nil {
				return *last, nil
			}
			return Chunk{}, io.EOF
		}
		if err != nil {
			if s.closed.Load() {
				return Chunk{}, ErrClosed
			}
			s.err = fmt.Errorf("llm: stream: %w", causeOf(s.ctx, err))
			s.release()
			return Chunk{}, s.err
		}
		if c, emit, _ := s.absorb(resp); emit {
			return c, nil
		}
	}
}

// drain reads what follows the final chunk, so the connection can be reused, then
// releases the stream.
func (s *openaiStream) drain() {
	s.eof = true
	s.watchdog.Reset(drainTimeout)
	for {
		if _, err := s.cs.Recv(); err != nil {
			break
		}
	}
	s.release()
}

// endOfStream builds the last chunk when the stream ended without a finish_reason but
// with tool calls pending; otherwise it returns nil.
func (s *openaiStream) endOfStream() *Chunk {
	if s.finished {
		return nil
	}
	s.finished = true
	calls := s.tools.calls()
	if len(calls) == 0 {
		return nil
	}
	return &Chunk{ToolCalls: calls, FinishReason: string(openai.FinishReasonToolCalls)}
}

// absorb folds one server chunk into the stream's state. emit says c should go to the
// caller; progressed says the model has started answering (text, tool call or finish).
func (s *openaiStream) absorb(resp openai.ChatCompletionStreamResponse) (c Chunk, emit, progressed bool) {
	if len(resp.Choices) == 0 || s.finished {
		return c, false, false // e.g. the usage chunk
	}
	// We never ask for n > 1; if a server sends several choices, follow the first.
	ch := resp.Choices[0]
	c.Text = ch.Delta.Content + ch.Delta.Refusal
	if len(ch.Delta.ToolCalls) > 0 {
		s.tools.add(ch.Delta.ToolCalls)
		progressed = true
	}
	if ch.FinishReason != "" {
		s.finished = true
		c.FinishReason = string(ch.FinishReason)
		c.ToolCalls = s.tools.calls()
		// Some servers (older Ollama) say "stop" after writing tool calls; callers should
		// not have to know that.
		if len(c.ToolCalls) > 0 && c.FinishReason == string(openai.FinishReasonStop) {
			c.FinishReason = string(openai.FinishReasonToolCalls)
		}
		return c, true, true
	}
	if c.Text != "" {
		return c, true, true
	}
	return c, false, progressed
}

// Close implements Stream. It is safe to call more than once and concurrently with Recv.
func (s *openaiStream) Close() error {
	s.closed.Store(true)
	s.cancel(ErrClosed)
	s.release()
	return nil
}

func (s *openaiStream) release() {
	s.releaseOnce.Do(func() {
		s.watchdog.Stop()
		if s.cs != nil {
			s.cs.Close()
		}
		s.cancel(nil)
	})
}

// toolAssembler rebuilds tool calls from streamed deltas. OpenAI sends a call's id, type
// and name in its first delta and the arguments in pieces after it, every delta tagged
// with the call's index; parallel calls may interleave.
type toolAssembler struct {
	byIndex map[int]*partialCall
	order   []int
}

type partialCall struct {
	id, name string
	args     strings.Builder
}

func (a *toolAssembler) add(deltas []openai.ToolCall) {
	if a.byIndex == nil {
		a.byIndex = make(map[int]*partialCall)
	}
	for _, d := range deltas {
		idx := a.indexOf(d)
		pc := a.byIndex[idx]
		if pc == nil {
			pc = &partialCall{}
			a.byIndex[idx] = pc
			a.order = append(a.order, idx)
		}
		if pc.id == "" {
			pc.id = d.ID
		}
		// The name comes whole in the first delta; some servers repeat it later.
		if pc.name == "" {
			pc.name = d.Function.Name
		}
		pc.args.WriteString(d.Function.Arguments)
	}
}

// indexOf finds the call a delta belongs to. Servers that omit the index (some Ollama
// and vLLM versions) either send each call whole or open a call with its id and
// continue it without one.
func (a *toolAssembler) indexOf(d openai.ToolCall) int {
	if d.Index != nil {
		return *d.Index
	}
	if d.ID != "" {
		next := 0
		for _, idx := range a.order {
			if a.byIndex[idx].id == d.ID {
				return idx
			}
			next = max(next, idx+1)
		}
		return next
	}
	if len(a.order) > 0 {
		return a.order[len(a.order)-1]
	}
	return 0
}

// calls returns the assembled calls in index order.
func (a *toolAssembler) calls() []ToolCall {
	if len(a.order) == 0 {
		return nil
	}
	idxs := slices.Clone(a.order)
	slices.Sort(idxs)
	out := make([]ToolCall, 0, len(idxs))
	for _, idx := range idxs {
		pc := a.byIndex[idx]
		tc := ToolCall{ID: pc.id, Name: pc.name, Arguments: pc.args.String()}
		if tc.ID == "" {
			// The tool message that answers the call must name it; invent a stable ID.
			tc.ID = fmt.Sprintf("call_%d", idx)
		}
		if strings.TrimSpace(tc.Arguments) == "" {
			tc.Arguments = "{}"
		}
		out = append(out, tc)
	}
	return out
}
