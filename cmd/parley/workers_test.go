package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/dbtest"
	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/voice/livekit/lktest"
	"github.com/parleyhq/parley/voice/voicetest/openaitest"
)

// proc is a running parley process whose log the test reads.
type proc struct {
	name string
	cmd  *exec.Cmd
	logs *lockedBuffer
	done chan error
}

func startProc(t *testing.T, bin, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), logs: &lockedBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = env
	p.cmd.Stderr = p.logs
	p.cmd.Stdout = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", name, p.logs.String())
		}
	})
	return p
}

// waitLog waits for a log line matching re and returns its submatches.
func (p *proc) waitLog(t *testing.T, re *regexp.Regexp, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if m := re.FindStringSubmatch(p.logs.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no log line matching %s within %v", p.name, re, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// calls lists the calls this worker started, from its log.
func (p *proc) calls() map[string]bool {
	out := map[string]bool{}
	for _, m := range callStartedRE.FindAllStringSubmatch(p.logs.String(), -1) {
		out[m[1]] = true
	}
	return out
}

var callStartedRE = regexp.MustCompile(`msg="calls: call started" call_id=(\S+)`)

// TestTwoVoiceWorkers: two `parley worker` processes register with a real
// livekit-server; 20 browser calls spread over both. One worker gets SIGTERM mid-call:
// its live calls carry on to their end (an answer after the signal, then a normal
// hang-up), rooms created meanwhile all go to the other worker, and the drained worker
// exits cleanly once its last call ends.
func TestTwoVoiceWorkers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three processes and a LiveKit server")
	}
	if _, err := lkserver.FindBinary(); err != nil {
		if os.Getenv("CI") == "" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	bin := buildParley(t)
	lk, err := lkserver.Start(t.Context(), lkserver.Config{WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lk.Stop)
	srv := openaitest.New(t, openaitest.Config{
		Transcripts: []string{"What time do you open?"},
		Replies:     []openaitest.Reply{{Text: "We open at nine."}},
	})
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"PARLEY_DATABASE_URL=" + dbtest.URL(t),
		"PARLEY_JWT_SECRET=0123456789abcdef0123456789abcdef-test",
		"PARLEY_SECRET_KEY=" + strings.Repeat("ab", 32),
		"PARLEY_ADDR=127.0.0.1:0",
		"PARLEY_WORKER_METRICS_ADDR=127.0.0.1:0",
		"PARLEY_RECORDINGS_DIR=" + t.TempDir(),
		"PARLEY_LIVEKIT_URL=" + lk.URL(),
		"PARLEY_LIVEKIT_API_KEY=" + lkserver.DevKey,
		"PARLEY_LIVEKIT_API_SECRET=" + lkserver.DevSecret,
		"PARLEY_AGENT_NAME=" + fmt.Sprintf("parley-%d", time.Now().UnixNano()),
		// The agent's providers are the scripted server on loopback.
		"PARLEY_ALLOW_PRIVATE_URLS=true",
		// This test is about draining, not load shedding (the dispatch package tests
		// that): on a busy 2-core machine the CPU figure could refuse calls.
		"PARLEY_VOICE_MAX_LOAD=1",
		"PARLEY_LOG_LEVEL=info",
	}
	serve := startProc(t, bin, "serve", env, "serve")
	base := "http://" + serve.waitLog(t, regexp.MustCompile(`API listening" addr=(\S+)`), 30*time.Second)[1]
	registered := regexp.MustCompile(`voice worker registered with LiveKit" worker_id=(\S+)`)
	a := startProc(t, bin, "worker A", env, "worker")
	b := startProc(t, bin, "worker B", env, "worker")
	a.waitLog(t, registered, 30*time.Second)
	b.waitLog(t, registered, 30*time.Second)
	metricsA := "http://" + a.waitLog(t, regexp.MustCompile(`worker metrics listening" addr=(\S+)`), 10*time.Second)[1] + "/metrics"

	code, _ := postJSON(t, base+"/v1/auth/register", "", map[string]string{"email": "ops@example.com", "password": "a long enough password"})
	if code != 201 && code != 200 {
		t.Fatalf("register: %d", code)
	}
	_, login := postJSON(t, base+"/v1/auth/login", "", map[string]string{"email": "ops@example.com", "password": "a long enough password"})
	token, _ := login["access_token"].(string)
	prov := map[string]any{"provider": "openai", "base_url": srv.URL, "api_key": "k"}
	code, agent := postJSON(t, base+"/v1/agents", token, map[string]any{
		"agent_name": "Front desk", "begin_message": "Hello.", "llm": prov, "stt": prov, "tts": prov,
		"response_engine": map[string]any{"system_prompt": "You are a receptionist."},
		// The callers stay silent for minutes on a loaded machine (-race, 40 rooms):
		// no silence hang-up may end a call before the test does.
		"end_call_after_silence_ms": 600000,
	})
	if code != 201 {
		t.Fatalf("create agent: %d %v", code, agent)
	}
	agentID := agent["agent_id"].(string)

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	type call struct {
		id     string
		caller *lktest.Caller
	}
	// startCalls makes n web calls and joins a caller to each; it returns once every
	// caller has heard its greeting (so a worker has each call in progress).
	startCalls := func(n int) []call {
		out := make([]call, n)
		var wg sync.WaitGroup
		errc := make(chan error, n)
		for i := range out {
			code, wc := postJSON(t, base+"/v1/calls/web", token, map[string]any{"agent_id": agentID})
			if code != 201 && code != 200 {
				t.Fatalf("web call: %d %v", code, wc)
			}
			out[i].id = wc["call_id"].(string)
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := lktest.Join(ctx, wc["url"].(string), wc["access_token"].(string))
				if err != nil {
					errc <- err
					return
				}
				out[i].caller = c
				if _, err := c.WaitSpeech(ctx, time.Time{}); err != nil {
					errc <- fmt.Errorf("call %s: greeting: %w", out[i].id, err)
				}
			}()
			// Rooms arrive a few a second, as callers do, not all in one instant.
			time.Sleep(100 * time.Millisecond)
		}
		wg.Wait()
		t.Cleanup(func() {
			for _, c := range out {
				if c.caller != nil {
					c.caller.Close()
				}
			}
		})
		select {
		case err := <-errc:
			t.Fatal(err)
		default:
		}
		return out
	}

	first := startCalls(20)
	onA, onB := a.calls(), b.calls()
	var aCalls []call
	for _, c := range first {
		switch {
		case onA[c.id] && !onB[c.id]:
			aCalls = append(aCalls, c)
		case onB[c.id] && !onA[c.id]:
		default:
			t.Fatalf("call %s: on A %v, on B %v", c.id, onA[c.id], onB[c.id])
		}
	}
	t.Logf("20 rooms: %d on worker A, %d on worker B", len(aCalls), 20-len(aCalls))
	// The worker's own /metrics shows its calls.
	if m := scrape(t, metricsA); !strings.Contains(m, fmt.Sprintf("parley_voice_worker_calls %d\n", len(aCalls))) {
		t.Errorf("worker A metrics lack parley_voice_worker_calls %d:\n%s", len(aCalls), grepLines(m, "parley_voice_worker"))
	}
	if len(aCalls) == 0 || len(aCalls) == 20 {
		t.Fatalf("rooms did not spread: %d of 20 on worker A", len(aCalls))
	}

	// SIGTERM worker A mid-call.
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	a.waitLog(t, regexp.MustCompile(`voice worker draining" live_calls=(\d+)`), 10*time.Second)
	if m := scrape(t, metricsA); !strings.Contains(m, "parley_voice_worker_draining 1\n") {
		t.Errorf("worker A metrics while draining:\n%s", grepLines(m, "parley_voice_worker"))
	}

	// Its live calls go on: a caller asks and hears the answer after the signal.
	q, err := lktest.LoadSpeech("../../voice/testdata/hello.wav")
	if err != nil {
		t.Fatal(err)
	}
	ask := aCalls[0].caller
	asked := ask.Say(q)
	ask.Say(lktest.Silence(1500 * time.Millisecond))
	if _, err := ask.WaitSpeech(ctx, asked.Add(time.Duration(len(q))*time.Second/lktest.Rate)); err != nil {
		t.Fatalf("a drained worker's call got no answer: %v", err)
	}

	// New rooms all go to worker B.
	later := startCalls(4)
	onA, onB = a.calls(), b.calls()
	for _, c := range later {
		if onA[c.id] || !onB[c.id] {
			t.Errorf("call %s made after SIGTERM: on A %v, on B %v", c.id, onA[c.id], onB[c.id])
		}
	}
	select {
	case err := <-a.done:
		t.Fatalf("worker A exited with live calls: %v", err)
	default:
	}

	// Its callers hang up; worker A then exits cleanly.
	for _, c := range aCalls {
		c.caller.Close()
	}
	select {
	case err := <-a.done:
		a.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("worker A exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker A did not exit after its last call ended")
	}
	// Its calls were completed as the callers' hang-ups.
	for _, c := range aCalls {
		var got map[string]any
		deadline := time.Now().Add(10 * time.Second)
		for {
			got = getJSON(t, base+"/v1/calls/"+c.id, token)
			if got["call_status"] != "in_progress" || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got["call_status"] != "completed" || got["disconnection_reason"] != "user_hangup" {
			t.Errorf("call %s on the drained worker: %v / %v", c.id, got["call_status"], got["disconnection_reason"])
		}
	}
}

func getJSON(t *testing.T, url, token string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return out
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
