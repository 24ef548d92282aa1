-- Text search over tickets (issue 16), PostgreSQL: one tsvector per ticket
-- holding its subject, customer, body and every note's body, in a table of
-- its own with a GIN index, kept current by triggers, so every path that
-- writes a ticket or a note (a local write, a multi-row run, a replicated
-- event, a refold's full-row rewrite) updates it in its own transaction.
-- A generated column or an expression index cannot do this: a document
-- spans two tables.
--
-- Residency: the index holds exactly the text this database holds. Outside
-- a pinned ticket's residency the store only ever holds its redacted copy
-- (empty subject, body, customer; notes with empty bodies), so nothing of
-- its text can be indexed there; a note with an empty body does not even
-- touch the index.
--
-- 'simple': no stemming and no stop words, as SQLite's unicode61 does, so
-- both backends find the same tickets. Punctuation becomes a space before
-- parsing: PostgreSQL's parser would keep `ana@example.com` or
-- `example.com` as one token, where SQLite (and the query parser,
-- meridian_core::search) cut them into words.
CREATE TABLE ticket_search (
    ticket_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    doc       tsvector NOT NULL
);
CREATE INDEX ticket_search_doc_idx ON ticket_search USING GIN (doc);

-- The one definition of a ticket's document: subject, customer, body, then
-- its notes in the order the ticket shows them, cut at 100,000 characters
-- (a tsvector may not exceed 1 MB; both backends cut alike).
CREATE VIEW ticket_search_text AS
SELECT t.ticket_id AS ticket_id,
       left(
           t.subject || ' ' || t.customer || ' ' || t.body || ' ' ||
           coalesce((SELECT string_agg(n.body, ' ' ORDER BY n.created_at, n.note_id)
                     FROM notes n WHERE n.ticket_id = t.ticket_id), ''),
           100000) AS doc_text
FROM tickets t;

-- A document is computed from the statement's snapshot and upserted. Two
-- writers of one ticket cannot interleave: every write transaction of a
-- region's store serializes on its log head's row lock first, so a later
-- statement sees an earlier transaction's notes.
CREATE FUNCTION ticket_search_refresh(id TEXT) RETURNS void LANGUAGE sql AS $$
    INSERT INTO ticket_search (ticket_id, doc)
    SELECT ticket_id, to_tsvector('simple', regexp_replace(doc_text, '[[:punct:][:space:]]+', ' ', 'g'))
    FROM ticket_search_text WHERE ticket_id = id
    ON CONFLICT (ticket_id) DO UPDATE SET doc = excluded.doc;
$$;

CREATE FUNCTION ticket_search_on_ticket() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM ticket_search WHERE ticket_id = OLD.ticket_id;
    ELSE
        PERFORM ticket_search_refresh(NEW.ticket_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION ticket_search_on_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM ticket_search_refresh(OLD.ticket_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM ticket_search_refresh(NEW.ticket_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER ticket_search_ticket_inserted AFTER INSERT ON tickets
    FOR EACH ROW EXECUTE FUNCTION ticket_search_on_ticket();
-- A refold rewrites every column; only a change of text reindexes.
CREATE TRIGGER ticket_search_ticket_text_changed AFTER UPDATE OF subject, body, customer ON tickets
    FOR EACH ROW
    WHEN (OLD.subject IS DISTINCT FROM NEW.subject OR OLD.body IS DISTINCT FROM NEW.body
          OR OLD.customer IS DISTINCT FROM NEW.customer)
    EXECUTE FUNCTION ticket_search_on_ticket();
CREATE TRIGGER ticket_search_ticket_deleted AFTER DELETE ON tickets
    FOR EACH ROW EXECUTE FUNCTION ticket_search_on_ticket();
-- A note of a ticket not here yet indexes nothing: the ticket's own
-- trigger reads its notes when it arrives.
CREATE TRIGGER ticket_search_note_inserted AFTER INSERT ON notes
    FOR EACH ROW WHEN (NEW.body <> '') EXECUTE FUNCTION ticket_search_on_note();
CREATE TRIGGER ticket_search_note_changed AFTER UPDATE OF body, ticket_id OR DELETE ON notes
    FOR EACH ROW EXECUTE FUNCTION ticket_search_on_note();

-- Backfill: the tickets and notes already here.
SELECT ticket_search_refresh(ticket_id) FROM tickets;
