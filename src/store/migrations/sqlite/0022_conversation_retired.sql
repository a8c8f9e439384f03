-- A conversation whose user the messenger says changed identity (a WhatsApp
-- notice `user_changed_number`, `customer_identity_changed`,
-- `user_changed_user_id`) is 'retired': its link is gone, and neither a
-- link nor a phone number of the identity map resolves it until a person
-- links it again ('linked') or dismisses it ('dismissed'). SQLite cannot
-- change a CHECK constraint in place: the table is rebuilt.
CREATE TABLE conversation_reviews_new (
    conversation_token TEXT   NOT NULL PRIMARY KEY,
    decision        TEXT    NOT NULL CHECK (decision IN ('linked', 'dismissed', 'retired')),
    decided_by      TEXT    NOT NULL,
    decided_at      BIGINT  NOT NULL
);
INSERT INTO conversation_reviews_new (conversation_token, decision, decided_by, decided_at)
    SELECT conversation_token, decision, decided_by, decided_at FROM conversation_reviews;
DROP TABLE conversation_reviews;
ALTER TABLE conversation_reviews_new RENAME TO conversation_reviews;
