package calls

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/parleyhq/parley/voice"
)

// agentMergeGap is the longest silence between two agent sentences of one turn that
// still makes them one transcript entry. Sentences of one reply play back to back (a
// gap of a few hundred milliseconds at most, while the next sentence is synthesised);
// the silence reprompt, which the engine files under the same turn, comes only after
// seconds of silence, and so does the answer after a filler that covered a slow tool.
// Those read better as entries of their own.
const agentMergeGap = 2 * time.Second

// saveTimeout bounds one flush of the live transcript.
const saveTimeout = 5 * time.Second

// Recorder turns a voice session's events into the call's transcript and latency
// figures. It is the session's voice.EventSink: HandleEvent only updates memory under
// a mutex and never waits on the database (it runs on the engine's control
// goroutine), and a background flusher saves the live transcript with SaveProgress at
// most every Config.FlushInterval, and only when something changed. Close stops the
// flusher and finishes the call. A Recorder must be closed.
//
// What goes into transcript_object:
//
//   - user finals of one turn merge into one user entry (late words of a turn that was
//     already answered join it too); interim hypotheses are left out: they are
//     revised until final, and the final text replaces them;
//   - agent sentences of one turn merge into one agent entry, in the order they played,
//     unless agentMergeGap of silence separates them (see there); an interrupted
//     sentence marks its entry interrupted and contributes only the words that played;
//   - filler phrases ("One moment while I check") are kept, in the agent entry of
//     their turn: the transcript records what the caller heard, and the filler was
//     heard. They are not in the model's history, which is a different record;
//   - backchannels ("mm-hm" over the agent, a cough) are left out: they were not turns,
//     the agent did not answer them, and they would split an agent entry in two.
//
// Entries are ordered by when they started, and offsets are milliseconds from the
// start of the session (see NewRecorder).
type Recorder struct {
	svc      *Service
	callID   string
	interval time.Duration

	mu        sync.Mutex
	origin    time.Time // session start, on the session's clock
	entries   []*entry
	userTurn  map[int]*entry
	lastAgent *entry
	latency   []LatencyTurn
	latIdx    map[int]int
	ended     *voice.CallEnded
	dirty     bool
	closed    bool
	gone      bool // the call ended elsewhere: stop saving progress

	wake      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

type entry struct {
	role        string
	turn        int
	parts       []string
	start, end  time.Time
	interrupted bool
}

// NewRecorder starts a recorder for an in-progress call (after Begin). start is when
// the session started, on the session's clock (time.Now() just before Session.Start,
// for the system clock); offsets in transcript_object count from it. A zero start
// means the first event's time until the session's CallEnded event, which gives the
// exact start (At − Duration), arrives.
func (s *Service) NewRecorder(callID string, start time.Time) *Recorder {
	r := &Recorder{
		svc: s, callID: callID, interval: s.cfg.FlushInterval, origin: start,
		userTurn: map[int]*entry{}, latIdx: map[int]int{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go r.run()
	return r
}

// HandleEvent implements voice.EventSink.
func (r *Recorder) HandleEvent(e voice.Event) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	changed := false
	switch ev := e.(type) {
	case *voice.Transcript:
		changed = r.transcript(ev)
	case *voice.TurnLatency:
		lt := LatencyTurnOf(*ev)
		if i, ok := r.latIdx[ev.Turn]; ok {
			r.latency[i] = lt
		} else {
			r.latIdx[ev.Turn] = len(r.latency)
			r.latency = append(r.latency, lt)
		}
		changed = true
	case *voice.CallEnded:
		c := *ev
		r.ended = &c
		if !ev.At.IsZero() {
			r.origin = ev.At.Add(-ev.Duration)
		}
	}
	if changed {
		r.dirty = true
	}
	r.mu.Unlock()
	if changed {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// transcript merges one transcript event; it reports whether anything changed.
func (r *Recorder) transcript(t *voice.Transcript) bool {
	text := strings.TrimSpace(t.Text)
	if text == "" || !t.Final || t.Backchannel {
		return false
	}
	switch t.Speaker {
	case voice.SpeakerUser:
		e := r.userTurn[t.Turn]
		if e == nil {
			e = &entry{role: RoleUser, turn: t.Turn, start: t.Start, end: t.End}
			r.userTurn[t.Turn] = e
			r.entries = append(r.entries, e)
		}
		e.parts = append(e.parts, text)
		e.widen(t.Start, t.End)
	case voice.SpeakerAgent:
		e := r.lastAgent
		if e == nil || e.turn != t.Turn || r.entries[len(r.entries)-1] != e ||
			(!e.end.IsZero() && !t.Start.IsZero() && t.Start.Sub(e.end) > agentMergeGap) {
			e = &entry{role: RoleAgent, turn: t.Turn, start: t.Start, end: t.End}
			r.entries = append(r.entries, e)
			r.lastAgent = e
		}
		e.parts = append(e.parts, text)
		e.widen(t.Start, t.End)
		e.interrupted = e.interrupted || t.Interrupted
	default:
		return false
	}
	return true
}

// widen extends the entry's span to cover [start, end]; zero times are unknown.
func (e *entry) widen(start, end time.Time) {
	if !start.IsZero() && (e.start.IsZero() || start.Before(e.start)) {
		e.start = start
	}
	if end.IsZero() {
		end = start
	}
	if !end.IsZero() && (e.end.IsZero() || end.After(e.end)) {
		e.end = end
	}
}

// Snapshot returns the transcript and latency as recorded so far.
func (r *Recorder) Snapshot() ([]Turn, Latency) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snapshot()
}

func (r *Recorder) snapshot() ([]Turn, Latency) {
	origin := r.origin
	if origin.IsZero() {
		for _, e := range r.entries {
			if !e.start.IsZero() && (origin.IsZero() || e.start.Before(origin)) {
				origin = e.start
			}
		}
	}
	offset := func(t time.Time) int64 {
		if t.IsZero() || origin.IsZero() || t.Before(origin) {
			return 0
		}
		return t.Sub(origin).Milliseconds()
	}
	turns := make([]Turn, len(r.entries))
	for i, e := range r.entries {
		turns[i] = Turn{Role: e.role, Content: strings.Join(e.parts, " "), StartMS: offset(e.start),
			EndMS: offset(e.end), Interrupted: e.interrupted, TurnNumber: e.turn}
	}
	// Events arrive when text is final (an agent sentence once it has played), so a
	// caller's words can be reported after the agent sentence they cut into; order by
	// when each entry started. Stable, so equal starts keep their arrival order.
	slices.SortStableFunc(turns, func(a, b Turn) int {
		switch {
		case a.StartMS < b.StartMS:
			return -1
		case a.StartMS > b.StartMS:
			return 1
		}
		return 0
	})
	return turns, Summarize(slices.Clone(r.latency))
}

// Ended returns the session's CallEnded event, once it has arrived.
func (r *Recorder) Ended() (voice.CallEnded, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended == nil {
		return voice.CallEnded{}, false
	}
	return *r.ended, true
}

// run is the flusher: it saves the transcript when woken, then rests for the interval
// so that saves are at least that far apart however many events arrive.
func (r *Recorder) run() {
	defer close(r.done)
	for {
		select {
		case <-r.stop:
			return
		case <-r.wake:
		}
		r.flush()
		t := time.NewTimer(r.interval)
		select {
		case <-r.stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (r *Recorder) flush() {
	r.mu.Lock()
	if !r.dirty || r.gone {
		r.mu.Unlock()
		return
	}
	turns, lat := r.snapshot()
	r.dirty = false
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
	defer cancel()
	err := r.svc.SaveProgress(ctx, r.callID, turns, lat)
	switch {
	case err == nil:
	case errors.Is(err, ErrNotInProgress) || errors.Is(err, ErrNotFound):
		// Finished or failed elsewhere: nothing live to update any more.
		r.mu.Lock()
		r.gone = true
		r.mu.Unlock()
	default:
		// Try again after the interval; Close saves the final version regardless.
		r.svc.log.Warn("calls: save live transcript", "call_id", r.callID, "err", err)
		r.mu.Lock()
		r.dirty = true
		r.mu.Unlock()
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// Close stops the flusher and finishes the call with the recorded transcript and
// latency (f's TranscriptObject and Latency are replaced). Unset fields of f are
// filled from the session's CallEnded event when it arrived: Duration from its
// Duration; Reason from ReasonFor(its reason, false) (pass the transport's reason to
// tell a caller's hang-up from an ended room); Status completed, or failed when the
// engine ended on an error before anyone said anything. Events after Close are
// ignored. Calling Close again returns the first call's result. ctx bounds the final
// write: give it one that outlives the session (context.WithoutCancel of the job's
// context, with a timeout), or a worker shutting down loses the final transcript.
func (r *Recorder) Close(ctx context.Context, f Finish) error {
	r.closeOnce.Do(func() {
		close(r.stop)
		<-r.done
		r.mu.Lock()
		r.closed = true
		f.TranscriptObject, f.Latency = r.snapshot()
		ended := r.ended
		r.mu.Unlock()
		if ended != nil {
			if f.Duration == 0 {
				f.Duration = ended.Duration
			}
			if f.Reason == "" {
				f.Reason = ReasonFor(ended.Reason, false)
			}
		}
		if f.Status == "" {
			f.Status = StatusCompleted
			if ended != nil && ended.Reason == voice.EndError && len(f.TranscriptObject) == 0 {
				f.Status = StatusFailed
			}
		}
		r.closeErr = r.svc.Finish(ctx, r.callID, f)
	})
	return r.closeErr
}
