package db_test

import (
	"context"
	"strings"
	"testing"

	"github.com/parleyhq/parley/internal/db"
	"github.com/parleyhq/parley/internal/dbtest"
)

// Migration 0005 moves existing chunks into per-KB partitions, keeping their IDs and
// full-text vectors, and its down file moves them back.
func TestKBPartitionMigrationKeepsChunks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := dbtest.Pool(t)
	st, err := db.Status(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	steps := 0
	for _, s := range st {
		if s.Version >= 5 {
			steps++
		}
	}
	if _, err := db.MigrateDown(ctx, pool, steps); err != nil {
		t.Fatal(err)
	}
	vec := "[1" + strings.Repeat(",0", 383) + "]"
	for _, q := range []string{
		`INSERT INTO tenants (id, name) VALUES ('ten_a', 'A')`,
		`INSERT INTO knowledge_bases (id, tenant_id, name) VALUES ('kb_aaa', 'ten_a', 'A'), ('kb_bbb', 'ten_a', 'B')`,
		`INSERT INTO kb_sources (id, tenant_id, kb_id, kind, name, content_hash) VALUES ('src_1', 'ten_a', 'kb_aaa', 'text', 's1', '\x01'), ('src_2', 'ten_a', 'kb_bbb', 'text', 's2', '\x02')`,
		`INSERT INTO kb_chunks (tenant_id, kb_id, source_id, position, content, tokens, lang, dim, embedding, embedder_id)
			VALUES ('ten_a', 'kb_aaa', 'src_1', 0, 'refunds take five days', 4, 'english', 384, '` + vec + `', 'local:hash-v1:384'),
			       ('ten_a', 'kb_bbb', 'src_2', 0, 'parking is free', 3, 'english', 384, '` + vec + `', 'local:hash-v1:384')`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var maxID int64
	pool.QueryRow(ctx, `SELECT max(id) FROM kb_chunks`).Scan(&maxID)

	if _, err := db.MigrateUp(ctx, pool); err != nil {
		t.Fatal(err)
	}
	var id int64
	var matches bool
	if err := pool.QueryRow(ctx, `SELECT id, tsv @@ 'refund'::tsquery FROM kb_chunks_kb_aaa`).Scan(&id, &matches); err != nil {
		t.Fatalf("chunk not in its KB's partition: %v", err)
	}
	if !matches || id > maxID {
		t.Fatalf("chunk %d (max before %d) lost its full-text vector (%v) or its ID", id, maxID, matches)
	}
	var n int
	pool.QueryRow(ctx, `SELECT count(*) FROM kb_chunks_kb_bbb`).Scan(&n)
	if n != 1 {
		t.Fatalf("kb_bbb's partition has %d chunks, want 1", n)
	}
	// New chunks continue the ID sequence.
	if _, err := pool.Exec(ctx, `INSERT INTO kb_chunks (tenant_id, kb_id, source_id, position, content, tokens, lang, dim, embedding, embedder_id)
		VALUES ('ten_a', 'kb_aaa', 'src_1', 1, 'more', 1, 'english', 384, '`+vec+`', 'local:hash-v1:384')`); err != nil {
		t.Fatal(err)
	}
	var newID int64
	pool.QueryRow(ctx, `SELECT max(id) FROM kb_chunks`).Scan(&newID)
	if newID <= maxID {
		t.Fatalf("new chunk ID %d does not follow %d", newID, maxID)
	}

	if _, err := db.MigrateDown(ctx, pool, steps); err != nil {
		t.Fatal(err)
	}
	pool.QueryRow(ctx, `SELECT count(*) FROM kb_chunks WHERE tsv @@ 'refund'::tsquery AND id = $1`, id).Scan(&n)
	if n != 1 {
		t.Fatal("migrating down lost a chunk")
	}
}
