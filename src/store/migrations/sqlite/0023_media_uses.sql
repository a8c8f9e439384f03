-- Which messages reference which medium at the messenger (a Matrix
-- `mxc://` URI that a forward, a caption edit or a re-sent file reuses),
-- both as keyed tokens: no URI, no message id. The deletion relay keeps a
-- medium while another message that uses it has no due deletion of its own
-- (held for review, or a retention still running), so deleting one copy
-- never takes the medium of a copy chartbridge holds. Rows go with the
-- purge of their message's deletion.
CREATE TABLE media_uses (
    source          TEXT    NOT NULL,
    media_token     TEXT    NOT NULL,
    message_token   TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (source, media_token, message_token)
);
CREATE INDEX media_uses_message ON media_uses (source, message_token);
