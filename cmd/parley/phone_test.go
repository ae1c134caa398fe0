package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/sipbridge/siptest"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// sipLine is the SIP address the sandbox's banner prints.
var sipLine = regexp.MustCompile(`SIP\s+sip:<number>@(\S+)`)

// TestDevPhoneCall is the README's "Phone calls" walk-through on `parley dev`, as a
// newcomer would do it with no carrier: the sandbox's own SIP bridge, a trunk that
// accepts calls from this machine, a number bound to an agent, and sipp as the phone.
// It proves the wiring of the whole phone path in the binary: the telephony routes sync
// LiveKit SIP, the worker routes the number and answers, the record is inbound with its
// numbers and transcript, the recording is served, post-call analysis fills extracted,
// and a call to an unbound number is turned away (486) with no record.
func TestDevPhoneCall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	if _, err := exec.LookPath("sipp"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("sipp not installed (run scripts/setup)")
		}
		t.Skip("sipp not installed")
	}
	const (
		greeting = "Hello, this is Parley."
		question = "Can I book a cleaning on Monday?"
		answer   = "Yes, Monday at ten is free."
		analysis = `{"call_summary":"The caller booked a cleaning on Monday at ten.","call_successful":true,` +
			`"user_sentiment":"Positive","custom_analysis_data":{"day":"Monday"}}`
	)
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{question},
		Replies:     []openaitest.Reply{{Text: answer}, {Text: analysis}},
	})
	bin := buildParley(t)
	p := startDev(t, bin, filepath.Join(reachableDir(t), "sandbox"))
	defer p.stop(t)
	defer func() {
		if t.Failed() {
			t.Logf("parley dev log:\n%s", p.out.String())
		}
	}()
	m := sipLine.FindStringSubmatch(p.banner)
	if m == nil {
		msg := "parley dev runs without the SIP bridge (livekit-sip or redis-server missing; run scripts/setup):\n" + p.banner
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	sipAddr := m[1]
	token := devLogin(t, p)

	provider := map[string]any{"provider": "openai", "base_url": srv.URL, "api_key": "test-key"}
	code, agent := postJSON(t, p.url+"/v1/agents", token, map[string]any{
		"agent_name":      "Phone front desk",
		"begin_message":   greeting,
		"response_engine": map[string]any{"system_prompt": "You are the front desk of a dental practice."},
		"llm":             provider, "stt": provider, "tts": provider,
		"post_call_analysis": []map[string]any{{"name": "day", "type": "string", "description": "the day booked"}},
	})
	if code != 201 {
		t.Fatalf("create agent: %d %v", code, agent)
	}
	code, trunk := postJSON(t, p.url+"/v1/sip-trunks", token, map[string]any{"name": "local", "inbound_allowed_addresses": []string{"127.0.0.1"}})
	if code != 201 {
		t.Fatalf("create trunk: %d %v", code, trunk)
	}
	for _, n := range []string{"+15550100", "+15550101"} {
		if code, num := postJSON(t, p.url+"/v1/phone-numbers", token, map[string]any{"phone_number": n, "trunk_id": trunk["trunk_id"]}); code != 201 {
			t.Fatalf("create number %s: %d %v", n, code, num)
		}
	}
	if code, b := postJSON(t, p.url+"/v1/phone-numbers/+15550100/bind", token, map[string]any{"agent_id": agent["agent_id"]}); code != 200 {
		t.Fatalf("bind: %d %v", code, b)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()

	// The unbound number: rejected at once, nothing recorded.
	if out, err := runSipp(ctx, t, sipAddr, "../../telephony/testdata", "uac_invite.xml", "+15550101", 0); err != nil {
		t.Fatalf("call to an unbound number was not rejected with 486: %v\n%s", err, out)
	}

	// The bound number: the phone speaks the question after the greeting and hangs up
	// after the answer; its media socket counts the agent's speech.
	sink := siptest.NewRTPSink(t)
	began := time.Now()
	if out, err := runSipp(ctx, t, sipAddr, "../../calls/testdata", "uac_call.xml", "+15550100", sink.Port()); err != nil {
		t.Fatalf("sipp call failed: %v\n%s", err, out)
	}
	held := time.Since(began)
	if heard := sink.Speech(); heard < time.Second {
		t.Errorf("the phone heard %s of speech from the agent, want the greeting and the answer", heard)
	}

	var list map[string]any
	deadline := time.Now().Add(30 * time.Second)
	var call map[string]any
	for {
		code, list = getCallJSON(t, p.url+"/v1/calls", token)
		items, _ := list["calls"].([]any)
		if code == 200 && len(items) > 0 {
			call, _ = items[0].(map[string]any)
			if call["call_status"] == "completed" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no completed call 30 s after hang-up: %d %v", code, list)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if n := len(list["calls"].([]any)); n != 1 {
		t.Errorf("%d calls recorded, want 1 (the unbound number's call must leave none)", n)
	}
	if call["direction"] != "inbound" || call["from_number"] != "+15550123" || call["to_number"] != "+15550100" ||
		call["disconnection_reason"] != "user_hangup" {
		t.Errorf("call record: direction %v from %v to %v reason %v", call["direction"], call["from_number"], call["to_number"], call["disconnection_reason"])
	}
	if d, _ := call["duration_ms"].(float64); d <= 0 || time.Duration(d)*time.Millisecond > held {
		t.Errorf("duration_ms %v, want positive and within the %s sipp held the line", call["duration_ms"], held)
	}
	if tr, _ := call["transcript"].(string); !inOrder(tr, "Agent: "+greeting, "User: "+question, "Agent: "+answer) {
		t.Errorf("transcript:\n%s", tr)
	}
	id, _ := call["call_id"].(string)

	// The recording: both sides, served to the owner.
	url, _ := call["recording_url"].(string)
	if !strings.HasSuffix(url, "/v1/calls/"+id+"/recording") {
		t.Fatalf("recording_url %q", url)
	}
	req, _ := http.NewRequest("GET", p.url+"/v1/calls/"+id+"/recording", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "audio/ogg" || !bytes.HasPrefix(rec, []byte("OggS")) || len(rec) < 4000 {
		t.Errorf("recording: %d %s, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(rec))
	}

	// Post-call analysis lands in extracted.
	deadline = time.Now().Add(30 * time.Second)
	for {
		_, call = getCallJSON(t, p.url+"/v1/calls/"+id, token)
		ex, _ := call["extracted"].(map[string]any)
		if ex["call_summary"] != nil {
			custom, _ := ex["custom_analysis_data"].(map[string]any)
			if ex["user_sentiment"] != "Positive" || custom["day"] != "Monday" {
				t.Errorf("extracted %v", ex)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no post-call analysis 30 s after the call: %v", call["extracted"])
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// devLogin logs in as the sandbox's bootstrap admin.
func devLogin(t *testing.T, p *devProc) string {
	t.Helper()
	email := regexp.MustCompile(`email\s+(\S+)`).FindStringSubmatch(p.banner)
	pw := regexp.MustCompile(`password\s+(\S+)`).FindStringSubmatch(p.banner)
	if email == nil || pw == nil {
		t.Fatalf("no bootstrap admin login in the banner:\n%s", p.banner)
	}
	code, login := postJSON(t, p.url+"/v1/auth/login", "", map[string]string{"email": email[1], "password": pw[1]})
	token, _ := login["access_token"].(string)
	if code != 200 || token == "" {
		t.Fatalf("login: %d %v", code, login)
	}
	return token
}

// runSipp places one call from +15550123 to called with scenario (run in dir, where
// its audio files are); rtpPort, when not 0, is the phone's media socket (-key
// rtpport). It returns sipp's output and its exit error.
func runSipp(ctx context.Context, t *testing.T, sipAddr, dir, scenario, called string, rtpPort int) (string, error) {
	t.Helper()
	args := []string{"-s", called, "-key", "caller", "+15550123", "-m", "1"}
	if rtpPort != 0 {
		args = append(args, "-key", "rtpport", strconv.Itoa(rtpPort))
	}
	sipp := siptest.StartSipp(t, ctx, siptest.SippConfig{Dir: dir, Scenario: scenario, Args: append(args, sipAddr)})
	err := sipp.Wait(t, ctx)
	return sipp.Output(), err
}
