// Package siptest is the test plumbing of phone calls shared by the packages whose tests
// place real SIP calls: the check that the programs are installed (skip locally, fail
// under CI), a LiveKit SIP stack per test or per package, sipp as the phone with a
// message trace for failures, the phone's media socket that counts the speech the
// bridge sends, and a number routed into rooms by an inbound trunk and dispatch rule.
package siptest

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"

	"github.com/parleyhq/parley/internal/lkserver"
	"github.com/parleyhq/parley/internal/pgcluster"
	"github.com/parleyhq/parley/internal/sipbridge"
	"github.com/parleyhq/parley/voice/audio"
)

// RequireTools fails the test under CI (CI set) or skips it elsewhere when
// livekit-server, livekit-sip or redis-server is missing, or sipp when sipp is set, or
// any of files (recordings a scenario plays, say).
func RequireTools(t testing.TB, sipp bool, files ...string) {
	t.Helper()
	var missing []string
	if _, err := lkserver.FindBinary(); err != nil {
		missing = append(missing, err.Error())
	}
	if _, err := sipbridge.FindBinary(); err != nil {
		missing = append(missing, err.Error())
	}
	if _, err := sipbridge.FindRedis(); err != nil {
		missing = append(missing, err.Error())
	}
	if sipp {
		if _, err := exec.LookPath("sipp"); err != nil {
			missing = append(missing, "sipp not found (run scripts/setup)")
		}
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, err.Error())
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal(strings.Join(missing, "; "))
	}
	t.Skip(strings.Join(missing, "; "))
}

// StartStack starts a stack (sipbridge.StartStack) for one test in its temporary
// directory, and stops it when the test ends. It does not check the tools: call
// RequireTools first.
func StartStack(t testing.TB) *sipbridge.Stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	begin := time.Now()
	s, err := sipbridge.StartStack(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stack ready in %v: redis %s, livekit %s, sip %s", time.Since(begin).Round(time.Millisecond),
		s.Redis.Addr(), s.Server.URL(), s.Bridge.SIPAddr())
	t.Cleanup(s.Stop)
	return s
}

// SharedStack is one stack for all the tests of a package (starting one takes
// seconds), started by the first test that asks for it; TestMain calls Stop after
// m.Run. Tests sharing it keep apart by their numbers and agent names.
type SharedStack struct {
	once  sync.Once
	stack *sipbridge.Stack
	dir   string
	err   error
}

// Get returns the stack, starting it on first use; it skips or fails the test as
// RequireTools does when a program of the stack is missing.
func (s *SharedStack) Get(t testing.TB) *sipbridge.Stack {
	t.Helper()
	RequireTools(t, false)
	s.once.Do(func() {
		// Not t.TempDir: the stack outlives the test that started it.
		if s.dir, s.err = os.MkdirTemp("", "parley-sip-"); s.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		s.stack, s.err = sipbridge.StartStack(ctx, s.dir)
	})
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.stack
}

// Stop stops the stack, if it was started, and removes its directory.
func (s *SharedStack) Stop() {
	if s.stack != nil {
		s.stack.Stop()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// Sipp is a running sipp: the phone of a test.
type Sipp struct {
	Port int // its SIP port on 127.0.0.1
	out  lockedBuffer
	msgs string
	done chan struct{}
	err  error
}

// SippConfig says what sipp runs.
type SippConfig struct {
	// Dir is sipp's working directory: a relative Scenario, and the audio files the
	// scenario's rtp_stream and play_pcap actions open, are found from there.
	Dir      string
	Scenario string        // -sf
	Timeout  time.Duration // -timeout, after which sipp gives up with an error; 90 s if 0
	// Args follow the standard flags: scenario keys, -m, and last the address to call
	// when sipp is the caller.
	Args []string
}

// StartSipp starts sipp on a free port of 127.0.0.1 with media on 127.0.0.1, no stdin,
// a timeout that is an error, and a trace of the SIP messages (see Messages and
// Output). It is killed when ctx ends or the test ends.
func StartSipp(t testing.TB, ctx context.Context, cfg SippConfig) *Sipp {
	t.Helper()
	port, err := pgcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 90 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	// The SIP messages go to a file: sipp run with -nostdin prints nothing until it
	// exits, so the trace is what shows where a failed call stopped.
	s := &Sipp{Port: port, msgs: filepath.Join(t.TempDir(), "sipp-messages.log"), done: make(chan struct{})}
	args := append([]string{"-sf", cfg.Scenario, "-t", "u1", "-i", "127.0.0.1", "-p", strconv.Itoa(port), "-mi", "127.0.0.1",
		"-nostdin", "-timeout", strconv.Itoa(int(timeout.Seconds())) + "s", "-timeout_error",
		"-trace_msg", "-message_file", s.msgs}, cfg.Args...)
	cmd := exec.CommandContext(ctx, "sipp", args...)
	cmd.Dir = cfg.Dir
	cmd.Stdout, cmd.Stderr = &s.out, &s.out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { s.err = cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	return s
}

// Done is closed when sipp has exited; Err is then its exit error.
func (s *Sipp) Done() <-chan struct{} { return s.done }

// Err is sipp's exit error (nil for a successful scenario), once Done is closed.
func (s *Sipp) Err() error { return s.err }

// Wait waits for sipp to exit and returns its exit error; it fails the test, with
// sipp's output, if ctx ends first.
func (s *Sipp) Wait(t testing.TB, ctx context.Context) error {
	t.Helper()
	select {
	case <-s.done:
		return s.err
	case <-ctx.Done():
		t.Fatalf("sipp did not finish:\n%s", s.Output())
		return nil
	}
}

// Messages is the SIP message trace so far.
func (s *Sipp) Messages() string {
	b, _ := os.ReadFile(s.msgs)
	return string(b)
}

// Output is the tail of sipp's output and of its SIP message trace.
func (s *Sipp) Output() string {
	return Tail(s.out.String()) + "\n--- SIP messages ---\n" + Tail(s.Messages())
}

// lockedBuffer is sipp's output, written by exec's copying goroutine and read by the
// test while sipp may still run.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// RTPSink is a phone's media socket: it counts the PCMU RTP packets the bridge sends
// and how many of them are speech.
type RTPSink struct {
	conn    *net.UDPConn
	packets atomic.Int64
	speech  atomic.Int64 // 20 ms packets louder than -45 dBFS, lktest's speech threshold
	done    chan struct{}
}

// NewRTPSink listens on a free UDP port of 127.0.0.1 until the test ends.
func NewRTPSink(t testing.TB) *RTPSink {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &RTPSink{conn: c, done: make(chan struct{})}
	go s.run()
	t.Cleanup(func() { c.Close(); <-s.done })
	return s
}

// Port is the sink's UDP port: the scenario's rtpport key.
func (s *RTPSink) Port() int { return s.conn.LocalAddr().(*net.UDPAddr).Port }

// Packets is how many PCMU packets arrived.
func (s *RTPSink) Packets() int64 { return s.packets.Load() }

// Speech is how much speech the phone heard.
func (s *RTPSink) Speech() time.Duration {
	return time.Duration(s.speech.Load()) * 20 * time.Millisecond
}

func (s *RTPSink) run() {
	defer close(s.done)
	buf := make([]byte, 2048)
	var pcm []int16
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			return
		}
		// RTP: a 12-byte header (no CSRCs or extensions from the bridge), payload type
		// 0 (PCMU) in the low 7 bits of the second byte.
		if n <= 12 || buf[0]>>6 != 2 || buf[1]&0x7f != 0 {
			continue
		}
		s.packets.Add(1)
		pcm = audio.DecodeUlaw(pcm[:0], buf[12:n])
		if audio.DBFS(pcm) > -45 {
			s.speech.Add(1)
		}
	}
}

// RouteNumber makes, named name, an inbound trunk for number that accepts calls from
// 127.0.0.1 and an individual dispatch rule for it: each call gets a new room named
// call-<caller>_<random>, configured by room when not nil (its agent dispatches, say).
// It does not delete them: the caller does, or the stack goes with the test.
func RouteNumber(t testing.TB, ctx context.Context, sc *lksdk.SIPClient, name, number string, room *livekit.RoomConfiguration) (*livekit.SIPInboundTrunkInfo, *livekit.SIPDispatchRuleInfo) {
	t.Helper()
	trunk, err := sc.CreateSIPInboundTrunk(ctx, &livekit.CreateSIPInboundTrunkRequest{Trunk: &livekit.SIPInboundTrunkInfo{
		Name: name, Numbers: []string{number}, AllowedAddresses: []string{"127.0.0.1/32"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	rule, err := sc.CreateSIPDispatchRule(ctx, &livekit.CreateSIPDispatchRuleRequest{DispatchRule: &livekit.SIPDispatchRuleInfo{
		Name: name, TrunkIds: []string{trunk.SipTrunkId},
		Rule: &livekit.SIPDispatchRule{Rule: &livekit.SIPDispatchRule_DispatchRuleIndividual{
			DispatchRuleIndividual: &livekit.SIPDispatchRuleIndividual{RoomPrefix: "call-"},
		}},
		RoomConfig: room,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return trunk, rule
}

// Eventually polls cond every 100 ms until it holds, failing the test when ctx ends.
func Eventually(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Tail is the last 3000 bytes of s: enough of a log to see why a call failed.
func Tail(s string) string {
	if len(s) > 3000 {
		return s[len(s)-3000:]
	}
	return s
}
