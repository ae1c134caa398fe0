package knowledge

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/parleyhq/parley/knowledge/chunk"
)

// Config configures the knowledge service.
type Config struct {
	// MaxUploadBytes caps a file source (PARLEY_KB_MAX_UPLOAD_BYTES, default 20 MiB).
	MaxUploadBytes int64
	// MaxTextBytes caps a text source sent as JSON (default 5 MiB).
	MaxTextBytes int64
	// MaxPageBytes caps a fetched web page (default 10 MiB).
	MaxPageBytes int64
	// Chunk sizes chunks; zero fields take chunk's defaults (256 tokens, 32 overlap):
	// small enough that a retrieved chunk is one focused passage for a voice answer, large
	// enough to carry its context.
	Chunk chunk.Options
	// DefaultEmbedder is what new knowledge bases use unless they name one
	// (PARLEY_EMBEDDER and friends; default the built-in local embedder, 384 dims).
	DefaultEmbedder EmbedderSpec
	// IngestBatch is how many chunks are embedded and written per step (default 128):
	// large enough to amortise a COPY and an embeddings request, small enough that
	// progress moves visibly and a retry repeats little.
	IngestBatch int
	// EFSearch is HNSW's query-time candidate list (default 500). The local embedder's
	// hashed vectors are lexical, which makes HNSW's greedy walk less reliable than on
	// dense semantic embeddings, and short questions are far from every chunk. Measured
	// with bench/kbbench at 100k chunks (hash-v2 centred vectors, m 16, ef_construction
	// 128, quiet 2-core machine): recall@10 against exact search 0.947 at 400 and 0.963 at
	// 500, vector-search p95 12.4 and 14.6 ms. Latency grows about linearly with it.
	EFSearch int
	// LocalVectorWeight weighs the vector ranking against the text ranking (weight 1) in
	// reciprocal-rank fusion when the KBs use the built-in local embedder (default 1;
	// semantic embedders always vote with weight 1). The vote is further scaled by how
	// much the two retrievers' candidates agree (agreement in search.go), and every text
	// candidate gets its exact vector score (rescore), so the vector ranking is not at the
	// mercy of what the graph walk reached. On the labelled set of bench/kbbench at 100k
	// chunks this made hybrid the best mode (see the README's figures); before rescoring,
	// a weight of 0.25 was needed to keep hybrid level with text alone.
	LocalVectorWeight float64

	// TextRankLimit bounds how many matching chunks one full-text branch ranks (default
	// 1000). Ranking reads each match's tsvector (often out of line in TOAST), so a
	// question whose word pairs are common in a large KB would otherwise cost tens of
	// milliseconds; beyond a few hundred matches such pairs carry little signal anyway.
	TextRankLimit int

	// HNSW graph parameters of each KB's vector index (see index.go for when it is built).
	//   - HNSWM (default 16): links per node, pgvector's default and the usual sweet spot
	//     below ~10M vectors; 24 and 32 bought no recall at ef_search 400 on the benchmark
	//     corpus (0.937 and 0.938 with mean-centred vectors) while costing build time.
	//   - HNSWEFConstruction (default 128): the candidate list while building. Because the
	//     index is built in bulk, a better graph is affordable: at 100k chunks, 128 instead
	//     of 64 takes the build from 19 s to 30 s and raises recall at ef_search 400.
	HNSWM              int
	HNSWEFConstruction int
	// MinIndexedChunks (default 3000): below this a KB is searched exactly, which scans
	// its partition in a few milliseconds with perfect recall; a graph buys nothing there.
	MinIndexedChunks int
	// IndexBuildMemMB is maintenance_work_mem for a build (default 1024): the graph is
	// built in memory when it fits (100k 384-d vectors need ~200 MB), on disk otherwise,
	// which is several times slower.
	IndexBuildMemMB int
	// IndexQuiet and IndexSettleMax: a KB's index job builds once the KB's load is quiet
	// (no source pending or processing, none finished in the last IndexQuiet; default 2 s),
	// or once the job has waited IndexSettleMax (default 10 min), so that a KB receiving a
	// steady trickle of sources is still indexed. The quiet period bridges the gaps between
	// a client's uploads; building in such a gap would leave the rest of the load to
	// row-by-row graph inserts.
	IndexQuiet     time.Duration
	IndexSettleMax time.Duration

	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.MaxUploadBytes == 0 {
		c.MaxUploadBytes = 20 << 20
	}
	if c.MaxTextBytes == 0 {
		c.MaxTextBytes = 5 << 20
	}
	if c.MaxPageBytes == 0 {
		c.MaxPageBytes = 10 << 20
	}
	if c.DefaultEmbedder.Provider == "" {
		c.DefaultEmbedder = EmbedderSpec{Provider: ProviderLocal, Dimensions: 384}
	}
	if c.IngestBatch == 0 {
		c.IngestBatch = 128
	}
	if c.EFSearch == 0 {
		c.EFSearch = 500
	}
	if c.LocalVectorWeight == 0 {
		c.LocalVectorWeight = 1
	}
	if c.TextRankLimit == 0 {
		c.TextRankLimit = 1000
	}
	if c.HNSWM == 0 {
		c.HNSWM = 16
	}
	if c.HNSWEFConstruction == 0 {
		c.HNSWEFConstruction = 128
	}
	if c.MinIndexedChunks == 0 {
		c.MinIndexedChunks = 3000
	}
	if c.IndexBuildMemMB == 0 {
		c.IndexBuildMemMB = 1024
	}
	if c.IndexQuiet == 0 {
		c.IndexQuiet = 2 * time.Second
	}
	if c.IndexSettleMax == 0 {
		c.IndexSettleMax = 10 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c Config) validate() error {
	var errs []error
	if c.MaxUploadBytes < 1024 || c.MaxTextBytes < 1024 || c.MaxPageBytes < 1024 {
		errs = append(errs, errors.New("size limits must be at least 1 KiB"))
	}
	if c.IngestBatch < 1 || c.IngestBatch > 2048 {
		errs = append(errs, errors.New("IngestBatch must be 1..2048"))
	}
	if c.EFSearch < 10 || c.EFSearch > 1000 {
		errs = append(errs, errors.New("EFSearch must be 10..1000"))
	}
	if c.TextRankLimit < 10 || c.TextRankLimit > 100000 {
		errs = append(errs, errors.New("TextRankLimit must be 10..100000"))
	}
	if c.HNSWM < 2 || c.HNSWM > 100 {
		errs = append(errs, errors.New("HNSWM must be 2..100"))
	}
	if c.HNSWEFConstruction < 2*c.HNSWM || c.HNSWEFConstruction > 1000 {
		errs = append(errs, errors.New("HNSWEFConstruction must be from 2×HNSWM to 1000"))
	}
	if c.MinIndexedChunks < 1 {
		errs = append(errs, errors.New("MinIndexedChunks must be positive"))
	}
	if c.IndexBuildMemMB < 64 || c.IndexBuildMemMB > 1<<20 {
		errs = append(errs, errors.New("IndexBuildMemMB must be 64..1048576"))
	}
	if c.IndexQuiet <= 0 || c.IndexSettleMax < 0 {
		errs = append(errs, errors.New("IndexQuiet must be positive and IndexSettleMax not negative"))
	}
	if err := c.DefaultEmbedder.check(); err != nil {
		errs = append(errs, fmt.Errorf("DefaultEmbedder: %w", err))
	}
	if len(errs) > 0 {
		return fmt.Errorf("knowledge: invalid config: %w", errors.Join(errs...))
	}
	return nil
}
