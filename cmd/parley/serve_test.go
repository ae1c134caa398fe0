package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/dbtest"
)

// The production path: `parley migrate` against an external database, `parley serve`
// refusing to run on a stale schema and then serving, `parley worker` running jobs, and
// both draining on SIGTERM.
func TestServeAndWorkerAgainstExternalDatabase(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildParley(t)
	dbURL := dbtest.URL(t)
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"PARLEY_DATABASE_URL=" + dbURL,
		"PARLEY_JWT_SECRET=0123456789abcdef0123456789abcdef-test",
		"PARLEY_SECRET_KEY=" + strings.Repeat("ab", 32),
		"PARLEY_ADDR=127.0.0.1:0",
		"PARLEY_WORKER_METRICS_ADDR=127.0.0.1:0",
		"PARLEY_RECORDINGS_DIR=" + t.TempDir(),
	}
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("migrate", "down", "--all"); err != nil {
		t.Fatalf("migrate down: %v\n%s", err, out)
	}
	out, err := run("serve")
	if err == nil || !strings.Contains(out, "pending migrations") {
		t.Fatalf("serve on an unmigrated database: err %v\n%s", err, out)
	}
	if out, err := run("migrate", "up"); err != nil || !strings.Contains(out, "applied") {
		t.Fatalf("migrate up: %v\n%s", err, out)
	}
	out, err = run("migrate", "status")
	if err != nil || strings.Contains(out, "pending") || !strings.Contains(out, "0001") {
		t.Fatalf("migrate status: %v\n%s", err, out)
	}
	// A bad setting is refused at start-up with a message naming it.
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(append([]string{}, env...), "PARLEY_RATE_LIMIT_USER=many")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "PARLEY_RATE_LIMIT_USER") {
		t.Fatalf("bad setting accepted: %v\n%s", err, out)
	}

	serve := exec.Command(bin, "serve")
	serve.Env = env
	stderr, _ := serve.StderrPipe()
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	addrRE := regexp.MustCompile(`API listening" addr=(\S+)`)
	addr := make(chan string, 1)
	logs := &lockedBuffer{}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.Write([]byte(sc.Text() + "\n"))
			if m := addrRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case <-time.After(30 * time.Second):
		serve.Process.Kill()
		t.Fatalf("serve did not start:\n%s", logs.String())
	}
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("readyz %d: %s", resp.StatusCode, body)
	}
	// serve never lifts the SSRF guard unless told to: an agent whose webhook points at
	// loopback is refused.
	code, reg := postJSON(t, base+"/v1/auth/register", "", map[string]string{"email": "ops@example.com", "password": "a long enough password"})
	if code != 201 && code != 200 {
		t.Fatalf("register: %d %v", code, reg)
	}
	code, login := postJSON(t, base+"/v1/auth/login", "", map[string]string{"email": "ops@example.com", "password": "a long enough password"})
	if code != 200 {
		t.Fatalf("login: %d %v", code, login)
	}
	code, res := postJSON(t, base+"/v1/agents", login["access_token"].(string), map[string]any{"agent_name": "x", "webhook_url": "http://127.0.0.1:9/hook"})
	if code != 422 {
		t.Fatalf("loopback webhook under serve: %d %v", code, res)
	}

	worker := exec.Command(bin, "worker")
	worker.Env = env
	wlogs := &lockedBuffer{}
	worker.Stderr = wlogs
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	// The worker's periodic maintenance job runs on start.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(wlogs.String(), "worker running") {
		if time.Now().After(deadline) {
			t.Fatalf("worker did not start:\n%s", wlogs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range []*exec.Cmd{serve, worker} {
		c.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s exited with %v after SIGTERM:\n%s%s", c.Args[1], err, logs.String(), wlogs.String())
			}
		case <-time.After(40 * time.Second):
			c.Process.Kill()
			t.Fatalf("%s did not stop after SIGTERM", c.Args[1])
		}
	}
}
