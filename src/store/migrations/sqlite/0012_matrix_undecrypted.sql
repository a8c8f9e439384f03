-- Matrix events of end-to-end-encrypted rooms whose room keys have not
-- arrived (docs/matrix.md, "End-to-end encryption"). The source records
-- each one here, sealed, BEFORE it saves the sync cursor past it, and
-- retries the decryption on every sync; the row is removed when the
-- decrypted event was published (confirmed). state: awaiting_keys (within
-- matrix.e2ee.undecryptable_after) or undecryptable (the wait ran out: the
-- event is also quarantined 'undecryptable'; it is still retried).
-- event_id is the homeserver's opaque id; the sealed event carries the
-- room, the sender and the ciphertext, never in the clear.
CREATE TABLE matrix_undecrypted (
    event_id        TEXT    NOT NULL PRIMARY KEY,
    sealed_event    BLOB   NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('awaiting_keys', 'undecryptable')),
    first_seen_at   BIGINT  NOT NULL,
    last_try_at     BIGINT  NOT NULL,
    tries           BIGINT  NOT NULL
);
CREATE INDEX matrix_undecrypted_state ON matrix_undecrypted (state, first_seen_at);

-- Trust on first use (matrix.e2ee.trust = "tofu"): the cross-signing
-- identity (master key) first seen for each sender, pinned. Both columns
-- are keyed tokens (the operator's key): no Matrix user id, no key in the
-- clear. first_trusted_at is the audit record of the first use; an event
-- signed by another identity of the same sender is held, never archived.
CREATE TABLE matrix_tofu (
    sender_token    TEXT    NOT NULL PRIMARY KEY,
    identity_token  TEXT    NOT NULL,
    first_trusted_at BIGINT NOT NULL
);
