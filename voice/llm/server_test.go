package llm

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// chatReply scripts one answer of the fake OpenAI-compatible server.
type chatReply struct {
	status     int               // non-zero and not 200: answer with errBody
	header     map[string]string // extra response headers
	errBody    string
	delay      time.Duration // before the response headers
	firstDelay time.Duration // after the headers, before the first event
	events     []string      // chunk JSON objects, each sent as one SSE event
	gap        time.Duration // between events
	noDone     bool          // do not send data: [DONE]
	hangup     bool          // after the events, drop the connection mid-stream
	hang       bool          // after the events, stay silent until the client leaves
}

// chatServer is a scripted /v1/chat/completions endpoint. Request i gets replies[i]; the
// last reply repeats.
type chatServer struct {
	*httptest.Server
	mu      sync.Mutex
	replies []chatReply
	bodies  []map[string]any
	headers []http.Header
	stop    chan struct{}
}

func newChatServer(t *testing.T, replies ...chatReply) *chatServer {
	t.Helper()
	cs := &chatServer{replies: replies, stop: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", cs.handle)
	cs.Server = httptest.NewServer(mux)
	t.Cleanup(func() {
		close(cs.stop)
		cs.Server.Close()
	})
	return cs
}

func (cs *chatServer) requests() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.bodies)
}

func (cs *chatServer) header(i int) http.Header {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.headers[i]
}

func (cs *chatServer) body(i int) map[string]any {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.bodies[i]
}

func (cs *chatServer) wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
	case <-cs.stop:
	}
	return false
}

func (cs *chatServer) handle(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, `{"error":{"message":"bad json","type":"invalid_request_error"}}`, http.StatusBadRequest)
		return
	}
	cs.mu.Lock()
	n := len(cs.bodies)
	cs.bodies = append(cs.bodies, body)
	cs.headers = append(cs.headers, r.Header.Clone())
	reply := cs.replies[min(n, len(cs.replies)-1)]
	cs.mu.Unlock()

	if !cs.wait(r, reply.delay) {
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
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl := w.(http.Flusher)
	fl.Flush()
	if !cs.wait(r, reply.firstDelay) {
		return
	}
	for i, ev := range reply.events {
		if i > 0 && !cs.wait(r, reply.gap) {
			return
		}
		fmt.Fprintf(w, "data: %s\n\n", ev)
		fl.Flush()
	}
	switch {
	case reply.hangup:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	case reply.hang:
		cs.wait(r, time.Hour)
		return
	}
	if !reply.noDone {
		fmt.Fprint(w, "data: [DONE]\n\n")
		fl.Flush()
	}
}

// chunk builds a chat.completion.chunk as OpenAI sends it; delta is the JSON of the
// delta object and finish the finish_reason ("" for null).
func chunk(delta, finish string) string {
	fr := "null"
	if finish != "" {
		fr = `"` + finish + `"`
	}
	return `{"id":"chatcmpl-9x","object":"chat.completion.chunk","created":1717000000,` +
		`"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0aa8d3e20b",` +
		`"choices":[{"index":0,"delta":` + delta + `,"logprobs":null,"finish_reason":` + fr + `}]}`
}

// textChunks is a plain answer streamed word by word, as OpenAI streams it: a role
// delta, content deltas, a finish delta and a usage chunk with no choices.
func textChunks(words ...string) []string {
	out := []string{chunk(`{"role":"assistant","content":"","refusal":null}`, "")}
	for _, w := range words {
		b, _ := json.Marshal(w)
		out = append(out, chunk(`{"content":`+string(b)+`}`, ""))
	}
	out = append(out, chunk(`{}`, "stop"),
		`{"id":"chatcmpl-9x","object":"chat.completion.chunk","created":1717000000,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}`)
	return out
}

func errorBody(status int, typ, msg string) string {
	return fmt.Sprintf(`{"error":{"message":%q,"type":%q,"param":null,"code":"%d"}}`, msg, typ, status)
}

func newTestOpenAI(t *testing.T, srv *chatServer, mod func(*OpenAIConfig)) *OpenAI {
	t.Helper()
	cfg := OpenAIConfig{
		BaseURL:           srv.URL + "/v1",
		APIKey:            "sk-test",
		HTTPClient:        srv.Client(),
		FirstTokenTimeout: 2 * time.Second,
		StallTimeout:      2 * time.Second,
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

func userRequest(text string) Request {
	return Request{Messages: []Message{{Role: System, Content: "Be brief."}, {Role: User, Content: text}}}
}

// collect reads a stream to the end.
func collect(t *testing.T, s Stream) (text string, last Chunk, err error) {
	t.Helper()
	var b strings.Builder
	for {
		c, err := s.Recv()
		if err != nil {
			return b.String(), last, err
		}
		b.WriteString(c.Text)
		last = c
	}
}
