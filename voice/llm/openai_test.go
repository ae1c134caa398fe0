package llm

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestOpenAIStreamsTextAsItArrives(t *testing.T) {
	t.Parallel()
	srv := newChatServer(t, chatReply{events: textChunks("Hello", " there", ", caller."), gap: 150 * time.Millisecond})
	p := newTestOpenAI(t, srv, nil)

	start := time.Now()
	s, err := p.Stream(context.Background(), userRequest("hi"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := s.Recv()
	if err != nil || c.Text != "Hello" {
		t.Fatalf("first chunk = %+v, %v; want Hello", c, err)
	}
	// The first word must not wait for the rest of the answer (300 ms of gaps).
	if el := time.Since(start); el > 250*time.Millisecond {
		t.Errorf("first chunk after %s; it should not wait for the whole answer", el)
	}
	text, last, err := collect(t, s)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v, want io.EOF", err)
	}
	if text != " there, caller." || last.FinishReason != "stop" || len(last.ToolCalls) != 0 {
		t.Errorf("rest = %q, last = %+v", text, last)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("Recv after EOF = %v", err)
	}

	if got := srv.header(0).Get("Authorization"); got != "Bearer sk-test" {
		t.Errorf("Authorization = %q", got)
	}
	body := srv.body(0)
	if body["stream"] != true || body["model"] != "gpt-4o-mini" {
		t.Errorf("request body = %v", body)
	}
}

func TestOpenAIAssemblesInterleavedParallelToolCalls(t *testing.T) {
	t.Parallel()
	events := []string{
		chunk(`{"role":"assistant","content":null}`, ""),
		chunk(`{"content":"One moment."}`, ""),
		chunk(`{"tool_calls":[{"index":0,"id":"call_w1","type":"function","function":{"name":"get_weather","arguments":""}}]}`, ""),
		chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]}`, ""),
		chunk(`{"tool_calls":[{"index":1,"id":"call_b2","type":"function","function":{"name":"book_slot","arguments":""}}]}`, ""),
		chunk(`{"tool_calls":[{"index":1,"function":{"arguments":"{\"day\":"}}]}`, ""),
		chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"ty\": \"Par"}}]}`, ""),
		chunk(`{"tool_calls":[{"index":1,"function":{"arguments":" \"monday\", \"n\": 2}"}}]}`, ""),
		chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"is\"}"}}]}`, ""),
		chunk(`{}`, "tool_calls"),
	}
	srv := newChatServer(t, chatReply{events: events, gap: 5 * time.Millisecond})
	p := newTestOpenAI(t, srv, nil)
	s, err := p.Stream(context.Background(), userRequest("weather in Paris and book monday"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var chunks []Chunk
	for {
		c, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, c)
	}
	if len(chunks) != 2 || chunks[0].Text != "One moment." || len(chunks[0].ToolCalls) != 0 {
		t.Fatalf("chunks = %+v; want the text, then one final chunk with the calls", chunks)
	}
	final := chunks[1]
	if final.FinishReason != "tool_calls" {
		t.Errorf("finish = %q", final.FinishReason)
	}
	want := []ToolCall{
		{ID: "call_w1", Name: "get_weather", Arguments: `{"city": "Paris"}`},
		{ID: "call_b2", Name: "book_slot", Arguments: `{"day": "monday", "n": 2}`},
	}
	if len(final.ToolCalls) != len(want) {
		t.Fatalf("tool calls = %+v", final.ToolCalls)
	}
	for i, tc := range final.ToolCalls {
		if tc != want[i] {
			t.Errorf("call %d = %+v, want %+v", i, tc, want[i])
		}
		if !json.Valid([]byte(tc.Arguments)) {
			t.Errorf("call %d arguments not JSON: %s", i, tc.Arguments)
		}
	}
}

func TestOpenAIToolCallsWithoutIndex(t *testing.T) {
	t.Parallel()
	// Ollama-style: whole calls, no index, no id on the second, finish "stop".
	events := []string{
		chunk(`{"role":"assistant","content":"","tool_calls":[{"id":"call_1","function":{"name":"a","arguments":"{\"x\":1}"}}]}`, ""),
		chunk(`{"tool_calls":[{"id":"call_2","function":{"name":"b","arguments":""}}]}`, ""),
		chunk(`{"tool_calls":[{"function":{"arguments":"{}"}}]}`, ""),
		chunk(`{}`, "stop"),
	}
	srv := newChatServer(t, chatReply{events: events})
	p := newTestOpenAI(t, srv, nil)
	s, err := p.Stream(context.Background(), userRequest("go"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, last, err := collect(t, s)
	if !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	want := []ToolCall{{ID: "call_1", Name: "a", Arguments: `{"x":1}`}, {ID: "call_2", Name: "b", Arguments: `{}`}}
	if last.FinishReason != "tool_calls" || len(last.ToolCalls) != 2 || last.ToolCalls[0] != want[0] || last.ToolCalls[1] != want[1] {
		t.Errorf("last = %+v", last)
	}
}

func TestOpenAIRequestEncoding(t *testing.T) {
	t.Parallel()
	srv := newChatServer(t, chatReply{events: textChunks("ok")})
	p := newTestOpenAI(t, srv, func(c *OpenAIConfig) { c.Model = "llama-3.1-8b-instant" })
	zero := float32(0)
	req := Request{
		Messages: []Message{
			{Role: System, Content: "You book tables."},
			{Role: User, Content: "Table for two."},
			{Role: Assistant, ToolCalls: []ToolCall{{ID: "call_1", Name: "book", Arguments: `{"n":2}`}}},
			{Role: ToolRole, ToolCallID: "call_1", Name: "book", Content: `{"ok":true}`},
		},
		Tools: []Tool{
			{Name: "book", Description: "Book a table", Parameters: json.RawMessage(`{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}`)},
			{Name: "hang_up"},
		},
		Temperature: &zero,
		MaxTokens:   200,
	}
	s, err := p.Stream(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	body := srv.body(0)
	if body["model"] != "llama-3.1-8b-instant" {
		t.Errorf("model = %v", body["model"])
	}
	if temp, ok := body["temperature"].(float64); !ok || temp <= 0 || temp > 1e-30 {
		t.Errorf("temperature = %v; want a tiny positive number standing for 0", body["temperature"])
	}
	if body["max_tokens"] != float64(200) {
		t.Errorf("max_tokens = %v", body["max_tokens"])
	}
	msgs := body["messages"].([]any)
	asst := msgs[2].(map[string]any)
	call := asst["tool_calls"].([]any)[0].(map[string]any)
	if call["id"] != "call_1" || call["type"] != "function" || call["function"].(map[string]any)["arguments"] != `{"n":2}` {
		t.Errorf("assistant tool call = %v", call)
	}
	tool := msgs[3].(map[string]any)
	if tool["role"] != "tool" || tool["tool_call_id"] != "call_1" || tool["name"] != "book" || tool["content"] != `{"ok":true}` {
		t.Errorf("tool message = %v", tool)
	}
	tools := body["tools"].([]any)
	fn := tools[0].(map[string]any)["function"].(map[string]any)
	if fn["name"] != "book" || fn["parameters"].(map[string]any)["required"].([]any)[0] != "n" {
		t.Errorf("tool = %v", fn)
	}
	if params := tools[1].(map[string]any)["function"].(map[string]any)["parameters"].(map[string]any); params["type"] != "object" {
		t.Errorf("parameterless tool got parameters %v", params)
	}
}

func TestOpenAIRejectsBadRequests(t *testing.T) {
	t.Parallel()
	srv := newChatServer(t, chatReply{events: textChunks("ok")})
	p := newTestOpenAI(t, srv, nil)
	for name, req := range map[string]Request{
		"no messages":  {},
		"bad role":     {Messages: []Message{{Role: "robot", Content: "x"}}},
		"bad schema":   {Messages: []Message{{Role: User, Content: "x"}}, Tools: []Tool{{Name: "t", Parameters: json.RawMessage(`{`)}}},
		"unnamed tool": {Messages: []Message{{Role: User, Content: "x"}}, Tools: []Tool{{}}},
	} {
		if _, err := p.Stream(context.Background(), req); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if n := srv.requests(); n != 0 {
		t.Errorf("%d requests sent for invalid input", n)
	}
}

func TestOpenAIConfigValidation(t *testing.T) {
	t.Parallel()
	for _, cfg := range []OpenAIConfig{
		{BaseURL: "ftp://x/v1"},
		{BaseURL: "not a url"},
		{FirstTokenTimeout: -time.Second},
	} {
		if _, err := NewOpenAI(cfg); err == nil {
			t.Errorf("NewOpenAI(%+v) accepted", cfg)
		}
	}
	p, err := NewOpenAI(OpenAIConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "openai" || p.cfg.Model != defaultOpenAIModel || p.cfg.FirstTokenTimeout != defaultFirstTokenTimeout || p.retry.MaxRetries != defaultMaxRetries {
		t.Errorf("defaults = %+v", p.cfg)
	}
	if p, _ := NewOpenAI(OpenAIConfig{MaxRetries: -1}); p.retry.MaxRetries != 0 {
		t.Errorf("MaxRetries -1 gave %d retries", p.retry.MaxRetries)
	}
}

func TestOpenAIRetriesBeforeFirstToken(t *testing.T) {
	t.Parallel()
	ok := chatReply{events: textChunks("fine")}
	tests := []struct {
		name     string
		replies  []chatReply
		mod      func(*OpenAIConfig)
		wantErr  error  // errors.Is target, nil for success
		wantMsg  string // substring of the error
		requests int
		minTime  time.Duration
		maxTime  time.Duration
	}{
		{
			name: "429 with Retry-After",
			replies: []chatReply{
				{status: 429, header: map[string]string{"Retry-After": "1"}, errBody: errorBody(429, "rate_limit_exceeded", "Rate limit reached")},
				ok,
			},
			requests: 2, minTime: time.Second, maxTime: 3 * time.Second,
		},
		{
			name: "429 with retry-after-ms",
			replies: []chatReply{
				{status: 429, header: map[string]string{"Retry-After-Ms": "300", "Retry-After": "1"}, errBody: errorBody(429, "rate_limit_exceeded", "slow down")},
				ok,
			},
			requests: 2, minTime: 300 * time.Millisecond, maxTime: 900 * time.Millisecond,
		},
		{
			name:     "503 twice then ok",
			replies:  []chatReply{{status: 503, errBody: "upstream unavailable"}, {status: 503, errBody: "upstream unavailable"}, ok},
			requests: 3,
		},
		{
			name:     "connection dropped before any event",
			replies:  []chatReply{{hangup: true}, ok},
			requests: 2,
		},
		{
			name:     "slow first token",
			replies:  []chatReply{{firstDelay: time.Second, events: textChunks("late")}, ok},
			mod:      func(c *OpenAIConfig) { c.FirstTokenTimeout = 200 * time.Millisecond },
			requests: 2, minTime: 200 * time.Millisecond, maxTime: 900 * time.Millisecond,
		},
		{
			name:     "role delta is not a first token",
			replies:  []chatReply{{events: []string{chunk(`{"role":"assistant","content":""}`, "")}, hang: true}, ok},
			mod:      func(c *OpenAIConfig) { c.FirstTokenTimeout = 200 * time.Millisecond },
			requests: 2,
		},
		{
			name:     "never a first token",
			replies:  []chatReply{{firstDelay: time.Hour}},
			mod:      func(c *OpenAIConfig) { c.FirstTokenTimeout = 100 * time.Millisecond; c.MaxRetries = 1 },
			wantErr:  ErrFirstTokenTimeout,
			wantMsg:  "after 2 attempts",
			requests: 2,
		},
		{
			name:     "401 is final",
			replies:  []chatReply{{status: 401, errBody: errorBody(401, "invalid_request_error", "Incorrect API key provided")}, ok},
			wantMsg:  "Incorrect API key",
			requests: 1,
		},
		{
			name:     "Retry-After beyond the limit fails fast",
			replies:  []chatReply{{status: 429, header: map[string]string{"Retry-After": "60"}, errBody: errorBody(429, "rate_limit_exceeded", "quota")}, ok},
			wantMsg:  "retry after 1m0s",
			requests: 1, maxTime: 500 * time.Millisecond,
		},
		{
			name:     "retries disabled",
			replies:  []chatReply{{status: 500, errBody: "boom"}, ok},
			mod:      func(c *OpenAIConfig) { c.MaxRetries = -1 },
			wantMsg:  "500",
			requests: 1,
		},
		{
			name:     "retries run out",
			replies:  []chatReply{{status: 502, errBody: "bad gateway"}},
			mod:      func(c *OpenAIConfig) { c.MaxRetries = 2 },
			wantMsg:  "after 3 attempts",
			requests: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newChatServer(t, tt.replies...)
			p := newTestOpenAI(t, srv, tt.mod)
			start := time.Now()
			s, err := p.Stream(context.Background(), userRequest("hi"))
			elapsed := time.Since(start)
			if tt.wantErr == nil && tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("Stream: %v", err)
				}
				text, _, err := collect(t, s)
				s.Close()
				if !errors.Is(err, io.EOF) || text != "fine" {
					t.Errorf("answer = %q, %v", text, err)
				}
			} else {
				if err == nil {
					s.Close()
					t.Fatal("Stream succeeded; want an error")
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Errorf("err = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("err = %q, want it to mention %q", err, tt.wantMsg)
				}
			}
			if n := srv.requests(); n != tt.requests {
				t.Errorf("%d requests, want %d", n, tt.requests)
			}
			if elapsed < tt.minTime || (tt.maxTime > 0 && elapsed > tt.maxTime) {
				t.Errorf("took %s, want between %s and %s", elapsed, tt.minTime, tt.maxTime)
			}
		})
	}
}

func TestOpenAINeverRetriesAfterFirstToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		reply   chatReply
		wantErr error
	}{
		{"connection dropped", chatReply{events: textChunks("Hello")[:2], hangup: true}, nil},
		{"stalled", chatReply{events: textChunks("Hello")[:2], hang: true}, ErrStalled},
		{"error event", chatReply{events: append(textChunks("Hello")[:2], `{"error":{"message":"The server had an error","type":"server_error"}}`)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newChatServer(t, tt.reply, chatReply{events: textChunks("again")})
			p := newTestOpenAI(t, srv, func(c *OpenAIConfig) { c.StallTimeout = 300 * time.Millisecond })
			s, err := p.Stream(context.Background(), userRequest("hi"))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			text, _, err := collect(t, s)
			if text != "Hello" {
				t.Errorf("text = %q", text)
			}
			if err == nil || errors.Is(err, io.EOF) {
				t.Fatalf("err = %v; want a failure", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if n := srv.requests(); n != 1 {
				t.Errorf("%d requests; a started answer must not be retried", n)
			}
		})
	}
}

func TestOpenAICancelAndClose(t *testing.T) {
	t.Parallel()
	for _, viaClose := range []bool{false, true} {
		name := "cancel"
		if viaClose {
			name = "close"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := newChatServer(t, chatReply{events: textChunks("Hello")[:2], hang: true})
			p := newTestOpenAI(t, srv, func(c *OpenAIConfig) { c.StallTimeout = time.Minute })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s, err := p.Stream(ctx, userRequest("hi"))
			if err != nil {
				t.Fatal(err)
			}
			if c, err := s.Recv(); err != nil || c.Text != "Hello" {
				t.Fatalf("first = %+v, %v", c, err)
			}
			errc := make(chan error, 1)
			go func() {
				_, err := s.Recv()
				errc <- err
			}()
			time.Sleep(50 * time.Millisecond)
			if viaClose {
				s.Close()
			} else {
				cancel()
			}
			select {
			case err := <-errc:
				if err == nil || errors.Is(err, io.EOF) {
					t.Errorf("Recv after abort = %v", err)
				}
				if viaClose && !errors.Is(err, ErrClosed) {
					t.Errorf("Recv after Close = %v, want ErrClosed", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Recv did not return after abort")
			}
			s.Close()
			s.Close()
		})
	}
}

func TestOpenAIEmptyAnswer(t *testing.T) {
	t.Parallel()
	srv := newChatServer(t, chatReply{events: nil})
	p := newTestOpenAI(t, srv, nil)
	s, err := p.Stream(context.Background(), userRequest("..."))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if c, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("Recv = %+v, %v; want io.EOF", c, err)
	}
}

func TestOpenAIDefaultHTTPClient(t *testing.T) {
	t.Parallel()
	srv := newChatServer(t, chatReply{events: textChunks("ok")})
	p := newTestOpenAI(t, srv, func(c *OpenAIConfig) { c.HTTPClient = nil })
	s, err := p.Stream(context.Background(), userRequest("hi"))
	if err != nil {
		t.Fatal(err)
	}
	text, _, err := collect(t, s)
	s.Close()
	if text != "ok" || !errors.Is(err, io.EOF) {
		t.Errorf("%q, %v", text, err)
	}
	tr := defaultHTTPClient().Transport.(*http.Transport)
	if defaultHTTPClient().Timeout != 0 || tr.ResponseHeaderTimeout == 0 || tr.TLSHandshakeTimeout == 0 {
		t.Error("default client must bound dial/TLS/headers but not the whole exchange")
	}
	tr.CloseIdleConnections()
}
