-- Pseudonyms for what lives long (docs/retention.md, "What the store
-- keeps"): no table keeps a messenger id in the clear any more. Every
-- column that held a message id (a WhatsApp wamid, which embeds the
-- sender's phone number, or a Matrix event id) now holds the keyed
-- message token of leaf v2, HMAC-SHA256(K_token, "<source>:<message_id>")
-- in lowercase hex; the Matrix source's account holds a keyed token too.
--
-- SQL cannot compute the tokens (the key is in the operator's key file,
-- never in the database): existing values are marked 'legacy:<id>' here,
-- and the worker converts them, and re-seals the blobs bound to them, the
-- first time it opens the store with the key file (Store::open). A token
-- is 64 hex digits and never contains ':', so a marked value cannot be
-- mistaken for one.
ALTER TABLE messages RENAME COLUMN message_id TO message_token;
UPDATE messages SET message_token = 'legacy:' || message_token;

ALTER TABLE quarantine RENAME COLUMN message_id TO message_token;
UPDATE quarantine SET message_token = 'legacy:' || message_token;

ALTER TABLE deletions RENAME COLUMN message_id TO message_token;
UPDATE deletions SET message_token = 'legacy:' || message_token;

ALTER TABLE log_leaves RENAME COLUMN message_id TO message_token;
UPDATE log_leaves SET message_token = 'legacy:' || message_token;

ALTER TABLE held_parts RENAME COLUMN message_id TO message_token;
UPDATE held_parts SET message_token = 'legacy:' || message_token;

ALTER TABLE content_digests RENAME COLUMN message_id TO message_token;
UPDATE content_digests SET message_token = 'legacy:' || message_token;

ALTER TABLE conflicts RENAME COLUMN message_id TO message_token;
UPDATE conflicts SET message_token = 'legacy:' || message_token;

ALTER TABLE transcript_messages RENAME COLUMN message_id TO message_token;
UPDATE transcript_messages SET message_token = 'legacy:' || message_token;

-- A retraction and its target are message tokens of their source.
ALTER TABLE source_redactions RENAME COLUMN redaction_id TO redaction_token;
ALTER TABLE source_redactions RENAME COLUMN target_id TO target_token;
UPDATE source_redactions SET redaction_token = 'legacy:' || redaction_token,
    target_token = 'legacy:' || target_token;

-- An undecrypted event is the message token of (matrix source, event id).
ALTER TABLE matrix_undecrypted RENAME COLUMN event_id TO event_token;
UPDATE matrix_undecrypted SET event_token = 'legacy:' || event_token;

-- The account a source reads the messenger as (a Matrix user id).
ALTER TABLE source_cursors RENAME COLUMN account TO account_token;
UPDATE source_cursors SET account_token = 'legacy:' || account_token;
