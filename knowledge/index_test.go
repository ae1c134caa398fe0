package knowledge_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgvector/pgvector-go"

	"github.com/parleyhq/parley/knowledge"
)

// catalogue is a document of n distinct sections, each long enough to be a chunk of its own.
func catalogue(prefix string, n int) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "# %s catalogue\n\n", prefix)
	for i := range n {
		fmt.Fprintf(&sb, "## %s item %d\n\n", prefix, i)
		for j := range 12 {
			fmt.Fprintf(&sb, "The %s model %d-%d weighs %d grams, ships within %d days and comes with a %d month warranty. ",
				prefix, i, j, 100+i*7+j, 1+(i+j)%9, 6+(i*j)%30)
		}
		sb.WriteString("\n\n")
	}
	return sb.String()
}

// hasIndex reports whether the KB's partition has a valid HNSW index for 384 dimensions.
func (e *env) hasIndex(kbID string) bool {
	e.t.Helper()
	var ok bool
	err := e.pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
		WHERE c.relname = 'kb_chunks_' || $1 || '_hnsw384' AND x.indisvalid)`, kbID).Scan(&ok)
	if err != nil {
		e.t.Fatal(err)
	}
	return ok
}

// usesIndex reports whether the service's vector query for the KB walks its HNSW index.
func (e *env) usesIndex(tenant string, kb knowledge.KnowledgeBase) bool {
	e.t.Helper()
	q := make([]float32, 384)
	q[0] = 1
	// At test scale the planner rightly prefers sorting a few dozen exact distances to a
	// graph walk; with sorting disabled the index scan is the only other plan, so its
	// presence shows the query's expression and predicate match the index.
	var plan string
	err := pgx.BeginFunc(context.Background(), e.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(context.Background(), `SET LOCAL enable_sort = off`); err != nil {
			return err
		}
		return tx.QueryRow(context.Background(), `EXPLAIN (FORMAT JSON) `+knowledge.VectorSQL(384),
			pgvector.NewVector(q), tenant, []string{kb.ID}, kb.EmbedderID, 20).Scan(&plan)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.Contains(plan, `"Index Name": "kb_chunks_`+kb.ID+`_hnsw384"`)
}

// A KB is searched exactly while it is small or loading, and through its own HNSW index,
// built in bulk by the index job, once it has settled; sources added later are found
// through the index; deleting the KB drops its partition.
func TestVectorIndexLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnvConfig(t, false, knowledge.Config{MinIndexedChunks: 40, IndexQuiet: 200 * time.Millisecond})
	ten := e.tenant()
	kb := e.kb(ten, knowledge.KBInput{})
	ctx := context.Background()

	// Below the threshold: exact search, no index.
	small := e.add(ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Name: "small", Content: catalogue("Falcon", 5)})
	if small.Status != knowledge.StatusReady {
		t.Fatalf("small source: %s %s", small.Status, small.Error)
	}
	time.Sleep(600 * time.Millisecond) // the index job runs and decides the KB is too small
	if e.hasIndex(kb.ID) || e.usesIndex(ten, kb) {
		t.Fatal("a 5-chunk KB got an HNSW index")
	}
	res := e.query(ten, kb.ID, knowledge.Query{Query: "Falcon model 3-4 warranty", Mode: knowledge.ModeVector, TopK: 3})
	if len(res) == 0 || !strings.Contains(res[0].Text, "Falcon") {
		t.Fatalf("exact vector search found %v", res)
	}

	// A bulk load of three sources: the index appears once they are all in.
	for _, name := range []string{"Heron", "Osprey", "Kestrel"} {
		if _, _, err := e.svc.AddSource(ctx, ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Name: name, Content: catalogue(name, 20)}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for !e.hasIndex(kb.ID) {
		if time.Now().After(deadline) {
			var jobs string
			e.pool.QueryRow(ctx, `SELECT coalesce(string_agg(state || ' ' || attempt || ' ' || coalesce(errors::text, ''), '; '), 'none')
				FROM river_job WHERE kind = 'knowledge.index'`).Scan(&jobs)
			t.Fatalf("no HNSW index 60 s after the load; index jobs: %s", jobs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	srcs, _, err := e.svc.ListSources(ctx, ten, kb.ID, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range srcs {
		if s.Status != knowledge.StatusReady {
			t.Errorf("the index was built while source %s was %s", s.Name, s.Status)
		}
	}

	// Vector search now walks the index, and still finds the right chunk.
	if !e.usesIndex(ten, kb) {
		t.Error("vector search does not use the HNSW index")
	}
	res = e.query(ten, kb.ID, knowledge.Query{Query: "Osprey item 17 model 17-3", Mode: knowledge.ModeVector, TopK: 5})
	found := false
	for _, r := range res {
		found = found || strings.Contains(r.Text, "Osprey model 17-3 ")
	}
	if !found {
		t.Errorf("indexed vector search: Osprey 17-3 not in the top 5: %v", res)
	}

	// A source added after the build goes into the index row by row and is found.
	late := e.add(ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Name: "late", Content: catalogue("Albatross", 3)})
	if late.Status != knowledge.StatusReady {
		t.Fatalf("late source: %s %s", late.Status, late.Error)
	}
	res = e.query(ten, kb.ID, knowledge.Query{Query: "Albatross albatross", Mode: knowledge.ModeVector, TopK: 3})
	if len(res) == 0 || !strings.Contains(res[0].SourceName, "late") {
		t.Errorf("late source not found through the index: %v", res)
	}

	// Deleting the KB drops its partition with its index.
	if err := e.svc.DeleteKB(ctx, ten, kb.ID); err != nil {
		t.Fatal(err)
	}
	var exists bool
	if err := e.pool.QueryRow(ctx, `SELECT to_regclass('kb_chunks_' || $1) IS NOT NULL`, kb.ID).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Error("the KB's partition survived its deletion")
	}
	if err := e.svc.DeleteKB(ctx, ten, kb.ID); err == nil {
		t.Error("deleting a deleted KB succeeded")
	}
}

// A KB built by an older local embedder version is re-embedded by UpgradeLocalEmbedders,
// once, and is searchable by vector again afterwards.
func TestUpgradeLocalEmbedders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false)
	ten := e.tenant()
	kb := e.kb(ten, knowledge.KBInput{})
	ctx := context.Background()
	src := e.add(ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Name: "cat", Content: catalogue("Puffin", 6)})
	if src.Status != knowledge.StatusReady {
		t.Fatalf("source: %s %s", src.Status, src.Error)
	}
	// As if written by the previous version.
	const old = "local:hash-v1:384"
	if _, err := e.pool.Exec(ctx, `UPDATE knowledge_bases SET embedder_id = $2 WHERE id = $1`, kb.ID, old); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `UPDATE kb_chunks SET embedder_id = $2, embedding = embedding WHERE kb_id = $1`, kb.ID, old); err != nil {
		t.Fatal(err)
	}
	n, err := e.svc.UpgradeLocalEmbedders(ctx)
	if err != nil || n != 1 {
		t.Fatalf("UpgradeLocalEmbedders = %d, %v; want 1 KB queued", n, err)
	}
	if n, err := e.svc.UpgradeLocalEmbedders(ctx); err != nil || n != 0 {
		t.Fatalf("second UpgradeLocalEmbedders = %d, %v; want 0", n, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := e.svc.GetKB(ctx, ten, kb.ID, false)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status == "ready" {
			if got.EmbedderID != kb.EmbedderID || got.EmbedderID == old {
				t.Fatalf("embedder %s after the upgrade, want %s", got.EmbedderID, kb.EmbedderID)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %s after 30 s (%d/%d)", got.Status, got.ReembedDone, got.ReembedTotal)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var stale int
	e.pool.QueryRow(ctx, `SELECT count(*) FROM kb_chunks WHERE kb_id = $1 AND embedder_id <> $2`, kb.ID, kb.EmbedderID).Scan(&stale)
	if stale != 0 {
		t.Fatalf("%d chunks not re-embedded", stale)
	}
	res := e.query(ten, kb.ID, knowledge.Query{Query: "Puffin model 4-2", Mode: knowledge.ModeVector, TopK: 3})
	if len(res) == 0 || !strings.Contains(res[0].Text, "Puffin") {
		t.Fatalf("vector search after the upgrade: %v", res)
	}
}

// Once a load settles, the KB's partition has statistics, which full-text search uses to
// pick a question's rarest words.
func TestLoadSettledAnalyzesPartition(t *testing.T) {
	t.Parallel()
	e := newEnvConfig(t, false, knowledge.Config{IndexQuiet: 100 * time.Millisecond})
	ten := e.tenant()
	kb := e.kb(ten, knowledge.KBInput{})
	e.add(ten, kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Name: "cat", Content: catalogue("Gannet", 8)})
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stats
			WHERE tablename = 'kb_chunks_' || $1 AND attname = 'tsv' AND most_common_elems IS NOT NULL`, kb.ID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the partition was not analyzed after its load settled")
		}
		time.Sleep(50 * time.Millisecond)
	}
	res := e.query(ten, kb.ID, knowledge.Query{Query: "Gannet model 5-3 warranty", Mode: knowledge.ModeText, TopK: 3})
	if len(res) == 0 || !strings.Contains(res[0].Text, "Gannet model 5-") {
		t.Fatalf("text search with statistics: %v", res)
	}
}
