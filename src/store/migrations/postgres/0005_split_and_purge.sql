-- Split messages (DSK II.2): parts wait here, sealed, until their group is
-- complete or its wait ends; the group is released (archived) as a whole.
-- Groups are keyed by a keyed token of (source, conversation, group id).
CREATE TABLE split_groups (
    source          TEXT    NOT NULL,
    group_token     TEXT    NOT NULL,
    part_count      INTEGER NOT NULL,
    first_seen      BIGINT  NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('waiting', 'complete', 'incomplete')),
    missing         TEXT,
    claimed_until   BIGINT,
    released_at     BIGINT,
    PRIMARY KEY (source, group_token)
);
CREATE INDEX split_groups_due ON split_groups (state, first_seen);

CREATE TABLE held_parts (
    source          TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    group_token     TEXT    NOT NULL,
    part_index      INTEGER NOT NULL,
    sealed_event    BYTEA    NOT NULL,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (source, message_id)
);
CREATE INDEX held_parts_by_group ON held_parts (source, group_token, part_index);

-- Metadata purge (DSK II.3): when the local details of a message were removed.
ALTER TABLE messages ADD COLUMN purged_at BIGINT;
