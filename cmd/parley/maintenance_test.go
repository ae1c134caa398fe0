package main

import (
	"context"
	"crypto/rand"
	"log/slog"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/parleyhq/parley/accounts"
	"github.com/parleyhq/parley/internal/dbtest"
	"github.com/parleyhq/parley/internal/jobs"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

// The maintenance job, run by a real River worker, deletes expired sessions and stale
// rate-limit windows and leaves live ones alone.
func TestMaintenanceJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.Pool(t)
	log := slog.New(slog.DiscardHandler)
	secret := make([]byte, 32)
	rand.Read(secret)
	acc, err := accounts.New(pool, accounts.Config{JWTSecret: secret, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	mustExec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	mustExec(`INSERT INTO tenants (id, name) VALUES ('ten_a', 'A')`)
	mustExec(`INSERT INTO users (id, email, password_hash, tenant_id) VALUES ('usr_a', 'a@example.com', 'x', 'ten_a')`)
	mustExec(`INSERT INTO auth_sessions (id, tenant_id, user_id, expires_at) VALUES
		('ses_old', 'ten_a', 'usr_a', now() - interval '1 day'), ('ses_live', 'ten_a', 'usr_a', now() + interval '1 day')`)
	mustExec(`INSERT INTO rate_limit_windows (bucket, window_start, count) VALUES
		('user:usr_a', now() - interval '1 hour', 5), ('user:usr_a', date_trunc('minute', now()), 3)`)

	workers := river.NewWorkers()
	river.AddWorker(workers, &maintenanceWorker{accounts: acc, pool: pool, log: log})
	jc, err := jobs.New(pool, jobs.Config{Work: true, MaxWorkers: 2}, workers, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := jc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer jc.Stop()
	if _, err := jc.Insert(ctx, maintenanceArgs{}, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var sessions, windows int
		pool.QueryRow(ctx, `SELECT count(*) FROM auth_sessions`).Scan(&sessions)
		pool.QueryRow(ctx, `SELECT count(*) FROM rate_limit_windows`).Scan(&windows)
		if sessions == 1 && windows == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the job: %d sessions, %d windows; want 1 and 1", sessions, windows)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var live string
	pool.QueryRow(ctx, `SELECT id FROM auth_sessions`).Scan(&live)
	if live != "ses_live" {
		t.Fatalf("kept %s", live)
	}
}
