package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/calls"
	"github.com/parleyhq/parley/httpapi/ratelimit"
)

// maintenanceArgs is the periodic housekeeping job: expired login sessions and stale
// rate-limit windows are deleted so those tables stay small, and calls no worker ever
// started are failed.
type maintenanceArgs struct{}

func (maintenanceArgs) Kind() string { return "maintenance" }

// InsertOpts makes the job unique per period, so several workers' periodic schedulers
// never pile up duplicates.
func (maintenanceArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{UniqueOpts: river.UniqueOpts{ByPeriod: 5 * time.Minute}}
}

type maintenanceWorker struct {
	river.WorkerDefaults[maintenanceArgs]
	accounts   *accounts.Service
	calls      *calls.Service
	recordings *calls.Recordings
	pool       *pgxpool.Pool
	log        *slog.Logger
}

func (w *maintenanceWorker) Work(ctx context.Context, job *river.Job[maintenanceArgs]) error {
	sessions, err := w.accounts.PurgeExpired(ctx)
	if err != nil {
		return err
	}
	windows, err := ratelimit.NewPostgresStore(w.pool).Cleanup(ctx, time.Now().Add(-10*time.Minute))
	if err != nil {
		return err
	}
	// A web call no worker picked up (none running, or LiveKit dropped the dispatch:
	// it never retries one) would look live for ever. Five minutes is far past any
	// dispatch, and past a worker's own wait for its caller.
	stale, err := w.calls.FailStale(ctx, 5*time.Minute)
	if err != nil {
		return err
	}
	// A call whose worker died mid-call: its room is gone and nobody finishes it.
	orphans, err := w.calls.FailOrphans(ctx, 2*time.Minute)
	if err != nil {
		w.log.Warn("maintenance: orphaned calls", "err", err)
	}
	keys, err := w.calls.DeleteExpiredIdempotencyKeys(ctx)
	if err != nil {
		w.log.Warn("maintenance: idempotency keys", "err", err)
	}
	// Half-written recordings of calls whose worker died; a live call's file is
	// younger than its maximum duration (4 h at most), so 6 h never removes one.
	temps := 0
	if w.recordings != nil {
		if temps, err = w.recordings.SweepTemp(6 * time.Hour); err != nil {
			w.log.Warn("maintenance: recording temp files", "err", err)
		}
	}
	w.log.Debug("maintenance", "expired_sessions", sessions, "rate_limit_windows", windows, "stale_calls", stale,
		"orphaned_calls", orphans, "idempotency_keys", keys, "recording_temp_files", temps)
	return nil
}
