package tts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/parleyhq/parley/voice/audio"
)

// ErrBudgetExceeded is the Cause reported when the primary provider sent no audio within
// FallbackConfig.Budget.
var ErrBudgetExceeded = errors.New("tts: primary exceeded its first-byte budget")

// FallbackConfig configures WithFallback.
type FallbackConfig struct {
	// Budget is how long the primary has, from Synthesize to its first audio, before it
	// is cancelled and the secondary asked instead. Hosted voices start in 0.2 to 0.6 s;
	// past 1.5 s the pause before a sentence is noticeable. Default 1.5 s.
	Budget time.Duration
	// OnServe, if set, is called once for every stream Synthesize returns, saying which
	// provider serves it and why. It runs on the caller's goroutine; keep it short.
	OnServe func(Served)
	// SecondaryVoice replaces Request.Voice when the secondary speaks. Voice IDs belong
	// to one provider ("alloy" means nothing to espeak-ng), so passing the primary's on
	// would make the fallback fail too. Empty means the secondary's default voice.
	SecondaryVoice string
}

const defaultFallbackBudget = 1500 * time.Millisecond

// Served says which provider spoke a sentence.
type Served struct {
	// Provider is the Name of the provider that served.
	Provider string
	// Fallback is true when the secondary served.
	Fallback bool
	// Cause is why the primary was abandoned (nil when it served). It wraps
	// ErrBudgetExceeded when the primary was too slow.
	Cause error
	// Elapsed is the time from Synthesize to the decision: the primary's first audio, or
	// its failure or timeout.
	Elapsed time.Duration
}

// Fallback is a Provider that asks a primary first and, if the primary fails or sends no
// audio within the budget, cancels it and asks a secondary. Once a provider has sent
// audio it speaks the whole sentence.
//
// SampleRate is the primary's; a secondary may speak at another rate, and its frames
// say so in Frame.Rate, which the engine must honour. Streams it returns implement
// interface{ Served() Served }.
type Fallback struct {
	primary, secondary Provider
	cfg                FallbackConfig
}

var _ Provider = (*Fallback)(nil)

// WithFallback returns a Provider that falls back from primary to secondary.
func WithFallback(primary, secondary Provider, cfg FallbackConfig) (*Fallback, error) {
	if primary == nil || secondary == nil {
		return nil, errors.New("tts: fallback needs a primary and a secondary provider")
	}
	if cfg.Budget < 0 {
		return nil, errors.New("tts: fallback budget must not be negative")
	}
	if cfg.Budget == 0 {
		cfg.Budget = defaultFallbackBudget
	}
	return &Fallback{primary: primary, secondary: secondary, cfg: cfg}, nil
}

// Name implements Provider: "primary>secondary".
func (f *Fallback) Name() string { return f.primary.Name() + ">" + f.secondary.Name() }

// SampleRate implements Provider: the primary's rate.
func (f *Fallback) SampleRate() int { return f.primary.SampleRate() }

type firstResult struct {
	s   Stream
	f   audio.Frame
	err error
}

// Synthesize implements Provider.
func (f *Fallback) Synthesize(ctx context.Context, req Request) (Stream, error) {
	start := time.Now()
	pctx, pcancel := context.WithCancel(ctx)
	done := make(chan firstResult, 1)
	go func() {
		s, err := f.primary.Synthesize(pctx, req)
		if err != nil {
			done <- firstResult{err: err}
			return
		}
		fr, err := s.Recv()
		done <- firstResult{s: s, f: fr, err: err}
	}()
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
	req.Voice = f.cfg.SecondaryVoice
	s, err := f.secondary.Synthesize(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("tts: %s failed, then %s: %w", f.primary.Name(), f.secondary.Name(), errors.Join(cause, err))
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

// fallbackStream replays the primary's first frame, read ahead while timing it.
type fallbackStream struct {
	Stream
	first    firstResult
	hasFirst bool
	cancel   context.CancelFunc
	served   Served
}

func (s *fallbackStream) Recv() (audio.Frame, error) {
	if s.hasFirst {
		s.hasFirst = false
		return s.first.f, s.first.err
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
