package openaitest

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice/llm"
)

// newLLM is the real chat adapter pointed at srv.
func newLLM(t *testing.T, srv *Server, mod func(*llm.OpenAIConfig)) *llm.OpenAI {
	t.Helper()
	cfg := llm.OpenAIConfig{BaseURL: srv.URL, APIKey: "sk-test", Model: "gpt-test", HTTPClient: srv.Client(),
		FirstTokenTimeout: 10 * time.Second, StallTimeout: 10 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	p, err := llm.NewOpenAI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func userSays(text string) llm.Request {
	return llm.Request{Messages: []llm.Message{
		{Role: llm.System, Content: "You are the booking assistant of Parley Dental."},
		{Role: llm.User, Content: text},
	}}
}

// answer is a whole streamed completion as the adapter delivered it.
type answer struct {
	pieces []string // the text of each chunk that had text
	last   llm.Chunk
}

func (a answer) text() string { return strings.Join(a.pieces, "") }

func complete(ctx context.Context, p *llm.OpenAI, req llm.Request) (answer, error) {
	s, err := p.Stream(ctx, req)
	if err != nil {
		return answer{}, err
	}
	defer s.Close()
	var a answer
	for {
		c, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return a, nil
		}
		if err != nil {
			return a, err
		}
		if c.Text != "" {
			a.pieces = append(a.pieces, c.Text)
		}
		if c.FinishReason != "" {
			a.last = c
		}
	}
}

func TestChatStreamsTheReplyInPiecesAfterTTFT(t *testing.T) {
	t.Parallel()
	const reply = "Hello there, how can I help you today?"
	const ttft = 150 * time.Millisecond
	srv := New(t, Config{APIKey: "sk-test", LLMTTFT: ttft, LLMTokenGap: 5 * time.Millisecond,
		Replies: []Reply{{Text: reply}}})
	p := newLLM(t, srv, nil)

	req := userSays("Hi, I'd like to book a cleaning.")
	temp := float32(0.25)
	req.Temperature, req.MaxTokens = &temp, 200
	start := time.Now()
	s, err := p.Stream(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Stream returns once the first token has arrived.
	if el := time.Since(start); el < ttft {
		t.Errorf("first token after %v, want at least the TTFT of %v", el, ttft)
	}
	var a answer
	for {
		c, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if c.Text != "" {
			a.pieces = append(a.pieces, c.Text)
		}
		if c.FinishReason != "" {
			a.last = c
		}
	}
	if a.text() != reply {
		t.Errorf("text %q, want %q", a.text(), reply)
	}
	if want := len(strings.Fields(reply)); len(a.pieces) != want {
		t.Errorf("%d text chunks %q, want one per word (%d)", len(a.pieces), a.pieces, want)
	}
	if a.last.FinishReason != "stop" || len(a.last.ToolCalls) != 0 {
		t.Errorf("last chunk %+v, want finish reason stop without tool calls", a.last)
	}

	recs := srv.Chats()
	if len(recs) != 1 {
		t.Fatalf("%d chat records, want 1", len(recs))
	}
	r := recs[0]
	if r.Status != 200 || r.Canceled || r.Done.IsZero() || r.TTFT() < ttft {
		t.Errorf("record status %d canceled %v done %v TTFT %v", r.Status, r.Canceled, r.Done, r.TTFT())
	}
	got := r.Request
	if got.Model != "gpt-test" || !got.Stream || got.MaxTokens != 200 || got.Temperature == nil || *got.Temperature != 0.25 {
		t.Errorf("request %+v", got)
	}
	if len(got.Messages) != 2 || got.Messages[0].Role != "system" || got.Messages[1].Role != "user" ||
		got.LastUserText() != "Hi, I'd like to book a cleaning." {
		t.Errorf("messages %+v", got.Messages)
	}
}

func TestChatScripts(t *testing.T) {
	t.Parallel()
	srv := New(t, Config{Replies: []Reply{{Text: "First."}, {Text: "Second."}}})
	p := newLLM(t, srv, nil)
	ctx := context.Background()
	say := func(text string) string {
		t.Helper()
		a, err := complete(ctx, p, userSays(text))
		if err != nil {
			t.Fatal(err)
		}
		return a.text()
	}
	// A list: reply i for request i, the last repeating.
	for i, want := range []string{"First.", "Second.", "Second."} {
		if got := say("Hello?"); got != want {
			t.Errorf("reply %d: %q, want %q", i, got, want)
		}
	}
	// A function of the request.
	srv.SetChat(Echo)
	if got := say("What time do you open?"); got != "You said: What time do you open." {
		t.Errorf("echo: %q", got)
	}
	// A new list starts over.
	srv.SetReplies(Reply{Text: "Third."}, Reply{Text: "Fourth."})
	if got := say("Hello?"); got != "Third." {
		t.Errorf("after SetReplies: %q", got)
	}
	if n := srv.Counts().Chat; n != 5 {
		t.Errorf("%d chat requests counted, want 5", n)
	}
}

func TestChatToolCalls(t *testing.T) {
	t.Parallel()
	end := ToolCall{ID: "call_9", Name: "end_call", Arguments: `{"reason":"the caller said goodbye"}`}
	srv := New(t, Config{LLMTokenGap: time.Millisecond, Replies: []Reply{
		{Text: "Goodbye, have a nice day.", ToolCalls: []ToolCall{end, {Name: "transfer_call"}}},
		{Text: "Done."},
	}})
	p := newLLM(t, srv, nil)
	req := userSays("That's all, bye.")
	req.Tools = []llm.Tool{
		{Name: "end_call", Description: "Ends the call.", Parameters: []byte(`{"type":"object","properties":{"reason":{"type":"string"}}}`)},
		{Name: "transfer_call", Description: "Transfers the call."},
	}
	a, err := complete(context.Background(), p, req)
	if err != nil {
		t.Fatal(err)
	}
	if a.text() != "Goodbye, have a nice day." {
		t.Errorf("text %q", a.text())
	}
	want := []llm.ToolCall{
		{ID: "call_9", Name: "end_call", Arguments: end.Arguments},
		{ID: "call_1_1", Name: "transfer_call", Arguments: "{}"},
	}
	if a.last.FinishReason != "tool_calls" || !slices.Equal(a.last.ToolCalls, want) {
		t.Errorf("last chunk %+v, want tool calls %+v", a.last, want)
	}
	if names := srv.Chats()[0].Request.ToolNames(); !slices.Equal(names, []string{"end_call", "transfer_call"}) {
		t.Errorf("tools offered %v", names)
	}

	// The next request carries the call and its result back; the server decodes them.
	req.Messages = append(req.Messages,
		llm.Message{Role: llm.Assistant, Content: a.text(), ToolCalls: a.last.ToolCalls[:1]},
		llm.Message{Role: llm.ToolRole, ToolCallID: "call_9", Name: "end_call", Content: `{"ok":true}`})
	if _, err := complete(context.Background(), p, req); err != nil {
		t.Fatal(err)
	}
	msgs := srv.Chats()[1].Request.Messages
	if len(msgs) != 4 || len(msgs[2].ToolCalls) != 1 || msgs[2].ToolCalls[0] != end ||
		msgs[3].Role != "tool" || msgs[3].ToolCallID != "call_9" || msgs[3].Content != `{"ok":true}` {
		t.Errorf("history as received: %+v", msgs)
	}
}

func TestChatFailures(t *testing.T) {
	t.Parallel()
	t.Run("a 503 is retried", func(t *testing.T) {
		t.Parallel()
		srv := New(t, Config{Replies: []Reply{{Status: 503}, {Text: "Recovered."}}})
		a, err := complete(context.Background(), newLLM(t, srv, nil), userSays("Hello?"))
		if err != nil || a.text() != "Recovered." {
			t.Fatalf("%q, %v", a.text(), err)
		}
		recs := srv.Chats()
		if len(recs) != 2 || recs[0].Status != 503 || recs[1].Status != 200 {
			t.Errorf("records %+v", recs)
		}
	})
	t.Run("a 400 is final", func(t *testing.T) {
		t.Parallel()
		srv := New(t, Config{ChatStatus: 400, Replies: []Reply{{Text: "Never."}}})
		_, err := complete(context.Background(), newLLM(t, srv, nil), userSays("Hello?"))
		if err == nil || !strings.Contains(err.Error(), "400") {
			t.Fatalf("error %v, want the 400", err)
		}
		if n := srv.Counts().Chat; n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
	})
	t.Run("nothing scripted", func(t *testing.T) {
		t.Parallel()
		srv := New(t, Config{})
		_, err := complete(context.Background(), newLLM(t, srv, func(c *llm.OpenAIConfig) { c.MaxRetries = -1 }), userSays("Hello?"))
		if err == nil || !strings.Contains(err.Error(), "no chat reply scripted") {
			t.Fatalf("error %v", err)
		}
	})
}

// TestChatRecordsResponseFormat: a non-streamed request's response_format is kept as
// sent (structured-output callers check what they asked for); the scripted reply
// comes back whole whatever it asks for, and a request without one records none.
func TestChatRecordsResponseFormat(t *testing.T) {
	t.Parallel()
	srv := New(t, Config{Replies: []Reply{{Text: `{"ok":true}`}}})
	format := `{"type":"json_schema","json_schema":{"name":"x","strict":true,"schema":{"type":"object"}}}`
	post := func(body string) string {
		t.Helper()
		resp, err := srv.Client().Post(srv.URL+"/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		return string(b)
	}
	got := post(`{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":` + format + `}`)
	if !strings.Contains(got, `"content":"{\"ok\":true}"`) {
		t.Errorf("answer = %s", got)
	}
	post(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	chats := srv.Chats()
	if string(chats[0].Request.ResponseFormat) != format || chats[1].Request.ResponseFormat != nil {
		t.Errorf("response formats recorded: %s, %s", chats[0].Request.ResponseFormat, chats[1].Request.ResponseFormat)
	}
}
