package knowledge

import (
	"strings"
	"time"

	"github.com/parleyhq/parley/internal/errs"
)

// Embedding providers.
const (
	ProviderLocal  = "local"
	ProviderOpenAI = "openai"
)

// EmbedderSpec says which embedder a knowledge base uses. APIKey is write-only: stored
// sealed, shown as "********".
type EmbedderSpec struct {
	Provider   string `json:"provider" jsonschema:"enum=local,enum=openai"`
	Model      string `json:"model,omitempty"`
	BaseURL    string `json:"base_url,omitempty"`
	APIKey     string `json:"api_key,omitempty"`
	Dimensions int    `json:"dimensions,omitempty"`
}

func (e EmbedderSpec) check() error {
	f := errs.Fields{}
	switch e.Provider {
	case ProviderLocal:
		if e.Dimensions != 0 && (e.Dimensions < 64 || e.Dimensions > 4096) {
			f.Add("embedder.dimensions", "must be from 64 to 4096 for the local embedder")
		}
		if e.Model != "" || e.BaseURL != "" || e.APIKey != "" {
			f.Add("embedder.provider", "the local embedder takes no model, base_url or api_key")
		}
	case ProviderOpenAI:
		if e.Dimensions < 0 || e.Dimensions > 4096 {
			f.Add("embedder.dimensions", "must be from 1 to 4096, or 0 for the model's native size")
		}
		if e.BaseURL != "" && !strings.HasPrefix(e.BaseURL, "http://") && !strings.HasPrefix(e.BaseURL, "https://") {
			f.Add("embedder.base_url", "must be an http:// or https:// URL")
		}
	default:
		f.Add("embedder.provider", "must be %q or %q", ProviderLocal, ProviderOpenAI)
	}
	return f.Err()
}

// KnowledgeBase is a tenant's collection of sources.
type KnowledgeBase struct {
	ID          string       `json:"knowledge_base_id"`
	Name        string       `json:"name"`
	Description string       `json:"description"`
	Language    string       `json:"language"` // PostgreSQL text search configuration, e.g. "english"
	Embedder    EmbedderSpec `json:"embedder"`
	EmbedderID  string       `json:"embedder_id"`
	Dimensions  int          `json:"dimensions"`
	// Status is "ready", or "reembedding" while a changed embedder re-embeds the chunks.
	Status       string    `json:"status"`
	ReembedDone  int       `json:"reembed_done,omitempty"`
	ReembedTotal int       `json:"reembed_total,omitempty"`
	SourceCount  int       `json:"source_count"`
	ChunkCount   int       `json:"chunk_count"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	// Sources is filled by Get.
	Sources []Source `json:"sources,omitempty"`
}

// Source kinds and statuses.
const (
	KindText = "text"
	KindURL  = "url"
	KindFile = "file"

	StatusPending    = "pending"
	StatusProcessing = "processing"
	StatusReady      = "ready"
	StatusError      = "error"
)

// Source is one document in a knowledge base.
type Source struct {
	ID          string    `json:"source_id"`
	KBID        string    `json:"knowledge_base_id"`
	Kind        string    `json:"type"`
	Name        string    `json:"name"`
	URL         string    `json:"url,omitempty"`
	Format      string    `json:"format,omitempty"`
	Status      string    `json:"status"`
	Error       string    `json:"error,omitempty"`
	SizeBytes   int64     `json:"size_bytes"`
	ChunkCount  int       `json:"chunk_count"`
	ChunksDone  int       `json:"chunks_done"`
	ChunksTotal int       `json:"chunks_total"`
	ContentHash string    `json:"content_hash"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Result is one retrieved chunk.
type Result struct {
	ChunkID     int64    `json:"chunk_id"`
	Score       float64  `json:"score"`
	SourceID    string   `json:"source_id"`
	SourceName  string   `json:"source_name"`
	KBID        string   `json:"knowledge_base_id"`
	HeadingPath []string `json:"heading_path"`
	Position    int      `json:"position"`
	Text        string   `json:"text"`
	// VectorRank and TextRank are the chunk's 1-based ranks in each retriever (0: not
	// retrieved by it), for debugging relevance.
	VectorRank int `json:"vector_rank,omitempty"`
	TextRank   int `json:"text_rank,omitempty"`
}

// Search modes.
const (
	ModeHybrid = "hybrid"
	ModeVector = "vector"
	ModeText   = "text"
)

// Query is a retrieval request.
type Query struct {
	Query string `json:"query" jsonschema:"required"`
	TopK  int    `json:"top_k,omitempty"` // default 5, at most 50
	// Mode is hybrid (default), vector or text.
	Mode string `json:"mode,omitempty" jsonschema:"enum=hybrid,enum=vector,enum=text"`
	// MMR re-ranks the fused candidates by maximal marginal relevance, dropping
	// near-duplicate chunks; Lambda trades relevance (1) against diversity (0), default 0.7.
	MMR       bool    `json:"mmr,omitempty"`
	MMRLambda float64 `json:"mmr_lambda,omitempty"`
}
