-- Retractions by a sender at the messenger (a Matrix m.room.redaction by
-- someone other than the bot) of a message that was archived: one row per
-- retraction event, written after the KIS record was marked (meta.tag and a
-- Provenance, docs/matrix.md). state: marked (resource and provenance set)
-- or rejected (the KIS refused the mark; detail names the place, sealed).
CREATE TABLE source_redactions (
    source          TEXT    NOT NULL,
    redaction_id    TEXT    NOT NULL,
    target_id       TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('marked', 'rejected')),
    resource        TEXT    NOT NULL,
    provenance      TEXT,
    recorded_at     BIGINT  NOT NULL,
    PRIMARY KEY (source, redaction_id)
);
CREATE INDEX source_redactions_target ON source_redactions (source, target_id);
