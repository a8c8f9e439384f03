-- The audit trail (docs/audit-trail.md): every human action, append-only,
-- each row chained to the one before it by `hash` = SHA-256 over the
-- previous hash and the row's canonical form. `seq` is dense from 1.
-- `target` holds opaque ids only; the reason is sealed and bound in the
-- chain by `reason_digest`, a keyed token of it.
CREATE TABLE audit_trail (
    seq             BIGINT  NOT NULL PRIMARY KEY,
    at              BIGINT  NOT NULL,
    actor           TEXT    NOT NULL,
    action          TEXT    NOT NULL,
    target          TEXT    NOT NULL,
    reason_digest   TEXT,
    sealed_reason   BLOB,
    prev_hash       BLOB    NOT NULL,
    hash            BLOB    NOT NULL
);

-- Rows are never deleted or changed, but for re-sealing the reason.
CREATE TRIGGER audit_trail_no_delete BEFORE DELETE ON audit_trail
BEGIN
    SELECT RAISE(ABORT, 'audit_trail is append-only');
END;

CREATE TRIGGER audit_trail_no_update
BEFORE UPDATE OF seq, at, actor, action, target, reason_digest, prev_hash, hash ON audit_trail
BEGIN
    SELECT RAISE(ABORT, 'audit_trail is append-only');
END;
