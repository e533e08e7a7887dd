-- Frontdesk's schema. One file for SQLite and PostgreSQL: ids are TEXT (UUIDv7 made by the
-- gateway), times are BIGINT milliseconds since the Unix epoch, JSON is TEXT.

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    name TEXT,
    email TEXT,
    created_at BIGINT NOT NULL
);

-- How a contact is known on each channel (visitor id, webhook contact id, Telegram chat id...).
CREATE TABLE contact_identities (
    channel TEXT NOT NULL,
    external_id TEXT NOT NULL,
    contact_id TEXT NOT NULL REFERENCES contacts (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (channel, external_id)
);
CREATE INDEX contact_identities_contact ON contact_identities (contact_id);

CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    contact_id TEXT NOT NULL REFERENCES contacts (id),
    status TEXT NOT NULL DEFAULT 'bot' CHECK (status IN ('bot', 'queued', 'assigned', 'resolved')),
    assignee TEXT,
    language TEXT,
    priority BIGINT NOT NULL DEFAULT 0,
    -- Highest message sequence number given out in this conversation.
    last_seq BIGINT NOT NULL DEFAULT 0,
    -- Highest customer message the bot pipeline has finished with (restart recovery resumes after it).
    processed_seq BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_message_at BIGINT,
    UNIQUE (channel, contact_id)
);
CREATE INDEX conversations_status ON conversations (status, updated_at);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    seq BIGINT NOT NULL,
    author TEXT NOT NULL CHECK (author IN ('customer', 'bot', 'agent', 'system')),
    text TEXT NOT NULL,
    channel TEXT NOT NULL,
    -- The channel's id of the message; a retried delivery with the same id is not stored again.
    external_id TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    -- What the gateway understood or decided about it (language, intent, hits...).
    annotations TEXT NOT NULL DEFAULT '{}',
    quick_replies TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    UNIQUE (conversation_id, seq),
    UNIQUE (channel, external_id)
);

CREATE TABLE conversation_events (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    kind TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL
);
CREATE INDEX conversation_events_conversation ON conversation_events (conversation_id, created_at);

-- Every outbound message waits here until its channel has taken it.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL REFERENCES messages (id),
    conversation_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    channel TEXT NOT NULL,
    -- The customer's id on the channel.
    target TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_conversation ON outbox (conversation_id, status, seq);
