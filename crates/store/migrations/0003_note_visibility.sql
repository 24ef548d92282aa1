-- A ticket's conversation: internal notes, public replies to the customer,
-- and the customer's own messages (issue 17). Notes written before this
-- step are internal, as they always were.
ALTER TABLE notes ADD COLUMN visibility TEXT NOT NULL DEFAULT 'internal';
