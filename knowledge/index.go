package knowledge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// Vector indexing.
//
// Each knowledge base's chunks live in a partition of their own (kb_chunks_<kb id>, see
// migration 0005), and each partition gets its own HNSW index, built in bulk by the
// knowledge.index job once the KB's ingestion has settled:
//
//   - pgvector inserts into an HNSW graph one row at a time at about 1 ms per row at 100k
//     rows (measured: 522 rows/s with one writer, 694 with two), while a bulk CREATE INDEX
//     of the same 100k vectors takes 19 s (m=16, ef_construction=64) or 30 s (ef 128). So
//     ingestion writes chunks without a vector index, and the index is built afterwards.
//   - Until then, and for small KBs always, vector search is exact: PostgreSQL scans the
//     partition and sorts by distance. Below MinIndexedChunks that is as fast as a graph
//     walk and has perfect recall.
//   - A KB that already has its index takes later sources row by row; that costs ~1 ms
//     per chunk, which a source of a few hundred chunks does not notice.
//
// Partition DDL never blocks searches: a partition is created standalone and ATTACHed
// (SHARE UPDATE EXCLUSIVE on kb_chunks), and DETACHed CONCURRENTLY before it is dropped.
// CREATE TABLE … PARTITION OF and DROP TABLE would take ACCESS EXCLUSIVE on kb_chunks and
// stall every search behind them.

// partitionName is the table holding a KB's chunks. KB IDs are "kb_" plus lowercase
// base32 (internal/ids), always a valid unquoted identifier; anything else is refused so
// that no ID can smuggle SQL into DDL.
func partitionName(kbID string) (string, error) {
	if !strings.HasPrefix(kbID, "kb_") || len(kbID) > 40 {
		return "", fmt.Errorf("knowledge: bad knowledge base id %q", kbID)
	}
	for _, c := range kbID {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return "", fmt.Errorf("knowledge: bad knowledge base id %q", kbID)
		}
	}
	return "kb_chunks_" + kbID, nil
}

// hnswIndexName is the name of a partition's HNSW index for one vector size.
func hnswIndexName(part string, dim int) string { return fmt.Sprintf("%s_hnsw%d", part, dim) }

// ensurePartition creates and attaches the KB's chunk partition if it does not exist yet.
// CreateKB calls it; ingestion calls it again, so a KB made before partitioning or by
// another path still gets one.
func (s *Service) ensurePartition(ctx context.Context, kbID string) error {
	part, err := partitionName(kbID)
	if err != nil {
		return err
	}
	if _, ok := s.partitions.Load(kbID); ok {
		return nil
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// One creator per KB at a time; the others find it done.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('kb_chunks:' || $1, 0))`, kbID); err != nil {
			return err
		}
		var attached bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
			WHERE i.inhparent = 'kb_chunks'::regclass AND c.relname = $1)`, part).Scan(&attached); err != nil {
			return err
		}
		if attached {
			return nil
		}
		// ATTACH waits for, but does not block, searches; a bounded wait turns a lock
		// pile-up into a retryable error instead of a stall.
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '10s'`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+part+` (LIKE kb_chunks INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING CONSTRAINTS)`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `ALTER TABLE kb_chunks ATTACH PARTITION `+part+` FOR VALUES IN ('`+kbID+`')`)
		return err
	})
	if err != nil {
		return fmt.Errorf("knowledge: create partition for %s: %w", kbID, err)
	}
	s.partitions.Store(kbID, true)
	return nil
}

// dropPartition detaches and drops a KB's chunk partition. DETACH … CONCURRENTLY cannot
// run inside a transaction, so this is separate statements; a detach interrupted halfway
// is finished by the next call (FINALIZE).
func (s *Service) dropPartition(ctx context.Context, kbID string) error {
	part, err := partitionName(kbID)
	if err != nil {
		return err
	}
	s.partitions.Delete(kbID)
	var state string
	err = s.pool.QueryRow(ctx, `SELECT CASE WHEN i.inhdetachpending THEN 'pending' ELSE 'attached' END
		FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'kb_chunks'::regclass AND c.relname = $1`, part).Scan(&state)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return err
	case state == "pending":
		if _, err := s.pool.Exec(ctx, `ALTER TABLE kb_chunks DETACH PARTITION `+part+` FINALIZE`); err != nil {
			return fmt.Errorf("knowledge: detach %s: %w", part, err)
		}
	default:
		if _, err := s.pool.Exec(ctx, `ALTER TABLE kb_chunks DETACH PARTITION `+part+` CONCURRENTLY`); err != nil {
			return fmt.Errorf("knowledge: detach %s: %w", part, err)
		}
	}
	if _, err := s.pool.Exec(ctx, `DROP TABLE IF EXISTS `+part); err != nil {
		return fmt.Errorf("knowledge: drop %s: %w", part, err)
	}
	return nil
}

// indexArgs asks for a KB's HNSW index. Ingestion inserts it as each source becomes
// ready; the job then waits until the KB's load has gone quiet (no source pending or
// processing, none changed for IndexQuiet), so a bulk load of many sources is indexed once,
// at the end, instead of paying row-by-row graph inserts after an early build. A KB that
// never goes quiet is indexed anyway once the job is IndexSettleMax old.
type indexArgs struct {
	TenantID string `json:"tenant_id"`
	KBID     string `json:"kb_id"`
}

func (indexArgs) Kind() string { return "knowledge.index" }

// InsertOpts: one job per KB at a time is enough; ingestion asks again after every
// source, and the unique check folds those requests into the one already queued or
// running. (River requires a unique state set to include available, pending, running and
// scheduled.) Rows that arrive while a build runs are added to the index by PostgreSQL's
// CREATE INDEX CONCURRENTLY itself.
func (indexArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{MaxAttempts: 5, UniqueOpts: river.UniqueOpts{
		ByArgs: true,
		ByState: []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning,
			rivertype.JobStateScheduled, rivertype.JobStateRetryable},
	}}
}

type indexWorker struct {
	river.WorkerDefaults[indexArgs]
	s *Service
}

// Timeout: waiting for a load to settle (IndexSettleMax) and then building the graph of a
// million chunks takes a while.
func (w *indexWorker) Timeout(*river.Job[indexArgs]) time.Duration {
	return w.s.cfg.IndexSettleMax + time.Hour
}

func (w *indexWorker) Work(ctx context.Context, job *river.Job[indexArgs]) error {
	s, a := w.s, job.Args
	for {
		var dim int
		var busy bool
		err := s.pool.QueryRow(ctx, `SELECT kb.dim, kb.status <> 'ready' OR EXISTS (
				SELECT 1 FROM kb_sources src WHERE src.tenant_id = $1 AND src.kb_id = kb.id
				AND (src.status IN ('pending', 'processing') OR src.updated_at > now() - make_interval(secs => $3)))
			FROM knowledge_bases kb WHERE kb.tenant_id = $1 AND kb.id = $2`, a.TenantID, a.KBID, s.cfg.IndexQuiet.Seconds()).Scan(&dim, &busy)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // deleted meanwhile
		}
		if err != nil {
			return err
		}
		if !busy || time.Since(job.CreatedAt) > s.cfg.IndexSettleMax {
			return s.buildIndex(ctx, a.KBID, dim)
		}
		// Waiting here rather than snoozing: River promotes snoozed jobs only every few
		// seconds, and holding one worker slot per loading KB is cheap.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(s.cfg.IndexQuiet/4, 500*time.Millisecond)):
		}
	}
}

// buildIndex refreshes the KB partition's statistics and makes sure it has a valid HNSW
// index for its vector size when it holds at least MinIndexedChunks chunks, and no index
// for any other size.
func (s *Service) buildIndex(ctx context.Context, kbID string, dim int) error {
	if err := s.ensurePartition(ctx, kbID); err != nil {
		return err
	}
	part, _ := partitionName(kbID)
	want := hnswIndexName(part, dim)

	// Fresh statistics first: full-text search ranks a question's words by how common
	// they are in the KB (textSQL reads them from pg_stats), and autovacuum would analyze a
	// freshly loaded partition only later. It samples, so it takes about half a second at
	// 100k chunks.
	if _, err := s.pool.Exec(ctx, `ANALYZE `+part); err != nil {
		return fmt.Errorf("knowledge: analyze %s: %w", part, err)
	}

	// Existing HNSW indexes on the partition: keep a valid one for this size, drop the
	// rest (another size's index after a re-embed, or an invalid leftover of a build that
	// was interrupted, which PostgreSQL would otherwise keep updating).
	rows, err := s.pool.Query(ctx, `SELECT c.relname, x.indisvalid FROM pg_index x
		JOIN pg_class c ON c.oid = x.indexrelid JOIN pg_am am ON am.oid = c.relam
		WHERE x.indrelid = to_regclass($1) AND am.amname = 'hnsw'`, part)
	if err != nil {
		return err
	}
	var drop []string
	have := false
	for rows.Next() {
		var name string
		var valid bool
		if err := rows.Scan(&name, &valid); err != nil {
			rows.Close()
			return err
		}
		if name == want && valid {
			have = true
		} else {
			drop = append(drop, name)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, name := range drop {
		if _, err := s.pool.Exec(ctx, `DROP INDEX CONCURRENTLY IF EXISTS `+pgx.Identifier{name}.Sanitize()); err != nil {
			return fmt.Errorf("knowledge: drop index %s: %w", name, err)
		}
	}
	if have {
		return nil
	}
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM `+part+` WHERE dim = $1`, dim).Scan(&n); err != nil {
		return err
	}
	if n < s.cfg.MinIndexedChunks || dim > maxIndexedDim {
		return nil
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	// The graph is built in memory when it fits in maintenance_work_mem, which is far
	// faster than building it on disk; 100k 384-d vectors need about 200 MB.
	if _, err := conn.Exec(ctx, fmt.Sprintf(`SET maintenance_work_mem = '%dMB'`, s.cfg.IndexBuildMemMB)); err != nil {
		return err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `RESET maintenance_work_mem`)
	t0 := time.Now()
	// CONCURRENTLY: ingestion and searches go on while the graph is built.
	if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE INDEX CONCURRENTLY IF NOT EXISTS %s ON %s
		USING hnsw ((embedding::%s) %s) WITH (m = %d, ef_construction = %d) WHERE dim = %d`,
		want, part, vectorType(dim), opsClass(dim), s.cfg.HNSWM, s.cfg.HNSWEFConstruction, dim)); err != nil {
		return fmt.Errorf("knowledge: build index for %s: %w", kbID, err)
	}
	s.cfg.Logger.Info("knowledge index built", "kb_id", kbID, "chunks", n, "dim", dim, "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

// maxIndexedDim is the largest size pgvector's HNSW can index (as halfvec). Larger local
// embedder sizes are searched exactly.
const maxIndexedDim = 4000

// vectorType is the cast a size is indexed and searched as. pgvector's HNSW takes up to
// 2,000 dimensions of vector and 4,000 of halfvec (half precision), so
// text-embedding-3-large's 3,072 are indexed as halfvec.
func vectorType(dim int) string {
	if dim > 2000 {
		return fmt.Sprintf("halfvec(%d)", dim)
	}
	return fmt.Sprintf("vector(%d)", dim)
}

func opsClass(dim int) string {
	if dim > 2000 {
		return "halfvec_cosine_ops"
	}
	return "vector_cosine_ops"
}

// requestIndex queues the KB's index job (a no-op when one is already waiting).
func (s *Service) requestIndex(ctx context.Context, tenantID, kbID string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := s.insertJob(ctx, tx, indexArgs{TenantID: tenantID, KBID: kbID})
		return err
	})
}

// UpgradeLocalEmbedders re-embeds, in the background, the knowledge bases whose vectors
// came from an older version of the built-in local embedder (its ID names the version,
// e.g. local:hash-v1:384 before centring). Old and new vectors are not comparable, so
// until a KB's re-embedding ends, its vector search sees only the chunks already
// re-embedded; full-text search is unaffected. Processes call it at start; it is
// idempotent and safe to run from several at once. It returns how many KBs it queued.
func (s *Service) UpgradeLocalEmbedders(ctx context.Context) (int, error) {
	rows, err := s.pool.Query(ctx, `SELECT tenant_id, id, embedder_id, dim FROM knowledge_bases WHERE embedder->>'provider' = $1`, ProviderLocal)
	if err != nil {
		return 0, fmt.Errorf("knowledge: upgrade embedders: %w", err)
	}
	type kb struct {
		tenant, id, embID string
		dim               int
	}
	var stale []kb
	for rows.Next() {
		var k kb
		if err := rows.Scan(&k.tenant, &k.id, &k.embID, &k.dim); err != nil {
			rows.Close()
			return 0, err
		}
		stale = append(stale, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	queued := 0
	for _, k := range stale {
		emb, err := s.embedder(EmbedderSpec{Provider: ProviderLocal, Dimensions: k.dim})
		if err != nil || emb.ID() == k.embID {
			continue
		}
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `UPDATE knowledge_bases SET embedder_id = $3, status = 'reembedding', reembed_done = 0,
				reembed_total = (SELECT count(*) FROM kb_chunks WHERE kb_id = $2), updated_at = now()
				WHERE tenant_id = $1 AND id = $2 AND embedder_id = $4`, k.tenant, k.id, emb.ID(), k.embID)
			if err != nil || tag.RowsAffected() == 0 {
				return err // another process got there first
			}
			queued++
			_, err = s.insertJob(ctx, tx, reembedArgs{TenantID: k.tenant, KBID: k.id, EmbedderID: emb.ID()})
			return err
		})
		if err != nil {
			return queued, fmt.Errorf("knowledge: upgrade embedder of %s: %w", k.id, err)
		}
		s.cfg.Logger.Info("knowledge base re-embedding with the new local embedder", "kb_id", k.id, "from", k.embID, "to", emb.ID())
	}
	return queued, nil
}
