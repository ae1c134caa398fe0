package voice

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice/llm"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// toolLog records what a tool endpoint received.
type toolLog struct {
	mu     sync.Mutex
	method string
	query  string
	body   string
	apiKey string
	ctype  string
	calls  int
}

func weatherTool(delay time.Duration, log *toolLog) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		log.mu.Lock()
		log.method, log.query, log.body = r.Method, r.URL.RawQuery, string(b)
		log.apiKey, log.ctype = r.Header.Get("X-Api-Key"), r.Header.Get("Content-Type")
		log.calls++
		log.mu.Unlock()
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"forecast":"sunny","temp_c":21}`)
	}
}

// TestToolCall: the model calls an HTTP function; the engine calls it with the
// function's method, headers and arguments, speaks a filler if it is slow, feeds the
// result back and speaks the model's second answer.
func TestToolCall(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		method     string
		delay      time.Duration
		wantFiller bool
	}{
		{"slow POST with filler", http.MethodPost, 1500 * time.Millisecond, true},
		{"fast GET without filler", http.MethodGet, 20 * time.Millisecond, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			log := &toolLog{}
			// The function's own endpoint: the customer's API, not the model's.
			api := httptest.NewServer(weatherTool(tc.delay, log))
			t.Cleanup(api.Close)
			const answer = "It is sunny in Paris today, twenty one degrees."
			srv := openaitest.New(t, openaitest.Config{
				Transcripts: []string{"What is the weather in Paris?"},
				Replies: []openaitest.Reply{
					{ToolCalls: []openaitest.ToolCall{{ID: "call_1", Name: "get_weather", Arguments: `{"city":"Paris"}`}}},
					{Text: answer},
				},
			})
			e := newEnv(t, srv, func(c *Config) {
				c.Agent.Functions = []Function{{
					Name:        "get_weather",
					Description: "Weather forecast for a city.",
					Parameters:  json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`),
					URL:         api.URL + "/tools/weather",
					Method:      tc.method,
					Headers:     map[string]string{"X-Api-Key": "k-123"},
					TimeoutMS:   5000,
				}}
			})
			c := startCaller(t, e.s, 16000)
			c.say(fixture(t, "hello"))
			e.rec.waitFor(t, timeout, "answer", agentSaid("twenty one degrees."))

			log.mu.Lock()
			if log.calls != 1 || log.method != tc.method || log.apiKey != "k-123" {
				t.Errorf("tool got %d calls, method %s, key %q", log.calls, log.method, log.apiKey)
			}
			if tc.method == http.MethodGet {
				if log.query != "city=Paris" || log.body != "" {
					t.Errorf("GET query %q body %q", log.query, log.body)
				}
			} else if log.body != `{"city":"Paris"}` || log.ctype != "application/json" {
				t.Errorf("POST body %q content type %q", log.body, log.ctype)
			}
			log.mu.Unlock()

			tc2 := e.rec.waitFor(t, timeout, "tool event", isKind[*ToolCall]).(*ToolCall)
			if tc2.Name != "get_weather" || tc2.Arguments != `{"city":"Paris"}` || tc2.Status != 200 ||
				!strings.Contains(tc2.Result, "sunny") || tc2.Err != "" || tc2.Filler != tc.wantFiller {
				t.Errorf("tool event %+v", tc2)
			}
			if tc2.Duration < tc.delay {
				t.Errorf("tool took %v, less than the server's %v delay", tc2.Duration, tc.delay)
			}
			iFiller := e.rec.index(func(ev Event) bool {
				tr, ok := ev.(*Transcript)
				return ok && tr.Filler && tr.Text == defaultFillers[0]
			})
			iAnswer := e.rec.index(agentSaid("twenty one degrees."))
			if tc.wantFiller != (iFiller >= 0) || (tc.wantFiller && iFiller > iAnswer) {
				t.Errorf("filler at %d, answer at %d, want filler %v:\n%s", iFiller, iAnswer, tc.wantFiller, describe(e.rec.all()))
			}

			chats := srv.Chats()
			if len(chats) != 2 {
				t.Fatalf("%d chat requests", len(chats))
			}
			msgs := chats[1].Request.Messages
			if got := roles(chats[1].Request); !slices.Equal(got, []string{"system", "user", "assistant", "tool"}) {
				t.Fatalf("second request roles %v", got)
			}
			if calls := msgs[2].ToolCalls; len(calls) != 1 || calls[0].Name != "get_weather" || calls[0].ID != "call_1" {
				t.Errorf("assistant tool calls %+v", calls)
			}
			if msgs[3].ToolCallID != "call_1" || msgs[3].Content != `{"forecast":"sunny","temp_c":21}` {
				t.Errorf("tool message %+v", msgs[3])
			}
			if tools := chats[0].Request.ToolNames(); len(tools) != 2 || tools[0] != "get_weather" {
				t.Errorf("tools offered %v", tools)
			}

			h := e.waitHistory(t, 4)
			wantRoles := []llm.Role{llm.User, llm.Assistant, llm.ToolRole, llm.Assistant}
			var gotRoles []llm.Role
			for _, m := range h {
				gotRoles = append(gotRoles, m.Role)
			}
			if !slices.Equal(gotRoles, wantRoles) || h[3].Content != answer || len(h[1].ToolCalls) != 1 {
				t.Errorf("history %+v", h)
			}
			for _, m := range h {
				if strings.Contains(m.Content, defaultFillers[0]) {
					t.Errorf("filler in the history: %+v", m)
				}
			}
		})
	}
}

// TestEndCall: the model says goodbye and calls end_call; the goodbye is played in full,
// then the session ends on its own.
func TestEndCall(t *testing.T) {
	t.Parallel()
	const bye = "Thank you for calling, have a great day. Goodbye!"
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"That's all, thanks."},
		Replies: []openaitest.Reply{{Text: bye,
			ToolCalls: []openaitest.ToolCall{{ID: "call_9", Name: "end_call", Arguments: `{}`}}}},
	})
	e := newEnv(t, srv, nil)
	c := startCaller(t, e.s, 16000)
	c.say(fixture(t, "hello"))

	select {
	case <-e.s.Done():
	case <-time.After(timeout):
		t.Fatalf("the session did not end:\n%s", describe(e.rec.all()))
	}
	end := e.rec.waitFor(t, timeout, "end", ended).(*CallEnded)
	if end.Reason != EndCallTool || e.s.EndReason() != EndCallTool {
		t.Fatalf("ended with %v", end.Reason)
	}
	iBye := e.rec.index(agentSaid("Goodbye!"))
	iEnd := e.rec.index(ended)
	if iBye < 0 || iBye > iEnd {
		t.Errorf("goodbye at %d, end at %d:\n%s", iBye, iEnd, describe(e.rec.all()))
	}
	tc := e.rec.waitFor(t, timeout, "end_call event", isKind[*ToolCall]).(*ToolCall)
	if tc.Name != ToolEndCall || tc.ID != "call_9" {
		t.Errorf("tool event %+v", tc)
	}
	// All of the goodbye went out before the end.
	var want int
	for _, s := range spoken(srv) {
		want += outSamples(s, 48000)
	}
	if got := len(e.out.audio()); got < want {
		t.Errorf("%d samples played of %d", got, want)
	}
	if err := e.s.WriteFrame(silenceFrame()); err != ErrEnded {
		t.Errorf("WriteFrame after the end: %v", err)
	}
}

// TestTransfer: transfer_call to an allowed destination is handed to the transport; one
// outside the allow-list is refused and the model told so.
func TestTransfer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, dest string
		allowed    bool
	}{
		{"allowed", "+15550100", true},
		{"not allowed", "+19990000", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const refusal = "I'm sorry, I can't transfer you there."
			srv := openaitest.New(t, openaitest.Config{
				Transcripts: []string{"Can I talk to a person?"},
				Replies: []openaitest.Reply{
					{ToolCalls: []openaitest.ToolCall{{ID: "call_t", Name: "transfer_call",
						Arguments: `{"destination":"` + tc.dest + `","message":"Connecting you now."}`}}},
					{Text: refusal},
				},
			})
			e := newEnv(t, srv, func(c *Config) { c.Agent.TransferDestinations = []string{"+15550100"} })
			c := startCaller(t, e.s, 16000)
			c.say(fixture(t, "hello"))
			if tc.allowed {
				tr := e.rec.waitFor(t, timeout, "transfer", isKind[*Transfer]).(*Transfer)
				if tr.Destination != tc.dest {
					t.Errorf("transfer to %q", tr.Destination)
				}
				end := e.rec.waitFor(t, timeout, "end", ended).(*CallEnded)
				if end.Reason != EndTransfer {
					t.Errorf("ended with %v", end.Reason)
				}
				if i, j := e.rec.index(agentSaid("Connecting you now.")), e.rec.index(isKind[*Transfer]); i < 0 || i > j {
					t.Errorf("message at %d, transfer at %d", i, j)
				}
				return
			}
			e.rec.waitFor(t, timeout, "refusal", agentSaid(refusal))
			if e.rec.index(isKind[*Transfer]) >= 0 || e.rec.index(ended) >= 0 {
				t.Fatalf("refused transfer went ahead:\n%s", describe(e.rec.all()))
			}
			chats := srv.Chats()
			if len(chats) != 2 {
				t.Fatalf("%d chat requests", len(chats))
			}
			msgs := chats[1].Request.Messages
			if last := msgs[len(msgs)-1]; last.Role != "tool" || !strings.Contains(last.Content, "not allowed") {
				t.Errorf("tool result %+v", last)
			}
		})
	}
}
