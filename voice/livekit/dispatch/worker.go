package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"google.golang.org/protobuf/proto"
)

// Timings of the connection. LiveKit's own limits are in livekit-server
// pkg/agent/worker.go (RegisterTimeout, AssignJobTimeout: 10 s each).
const (
	// registerTimeout bounds one connection attempt: dial, registration and the first
	// ping round trip. The server drops a socket that has not registered within 10 s.
	registerTimeout = 15 * time.Second
	// assignTimeout is how long a slot reserved by an accepted availability request
	// waits for its JobAssignment. The server sends the assignment as soon as it has
	// the answer, or gives up after 10 s from its request; 10 s from our answer covers
	// both.
	assignTimeout = 10 * time.Second
	// pingInterval: a WorkerPing this often; a ping still unanswered at the next tick
	// means a dead connection (a half-open TCP connection shows no error by itself).
	// The server pings the socket every 10 s too, which keeps idle-killing proxies away.
	pingInterval = 10 * time.Second
	// writeTimeout bounds one message write; a write that times out closes the
	// connection, which then reconnects.
	writeTimeout = 5 * time.Second
	// Reconnection backoff: first retry after about 250 ms, doubling up to 10 s, with
	// ±20% jitter so that workers cut off together do not reconnect in lockstep. A
	// connection that lived longer than backoffMax resets it. A LiveKit restart takes a
	// few seconds, so workers are back within one or two retries of its return.
	backoffBase = 250 * time.Millisecond
	backoffMax  = 10 * time.Second
	// readLimit: a ServerMessage holds a job (room, dispatch metadata) and a token,
	// usually a few KB; LiveKit allows 64 KB of metadata.
	readLimit = 1 << 20
)

// ErrClosed is returned by Start after Drain or Stop.
var ErrClosed = errors.New("dispatch: worker closed")

// errNotConnected: a message was due while the worker had no connection. Job and
// worker status updates are then dropped: after reconnecting, the server knows none of
// the old jobs, and the status is reported again right after registration.
var errNotConnected = errors.New("dispatch: not connected")

// Job is one room job LiveKit assigned to the worker: hold the conversation in Room.
type Job struct {
	ID         string // LiveKit job ID (AJ_...)
	DispatchID string // the agent dispatch that asked for it (AD_...)
	AgentName  string
	// Metadata is the dispatch metadata; Parley puts JSON {"call_id": ...} there.
	Metadata string
	// Attributes are the dispatch's attributes, if it had any.
	Attributes map[string]string
	Room       Room
	// Identity and Name are what the agent joins the room as; Token grants exactly
	// that (room join, agent kind, valid one hour).
	Identity string
	Name     string
	Token    string
	// URL to join at: the assignment's, or Config.URL when it names none.
	URL string
}

// Room is the room of a job, as the server described it when it created the job.
type Room struct {
	Name     string
	SID      string
	Metadata string
}

// Handler runs one whole job: it joins job.Room with job.Token, holds the conversation
// and returns when it ends. ctx is cancelled when the server terminates the job
// (JobTermination) and on Stop; the handler must then return promptly. Deleting the
// room sends no termination: the handler must also return when its room connection
// closes. A nil error
// reports the job JS_SUCCESS, an error JS_FAILED with its text; returning ctx's error
// after a termination counts as success. A panic is recovered and reported as a
// failure, so one bad call does not take the others down.
type Handler func(ctx context.Context, job Job) error

// Worker takes room jobs from a LiveKit server; see the package comment.
type Worker struct {
	cfg      Config
	handler  Handler
	log      *slog.Logger
	agentURL string
	load     func() float64

	jobsCtx    context.Context // parent of the jobs' contexts; Stop cancels it
	cancelJobs context.CancelFunc
	loopCtx    context.Context // the connection loop's life; shutdown cancels it
	stopLoop   context.CancelFunc
	done       chan struct{}

	statusMu sync.Mutex // orders status reports: the last one sent is the newest

	mu         sync.Mutex
	started    bool // Start began (a failed Start resets it)
	closing    bool // Drain finished or Stop: no new connection, no new job
	draining   bool // refuse jobs
	stopping   bool // Stop: jobs cancelled
	conn       *websocket.Conn
	id         string
	jobs       map[string]*runningJob
	pending    map[string]*time.Timer // accepted, awaiting assignment
	finishing  int                    // jobs whose end is being reported
	changed    chan struct{}          // closed and replaced when the counts above drop
	lastStatus livekit.WorkerStatus
	loopDone   chan struct{} // nil until Start succeeds

	jobsWG       sync.WaitGroup
	stopOnce     sync.Once
	shutdownOnce sync.Once
}

type runningJob struct {
	job        Job
	cancel     context.CancelFunc
	terminated bool // the server sent JobTermination
}

// New returns a worker that runs h for every job; Start connects it.
func New(cfg Config, h Handler) (*Worker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("dispatch: nil handler")
	}
	au, _ := agentURL(cfg.URL) // validated
	w := &Worker{
		cfg:      cfg,
		handler:  h,
		log:      cfg.Logger.With("component", "dispatch", "agent_name", cfg.AgentName),
		agentURL: au,
		load:     cfg.Load,
		done:     make(chan struct{}),
		jobs:     make(map[string]*runningJob),
		pending:  make(map[string]*time.Timer),
		changed:  make(chan struct{}),
	}
	if w.load == nil {
		w.load = newCPUMeter().Load
	}
	w.jobsCtx, w.cancelJobs = context.WithCancel(context.Background())
	w.loopCtx, w.stopLoop = context.WithCancel(context.Background())
	return w, nil
}

// Start connects to the server and registers, and returns once the server has the
// worker in its dispatch table; from then on the worker keeps the connection up,
// reconnecting with backoff, until Drain or Stop.
//
// Start fails fast: if the first connection or registration fails (server unreachable,
// bad credentials, ctx done) it returns the error and the worker may be started again.
// A misconfiguration then shows at boot instead of as a worker that silently never
// gets calls, and a LiveKit that is not up yet is the process supervisor's to wait for
// (restart policy). Once registered, the worker survives any outage, LiveKit restarts
// included. ctx bounds only this first connection (and 15 s does if it has no
// deadline); the worker's life is ended by Drain or Stop, never by ctx, so a context
// cancelled by SIGTERM cannot cut live calls.
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	switch {
	case w.closing:
		w.mu.Unlock()
		return ErrClosed
	case w.started:
		w.mu.Unlock()
		return errors.New("dispatch: worker already started")
	}
	w.started = true
	w.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	c, err := w.connect(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil && w.closing {
		c.conn.CloseNow()
		err = ErrClosed
	}
	if err != nil {
		w.started = false
		return err
	}
	w.conn, w.id = c.conn, c.id
	w.loopDone = make(chan struct{})
	go w.run(c)
	return nil
}

// ID is the worker ID the server gave at the last registration ("" before Start). It
// changes when the worker reconnects.
func (w *Worker) ID() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.id
}

// Running is the number of jobs whose handler has not returned.
func (w *Worker) Running() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.jobs)
}

// Draining reports whether the worker refuses new jobs because Drain or Stop was
// called; a readiness probe can report it.
func (w *Worker) Draining() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.draining
}

// Done is closed when the worker has stopped: the connection is closed and every
// handler has returned.
func (w *Worker) Done() <-chan struct{} { return w.done }

// Drain stops taking jobs (WS_FULL, and every availability request answered
// unavailable from now on), waits until every running job's handler has returned, then
// closes the connection. Running jobs are not cancelled: calls go on to their natural
// end while new ones go to other workers. If ctx ends first Drain returns its error and
// the worker stays draining, jobs running; call Stop to cancel them. Drain may be
// called again, and before Start (it then just closes the worker).
func (w *Worker) Drain(ctx context.Context) error {
	w.mu.Lock()
	first := !w.draining
	w.draining = true
	w.mu.Unlock()
	if first {
		w.log.Info("dispatch: draining: refusing new jobs", "running", w.Running())
		w.reportStatus()
	}
	for {
		w.mu.Lock()
		n := len(w.jobs) + len(w.pending) + w.finishing
		if n == 0 {
			// Decided under the lock: an assignment arriving from now on is refused
			// rather than started after the connection is gone.
			w.closing = true
			w.mu.Unlock()
			break
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("dispatch: drain: %d jobs still running: %w", n, ctx.Err())
		}
	}
	w.shutdown()
	return nil
}

// Stop cancels the running jobs' contexts, waits for their handlers to return (their
// final status is still reported) and closes the connection. Safe to call twice and
// concurrently with Drain.
func (w *Worker) Stop() {
	w.stopOnce.Do(func() {
		w.mu.Lock()
		w.stopping, w.draining = true, true
		n := len(w.jobs)
		w.mu.Unlock()
		if n > 0 {
			w.log.Info("dispatch: stopping: cancelling running jobs", "running", n)
		}
		w.cancelJobs()
		w.jobsWG.Wait()
		w.mu.Lock()
		w.closing = true
		w.mu.Unlock()
		w.shutdown()
	})
	<-w.done
}

// shutdown closes the connection loop and waits for it, then marks the worker done.
func (w *Worker) shutdown() {
	w.shutdownOnce.Do(func() {
		w.mu.Lock()
		w.closing = true
		loopDone := w.loopDone
		for id, t := range w.pending {
			t.Stop()
			delete(w.pending, id)
		}
		w.mu.Unlock()
		w.stopLoop()
		if loopDone != nil {
			<-loopDone
		}
		// Both callers get here with every handler returned (closing, set with no job
		// left, refuses assignments); the wait keeps Done's promise regardless.
		w.jobsWG.Wait()
		w.cancelJobs()
		w.log.Info("dispatch: worker stopped")
		close(w.done)
	})
	<-w.done
}

// registration is a connection that has registered.
type registration struct {
	conn    *websocket.Conn
	id      string
	info    *livekit.ServerInfo
	backlog []*livekit.ServerMessage // arrived before the first pong; handled first
}

// connect dials the server, registers, reports the status and waits for one ping round
// trip (see the package comment: after it the server has the worker in its dispatch
// table).
func (w *Worker) connect(ctx context.Context) (*registration, error) {
	at := auth.NewAccessToken(w.cfg.APIKey, w.cfg.APISecret).
		SetVideoGrant(&auth.VideoGrant{Agent: true}).
		SetValidFor(10 * time.Minute) // checked at the upgrade only
	token, err := at.ToJWT()
	if err != nil {
		return nil, fmt.Errorf("dispatch: token: %w", err)
	}
	conn, resp, err := websocket.Dial(ctx, w.agentURL, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": []string{"Bearer " + token}},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, fmt.Errorf("dispatch: connect %s: HTTP %s", w.agentURL, resp.Status)
		}
		return nil, fmt.Errorf("dispatch: connect %s: %w", w.agentURL, err)
	}
	conn.SetReadLimit(readLimit)
	reg, err := w.register(ctx, conn)
	if err != nil {
		conn.CloseNow()
		return nil, fmt.Errorf("dispatch: register at %s: %w", w.agentURL, err)
	}
	return reg, nil
}

func (w *Worker) register(ctx context.Context, conn *websocket.Conn) (*registration, error) {
	err := write(conn, &livekit.WorkerMessage{Message: &livekit.WorkerMessage_Register{
		Register: &livekit.RegisterWorkerRequest{
			Type:      livekit.JobType_JT_ROOM,
			AgentName: w.cfg.AgentName,
			Version:   w.cfg.Version,
			// Nil permissions: the server grants publish, subscribe, data and
			// metadata updates, what a voice agent needs.
		},
	}})
	if err != nil {
		return nil, err
	}
	reg := &registration{conn: conn}
	msg, err := read(ctx, conn)
	if err != nil {
		return nil, err
	}
	r := msg.GetRegister()
	if r == nil {
		return nil, fmt.Errorf("expected a registration response, got %T", msg.GetMessage())
	}
	reg.id, reg.info = r.GetWorkerId(), r.GetServerInfo()
	if err := write(conn, w.statusMessage()); err != nil {
		return nil, err
	}
	if err := write(conn, pingMessage()); err != nil {
		return nil, err
	}
	for {
		msg, err := read(ctx, conn)
		if err != nil {
			return nil, err
		}
		if msg.GetPong() != nil {
			return reg, nil
		}
		reg.backlog = append(reg.backlog, msg)
	}
}

// run serves the connection and reconnects when it drops, until shutdown.
func (w *Worker) run(reg *registration) {
	defer close(w.loopDone)
	msg := "dispatch: worker registered"
	attempt := 0
	for {
		w.log.Info(msg, "worker_id", reg.id, "url", w.cfg.URL,
			"server_version", reg.info.GetVersion(), "node_id", reg.info.GetNodeId(), "region", reg.info.GetRegion())
		msg = "dispatch: worker registered again"

		began := time.Now()
		err := w.serve(reg)
		w.mu.Lock()
		w.conn = nil
		// A reservation's assignment would come on the closed connection.
		for id, t := range w.pending {
			t.Stop()
			delete(w.pending, id)
		}
		w.signalLocked()
		w.mu.Unlock()
		if w.loopCtx.Err() != nil {
			return
		}
		// Every reconnection counts, successful or not, so that a server that accepts
		// and drops the worker at once is not hammered; a connection that lasted resets
		// the count.
		if time.Since(began) > backoffMax {
			attempt = 0
		}
		d := backoff(attempt)
		attempt++
		w.log.Warn("dispatch: connection to LiveKit lost; reconnecting", "worker_id", reg.id, "err", err,
			"running", w.Running(), "retry_in", d.Round(time.Millisecond))
		for {
			t := time.NewTimer(d)
			select {
			case <-w.loopCtx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(w.loopCtx, registerTimeout)
			reg, err = w.connect(ctx)
			cancel()
			if err == nil {
				w.mu.Lock()
				w.conn, w.id = reg.conn, reg.id
				w.mu.Unlock()
				break
			}
			if w.loopCtx.Err() != nil {
				return
			}
			d = backoff(attempt)
			attempt++
			w.log.Warn("dispatch: reconnect failed", "attempt", attempt, "err", err, "retry_in", d.Round(time.Millisecond))
		}
	}
}

// backoff is the delay before reconnection attempt n (0-based).
func backoff(n int) time.Duration {
	d := backoffMax
	if n < 6 { // 250 ms << 6 = 16 s > backoffMax
		d = min(backoffMax, backoffBase<<n)
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// serve handles one registered connection until it fails or the worker shuts down.
// Messages are handled one at a time on this goroutine; handlers run on their own.
func (w *Worker) serve(reg *registration) error {
	conn := reg.conn
	readCtx, cancelRead := context.WithCancel(context.Background())
	msgs := make(chan *livekit.ServerMessage)
	readErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			msg, err := read(readCtx, conn)
			if err != nil {
				readErr <- err
				return
			}
			select {
			case msgs <- msg:
			case <-readCtx.Done():
				return
			}
		}
	}()
	defer func() {
		cancelRead() // closes the connection if it is not yet
		conn.CloseNow()
		wg.Wait()
	}()

	for _, m := range reg.backlog {
		w.handle(m)
	}
	status := time.NewTicker(w.cfg.StatusInterval)
	defer status.Stop()
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	awaitingPong := false
	for {
		select {
		case m := <-msgs:
			if m.GetPong() != nil {
				awaitingPong = false
				continue
			}
			w.handle(m)
		case err := <-readErr:
			return err
		case <-status.C:
			w.reportStatus()
		case <-ping.C:
			if awaitingPong {
				return fmt.Errorf("no pong within %s", pingInterval)
			}
			if err := write(conn, pingMessage()); err != nil {
				return err
			}
			awaitingPong = true
		case <-w.loopCtx.Done():
			// A close handshake tells the server at once that the worker left (rather
			// than when its next ping fails).
			conn.Close(websocket.StatusNormalClosure, "worker stopping")
			return nil
		}
	}
}

// handle acts on one server message.
func (w *Worker) handle(m *livekit.ServerMessage) {
	switch m := m.GetMessage().(type) {
	case *livekit.ServerMessage_Availability:
		w.onAvailability(m.Availability)
	case *livekit.ServerMessage_Assignment:
		w.onAssignment(m.Assignment)
	case *livekit.ServerMessage_Termination:
		w.onTermination(m.Termination)
	case *livekit.ServerMessage_Pong, *livekit.ServerMessage_Register:
	default:
		w.log.Debug("dispatch: unexpected server message", "type", fmt.Sprintf("%T", m))
	}
}

// refusalLocked says why a new job would be refused, or "" if it would be taken.
func (w *Worker) refusalLocked(load float64) string {
	switch {
	case w.draining:
		return "draining"
	case len(w.jobs)+len(w.pending) >= w.cfg.MaxJobs:
		return "at MaxJobs"
	case load >= w.cfg.MaxLoad:
		return "load at MaxLoad"
	}
	return ""
}

func (w *Worker) onAvailability(req *livekit.AvailabilityRequest) {
	job := req.GetJob()
	id := job.GetId()
	load := w.load()
	identity := "agent-" + id
	w.mu.Lock()
	reason := w.refusalLocked(load)
	if reason == "" {
		if _, dup := w.pending[id]; !dup {
			w.pending[id] = time.AfterFunc(assignTimeout, func() { w.expire(id) })
		}
	}
	running, reserved := len(w.jobs), len(w.pending)
	w.mu.Unlock()

	resp := &livekit.AvailabilityResponse{JobId: id, Available: reason == ""}
	if reason == "" {
		resp.ParticipantIdentity = identity
		resp.ParticipantName = w.cfg.AgentName
	}
	err := w.send(&livekit.WorkerMessage{Message: &livekit.WorkerMessage_Availability{Availability: resp}})
	if reason != "" {
		w.log.Info("dispatch: job refused", "job_id", id, "room", job.GetRoom().GetName(), "reason", reason,
			"running", running, "load", load)
		// The server asked, so it believes the worker available (the load rose since
		// the last report): correct it now rather than at the next tick.
		w.reportStatus()
		return
	}
	w.log.Debug("dispatch: job accepted", "job_id", id, "room", job.GetRoom().GetName(), "err", err)
	if reserved+running >= w.cfg.MaxJobs {
		w.reportStatus() // full now: stop the offers
	}
}

// expire frees the slot of an accepted job whose assignment never came.
func (w *Worker) expire(id string) {
	w.mu.Lock()
	_, ok := w.pending[id]
	delete(w.pending, id)
	w.signalLocked()
	w.mu.Unlock()
	if ok {
		w.log.Warn("dispatch: accepted job was never assigned", "job_id", id)
		w.reportStatus()
	}
}

func (w *Worker) onAssignment(a *livekit.JobAssignment) {
	pj := a.GetJob()
	id := pj.GetId()
	job := Job{
		ID:         id,
		DispatchID: pj.GetDispatchId(),
		AgentName:  pj.GetAgentName(),
		Metadata:   pj.GetMetadata(),
		Attributes: pj.GetAttributes(),
		Room:       Room{Name: pj.GetRoom().GetName(), SID: pj.GetRoom().GetSid(), Metadata: pj.GetRoom().GetMetadata()},
		Identity:   pj.GetState().GetParticipantIdentity(),
		Name:       w.cfg.AgentName,
		Token:      a.GetToken(),
		URL:        a.GetUrl(),
	}
	if job.Identity == "" {
		job.Identity = "agent-" + id
	}
	if job.URL == "" {
		job.URL = w.cfg.URL
	}

	w.mu.Lock()
	if t, ok := w.pending[id]; ok {
		t.Stop()
		delete(w.pending, id)
	}
	// An assignment without a reservation comes after its reservation expired; the
	// server counts the job as running, so it is run unless the worker is closing.
	if _, dup := w.jobs[id]; dup {
		w.mu.Unlock()
		w.log.Warn("dispatch: duplicate assignment ignored", "job_id", id)
		return
	}
	if w.closing || w.stopping {
		w.signalLocked()
		w.mu.Unlock()
		w.log.Warn("dispatch: assignment refused: worker closing", "job_id", id, "room", job.Room.Name)
		w.sendJobStatus(id, livekit.JobStatus_JS_FAILED, "worker closing")
		return
	}
	ctx, cancel := context.WithCancel(w.jobsCtx)
	rj := &runningJob{job: job, cancel: cancel}
	w.jobs[id] = rj
	w.jobsWG.Add(1)
	w.mu.Unlock()
	go w.runJob(ctx, rj)
}

func (w *Worker) onTermination(t *livekit.JobTermination) {
	id := t.GetJobId()
	w.mu.Lock()
	rj := w.jobs[id]
	if rj != nil {
		rj.terminated = true
		rj.cancel()
	}
	w.mu.Unlock()
	if rj != nil {
		w.log.Info("dispatch: job terminated by the server", "job_id", id, "room", rj.job.Room.Name)
	}
}

// runJob runs the handler of one job and reports its status.
func (w *Worker) runJob(ctx context.Context, rj *runningJob) {
	defer w.jobsWG.Done()
	job := rj.job
	log := w.log.With("job_id", job.ID, "room", job.Room.Name, "dispatch_id", job.DispatchID)
	w.sendJobStatus(job.ID, livekit.JobStatus_JS_RUNNING, "")
	w.reportStatus()
	log.Info("dispatch: job started", "running", w.Running())
	began := time.Now()

	err := w.call(ctx, job)
	rj.cancel()

	w.mu.Lock()
	terminated := rj.terminated
	delete(w.jobs, job.ID)
	w.finishing++ // Drain waits until the end is reported
	w.mu.Unlock()
	status, text := livekit.JobStatus_JS_SUCCESS, ""
	if err != nil && !(terminated && errors.Is(err, context.Canceled)) {
		status, text = livekit.JobStatus_JS_FAILED, err.Error()
	}
	w.sendJobStatus(job.ID, status, text)
	w.reportStatus()
	w.mu.Lock()
	w.finishing--
	w.signalLocked()
	w.mu.Unlock()
	if status == livekit.JobStatus_JS_FAILED {
		log.Warn("dispatch: job failed", "err", err, "duration", time.Since(began).Round(time.Millisecond))
	} else {
		log.Info("dispatch: job ended", "duration", time.Since(began).Round(time.Millisecond), "terminated", terminated)
	}
}

// call runs the handler, turning a panic into an error.
func (w *Worker) call(ctx context.Context, job Job) (err error) {
	defer func() {
		if r := recover(); r != nil {
			w.log.Error("dispatch: job handler panicked", "job_id", job.ID, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("handler panic: %v", r)
		}
	}()
	return w.handler(ctx, job)
}

// signalLocked wakes Drain after a count it waits on dropped.
func (w *Worker) signalLocked() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// statusMessage builds the worker's status report. The load sent is
// max(Load(), jobs/MaxJobs): the server weighs workers by 1 − load.
func (w *Worker) statusMessage() *livekit.WorkerMessage {
	res := w.load()
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(w.jobs)
	load := max(res, float64(n+len(w.pending))/float64(max(1, w.cfg.MaxJobs)))
	load = min(1, max(0, load))
	st := livekit.WorkerStatus_WS_AVAILABLE
	reason := w.refusalLocked(res)
	if reason != "" {
		st = livekit.WorkerStatus_WS_FULL
	}
	// Log the transitions (lastStatus starts as WS_AVAILABLE, the server's assumption).
	if st != w.lastStatus {
		if st == livekit.WorkerStatus_WS_FULL {
			w.log.Info("dispatch: worker full: not taking jobs", "reason", reason, "running", n, "load", load)
		} else {
			w.log.Info("dispatch: worker available again", "running", n, "load", load)
		}
	}
	w.lastStatus = st
	return &livekit.WorkerMessage{Message: &livekit.WorkerMessage_UpdateWorker{
		UpdateWorker: &livekit.UpdateWorkerStatus{Status: &st, Load: float32(load), JobCount: uint32(n)},
	}}
}

// reportStatus sends the worker's status now.
func (w *Worker) reportStatus() {
	w.statusMu.Lock()
	defer w.statusMu.Unlock()
	if err := w.send(w.statusMessage()); err != nil && !errors.Is(err, errNotConnected) {
		w.log.Debug("dispatch: status report failed", "err", err)
	}
}

func (w *Worker) sendJobStatus(id string, st livekit.JobStatus, text string) {
	err := w.send(&livekit.WorkerMessage{Message: &livekit.WorkerMessage_UpdateJob{
		UpdateJob: &livekit.UpdateJobStatus{JobId: id, Status: st, Error: text},
	}})
	if err != nil {
		w.log.Debug("dispatch: job status not sent", "job_id", id, "status", st.String(), "err", err)
	}
}

// send writes a message on the current connection.
func (w *Worker) send(m *livekit.WorkerMessage) error {
	w.mu.Lock()
	c := w.conn
	w.mu.Unlock()
	if c == nil {
		return errNotConnected
	}
	return write(c, m)
}

func pingMessage() *livekit.WorkerMessage {
	return &livekit.WorkerMessage{Message: &livekit.WorkerMessage_Ping{
		Ping: &livekit.WorkerPing{Timestamp: time.Now().UnixMilli()},
	}}
}

// write sends one binary protobuf frame; the connection is safe for concurrent writes.
func write(c *websocket.Conn, m *livekit.WorkerMessage) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	return c.Write(ctx, websocket.MessageBinary, b)
}

// read reads one ServerMessage. The server answers text frames with protojson only if
// the worker writes text, which it never does.
func read(ctx context.Context, c *websocket.Conn) (*livekit.ServerMessage, error) {
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return nil, err
		}
		if typ != websocket.MessageBinary {
			continue
		}
		m := &livekit.ServerMessage{}
		if err := proto.Unmarshal(b, m); err != nil {
			return nil, fmt.Errorf("decode server message: %w", err)
		}
		return m, nil
	}
}
