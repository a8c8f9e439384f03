-- Conversations whose user the messenger says changed identity (a WhatsApp
-- notice `user_changed_number`, `customer_identity_changed`,
-- `user_changed_user_id`): from `retired_at` (ms, the notice's time) no
-- phone number of the identity map resolves the conversation, and its
-- messages are held, until a person links it again (a new link removes
-- the row). Keyed by the conversation's keyed token; no identifiers.
CREATE TABLE retired_conversations (
    conversation_token TEXT   NOT NULL PRIMARY KEY,
    retired_at      BIGINT  NOT NULL
);
