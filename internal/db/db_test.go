package db_test

import (
	"context"
	"testing"

	"github.com/parleyhq/parley/internal/db"
	"github.com/parleyhq/parley/internal/dbtest"
)

func TestMain(m *testing.M) { dbtest.Main(m) }

func TestMigrationsRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.Pool(t)
	st, err := db.Status(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) == 0 {
		t.Fatal("no migrations")
	}
	for _, s := range st {
		if s.AppliedAt.IsZero() {
			t.Fatalf("template left %04d_%s unapplied", s.Version, s.Name)
		}
	}
	// Down everything, then up again: every down file must undo its up file.
	rev, err := db.MigrateDown(ctx, pool, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rev) != len(st) {
		t.Fatalf("reverted %d of %d", len(rev), len(st))
	}
	var n int
	pool.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename NOT IN ('parley_migrations')`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d tables left after migrating down", n)
	}
	applied, err := db.MigrateUp(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != len(st) {
		t.Fatalf("applied %d of %d", len(applied), len(st))
	}
	// Idempotent: nothing pending, nothing applied twice.
	again, err := db.MigrateUp(ctx, pool)
	if err != nil || len(again) != 0 {
		t.Fatalf("second up applied %v, err %v", again, err)
	}
	var ext string
	if err := pool.QueryRow(ctx, `SELECT extversion FROM pg_extension WHERE extname = 'vector'`).Scan(&ext); err != nil {
		t.Fatalf("pgvector missing in test database: %v", err)
	}
}

func TestMigrateUpConcurrent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.Pool(t)
	if _, err := db.MigrateDown(ctx, pool, 0); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 4)
	total := make(chan int, 4)
	for range 4 {
		go func() {
			a, err := db.MigrateUp(ctx, pool)
			errs <- err
			total <- len(a)
		}()
	}
	sum := 0
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
		sum += <-total
	}
	ms, _ := db.Migrations()
	if sum != len(ms) {
		t.Fatalf("4 concurrent migrators applied %d migrations, want exactly %d", sum, len(ms))
	}
}
