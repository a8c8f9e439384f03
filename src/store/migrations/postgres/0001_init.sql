-- One row per messenger message: its terminal state. No content, no direct identifiers.
CREATE TABLE messages (
    source          TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('archived', 'not_relevant', 'quarantined')),
    reason          TEXT    NOT NULL,
    content_sha256  TEXT,
    resource        TEXT,
    resources       TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    PRIMARY KEY (source, message_id)
);
CREATE INDEX messages_by_state ON messages (state, reason);

-- Quarantined messages, sealed with the operator's key, kept for human review.
CREATE TABLE quarantine (
    source          TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    sealed_event    BYTEA    NOT NULL,
    sealed_detail   BYTEA,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (source, message_id)
);

-- Transactional outbox of deletion commands towards the messenger.
CREATE TABLE deletions (
    deletion_id     TEXT    NOT NULL PRIMARY KEY,
    source          TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    reason          TEXT    NOT NULL CHECK (reason IN ('archived', 'not-relevant')),
    state           TEXT    NOT NULL CHECK (state IN ('scheduled', 'pending', 'requested', 'confirmed', 'failed')),
    sealed_command  BYTEA    NOT NULL,
    not_before      BIGINT  NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    claimed_until   BIGINT,
    detail          TEXT,
    created_at      BIGINT  NOT NULL,
    requested_at    BIGINT,
    settled_at      BIGINT,
    UNIQUE (source, message_id)
);
CREATE INDEX deletions_due ON deletions (state, not_before);

-- Conversation -> patient and encounter. The conversation is stored as a keyed token only.
CREATE TABLE links (
    conversation_token TEXT NOT NULL PRIMARY KEY,
    patient         TEXT    NOT NULL,
    encounter       TEXT,
    created_at      BIGINT  NOT NULL
);

-- The append-only proof log (RFC 9162). log_head.size is bumped inside the archive
-- transaction, which serialises appends and keeps indexes dense across workers.
CREATE TABLE log_head (
    id              INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    size            BIGINT  NOT NULL
);
INSERT INTO log_head (id, size) VALUES (1, 0);

CREATE TABLE log_leaves (
    leaf_index      BIGINT  NOT NULL PRIMARY KEY,
    source          TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    leaf_data       BYTEA    NOT NULL,
    leaf_hash       BYTEA    NOT NULL,
    created_at      BIGINT  NOT NULL,
    UNIQUE (source, message_id)
);

-- Perfect subtree hashes: level >= 1, covering leaves [idx * 2^level, (idx + 1) * 2^level).
CREATE TABLE log_nodes (
    level           INTEGER NOT NULL,
    node_index      BIGINT  NOT NULL,
    hash            BYTEA    NOT NULL,
    PRIMARY KEY (level, node_index)
);
