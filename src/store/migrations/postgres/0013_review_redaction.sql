-- Redaction on review (DSK I.11): a reviewer's rectangles for a message
-- held 'review_redaction', as JSON {"rects": [{"x","y","w","h"}],
-- "received_sha256", "by", "at_ms"}; no content, no identifiers. The held
-- original stays sealed in sealed_detail until the redacted derivative is
-- archived (then both are cleared, as for every release).
ALTER TABLE quarantine ADD COLUMN redaction TEXT;
