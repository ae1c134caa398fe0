// Package jobs builds Parley's River client: the one job queue every background job
// (ingestion, dialing, webhooks, maintenance) runs on, in the same PostgreSQL as the data
// the jobs act on, so a job can be inserted in the transaction that creates its data.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
)

// Config configures the job client.
type Config struct {
	// Work turns on job execution. `parley serve` only inserts jobs; `parley worker` and
	// `parley dev` also work them.
	Work bool
	// MaxWorkers is how many jobs run at once in this process (PARLEY_JOB_WORKERS,
	// default 50: jobs mostly wait on the network, not the CPU).
	MaxWorkers int
	// ShutdownTimeout is how long Stop lets running jobs finish before cancelling them;
	// cancelled jobs are retried by another worker (default 30s).
	ShutdownTimeout time.Duration
}

func (c *Config) defaults() {
	if c.MaxWorkers == 0 {
		c.MaxWorkers = 50
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
}

func (c Config) validate() error {
	if c.MaxWorkers < 1 || c.MaxWorkers > 10000 {
		return errors.New("jobs: MaxWorkers must be 1..10000")
	}
	return nil
}

// Client wraps the River client with Start/Stop.
type Client struct {
	*river.Client[pgx.Tx]
	cfg     Config
	started bool
}

// New builds the client. workers registers every job kind (needed even when only
// inserting, so kinds are checked); periodic jobs run on the elected leader only.
func New(pool *pgxpool.Pool, cfg Config, workers *river.Workers, periodic []*river.PeriodicJob, log *slog.Logger) (*Client, error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	// River reports routine activity (producer counts every few seconds) at info; keep
	// only its warnings and errors in Parley's log.
	rc := &river.Config{Logger: slog.New(minLevel{log.Handler(), slog.LevelWarn}), Workers: workers}
	if cfg.Work {
		rc.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: cfg.MaxWorkers}}
		rc.PeriodicJobs = periodic
	}
	c, err := river.NewClient(riverpgxv5.New(pool), rc)
	if err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	return &Client{Client: c, cfg: cfg}, nil
}

// Start begins working jobs (a no-op for insert-only clients).
func (c *Client) Start(ctx context.Context) error {
	if !c.cfg.Work {
		return nil
	}
	c.started = true
	return c.Client.Start(ctx)
}

// Stop stops fetching new jobs and waits up to ShutdownTimeout for running ones; then it
// cancels them so they are retried elsewhere. Safe to call twice.
func (c *Client) Stop() {
	if !c.started {
		return
	}
	c.started = false
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ShutdownTimeout)
	defer cancel()
	if err := c.Client.Stop(ctx); err != nil {
		c.Client.StopAndCancel(context.Background())
	}
}

// Ping checks the queue table is reachable.
func Ping(ctx context.Context, pool *pgxpool.Pool) error {
	var ok bool
	return pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM river_job LIMIT 1)`).Scan(&ok)
}

// minLevel drops records below a level.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}
