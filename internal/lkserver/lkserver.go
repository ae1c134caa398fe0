// Package lkserver runs a managed `livekit-server --dev` for `parley dev` and for tests:
// loopback only, on free ports, with the dev key pair (devkey/secret) and no Redis.
package lkserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/parleyhq/parley/internal/pgcluster"
)

// Version is the livekit-server release scripts/setup builds.
const Version = "v1.13.5"

// Dev credentials of livekit-server --dev.
const (
	DevKey    = "devkey"
	DevSecret = "secret"
)

// Config describes a managed server.
type Config struct {
	Binary  string // path to livekit-server; FindBinary when empty
	WorkDir string // config and log go here
	// RedisAddr, when set, points the server at Redis (needed with the SIP bridge).
	RedisAddr string
}

// Server is a running livekit-server.
type Server struct {
	cfg      Config
	port     int
	cmd      *exec.Cmd
	done     chan struct{}
	stopOnce sync.Once
}

// FindBinary looks for livekit-server: $PARLEY_LIVEKIT_BIN, the setup cache
// ($PARLEY_CACHE_DIR or ~/.cache/parley)/bin, then PATH.
func FindBinary() (string, error) {
	if p := os.Getenv("PARLEY_LIVEKIT_BIN"); p != "" {
		return p, nil
	}
	cache := os.Getenv("PARLEY_CACHE_DIR")
	if cache == "" {
		base, err := os.UserCacheDir()
		if err == nil {
			cache = filepath.Join(base, "parley")
		}
	}
	if cache != "" {
		p := filepath.Join(cache, "bin", "livekit-server-"+Version)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("livekit-server"); err == nil {
		return p, nil
	}
	return "", errors.New("lkserver: livekit-server not found (run scripts/setup)")
}

// URL is the websocket URL clients and agents connect to.
func (s *Server) URL() string { return "ws://127.0.0.1:" + strconv.Itoa(s.port) }

// HTTPURL is the server's HTTP (Twirp API) URL.
func (s *Server) HTTPURL() string { return "http://127.0.0.1:" + strconv.Itoa(s.port) }

// PID is the server process's ID, for reading its CPU and memory use from /proc.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Start launches livekit-server on free loopback ports and waits until it answers.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Binary == "" {
		b, err := FindBinary()
		if err != nil {
			return nil, err
		}
		cfg.Binary = b
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return nil, err
	}
	var ports [3]int
	for i := range ports {
		p, err := pgcluster.FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	// One UDP port (ICE/UDP mux) and one TCP fallback port instead of the default
	// 50000-60000 range, so several instances can run side by side on one machine.
	conf := fmt.Sprintf(`port: %d
bind_addresses: ["127.0.0.1"]
rtc:
  tcp_port: %d
  udp_port: %d
  node_ip: 127.0.0.1
  use_external_ip: false
keys:
  %s: %s
logging:
  level: warn
`, ports[0], ports[1], ports[2], DevKey, DevSecret)
	if cfg.RedisAddr != "" {
		conf += "redis:\n  address: " + cfg.RedisAddr + "\n"
	}
	confPath := filepath.Join(cfg.WorkDir, "livekit.yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(cfg.WorkDir, "livekit.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(cfg.Binary, "--config", confPath, "--dev", "--bind", "127.0.0.1", "--node-ip", "127.0.0.1")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("lkserver: start: %w", err)
	}
	s := &Server{cfg: cfg, port: ports[0], cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(s.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := s.Ping(ctx); err == nil {
			return s, nil
		}
		select {
		case <-s.done:
			tail, _ := os.ReadFile(filepath.Join(cfg.WorkDir, "livekit.log"))
			if len(tail) > 2000 {
				tail = tail[len(tail)-2000:]
			}
			return nil, fmt.Errorf("lkserver: livekit-server exited during start-up:\n%s", tail)
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, errors.New("lkserver: livekit-server did not answer within 30s")
		}
	}
}

// Ping checks that the server answers HTTP.
func (s *Server) Ping(ctx context.Context) error {
	return Ping(ctx, s.HTTPURL())
}

// Ping checks that a LiveKit server at httpURL answers (its root path returns 200 "OK").
func Ping(ctx context.Context, httpURL string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, httpURL, nil)
	if err != nil {
		return err
	}
	// No keep-alive: an idle connection held open would delay the server's graceful stop.
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("livekit: status %d", resp.StatusCode)
	}
	return nil
}

// Stop terminates the server and waits for it; safe to call twice.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		// The first SIGTERM asks for a graceful stop; livekit-server ignores it while still
		// initialising, and a second one forces the exit.
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
			return
		case <-time.After(2 * time.Second):
		}
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	})
}
