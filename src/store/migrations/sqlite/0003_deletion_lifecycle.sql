-- Deletion lifecycle: a `retrying` state (the adapter reported a transient
-- failure and keeps trying), every receipt kept, and the cursors of sources
-- that read a messenger themselves (the Matrix sync token).
CREATE TABLE deletions_new (
    deletion_id     TEXT    NOT NULL PRIMARY KEY,
    source          TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    reason          TEXT    NOT NULL CHECK (reason IN ('archived', 'not-relevant')),
    state           TEXT    NOT NULL CHECK (state IN ('scheduled', 'pending', 'requested', 'retrying', 'confirmed', 'failed')),
    sealed_command  BLOB    NOT NULL,
    not_before      BIGINT  NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    claimed_until   BIGINT,
    detail          TEXT,
    created_at      BIGINT  NOT NULL,
    requested_at    BIGINT,
    settled_at      BIGINT,
    UNIQUE (source, message_id)
);
INSERT INTO deletions_new SELECT deletion_id, source, message_id, reason, state, sealed_command,
    not_before, attempts, claimed_until, detail, created_at, requested_at, settled_at FROM deletions;
DROP TABLE deletions;
ALTER TABLE deletions_new RENAME TO deletions;
CREATE INDEX deletions_due ON deletions (state, not_before);

-- Every receipt an adapter or gateway sent, in arrival order. `detail` is a
-- reason code, never content.
CREATE TABLE deletion_receipts (
    deletion_id     TEXT    NOT NULL,
    received_at     BIGINT  NOT NULL,
    status          TEXT    NOT NULL,
    detail          TEXT
);
CREATE INDEX deletion_receipts_by_id ON deletion_receipts (deletion_id, received_at);

-- Where a source that reads the messenger itself continues (Matrix next_batch).
CREATE TABLE source_cursors (
    source          TEXT    NOT NULL,
    account         TEXT    NOT NULL,
    cursor          TEXT    NOT NULL,
    updated_at      BIGINT  NOT NULL,
    PRIMARY KEY (source, account)
);
