-- Deletion lifecycle: a `retrying` state (the adapter reported a transient
-- failure and keeps trying), every receipt kept, and the cursors of sources
-- that read a messenger themselves (the Matrix sync token).
ALTER TABLE deletions DROP CONSTRAINT deletions_state_check;
ALTER TABLE deletions ADD CONSTRAINT deletions_state_check
    CHECK (state IN ('scheduled', 'pending', 'requested', 'retrying', 'confirmed', 'failed'));

CREATE TABLE deletion_receipts (
    deletion_id     TEXT    NOT NULL,
    received_at     BIGINT  NOT NULL,
    status          TEXT    NOT NULL,
    detail          TEXT
);
CREATE INDEX deletion_receipts_by_id ON deletion_receipts (deletion_id, received_at);

CREATE TABLE source_cursors (
    source          TEXT    NOT NULL,
    account         TEXT    NOT NULL,
    cursor          TEXT    NOT NULL,
    updated_at      BIGINT  NOT NULL,
    PRIMARY KEY (source, account)
);
