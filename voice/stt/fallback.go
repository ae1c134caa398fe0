package stt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/parleyhq/parley/voice/audio"
)

var (
	// ErrBudgetExceeded is the Cause reported when the primary did not connect, or did
	// not produce its first result after the first Flush, within FallbackConfig.Budget.
	ErrBudgetExceeded = errors.New("stt: primary exceeded its budget")
	// errPrimaryEnded is the Cause when the primary's events ended before any result.
	errPrimaryEnded = errors.New("stt: primary stream ended before its first result")
)

// FallbackConfig configures WithFallback.
type FallbackConfig struct {
	// Budget bounds two waits on the primary: for Stream to connect, and, once
	// connected, for its first event after the engine's first Flush. Streaming
	// recognisers connect in 100 to 300 ms and answer a Finalize in about as long;
	// whisper-style servers take about a second for a short turn. Default 2 s.
	Budget time.Duration
	// ReplayWindow is how much of the latest audio is kept, while the primary has not
	// yet produced a result, to be replayed into the secondary if the primary is
	// abandoned then. Default 15 s.
	ReplayWindow time.Duration
	// OnServe, if set, is called once per stream when it is known which provider
	// serves it: when the primary produces its first result, or when the secondary takes
	// over. It is called from the stream's goroutine; keep it short.
	OnServe func(Served)
}

const (
	defaultFallbackBudget = 2 * time.Second
	defaultReplayWindow   = 15 * time.Second
)

// Served says which provider recognises a stream.
type Served struct {
	// Provider is the Name of the provider that serves.
	Provider string
	// Fallback is true when the secondary serves.
	Fallback bool
	// Cause is why the primary was abandoned (nil when it serves). It wraps
	// ErrBudgetExceeded when the primary was too slow.
	Cause error
	// Elapsed is the time from Stream to the decision.
	Elapsed time.Duration
}

// Fallback is a Provider that streams to a primary and, if the primary fails to connect
// or produces nothing within the budget, switches to a secondary. Until the primary's
// first result it keeps the recent audio and the SpeechStarted and Flush marks, and
// replays them into the secondary on a switch, so the caller's first words are not
// lost. Once the primary has produced a result it serves the whole stream.
//
// Streams it returns implement interface{ Served() (Served, bool) }.
type Fallback struct {
	primary, secondary Provider
	cfg                FallbackConfig
}

var _ Provider = (*Fallback)(nil)

// WithFallback returns a Provider that falls back from primary to secondary.
func WithFallback(primary, secondary Provider, cfg FallbackConfig) (*Fallback, error) {
	if primary == nil || secondary == nil {
		return nil, errors.New("stt: fallback needs a primary and a secondary provider")
	}
	if cfg.Budget < 0 || cfg.ReplayWindow < 0 {
		return nil, errors.New("stt: fallback durations must not be negative")
	}
	if cfg.Budget == 0 {
		cfg.Budget = defaultFallbackBudget
	}
	if cfg.ReplayWindow == 0 {
		cfg.ReplayWindow = defaultReplayWindow
	}
	return &Fallback{primary: primary, secondary: secondary, cfg: cfg}, nil
}

// Name implements Provider: "primary>secondary".
func (f *Fallback) Name() string { return f.primary.Name() + ">" + f.secondary.Name() }

// Stream implements Provider.
func (f *Fallback) Stream(ctx context.Context, opts Options) (Stream, error) {
	start := time.Now()
	sctx, cancel := context.WithCancel(ctx)
	rate := opts.SampleRate
	if rate == 0 {
		rate = defaultSampleRate
	}
	s := &fbStream{
		f: f, ctx: sctx, cancel: cancel, opts: opts, start: start, rate: rate,
		maxReplay: int(int64(rate) * int64(f.cfg.ReplayWindow) / int64(time.Second)),
		events:    make(chan Event, eventBuffer),
		flushed:   make(chan struct{}),
		done:      make(chan struct{}),
	}

	type connected struct {
		st  Stream
		err error
	}
	pctx, pcancel := context.WithCancel(sctx)
	conn := make(chan connected, 1)
	go func() {
		st, err := f.primary.Stream(pctx, opts)
		conn <- connected{st, err}
	}()
	timer := time.NewTimer(f.cfg.Budget)
	defer timer.Stop()
	var cause error
	select {
	case c := <-conn:
		if c.err == nil {
			s.cur, s.deciding, s.pcancel = c.st, true, pcancel
			s.wg.Add(1)
			go s.watchPrimary(c.st)
			return s, nil
		}
		pcancel()
		cause = c.err
	case <-timer.C:
		pcancel()
		// The attempt ends promptly now; close what it may still produce.
		go func() {
			if c := <-conn; c.st != nil {
				c.st.Close()
			}
		}()
		cause = fmt.Errorf("%w: no connection within %s", ErrBudgetExceeded, f.cfg.Budget)
	case <-ctx.Done():
		pcancel()
		cancel()
		go func() {
			if c := <-conn; c.st != nil {
				c.st.Close()
			}
		}()
		return nil, ctx.Err()
	}

	if ctx.Err() != nil {
		cancel()
		return nil, ctx.Err()
	}
	sec, err := f.secondary.Stream(sctx, opts)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("stt: %s failed, then %s: %w", f.primary.Name(), f.secondary.Name(), errors.Join(cause, err))
	}
	s.cur = sec
	s.decide(Served{Provider: f.secondary.Name(), Fallback: true, Cause: cause, Elapsed: time.Since(start)})
	s.wg.Add(1)
	go s.forward(sec)
	return s, nil
}

type opKind int

const (
	opFrame opKind = iota
	opSpeechStarted
	opFlush
)

// op is one recorded call, for replay into the secondary.
type op struct {
	kind    opKind
	samples []int16
	rate    int
}

// fbStream passes calls to the current stream and, while the primary is on trial
// (deciding), records them.
type fbStream struct {
	f         *Fallback
	ctx       context.Context
	cancel    context.CancelFunc
	pcancel   context.CancelFunc
	opts      Options
	start     time.Time
	rate      int
	maxReplay int

	mu        sync.Mutex
	cur       Stream
	deciding  bool // the primary has produced nothing yet: record everything
	switching bool // the secondary is being opened: record, pass nothing on
	log       []op
	logFrames int // samples held in log
	served    Served
	decided   bool
	err       error
	closed    bool

	events    chan Event
	flushed   chan struct{} // closed on the first Flush
	flushOnce sync.Once
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	wg        sync.WaitGroup
}

func (s *fbStream) WriteFrame(f audio.Frame) error {
	if f.Rate != 0 && f.Rate != s.rate {
		return fmt.Errorf("stt: frame at %d Hz on a %d Hz stream", f.Rate, s.rate)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.err != nil {
		return s.err
	}
	if s.deciding {
		s.record(op{kind: opFrame, samples: append([]int16(nil), f.Samples...), rate: f.Rate})
		if s.switching {
			return nil
		}
		// A failing primary is not the caller's problem yet: the recording has the audio.
		s.cur.WriteFrame(f)
		return nil
	}
	return s.cur.WriteFrame(f)
}

// record appends an op and drops the oldest audio beyond the replay window. Marks are
// kept: they are tiny, and without them the replay would lose its utterance bounds.
func (s *fbStream) record(o op) {
	s.log = append(s.log, o)
	s.logFrames += len(o.samples)
	if s.logFrames <= s.maxReplay+s.maxReplay/4 {
		return // trim in batches, not on every frame
	}
	kept := s.log[:0]
	for _, o := range s.log {
		if o.kind == opFrame && s.logFrames > s.maxReplay {
			s.logFrames -= len(o.samples)
			continue
		}
		kept = append(kept, o)
	}
	clear(s.log[len(kept):])
	s.log = kept
}

func (s *fbStream) SpeechStarted() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.err != nil {
		return
	}
	if s.deciding {
		s.record(op{kind: opSpeechStarted})
		if s.switching {
			return
		}
	}
	s.cur.SpeechStarted()
}

func (s *fbStream) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.err != nil {
		return s.err
	}
	if !s.deciding {
		return s.cur.Flush()
	}
	s.record(op{kind: opFlush})
	s.flushOnce.Do(func() { close(s.flushed) })
	if !s.switching {
		s.cur.Flush()
	}
	return nil
}

func (s *fbStream) Events() <-chan Event { return s.events }

func (s *fbStream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Served reports which provider serves the stream, once that is decided.
func (s *fbStream) Served() (Served, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served, s.decided
}

func (s *fbStream) decide(sv Served) {
	s.mu.Lock()
	s.served, s.decided = sv, true
	s.mu.Unlock()
	if s.f.cfg.OnServe != nil {
		s.f.cfg.OnServe(sv)
	}
}

// watchPrimary waits for the primary's first event; if it fails, or is silent for the
// budget after the first Flush, it switches to the secondary.
func (s *fbStream) watchPrimary(primary Stream) {
	defer s.wg.Done()
	defer func() {
		if s.pcancel != nil {
			s.pcancel()
		}
	}()
	flushed := s.flushed
	var timer *time.Timer
	var timeout <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	var cause error
	for cause == nil {
		select {
		case ev, ok := <-primary.Events():
			if !ok {
				if s.isClosed() {
					s.finish(primary)
					return
				}
				cause = errPrimaryEnded
				if err := primary.Err(); err != nil {
					cause = err
				}
				break
			}
			s.mu.Lock()
			s.deciding, s.log, s.logFrames = false, nil, 0
			s.mu.Unlock()
			s.decide(Served{Provider: s.f.primary.Name(), Elapsed: time.Since(s.start)})
			if s.emit(ev) {
				s.relay(primary)
			}
			s.finish(primary)
			return
		case <-flushed:
			flushed = nil
			timer = time.NewTimer(s.f.cfg.Budget)
			timeout = timer.C
		case <-timeout:
			cause = fmt.Errorf("%w: no result within %s of the first Flush", ErrBudgetExceeded, s.f.cfg.Budget)
		case <-s.done:
			s.finish(primary)
			return
		}
	}

	s.mu.Lock()
	s.switching = true
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		primary.Close()
	}()
	s.pcancel()

	sec, err := s.f.secondary.Stream(s.ctx, s.opts)
	if err != nil {
		s.setErr(fmt.Errorf("stt: %s failed, then %s: %w", s.f.primary.Name(), s.f.secondary.Name(), errors.Join(cause, err)))
		close(s.events)
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		sec.Close()
		close(s.events)
		return
	}
	// Replay under the lock, so the engine's next calls come after the recording.
	for _, o := range s.log {
		switch o.kind {
		case opFrame:
			err = sec.WriteFrame(audio.Frame{Samples: o.samples, Rate: o.rate})
		case opSpeechStarted:
			sec.SpeechStarted()
		case opFlush:
			err = sec.Flush()
		}
		if err != nil {
			break
		}
	}
	s.cur, s.deciding, s.switching, s.log, s.logFrames = sec, false, false, nil, 0
	s.mu.Unlock()
	if err != nil {
		s.setErr(fmt.Errorf("stt: replay into %s: %w", s.f.secondary.Name(), err))
	}
	s.decide(Served{Provider: s.f.secondary.Name(), Fallback: true, Cause: cause, Elapsed: time.Since(s.start)})
	s.relay(sec)
	s.finish(sec)
}

// forward relays a stream that serves from the start.
func (s *fbStream) forward(st Stream) {
	defer s.wg.Done()
	s.relay(st)
	s.finish(st)
}

// relay passes events on until the stream ends or the wrapper is closed.
func (s *fbStream) relay(st Stream) {
	for ev := range st.Events() {
		if !s.emit(ev) {
			return
		}
	}
}

// finish records the served stream's error and closes events.
func (s *fbStream) finish(st Stream) {
	if err := st.Err(); err != nil {
		s.setErr(err)
	}
	close(s.events)
}

func (s *fbStream) emit(ev Event) bool {
	select {
	case s.events <- ev:
		return true
	case <-s.done:
		return false
	}
}

func (s *fbStream) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil && !s.closed {
		s.err = err
	}
}

// Close closes the serving stream (letting it deliver its last results, as its own
// Close does) and then the wrapper.
func (s *fbStream) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		cur, switching := s.cur, s.switching
		s.mu.Unlock()
		// During a switch the primary is being closed already, and watchPrimary closes
		// the secondary it opens when it sees the wrapper closed.
		if !switching {
			cur.Close()
		}
		close(s.done)
		s.cancel()
		s.wg.Wait()
	})
	return nil
}

func (s *fbStream) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
