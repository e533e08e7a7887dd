-- Knowledge base articles. Their vectors live in the vector store (Qdrant Edge or a Qdrant server);
-- this table is the source of truth for the API and for change detection on import.
CREATE TABLE kb_articles (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    lang TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    questions TEXT NOT NULL DEFAULT '[]',
    body TEXT NOT NULL,
    -- File it was imported from (NULL when created through the API).
    source TEXT,
    -- Hash of everything that was embedded, and of the embedding model: unchanged = not re-embedded.
    content_hash TEXT NOT NULL,
    vectors BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
