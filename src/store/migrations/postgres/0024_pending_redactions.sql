-- Retractions at the messenger (a Matrix m.room.redaction by someone other
-- than the bot) of a message held for review: nothing is archived to mark
-- yet, so the retraction waits here until a release archives its target,
-- which then marks the record as for an archived target (docs/matrix.md,
-- "Retractions"). Tokens only; who retracted and the redaction's time are
-- sealed (created_at is when the row was written). Rows go
-- when the mark is recorded, or with the purge of their target's deletion.
CREATE TABLE pending_redactions (
    source            TEXT    NOT NULL,
    redaction_token   TEXT    NOT NULL,
    target_token      TEXT    NOT NULL,
    sealed_redaction  BYTEA   NOT NULL,
    created_at        BIGINT  NOT NULL,
    PRIMARY KEY (source, redaction_token)
);
CREATE INDEX pending_redactions_target ON pending_redactions (source, target_token);
