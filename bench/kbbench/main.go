// Command kbbench measures the knowledge base at scale: ingestion throughput with the
// built-in local embedder, hybrid query latency, HNSW recall@10 against exact search, and
// retrieval quality (MRR@10) on a labelled question set, for vector, text and hybrid.
//
//	go run ./bench/kbbench                # 100,000 chunks from /usr/share/doc, 1,000 queries
//	go run ./bench/kbbench -chunks 20000  # quicker
//
// It runs PostgreSQL the way `parley dev` does (a managed cluster with default settings,
// fsync on) in a temporary directory, and the real knowledge service with River workers.
package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pgvector/pgvector-go"
	"github.com/riverqueue/river"

	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/db"
	"github.com/parleyhq/parley/internal/jobs"
	"github.com/parleyhq/parley/internal/pgcluster"
	"github.com/parleyhq/parley/internal/safehttp"
	"github.com/parleyhq/parley/knowledge"
	"github.com/parleyhq/parley/knowledge/chunk"
	"github.com/parleyhq/parley/knowledge/embed"
	"github.com/parleyhq/parley/knowledge/extract"
)

//go:embed testdata/handbook.md
var handbook string

//go:embed testdata/questions.tsv
var questionsTSV string

func main() {
	target := flag.Int("chunks", 100000, "chunks to ingest")
	nq := flag.Int("queries", 1000, "queries for latency and recall")
	corpus := flag.String("corpus", "/usr/share/doc", "directory of text to ingest")
	workers := flag.Int("workers", 0, "jobs at once (0: the worker default, as `parley worker` runs)")
	efSearch := flag.Int("ef-search", 0, "HNSW ef_search (0: the service default)")
	vecWeight := flag.Float64("vector-weight", 0, "RRF weight of the vector ranking (0: the service default)")
	textLimit := flag.Int("text-rank-limit", 0, "matches ranked per full-text branch (0: the service default)")
	hnswM := flag.Int("m", 0, "HNSW m (0: the service default)")
	hnswEFC := flag.Int("ef-construction", 0, "HNSW ef_construction (0: the service default)")
	skipRecall := flag.Bool("skip-recall", false, "skip the recall measurement (1,000 exact scans)")
	reuse := flag.Bool("reuse", false, "with -db: query the corpus a previous run ingested there instead of ingesting again")
	dbURL := flag.String("db", "", "use this database (superuser, pgvector) instead of a managed cluster")
	dropIdx := flag.String("drop-index", "", "diagnosis: drop this index before ingesting (e.g. kb_chunks_tsv)")
	flag.Parse()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	if *dbURL == "" {
		dir, err := os.MkdirTemp("", "parley-kbbench-")
		check(err)
		os.Chmod(dir, 0o755)
		defer os.RemoveAll(dir)
		c, err := pgcluster.New(pgcluster.Config{DataDir: dir})
		check(err)
		check(c.Start(ctx))
		defer c.Stop()
		*dbURL = c.URL("postgres")
	}
	pool, err := db.Open(ctx, db.Config{URL: *dbURL})
	check(err)
	_, err = pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS vector`)
	check(err)
	pool.Close()
	pool, err = db.Open(ctx, db.Config{URL: *dbURL})
	check(err)
	defer pool.Close()
	_, err = db.MigrateUp(ctx, pool)
	check(err)
	for _, idx := range strings.Split(*dropIdx, ",") {
		if idx != "" {
			_, err = pool.Exec(ctx, `DROP INDEX `+pgx.Identifier{idx}.Sanitize())
			check(err)
		}
	}

	guard, err := safehttp.New(safehttp.Config{})
	check(err)
	box, _ := crypt.New(crypt.GenerateKey())
	svc, err := knowledge.New(pool, knowledge.Config{Logger: log, EFSearch: *efSearch, LocalVectorWeight: *vecWeight,
		HNSWM: *hnswM, HNSWEFConstruction: *hnswEFC, TextRankLimit: *textLimit}, box, guard)
	check(err)
	w := river.NewWorkers()
	svc.AddWorkers(w)
	jc, err := jobs.New(pool, jobs.Config{Work: true, MaxWorkers: *workers}, w, nil, log)
	check(err)
	svc.SetJobs(jc.Client)

	var kb knowledge.KnowledgeBase
	var chunks int
	var existing string
	pool.QueryRow(ctx, `SELECT id FROM knowledge_bases WHERE tenant_id = 'ten_bench'`).Scan(&existing)
	if *reuse && existing != "" {
		kb, err = svc.GetKB(ctx, "ten_bench", existing, false)
		check(err)
		check(pool.QueryRow(ctx, `SELECT count(*) FROM kb_chunks WHERE kb_id = $1`, kb.ID).Scan(&chunks))
		fmt.Printf("## Knowledge base benchmark (reusing the ingested corpus: %d chunks)\n\n", chunks)
	} else {
		_, err = pool.Exec(ctx, `INSERT INTO tenants (id, name) VALUES ('ten_bench', 'Bench')`)
		check(err)
		name := "Bench corpus"
		kb, err = svc.CreateKB(ctx, "ten_bench", knowledge.KBInput{Name: &name})
		check(err)

		// Build the corpus: the labelled handbook plus text files until the target count.
		fmt.Fprintf(os.Stderr, "reading corpus from %s…\n", *corpus)
		docs := []doc{{name: "handbook.md", text: handbook}}
		seen := map[string]bool{}
		total := countChunks(handbook, true)
		docs[0].chunks = total
		filepath.WalkDir(*corpus, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || total >= *target {
				if total >= *target {
					return filepath.SkipAll
				}
				return nil
			}
			text, ok := readText(path)
			if !ok || seen[text] {
				return nil // identical files (licences) would be deduplicated by ingestion
			}
			seen[text] = true
			n := countChunks(text, false)
			if n == 0 {
				return nil
			}
			docs = append(docs, doc{name: strings.TrimPrefix(path, *corpus+"/"), text: text, chunks: n})
			total += n
			return nil
		})
		// The handbook, which holds the labelled answers, goes in last: its chunks then sit
		// at the end of the table, behind every distractor, so no scan order favours them.
		docs = append(docs[1:], docs[0])
		var bytesTotal int
		for _, d := range docs {
			bytesTotal += len(d.text)
		}
		fmt.Fprintf(os.Stderr, "%d documents, %.1f MB, %d chunks expected\n", len(docs), float64(bytesTotal)/1e6, total)

		// Ingest: from the first AddSource to the last source ready.
		check(jc.Start(ctx))
		start := time.Now()
		lastPrint := start
		for _, d := range docs {
			_, _, err := svc.AddSource(ctx, "ten_bench", kb.ID, knowledge.SourceInput{Kind: knowledge.KindText, Name: d.name, Content: d.text})
			check(err)
		}
		for {
			var pending, failed, chunks int
			// Progress comes from the sources' own counters: counting kb_chunks here, 40 times
			// a second, once cost a whole core and halved the ingestion figure.
			check(pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status IN ('pending','processing')),
				count(*) FILTER (WHERE status = 'error'), coalesce(sum(chunks_done), 0) FROM kb_sources`).Scan(&pending, &failed, &chunks))
			if pending == 0 {
				break
			}
			if time.Since(lastPrint) > 2*time.Second {
				fmt.Fprintf(os.Stderr, "%d chunks stored, %.0f/s\n", chunks, float64(chunks)/time.Since(start).Seconds())
				lastPrint = time.Now()
			}
			time.Sleep(50 * time.Millisecond)
		}
		elapsed := time.Since(start)
		// Then the KB's HNSW index, which the index job builds in bulk once the load settles.
		for {
			var waiting int
			check(pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'knowledge.index'
				AND state NOT IN ('completed', 'discarded', 'cancelled')`).Scan(&waiting))
			if waiting == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		indexed := time.Since(start)
		var hasIndex bool
		check(pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
			WHERE c.relname = 'kb_chunks_' || $1 || '_hnsw384' AND x.indisvalid)`, kb.ID).Scan(&hasIndex))
		jc.Stop()
		var failed int
		check(pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM kb_chunks), (SELECT count(*) FROM kb_sources WHERE status = 'error')`).Scan(&chunks, &failed))
		fmt.Fprintln(os.Stderr)
		fmt.Printf("## Knowledge base benchmark\n\n")
		fmt.Printf("Corpus: %d documents from %s (%.1f MB of text), %d chunks; %d sources failed.\n\n", len(docs), *corpus, float64(bytesTotal)/1e6, chunks, failed)
		fmt.Printf("Ingestion (local embedder, %d job workers; 0 is the worker default):\n\n", *workers)
		fmt.Printf("- AddSource → every source ready and searchable (exactly): %.1f s, **%.0f chunks/s**\n", elapsed.Seconds(), float64(chunks)/elapsed.Seconds())
		fmt.Printf("- AddSource → the KB's HNSW index built (index present: %v): %.1f s, **%.0f chunks/s**\n\n", hasIndex, indexed.Seconds(), float64(chunks)/indexed.Seconds())
		pool.Exec(ctx, `VACUUM ANALYZE kb_chunks`)

	}
	// Queries: the 50 labelled questions plus phrases drawn from random chunks.
	questions := parseQuestions(questionsTSV)
	queries := make([]string, 0, *nq)
	for _, q := range questions {
		queries = append(queries, q.text)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rows, err := pool.Query(ctx, `SELECT content FROM kb_chunks TABLESAMPLE SYSTEM (5) LIMIT $1`, *nq*2)
	check(err)
	for rows.Next() && len(queries) < *nq {
		var c string
		rows.Scan(&c)
		words := strings.Fields(c)
		if len(words) < 12 {
			continue
		}
		i := rng.IntN(len(words) - 8)
		queries = append(queries, strings.Join(words[i:i+4+rng.IntN(5)], " "))
	}
	rows.Close()

	fmt.Printf("Query latency over %d queries (top_k 10, %d chunks, one KB):\n\n", len(queries), chunks)
	fmt.Printf("| mode | p50 | p95 | p99 |\n|---|---|---|---|\n")
	for _, mode := range []string{knowledge.ModeHybrid, knowledge.ModeVector, knowledge.ModeText} {
		lat := make([]time.Duration, 0, len(queries))
		for _, q := range queries {
			t0 := time.Now()
			_, err := svc.QueryKB(ctx, "ten_bench", kb.ID, knowledge.Query{Query: q, TopK: 10, Mode: mode})
			check(err)
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		fmt.Printf("| %s | %s | %s | %s |\n", mode, ms(pct(lat, 50)), ms(pct(lat, 95)), ms(pct(lat, 99)))
	}

	// Recall@10 of the HNSW search against exact search on the same embeddings. The corpus
	// repeats boilerplate (licences), so several chunks often share a distance: a result
	// counts as a true neighbour when it is no farther than the exact 10th neighbour.
	if !*skipRecall {
		var dupRows, distinct int
		check(pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT md5(content)) FROM kb_chunks`).Scan(&dupRows, &distinct))
		emb, _ := embed.NewLocal(384)
		var hits, want, exactIDHits int
		for _, q := range queries {
			res, err := svc.QueryKB(ctx, "ten_bench", kb.ID, knowledge.Query{Query: q, TopK: 10, Mode: knowledge.ModeVector})
			check(err)
			exact, d10 := exactTop10(ctx, pool, emb, kb.ID, q)
			got := map[int64]bool{}
			for _, r := range res {
				got[r.ChunkID] = true
				if 1-r.Score <= d10+2e-6 {
					hits++
				}
			}
			for _, id := range exact {
				if got[id] {
					exactIDHits++
				}
			}
			want += len(exact)
		}
		fmt.Printf("\nRecall@10 of HNSW (ef_search %d, iterative scan; 0 = the service default) against exact search: **%.3f** over %d queries "+
			"(by identity of chunk IDs, which ties between duplicate chunks make stricter: %.3f; %d of %d chunks have distinct text)\n\n",
			*efSearch, float64(hits)/float64(want), len(queries), float64(exactIDHits)/float64(want), distinct, dupRows)

	}

	// Retrieval quality on the labelled set.
	fmt.Printf("Retrieval quality, %d labelled questions, answer among %d chunks:\n\n| mode | MRR@10 | hit@1 | hit@10 |\n|---|---|---|---|\n", len(questions), chunks)
	for _, mode := range []string{knowledge.ModeVector, knowledge.ModeText, knowledge.ModeHybrid} {
		var mrr float64
		var at1, at10 int
		for _, q := range questions {
			res, err := svc.QueryKB(ctx, "ten_bench", kb.ID, knowledge.Query{Query: q.text, TopK: 10, Mode: mode})
			check(err)
			for i, r := range res {
				if len(r.HeadingPath) > 0 && r.HeadingPath[len(r.HeadingPath)-1] == q.section {
					mrr += 1 / float64(i+1)
					if i == 0 {
						at1++
					}
					at10++
					break
				}
			}
		}
		n := float64(len(questions))
		fmt.Printf("| %s | %.3f | %.2f | %.2f |\n", mode, mrr/n, float64(at1)/n, float64(at10)/n)
	}
}

type doc struct {
	name, text string
	chunks     int
}

type question struct{ text, section string }

func parseQuestions(tsv string) []question {
	var out []question
	sc := bufio.NewScanner(strings.NewReader(tsv))
	for sc.Scan() {
		q, s, ok := strings.Cut(sc.Text(), "\t")
		if ok {
			out = append(out, question{q, s})
		}
	}
	return out
}

// countChunks splits text the way ingestion will, to size the corpus.
func countChunks(text string, markdown bool) int {
	f := extract.FormatText
	if markdown {
		f = extract.FormatMarkdown
	}
	d, err := extract.Extract(f, []byte(text))
	if err != nil {
		return 0
	}
	return len(chunk.Split(d, chunk.Options{}))
}

// readText returns a file's text (gunzipped) when it is valid UTF-8 prose-like text.
func readText(path string) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return "", false
		}
		r = gz
	}
	b, err := io.ReadAll(io.LimitReader(r, 4<<20))
	if err != nil || len(b) < 200 || bytes.IndexByte(b, 0) >= 0 || !utf8.Valid(b) {
		return "", false
	}
	return string(b), true
}

// exactTop10 is the true nearest neighbours: the same query with index scans off, so
// PostgreSQL computes every distance.
func exactTop10(ctx context.Context, pool *pgxpool.Pool, emb embed.Embedder, kbID, q string) ([]int64, float64) {
	v, err := emb.Embed(ctx, []string{q})
	check(err)
	var out []int64
	var last float64
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		tx.Exec(ctx, `SET LOCAL enable_indexscan = off`)
		tx.Exec(ctx, `SET LOCAL enable_bitmapscan = off`)
		rows, err := tx.Query(ctx, `SELECT id, embedding::vector(384) <=> $1::vector(384) FROM kb_chunks WHERE dim = 384 AND kb_id = $2
			ORDER BY embedding::vector(384) <=> $1::vector(384) LIMIT 10`, pgvector.NewVector(v[0]), kbID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			rows.Scan(&id, &last)
			out = append(out, id)
		}
		return rows.Err()
	})
	check(err)
	return out, last
}

func pct(d []time.Duration, p int) time.Duration {
	i := (len(d)*p + 99) / 100
	if i > 0 {
		i--
	}
	return d[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "kbbench:", err)
		os.Exit(1)
	}
}

var _ = sort.Ints
