package embed

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	openai "github.com/sashabaranov/go-openai"
	"golang.org/x/sync/errgroup"
)

// HTTPDoer sends one HTTP request. *http.Client is one; Parley passes its SSRF-guarded
// client (internal/safehttp), since base URLs are typed by users.
type HTTPDoer interface {
	Do(*http.Request) (*http.Response, error)
}

// OpenAIConfig configures an OpenAI-compatible embeddings endpoint. The zero value of
// every field but APIKey means its default.
type OpenAIConfig struct {
	// BaseURL is the API root, to which "/embeddings" is appended. Default
	// "https://api.openai.com/v1"; Ollama is "http://host:11434/v1", TEI and vLLM
	// "http://host:port/v1".
	BaseURL string
	// APIKey is sent as "Authorization: Bearer"; empty sends no Authorization header, as
	// local servers want. It never appears in an error.
	APIKey string
	// Model is the model name. Default "text-embedding-3-small".
	Model string
	// Dimensions asks for vectors of this size (the `dimensions` request field, which the
	// text-embedding-3 models and some servers support). 0 means the model's native size:
	// known for OpenAI's models, otherwise learned from the first response (see Dim).
	Dimensions int
	// BatchSize is the most inputs per request. Default 96: OpenAI accepts up to 2,048,
	// but a smaller batch keeps a request's latency and its retry cost low, and keeps
	// CPU-bound local servers (Ollama) under any request timeout. Requests are also cut at
	// maxBatchBytes of text.
	BatchSize int
	// MaxRetries is how many times a failed request is retried (so 1+MaxRetries attempts).
	// Default 5; negative means never retry.
	MaxRetries int
	// Timeout bounds each request attempt. Default 30s.
	Timeout time.Duration
	// HTTPClient sends the requests. Default http.DefaultClient.
	HTTPClient HTTPDoer
	// Concurrency is how many batch requests of one Embed call run at once. Default 2:
	// enough to hide one request's latency behind another's, few enough not to trip a
	// provider's rate limit or swamp a local GPU.
	Concurrency int
}

const (
	defaultBaseURL     = "https://api.openai.com/v1"
	defaultModel       = "text-embedding-3-small"
	defaultBatchSize   = 96
	defaultMaxRetries  = 5
	defaultTimeout     = 30 * time.Second
	defaultConcurrency = 2

	// maxBatchSize is OpenAI's limit on inputs per request.
	maxBatchSize = 2048
	// maxBatchBytes caps the text in one request. OpenAI allows 300,000 tokens per
	// request; English runs ~4 bytes a token and CJK ~3 bytes (one character) a token, so
	// 200,000 bytes stays under the limit for any text while a normal batch (96 chunks of
	// ~1,200 bytes = 115 KB) never reaches it. A single input larger than this is sent
	// alone; whether the model accepts it is the server's call (OpenAI's limit is 8,192
	// tokens per input), and its 400 is reported.
	maxBatchBytes = 200_000
	// maxDim is the largest vector accepted (as the API's own check on dimensions).
	maxDim = 4096
)

// nativeDims are the output sizes of models whose size is certain. Other models'
// sizes are learned from their first response; a wrong guess here would fail every
// request, so only OpenAI's own models are listed.
var nativeDims = map[string]int{
	"text-embedding-3-small": 1536,
	"text-embedding-3-large": 3072,
	"text-embedding-ada-002": 1536,
}

// fixedSizeModels reject the `dimensions` field.
var fixedSizeModels = map[string]bool{"text-embedding-ada-002": true}

// OpenAI embeds with an OpenAI-compatible /embeddings endpoint. It is safe for concurrent
// use, and meant to be long-lived: it holds the rate-limit pause shared by its requests.
type OpenAI struct {
	client   *openai.Client
	model    string
	sendDims int // the `dimensions` field, 0 to leave it out
	id       string
	endpoint string // for error messages: scheme://host/path, no credentials

	batchSize   int
	maxRetries  int
	timeout     time.Duration
	concurrency int
	backoff     backoff

	dim atomic.Int64 // 0 until known

	// notBefore (Unix nanoseconds) is when the provider said, through Retry-After, that
	// we may send again. Every request of this embedder waits for it, not only the one
	// that got the 429: rate limits are per key, and the requests in flight alongside it
	// would only collect 429s of their own.
	notBefore atomic.Int64

	apiKey string // only to scrub it from error messages
}

// NewOpenAI checks cfg and returns the embedder. It does not contact the server, so it is
// cheap and cannot fail for the network's sake; call Probe to check the settings (and to
// learn the size of a model not in nativeDims) before relying on Dim.
func NewOpenAI(cfg OpenAIConfig) (*OpenAI, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = defaultBaseURL
	}
	cfg.Model = strings.TrimSpace(cfg.Model)
	if cfg.Model == "" {
		cfg.Model = defaultModel
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = defaultBatchSize
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = defaultMaxRetries
	} else if cfg.MaxRetries < 0 {
		cfg.MaxRetries = 0
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = defaultConcurrency
	}

	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("embed: openai: base URL must be an http:// or https:// URL")
	}
	switch {
	case cfg.Dimensions < 0 || cfg.Dimensions > maxDim:
		return nil, fmt.Errorf("embed: openai: dimensions must be from 1 to %d, or 0 for the model's native size", maxDim)
	case cfg.BatchSize < 1 || cfg.BatchSize > maxBatchSize:
		return nil, fmt.Errorf("embed: openai: batch size must be from 1 to %d", maxBatchSize)
	case cfg.Timeout < 0:
		return nil, errors.New("embed: openai: timeout must not be negative")
	case cfg.Concurrency < 1:
		return nil, errors.New("embed: openai: concurrency must be at least 1")
	}

	dim := cfg.Dimensions
	sendDims := cfg.Dimensions
	if native, ok := nativeDims[cfg.Model]; ok {
		switch {
		case dim > native:
			return nil, fmt.Errorf("embed: openai: %s makes vectors of at most %d dimensions, not %d", cfg.Model, native, dim)
		case fixedSizeModels[cfg.Model] && dim != 0 && dim != native:
			return nil, fmt.Errorf("embed: openai: %s makes only %d-dimensional vectors", cfg.Model, native)
		case fixedSizeModels[cfg.Model]:
			sendDims = 0 // it rejects the field even when it asks for its own size
		}
		if dim == 0 {
			dim = native
		}
	}

	// The ID names the vectors: the model and the size asked for. It does not name the
	// server, so moving the same model from one host to another keeps the vectors. It is
	// fixed here, from the configuration alone: a model of unknown size asked for its
	// native size is "openai:<model>:native" before and after its size is learned, since
	// a knowledge base must not see its embedder's ID change under it.
	size := "native"
	if dim > 0 {
		size = strconv.Itoa(dim)
	}

	cc := openai.DefaultConfig(cfg.APIKey)
	cc.BaseURL = cfg.BaseURL
	cc.HTTPClient = &observingDoer{next: cfg.HTTPClient}
	o := &OpenAI{
		client:      openai.NewClientWithConfig(cc),
		model:       cfg.Model,
		sendDims:    sendDims,
		id:          "openai:" + cfg.Model + ":" + size,
		endpoint:    (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: strings.TrimRight(u.Path, "/") + "/embeddings"}).String(),
		batchSize:   cfg.BatchSize,
		maxRetries:  cfg.MaxRetries,
		timeout:     cfg.Timeout,
		concurrency: cfg.Concurrency,
		backoff:     defaultBackoff,
		apiKey:      cfg.APIKey,
	}
	o.dim.Store(int64(dim))
	return o, nil
}

// ID is "openai:<model>:<size>", where size is the requested dimensions, the known native
// size, or "native" for a model of unknown size asked for its native size.
func (o *OpenAI) ID() string { return o.id }

// Dim is the vector size: the configured Dimensions, else the model's known native size,
// else the size learned from the first successful response, and 0 until then. A caller
// that must record the size before embedding anything calls Probe first.
func (o *OpenAI) Dim() int { return int(o.dim.Load()) }

// Probe returns Dim, first embedding a short text if the size is not yet known. It is also
// a cheap end-to-end check of the URL, key and model, for when a user saves them.
func (o *OpenAI) Probe(ctx context.Context) (int, error) {
	if d := o.Dim(); d > 0 {
		return d, nil
	}
	if _, err := o.Embed(ctx, []string{"dimension probe"}); err != nil {
		return 0, err
	}
	return o.Dim(), nil
}

// Embed sends texts in batches of at most BatchSize inputs and maxBatchBytes bytes,
// Concurrency batches at a time, and returns the vectors in the order of texts,
// L2-normalised. The first batch to fail (after its retries) cancels the others, and its
// error is returned; its message is safe to show users.
//
// Empty texts are sent as a single space: providers reject empty input, and a space
// embeds as near-nothing, which is what an empty text is.
func (o *OpenAI) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	if len(texts) == 0 {
		return out, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, o.fail(err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.concurrency)
	for start := 0; start < len(texts) && gctx.Err() == nil; {
		end, size := start, 0
		for end < len(texts) && end-start < o.batchSize && (end == start || size+len(texts[end]) <= maxBatchBytes) {
			size += len(texts[end])
			end++
		}
		batch, dst := texts[start:end], out[start:end]
		g.Go(func() error { return o.embedBatch(gctx, batch, dst) })
		start = end
	}
	if err := g.Wait(); err != nil {
		// A batch cancelled because another failed reports context.Canceled; errgroup
		// returns the first error, which is the real one.
		return nil, err
	}
	return out, nil
}

// embedBatch embeds one batch into dst (same length), retrying per the backoff policy.
func (o *OpenAI) embedBatch(ctx context.Context, texts []string, dst [][]float32) error {
	input := texts
	if slices.Contains(texts, "") {
		input = slices.Clone(texts)
		for i, t := range input {
			if t == "" {
				input[i] = " "
			}
		}
	}
	req := openai.EmbeddingRequest{
		Input:      input,
		Model:      openai.EmbeddingModel(o.model),
		Dimensions: o.sendDims,
		// Float, the documented default, rather than base64, which is smaller on the
		// wire but which several compatible servers do not implement.
		EncodingFormat: openai.EmbeddingEncodingFormatFloat,
	}
	for attempt := 0; ; attempt++ {
		if err := o.waitTurn(ctx); err != nil {
			return o.fail(err)
		}
		res, obs, err := o.send(ctx, req)
		if err == nil {
			if err = o.accept(res, dst); err == nil {
				return nil
			}
			return err
		}
		if ctx.Err() != nil {
			// Cancelled by the caller or because a sibling batch failed: not this
			// request's failure, and not worth a retry.
			return o.fail(ctx.Err())
		}
		v := o.classify(err, obs)
		if !v.retry {
			return o.errorf(v.errs, "%s", v.msg)
		}
		if v.authoritative {
			// Even when this call gives up below: the next call should not walk into the
			// same limit.
			o.pauseAll(min(v.hint, maxRetryAfter))
		}
		if v.hint > maxRetryAfter {
			return o.errorf(v.errs, "%s; the server asks to wait %s, longer than this embedder waits", v.msg, v.hint.Round(time.Second))
		}
		if attempt >= o.maxRetries {
			if attempt == 0 {
				return o.errorf(v.errs, "%s", v.msg) // retries are off
			}
			return o.errorf(v.errs, "%s (gave up after %d attempts)", v.msg, attempt+1)
		}
		wait := max(o.backoff.delay(attempt), v.hint)
		if err := sleep(ctx, wait); err != nil {
			return o.fail(err)
		}
	}
}

// send makes one attempt, bounded by the per-request timeout.
func (o *OpenAI) send(ctx context.Context, req openai.EmbeddingRequest) (openai.EmbeddingResponse, *observation, error) {
	// The body limit: room for every number written long-hand with indentation (48
	// bytes; floats print as at most ~25) plus the envelope. A few MB for a normal batch.
	dim := int64(o.Dim())
	if dim == 0 {
		dim = maxDim
	}
	obs := &observation{limit: 1<<20 + int64(len(req.Input.([]string)))*dim*48}
	actx, cancel := context.WithTimeout(context.WithValue(ctx, observationKey{}, obs), o.timeout)
	defer cancel()
	res, err := o.client.CreateEmbeddings(actx, req)
	if err != nil && actx.Err() != nil && ctx.Err() == nil {
		obs.timedOut = true
	}
	return res, obs, err
}

// accept checks a response and stores its vectors, normalised, into dst. Nothing is
// learned from a response that is rejected.
func (o *OpenAI) accept(res openai.EmbeddingResponse, dst [][]float32) error {
	if len(res.Data) != len(dst) {
		return o.wrap(ErrBadResponse, "the server returned %d embeddings for %d inputs", len(res.Data), len(dst))
	}
	want := o.Dim()
	learning := want == 0
	if learning {
		// The first response for a model of unknown size sets it, if it is consistent.
		want = len(res.Data[0].Embedding)
		if want < 1 || want > maxDim {
			return o.wrap(ErrBadResponse, "the server returned an embedding of %d dimensions", want)
		}
	}
	seen := make([]bool, len(dst))
	for _, d := range res.Data {
		if d.Index < 0 || d.Index >= len(dst) || seen[d.Index] {
			return o.wrap(ErrBadResponse, "the server returned an embedding with index %d for %d inputs (out of range or repeated)", d.Index, len(dst))
		}
		seen[d.Index] = true
		if n := len(d.Embedding); n != want {
			hint := ""
			if o.sendDims > 0 {
				hint = "; the server may not support the dimensions setting: set it to 0"
			}
			return o.wrap(ErrBadResponse, "the server returned a %d-dimensional embedding, expected %d%s", n, want, hint)
		}
		if !normalize(d.Embedding) {
			return o.wrap(ErrBadResponse, "the server returned an embedding that is all zeros or contains NaN or infinity")
		}
	}
	if learning && !o.dim.CompareAndSwap(0, int64(want)) && o.Dim() != want {
		// Concurrent first batches disagreed about the size.
		return o.wrap(ErrBadResponse, "the server returned a %d-dimensional embedding, expected %d", want, o.Dim())
	}
	for _, d := range res.Data {
		dst[d.Index] = d.Embedding
	}
	return nil
}

// waitTurn waits out a pause another request of this embedder was asked for.
func (o *OpenAI) waitTurn(ctx context.Context) error {
	if d := time.Until(time.Unix(0, o.notBefore.Load())); d > 0 {
		return sleep(ctx, d)
	}
	return ctx.Err()
}

func (o *OpenAI) pauseAll(d time.Duration) {
	until := time.Now().Add(d).UnixNano()
	for {
		cur := o.notBefore.Load()
		if cur >= until || o.notBefore.CompareAndSwap(cur, until) {
			return
		}
	}
}

// sleep waits d or until ctx is done, whichever is first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
