// Package dbtest gives tests a real PostgreSQL with pgvector: each test gets its own
// database, cloned from a migrated template, so parallel tests are isolated and cheap.
//
// The server is PARLEY_TEST_DATABASE_URL when set (`make test` starts one throwaway
// cluster for the whole run and sets it); otherwise the first test in the process starts a
// throwaway cluster in a temporary directory, and Main stops it. When CI=true a server
// that cannot be had fails the test; it never skips.
package dbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/parleyhq/parley/internal/db"
	"github.com/parleyhq/parley/internal/pgcluster"
)

var (
	once     sync.Once
	adminURL string // a superuser URL to the "postgres" database
	template string // name of the migrated template database
	setupErr error
	cluster  *pgcluster.Cluster
	tmpDir   string
)

// Main runs the package's tests and then stops a cluster the harness started. Use it
// from TestMain: func TestMain(m *testing.M) { dbtest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	Shutdown()
	os.Exit(code)
}

// Shutdown stops the throwaway cluster, if this process started one.
func Shutdown() {
	if cluster != nil {
		cluster.Stop()
		os.RemoveAll(tmpDir)
	}
}

// StartCluster starts a throwaway cluster tuned for tests (no fsync: its data is
// disposable) in a fresh temporary directory. The caller must Stop it and remove Dir.
func StartCluster(ctx context.Context) (*pgcluster.Cluster, error) {
	dir, err := os.MkdirTemp("", "parley-testpg-")
	if err != nil {
		return nil, err
	}
	os.Chmod(dir, 0o755) // the postgres user must be able to enter it when we are root
	c, err := pgcluster.New(pgcluster.Config{
		DataDir: dir,
		Settings: map[string]string{
			"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
			"max_connections": "500", "shared_buffers": "256MB",
		},
	})
	if err == nil {
		err = c.Start(ctx)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

func setup() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	adminURL = os.Getenv("PARLEY_TEST_DATABASE_URL")
	if adminURL == "" {
		c, err := StartCluster(ctx)
		if err != nil {
			setupErr = fmt.Errorf("dbtest: start throwaway PostgreSQL: %w", err)
			return
		}
		cluster, tmpDir = c, c.DataDir()
		adminURL = c.URL("postgres")
	}
	hash, err := db.SchemaHash()
	if err != nil {
		setupErr = err
		return
	}
	template = "parley_tpl_" + hash
	setupErr = ensureTemplate(ctx, adminURL, template)
}

// ensureTemplate creates the migrated template once per schema, even when several test
// processes race for it: an advisory lock serialises them and the template is built
// under a temporary name, then renamed, so no one clones a half-migrated database.
func ensureTemplate(ctx context.Context, admin, name string) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("dbtest: connect %s: %w", redact(admin), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext($1))`, name); err != nil {
		return err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext($1))`, name)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	building := name + "_build"
	conn.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{building}.Sanitize()+` WITH (FORCE)`)
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{building}.Sanitize()); err != nil {
		return fmt.Errorf("dbtest: create template: %w", err)
	}
	pool, err := db.Open(ctx, db.Config{URL: withDB(admin, building), MaxConns: 2})
	if err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS vector`); err != nil {
		pool.Close()
		return fmt.Errorf("dbtest: pgvector is not installed on the test server (run scripts/setup): %w", err)
	}
	_, err = db.MigrateUp(ctx, pool)
	pool.Close()
	if err != nil {
		return fmt.Errorf("dbtest: migrate template: %w", err)
	}
	if _, err := conn.Exec(ctx, `ALTER DATABASE `+pgx.Identifier{building}.Sanitize()+` RENAME TO `+pgx.Identifier{name}.Sanitize()); err != nil {
		return err
	}
	return nil
}

func fail(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "" && strings.Contains(err.Error(), "binaries not found") {
		t.Skipf("no PostgreSQL here (run scripts/setup): %v", err)
	}
	t.Fatal(err)
}

// URL creates a fresh database for the test, cloned from the migrated template, and
// returns its URL. The database is dropped when the test ends.
func URL(t testing.TB) string {
	t.Helper()
	once.Do(setup)
	if setupErr != nil {
		fail(t, setupErr)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		fail(t, err)
	}
	defer conn.Close(ctx)
	var b [6]byte
	rand.Read(b[:])
	name := "parley_t_" + hex.EncodeToString(b[:])
	// CREATE DATABASE … TEMPLATE fails while another session is connected to the
	// template; only the short rename window above could cause that, so retry briefly.
	for i := 0; ; i++ {
		_, err = conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()+` TEMPLATE `+pgx.Identifier{template}.Sanitize())
		if err == nil || i == 20 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		fail(t, fmt.Errorf("dbtest: clone template: %w", err))
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), adminURL)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		c.Exec(context.Background(), `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`)
	})
	return withDB(adminURL, name)
}

// Pool returns a pool on a fresh database for the test; it is closed when the test ends.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	u := URL(t)
	pool, err := db.Open(context.Background(), db.Config{URL: u, MaxConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func withDB(u, name string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return u
	}
	parsed.Path = "/" + name
	return parsed.String()
}

func redact(u string) string {
	parsed, err := url.Parse(u)
	if err != nil {
		return "(unparseable url)"
	}
	return parsed.Redacted()
}
