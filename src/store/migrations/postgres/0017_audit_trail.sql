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
    sealed_reason   BYTEA,
    prev_hash       BYTEA   NOT NULL,
    hash            BYTEA   NOT NULL
);

-- Rows are never deleted or changed, but for re-sealing the reason.
CREATE FUNCTION audit_trail_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE'
       OR (NEW.seq, NEW.at, NEW.actor, NEW.action, NEW.target, NEW.reason_digest,
           NEW.prev_hash, NEW.hash)
          IS DISTINCT FROM
          (OLD.seq, OLD.at, OLD.actor, OLD.action, OLD.target, OLD.reason_digest,
           OLD.prev_hash, OLD.hash) THEN
        RAISE EXCEPTION 'audit_trail is append-only';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_trail_append_only BEFORE UPDATE OR DELETE ON audit_trail
FOR EACH ROW EXECUTE FUNCTION audit_trail_append_only();
