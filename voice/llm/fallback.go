package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrBudgetExceeded is the Cause reported when the primary provider produced nothing
// within FallbackConfig.Budget.
var ErrBudgetExceeded = errors.New("llm: primary exceeded its first-token budget")

// FallbackConfig configures WithFallback.
type FallbackConfig struct {
	// Budget is how long the primary has, from Stream until its first chunk, before it is
	// cancelled and the secondary asked instead. It should be shorter than the primary's
	// own FirstTokenTimeout times its retries, or the primary's retries never get to
	// matter. A hosted model's first token comes in about 1 s at the 95th percentile; 3 s
	// of silence is already a long pause on a phone line. Default 3 s.
	Budget time.Duration
	// OnServe, if set, is called once for every stream Stream returns, saying which
	// provider serves it and why. It runs on the caller's goroutine; keep it short.
	OnServe func(Served)
}

const defaultFallbackBudget = 3 * time.Second

// Served says which provider answered a request.
type Served struct {
	// Provider is the Name of the provider that served.
	Provider string
	// Fallback is true when the secondary served.
	Fallback bool
	// Cause is why the primary was abandoned (nil when it served). It wraps
	// ErrBudgetExceeded when the primary was too slow.
	Cause error
	// Elapsed is the time from Stream to the decision: the primary's first chunk, or its
	// failure or timeout.
	Elapsed time.Duration
}

// Fallback is a Provider that asks a primary first and, if the primary fails or is
// silent past the budget before producing anything, cancels it and asks a secondary.
// Once a provider has produced a chunk it serves the whole answer: switching mid-answer
// would repeat or garble words.
//
// Streams it returns implement interface{ Served() Served }.
type Fallback struct {
	primary, secondary Provider
	cfg                FallbackConfig
}

var _ Provider = (*Fallback)(nil)

// WithFallback returns a Provider that falls back from primary to secondary.
func WithFallback(primary, secondary Provider, cfg FallbackConfig) (*Fallback, error) {
	if primary == nil || secondary == nil {
		return nil, errors.New("llm: fallback needs a primary and a secondary provider")
	}
	if cfg.Budget < 0 {
		return nil, errors.New("llm: fallback budget must not be negative")
	}
	if cfg.Budget == 0 {
		cfg.Budget = defaultFallbackBudget
	}
	return &Fallback{primary: primary, secondary: secondary, cfg: cfg}, nil
}

// Name implements Provider: "primary>secondary".
func (f *Fallback) Name() string { return f.primary.Name() + ">" + f.secondary.Name() }

type firstResult struct {
	s   Stream
	c   Chunk
	err error
}

// Stream implements Provider.
func (f *Fallback) Stream(ctx context.Context, req Request) (Stream, error) {
	start := time.Now()
	pctx, pcancel := context.WithCancel(ctx)
	done := make(chan firstResult, 1)
	go func() {
		s, err := f.primary.Stream(pctx, req)
		if err != nil {
			done <- firstResult{err: err}
			return
		}
		c, err := s.Recv()
		done <- firstResult{s: s, c: c, err: err}
	}()
	// abandon cancels the primary and closes its stream once its goroutine returns (it
	// does promptly: the provider honours pctx).
	abandon := func() {
		pcancel()
		go func() {
			if r := <-done; r.s != nil {
				r.s.Close()
			}
		}()
	}

	timer := time.NewTimer(f.cfg.Budget)
	defer timer.Stop()
	var cause error
	select {
	case r := <-done:
		if r.s != nil && (r.err == nil || errors.Is(r.err, io.EOF)) {
			served := Served{Provider: f.primary.Name(), Elapsed: time.Since(start)}
			f.report(served)
			return &fallbackStream{Stream: r.s, first: r, hasFirst: true, cancel: pcancel, served: served}, nil
		}
		if r.s != nil {
			r.s.Close()
		}
		pcancel()
		cause = r.err
	case <-timer.C:
		abandon()
		cause = fmt.Errorf("%w (%s, %s)", ErrBudgetExceeded, f.primary.Name(), f.cfg.Budget)
	case <-ctx.Done():
		abandon()
		return nil, ctx.Err()
	}

	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	elapsed := time.Since(start)
	s, err := f.secondary.Stream(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("llm: %s failed, then %s: %w", f.primary.Name(), f.secondary.Name(), errors.Join(cause, err))
	}
	served := Served{Provider: f.secondary.Name(), Fallback: true, Cause: cause, Elapsed: elapsed}
	f.report(served)
	return &fallbackStream{Stream: s, cancel: func() {}, served: served}, nil
}

func (f *Fallback) report(s Served) {
	if f.cfg.OnServe != nil {
		f.cfg.OnServe(s)
	}
}

// fallbackStream replays the primary's first chunk, read ahead while timing it.
type fallbackStream struct {
	Stream
	first    firstResult
	hasFirst bool
	cancel   context.CancelFunc
	served   Served
}

func (s *fallbackStream) Recv() (Chunk, error) {
	if s.hasFirst {
		s.hasFirst = false
		return s.first.c, s.first.err
	}
	return s.Stream.Recv()
}

func (s *fallbackStream) Close() error {
	err := s.Stream.Close()
	s.cancel()
	return err
}

// Served reports which provider serves this stream.
func (s *fallbackStream) Served() Served { return s.served }
