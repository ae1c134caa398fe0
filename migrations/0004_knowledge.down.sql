DROP TABLE IF EXISTS kb_chunks, kb_source_blobs, kb_sources;
DROP FUNCTION IF EXISTS kb_heading_text(text[]);
ALTER TABLE knowledge_bases
    DROP COLUMN IF EXISTS embedder_id, DROP COLUMN IF EXISTS embedder, DROP COLUMN IF EXISTS dim,
    DROP COLUMN IF EXISTS language, DROP COLUMN IF EXISTS status,
    DROP COLUMN IF EXISTS reembed_done, DROP COLUMN IF EXISTS reembed_total;
