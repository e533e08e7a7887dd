-- Human handoff: agents, their login sessions, and what a conversation needs for the queue and
-- for satisfaction ratings.

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    -- argon2id PHC string.
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('agent', 'admin')),
    -- JSON arrays: languages it answers in, teams (tied to intents) it belongs to.
    languages TEXT NOT NULL DEFAULT '[]',
    teams TEXT NOT NULL DEFAULT '[]',
    -- Conversations it handles at once.
    capacity BIGINT NOT NULL DEFAULT 3,
    status TEXT NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'away', 'offline')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Login sessions (cookie or bearer): only a SHA-256 of the token is stored.
CREATE TABLE agent_sessions (
    token_hash TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL REFERENCES agents (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX agent_sessions_agent ON agent_sessions (agent_id);

-- Team that should handle it (from the intent of the message that handed it off).
ALTER TABLE conversations ADD COLUMN team TEXT;
-- The agent who passed it on to a team: the queue does not hand it straight back to them.
ALTER TABLE conversations ADD COLUMN declined_by TEXT;
-- When it entered the queue: the queue is served by priority, then by waiting time.
ALTER TABLE conversations ADD COLUMN queued_at BIGINT;
-- Satisfaction: asked after resolving, 1-5 once answered.
ALTER TABLE conversations ADD COLUMN rating_requested_at BIGINT;
ALTER TABLE conversations ADD COLUMN rating BIGINT;
CREATE INDEX conversations_queue ON conversations (status, priority, queued_at);
CREATE INDEX conversations_assignee ON conversations (assignee, status);
