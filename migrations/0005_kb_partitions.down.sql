CREATE TABLE kb_chunks_flat (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id     text NOT NULL,
    kb_id         text NOT NULL REFERENCES knowledge_bases(id) ON DELETE CASCADE,
    source_id     text NOT NULL REFERENCES kb_sources(id) ON DELETE CASCADE,
    position      integer NOT NULL,
    heading_path  text[] NOT NULL DEFAULT '{}',
    content       text NOT NULL,
    tokens        integer NOT NULL,
    lang          regconfig NOT NULL,
    dim           integer NOT NULL,
    embedding     vector NOT NULL,
    embedder_id   text NOT NULL,
    tsv           tsvector GENERATED ALWAYS AS (
                      setweight(to_tsvector(lang, kb_heading_text(heading_path)), 'A') ||
                      to_tsvector(lang, content)) STORED
);
INSERT INTO kb_chunks_flat (id, tenant_id, kb_id, source_id, position, heading_path, content, tokens, lang, dim, embedding, embedder_id)
    OVERRIDING SYSTEM VALUE
    SELECT id, tenant_id, kb_id, source_id, position, heading_path, content, tokens, lang, dim, embedding, embedder_id FROM kb_chunks;
SELECT setval(pg_get_serial_sequence('kb_chunks_flat', 'id'), coalesce((SELECT max(id) FROM kb_chunks_flat), 0) + 1, false);
DROP TABLE kb_chunks; -- and its partitions
ALTER TABLE kb_chunks_flat RENAME TO kb_chunks;
ALTER TABLE kb_chunks RENAME CONSTRAINT kb_chunks_flat_pkey TO kb_chunks_pkey;
CREATE INDEX kb_chunks_source ON kb_chunks (source_id, position);
CREATE INDEX kb_chunks_kb ON kb_chunks (kb_id);
CREATE INDEX kb_chunks_tsv ON kb_chunks USING gin (tsv);
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
