-- Signed checkpoints of the proof log (C2SP tlog-checkpoint in a signed note),
-- kept verbatim. A tree size may be signed again by another key (after a
-- revocation), never twice by the same key.
CREATE TABLE checkpoints (
    tree_size       BIGINT  NOT NULL,
    root            BYTEA  NOT NULL,
    timestamp_ms    BIGINT  NOT NULL,
    note            TEXT    NOT NULL,
    key_name        TEXT    NOT NULL,
    key_id          TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (tree_size, key_name, key_id)
);

-- Public checkpoint keys with validity and revocation (DSK I.5). Private keys
-- never enter the database: the signer key lives in the file named by
-- proofs.signing_key_file.
CREATE TABLE signing_keys (
    name            TEXT    NOT NULL,
    key_id          TEXT    NOT NULL,
    verifier_key    TEXT    NOT NULL UNIQUE,
    valid_from      BIGINT  NOT NULL,
    valid_until     BIGINT,
    revoked_at      BIGINT,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (name, key_id)
);

-- verify --kis and audit find a message by its primary resource.
CREATE INDEX messages_by_resource ON messages (resource);
