-- DocumentReference-only output (kis.output = "document_reference_only"):
-- text messages are held here, sealed, per transcript window (a keyed token
-- of source, conversation, resolved patient and window start) until the
-- transcript closer archives the window as one Binary + DocumentReference.
-- state: open (taking messages), closing (frozen, being archived; a crashed
-- closer's window is re-claimed after its lease), archived (resource set).
CREATE TABLE transcript_windows (
    source          TEXT    NOT NULL,
    window_token    TEXT    NOT NULL,
    window_start    BIGINT  NOT NULL,
    window_end      BIGINT  NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('open', 'closing', 'archived')),
    claimed_until   BIGINT,
    resource        TEXT,
    content_sha256  TEXT,
    closed_at       BIGINT,
    PRIMARY KEY (source, window_token)
);
CREATE INDEX transcript_windows_due ON transcript_windows (state, window_end);

CREATE TABLE transcript_messages (
    source          TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    window_token    TEXT    NOT NULL,
    sent_at         BIGINT  NOT NULL,
    sealed_entry    BYTEA    NOT NULL,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (source, message_id)
);
CREATE INDEX transcript_messages_by_window ON transcript_messages (source, window_token, sent_at);
