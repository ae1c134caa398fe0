package pgcluster_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/parleyhq/parley/internal/pgcluster"
)

// A cluster initialises once, keeps its password across restarts, refuses connections
// without it, and stops cleanly (twice is fine).
func TestClusterLifecycle(t *testing.T) {
	if _, err := pgcluster.FindBinDir(); err != nil && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	ctx := context.Background()
	dir := filepath.Join(postgresReachableDir(t), "pg")
	c, err := pgcluster.New(pgcluster.Config{DataDir: dir, Settings: map[string]string{"fsync": "off"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)`); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	// Password auth is required even on loopback.
	bad := c.URL("postgres")
	if cfg, err := pgx.ParseConfig(bad); err == nil {
		cfg.Password = "wrong"
		if conn, err := pgx.ConnectConfig(ctx, cfg); err == nil {
			conn.Close(ctx)
			t.Fatal("connected with a wrong password")
		}
	}
	c.Stop()
	c.Stop()
	if _, err := os.Stat(filepath.Join(dir, "pgdata", "postmaster.pid")); err == nil {
		t.Fatal("postmaster.pid left after Stop")
	}

	c2, err := pgcluster.New(pgcluster.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c2.Stop()
	conn, err = pgx.Connect(ctx, c2.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v int
	if err := conn.QueryRow(ctx, `SELECT v FROM kept`).Scan(&v); err != nil || v != 42 {
		t.Fatalf("data lost across restart: %v %v", v, err)
	}
}

// postgresReachableDir makes a temporary directory the postgres user can enter (when
// tests run as root, PostgreSQL runs as that user). t.TempDir's parent is private.
func postgresReachableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "parley-pgcluster-test-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// As root, a data directory the postgres user cannot enter is refused with a clear error.
func TestUnreachableDataDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root switches to the postgres user")
	}
	_, err := pgcluster.New(pgcluster.Config{DataDir: filepath.Join(t.TempDir(), "pg")})
	if err == nil {
		t.Fatal("no error for a data directory under a private parent")
	}
}
