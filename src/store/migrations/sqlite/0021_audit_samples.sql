-- Results of integrity audits (`chartbridge audit --sample N` and the
-- scheduled `schedule.integrity_audit`): one row per run, listed on the
-- console's log page as evidence that the proofs hold (DSK I.12). Counts,
-- and per finding only the KIS resource (`Type/id`) and what failed: no
-- content, no message id, no person.
CREATE TABLE audit_samples (
    started_at      BIGINT  NOT NULL,
    finished_at     BIGINT  NOT NULL,
    run_by         TEXT    NOT NULL,
    checked         BIGINT  NOT NULL,
    verified        BIGINT  NOT NULL,
    mismatched      BIGINT  NOT NULL,
    unchecked       BIGINT  NOT NULL,
    findings        TEXT    NOT NULL,
    PRIMARY KEY (started_at, run_by)
);
