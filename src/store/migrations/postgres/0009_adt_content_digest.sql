-- A keyed token of each applied ADT message's content (its segments without
-- MSH-7): a later message that reuses the control id (MSH-10) with different
-- content is refused instead of being answered "applied" while nothing is
-- applied. Rows from before this column have no token and are taken as the
-- same content.
ALTER TABLE adt_messages ADD COLUMN content_token TEXT;
