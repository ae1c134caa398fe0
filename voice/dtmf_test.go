package voice

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// lastUser is the text of the last user message of a chat request.
func lastUser(req openaitest.ChatRequest) string {
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == "user" {
			return req.Messages[i].Content
		}
	}
	return ""
}

// waitChats waits until srv has answered n chat requests and returns them.
func waitChats(t *testing.T, srv *openaitest.Server, n int, within time.Duration) []openaitest.ChatRecord {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		cs := srv.Chats()
		if len(cs) >= n {
			return cs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d chat requests within %v", len(cs), n, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDTMFKeys: key presses reach the model as one caller turn in the documented text,
// recorded as the caller's final transcript; '#' ends the entry at once, a pause ends
// it after DTMFInterDigit; keys that are not DTMF are ignored, a-d are upper-cased.
func TestDTMFKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		presses    []string
		interDigit time.Duration
		want       string
		within     time.Duration // the model is asked within this
	}{
		// With a 10 s inter-digit wait, only the '#' can end the entry within 5 s.
		{"hash ends the entry", []string{"1", "2", "3", "#"}, 10 * time.Second, "[The caller pressed keys: 1 2 3 #]", 5 * time.Second},
		{"a pause ends the entry", []string{"4", "2"}, 300 * time.Millisecond, "[The caller pressed keys: 4 2]", timeout},
		{"only DTMF keys count", []string{"9x", "b*#"}, 10 * time.Second, "[The caller pressed keys: 9 B * #]", 5 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const answer = "Thank you, I have your entry."
			srv := openaitest.New(t, openaitest.Config{Replies: []openaitest.Reply{{Text: answer}}})
			e := newEnv(t, srv, func(c *Config) { c.DTMFInterDigit = tc.interDigit })
			startCaller(t, e.s, 16000) // a line with nothing said on it
			for _, p := range tc.presses {
				e.s.DTMF(p)
				time.Sleep(50 * time.Millisecond)
			}
			chats := waitChats(t, srv, 1, tc.within)
			if got := lastUser(chats[0].Request); got != tc.want {
				t.Errorf("model got %q, want %q", got, tc.want)
			}
			tr := e.rec.waitFor(t, timeout, "keys transcript", userFinal).(*Transcript)
			if tr.Text != tc.want || tr.Turn != 1 {
				t.Errorf("transcript %+v, want %q in turn 1", tr, tc.want)
			}
			e.rec.waitFor(t, timeout, "answer", agentSaid(answer))
			h := e.waitHistory(t, 2)
			if len(h) < 2 || h[0].Content != tc.want || h[1].Content != answer {
				t.Errorf("history %+v", h)
			}
			if n := len(srv.Chats()); n != 1 {
				t.Errorf("%d chat requests, want 1: the entry is one turn", n)
			}
		})
	}
}

// TestDTMFBargeIn: a key pressed while the agent talks stops it, as an interruption
// does, and the keys are answered.
func TestDTMFBargeIn(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{Replies: []openaitest.Reply{{Text: "You chose billing."}}})
	e := newEnv(t, srv, func(c *Config) {
		c.Agent.BeginMessage = "Welcome to Parley Dental. For appointments press one. For billing press two. " +
			"For anything else, stay on the line and tell me what you need."
	})
	startCaller(t, e.s, 16000)
	e.out.waitFrames(t, 25, timeout) // half a second of the menu
	e.s.DTMF("2")
	e.rec.waitFor(t, timeout, "barge-in", interruption(BargeIn))
	chats := waitChats(t, srv, 1, timeout)
	if got := lastUser(chats[0].Request); got != "[The caller pressed keys: 2]" {
		t.Errorf("model got %q", got)
	}
	e.rec.waitFor(t, timeout, "answer", agentSaid("You chose billing."))
	// The menu was cut: its last sentence never played in full.
	if e.rec.index(agentSaid("For anything else, stay on the line and tell me what you need.")) >= 0 {
		t.Errorf("the menu played to the end:\n%s", describe(e.rec.all()))
	}
}

// TestSendDTMF: with DTMFOut the model gets send_dtmf; valid digits become a SendDTMF
// event and an ok result, invalid ones an error result and no event. Without DTMFOut
// the tool is not offered.
func TestSendDTMF(t *testing.T) {
	t.Parallel()
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"Please enter your account number followed by the pound key."},
		Replies: []openaitest.Reply{
			{ToolCalls: []openaitest.ToolCall{
				{ID: "call_1", Name: ToolSendDTMF, Arguments: `{"digits":"4 8 1 5 #"}`},
				{ID: "call_2", Name: ToolSendDTMF, Arguments: `{"digits":"12x"}`},
			}},
			{Text: "I entered the account number."},
		},
	})
	e := newEnv(t, srv, func(c *Config) { c.DTMFOut = true })
	c := startCaller(t, e.s, 16000)
	c.say(fixture(t, "hello"))
	e.rec.waitFor(t, timeout, "answer", agentSaid("I entered the account number."))

	var sends []*SendDTMF
	var calls []*ToolCall
	for _, ev := range e.rec.all() {
		switch ev := ev.(type) {
		case *SendDTMF:
			sends = append(sends, ev)
		case *ToolCall:
			calls = append(calls, ev)
		}
	}
	if len(sends) != 1 || sends[0].Digits != "4815#" || sends[0].Turn != 1 {
		t.Errorf("SendDTMF events %+v, want one with 4815#", sends)
	}
	if len(calls) != 2 {
		t.Fatalf("tool events:\n%s", describe(e.rec.all()))
	}
	var ok struct {
		OK   bool   `json:"ok"`
		Sent string `json:"sent"`
	}
	if err := json.Unmarshal([]byte(calls[0].Result), &ok); err != nil || !ok.OK || ok.Sent != "4815#" {
		t.Errorf("valid digits: result %q", calls[0].Result)
	}
	if !strings.Contains(calls[1].Result, "error") || !strings.Contains(calls[1].Result, "not a phone key") || calls[1].Err == "" {
		t.Errorf("invalid digits: result %q err %q", calls[1].Result, calls[1].Err)
	}
	chats := srv.Chats()
	if !slices.Contains(chats[0].Request.ToolNames(), ToolSendDTMF) {
		t.Errorf("tools offered %v, want send_dtmf", chats[0].Request.ToolNames())
	}
	// The model saw both results.
	var results []string
	for _, m := range chats[1].Request.Messages {
		if m.Role == "tool" {
			results = append(results, m.Content)
		}
	}
	if len(results) != 2 || results[0] != calls[0].Result || results[1] != calls[1].Result {
		t.Errorf("tool messages %q", results)
	}

	t.Run("not offered without DTMFOut", func(t *testing.T) {
		t.Parallel()
		srv := openaitest.New(t, openaitest.Config{Replies: []openaitest.Reply{{Text: "Hello."}}})
		e := newEnv(t, srv, nil)
		e.s.DTMF("1#")
		chats := waitChats(t, srv, 1, timeout)
		if names := chats[0].Request.ToolNames(); slices.Contains(names, ToolSendDTMF) {
			t.Errorf("tools offered %v", names)
		}
		if err := e.s.SetDTMFOut(true); err == nil {
			t.Error("SetDTMFOut after Start succeeded")
		}
	})
}

func TestNormalizeDigits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"1", "1", true},
		{"0123456789*#ABCD", "0123456789*#ABCD", true},
		{"1 2-3,#", "123#", true},
		{"abcd", "ABCD", true},
		{"", "", false},
		{" ", "", false},
		{"12e", "", false},
		{"١٢", "", false},
		{strings.Repeat("1", maxDTMFOut+1), "", false},
	} {
		got, err := normalizeDigits(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("normalizeDigits(%q) = %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
