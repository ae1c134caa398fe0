-- Knowledge chunks move into one partition per knowledge base, each with its own HNSW index
-- built in bulk once the KB's ingestion settles (knowledge/index.go explains why).
--
-- Why partitions: with one shared table and one HNSW index per vector size, every chunk
-- of every tenant paid pgvector's per-row HNSW insert (about 1 ms at 100k rows, the
-- ceiling on ingestion speed), and a small KB's query had to walk a graph made of other
-- tenants' chunks. Per KB, a bulk CREATE INDEX is several times cheaper than row-by-row
-- inserts, a small KB is searched exactly (recall 1.0), and deleting a KB drops a table
-- instead of deleting its rows one by one.

ALTER TABLE kb_chunks RENAME TO kb_chunks_unpartitioned;
ALTER INDEX kb_chunks_source RENAME TO kb_chunks_unpartitioned_source;
ALTER INDEX kb_chunks_kb RENAME TO kb_chunks_unpartitioned_kb;
ALTER INDEX kb_chunks_tsv RENAME TO kb_chunks_unpartitioned_tsv;

-- Identity columns cannot be declared on a partitioned table in PostgreSQL 15; a shared
-- sequence keeps chunk IDs unique across partitions.
CREATE SEQUENCE kb_chunk_ids AS bigint;
SELECT setval('kb_chunk_ids', coalesce((SELECT max(id) FROM kb_chunks_unpartitioned), 0) + 1, false);

CREATE TABLE kb_chunks (
    id            bigint NOT NULL DEFAULT nextval('kb_chunk_ids'),
    tenant_id     text NOT NULL,
    kb_id         text NOT NULL REFERENCES knowledge_bases(id) ON DELETE CASCADE,
    source_id     text NOT NULL REFERENCES kb_sources(id) ON DELETE CASCADE,
    position      integer NOT NULL,
    heading_path  text[] NOT NULL DEFAULT '{}',
    content       text NOT NULL,
    tokens        integer NOT NULL,
    lang          regconfig NOT NULL,
    -- Vectors of any size live in one column; `dim` says which. A partition's HNSW index
    -- is an expression index for its KB's size (embedding::vector(N)) WHERE dim = N.
    dim           integer NOT NULL,
    embedding     vector NOT NULL,
    embedder_id   text NOT NULL,
    -- Heading words weigh more (A) than body words (D) in ts_rank.
    tsv           tsvector GENERATED ALWAYS AS (
                      setweight(to_tsvector(lang, kb_heading_text(heading_path)), 'A') ||
                      to_tsvector(lang, content)) STORED,
    PRIMARY KEY (kb_id, id)
) PARTITION BY LIST (kb_id);
ALTER SEQUENCE kb_chunk_ids OWNED BY kb_chunks.id;
CREATE INDEX kb_chunks_source ON kb_chunks (source_id, position);
CREATE INDEX kb_chunks_tsv ON kb_chunks USING gin (tsv);

-- One partition per existing KB, named kb_chunks_<kb id> (KB IDs are kb_ + base32).
DO $$
DECLARE kb record;
BEGIN
    FOR kb IN SELECT id FROM knowledge_bases LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF kb_chunks FOR VALUES IN (%L)', 'kb_chunks_' || kb.id, kb.id);
    END LOOP;
END $$;

INSERT INTO kb_chunks (id, tenant_id, kb_id, source_id, position, heading_path, content, tokens, lang, dim, embedding, embedder_id)
    SELECT id, tenant_id, kb_id, source_id, position, heading_path, content, tokens, lang, dim, embedding, embedder_id
    FROM kb_chunks_unpartitioned;
DROP TABLE kb_chunks_unpartitioned;

-- Existing KBs get their HNSW index from the knowledge.index job, which the next
-- ingestion or `parley migrate` does not run: until then they are searched exactly.
