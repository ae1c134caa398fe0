package dispatch

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/parleyhq/parley/internal/lkserver"
)

// Most tests share one livekit-server (each with its own agent name and rooms, so
// they cannot see each other's jobs); the reconnection test restarts its own.
var shared struct {
	once sync.Once
	dir  string
	srv  *lkserver.Server
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.srv != nil {
		shared.srv.Stop()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	// The server SDK's API clients keep idle keep-alive connections in
	// http.DefaultTransport; they are not the worker's.
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	// The worker starts goroutines (connection loop, reader, one per job); every test
	// must leave none behind. Checked after the shared server's own goroutine is gone.
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// requireLiveKit fails (under CI) or skips the test when livekit-server is missing.
func requireLiveKit(t *testing.T) {
	t.Helper()
	if _, err := lkserver.FindBinary(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

func sharedServer(t *testing.T) *lkserver.Server {
	t.Helper()
	requireLiveKit(t)
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "parley-dispatch-test-")
		if shared.err != nil {
			return
		}
		shared.srv, shared.err = lkserver.Start(context.Background(), lkserver.Config{WorkDir: shared.dir})
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.srv
}

func ownServer(t *testing.T) *lkserver.Server {
	t.Helper()
	requireLiveKit(t)
	s, err := lkserver.Start(context.Background(), lkserver.Config{WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

var nameRE = regexp.MustCompile(`[^a-z0-9]+`)

// agentName is a name unique to the test, so that tests sharing a server never get
// each other's jobs.
func agentName(t *testing.T) string {
	return "t-" + strings.Trim(nameRE.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// zeroLoad keeps the test process's CPU out of the reported load, so that the load is
// jobs/MaxJobs and the tests do not depend on how busy the machine is.
func zeroLoad() float64 { return 0 }

// startWorker starts a worker against url; it is stopped when the test ends.
func startWorker(t *testing.T, url string, cfg Config, h Handler) *Worker {
	t.Helper()
	cfg.URL = url
	cfg.APIKey, cfg.APISecret = lkserver.DevKey, lkserver.DevSecret
	if cfg.Load == nil {
		cfg.Load = zeroLoad
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	w, err := New(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	return w
}

// createDispatch asks the server for a job of agent name in room (created if need be).
func createDispatch(t *testing.T, s *lkserver.Server, room, name, metadata string) *livekit.AgentDispatch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := lksdk.NewAgentDispatchServiceClient(s.HTTPURL(), lkserver.DevKey, lkserver.DevSecret).
		CreateDispatch(ctx, &livekit.CreateAgentDispatchRequest{Room: room, AgentName: name, Metadata: metadata})
	if err != nil {
		t.Fatalf("create dispatch in %s: %v", room, err)
	}
	return d
}

func roomClient(s *lkserver.Server) *lksdk.RoomServiceClient {
	return lksdk.NewRoomServiceClient(s.HTTPURL(), lkserver.DevKey, lkserver.DevSecret)
}

// started is one job whose handler is running; it returns what release gets, or
// ctx's error when the job is cancelled.
type started struct {
	job     Job
	ctx     context.Context
	release chan error
}

// recorder is a Handler that reports each job it starts and holds it until released.
type recorder struct {
	jobs chan *started
}

func newRecorder() *recorder { return &recorder{jobs: make(chan *started, 100)} }

func (r *recorder) handle(ctx context.Context, job Job) error {
	s := &started{job: job, ctx: ctx, release: make(chan error, 1)}
	r.jobs <- s
	select {
	case err := <-s.release:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// next waits for the next job.
func (r *recorder) next(t *testing.T) *started {
	t.Helper()
	select {
	case s := <-r.jobs:
		return s
	case <-time.After(20 * time.Second):
		t.Fatal("no job within 20s")
		return nil
	}
}

// none checks that no job starts within d.
func (r *recorder) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case s := <-r.jobs:
		t.Fatalf("unexpected job %s in room %s", s.job.ID, s.job.Room.Name)
	case <-time.After(d):
	}
}

// eventually polls cond until it holds or 20 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proxy sits between workers and a livekit-server's /agent websocket: it records what
// workers send, can cut every connection, and can be pointed at another server (a
// LiveKit restart as the worker sees it: same address, new server).
type proxy struct {
	srv *httptest.Server
	wg  sync.WaitGroup

	mu       sync.Mutex
	upstream string
	conns    map[*websocket.Conn]bool
	sent     []*livekit.WorkerMessage
	refused  int // upgrades answered with an error: the server was not there
}

func newProxy(t *testing.T, upstream string) *proxy {
	p := &proxy{upstream: upstream, conns: make(map[*websocket.Conn]bool)}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(func() {
		p.cut()
		p.srv.Close()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) URL() string { return "ws" + strings.TrimPrefix(p.srv.URL, "http") }

func (p *proxy) setUpstream(u string) {
	p.mu.Lock()
	p.upstream = u
	p.mu.Unlock()
}

// cut closes every proxied connection, both sides, without a close handshake.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.CloseNow()
	}
}

// refusedCount is the number of connections refused for want of a server.
func (p *proxy) refusedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}

// messages returns what workers have sent so far.
func (p *proxy) messages() []*livekit.WorkerMessage {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*livekit.WorkerMessage(nil), p.sent...)
}

func (p *proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.wg.Add(1)
	defer p.wg.Done()
	p.mu.Lock()
	up := p.upstream
	p.mu.Unlock()
	upConn, resp, err := websocket.Dial(r.Context(), up+r.URL.RequestURI(), &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": r.Header.Values("Authorization")},
	})
	if err != nil {
		code := http.StatusBadGateway
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			code = resp.StatusCode
		}
		p.mu.Lock()
		p.refused++
		p.mu.Unlock()
		http.Error(w, err.Error(), code)
		return
	}
	down, err := websocket.Accept(w, r, nil)
	if err != nil {
		upConn.CloseNow()
		return
	}
	upConn.SetReadLimit(-1)
	down.SetReadLimit(-1)
	p.mu.Lock()
	p.conns[down], p.conns[upConn] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pump := func(from, to *websocket.Conn, record bool) {
		defer func() { done <- struct{}{} }()
		ctx := context.Background()
		for {
			typ, b, err := from.Read(ctx)
			if err != nil {
				return
			}
			if record {
				m := &livekit.WorkerMessage{}
				if proto.Unmarshal(b, m) == nil {
					p.mu.Lock()
					p.sent = append(p.sent, m)
					p.mu.Unlock()
				}
			}
			if to.Write(ctx, typ, b) != nil {
				return
			}
		}
	}
	go pump(down, upConn, true)
	go pump(upConn, down, false)
	<-done
	down.CloseNow()
	upConn.CloseNow()
	<-done
	p.mu.Lock()
	delete(p.conns, down)
	delete(p.conns, upConn)
	p.mu.Unlock()
}
