package knowledge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/ids"
	"github.com/parleyhq/parley/knowledge/extract"
)

// SourceInput adds a source: Kind text (Content), url (URL, or Content holding the URL)
// or file (Data with Filename and ContentType).
type SourceInput struct {
	Kind        string
	Name        string
	Content     string
	URL         string
	Filename    string
	ContentType string
	Data        []byte
}

// AddSource validates and stores a source and enqueues its ingestion in the same
// transaction. Identical content already in the KB returns the existing source and
// created=false (a source that had failed is queued again).
func (s *Service) AddSource(ctx context.Context, tenantID, kbID string, in SourceInput) (src Source, created bool, err error) {
	in.Name = strings.TrimSpace(in.Name)
	f := errs.Fields{}
	var blob []byte
	var format extract.Format
	var hashInput []byte
	switch in.Kind {
	case KindText:
		if strings.TrimSpace(in.Content) == "" {
			f.Add("content", "must not be empty")
			break
		}
		if int64(len(in.Content)) > s.cfg.MaxTextBytes {
			return src, false, tooLarge("Text content", s.cfg.MaxTextBytes)
		}
		if !utf8.ValidString(in.Content) {
			f.Add("content", "must be valid UTF-8")
		}
		blob, hashInput = []byte(in.Content), []byte(in.Content)
		format = extract.FormatText
		if ext := strings.ToLower(path.Ext(in.Name)); ext == ".md" || ext == ".markdown" {
			format = extract.FormatMarkdown
		}
		if in.Name == "" {
			in.Name = firstWords(in.Content, 8)
		}
	case KindURL:
		raw := strings.TrimSpace(in.URL)
		if raw == "" {
			raw = strings.TrimSpace(in.Content)
		}
		u, perr := url.Parse(raw)
		if raw == "" {
			f.Add("url", "is required")
			break
		}
		if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			f.Add("url", "must be an http:// or https:// URL")
			break
		}
		if err := s.guard.CheckURL(ctx, raw); err != nil {
			f.Add("url", "%s", err.Error())
			break
		}
		in.URL = u.String()
		hashInput = []byte("url\x00" + in.URL)
		if in.Name == "" {
			in.Name = in.URL
		}
	case KindFile:
		if len(in.Data) == 0 {
			f.Add("file", "is empty")
			break
		}
		if int64(len(in.Data)) > s.cfg.MaxUploadBytes {
			return src, false, tooLarge("File", s.cfg.MaxUploadBytes)
		}
		var derr error
		format, derr = extract.Detect(in.Filename, in.ContentType, in.Data)
		if derr != nil {
			return src, false, errs.New(errs.KindUnsupported, "unsupported_media_type",
				fmt.Sprintf("Unsupported file type for %q: upload .txt, .md, .html, .pdf, .docx or .csv", in.Filename))
		}
		blob, hashInput = in.Data, in.Data
		if in.Name == "" {
			in.Name = in.Filename
		}
		if in.Name == "" {
			in.Name = "upload." + string(format)
		}
	default:
		f.Add("type", "must be one of text, url, file")
	}
	if utf8.RuneCountInString(in.Name) > 500 {
		f.Add("name", "must be at most 500 characters")
	}
	if strings.ContainsRune(in.Name, 0) {
		f.Add("name", "must not contain NUL characters")
	}
	if err := f.Err(); err != nil {
		return src, false, err
	}
	sum := sha256.Sum256(hashInput)
	size := int64(len(blob))
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT true FROM knowledge_bases WHERE tenant_id = $1 AND id = $2 FOR SHARE`, tenantID, kbID).Scan(&exists); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		id := ids.New("src")
		tag, err := tx.Exec(ctx, `INSERT INTO kb_sources (id, tenant_id, kb_id, kind, name, url, format, size_bytes, content_hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (kb_id, content_hash) DO NOTHING`,
			id, tenantID, kbID, in.Kind, in.Name, in.URL, string(format), size, sum[:])
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			// Identical content is already here: hand back that source, re-queueing it if
			// its last ingestion failed.
			var status string
			if err := tx.QueryRow(ctx, `SELECT id, status FROM kb_sources WHERE kb_id = $1 AND content_hash = $2`,
				kbID, sum[:]).Scan(&id, &status); err != nil {
				return err
			}
			if status != StatusError {
				src.ID = id
				return nil
			}
			if _, err := tx.Exec(ctx, `UPDATE kb_sources SET status = 'pending', error = '', updated_at = now() WHERE id = $1`, id); err != nil {
				return err
			}
		} else {
			created = true
		}
		src.ID = id
		if blob != nil {
			if _, err := tx.Exec(ctx, `INSERT INTO kb_source_blobs (source_id, tenant_id, data) VALUES ($1, $2, $3)
				ON CONFLICT (source_id) DO NOTHING`, id, tenantID, blob); err != nil {
				return err
			}
		}
		_, err = s.insertJob(ctx, tx, ingestArgs{TenantID: tenantID, SourceID: id})
		return err
	})
	if err != nil {
		return src, false, fmt.Errorf("knowledge: add source to %s: %w", kbID, err)
	}
	src, err = s.GetSource(ctx, tenantID, kbID, src.ID)
	return src, created, err
}

// firstWords names a source after the start of its text, without control characters.
func firstWords(s string, n int) string {
	w := strings.Fields(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s))
	if len(w) > n {
		w = w[:n]
	}
	out := strings.Join(w, " ")
	if utf8.RuneCountInString(out) > 80 {
		out = string([]rune(out)[:80])
	}
	return out
}

const sourceColumns = `id, kb_id, kind, name, url, format, status, error, size_bytes, chunk_count, chunks_done,
	chunks_total, content_hash, created_at, updated_at`

func scanSource(row pgx.Row) (Source, error) {
	var s Source
	var hash []byte
	err := row.Scan(&s.ID, &s.KBID, &s.Kind, &s.Name, &s.URL, &s.Format, &s.Status, &s.Error, &s.SizeBytes,
		&s.ChunkCount, &s.ChunksDone, &s.ChunksTotal, &hash, &s.CreatedAt, &s.UpdatedAt)
	s.ContentHash = "sha256:" + hex.EncodeToString(hash)
	return s, err
}

// GetSource returns one source of a knowledge base.
func (s *Service) GetSource(ctx context.Context, tenantID, kbID, id string) (Source, error) {
	src, err := scanSource(s.pool.QueryRow(ctx, `SELECT `+sourceColumns+` FROM kb_sources
		WHERE tenant_id = $1 AND kb_id = $2 AND id = $3`, tenantID, kbID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		if _, kerr := s.GetKB(ctx, tenantID, kbID, false); kerr != nil {
			return src, kerr
		}
		return src, fmt.Errorf("knowledge: source %s: %w", id, ErrSourceNotFound)
	}
	if err != nil {
		return src, fmt.Errorf("knowledge: source %s: %w", id, err)
	}
	return src, nil
}

// ListSources lists a knowledge base's sources, newest first.
func (s *Service) ListSources(ctx context.Context, tenantID, kbID string, limit, offset int) ([]Source, int, error) {
	var total int
	var kbExists bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM knowledge_bases WHERE tenant_id = $1 AND id = $2),
		(SELECT count(*) FROM kb_sources WHERE tenant_id = $1 AND kb_id = $2)`, tenantID, kbID).Scan(&kbExists, &total)
	if err != nil {
		return nil, 0, fmt.Errorf("knowledge: list sources: %w", err)
	}
	if !kbExists {
		return nil, 0, fmt.Errorf("knowledge: list sources of %s: %w", kbID, ErrNotFound)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+sourceColumns+` FROM kb_sources WHERE tenant_id = $1 AND kb_id = $2
		ORDER BY created_at DESC, id LIMIT $3 OFFSET $4`, tenantID, kbID, limit, offset)
	if err != nil {
		return nil, 0, fmt.Errorf("knowledge: list sources: %w", err)
	}
	defer rows.Close()
	out := []Source{}
	for rows.Next() {
		src, err := scanSource(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, src)
	}
	return out, total, rows.Err()
}

// DeleteSource removes a source and its chunks.
func (s *Service) DeleteSource(ctx context.Context, tenantID, kbID, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM kb_sources WHERE tenant_id = $1 AND kb_id = $2 AND id = $3`, tenantID, kbID, id)
	if err != nil {
		return fmt.Errorf("knowledge: delete source %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		if _, kerr := s.GetKB(ctx, tenantID, kbID, false); kerr != nil {
			return kerr
		}
		return fmt.Errorf("knowledge: delete source %s: %w", id, ErrSourceNotFound)
	}
	return nil
}
