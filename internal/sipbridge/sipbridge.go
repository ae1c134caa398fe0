// Package sipbridge runs, for `parley dev` and for tests, the pieces that put phone
// calls into LiveKit rooms: a managed Redis and a managed livekit-sip (the SIP-to-WebRTC
// bridge), both on free loopback ports in a work directory, next to a livekit-server from
// package lkserver that shares the Redis.
//
// Why three processes: livekit-sip refuses to start without Redis, and it talks to
// livekit-server only through Redis (psrpc): when an INVITE arrives, livekit-sip asks the
// server over Redis which trunk and dispatch rule match, and the server answers only if
// it was started with the same Redis (lkserver.Config.RedisAddr). The bridge then joins
// the room over the server's websocket URL as a participant of kind SIP.
//
// `parley dev` will start Redis and the bridge when livekit-sip is installed (by
// scripts/setup), and tests of inbound and outbound SIP use StartStack, which starts all
// three and waits until each is ready. Trunks and dispatch rules are then made with
// server-sdk-go's SIPClient against the server's HTTP URL.
//
// An inbound call rings (180, participant attribute sip.callStatus "ringing") from the
// moment the bridge has joined the room until another participant publishes an audio
// track there (or a second SIP participant joins): livekit-sip's
// inboundCall.waitSubscribe. Only then does it answer 200 OK and set sip.callStatus to
// "active". So an agent must join and publish before the caller is answered; the
// bridge gives up after the dispatch's ringing timeout (3 minutes by default).
package sipbridge

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/internal/pgcluster"
)

// Version is the livekit-sip release scripts/setup installs.
const Version = "v1.8.0"

// RTPPorts is the default number of UDP ports given to a bridge for media: each call holds one
// while it lasts and for up to 30 s after (livekit-sip drains a closed call's port so a
// new call cannot inherit stale media), so a small range serves dev and tests.
const RTPPorts = 32

// FindBinary looks for livekit-sip: $PARLEY_LIVEKIT_SIP_BIN, the setup cache
// ($PARLEY_CACHE_DIR or ~/.cache/parley)/bin, then PATH.
func FindBinary() (string, error) {
	if p := os.Getenv("PARLEY_LIVEKIT_SIP_BIN"); p != "" {
		return p, nil
	}
	cache := os.Getenv("PARLEY_CACHE_DIR")
	if cache == "" {
		if base, err := os.UserCacheDir(); err == nil {
			cache = filepath.Join(base, "parley")
		}
	}
	if cache != "" {
		p := filepath.Join(cache, "bin", "livekit-sip-"+Version)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("livekit-sip"); err == nil {
		return p, nil
	}
	return "", errors.New("sipbridge: livekit-sip not found (run scripts/setup)")
}

// FindRedis looks for redis-server: $PARLEY_REDIS_BIN, then PATH.
func FindRedis() (string, error) {
	if p := os.Getenv("PARLEY_REDIS_BIN"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	return "", errors.New("sipbridge: redis-server not found (run scripts/setup)")
}

// process is a child in its own process group, so that a Ctrl-C at the terminal reaches
// Parley only and Parley stops its children after draining; if Parley dies, the kernel
// sends the child SIGTERM (Pdeathsig).
type process struct {
	name     string
	log      string
	cmd      *exec.Cmd
	done     chan struct{}
	stopOnce sync.Once
}

func startProcess(name, logPath string, bin string, args ...string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("sipbridge: start %s: %w", name, err)
	}
	p := &process{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

// waitReady polls ready until it succeeds, the process exits, ctx ends or 30 s pass.
func (p *process) waitReady(ctx context.Context, ready func(context.Context) error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			// livekit-sip prints its start-up error and exits 0, so the log says why.
			return fmt.Errorf("sipbridge: %s exited during start-up:\n%s", p.name, p.tail())
		case <-ctx.Done():
			p.stop(syscall.SIGTERM)
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop(syscall.SIGTERM)
			return fmt.Errorf("sipbridge: %s not ready within 30s (%v):\n%s", p.name, err, p.tail())
		}
	}
}

func (p *process) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// stop sends sig to the process group, then SIGKILL after 5 s; safe to call twice.
func (p *process) stop(sig syscall.Signal) {
	p.stopOnce.Do(func() {
		pg := -p.cmd.Process.Pid
		syscall.Kill(pg, sig)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			syscall.Kill(pg, syscall.SIGKILL)
			<-p.done
		}
	})
}

// Redis is a managed redis-server: loopback only, on a free port, with no persistence
// (no RDB snapshots, no AOF): it holds only livekit's transient routing state.
type Redis struct {
	addr string
	p    *process
}

// StartRedis launches redis-server with its log in workDir and waits until it answers
// PING.
func StartRedis(ctx context.Context, workDir string) (*Redis, error) {
	bin, err := FindRedis()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return nil, err
	}
	port, err := pgcluster.FreePort()
	if err != nil {
		return nil, err
	}
	// Flags rather than a config file: the Debian build reads redis.conf syntax from
	// argv too. protected-mode is moot on loopback; --save "" turns off snapshots.
	p, err := startProcess("redis-server", filepath.Join(workDir, "redis.log"), bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", workDir, "--daemonize", "no", "--loglevel", "warning")
	if err != nil {
		return nil, err
	}
	r := &Redis{addr: "127.0.0.1:" + strconv.Itoa(port), p: p}
	if err := p.waitReady(ctx, r.Ping); err != nil {
		return nil, err
	}
	return r, nil
}

// Addr is Redis's host:port.
func (r *Redis) Addr() string { return r.addr }

// Ping checks that Redis answers PING with PONG.
func (r *Redis) Ping(ctx context.Context) error {
	line, err := redisCommand(ctx, r.addr, "PING")
	if err != nil {
		return err
	}
	if line != "+PONG" {
		return fmt.Errorf("redis: PING answered %q", line)
	}
	return nil
}

// redisCommand sends one command and returns the first line of the reply: enough for
// the status, integer and array-length answers this package needs, without a client
// library.
func redisCommand(ctx context.Context, addr string, args ...string) (string, error) {
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	var req strings.Builder
	fmt.Fprintf(&req, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(req.String())); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// Stop terminates Redis and waits for it; safe to call twice.
func (r *Redis) Stop() { r.p.stop(syscall.SIGTERM) }

// Config describes a managed bridge.
type Config struct {
	Binary  string // path to livekit-sip; FindBinary when empty
	WorkDir string // config and log go here
	// RedisAddr is the Redis the LiveKit server also uses (required).
	RedisAddr string
	// LiveKitURL is the server's websocket URL (required); APIKey and APISecret default
	// to lkserver's dev pair.
	LiveKitURL        string
	APIKey, APISecret string
	// SIPPort is the SIP port (UDP and TCP) on ListenIP; 0 picks a free one. `parley dev`
	// uses a fixed port so a softphone's settings survive restarts.
	SIPPort int
	// RTPPorts is the size of the media port range; 0 means RTPPorts (32). Each call
	// holds a port, so a load test of many concurrent calls needs a wider range.
	RTPPorts int
}

func (c *Config) validate() error {
	if c.WorkDir == "" {
		return errors.New("sipbridge: WorkDir is required")
	}
	if c.RedisAddr == "" {
		return errors.New("sipbridge: RedisAddr is required")
	}
	if c.LiveKitURL == "" {
		return errors.New("sipbridge: LiveKitURL is required")
	}
	if c.APIKey == "" && c.APISecret == "" {
		c.APIKey, c.APISecret = lkserver.DevKey, lkserver.DevSecret
	}
	if c.RTPPorts < 0 || c.RTPPorts > 5000 {
		return fmt.Errorf("sipbridge: RTPPorts %d is outside [0, 5000]", c.RTPPorts)
	}
	if c.RTPPorts == 0 {
		c.RTPPorts = RTPPorts
	}
	return nil
}

// Bridge is a running livekit-sip.
type Bridge struct {
	redis      string
	sipPort    int
	healthPort int
	rtp        [2]int
	p          *process
}

// Start launches livekit-sip with SIP on a free loopback port (UDP and TCP), a free RTP
// port range (Config.RTPPorts wide), and waits until it is ready (see Ready).
func Start(ctx context.Context, cfg Config) (*Bridge, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
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
	sipPort := cfg.SIPPort
	if sipPort == 0 {
		p, err := freeUDPTCPPort()
		if err != nil {
			return nil, err
		}
		sipPort = p
	}
	healthPort, err := pgcluster.FreePort()
	if err != nil {
		return nil, err
	}
	rtpStart, err := freeUDPRange(cfg.RTPPorts)
	if err != nil {
		return nil, err
	}
	b := &Bridge{redis: cfg.RedisAddr, sipPort: sipPort, healthPort: healthPort, rtp: [2]int{rtpStart, rtpStart + cfg.RTPPorts - 1}}
	// listen_ip keeps SIP on loopback; nat_1_to_1_ip makes the bridge announce 127.0.0.1
	// in Contact and SDP instead of the first non-loopback interface, which a caller on
	// loopback could not reach. media_timeout_initial is left at its default (30 s): a
	// call's first RTP may come late on a loaded machine. max_cpu_utilization 1 turns
	// off the bridge's load shedding: by default it refuses outbound calls ("cpu
	// exhausted") while the machine's CPU is over 90% busy, which on a developer's
	// laptop, or a test machine running the whole suite, is routine and says nothing
	// about the bridge.
	conf := fmt.Sprintf(`api_key: %s
api_secret: %s
ws_url: %s
redis:
  address: %s
sip_port: %d
listen_ip: 127.0.0.1
nat_1_to_1_ip: 127.0.0.1
rtp_port:
  start: %d
  end: %d
health_port: %d
max_cpu_utilization: 1
logging:
  level: warn
`, cfg.APIKey, cfg.APISecret, cfg.LiveKitURL, cfg.RedisAddr, sipPort, b.rtp[0], b.rtp[1], healthPort)
	confPath := filepath.Join(cfg.WorkDir, "livekit-sip.yaml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	p, err := startProcess("livekit-sip", filepath.Join(cfg.WorkDir, "livekit-sip.log"), cfg.Binary, "--config", confPath)
	if err != nil {
		return nil, err
	}
	b.p = p
	if err := p.waitReady(ctx, b.Ready); err != nil {
		return nil, err
	}
	return b, nil
}

// SIPAddr is where to send INVITEs (UDP or TCP): 127.0.0.1:port.
func (b *Bridge) SIPAddr() string { return "127.0.0.1:" + strconv.Itoa(b.sipPort) }

// RTPPortRange is the first and last UDP port the bridge uses for media.
func (b *Bridge) RTPPortRange() (first, last int) { return b.rtp[0], b.rtp[1] }

// Ping checks the bridge's health endpoint. 429 (under load: CPU above 90%, common on a
// busy test machine) still means it is up and taking calls it has room for.
func (b *Bridge) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(b.healthPort)+"/", nil)
	if err != nil {
		return err
	}
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusTooManyRequests {
		return fmt.Errorf("livekit-sip: health status %d", resp.StatusCode)
	}
	return nil
}

// createTopic is the Redis channel livekit-sip subscribes to for CreateSIPParticipant
// requests (outbound calls) of the default cluster: psrpc's name for service
// SIPInternal, method CreateSIPParticipant, topic "" (cluster_id is unset).
const createTopic = "SIPInternal|CreateSIPParticipant|REQ"

// Ready checks that the bridge takes calls both ways. Its health endpoint answers once
// the SIP listeners are up (inbound calls work from then on: the bridge asks the server
// over Redis), but it registers for outbound calls a moment later; until it has
// subscribed to createTopic, CreateSIPParticipant would find no bridge.
func (b *Bridge) Ready(ctx context.Context) error {
	if err := b.Ping(ctx); err != nil {
		return err
	}
	// PUBSUB CHANNELS answers an array of the matching channels that have subscribers:
	// "*1" once the bridge has subscribed, "*0" before.
	n, err := redisCommand(ctx, b.redis, "PUBSUB", "CHANNELS", createTopic)
	if err != nil {
		return err
	}
	if n == "*0" {
		return errors.New("livekit-sip: not yet registered for outbound calls")
	}
	if !strings.HasPrefix(n, "*") {
		return fmt.Errorf("redis: PUBSUB CHANNELS answered %q", n)
	}
	return nil
}

// Stop ends every call at once and terminates the bridge; safe to call twice. SIGINT, not
// SIGTERM: on SIGTERM livekit-sip waits, without limit, for live calls to end, which is
// right for a production drain but not for dev or tests.
func (b *Bridge) Stop() { b.p.stop(syscall.SIGINT) }

// Stack is Redis, livekit-server and livekit-sip wired together, for tests of SIP calls.
type Stack struct {
	Redis  *Redis
	Server *lkserver.Server
	Bridge *Bridge
}

// StartStack starts Redis, then livekit-server pointed at it, then livekit-sip, each in
// its own subdirectory of workDir, waiting until each is ready.
func StartStack(ctx context.Context, workDir string) (*Stack, error) {
	s := &Stack{}
	var err error
	if s.Redis, err = StartRedis(ctx, filepath.Join(workDir, "redis")); err != nil {
		return nil, err
	}
	if s.Server, err = lkserver.Start(ctx, lkserver.Config{WorkDir: filepath.Join(workDir, "livekit"), RedisAddr: s.Redis.Addr()}); err != nil {
		s.Stop()
		return nil, err
	}
	if s.Bridge, err = Start(ctx, Config{WorkDir: filepath.Join(workDir, "sip"), RedisAddr: s.Redis.Addr(), LiveKitURL: s.Server.URL()}); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Stop stops the bridge, the server and Redis, in that order; safe to call twice.
func (s *Stack) Stop() {
	if s.Bridge != nil {
		s.Bridge.Stop()
	}
	if s.Server != nil {
		s.Server.Stop()
	}
	if s.Redis != nil {
		s.Redis.Stop()
	}
}

// freeUDPTCPPort finds a loopback port free for both TCP and UDP, as SIP listens on both.
func freeUDPTCPPort() (int, error) {
	for range 20 {
		p, err := pgcluster.FreePort()
		if err != nil {
			return 0, err
		}
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		u.Close()
		return p, nil
	}
	return 0, errors.New("sipbridge: no port free for both TCP and UDP")
}

// freeUDPRange finds n consecutive free UDP ports between 20000 and 30000: below Linux's
// ephemeral range (32768+), so ports the kernel hands out to other sockets later do not
// land in it, and away from livekit-sip's default 10000-20000.
func freeUDPRange(n int) (int, error) {
	for range 50 {
		start := 20000 + rand.IntN(10000-n)
		var held []net.PacketConn
		ok := true
		for p := start; p < start+n; p++ {
			c, err := net.ListenPacket("udp", "0.0.0.0:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			held = append(held, c)
		}
		for _, c := range held {
			c.Close()
		}
		if ok {
			return start, nil
		}
	}
	return 0, errors.New("sipbridge: no free UDP port range")
}
