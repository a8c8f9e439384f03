-- Entries of decoded payloads that carry no patient content (delivery
-- statuses, reactions, template/account updates, system notices), counted
-- per source and kind so that `chartbridge status` shows them. Counts only:
-- no ids, no content.
CREATE TABLE skipped_entries (
    source      TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    count       BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    PRIMARY KEY (source, kind)
);
