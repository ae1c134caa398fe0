package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildParley compiles the binary once for the tests that run it as a process.
func buildParley(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "parley")
	cmd := exec.Command("go", "build", "-tags", "nolibopusfile", "-o", bin, ".")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// reachableDir is a temporary directory the postgres user can enter: as root, PostgreSQL
// runs as that user, and t.TempDir's parent is private to us.
func reachableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "parley-dev-test-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// lockedBuffer is a bytes.Buffer safe to write from exec's copying goroutine while the
// test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type devProc struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	url    string
	banner string
	done   chan error
}

var apiLine = regexp.MustCompile(`API\s+(http://\S+)/v1/ping`)

// startDev runs `parley dev` and waits for its ready banner.
func startDev(t *testing.T, bin, dataDir string) *devProc {
	t.Helper()
	cmd := exec.Command(bin, "dev", "--addr", "127.0.0.1:0", "--data-dir", dataDir)
	// A clean environment: the sandbox must need nothing from the caller's.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	if v := os.Getenv("PARLEY_CACHE_DIR"); v != "" {
		cmd.Env = append(cmd.Env, "PARLEY_CACHE_DIR="+v)
	}
	stdout, _ := cmd.StdoutPipe()
	logs := &lockedBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &devProc{cmd: cmd, out: logs, done: make(chan error, 1)}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		p.done <- cmd.Wait()
	}()
	var banner strings.Builder
	deadline := time.After(90 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("parley dev exited before it was ready:\n%s\n%s", banner.String(), logs.String())
			}
			banner.WriteString(l + "\n")
			if m := apiLine.FindStringSubmatch(l); m != nil {
				p.url = m[1]
			}
			if strings.Contains(l, "Ctrl-C stops everything") {
				p.banner = banner.String()
				go func() {
					for range lines {
					}
				}()
				return p
			}
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("parley dev not ready in 90s:\n%s\n%s", banner.String(), logs.String())
		}
	}
}

// stop sends Ctrl-C and waits for a clean exit.
func (p *devProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("parley dev exited with %v after Ctrl-C:\n%s", err, p.out.String())
		}
	case <-time.After(60 * time.Second):
		p.cmd.Process.Kill()
		t.Fatalf("parley dev did not stop within 60s of Ctrl-C:\n%s", p.out.String())
	}
}

func postJSON(t *testing.T, url, token string, body any) (int, map[string]any) {
	t.Helper()
	raw, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", url, bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// `parley dev` starts from nothing, serves the API with a bootstrap admin, stops cleanly on
// Ctrl-C, and on the next start finds everything where it left it.
func TestDevSandboxLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildParley(t)
	dataDir := filepath.Join(reachableDir(t), "sandbox")

	p := startDev(t, bin, dataDir)
	t.Logf("first start banner:\n%s", p.banner)
	if p.url == "" {
		t.Fatalf("no API URL in banner:\n%s", p.banner)
	}
	email := regexp.MustCompile(`email\s+(\S+)`).FindStringSubmatch(p.banner)
	pw := regexp.MustCompile(`password\s+(\S+)`).FindStringSubmatch(p.banner)
	if email == nil || pw == nil {
		t.Fatalf("no bootstrap admin login in first-start banner:\n%s", p.banner)
	}
	resp, err := http.Get(p.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	ready, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(ready), `"livekit"`) {
		t.Fatalf("readyz %d: %s", resp.StatusCode, ready)
	}
	code, login := postJSON(t, p.url+"/v1/auth/login", "", map[string]string{"email": email[1], "password": pw[1]})
	if code != 200 {
		t.Fatalf("bootstrap login: %d %v", code, login)
	}
	token, _ := login["access_token"].(string)
	code, agent := postJSON(t, p.url+"/v1/agents", token, map[string]any{"agent_name": "Front desk", "begin_message": "Hello!"})
	if code != 201 {
		t.Fatalf("create agent: %d %v", code, agent)
	}
	pidFile := filepath.Join(dataDir, "postgres", "pgdata", "postmaster.pid")
	if _, err := os.Stat(pidFile); err != nil {
		t.Fatalf("the managed cluster is not in the data directory: %v", err)
	}
	p.stop(t)
	if _, err := os.Stat(pidFile); err == nil {
		t.Fatal("PostgreSQL still running (postmaster.pid left) after Ctrl-C")
	}

	// Second start: no new admin, same data.
	p = startDev(t, bin, dataDir)
	defer p.stop(t)
	if strings.Contains(p.banner, "First start") {
		t.Fatalf("second start created another admin:\n%s", p.banner)
	}
	code, login = postJSON(t, p.url+"/v1/auth/login", "", map[string]string{"email": email[1], "password": pw[1]})
	if code != 200 {
		t.Fatalf("login after restart: %d %v", code, login)
	}
	req, _ := http.NewRequest("GET", p.url+"/v1/agents/"+agent["agent_id"].(string), nil)
	req.Header.Set("Authorization", "Bearer "+login["access_token"].(string))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("agent lost across restart: %d", resp.StatusCode)
	}
}

// Two sandboxes run side by side with their own addresses and data directories.
func TestDevSideBySide(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildParley(t)
	root := reachableDir(t)
	a := startDev(t, bin, filepath.Join(root, "a"))
	defer a.stop(t)
	b := startDev(t, bin, filepath.Join(root, "b"))
	defer b.stop(t)
	if a.url == b.url {
		t.Fatalf("both on %s", a.url)
	}
	for _, u := range []string{a.url, b.url} {
		resp, err := http.Get(u + "/v1/ping")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", u, resp.StatusCode)
		}
	}
}
