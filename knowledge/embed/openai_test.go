package embed

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// embServer is a scripted OpenAI-compatible server: POST /v1/embeddings with the real
// request and response JSON (and base64 encoding_format, which OpenAI's own SDKs use).
// By default it answers every request with fakeVec of each input, data items in reverse
// order (their index fields say where they belong, as the API allows); script overrides
// the answer to the n-th request (0-based) when it returns true.
type embServer struct {
	t      *testing.T
	srv    *httptest.Server
	dim    int
	delay  time.Duration // before answering, to observe concurrency
	script func(n int, req embRequest, w http.ResponseWriter, r *http.Request) bool

	mu          sync.Mutex
	reqs        []recorded
	inFlight    int
	maxInFlight int
}

type embRequest struct {
	Input          []string `json:"input"`
	Model          string   `json:"model"`
	Dimensions     *int     `json:"dimensions"`
	EncodingFormat string   `json:"encoding_format"`
	User           *string  `json:"user"`
}

type recorded struct {
	req    embRequest
	header http.Header
	at     time.Time
}

type embResponse struct {
	Object string    `json:"object"`
	Data   []embItem `json:"data"`
	Model  string    `json:"model"`
	Usage  struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

type embItem struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string
}

func newEmbServer(t *testing.T, dim int) *embServer {
	t.Helper()
	s := &embServer{t: t, dim: dim}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close) // also closes the idle connections of s.srv.Client()
	return s
}

// config is an OpenAIConfig pointing at the server, with its client.
func (s *embServer) config() OpenAIConfig {
	return OpenAIConfig{BaseURL: s.srv.URL + "/v1", HTTPClient: s.srv.Client(), Model: "test-model"}
}

func (s *embServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/embeddings" {
		http.NotFound(w, r) // "404 page not found", text/plain, as Go servers (Ollama) say
		return
	}
	var req embRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeAPIError(w, http.StatusBadRequest, "invalid_request_error", nil, "could not parse the JSON body")
		return
	}
	s.mu.Lock()
	n := len(s.reqs)
	s.reqs = append(s.reqs, recorded{req: req, header: r.Header.Clone(), at: time.Now()})
	s.inFlight++
	s.maxInFlight = max(s.maxInFlight, s.inFlight)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	if s.delay > 0 {
		time.Sleep(s.delay)
	}
	if s.script != nil && s.script(n, req, w, r) {
		return
	}
	s.mu.Lock()
	dim := s.dim
	s.mu.Unlock()
	if req.Dimensions != nil {
		dim = *req.Dimensions
	}
	writeEmbeddings(w, req, dim)
}

func writeEmbeddings(w http.ResponseWriter, req embRequest, dim int) {
	res := embResponse{Object: "list", Model: req.Model}
	for i := len(req.Input) - 1; i >= 0; i-- {
		v := fakeVec(req.Input[i], dim)
		item := embItem{Object: "embedding", Index: i, Embedding: v}
		if req.EncodingFormat == "base64" {
			b := make([]byte, 4*len(v))
			for j, x := range v {
				binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(x))
			}
			item.Embedding = base64.StdEncoding.EncodeToString(b)
		}
		res.Data = append(res.Data, item)
		res.Usage.PromptTokens += len(req.Input[i])/4 + 1
	}
	res.Usage.TotalTokens = res.Usage.PromptTokens
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(res)
}

// writeAPIError writes OpenAI's error envelope.
func writeAPIError(w http.ResponseWriter, status int, typ string, code any, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": code}})
}

// fakeVec is the server's "model": a deterministic vector for each text, deliberately not
// unit length so that the client's normalisation shows.
func fakeVec(text string, dim int) []float32 {
	h := fnv.New64a()
	h.Write([]byte(text))
	r := rand.New(rand.NewPCG(h.Sum64(), 7))
	v := make([]float32, dim)
	for i := range v {
		v[i] = float32(r.NormFloat64() * 3)
	}
	return v
}

func unit(v []float32) []float32 {
	u := append([]float32(nil), v...)
	normalize(u)
	return u
}

func (s *embServer) requests() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.reqs...)
}

func newTestOpenAI(t *testing.T, cfg OpenAIConfig) *OpenAI {
	t.Helper()
	o, err := NewOpenAI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Retries in milliseconds, not seconds; the backoff policy itself is tested alone.
	o.backoff = backoff{base: time.Millisecond, cap: 5 * time.Millisecond}
	return o
}

func inputs(n, size int) []string {
	texts := make([]string, n)
	for i := range texts {
		texts[i] = fmt.Sprintf("text %03d ", i)
		texts[i] += strings.Repeat("x", max(0, size-len(texts[i])))
	}
	return texts
}

func checkVectors(t *testing.T, texts []string, got [][]float32, dim int) {
	t.Helper()
	if len(got) != len(texts) {
		t.Fatalf("%d vectors for %d texts", len(got), len(texts))
	}
	for i, v := range got {
		in := texts[i]
		if in == "" {
			in = " "
		}
		want := unit(fakeVec(in, dim))
		if len(v) != dim {
			t.Fatalf("vector %d has %d dimensions, want %d", i, len(v), dim)
		}
		for j := range v {
			if math.Abs(float64(v[j]-want[j])) > 1e-6 {
				t.Fatalf("vector %d is not the embedding of text %d (out of order?)", i, i)
			}
		}
	}
}

func TestOpenAIBatching(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		texts     []string
		batchSize int
		wantSizes []int // inputs per request, in any order
	}{
		{"250 inputs in batches of 96", inputs(250, 20), 0, []int{96, 96, 58}},
		{"exactly one batch", inputs(96, 20), 0, []int{96}},
		{"one input", inputs(1, 20), 0, []int{1}},
		{"batch size 10", inputs(25, 20), 10, []int{10, 10, 5}},
		// 60 kB each: three fit in the 200 kB request cap, a fourth would not.
		{"cut by bytes", inputs(5, 60_000), 0, []int{3, 2}},
		// An input over the cap on its own goes alone rather than not at all.
		{"oversized input alone", append(inputs(1, 250_000), inputs(2, 10)...), 0, []int{1, 2}},
		{"empty strings sent as a space", []string{"a", "", "c"}, 0, []int{3}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newEmbServer(t, 16)
			s.delay = 20 * time.Millisecond // long enough for batches to overlap
			cfg := s.config()
			cfg.BatchSize = tc.batchSize
			cfg.Dimensions = 16
			o := newTestOpenAI(t, cfg)
			got, err := o.Embed(context.Background(), tc.texts)
			if err != nil {
				t.Fatal(err)
			}
			checkVectors(t, tc.texts, got, 16)
			reqs := s.requests()
			var sizes []int
			seen := map[string]bool{}
			for _, r := range reqs {
				sizes = append(sizes, len(r.req.Input))
				for _, in := range r.req.Input {
					if in == "" {
						t.Errorf("an empty input was sent")
					}
					seen[in] = true
				}
			}
			if fmt.Sprint(sortedInts(sizes)) != fmt.Sprint(sortedInts(tc.wantSizes)) {
				t.Errorf("request sizes %v, want %v", sizes, tc.wantSizes)
			}
			if s.maxInFlight > defaultConcurrency {
				t.Errorf("%d requests in flight, want at most %d", s.maxInFlight, defaultConcurrency)
			}
		})
	}
}

func sortedInts(a []int) []int {
	b := append([]int(nil), a...)
	for i := range b {
		for j := i + 1; j < len(b); j++ {
			if b[j] < b[i] {
				b[i], b[j] = b[j], b[i]
			}
		}
	}
	return b
}

func TestOpenAIConcurrencyLimit(t *testing.T) {
	t.Parallel()
	for _, conc := range []int{1, 3} {
		t.Run(fmt.Sprint(conc), func(t *testing.T) {
			t.Parallel()
			s := newEmbServer(t, 4)
			s.delay = 20 * time.Millisecond
			cfg := s.config()
			cfg.Dimensions, cfg.BatchSize, cfg.Concurrency = 4, 5, conc
			o := newTestOpenAI(t, cfg)
			texts := inputs(50, 10)
			got, err := o.Embed(context.Background(), texts)
			if err != nil {
				t.Fatal(err)
			}
			checkVectors(t, texts, got, 4)
			if s.maxInFlight != conc {
				t.Errorf("at most %d requests in flight, want %d", s.maxInFlight, conc)
			}
		})
	}
}

// TestOpenAIRequest checks what goes on the wire: model, dimensions, encoding, auth.
func TestOpenAIRequest(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		cfg        OpenAIConfig
		serverDim  int
		wantModel  string
		wantDims   int // 0: the field is absent
		wantAuth   string
		wantID     string
		wantDimLen int
	}{
		{"key and dimensions", OpenAIConfig{APIKey: "sk-test-123", Model: "text-embedding-3-small", Dimensions: 256},
			1536, "text-embedding-3-small", 256, "Bearer sk-test-123", "openai:text-embedding-3-small:256", 256},
		{"default model, native size", OpenAIConfig{APIKey: "sk-test-123"},
			1536, "text-embedding-3-small", 0, "Bearer sk-test-123", "openai:text-embedding-3-small:1536", 1536},
		{"no key: no Authorization header", OpenAIConfig{Model: "nomic-embed-text"},
			768, "nomic-embed-text", 0, "", "openai:nomic-embed-text:native", 768},
		{"ada-002 never gets dimensions", OpenAIConfig{Model: "text-embedding-ada-002", Dimensions: 1536, APIKey: "k-1234"},
			1536, "text-embedding-ada-002", 0, "Bearer k-1234", "openai:text-embedding-ada-002:1536", 1536},
		{"dimensions for an unknown model", OpenAIConfig{Model: "mxbai-embed-large", Dimensions: 512},
			1024, "mxbai-embed-large", 512, "", "openai:mxbai-embed-large:512", 512},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newEmbServer(t, tc.serverDim)
			cfg := tc.cfg
			cfg.BaseURL, cfg.HTTPClient = s.srv.URL+"/v1/", s.srv.Client() // a trailing slash is fine
			o := newTestOpenAI(t, cfg)
			if o.ID() != tc.wantID {
				t.Errorf("ID = %q, want %q", o.ID(), tc.wantID)
			}
			got, err := o.Embed(context.Background(), []string{"hello"})
			if err != nil {
				t.Fatal(err)
			}
			if len(got[0]) != tc.wantDimLen || o.Dim() != tc.wantDimLen {
				t.Errorf("vector length %d, Dim %d; want %d", len(got[0]), o.Dim(), tc.wantDimLen)
			}
			r := s.requests()[0]
			if r.req.Model != tc.wantModel {
				t.Errorf("model %q, want %q", r.req.Model, tc.wantModel)
			}
			switch {
			case tc.wantDims == 0 && r.req.Dimensions != nil:
				t.Errorf("dimensions = %d sent, want none", *r.req.Dimensions)
			case tc.wantDims != 0 && (r.req.Dimensions == nil || *r.req.Dimensions != tc.wantDims):
				t.Errorf("dimensions = %v, want %d", r.req.Dimensions, tc.wantDims)
			}
			if a := r.header.Get("Authorization"); a != tc.wantAuth {
				t.Errorf("Authorization = %q, want %q", a, tc.wantAuth)
			}
			if r.req.EncodingFormat != "float" {
				t.Errorf("encoding_format = %q, want float", r.req.EncodingFormat)
			}
			if r.req.User != nil {
				t.Errorf("user = %q sent, want none", *r.req.User)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
}

// TestOpenAIErrors covers the retry policy and the errors it ends in: what is retried, how
// long it waits, and that every message is clean of the key.
func TestOpenAIErrors(t *testing.T) {
	t.Parallel()
	const key = "sk-secret-key-0123456789"
	type step func(w http.ResponseWriter, r *http.Request)
	ok := step(nil) // answer normally
	status := func(code int, hdr ...string) step {
		return func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i+1 < len(hdr); i += 2 {
				w.Header().Set(hdr[i], hdr[i+1])
			}
			writeAPIError(w, code, "server_error", nil, fmt.Sprintf("status %d; your key is %s", code, key))
		}
	}
	cases := []struct {
		name       string
		steps      []step // the answers to requests 0, 1, ...; the last repeats
		maxRetries int
		timeout    time.Duration
		realBack   bool // keep the real backoff (500 ms base) instead of the test's 1 ms
		wantErr    error
		wantMsg    string
		wantReqs   int
		minGap     time.Duration // between the first two requests
		maxGap     time.Duration
	}{
		{name: "429 with Retry-After: 1, then success",
			steps:    []step{status(429, "Retry-After", "1"), ok},
			wantReqs: 2, minGap: 950 * time.Millisecond, maxGap: 2 * time.Second},
		{name: "429 with retry-after-ms",
			steps:    []step{status(429, "Retry-After-Ms", "300"), ok},
			wantReqs: 2, minGap: 290 * time.Millisecond, maxGap: time.Second},
		{name: "503 with Retry-After as an HTTP date",
			steps: []step{func(w http.ResponseWriter, r *http.Request) {
				// Dates have whole seconds: two seconds from now is a wait of 1 to 2 s.
				w.Header().Set("Retry-After", time.Now().Add(2*time.Second).UTC().Format(http.TimeFormat))
				writeAPIError(w, 503, "server_error", nil, "overloaded")
			}, ok},
			wantReqs: 2, minGap: 900 * time.Millisecond, maxGap: 3 * time.Second},
		{name: "429 with x-ratelimit-reset-requests",
			steps:    []step{status(429, "X-Ratelimit-Remaining-Requests", "0", "X-Ratelimit-Reset-Requests", "400ms", "X-Ratelimit-Remaining-Tokens", "5000", "X-Ratelimit-Reset-Tokens", "6m0s"), ok},
			realBack: true, wantReqs: 2, minGap: 390 * time.Millisecond, maxGap: 1500 * time.Millisecond},
		{name: "500 twice, then success",
			steps:    []step{status(500), status(500), ok},
			wantReqs: 3},
		{name: "502, 504 and 408 are retried",
			steps:    []step{status(502), status(504), status(408), ok},
			wantReqs: 4},
		{name: "persistent 503 gives up after MaxRetries",
			steps: []step{status(503)}, maxRetries: 3,
			wantErr: ErrUnavailable, wantMsg: "gave up after 4 attempts", wantReqs: 4},
		{name: "MaxRetries < 0 never retries",
			steps: []step{status(500)}, maxRetries: -1,
			wantErr: ErrUnavailable, wantReqs: 1},
		{name: "Retry-After beyond a minute fails at once",
			steps:   []step{status(429, "Retry-After", "600")},
			wantErr: ErrUnavailable, wantMsg: "asks to wait 10m0s", wantReqs: 1},
		{name: "401 is not retried",
			steps:   []step{status(401)},
			wantErr: ErrInvalidAPIKey, wantMsg: "rejected the API key (HTTP 401)", wantReqs: 1},
		{name: "403 is not retried",
			steps:   []step{status(403)},
			wantErr: ErrPermissionDenied, wantMsg: "HTTP 403", wantReqs: 1},
		{name: "404 from the API: model not found",
			steps: []step{func(w http.ResponseWriter, r *http.Request) {
				writeAPIError(w, 404, "invalid_request_error", "model_not_found", "The model `test-model` does not exist")
			}},
			wantErr: ErrModelNotFound, wantMsg: `embedding model "test-model" not found`, wantReqs: 1},
		{name: "404 in vLLM's shape: model not found",
			steps: []step{func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(404)
				io.WriteString(w, `{"object":"error","message":"The model `+"`test-model`"+` does not exist.","type":"NotFoundError","param":null,"code":404}`)
			}},
			wantErr: ErrModelNotFound, wantMsg: "does not exist", wantReqs: 1},
		{name: "404 in FastAPI's shape: wrong URL",
			steps: []step{func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(404)
				io.WriteString(w, `{"detail":"Not Found"}`)
			}},
			wantErr: ErrEndpointNotFound, wantMsg: "(HTTP 404: Not Found); the base URL usually ends in /v1", wantReqs: 1},
		{name: "404 without an API error: wrong URL",
			steps:   []step{func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }},
			wantErr: ErrEndpointNotFound, wantMsg: "404 page not found", wantReqs: 1},
		{name: "400 is not retried and says why",
			steps: []step{func(w http.ResponseWriter, r *http.Request) {
				writeAPIError(w, 400, "invalid_request_error", nil, "This model's maximum context length is 8192 tokens")
			}},
			wantErr: ErrRejected, wantMsg: "maximum context length is 8192 tokens", wantReqs: 1},
		{name: "429 insufficient_quota is not retried",
			steps: []step{func(w http.ResponseWriter, r *http.Request) {
				writeAPIError(w, 429, "insufficient_quota", "insufficient_quota", "You exceeded your current quota")
			}},
			wantErr: ErrQuotaExceeded, wantReqs: 1},
		{name: "200 with a web page is not retried",
			steps: []step{func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				io.WriteString(w, "<!doctype html><title>Welcome</title>")
			}},
			wantErr: ErrBadResponse, wantMsg: "not an embeddings response", wantReqs: 1},
		{name: "dropped connection is retried",
			steps: []step{func(w http.ResponseWriter, r *http.Request) {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close()
				}
			}, ok},
			wantReqs: 2},
		{name: "response cut off mid-body is retried",
			steps: []step{func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", "1000")
				io.WriteString(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,`)
			}, ok},
			wantReqs: 2},
		{name: "a request over Timeout is retried",
			steps: []step{func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
			}, ok},
			timeout: 100 * time.Millisecond, wantReqs: 2},
		{name: "timeouts until MaxRetries",
			steps: []step{func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
				}
			}},
			timeout: 50 * time.Millisecond, maxRetries: 1,
			wantErr: ErrUnavailable, wantMsg: "no response within 50ms", wantReqs: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newEmbServer(t, 8)
			s.script = func(n int, req embRequest, w http.ResponseWriter, r *http.Request) bool {
				st := tc.steps[min(n, len(tc.steps)-1)]
				if st == nil {
					return false
				}
				st(w, r)
				return true
			}
			cfg := s.config()
			cfg.APIKey, cfg.Dimensions, cfg.MaxRetries, cfg.Timeout = key, 8, tc.maxRetries, tc.timeout
			o := newTestOpenAI(t, cfg)
			if tc.realBack {
				o.backoff = defaultBackoff
			}
			texts := []string{"one", "two"}
			got, err := o.Embed(context.Background(), texts)
			reqs := s.requests()
			if len(reqs) != tc.wantReqs {
				t.Errorf("%d requests, want %d", len(reqs), tc.wantReqs)
			}
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				checkVectors(t, texts, got, 8)
			} else {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantMsg) {
					t.Errorf("err = %q, want it to contain %q", err, tc.wantMsg)
				}
				if strings.Contains(err.Error(), key) {
					t.Errorf("the error shows the API key: %q", err)
				}
				if !strings.Contains(err.Error(), "test-model at "+s.srv.URL+"/v1/embeddings") {
					t.Errorf("the error does not say which model and endpoint: %q", err)
				}
			}
			if tc.minGap > 0 && len(reqs) >= 2 {
				gap := reqs[1].at.Sub(reqs[0].at)
				if gap < tc.minGap || gap > tc.maxGap {
					t.Errorf("retried after %v, want %v to %v", gap, tc.minGap, tc.maxGap)
				}
			}
		})
	}
}

// TestOpenAIValidation feeds back responses that are well-formed JSON but wrong.
func TestOpenAIValidation(t *testing.T) {
	t.Parallel()
	respond := func(items ...embItem) func(int, embRequest, http.ResponseWriter, *http.Request) bool {
		return func(_ int, req embRequest, w http.ResponseWriter, _ *http.Request) bool {
			res := embResponse{Object: "list", Model: req.Model, Data: items}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(res)
			return true
		}
	}
	vec := func(dim int) []float32 { return fakeVec("x", dim) }
	raw := func(body string) func(int, embRequest, http.ResponseWriter, *http.Request) bool {
		return func(_ int, _ embRequest, w http.ResponseWriter, _ *http.Request) bool {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, body)
			return true
		}
	}
	cases := []struct {
		name    string
		dims    int // configured; 0 = learn
		script  func(int, embRequest, http.ResponseWriter, *http.Request) bool
		wantMsg string
	}{
		{"wrong dimension", 8, respond(embItem{Index: 0, Embedding: vec(8)}, embItem{Index: 1, Embedding: vec(7)}),
			"7-dimensional embedding, expected 8; the server may not support the dimensions setting"},
		{"too few embeddings", 8, respond(embItem{Index: 0, Embedding: vec(8)}), "1 embeddings for 2 inputs"},
		{"repeated index", 8, respond(embItem{Index: 0, Embedding: vec(8)}, embItem{Index: 0, Embedding: vec(8)}), "index 0"},
		{"index out of range", 8, respond(embItem{Index: 0, Embedding: vec(8)}, embItem{Index: 2, Embedding: vec(8)}), "index 2"},
		{"all zeros", 8, respond(embItem{Index: 0, Embedding: vec(8)}, embItem{Index: 1, Embedding: make([]float32, 8)}), "all zeros"},
		{"inconsistent sizes while learning", 0, respond(embItem{Index: 0, Embedding: vec(8)}, embItem{Index: 1, Embedding: vec(9)}),
			"9-dimensional embedding, expected 8"},
		{"empty vector while learning", 0, respond(embItem{Index: 0, Embedding: []float32{}}, embItem{Index: 1, Embedding: vec(8)}),
			"0 dimensions"},
		// JSON has no NaN; a number beyond float32 is how infinity arrives on the wire.
		{"value beyond float32", 2, raw(`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[1e39,0]},` +
			`{"object":"embedding","index":1,"embedding":[1,0]}],"model":"m"}`), "not an embeddings response"},
		{"not a list", 2, raw(`{"object":"list","data":{"index":0}}`), "not an embeddings response"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newEmbServer(t, 8)
			s.script = tc.script
			cfg := s.config()
			cfg.Dimensions = tc.dims
			o := newTestOpenAI(t, cfg)
			_, err := o.Embed(context.Background(), []string{"a", "b"})
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("err = %v, want ErrBadResponse", err)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("err = %q, want it to contain %q", err, tc.wantMsg)
			}
			if n := len(s.requests()); n != 1 {
				t.Errorf("%d requests; a bad response must not be retried", n)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	t.Parallel()
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	cases := []struct {
		in   []float32
		ok   bool
		want []float32
	}{
		{[]float32{3, 4}, true, []float32{0.6, 0.8}},
		{[]float32{0, 0}, false, []float32{0, 0}},
		{[]float32{1, nan}, false, nil},
		{[]float32{inf, 1}, false, nil},
		{[]float32{1e30, 1e30}, true, []float32{0.70710677, 0.70710677}},
	}
	for _, tc := range cases {
		v := append([]float32(nil), tc.in...)
		if ok := normalize(v); ok != tc.ok {
			t.Errorf("normalize(%v) = %v, want %v", tc.in, ok, tc.ok)
		}
		if tc.want != nil && fmt.Sprint(v) != fmt.Sprint(tc.want) {
			t.Errorf("normalize(%v) → %v, want %v", tc.in, v, tc.want)
		}
	}
}

func TestOpenAIBase64Response(t *testing.T) {
	t.Parallel()
	// Some servers answer base64 whatever was asked; go-openai then fails to decode a
	// string into []float32, and that must be a clean ErrBadResponse, not a panic.
	s := newEmbServer(t, 4)
	s.script = func(_ int, req embRequest, w http.ResponseWriter, _ *http.Request) bool {
		req.EncodingFormat = "base64"
		writeEmbeddings(w, req, 4)
		return true
	}
	cfg := s.config()
	cfg.Dimensions = 4
	_, err := newTestOpenAI(t, cfg).Embed(context.Background(), []string{"a"})
	if !errors.Is(err, ErrBadResponse) {
		t.Fatalf("err = %v, want ErrBadResponse", err)
	}
}

func TestOpenAIResponseTooLarge(t *testing.T) {
	t.Parallel()
	s := newEmbServer(t, 4)
	s.script = func(_ int, _ embRequest, w http.ResponseWriter, _ *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[`)
		pad := strings.Repeat(" ", 64<<10)
		for range 64 { // 4 MB of whitespace, past the ~1.2 MB limit for one input
			if _, err := io.WriteString(w, pad); err != nil {
				return true
			}
		}
		return true
	}
	cfg := s.config()
	cfg.Dimensions = 4
	_, err := newTestOpenAI(t, cfg).Embed(context.Background(), []string{"a"})
	if !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v, want ErrBadResponse (too large)", err)
	}
}

// TestOpenAICancel: a cancelled context ends Embed at once, whether it is waiting out a
// backoff or waiting for a response.
func TestOpenAICancel(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		script func(int, embRequest, http.ResponseWriter, *http.Request) bool
	}{
		{"during backoff", func(_ int, _ embRequest, w http.ResponseWriter, _ *http.Request) bool {
			w.Header().Set("Retry-After", "30")
			writeAPIError(w, 503, "server_error", nil, "overloaded")
			return true
		}},
		{"during a request", func(_ int, _ embRequest, _ http.ResponseWriter, r *http.Request) bool {
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return true
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newEmbServer(t, 4)
			s.script = tc.script
			cfg := s.config()
			cfg.Dimensions = 4
			o := newTestOpenAI(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := o.Embed(ctx, inputs(300, 10)) // several batches, all stopped
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("err = %v, want context.DeadlineExceeded", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("Embed returned %v after the deadline", d-200*time.Millisecond)
			}
		})
	}
	t.Run("before the call", func(t *testing.T) {
		t.Parallel()
		s := newEmbServer(t, 4)
		o := newTestOpenAI(t, s.config())
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := o.Embed(ctx, []string{"a"}); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
		if n := len(s.requests()); n != 0 {
			t.Errorf("%d requests sent with a cancelled context", n)
		}
	})
}

// TestOpenAIFirstErrorWins: when one batch fails for good, Embed returns its error (not
// the cancellations it caused in the other batches) and the other batches stop.
func TestOpenAIFirstErrorWins(t *testing.T) {
	t.Parallel()
	s := newEmbServer(t, 4)
	s.script = func(n int, _ embRequest, w http.ResponseWriter, r *http.Request) bool {
		if n == 0 {
			writeAPIError(w, 400, "invalid_request_error", nil, "input too long")
			return true
		}
		select { // the other batch hangs until cancelled
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		return true
	}
	cfg := s.config()
	cfg.Dimensions, cfg.BatchSize = 4, 1
	start := time.Now()
	_, err := newTestOpenAI(t, cfg).Embed(context.Background(), []string{"a", "b"})
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("err = %v, want ErrRejected", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v: the hanging batch was not cancelled", d)
	}
}

// TestOpenAIRetryAfterShared: a Retry-After holds back this embedder's next requests too,
// not only the retry of the request that got it.
func TestOpenAIRetryAfterShared(t *testing.T) {
	t.Parallel()
	s := newEmbServer(t, 4)
	s.script = func(n int, _ embRequest, w http.ResponseWriter, _ *http.Request) bool {
		if n == 0 {
			w.Header().Set("Retry-After", "1")
			writeAPIError(w, 429, "rate_limit_exceeded", "rate_limit_exceeded", "Rate limit reached")
			return true
		}
		return false
	}
	cfg := s.config()
	cfg.Dimensions, cfg.MaxRetries = 4, -1
	o := newTestOpenAI(t, cfg)
	if _, err := o.Embed(context.Background(), []string{"a"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("first call: err = %v, want ErrUnavailable", err)
	}
	if _, err := o.Embed(context.Background(), []string{"a"}); err != nil {
		t.Fatalf("second call: %v", err)
	}
	reqs := s.requests()
	if gap := reqs[1].at.Sub(reqs[0].at); gap < 900*time.Millisecond {
		t.Errorf("the next call went out %v after a Retry-After: 1", gap)
	}
}

// TestOpenAIDim: the size is known from the configuration or the model, or learned.
func TestOpenAIDim(t *testing.T) {
	t.Parallel()
	t.Run("learned by Probe", func(t *testing.T) {
		t.Parallel()
		s := newEmbServer(t, 768)
		cfg := s.config()
		cfg.Model = "nomic-embed-text"
		o := newTestOpenAI(t, cfg)
		if o.Dim() != 0 || o.ID() != "openai:nomic-embed-text:native" {
			t.Fatalf("before probing: Dim %d, ID %q", o.Dim(), o.ID())
		}
		for range 2 {
			d, err := o.Probe(context.Background())
			if err != nil || d != 768 {
				t.Fatalf("Probe = %d, %v; want 768", d, err)
			}
		}
		if n := len(s.requests()); n != 1 {
			t.Errorf("%d requests; the second Probe should not ask again", n)
		}
		if o.Dim() != 768 || o.ID() != "openai:nomic-embed-text:native" {
			t.Errorf("after probing: Dim %d, ID %q (the ID must not change)", o.Dim(), o.ID())
		}
		// Later responses must keep to the learned size.
		s.mu.Lock()
		s.dim = 512
		s.mu.Unlock()
		if _, err := o.Embed(context.Background(), []string{"x"}); !errors.Is(err, ErrBadResponse) {
			t.Errorf("a 512-dimensional answer after learning 768: err = %v", err)
		}
	})
	t.Run("learned by Embed", func(t *testing.T) {
		t.Parallel()
		s := newEmbServer(t, 384)
		cfg := s.config()
		cfg.BatchSize = 3
		o := newTestOpenAI(t, cfg)
		texts := inputs(10, 5)
		got, err := o.Embed(context.Background(), texts)
		if err != nil {
			t.Fatal(err)
		}
		checkVectors(t, texts, got, 384)
		if o.Dim() != 384 {
			t.Errorf("Dim = %d, want 384", o.Dim())
		}
	})
	t.Run("known without asking", func(t *testing.T) {
		t.Parallel()
		s := newEmbServer(t, 3072)
		cfg := s.config()
		cfg.Model = "text-embedding-3-large"
		o := newTestOpenAI(t, cfg)
		d, err := o.Probe(context.Background())
		if err != nil || d != 3072 || len(s.requests()) != 0 {
			t.Errorf("Probe = %d, %v after %d requests; want 3072 without a request", d, err, len(s.requests()))
		}
	})
	t.Run("probe errors", func(t *testing.T) {
		t.Parallel()
		s := newEmbServer(t, 8)
		s.script = func(_ int, _ embRequest, w http.ResponseWriter, _ *http.Request) bool {
			writeAPIError(w, 401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided")
			return true
		}
		cfg := s.config()
		cfg.Model, cfg.APIKey = "some-model", "wrong-key"
		if _, err := newTestOpenAI(t, cfg).Probe(context.Background()); !errors.Is(err, ErrInvalidAPIKey) {
			t.Errorf("err = %v, want ErrInvalidAPIKey", err)
		}
	})
}

func TestNewOpenAIConfig(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		cfg     OpenAIConfig
		wantErr string
		wantID  string
		wantDim int
	}{
		{"defaults", OpenAIConfig{}, "", "openai:text-embedding-3-small:1536", 1536},
		{"3-large shortened", OpenAIConfig{Model: "text-embedding-3-large", Dimensions: 1024}, "", "openai:text-embedding-3-large:1024", 1024},
		{"ada at its size", OpenAIConfig{Model: "text-embedding-ada-002", Dimensions: 1536}, "", "openai:text-embedding-ada-002:1536", 1536},
		{"unknown model", OpenAIConfig{Model: " bge-m3 "}, "", "openai:bge-m3:native", 0},
		{"bad scheme", OpenAIConfig{BaseURL: "ftp://example.com"}, "base URL", "", 0},
		{"no host", OpenAIConfig{BaseURL: "http://"}, "base URL", "", 0},
		{"not a URL", OpenAIConfig{BaseURL: "::"}, "base URL", "", 0},
		{"negative dimensions", OpenAIConfig{Dimensions: -1}, "dimensions", "", 0},
		{"too many dimensions", OpenAIConfig{Dimensions: 5000, Model: "x"}, "dimensions", "", 0},
		{"beyond the model's size", OpenAIConfig{Dimensions: 2048}, "at most 1536", "", 0},
		{"ada resized", OpenAIConfig{Model: "text-embedding-ada-002", Dimensions: 512}, "only 1536", "", 0},
		{"batch too big", OpenAIConfig{BatchSize: 5000}, "batch size", "", 0},
		{"negative batch", OpenAIConfig{BatchSize: -1}, "batch size", "", 0},
		{"negative timeout", OpenAIConfig{Timeout: -time.Second}, "timeout", "", 0},
		{"negative concurrency", OpenAIConfig{Concurrency: -1}, "concurrency", "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o, err := NewOpenAI(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.ID() != tc.wantID || o.Dim() != tc.wantDim {
				t.Errorf("ID, Dim = %q, %d; want %q, %d", o.ID(), o.Dim(), tc.wantID, tc.wantDim)
			}
		})
	}
}

// TestOpenAIDefaultClient: with no HTTPClient, http.DefaultClient is used.
func TestOpenAIDefaultClient(t *testing.T) {
	t.Parallel()
	s := newEmbServer(t, 4)
	t.Cleanup(http.DefaultClient.CloseIdleConnections) // registered last, so runs before s closes
	o, err := NewOpenAI(OpenAIConfig{BaseURL: s.srv.URL + "/v1", Model: "m", Dimensions: 4})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Embed(context.Background(), []string{"a"}); err != nil {
		t.Fatal(err)
	}
}

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	b := defaultBackoff
	for attempt, ceil := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 20 * time.Second, 20 * time.Second} {
		var maxSeen time.Duration
		for range 200 {
			d := b.delay(attempt)
			if d < 0 || d >= ceil {
				t.Fatalf("attempt %d: delay %v outside [0, %v)", attempt, d, ceil)
			}
			maxSeen = max(maxSeen, d)
		}
		if maxSeen < ceil/2 { // full jitter spreads over the whole range
			t.Errorf("attempt %d: 200 delays all below %v", attempt, maxSeen)
		}
	}
	if d := b.delay(100); d < 0 || d >= b.cap { // no overflow
		t.Errorf("attempt 100: %v", d)
	}
}

func TestRetryHint(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		status int
		hdr    map[string]string
		want   time.Duration
		auth   bool
	}{
		{"none", 429, nil, 0, false},
		{"Retry-After seconds", 429, map[string]string{"Retry-After": "3"}, 3 * time.Second, true},
		{"Retry-After fraction", 503, map[string]string{"Retry-After": "0.5"}, 500 * time.Millisecond, true},
		{"retry-after-ms wins", 429, map[string]string{"Retry-After-Ms": "250", "Retry-After": "3"}, 250 * time.Millisecond, true},
		{"Retry-After garbage", 429, map[string]string{"Retry-After": "soon"}, 0, false},
		{"reset requests exhausted", 429, map[string]string{"X-Ratelimit-Remaining-Requests": "0", "X-Ratelimit-Reset-Requests": "1.5s",
			"X-Ratelimit-Remaining-Tokens": "10", "X-Ratelimit-Reset-Tokens": "9s"}, 1500 * time.Millisecond, false},
		{"reset tokens exhausted", 429, map[string]string{"X-Ratelimit-Remaining-Requests": "3", "X-Ratelimit-Reset-Requests": "1s",
			"X-Ratelimit-Remaining-Tokens": "0", "X-Ratelimit-Reset-Tokens": "2s"}, 2 * time.Second, false},
		{"reset without remaining: the longer", 429, map[string]string{"X-Ratelimit-Reset-Requests": "1s", "X-Ratelimit-Reset-Tokens": "2s"}, 2 * time.Second, false},
		{"reset capped", 429, map[string]string{"X-Ratelimit-Reset-Tokens": "6m0s"}, 20 * time.Second, false},
		{"reset in plain seconds", 429, map[string]string{"X-Ratelimit-Reset-Requests": "4"}, 4 * time.Second, false},
		{"reset headers ignored on 503", 503, map[string]string{"X-Ratelimit-Reset-Requests": "4"}, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			for k, v := range tc.hdr {
				h.Set(k, v)
			}
			got, auth := retryHint(h, tc.status, defaultBackoff.cap)
			if got != tc.want || auth != tc.auth {
				t.Errorf("retryHint = %v, %v; want %v, %v", got, auth, tc.want, tc.auth)
			}
		})
	}
	t.Run("HTTP date", func(t *testing.T) {
		t.Parallel()
		h := http.Header{"Retry-After": {time.Now().Add(10 * time.Second).UTC().Format(http.TimeFormat)}}
		got, auth := retryHint(h, 429, defaultBackoff.cap)
		if got < 8*time.Second || got > 10*time.Second || !auth {
			t.Errorf("retryHint = %v, %v; want about 9s, true", got, auth)
		}
	})
}
