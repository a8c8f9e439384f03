-- A conversation whose user the messenger says changed identity (a WhatsApp
-- notice `user_changed_number`, `customer_identity_changed`,
-- `user_changed_user_id`) is 'retired': its link is gone, and neither a
-- link nor a phone number of the identity map resolves it until a person
-- links it again ('linked') or dismisses it ('dismissed').
ALTER TABLE conversation_reviews DROP CONSTRAINT conversation_reviews_decision_check;
ALTER TABLE conversation_reviews ADD CONSTRAINT conversation_reviews_decision_check
    CHECK (decision IN ('linked', 'dismissed', 'retired'));
