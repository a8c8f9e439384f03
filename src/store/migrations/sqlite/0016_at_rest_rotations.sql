-- `keys rotate-at-rest`: one row per new at-rest key (its 8-hex-digit id),
-- finished once no sealed blob is left under another key. Re-running the
-- command resumes the rotation whose key is current and unfinished.
CREATE TABLE at_rest_rotations (
    key_id          TEXT    NOT NULL PRIMARY KEY,
    started_at      BIGINT  NOT NULL,
    finished_at     BIGINT,
    resealed        BIGINT  NOT NULL DEFAULT 0
);
