-- The keyed digest of the first content seen under each message key. A later
-- delivery under the same key with another digest is a conflicting duplicate,
-- not a redelivery: it is kept in `conflicts` and never replaces the first.
CREATE TABLE content_digests (
    source          TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    digest          TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (source, message_id)
);

-- Conflicting duplicates, sealed with the operator's key, kept for review.
CREATE TABLE conflicts (
    source          TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    digest          TEXT    NOT NULL,
    sealed_event    BLOB    NOT NULL,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (source, message_id, digest)
);
