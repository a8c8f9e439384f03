-- Operator tooling and several workers (docs/operations.md).

-- The correlation id of the delivery that quarantined a message (opaque,
-- random; the same id is on the delivery's log lines and dead letters).
ALTER TABLE quarantine ADD COLUMN correlation_id TEXT;

-- How often an operator re-requested a deletion (`deletions retry`).
ALTER TABLE deletions ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;

-- Runs of the singleton jobs (retention sweep, metadata purge, split sweep,
-- transcript close, checkpoint signing): one row per job and cron instant,
-- claimed by the worker that runs it, so no instant runs twice. Rows older
-- than a week are pruned as new ones are claimed.
CREATE TABLE job_runs (
    job             TEXT    NOT NULL,
    tick            BIGINT  NOT NULL,
    worker          TEXT    NOT NULL,
    started_at      BIGINT  NOT NULL,
    finished_at     BIGINT,
    PRIMARY KEY (job, tick)
);

-- Dead letters replayed into their queue (`dlq replay`), by the opaque id
-- `dlq list` shows: `publishing` before the publish, `published` once the
-- broker confirmed it. A published id is never replayed again.
CREATE TABLE dlq_replays (
    dead_letter_id  TEXT    NOT NULL PRIMARY KEY,
    state           TEXT    NOT NULL CHECK (state IN ('publishing', 'published')),
    queue           TEXT    NOT NULL,
    actor           TEXT    NOT NULL,
    started_at      BIGINT  NOT NULL,
    published_at    BIGINT
);

-- Export files `import` published (a keyed token of the file's SHA-256),
-- so an interrupted import resumes where it stopped.
CREATE TABLE imports (
    file_token      TEXT    NOT NULL PRIMARY KEY,
    published_at    BIGINT  NOT NULL,
    actor           TEXT    NOT NULL
);

-- Checkpoints published outside the database (`proofs.checkpoint_dir`)
-- that the local proof log contradicts (a restored backup), accepted by an
-- operator (`log accept-rollback`); the worker refuses to start while one
-- is not accepted.
CREATE TABLE log_rollbacks (
    published_size  BIGINT  NOT NULL,
    published_root  BLOB    NOT NULL,
    local_size      BIGINT  NOT NULL,
    accepted_at     BIGINT  NOT NULL,
    accepted_by     TEXT    NOT NULL,
    PRIMARY KEY (published_size, published_root)
);
