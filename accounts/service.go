package accounts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/singleflight"
)

// Service is the accounts component. It is safe for concurrent use.
type Service struct {
	pool *pgxpool.Pool
	cfg  Config
	log  *slog.Logger

	// dummyHash is verified against when a login names an unknown email, so that such a
	// login costs the same argon2 work as a wrong password and response times do not
	// tell which emails have accounts.
	dummyHash string
	hashSem   chan struct{}

	keys      *cache[[32]byte, keyEntry]
	sessions  *cache[string, sessionEntry]
	loads     singleflight.Group // collapses concurrent misses for one credential
	listening atomic.Bool        // the caches are used only while the listener is connected

	usage   usageBuffer
	flushMu sync.Mutex // one usage flush at a time

	mu       sync.Mutex
	started  bool
	stopped  bool
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// New returns a Service. Call Start to turn on the credential cache and usage flushing.
func New(pool *pgxpool.Pool, cfg Config) (*Service, error) {
	if pool == nil {
		return nil, errors.New("accounts: nil pool")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{
		pool:     pool,
		cfg:      cfg,
		log:      cfg.Logger,
		hashSem:  make(chan struct{}, cfg.MaxConcurrentHashes),
		keys:     newCache[[32]byte, keyEntry](cfg.CacheTTL, cfg.CacheMaxEntries),
		sessions: newCache[string, sessionEntry](cfg.CacheTTL, cfg.CacheMaxEntries),
		usage:    usageBuffer{m: map[usageKey]*usageCount{}},
	}
	s.dummyHash = hashPHC(randomToken(16), cfg.Password)
	return s, nil
}

// Start opens the cache-invalidation listener (so it fails fast when the database is
// unreachable) and starts the listener and usage-flush goroutines. ctx bounds only the
// start-up; the goroutines run until Stop.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return errors.New("accounts: already started or stopped")
	}
	conn, err := s.connectListener(ctx)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.started, s.cancel = true, cancel
	s.setListening(true) // before returning, so a started Service caches at once
	s.wg.Add(2)
	go s.runListener(runCtx, conn)
	go s.runFlusher(runCtx)
	return nil
}

// Stop stops the goroutines and writes pending usage counters, so nothing counted is
// lost on shutdown. It is safe to call more than once, and without Start.
func (s *Service) Stop() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		cancel := s.cancel
		s.stopped = true
		s.mu.Unlock()
		if cancel != nil {
			cancel()
		}
		s.wg.Wait()
		ctx, cancelFlush := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancelFlush()
		if err := s.FlushUsage(ctx); err != nil {
			s.log.Error("accounts: final usage flush failed; counts lost", "err", err)
		}
	})
}

func (s *Service) runFlusher(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.UsageFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := s.FlushUsage(fctx); err != nil && ctx.Err() == nil {
				s.log.Warn("accounts: usage flush failed; will retry", "err", err)
			}
			cancel()
		}
	}
}

// notify sends a cache invalidation inside tx, so it is delivered when tx commits.
func notify(ctx context.Context, tx pgx.Tx, payload string) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, notifyChannel, payload)
	return err
}

// isUniqueViolation reports whether err is a unique violation on the named constraint
// (or on any unique constraint when name is empty).
func isUniqueViolation(err error, name string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && (name == "" || pe.ConstraintName == name)
}

// inTx runs fn in a transaction, committing when it returns nil.
func (s *Service) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

func wrapNoRows(err, sentinel error, format string, args ...any) error {
	if errors.Is(err, pgx.ErrNoRows) {
		err = sentinel
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}
