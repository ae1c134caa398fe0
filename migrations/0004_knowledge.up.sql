-- Knowledge bases: sources, chunks with embeddings (pgvector) and full-text vectors.

ALTER TABLE knowledge_bases
    -- the embedder that produced the KB's vectors, e.g. "local:hash-v1:384" or
    -- "openai:text-embedding-3-small:1536"; a change re-embeds every chunk in the background
    ADD COLUMN embedder_id  text NOT NULL DEFAULT 'local:hash-v1:384',
    -- its settings: {"provider","model","base_url","dimensions","api_key" (AES-GCM sealed)}
    ADD COLUMN embedder     jsonb NOT NULL DEFAULT '{"provider":"local","dimensions":384}'::jsonb,
    ADD COLUMN dim          integer NOT NULL DEFAULT 384,
    -- the text search configuration (stemming, stop words) of the KB's full-text index
    ADD COLUMN language     regconfig NOT NULL DEFAULT 'english',
    -- ready | reembedding
    ADD COLUMN status       text NOT NULL DEFAULT 'ready' CHECK (status IN ('ready', 'reembedding')),
    ADD COLUMN reembed_done integer NOT NULL DEFAULT 0,
    ADD COLUMN reembed_total integer NOT NULL DEFAULT 0;

CREATE TABLE kb_sources (
    id            text PRIMARY KEY,
    tenant_id     text NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    kb_id         text NOT NULL REFERENCES knowledge_bases(id) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('text', 'url', 'file')),
    name          text NOT NULL,
    url           text NOT NULL DEFAULT '',
    format        text NOT NULL DEFAULT '',      -- text, markdown, html, pdf, docx, csv
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processing', 'ready', 'error')),
    error         text NOT NULL DEFAULT '',
    size_bytes    bigint NOT NULL DEFAULT 0,
    chunk_count   integer NOT NULL DEFAULT 0,
    chunks_done   integer NOT NULL DEFAULT 0,
    chunks_total  integer NOT NULL DEFAULT 0,
    -- SHA-256 of the raw content (or of the URL for url sources): adding identical content
    -- to the same KB returns the existing source instead of a duplicate
    content_hash  bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kb_id, content_hash)
);
CREATE INDEX kb_sources_kb ON kb_sources (tenant_id, kb_id, created_at DESC);

-- Raw uploads wait here for their ingestion job, and are deleted once it has run.
CREATE TABLE kb_source_blobs (
    source_id  text PRIMARY KEY REFERENCES kb_sources(id) ON DELETE CASCADE,
    tenant_id  text NOT NULL,
    data       bytea NOT NULL
);

-- array_to_string is only STABLE (it is polymorphic); for text[] it cannot change, so this
-- wrapper may be IMMUTABLE and used in the generated tsv column.
CREATE FUNCTION kb_heading_text(text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN array_to_string($1, ' ');

CREATE TABLE kb_chunks (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     text NOT NULL,
    kb_id         text NOT NULL REFERENCES knowledge_bases(id) ON DELETE CASCADE,
    source_id     text NOT NULL REFERENCES kb_sources(id) ON DELETE CASCADE,
    position      integer NOT NULL,
    heading_path  text[] NOT NULL DEFAULT '{}',
    content       text NOT NULL,
    tokens        integer NOT NULL,
    lang          regconfig NOT NULL,
    -- Vectors of any size live in one column; `dim` says which. HNSW needs a fixed size,
    -- so each supported size has its own partial expression index below, and queries use
    -- the same expression and predicate (embedding::vector(N), dim = N).
    dim           integer NOT NULL,
    embedding     vector NOT NULL,
    -- which embedder made this vector: after a KB changes embedder, the re-embed job
    -- finds what is left to redo, and search ignores vectors from the old model
    embedder_id   text NOT NULL,
    -- Heading words weigh more (A) than body words (D) in ts_rank.
    tsv           tsvector GENERATED ALWAYS AS (
                      setweight(to_tsvector(lang, kb_heading_text(heading_path)), 'A') ||
                      to_tsvector(lang, content)) STORED
);
CREATE INDEX kb_chunks_source ON kb_chunks (source_id, position);
CREATE INDEX kb_chunks_kb ON kb_chunks (kb_id);
CREATE INDEX kb_chunks_tsv ON kb_chunks USING gin (tsv);

-- HNSW parameters.
--   m = 16: links per node. pgvector's default and the usual sweet spot below ~10M vectors;
--     higher m raises recall per ef_search but costs memory and insert time.
--   ef_construction = 64: candidate list while building. Measured at 100k chunks it keeps
--     recall@10 above 0.95 at ef_search 100 (see the knowledge benchmark); doubling it
--     roughly halves insert throughput for ~1 point of recall.
--   ef_search (a query-time setting, in knowledge/search.go) = 100, with
--     hnsw.iterative_scan = relaxed_order so that tenant/KB filters cannot starve results.
-- Sizes above 2,000 dimensions (text-embedding-3-large) are indexed as halfvec, pgvector's
-- limit for the vector type.
CREATE INDEX kb_chunks_hnsw_384 ON kb_chunks USING hnsw ((embedding::vector(384)) vector_cosine_ops)
    WITH (m = 16, ef_construction = 64) WHERE dim = 384;
CREATE INDEX kb_chunks_hnsw_768 ON kb_chunks USING hnsw ((embedding::vector(768)) vector_cosine_ops)
    WITH (m = 16, ef_construction = 64) WHERE dim = 768;
CREATE INDEX kb_chunks_hnsw_1024 ON kb_chunks USING hnsw ((embedding::vector(1024)) vector_cosine_ops)
    WITH (m = 16, ef_construction = 64) WHERE dim = 1024;
CREATE INDEX kb_chunks_hnsw_1536 ON kb_chunks USING hnsw ((embedding::vector(1536)) vector_cosine_ops)
    WITH (m = 16, ef_construction = 64) WHERE dim = 1536;
CREATE INDEX kb_chunks_hnsw_3072 ON kb_chunks USING hnsw ((embedding::halfvec(3072)) halfvec_cosine_ops)
    WITH (m = 16, ef_construction = 64) WHERE dim = 3072;
