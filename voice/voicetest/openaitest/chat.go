package openaitest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Reply scripts one chat completion.
type Reply struct {
	// Text is streamed word by word (each piece keeps its trailing space), as a model
	// writes it.
	Text string
	// ToolCalls follow the text, each opened by a chunk with its index, id and name and
	// continued by its arguments in three pieces, as OpenAI streams them.
	ToolCalls []ToolCall
	// Status, when non-zero, fails this request with that HTTP status and an OpenAI
	// error body instead (e.g. 503 once, then a reply: the adapter retries).
	Status int
	// TTFT and TokenGap override the server's LLMTTFT and LLMTokenGap for this reply
	// when non-zero.
	TTFT, TokenGap time.Duration
	// SlowFrom and SlowGap slow the stream down part-way, as a model that stalls: the
	// chunks from index SlowFrom on (0: none; text words first, then tool-call pieces)
	// follow SlowGap apart.
	SlowFrom int
	SlowGap  time.Duration
}

// ToolCall is a function call in a Reply, or one an assistant message made in a request.
type ToolCall struct {
	// ID names the call; the tool message answering it carries it back. Empty in a
	// Reply: "call_<request>_<index>".
	ID   string
	Name string
	// Arguments is the JSON text of the arguments. Empty in a Reply: "{}".
	Arguments string
}

// ChatRequest is a chat completion request as the server decoded it.
type ChatRequest struct {
	Model    string
	Messages []Message
	Tools    []Tool
	// Temperature is nil when the request sent none.
	Temperature *float64
	// MaxTokens is max_tokens or max_completion_tokens, whichever was sent.
	MaxTokens int
	Stream    bool
	// ResponseFormat is the response_format object as sent (e.g. {"type":
	// "json_schema", "json_schema": {...}}), or nil when the request sent none. The
	// server records it but answers the scripted reply whatever it asks for, as many
	// OpenAI-compatible servers do.
	ResponseFormat json.RawMessage
}

// Message is one message of a ChatRequest.
type Message struct {
	Role string
	// Content is the text; for content sent as an array of parts, the text parts joined.
	Content    string
	Name       string
	ToolCallID string
	ToolCalls  []ToolCall
}

// Tool is a function offered in a ChatRequest.
type Tool struct {
	Name        string
	Description string
	Parameters  json.RawMessage
}

// LastUserText is the content of the request's last user message, or "".
func (r ChatRequest) LastUserText() string {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if r.Messages[i].Role == "user" {
			return r.Messages[i].Content
		}
	}
	return ""
}

// ToolNames lists the names of the tools the request offers.
func (r ChatRequest) ToolNames() []string {
	var out []string
	for _, t := range r.Tools {
		out = append(out, t.Name)
	}
	return out
}

// Echo is a Config.Chat that repeats the caller's last words: "You said: <last user
// text>." (its own final punctuation dropped), or "You said nothing." without any.
func Echo(req ChatRequest) Reply {
	text := strings.TrimRight(strings.TrimSpace(req.LastUserText()), ".!?… ")
	if text == "" {
		return Reply{Text: "You said nothing."}
	}
	return Reply{Text: "You said: " + text + "."}
}

// ChatRecord is what the server saw of one chat request and when.
type ChatRecord struct {
	// Request is the decoded request (without Messages and Tools under
	// Config.DropMessages).
	Request ChatRequest
	// Reply is what was scripted for it.
	Reply Reply
	// Status is the HTTP status answered: 200, a scripted failure's, or 400 for a
	// request the server could not decode.
	Status int
	// Received is when the request arrived, FirstToken when its first text or tool-call
	// chunk went out (zero if none did), Done when the handler finished.
	Received, FirstToken, Done time.Time
	// Canceled says the answer did not finish: the client went away or Close ended it.
	Canceled bool
}

// TTFT is the time from Received to FirstToken, or 0 if no token went out.
func (r ChatRecord) TTFT() time.Duration {
	if r.FirstToken.IsZero() {
		return 0
	}
	return r.FirstToken.Sub(r.Received)
}

// wireChat is the request body as OpenAI defines it.
type wireChat struct {
	Model    string `json:"model"`
	Messages []struct {
		Role       string          `json:"role"`
		Content    json.RawMessage `json:"content"`
		Name       string          `json:"name"`
		ToolCallID string          `json:"tool_call_id"`
		ToolCalls  []struct {
			ID       string `json:"id"`
			Function struct {
				Name      string `json:"name"`
				Arguments string `json:"arguments"`
			} `json:"function"`
		} `json:"tool_calls"`
	} `json:"messages"`
	Tools []struct {
		Function struct {
			Name        string          `json:"name"`
			Description string          `json:"description"`
			Parameters  json.RawMessage `json:"parameters"`
		} `json:"function"`
	} `json:"tools"`
	Stream        bool `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	Temperature         *float64        `json:"temperature"`
	MaxTokens           int             `json:"max_tokens"`
	MaxCompletionTokens int             `json:"max_completion_tokens"`
	ResponseFormat      json.RawMessage `json:"response_format"`
}

func (wc *wireChat) request() (ChatRequest, error) {
	req := ChatRequest{Model: wc.Model, Temperature: wc.Temperature, Stream: wc.Stream,
		MaxTokens: max(wc.MaxTokens, wc.MaxCompletionTokens)}
	if len(wc.ResponseFormat) > 0 && string(wc.ResponseFormat) != "null" {
		req.ResponseFormat = wc.ResponseFormat
	}
	for i, m := range wc.Messages {
		text, err := contentText(m.Content)
		if err != nil {
			return req, fmt.Errorf("messages[%d].content: %w", i, err)
		}
		msg := Message{Role: m.Role, Content: text, Name: m.Name, ToolCallID: m.ToolCallID}
		for _, tc := range m.ToolCalls {
			msg.ToolCalls = append(msg.ToolCalls, ToolCall{ID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
		}
		req.Messages = append(req.Messages, msg)
	}
	for _, t := range wc.Tools {
		req.Tools = append(req.Tools, Tool{Name: t.Function.Name, Description: t.Function.Description, Parameters: t.Function.Parameters})
	}
	return req, nil
}

// contentText reads a message's content: a string, null, or an array of parts of which
// the text ones count.
func contentText(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", fmt.Errorf("want a string or an array of parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String(), nil
}

// maxChatBody bounds a chat request; a long conversation with tools is tens of KB.
const maxChatBody = 16 << 20

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	received := time.Now()
	// Read the body to its end: only then does net/http watch the connection and cancel
	// r.Context() when the client goes away.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxChatBody))
	var wc wireChat
	if err == nil {
		err = json.Unmarshal(body, &wc)
	}
	var req ChatRequest
	if err == nil {
		req, err = wc.request()
	}
	if err == nil && len(req.Messages) == 0 {
		err = fmt.Errorf("messages: must not be empty")
	}
	if err != nil {
		s.update(func() {
			s.chats = append(s.chats, ChatRecord{Status: http.StatusBadRequest, Received: received, Done: time.Now()})
		})
		writeError(w, http.StatusBadRequest, "invalid_request_error", "openaitest: bad chat request: "+err.Error())
		return
	}

	// Pick the reply; a function is called outside the lock, as it may be slow.
	s.mu.Lock()
	fn := s.chat
	var reply Reply
	scripted := fn != nil || len(s.replies) > 0
	if fn == nil && scripted {
		reply = s.replies[min(s.chatNext, len(s.replies)-1)]
		s.chatNext++
	}
	s.mu.Unlock()
	if fn != nil {
		reply = fn(req)
	}
	status := http.StatusOK
	switch {
	case s.cfg.ChatStatus != 0:
		status = s.cfg.ChatStatus
	case reply.Status != 0:
		status = reply.Status
	case !scripted:
		status = http.StatusInternalServerError
	}
	rec := ChatRecord{Request: req, Reply: reply, Status: status, Received: received}
	if s.cfg.DropMessages {
		rec.Request.Messages, rec.Request.Tools = nil, nil
	}
	var i int // the record's index in s.chats
	s.update(func() {
		i = len(s.chats)
		s.chats = append(s.chats, rec)
	})
	canceled := status == http.StatusOK // until the answer has gone out whole
	recorded := false
	// finish records the end. The last write of a streamed answer is recorded just
	// before it goes out: a client that has read the whole answer then finds it
	// recorded.
	finish := func() {
		recorded = true
		s.update(func() {
			s.chats[i].Done = time.Now()
			s.chats[i].Canceled = canceled
		})
	}
	defer func() {
		if !recorded {
			finish()
		}
	}()
	switch {
	case status == http.StatusOK:
	case !scripted && s.cfg.ChatStatus == 0:
		writeError(w, status, "server_error", "openaitest: no chat reply scripted")
		return
	default:
		failure(w, status)
		return
	}

	ttft, gap := cmp.Or(reply.TTFT, s.cfg.LLMTTFT), cmp.Or(reply.TokenGap, s.cfg.LLMTokenGap)
	st := &chatStream{id: fmt.Sprintf("chatcmpl-openaitest-%d", i+1), model: req.Model, created: received.Unix()}
	if !wc.Stream {
		if !s.sleepUntil(r.Context(), received.Add(ttft)) {
			return
		}
		s.update(func() { s.chats[i].FirstToken = time.Now() })
		canceled = false
		finish()
		writeJSON(w, http.StatusOK, st.completion(reply, i, promptTokens(req)))
		return
	}

	// Headers go out at once, as streaming servers send them; the wait is for the
	// first token.
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	due := received.Add(ttft)
	for k, ev := range st.events(reply, i) {
		if k > 0 {
			g := gap
			if reply.SlowFrom > 0 && k >= reply.SlowFrom {
				g = reply.SlowGap
			}
			due = due.Add(g)
		}
		if !s.sleepUntil(r.Context(), due) {
			return
		}
		if k == 0 {
			// The role chunk carries no token; it goes out with the first one, which is
			// recorded first so that a client holding it finds it recorded.
			s.update(func() { s.chats[i].FirstToken = time.Now() })
			if writeEvent(w, st.role()) != nil {
				return
			}
		}
		if writeEvent(w, ev) != nil || rc.Flush() != nil {
			return
		}
	}
	if wc.StreamOptions != nil && wc.StreamOptions.IncludeUsage {
		if writeEvent(w, st.usage(reply, promptTokens(req))) != nil {
			return
		}
	}
	canceled = false
	finish()
	if writeEvent(w, []byte("[DONE]")) != nil || rc.Flush() != nil {
		canceled = true
		finish()
	}
}

func writeEvent(w io.Writer, data []byte) error {
	_, err := fmt.Fprintf(w, "data: %s\n\n", data)
	return err
}

// chatStream builds the chunks of one completion in OpenAI's streaming format.
type chatStream struct {
	id, model string
	created   int64
}

type wireDelta struct {
	Role      string          `json:"role,omitempty"`
	Content   *string         `json:"content,omitempty"`
	ToolCalls []wireToolDelta `json:"tool_calls,omitempty"`
}

type wireToolDelta struct {
	Index    int    `json:"index"`
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type wireChoice struct {
	Index        int       `json:"index"`
	Delta        wireDelta `json:"delta"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}

type wireChunk struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint *string      `json:"system_fingerprint"`
	Choices           []wireChoice `json:"choices"`
	Usage             *wireUsage   `json:"usage,omitempty"`
}

type wireUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func (c *chatStream) chunk(d wireDelta, finish string) []byte {
	ch := wireChoice{Delta: d}
	if finish != "" {
		ch.FinishReason = &finish
	}
	b, _ := json.Marshal(wireChunk{ID: c.id, Object: "chat.completion.chunk", Created: c.created,
		Model: c.model, Choices: []wireChoice{ch}})
	return b
}

// events is the stream of a reply after the role chunk and before [DONE]: a chunk per
// word, the tool calls, and the finish chunk. The first is sent at TTFT, each later one
// a token gap after the one before.
func (c *chatStream) events(reply Reply, req int) [][]byte {
	var out [][]byte
	for _, w := range words(reply.Text) {
		out = append(out, c.chunk(wireDelta{Content: &w}, ""))
	}
	for k, tc := range reply.ToolCalls {
		tc = toolCall(tc, req, k)
		open := wireToolDelta{Index: k, ID: tc.ID, Type: "function"}
		open.Function.Name = tc.Name
		out = append(out, c.chunk(wireDelta{ToolCalls: []wireToolDelta{open}}, ""))
		args := tc.Arguments
		third := max(1, (len(args)+2)/3)
		for len(args) > 0 {
			n := min(third, len(args))
			piece := wireToolDelta{Index: k}
			piece.Function.Arguments = args[:n]
			out = append(out, c.chunk(wireDelta{ToolCalls: []wireToolDelta{piece}}, ""))
			args = args[n:]
		}
	}
	return append(out, c.chunk(wireDelta{}, finishReason(reply)))
}

// role is the chunk that opens a stream: the assistant's role and empty content.
func (c *chatStream) role() []byte {
	empty := ""
	return c.chunk(wireDelta{Role: "assistant", Content: &empty}, "")
}

// words splits text as a model's tokens arrive: word by word, each with its trailing
// space.
func words(text string) []string {
	var out []string
	for _, w := range strings.SplitAfter(text, " ") {
		if w != "" {
			out = append(out, w)
		}
	}
	return out
}

func toolCall(tc ToolCall, req, k int) ToolCall {
	if tc.ID == "" {
		tc.ID = fmt.Sprintf("call_%d_%d", req+1, k)
	}
	if tc.Arguments == "" {
		tc.Arguments = "{}"
	}
	return tc
}

func finishReason(reply Reply) string {
	if len(reply.ToolCalls) > 0 {
		return "tool_calls"
	}
	return "stop"
}

// promptTokens approximates the prompt's token count by its words: the usage figures
// only need to be plausible.
func promptTokens(req ChatRequest) int {
	n := 0
	for _, m := range req.Messages {
		n += len(strings.Fields(m.Content)) + 4
	}
	return n
}

func completionTokens(reply Reply) int {
	n := len(strings.Fields(reply.Text))
	for _, tc := range reply.ToolCalls {
		n += len(strings.Fields(tc.Name+" "+tc.Arguments)) + 4
	}
	return n
}

// usage is the chunk that ends a stream asked for with stream_options.include_usage.
func (c *chatStream) usage(reply Reply, prompt int) []byte {
	u := &wireUsage{PromptTokens: prompt, CompletionTokens: completionTokens(reply)}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	b, _ := json.Marshal(wireChunk{ID: c.id, Object: "chat.completion.chunk", Created: c.created,
		Model: c.model, Choices: []wireChoice{}, Usage: u})
	return b
}

// completion is the answer to a request that did not ask to stream.
func (c *chatStream) completion(reply Reply, req, prompt int) any {
	type fn struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	}
	type call struct {
		ID       string `json:"id"`
		Type     string `json:"type"`
		Function fn     `json:"function"`
	}
	msg := struct {
		Role      string  `json:"role"`
		Content   *string `json:"content"`
		ToolCalls []call  `json:"tool_calls,omitempty"`
	}{Role: "assistant"}
	if reply.Text != "" || len(reply.ToolCalls) == 0 {
		msg.Content = &reply.Text
	}
	for k, tc := range reply.ToolCalls {
		tc = toolCall(tc, req, k)
		msg.ToolCalls = append(msg.ToolCalls, call{ID: tc.ID, Type: "function", Function: fn{tc.Name, tc.Arguments}})
	}
	u := wireUsage{PromptTokens: prompt, CompletionTokens: completionTokens(reply)}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return map[string]any{
		"id": c.id, "object": "chat.completion", "created": c.created, "model": c.model,
		"choices": []any{map[string]any{
			"index": 0, "message": msg, "logprobs": nil, "finish_reason": finishReason(reply),
		}},
		"usage": u,
	}
}
