package knowledge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/parleyhq/parley/internal/crypt"
	"github.com/parleyhq/parley/internal/errs"
	"github.com/parleyhq/parley/internal/ids"
	"github.com/parleyhq/parley/knowledge/embed"
)

// Guard is the SSRF-guarded HTTP client (internal/safehttp) used for URL sources and
// embedding providers' base URLs.
type Guard interface {
	CheckURL(ctx context.Context, rawURL string) error
	Do(*http.Request) (*http.Response, error)
}

// JobInserter inserts River jobs in the caller's transaction (a *river.Client[pgx.Tx]).
type JobInserter interface {
	InsertTx(ctx context.Context, tx pgx.Tx, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
}

// Service is the knowledge store.
type Service struct {
	pool  *pgxpool.Pool
	cfg   Config
	box   *crypt.Box
	guard Guard
	jobs  JobInserter

	embMu     sync.Mutex
	embedders map[string]embed.Embedder // by spec fingerprint

	partitions sync.Map // KB IDs whose chunk partition is known to exist
}

// New builds the service. Call AddWorkers before the job client starts, and SetJobs
// once it exists.
func New(pool *pgxpool.Pool, cfg Config, box *crypt.Box, guard Guard) (*Service, error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if pool == nil || box == nil || guard == nil {
		return nil, errors.New("knowledge: pool, box and guard are required")
	}
	return &Service{pool: pool, cfg: cfg, box: box, guard: guard, embedders: map[string]embed.Embedder{}}, nil
}

// SetJobs gives the service the client it inserts ingestion jobs with.
func (s *Service) SetJobs(j JobInserter) { s.jobs = j }

// AddWorkers registers the ingestion and re-embedding workers.
func (s *Service) AddWorkers(w *river.Workers) {
	river.AddWorker(w, &ingestWorker{s: s})
	river.AddWorker(w, &reembedWorker{s: s})
	river.AddWorker(w, &indexWorker{s: s})
}

// embedder returns (and caches) the embedder for spec; spec.APIKey is the plain key.
func (s *Service) embedder(spec EmbedderSpec) (embed.Embedder, error) {
	raw, _ := json.Marshal(spec)
	sum := sha256.Sum256(raw)
	key := hex.EncodeToString(sum[:])
	s.embMu.Lock()
	defer s.embMu.Unlock()
	if e, ok := s.embedders[key]; ok {
		return e, nil
	}
	var e embed.Embedder
	var err error
	switch spec.Provider {
	case ProviderLocal:
		dim := spec.Dimensions
		if dim == 0 {
			dim = 384
		}
		e, err = embed.NewLocal(dim)
	case ProviderOpenAI:
		e, err = embed.NewOpenAI(embed.OpenAIConfig{BaseURL: spec.BaseURL, APIKey: spec.APIKey, Model: spec.Model,
			Dimensions: spec.Dimensions, HTTPClient: s.guard})
	default:
		err = fmt.Errorf("unknown embedding provider %q", spec.Provider)
	}
	if err != nil {
		return nil, err
	}
	s.embedders[key] = e
	return e, nil
}

// prober is implemented by embedders whose size is learned from the provider (an
// OpenAI-compatible model of unknown native size).
type prober interface {
	Probe(ctx context.Context) (int, error)
}

// dimOf returns the embedder's vector size, asking the provider when it is not known
// yet; that also surfaces a wrong key, URL or model when the KB is saved, not at the
// first ingestion.
func dimOf(ctx context.Context, e embed.Embedder) (int, error) {
	if d := e.Dim(); d > 0 {
		return d, nil
	}
	p, ok := e.(prober)
	if !ok {
		return 0, errors.New("the embedder does not report its vector size")
	}
	return p.Probe(ctx)
}

// openSpec returns the stored embedder spec with its key unsealed.
func (s *Service) openSpec(stored EmbedderSpec) (EmbedderSpec, error) {
	if stored.APIKey != "" {
		k, err := s.box.Open(stored.APIKey)
		if err != nil {
			return stored, fmt.Errorf("knowledge: open embedder key: %w", err)
		}
		stored.APIKey = k
	}
	return stored, nil
}

// KBInput creates or (with nil fields left alone) changes a knowledge base.
type KBInput struct {
	Name        *string       `json:"name,omitempty"`
	Description *string       `json:"description,omitempty"`
	Language    *string       `json:"language,omitempty"`
	Embedder    *EmbedderSpec `json:"embedder,omitempty"`
}

const maskedKey = "********"

func (s *Service) validateKB(ctx context.Context, in KBInput, creating bool) error {
	f := errs.Fields{}
	if in.Name != nil || creating {
		name := ""
		if in.Name != nil {
			name = strings.TrimSpace(*in.Name)
		}
		if name == "" {
			f.Add("name", "is required")
		} else if utf8.RuneCountInString(name) > 200 {
			f.Add("name", "must be at most 200 characters")
		}
	}
	if in.Description != nil && utf8.RuneCountInString(*in.Description) > 5000 {
		f.Add("description", "must be at most 5000 characters")
	}
	if in.Name != nil && strings.ContainsRune(*in.Name, 0) {
		f.Add("name", "must not contain NUL characters")
	}
	if in.Description != nil && strings.ContainsRune(*in.Description, 0) {
		f.Add("description", "must not contain NUL characters")
	}
	if in.Language != nil {
		var ok bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = $1)`, *in.Language).Scan(&ok); err != nil {
			return err
		}
		if !ok {
			f.Add("language", "must be a PostgreSQL text search configuration such as english, simple, german, french, spanish")
		}
	}
	if in.Embedder != nil {
		if err := in.Embedder.check(); err != nil {
			e, _ := errs.As(err)
			for k, v := range e.Fields {
				f.Add(k, "%s", v)
			}
		} else if in.Embedder.BaseURL != "" {
			if err := s.guard.CheckURL(ctx, in.Embedder.BaseURL); err != nil {
				f.Add("embedder.base_url", "%s", err.Error())
			}
		}
	}
	return f.Err()
}

// CreateKB creates a knowledge base.
func (s *Service) CreateKB(ctx context.Context, tenantID string, in KBInput) (KnowledgeBase, error) {
	if err := s.validateKB(ctx, in, true); err != nil {
		return KnowledgeBase{}, err
	}
	spec := s.cfg.DefaultEmbedder
	if in.Embedder != nil {
		spec = *in.Embedder
	}
	emb, err := s.embedder(spec)
	if err != nil {
		return KnowledgeBase{}, errs.Invalid(map[string]string{"embedder": err.Error()})
	}
	dim, err := dimOf(ctx, emb)
	if err != nil {
		return KnowledgeBase{}, errs.Invalid(map[string]string{"embedder": err.Error()})
	}
	stored, err := s.sealSpec(spec)
	if err != nil {
		return KnowledgeBase{}, err
	}
	lang := "english"
	if in.Language != nil {
		lang = *in.Language
	}
	desc := ""
	if in.Description != nil {
		desc = *in.Description
	}
	id := ids.New("kb")
	specJSON, _ := json.Marshal(stored)
	_, err = s.pool.Exec(ctx, `INSERT INTO knowledge_bases (id, tenant_id, name, description, language, embedder, embedder_id, dim)
		VALUES ($1, $2, $3, $4, $5::regconfig, $6, $7, $8)`,
		id, tenantID, strings.TrimSpace(*in.Name), desc, lang, specJSON, emb.ID(), dim)
	if err != nil {
		return KnowledgeBase{}, fmt.Errorf("knowledge: create: %w", err)
	}
	if err := s.ensurePartition(ctx, id); err != nil {
		// The KB exists; ingestion retries the partition, so this is not fatal.
		s.cfg.Logger.Warn("knowledge: partition not created yet", "kb_id", id, "err", err)
	}
	return s.GetKB(ctx, tenantID, id, false)
}

func (s *Service) sealSpec(spec EmbedderSpec) (EmbedderSpec, error) {
	if spec.APIKey != "" {
		sealed, err := s.box.Seal(spec.APIKey)
		if err != nil {
			return spec, err
		}
		spec.APIKey = sealed
	}
	return spec, nil
}

const kbColumns = `kb.id, kb.name, kb.description, kb.language::text, kb.embedder, kb.embedder_id, kb.dim, kb.status,
	kb.reembed_done, kb.reembed_total, kb.created_at, kb.updated_at,
	(SELECT count(*) FROM kb_sources s WHERE s.kb_id = kb.id),
	(SELECT coalesce(sum(s.chunks_done), 0) FROM kb_sources s WHERE s.kb_id = kb.id)`

func scanKB(row pgx.Row) (KnowledgeBase, error) {
	var kb KnowledgeBase
	var spec []byte
	err := row.Scan(&kb.ID, &kb.Name, &kb.Description, &kb.Language, &spec, &kb.EmbedderID, &kb.Dimensions, &kb.Status,
		&kb.ReembedDone, &kb.ReembedTotal, &kb.CreatedAt, &kb.UpdatedAt, &kb.SourceCount, &kb.ChunkCount)
	if err != nil {
		return kb, err
	}
	json.Unmarshal(spec, &kb.Embedder)
	if kb.Embedder.APIKey != "" {
		kb.Embedder.APIKey = maskedKey
	}
	return kb, nil
}

// GetKB returns one knowledge base (with its sources when withSources).
func (s *Service) GetKB(ctx context.Context, tenantID, id string, withSources bool) (KnowledgeBase, error) {
	kb, err := scanKB(s.pool.QueryRow(ctx, `SELECT `+kbColumns+` FROM knowledge_bases kb WHERE kb.tenant_id = $1 AND kb.id = $2`, tenantID, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return kb, fmt.Errorf("knowledge: get %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return kb, fmt.Errorf("knowledge: get %s: %w", id, err)
	}
	if withSources {
		kb.Sources, _, err = s.ListSources(ctx, tenantID, id, 1000, 0)
		if err != nil {
			return kb, err
		}
	}
	return kb, nil
}

// ListKBs lists a tenant's knowledge bases, newest first.
func (s *Service) ListKBs(ctx context.Context, tenantID string, limit, offset int) ([]KnowledgeBase, int, error) {
	var total int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM knowledge_bases WHERE tenant_id = $1`, tenantID).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("knowledge: count: %w", err)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+kbColumns+` FROM knowledge_bases kb WHERE kb.tenant_id = $1
		ORDER BY kb.created_at DESC, kb.id LIMIT $2 OFFSET $3`, tenantID, limit, offset)
	if err != nil {
		return nil, 0, fmt.Errorf("knowledge: list: %w", err)
	}
	defer rows.Close()
	out := []KnowledgeBase{}
	for rows.Next() {
		kb, err := scanKB(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, kb)
	}
	return out, total, rows.Err()
}

// PatchKB changes a knowledge base. A new language re-indexes the full-text vectors at
// once; a new embedder re-embeds every chunk in the background (status "reembedding").
func (s *Service) PatchKB(ctx context.Context, tenantID, id string, in KBInput) (KnowledgeBase, error) {
	if err := s.validateKB(ctx, in, false); err != nil {
		return KnowledgeBase{}, err
	}
	cur, err := s.GetKB(ctx, tenantID, id, false)
	if err != nil {
		return cur, err
	}
	var newSpec *EmbedderSpec
	var newEmb embed.Embedder
	var newDim int
	if in.Embedder != nil {
		spec := *in.Embedder
		if spec.APIKey == maskedKey { // "********" keeps the stored key
			var stored EmbedderSpec
			var raw []byte
			s.pool.QueryRow(ctx, `SELECT embedder FROM knowledge_bases WHERE tenant_id = $1 AND id = $2`, tenantID, id).Scan(&raw)
			json.Unmarshal(raw, &stored)
			if stored, err = s.openSpec(stored); err != nil {
				return cur, err
			}
			spec.APIKey = stored.APIKey
		}
		if newEmb, err = s.embedder(spec); err != nil {
			return cur, errs.Invalid(map[string]string{"embedder": err.Error()})
		}
		if newDim, err = dimOf(ctx, newEmb); err != nil {
			return cur, errs.Invalid(map[string]string{"embedder": err.Error()})
		}
		sealed, err := s.sealSpec(spec)
		if err != nil {
			return cur, err
		}
		newSpec = &sealed
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE knowledge_bases SET name = coalesce($3, name), description = coalesce($4, description),
			language = coalesce($5::regconfig, language), updated_at = now() WHERE tenant_id = $1 AND id = $2`,
			tenantID, id, trimPtr(in.Name), in.Description, in.Language)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		if in.Language != nil && *in.Language != cur.Language {
			// The generated tsv column follows lang.
			if _, err := tx.Exec(ctx, `UPDATE kb_chunks SET lang = $3::regconfig WHERE tenant_id = $1 AND kb_id = $2`, tenantID, id, *in.Language); err != nil {
				return err
			}
		}
		if newSpec != nil {
			raw, _ := json.Marshal(newSpec)
			if _, err := tx.Exec(ctx, `UPDATE knowledge_bases SET embedder = $3, embedder_id = $4, dim = $5 WHERE tenant_id = $1 AND id = $2`,
				tenantID, id, raw, newEmb.ID(), newDim); err != nil {
				return err
			}
			if newEmb.ID() != cur.EmbedderID {
				if _, err := tx.Exec(ctx, `UPDATE knowledge_bases SET status = 'reembedding', reembed_done = 0,
					reembed_total = (SELECT count(*) FROM kb_chunks WHERE kb_id = $2) WHERE tenant_id = $1 AND id = $2`, tenantID, id); err != nil {
					return err
				}
				if _, err := s.insertJob(ctx, tx, reembedArgs{TenantID: tenantID, KBID: id, EmbedderID: newEmb.ID()}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return cur, fmt.Errorf("knowledge: patch %s: %w", id, err)
	}
	return s.GetKB(ctx, tenantID, id, false)
}

func trimPtr(p *string) *string {
	if p == nil {
		return nil
	}
	t := strings.TrimSpace(*p)
	return &t
}

// DeleteKB deletes a knowledge base with its sources and chunks. The chunks go first,
// by dropping their partition: cascading the KB's deletion to them would delete them
// row by row.
func (s *Service) DeleteKB(ctx context.Context, tenantID, id string) error {
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM knowledge_bases WHERE tenant_id = $1 AND id = $2)`, tenantID, id).Scan(&exists); err != nil {
		return fmt.Errorf("knowledge: delete %s: %w", id, err)
	}
	if !exists {
		return fmt.Errorf("knowledge: delete %s: %w", id, ErrNotFound)
	}
	if err := s.dropPartition(ctx, id); err != nil {
		return fmt.Errorf("knowledge: delete %s: %w", id, err)
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM knowledge_bases WHERE tenant_id = $1 AND id = $2`, tenantID, id)
	if err != nil {
		return fmt.Errorf("knowledge: delete %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("knowledge: delete %s: %w", id, ErrNotFound)
	}
	return nil
}

func (s *Service) insertJob(ctx context.Context, tx pgx.Tx, args river.JobArgs) (*rivertype.JobInsertResult, error) {
	if s.jobs == nil {
		return nil, errors.New("knowledge: no job client (SetJobs was not called)")
	}
	return s.jobs.InsertTx(ctx, tx, args, nil)
}
