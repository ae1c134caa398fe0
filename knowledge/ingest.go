package knowledge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/pgvector/pgvector-go"
	"github.com/riverqueue/river"

	"github.com/parleyhq/parley/knowledge/chunk"
	"github.com/parleyhq/parley/knowledge/embed"
	"github.com/parleyhq/parley/knowledge/extract"
)

// ingestArgs is the job that turns one source into chunks.
type ingestArgs struct {
	TenantID string `json:"tenant_id"`
	SourceID string `json:"source_id"`
}

func (ingestArgs) Kind() string { return "knowledge.ingest" }

// InsertOpts: five attempts with River's exponential backoff ride out a provider's
// brief outage; a source that still fails shows the error.
func (ingestArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{MaxAttempts: 5} }

type ingestWorker struct {
	river.WorkerDefaults[ingestArgs]
	s *Service
}

// Timeout: a 20 MB document can be tens of thousands of chunks behind a remote
// embedding API; River's one-minute default would cut it off.
func (w *ingestWorker) Timeout(*river.Job[ingestArgs]) time.Duration { return 30 * time.Minute }

// permanentError marks failures that a retry cannot fix (a corrupt file, a 404 page).
type permanentError struct{ msg string }

func (e permanentError) Error() string { return e.msg }

func (w *ingestWorker) Work(ctx context.Context, job *river.Job[ingestArgs]) error {
	err := w.s.ingest(ctx, job.Args)
	if err == nil {
		return nil
	}
	var perm permanentError
	if errors.As(err, &perm) || job.Attempt >= job.MaxAttempts {
		w.s.setSourceError(context.WithoutCancel(ctx), job.Args, err)
		return nil // recorded on the source; nothing to retry
	}
	w.s.pool.Exec(context.WithoutCancel(ctx), `UPDATE kb_sources SET error = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2`,
		job.Args.TenantID, job.Args.SourceID, fmt.Sprintf("attempt %d failed, retrying: %v", job.Attempt, err))
	return err
}

func (s *Service) setSourceError(ctx context.Context, a ingestArgs, err error) {
	msg := err.Error()
	if len(msg) > 1000 {
		msg = msg[:1000]
	}
	s.pool.Exec(ctx, `UPDATE kb_sources SET status = 'error', error = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2`,
		a.TenantID, a.SourceID, msg)
	s.cfg.Logger.Info("knowledge source failed", "source_id", a.SourceID, "err", msg)
}

// ingestTarget is what a job needs to know about the source and its KB.
type ingestTarget struct {
	kbID, kind, name, url, format string
	langOID                       uint32
	spec                          EmbedderSpec
	embedderID                    string
}

func (s *Service) loadTarget(ctx context.Context, tenantID, sourceID string) (ingestTarget, error) {
	var t ingestTarget
	var raw []byte
	err := s.pool.QueryRow(ctx, `SELECT s.kb_id, s.kind, s.name, s.url, s.format, kb.language::oid, kb.embedder, kb.embedder_id
		FROM kb_sources s JOIN knowledge_bases kb ON kb.id = s.kb_id
		WHERE s.tenant_id = $1 AND s.id = $2`, tenantID, sourceID).Scan(&t.kbID, &t.kind, &t.name, &t.url, &t.format, &t.langOID, &raw, &t.embedderID)
	if err != nil {
		return t, err
	}
	var stored EmbedderSpec
	json.Unmarshal(raw, &stored)
	t.spec, err = s.openSpec(stored)
	return t, err
}

// ingest runs extract → chunk → embed → store for one source. It is idempotent: a retry
// first removes what an earlier attempt wrote.
func (s *Service) ingest(ctx context.Context, a ingestArgs) error {
	t, err := s.loadTarget(ctx, a.TenantID, a.SourceID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // deleted while queued
	}
	if err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, `UPDATE kb_sources SET status = 'processing', chunks_done = 0, updated_at = now()
		WHERE tenant_id = $1 AND id = $2`, a.TenantID, a.SourceID); err != nil {
		return err
	}
	data, format, err := s.sourceContent(ctx, a, t)
	if err != nil {
		return err
	}
	doc, err := extract.Extract(format, data)
	if err != nil {
		if errors.Is(err, extract.ErrCorrupt) || errors.Is(err, extract.ErrEmpty) || errors.Is(err, extract.ErrUnsupported) {
			return permanentError{msg: err.Error()}
		}
		return err
	}
	chunks := chunk.Split(doc, s.cfg.Chunk)
	if len(chunks) == 0 {
		return permanentError{msg: "the document has no extractable text"}
	}
	emb, err := s.embedder(t.spec)
	if err != nil {
		return permanentError{msg: "embedder: " + err.Error()}
	}
	if err := s.ensurePartition(ctx, t.kbID); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM kb_chunks WHERE tenant_id = $1 AND kb_id = $2 AND source_id = $3`, a.TenantID, t.kbID, a.SourceID); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, `UPDATE kb_sources SET chunks_total = $3, format = $4 WHERE tenant_id = $1 AND id = $2`,
		a.TenantID, a.SourceID, len(chunks), string(format)); err != nil {
		return err
	}
	for start := 0; start < len(chunks); start += s.cfg.IngestBatch {
		end := min(start+s.cfg.IngestBatch, len(chunks))
		if err := s.storeBatch(ctx, a, t, emb, chunks[start:end]); err != nil {
			return err
		}
	}
	// The source is ready, and its KB's index job is asked for in the same transaction
	// (index.go: the job waits for the KB's load to go quiet, so one build serves the
	// whole load; while one is queued or running, this request folds into it).
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `WITH done AS (
				UPDATE kb_sources SET status = 'ready', error = '', chunk_count = $3, chunks_done = $3, updated_at = now()
				WHERE tenant_id = $1 AND id = $2)
			DELETE FROM kb_source_blobs WHERE source_id = $2`, a.TenantID, a.SourceID, len(chunks))
		if err != nil {
			return err
		}
		_, err = s.insertJob(ctx, tx, indexArgs{TenantID: a.TenantID, KBID: t.kbID})
		return err
	})
}

// embedText is what gets embedded for a chunk: its heading path gives the passage its
// topic ("Billing > Refunds"), which its text alone often does not repeat.
func embedText(c chunk.Chunk) string {
	if len(c.HeadingPath) == 0 {
		return c.Text
	}
	return strings.Join(c.HeadingPath, " > ") + "\n" + c.Text
}

// regconfigType lets COPY send regconfig values (the KB's text search configuration) as
// their OID, which is their binary form.
var regconfigType = &pgtype.Type{Name: "regconfig", OID: 3734, Codec: pgtype.Uint32Codec{}}

func (s *Service) storeBatch(ctx context.Context, a ingestArgs, t ingestTarget, emb embed.Embedder, batch []chunk.Chunk) error {
	texts := make([]string, len(batch))
	for i, c := range batch {
		texts[i] = embedText(c)
	}
	vecs, err := emb.Embed(ctx, texts)
	if err != nil {
		return fmt.Errorf("embedding: %w", err)
	}
	if len(vecs) != len(batch) {
		return fmt.Errorf("embedding: %d vectors for %d chunks", len(vecs), len(batch))
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	conn.Conn().TypeMap().RegisterType(regconfigType)
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// The batch commits without waiting for its WAL flush. That is safe here: if the
		// server crashes before the flush, the job has not completed either (River records
		// completion in a later, synchronous commit, and WAL is flushed in order), so it
		// runs again and its first step deletes whatever of this source survived. It saves
		// one fsync per batch, which on a slow disk is most of a batch's time.
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return err
		}
		rows := make([][]any, len(batch))
		for i, c := range batch {
			hp := c.HeadingPath
			if hp == nil {
				hp = []string{}
			}
			rows[i] = []any{a.TenantID, t.kbID, a.SourceID, c.Position, hp, c.Text, c.Tokens, t.langOID,
				len(vecs[i]), pgvector.NewVector(vecs[i]), emb.ID()}
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"kb_chunks"},
			[]string{"tenant_id", "kb_id", "source_id", "position", "heading_path", "content", "tokens", "lang", "dim", "embedding", "embedder_id"},
			pgx.CopyFromRows(rows))
		if err != nil {
			return fmt.Errorf("store chunks: %w", err)
		}
		_, err = tx.Exec(ctx, `UPDATE kb_sources SET chunks_done = chunks_done + $3, updated_at = now() WHERE tenant_id = $1 AND id = $2`,
			a.TenantID, a.SourceID, len(batch))
		return err
	})
}

// sourceContent returns the raw bytes to extract and their format.
func (s *Service) sourceContent(ctx context.Context, a ingestArgs, t ingestTarget) ([]byte, extract.Format, error) {
	if t.kind != KindURL {
		var data []byte
		err := s.pool.QueryRow(ctx, `SELECT data FROM kb_source_blobs WHERE tenant_id = $1 AND source_id = $2`, a.TenantID, a.SourceID).Scan(&data)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, "", permanentError{msg: "the uploaded content is gone; add the source again"}
		}
		return data, extract.Format(t.format), err
	}
	return s.fetch(ctx, t.url)
}

// fetch downloads a URL source through the SSRF-guarded client.
func (s *Service) fetch(ctx context.Context, rawURL string) ([]byte, extract.Format, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, "", permanentError{msg: "bad url: " + err.Error()}
	}
	req.Header.Set("Accept", "text/html,application/xhtml+xml,text/plain,text/markdown,application/pdf;q=0.9,*/*;q=0.5")
	resp, err := s.guard.Do(req)
	if err != nil {
		if strings.Contains(err.Error(), "PARLEY_ALLOW_PRIVATE_URLS") || strings.Contains(err.Error(), "not allowed") {
			return nil, "", permanentError{msg: "fetch: " + err.Error()}
		}
		return nil, "", fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
		return nil, "", permanentError{msg: fmt.Sprintf("fetch: the page answered %s", resp.Status)}
	}
	if resp.StatusCode >= 300 {
		return nil, "", fmt.Errorf("fetch: the page answered %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, s.cfg.MaxPageBytes+1))
	if err != nil {
		return nil, "", fmt.Errorf("fetch: %w", err)
	}
	if int64(len(data)) > s.cfg.MaxPageBytes {
		return nil, "", permanentError{msg: "fetch: the page exceeds " + humanBytes(s.cfg.MaxPageBytes)}
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	format, err := extract.Detect(resp.Request.URL.Path, ct, data)
	if err != nil {
		return nil, "", permanentError{msg: fmt.Sprintf("fetch: unsupported content type %q", ct)}
	}
	return data, format, nil
}

// reembedArgs re-embeds a KB's chunks after its embedder changed.
type reembedArgs struct {
	TenantID   string `json:"tenant_id"`
	KBID       string `json:"kb_id"`
	EmbedderID string `json:"embedder_id"`
}

func (reembedArgs) Kind() string { return "knowledge.reembed" }

func (reembedArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{MaxAttempts: 10} }

type reembedWorker struct {
	river.WorkerDefaults[reembedArgs]
	s *Service
}

func (w *reembedWorker) Timeout(*river.Job[reembedArgs]) time.Duration { return 2 * time.Hour }

// Work re-embeds, batch by batch, every chunk whose vector came from another embedder.
// It stops early when the KB's embedder changed again (a newer job owns the work); chunks
// ingested meanwhile with the old embedder are picked up because the loop re-queries.
func (w *reembedWorker) Work(ctx context.Context, job *river.Job[reembedArgs]) error {
	s, a := w.s, job.Args
	for {
		var raw []byte
		var current string
		err := s.pool.QueryRow(ctx, `SELECT embedder, embedder_id FROM knowledge_bases WHERE tenant_id = $1 AND id = $2`,
			a.TenantID, a.KBID).Scan(&raw, &current)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && current != a.EmbedderID) {
			return nil
		}
		if err != nil {
			return err
		}
		var stored EmbedderSpec
		json.Unmarshal(raw, &stored)
		spec, err := s.openSpec(stored)
		if err != nil {
			return err
		}
		emb, err := s.embedder(spec)
		if err != nil {
			return err
		}
		rows, err := s.pool.Query(ctx, `SELECT id, heading_path, content FROM kb_chunks
			WHERE tenant_id = $1 AND kb_id = $2 AND embedder_id <> $3 ORDER BY id LIMIT $4`, a.TenantID, a.KBID, a.EmbedderID, s.cfg.IngestBatch)
		if err != nil {
			return err
		}
		var idsBatch []int64
		var texts []string
		for rows.Next() {
			var id int64
			var c chunk.Chunk
			if err := rows.Scan(&id, &c.HeadingPath, &c.Text); err != nil {
				rows.Close()
				return err
			}
			idsBatch = append(idsBatch, id)
			texts = append(texts, embedText(c))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(idsBatch) == 0 {
			_, err := s.pool.Exec(ctx, `UPDATE knowledge_bases SET status = 'ready', reembed_done = reembed_total, updated_at = now()
				WHERE tenant_id = $1 AND id = $2 AND embedder_id = $3`, a.TenantID, a.KBID, a.EmbedderID)
			if err != nil {
				return err
			}
			// The vectors changed: the index for the old model goes, one for the new is built.
			return s.requestIndex(ctx, a.TenantID, a.KBID)
		}
		vecs, err := emb.Embed(ctx, texts)
		if err != nil {
			return fmt.Errorf("embedding: %w", err)
		}
		pv := make([]pgvector.Vector, len(vecs))
		for i, v := range vecs {
			pv[i] = pgvector.NewVector(v)
		}
		if _, err := s.pool.Exec(ctx, `WITH u AS (
				UPDATE kb_chunks c SET embedding = u.e, dim = $4, embedder_id = $5
				FROM unnest($3::bigint[], $6::vector[]) AS u(id, e)
				WHERE c.tenant_id = $1 AND c.kb_id = $2 AND c.id = u.id RETURNING 1)
			UPDATE knowledge_bases SET reembed_done = reembed_done + (SELECT count(*) FROM u) WHERE tenant_id = $1 AND id = $2`,
			a.TenantID, a.KBID, idsBatch, len(vecs[0]), a.EmbedderID, pv); err != nil {
			return err
		}
	}
}
