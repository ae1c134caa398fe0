package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/voice/audio"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// The browser end of the test: web/e2e/call.mjs, run with node, driving Chromium through
// playwright-core from web/node_modules.
const (
	callScript     = "../../web/e2e/call.mjs"
	playwrightPkg  = "../../web/node_modules/playwright-core/package.json"
	defaultBrowser = "/usr/bin/chromium"
)

// The microphone's script: silence while the agent greets, the question, then silence
// for the agent's endpointing. Chromium starts the file when the page opens the
// microphone, right after joining the room, which is also when the agent starts its
// greeting (about 1.3 s of the scripted voice); the lead leaves several seconds more for a
// slow agent join on a loaded machine, so that the question does not barge in on the
// greeting.
const (
	micLead  = 7 * time.Second
	micTrail = 4 * time.Second
)

// browserResult is what call.mjs prints on stdout.
type browserResult struct {
	OK       bool   `json:"ok"`
	Error    string `json:"error"`
	CallID   string `json:"call_id"`
	RoomName string `json:"room_name"`
	Captions []struct {
		Speaker string `json:"speaker"`
		Final   bool   `json:"final"`
		Segment string `json:"segment"`
		Text    string `json:"text"`
	} `json:"captions"`
	InboundAudio *struct {
		BytesReceived    float64 `json:"bytesReceived"`
		PacketsReceived  float64 `json:"packetsReceived"`
		TotalAudioEnergy float64 `json:"totalAudioEnergy"`
		AudioLevel       float64 `json:"audioLevel"`
	} `json:"inbound_audio"`
	MicAudio *struct {
		BytesSent        float64 `json:"bytesSent"`
		PacketsSent      float64 `json:"packetsSent"`
		TotalAudioEnergy float64 `json:"totalAudioEnergy"`
	} `json:"mic_audio"`
	SelectedCandidatePair string   `json:"selected_candidate_pair"`
	PageLog               []string `json:"page_log"`
	Steps                 []struct {
		Step string `json:"step"`
		AtMS int64  `json:"at_ms"`
	} `json:"steps"`
}

// browserTools finds node, Chromium and playwright-core. A missing one skips the test
// on a developer's machine and fails it in CI, where scripts/setup installs all three.
func browserTools(t *testing.T) (node, chromium string) {
	t.Helper()
	var missing []string
	node, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node")
	}
	chromium = os.Getenv("PARLEY_CHROMIUM")
	if chromium == "" {
		chromium = defaultBrowser
	}
	if _, err := os.Stat(chromium); err != nil {
		missing = append(missing, "chromium ("+chromium+")")
	}
	if _, err := os.Stat(playwrightPkg); err != nil {
		missing = append(missing, "web/node_modules/playwright-core (npm ci in web/)")
	}
	if len(missing) > 0 {
		msg := "missing " + strings.Join(missing, ", ") + "; run scripts/setup"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return node, chromium
}

// micWAV writes the fake microphone's file: hello.wav between micLead and micTrail of
// silence, at the fixture's 16 kHz (Chromium resamples capture files to its own rate).
func micWAV(t *testing.T) (path string, speech time.Duration) {
	t.Helper()
	q, err := audio.ReadWAVFile("../../voice/testdata/hello.wav")
	if err != nil {
		t.Fatal(err)
	}
	lead := make([]int16, int(micLead.Seconds()*float64(q.Rate)))
	trail := make([]int16, int(micTrail.Seconds()*float64(q.Rate)))
	samples := append(append(lead, q.Samples...), trail...)
	path = filepath.Join(t.TempDir(), "mic.wav")
	if err := audio.WriteWAVFile(path, audio.Frame{Samples: samples, Rate: q.Rate}); err != nil {
		t.Fatal(err)
	}
	return path, q.Duration()
}

func getCallJSON(t *testing.T, url, token string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// TestBrowserCall is a test call as a person makes it: `parley dev` serves /call, and a
// headless Chromium logs in, picks an agent, calls it, hears the greeting, speaks into
// the microphone (Chromium's fake capture device playing espeak-ng speech), sees the
// captions of both sides, hears the answer, and hangs up; the call record then holds
// the whole conversation, ended by the user. The agent's providers are a scripted
// OpenAI-compatible server, so the words are fixed, but everything between the browser
// and them is real: the page, livekit-client, WebRTC to livekit-server, the worker's
// VAD and endpointing, and the captions back over LiveKit text streams.
//
// Not parallel: it runs a browser beside a whole sandbox, and the microphone's script
// assumes the agent greets within a few seconds of the caller joining.
func TestBrowserCall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary and a browser")
	}
	node, chromium := browserTools(t)
	const (
		greeting = "Hello, this is Parley."
		question = "Can I book a cleaning on Monday?"
		answer   = "Yes, Monday at ten is free."
	)
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{question},
		Replies:     []openaitest.Reply{{Text: answer}},
	})
	wav, speech := micWAV(t)

	bin := buildParley(t)
	p := startDev(t, bin, filepath.Join(reachableDir(t), "sandbox"))
	defer p.stop(t)
	// Whatever fails from here on, the sandbox's log says what the server side saw.
	defer func() {
		if t.Failed() {
			t.Logf("parley dev log:\n%s", p.out.String())
		}
	}()
	if !strings.Contains(p.banner, "LiveKit") {
		msg := "parley dev runs without LiveKit (livekit-server not installed; run scripts/setup):\n" + p.banner
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
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
	provider := map[string]any{"provider": "openai", "base_url": srv.URL, "api_key": "test-key"}
	agentName := "Browser front desk"
	code, agent := postJSON(t, p.url+"/v1/agents", token, map[string]any{
		"agent_name":      agentName,
		"begin_message":   greeting,
		"response_engine": map[string]any{"system_prompt": "You are the front desk of a dental practice."},
		"llm":             provider, "stt": provider, "tts": provider,
	})
	if code != 201 {
		t.Fatalf("create agent: %d %v", code, agent)
	}

	// The browser. The script has its own deadline; the context is a backstop for a
	// script that hangs past it.
	ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, callScript)
	cmd.Env = append(os.Environ(),
		"PARLEY_URL="+p.url,
		"PARLEY_EMAIL="+email[1],
		"PARLEY_PASSWORD="+pw[1],
		"PARLEY_AGENT="+agentName,
		"PARLEY_WAV="+wav,
		"PARLEY_CHROMIUM="+chromium,
		"PARLEY_EXPECT_GREETING="+greeting,
		"PARLEY_EXPECT_USER="+question,
		"PARLEY_EXPECT_ANSWER="+answer,
		"PARLEY_TIMEOUT_MS=75000",
	)
	// On the backstop, SIGTERM: playwright-core then closes the browser, which it runs in
	// a process group of its own that a kill of node would leave behind.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	began := time.Now()
	out, runErr := cmd.Output()
	t.Logf("browser session took %s", time.Since(began).Round(100*time.Millisecond))
	var res browserResult
	jsonErr := json.Unmarshal(out, &res)
	if runErr != nil || jsonErr != nil || !res.OK {
		t.Fatalf("browser call failed: %v\nresult: %s\nbrowser and script log:\n%s",
			errors.Join(runErr, jsonErr, errorIf(res.Error)), out, stderr.String())
	}
	// On any later failure, the browser's side of the story.
	defer func() {
		if t.Failed() {
			t.Logf("browser result: %s\nbrowser and script log:\n%s", out, stderr.String())
		}
	}()
	t.Logf("ICE pair %s; steps %+v", res.SelectedCandidatePair, res.Steps)

	// The page showed the three captions in order (the script waited for each).
	var shown []string
	for _, c := range res.Captions {
		if c.Final {
			shown = append(shown, c.Text)
		}
	}
	if !inOrder(strings.Join(shown, "\n"), "Agent: "+greeting, "You: "+question, "Agent: "+answer) {
		t.Errorf("captions shown: %q", shown)
	}
	// The browser sent the microphone (its fake device played the file, non-silent) and
	// received, decoded and played the agent's audio.
	if res.MicAudio == nil || res.MicAudio.BytesSent <= 0 || res.MicAudio.TotalAudioEnergy <= 0 {
		t.Errorf("microphone stats: %+v", res.MicAudio)
	}
	if res.InboundAudio == nil || res.InboundAudio.BytesReceived <= 0 || res.InboundAudio.TotalAudioEnergy <= 0 {
		t.Errorf("agent audio stats: %+v", res.InboundAudio)
	}
	// What the recogniser was sent is the browser's speech: an utterance about as long as
	// the question (the VAD trims and pads its edges), not a blip of noise.
	var longest time.Duration
	for _, tr := range srv.Transcriptions() {
		longest = max(longest, tr.Duration)
	}
	if longest < speech/2 {
		t.Errorf("longest utterance transcribed %s, want about %s: %+v", longest, speech, srv.Transcriptions())
	}
	if chats := srv.Chats(); len(chats) == 0 || chats[0].Request.LastUserText() != question {
		t.Errorf("chat requests: %+v", chats)
	}

	// The record: completed by the user's hang-up, with the whole conversation.
	if res.CallID == "" {
		t.Fatal("the script saw no call id")
	}
	var call map[string]any
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, call = getCallJSON(t, p.url+"/v1/calls/"+res.CallID, token)
		if code == 200 && call["call_status"] == "completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("call not completed 30 s after hang-up: %d %v", code, call)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if call["disconnection_reason"] != "user_hangup" || call["direction"] != "web" {
		t.Errorf("completed call: reason %v, direction %v", call["disconnection_reason"], call["direction"])
	}
	var turns []string
	items, _ := call["transcript_object"].([]any)
	for _, it := range items {
		turn, _ := it.(map[string]any)
		turns = append(turns, fmt.Sprintf("%v: %v", turn["role"], turn["content"]))
	}
	if got := strings.Join(turns, "\n"); !inOrder(got, "agent: "+greeting, "user: "+question, "agent: "+answer) {
		t.Errorf("transcript_object lacks the greeting, the question and the answer in order:\n%s", got)
	}
}

// inOrder reports whether s holds each of parts, one after the other.
func inOrder(s string, parts ...string) bool {
	for _, p := range parts {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return true
}

// errorIf turns the script's error text into an error, nil when empty.
func errorIf(msg string) error {
	if msg == "" {
		return nil
	}
	return errors.New("call.mjs: " + msg)
}
