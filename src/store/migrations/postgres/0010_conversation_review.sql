-- The conversation a quarantined message belongs to, as the keyed token the
-- links table uses (never the conversation id itself), so a reviewer's link or
-- dismissal of the conversation reaches every message it holds.
ALTER TABLE quarantine ADD COLUMN conversation_token TEXT;
CREATE INDEX quarantine_by_conversation ON quarantine (conversation_token);

-- A reviewer's decision about a conversation that resolved to no patient:
-- linked to a patient (the link itself is in `links`) or dismissed as not
-- relevant. Who and when; no identifiers.
CREATE TABLE conversation_reviews (
    conversation_token TEXT   NOT NULL PRIMARY KEY,
    decision        TEXT    NOT NULL CHECK (decision IN ('linked', 'dismissed')),
    decided_by      TEXT    NOT NULL,
    decided_at      BIGINT  NOT NULL
);
