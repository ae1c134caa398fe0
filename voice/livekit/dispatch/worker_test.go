package dispatch

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"

	"github.com/parleyhq/parley/internal/lkserver"
)

// participants lists the identities in room.
func participants(t *testing.T, s *lkserver.Server, room string) map[string]livekit.ParticipantInfo_Kind {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := roomClient(s).ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: room})
	if err != nil {
		t.Fatalf("list participants of %s: %v", room, err)
	}
	out := make(map[string]livekit.ParticipantInfo_Kind)
	for _, p := range res.Participants {
		out[p.Identity] = p.Kind
	}
	return out
}

// joinRoom joins the job's room as the agent, with the job's URL and token.
func joinRoom(job Job, onDisconnect func()) (*lksdk.Room, error) {
	cb := &lksdk.RoomCallback{OnDisconnected: onDisconnect}
	return lksdk.ConnectToRoomWithToken(job.URL, job.Token, cb, lksdk.WithAutoSubscribe(false))
}

// A dispatch for the worker's agent name reaches it as a Job with the dispatch's
// metadata, and the job's token joins the room as the agent participant.
func TestJobJoinsRoom(t *testing.T) {
	t.Parallel()
	s := sharedServer(t)
	name := agentName(t)
	type joined struct {
		job Job
		err error
	}
	joinedCh := make(chan joined, 1)
	leave := make(chan struct{})
	handlerDone := make(chan error, 1)
	w := startWorker(t, s.URL(), Config{AgentName: name}, func(ctx context.Context, job Job) error {
		room, err := joinRoom(job, nil)
		joinedCh <- joined{job, err}
		if err != nil {
			handlerDone <- err
			return err
		}
		select {
		case <-leave:
		case <-ctx.Done():
		}
		room.Disconnect()
		handlerDone <- nil
		return nil
	})
	if w.ID() == "" {
		t.Fatal("no worker ID after Start")
	}

	roomName := "room-" + name
	d := createDispatch(t, s, roomName, name, `{"call_id":"call_123"}`)
	var j joined
	select {
	case j = <-joinedCh:
	case <-time.After(20 * time.Second):
		t.Fatal("no job within 20s")
	}
	if j.err != nil {
		t.Fatalf("join with the job's token: %v", j.err)
	}
	job := j.job
	if job.Metadata != `{"call_id":"call_123"}` || job.AgentName != name || job.DispatchID != d.Id ||
		job.Room.Name != roomName || job.Room.SID == "" || job.ID == "" {
		t.Fatalf("job = %+v, dispatch %s", job, d.Id)
	}
	if job.Identity != "agent-"+job.ID || job.Name != name || job.URL != s.URL() || job.Token == "" {
		t.Fatalf("job identity/URL/token: %+v", job)
	}
	if got := w.Running(); got != 1 {
		t.Fatalf("Running() = %d, want 1", got)
	}
	if kind, ok := participants(t, s, roomName)[job.Identity]; !ok || kind != livekit.ParticipantInfo_AGENT {
		t.Fatalf("agent %s not in the room as an agent (kind %v, present %v)", job.Identity, kind, ok)
	}

	close(leave)
	if err := <-handlerDone; err != nil {
		t.Fatal(err)
	}
	eventually(t, "the agent to leave the room", func() bool {
		_, ok := participants(t, s, roomName)[job.Identity]
		return !ok
	})
	eventually(t, "the job to end", func() bool { return w.Running() == 0 })
}

// The worker registers as a room worker under its agent name and reports each job
// RUNNING, then SUCCESS or FAILED with the handler's error (a panic included), and its
// load and job count.
func TestStatusReports(t *testing.T) {
	t.Parallel()
	s := sharedServer(t)
	name := agentName(t)
	p := newProxy(t, s.URL())
	rec := newRecorder()
	w := startWorker(t, p.URL(), Config{AgentName: name, MaxJobs: 4}, func(ctx context.Context, job Job) error {
		if job.Metadata == "panic" {
			panic("bad call")
		}
		return rec.handle(ctx, job)
	})
	type outcome struct {
		status livekit.JobStatus
		err    string
	}
	want := map[string]outcome{}
	createDispatch(t, s, name+"-ok", name, "ok")
	j := rec.next(t)
	want[j.job.ID] = outcome{livekit.JobStatus_JS_SUCCESS, ""}
	j.release <- nil
	createDispatch(t, s, name+"-fail", name, "fail")
	j = rec.next(t)
	want[j.job.ID] = outcome{livekit.JobStatus_JS_FAILED, "call dropped"}
	j.release <- errors.New("call dropped")
	createDispatch(t, s, name+"-panic", name, "panic")
	// The handler panics before the recorder sees the job: find it in the reports.
	eventually(t, "the panicking job's report", func() bool {
		for _, m := range p.messages() {
			if u := m.GetUpdateJob(); u != nil && u.Status == livekit.JobStatus_JS_FAILED && strings.Contains(u.Error, "bad call") {
				want[u.JobId] = outcome{livekit.JobStatus_JS_FAILED, "handler panic: bad call"}
				return true
			}
		}
		return false
	})
	eventually(t, "all jobs to end", func() bool { return w.Running() == 0 })
	// The last status reports are sent after Running drops; stop to flush them.
	w.Stop()
	eventually(t, "the proxy to forward everything", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.conns) == 0
	})

	msgs := p.messages()
	reg := msgs[0].GetRegister()
	if reg == nil || reg.Type != livekit.JobType_JT_ROOM || reg.AgentName != name {
		t.Fatalf("first message = %v, want a JT_ROOM registration as %s", msgs[0], name)
	}
	for id, wt := range want {
		var seen []livekit.JobStatus
		var errText string
		for _, m := range msgs {
			if u := m.GetUpdateJob(); u != nil && u.JobId == id {
				seen = append(seen, u.Status)
				errText = u.Error
			}
		}
		if !slices.Equal(seen, []livekit.JobStatus{livekit.JobStatus_JS_RUNNING, wt.status}) || errText != wt.err {
			t.Errorf("job %s: statuses %v error %q, want [JS_RUNNING %v] %q", id, seen, errText, wt.status, wt.err)
		}
	}
	// Some report showed a running job with its share of MaxJobs as the load.
	busy := false
	for _, m := range msgs {
		if u := m.GetUpdateWorker(); u != nil && u.JobCount == 1 && u.Load >= 0.25 && u.GetStatus() == livekit.WorkerStatus_WS_AVAILABLE {
			busy = true
		}
	}
	if !busy {
		t.Error("no UpdateWorkerStatus with job_count 1 and load 1/MaxJobs")
	}
}

// Two workers with the same agent name share the rooms: LiveKit picks one at random
// weighted by 1 − reported load, and the load includes jobs/MaxJobs.
func TestJobsSpreadOverWorkers(t *testing.T) {
	t.Parallel()
	s := sharedServer(t)
	name := agentName(t)
	recA, recB := newRecorder(), newRecorder()
	cfg := Config{AgentName: name, MaxJobs: 10}
	a := startWorker(t, s.URL(), cfg, recA.handle)
	b := startWorker(t, s.URL(), cfg, recB.handle)

	// One room at a time, each job started (and its load reported) before the next
	// dispatch. Were the choice blind, all ten on one worker would have odds 2/2^10;
	// with the load counted (worker at k jobs weighs 1 − k/10 against 1) they are
	// about 2·10⁻⁵.
	const rooms = 10
	var jobs []*started
	for i := range rooms {
		createDispatch(t, s, name+"-"+string(rune('a'+i)), name, "")
		select {
		case j := <-recA.jobs:
			jobs = append(jobs, j)
		case j := <-recB.jobs:
			jobs = append(jobs, j)
		case <-time.After(20 * time.Second):
			t.Fatalf("room %d: no job within 20s", i)
		}
	}
	na, nb := a.Running(), b.Running()
	t.Logf("worker A ran %d jobs, worker B %d", na, nb)
	if na+nb != rooms || na == 0 || nb == 0 {
		t.Fatalf("jobs: A %d, B %d; want %d spread over both", na, nb, rooms)
	}
	for _, j := range jobs {
		j.release <- nil
	}
}

// Drain: the worker refuses new jobs (they go to the other worker) while its running
// jobs go on, uncancelled, and returns when the last one ends.
func TestDrain(t *testing.T) {
	t.Parallel()
	s := sharedServer(t)
	name := agentName(t)
	recA, recB := newRecorder(), newRecorder()
	a := startWorker(t, s.URL(), Config{AgentName: name}, recA.handle)
	createDispatch(t, s, name+"-1", name, "")
	createDispatch(t, s, name+"-2", name, "")
	a1, a2 := recA.next(t), recA.next(t)
	startWorker(t, s.URL(), Config{AgentName: name}, recB.handle)

	drained := make(chan error, 1)
	go func() { drained <- a.Drain(context.Background()) }()
	eventually(t, "A to drain", a.Draining)
	for i := range 3 {
		createDispatch(t, s, name+"-new-"+string(rune('a'+i)), name, "")
	}
	var bJobs []*started
	for range 3 {
		bJobs = append(bJobs, recB.next(t))
	}
	recA.none(t, 500*time.Millisecond)
	for _, j := range []*started{a1, a2} {
		if j.ctx.Err() != nil {
			t.Fatalf("draining cancelled running job %s", j.job.ID)
		}
	}
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) with 2 jobs running", err)
	default:
	}

	a1.release <- nil
	eventually(t, "A's first job to end", func() bool { return a.Running() == 1 })
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) with a job running", err)
	case <-time.After(200 * time.Millisecond):
	}
	if a2.ctx.Err() != nil {
		t.Fatal("draining cancelled the running job")
	}
	a2.release <- nil
	select {
	case err := <-drained:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Drain did not return after the last job ended")
	}
	select {
	case <-a.Done():
	default:
		t.Fatal("Done not closed after Drain")
	}
	if err := a.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Drain = %v, want ErrClosed", err)
	}
	for _, j := range bJobs {
		j.release <- nil
	}
}

// Drain gives up with ctx's error when a job outlives it, the worker still draining;
// Stop then cancels the job.
func TestDrainTimeoutThenStop(t *testing.T) {
	t.Parallel()
	s := sharedServer(t)
	name := agentName(t)
	rec := newRecorder()
	w := startWorker(t, s.URL(), Config{AgentName: name}, rec.handle)
	createDispatch(t, s, name, name, "")
	j := rec.next(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := w.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain = %v, want deadline exceeded", err)
	}
	if j.ctx.Err() != nil || !w.Draining() {
		t.Fatal("a timed-out Drain cancelled the job or stopped draining")
	}
	w.Stop()
	if j.ctx.Err() == nil {
		t.Fatal("Stop did not cancel the job")
	}
	w.Stop() // twice is fine
	<-w.Done()
}

// workerStatuses lists the statuses a proxied worker reported, collapsing repeats.
func workerStatuses(p *proxy) []livekit.WorkerStatus {
	var out []livekit.WorkerStatus
	for _, m := range p.messages() {
		if u := m.GetUpdateWorker(); u != nil {
			if n := len(out); n == 0 || out[n-1] != u.GetStatus() {
				out = append(out, u.GetStatus())
			}
		}
	}
	return out
}

// A worker with MaxJobs 2 takes two of three simultaneous jobs and no more, reporting
// WS_FULL; the jobs after that go to another worker; when a job ends it reports
// WS_AVAILABLE again.
func TestMaxJobs(t *testing.T) {
	t.Parallel()
	s := sharedServer(t)
	name := agentName(t)
	p := newProxy(t, s.URL())
	recA, recB := newRecorder(), newRecorder()
	a := startWorker(t, p.URL(), Config{AgentName: name, MaxJobs: 2}, recA.handle)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { createDispatch(t, s, name+"-"+string(rune('a'+i)), name, "") })
	}
	wg.Wait()
	heldA := []*started{recA.next(t), recA.next(t)}
	// The third was refused or never offered (A reported WS_FULL); LiveKit drops it.
	recA.none(t, 2*time.Second)
	if got := a.Running(); got != 2 {
		t.Fatalf("Running() = %d, want 2", got)
	}
	if got := workerStatuses(p); !slices.Equal(got, []livekit.WorkerStatus{livekit.WorkerStatus_WS_AVAILABLE, livekit.WorkerStatus_WS_FULL}) {
		t.Fatalf("A reported %v, want [WS_AVAILABLE WS_FULL]", got)
	}

	startWorker(t, s.URL(), Config{AgentName: name}, recB.handle)
	var heldB []*started
	for i := range 2 {
		createDispatch(t, s, name+"-more-"+string(rune('a'+i)), name, "")
		heldB = append(heldB, recB.next(t))
	}
	recA.none(t, 200*time.Millisecond)

	heldA[0].release <- nil
	eventually(t, "A to report WS_AVAILABLE again", func() bool {
		got := workerStatuses(p)
		return got[len(got)-1] == livekit.WorkerStatus_WS_AVAILABLE
	})
	for _, j := range append(heldA[1:], heldB...) {
		j.release <- nil
	}
}

// A worker whose load has risen to MaxLoad since its last report refuses the job the
// server offers (the server then has no one else and drops it), reports WS_FULL at
// once, and is not asked again: the next job goes to another worker.
func TestMaxLoadRefuses(t *testing.T) {
	t.Parallel()
	s := sharedServer(t)
	name := agentName(t)
	p := newProxy(t, s.URL())
	var load atomic.Value
	load.Store(0.0)
	recA, recB := newRecorder(), newRecorder()
	// No periodic report within the test: the server keeps believing the registration's.
	startWorker(t, p.URL(), Config{AgentName: name, StatusInterval: time.Hour,
		Load: func() float64 { return load.Load().(float64) }}, recA.handle)
	load.Store(0.9)

	d := createDispatch(t, s, name+"-1", name, "")
	var refused string
	eventually(t, "A to answer the availability request", func() bool {
		for _, m := range p.messages() {
			if a := m.GetAvailability(); a != nil {
				if a.Available {
					t.Fatalf("A accepted job %s at load 0.9", a.JobId)
				}
				refused = a.JobId
				return true
			}
		}
		return false
	})
	eventually(t, "A to report WS_FULL", func() bool {
		got := workerStatuses(p)
		return got[len(got)-1] == livekit.WorkerStatus_WS_FULL
	})
	t.Logf("A refused job %s of dispatch %s", refused, d.Id)

	startWorker(t, s.URL(), Config{AgentName: name}, recB.handle)
	createDispatch(t, s, name+"-2", name, "")
	recB.next(t).release <- nil
	recA.none(t, 200*time.Millisecond)
	n := 0
	for _, m := range p.messages() {
		if m.GetAvailability() != nil {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("A answered %d availability requests, want 1", n)
	}
}

// The server terminates a job when its dispatch is deleted, and when the agent
// participant is removed from the room; either cancels the handler's context.
func TestTerminationCancelsJob(t *testing.T) {
	t.Parallel()
	s := sharedServer(t)
	name := agentName(t)

	t.Run("delete dispatch", func(t *testing.T) {
		t.Parallel()
		rec := newRecorder()
		n := name + "-dd"
		w := startWorker(t, s.URL(), Config{AgentName: n}, rec.handle)
		d := createDispatch(t, s, n, n, "")
		j := rec.next(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := lksdk.NewAgentDispatchServiceClient(s.HTTPURL(), lkserver.DevKey, lkserver.DevSecret).
			DeleteDispatch(ctx, &livekit.DeleteAgentDispatchRequest{DispatchId: d.Id, Room: n}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-j.ctx.Done():
		case <-time.After(15 * time.Second):
			t.Fatal("job context not cancelled after the dispatch was deleted")
		}
		eventually(t, "the job to end", func() bool { return w.Running() == 0 })
	})

	// DeleteRoom does not terminate the job (livekit-server v1.13.5 closes the
	// participants without the removal that sends the termination); the handler sees
	// its own room connection close instead.
	t.Run("remove agent participant", func(t *testing.T) {
		t.Parallel()
		n := name + "-rp"
		type joined struct {
			ctx context.Context
			job Job
			err error
		}
		joinedCh := make(chan joined, 1)
		w := startWorker(t, s.URL(), Config{AgentName: n}, func(ctx context.Context, job Job) error {
			room, err := joinRoom(job, nil)
			joinedCh <- joined{ctx, job, err}
			if err != nil {
				return err
			}
			<-ctx.Done()
			room.Disconnect()
			return ctx.Err()
		})
		createDispatch(t, s, n, n, "")
		var j joined
		select {
		case j = <-joinedCh:
		case <-time.After(20 * time.Second):
			t.Fatal("no job within 20s")
		}
		if j.err != nil {
			t.Fatal(j.err)
		}
		// The room learns of the job (and so of its agent participant) only when the
		// job request returns to it, which in livekit-server v1.13.5 can be seconds
		// after the assignment; a participant removed before that ends no job.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		eventually(t, "the room to record the job", func() bool {
			res, err := lksdk.NewAgentDispatchServiceClient(s.HTTPURL(), lkserver.DevKey, lkserver.DevSecret).
				ListDispatch(ctx, &livekit.ListAgentDispatchRequest{Room: n})
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range res.AgentDispatches {
				for _, job := range d.GetState().GetJobs() {
					if job.Id == j.job.ID {
						return true
					}
				}
			}
			return false
		})
		if _, err := roomClient(s).RemoveParticipant(ctx, &livekit.RoomParticipantIdentity{Room: n, Identity: j.job.Identity}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-j.ctx.Done():
		case <-time.After(15 * time.Second):
			t.Fatal("job context not cancelled after the agent was removed from the room")
		}
		eventually(t, "the job to end", func() bool { return w.Running() == 0 })
	})
}

// A dropped connection is re-established and the worker registers again, its running
// job untouched; and when LiveKit itself is replaced (stopped, down for a while, then a
// new server on the same address), the worker keeps retrying, registers with the new
// one and takes its jobs.
func TestReconnect(t *testing.T) {
	t.Parallel()
	s1 := ownServer(t)
	name := agentName(t)
	p := newProxy(t, s1.URL())
	rec := newRecorder()
	w := startWorker(t, p.URL(), Config{AgentName: name}, rec.handle)
	createDispatch(t, s1, name+"-1", name, "")
	held := rec.next(t)
	id1 := w.ID()

	p.cut()
	eventually(t, "the worker to register again", func() bool { return w.ID() != id1 })
	if held.ctx.Err() != nil || w.Running() != 1 {
		t.Fatal("the reconnection disturbed the running job")
	}
	createDispatch(t, s1, name+"-2", name, "")
	rec.next(t).release <- nil

	// LiveKit restart: the old server goes away, the address answers with a new one.
	id2 := w.ID()
	s1.Stop()
	eventually(t, "the worker to try while LiveKit is down", func() bool { return p.refusedCount() > 0 })
	s2 := ownServer(t)
	p.setUpstream(s2.URL())
	p.cut() // in case the old server's connection is still up
	eventually(t, "the worker to register with the new server", func() bool { return w.ID() != id2 })
	createDispatch(t, s2, name+"-3", name, "")
	j := rec.next(t)
	if j.job.URL != p.URL() {
		t.Fatalf("job URL %s, want the configured %s", j.job.URL, p.URL())
	}
	j.release <- nil
	if held.ctx.Err() != nil {
		t.Fatal("the server restart cancelled the running job")
	}
	held.release <- nil
	eventually(t, "the jobs to end", func() bool { return w.Running() == 0 })
}

// Start fails fast, with the reason, when the server refuses the credentials or is
// not there; the worker can then be started again.
func TestStartFails(t *testing.T) {
	t.Parallel()
	s := sharedServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	w, err := New(Config{URL: s.URL(), APIKey: lkserver.DevKey, APISecret: "wrong", Logger: testLogger(t)}, newRecorder().handle)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("Start with a bad secret = %v, want HTTP 401", err)
	}
	w.Stop()

	// Nothing listens at the address.
	dead := newProxy(t, s.URL())
	deadURL := dead.URL()
	dead.srv.Close()
	w, err = New(Config{URL: deadURL, APIKey: lkserver.DevKey, APISecret: lkserver.DevSecret, Logger: testLogger(t)}, newRecorder().handle)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err == nil {
		t.Fatal("Start with nothing listening succeeded")
	}

	// A front (load balancer) whose LiveKit is down; then up again.
	p := newProxy(t, deadURL)
	w, err = New(Config{URL: p.URL(), APIKey: lkserver.DevKey, APISecret: lkserver.DevSecret, Logger: testLogger(t)}, newRecorder().handle)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err == nil || !strings.Contains(err.Error(), "502") {
		t.Fatalf("Start with LiveKit down = %v, want HTTP 502", err)
	}
	p.setUpstream(s.URL())
	if err := w.Start(ctx); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	w.Stop()
	if err := w.Start(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Stop = %v, want ErrClosed", err)
	}
}

// Drain and Stop before Start close the worker without a connection.
func TestCloseBeforeStart(t *testing.T) {
	t.Parallel()
	for _, close := range []func(*Worker){
		func(w *Worker) {
			if err := w.Drain(context.Background()); err != nil {
				t.Error(err)
			}
		},
		(*Worker).Stop,
	} {
		w, err := New(Config{URL: "ws://127.0.0.1:1", APIKey: "k", APISecret: "s"}, newRecorder().handle)
		if err != nil {
			t.Fatal(err)
		}
		close(w)
		<-w.Done()
		w.Stop()
		if err := w.Start(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Start after close = %v", err)
		}
	}
}
