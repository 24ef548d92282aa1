-- Text search over tickets (issue 16), SQLite: one FTS5 document per
-- ticket holding its subject, customer, body and every note's body, kept
-- current by triggers, so every path that writes a ticket or a note (a
-- local write, a multi-row run, a replicated event, a refold's full-row
-- rewrite) updates the index in its own transaction without knowing of it.
--
-- Residency: the index holds exactly the text this database holds. Outside
-- a pinned ticket's residency the store only ever holds its redacted copy
-- (empty subject, body, customer; notes with empty bodies), so nothing of
-- its text can be indexed there; a note with an empty body does not even
-- touch the index.
--
-- Contentless (content = ''), with contentless_delete = 1 (SQLite 3.43 and
-- later; sqlx bundles 3.46): the index keeps no second copy of customer
-- text, and a ticket's document can still be replaced by rowid. An
-- external-content table cannot work here, since a document is built from
-- two tables, and a regular FTS5 table would store every text twice.
--
-- The FTS rowid of a ticket is `ticket_search_docs.doc`, an INTEGER PRIMARY
-- KEY: the implicit rowid of `tickets` (a TEXT key) may change on VACUUM.
CREATE TABLE ticket_search_docs (
    doc       INTEGER PRIMARY KEY,
    ticket_id TEXT NOT NULL UNIQUE
);

-- remove_diacritics 0: PostgreSQL's 'simple' configuration keeps accents,
-- and both backends must find the same tickets.
CREATE VIRTUAL TABLE ticket_search USING fts5(
    text,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 0'
);

-- The one definition of a ticket's document: subject, customer, body, then
-- its notes in the order the ticket shows them, cut at 100,000 characters
-- (PostgreSQL's tsvector has a size limit; both backends cut alike).
CREATE VIEW ticket_search_text AS
SELECT t.ticket_id AS ticket_id,
       substr(
           t.subject || ' ' || t.customer || ' ' || t.body || ' ' ||
           coalesce((SELECT group_concat(n.body, ' ' ORDER BY n.created_at, n.note_id)
                     FROM notes n WHERE n.ticket_id = t.ticket_id), ''),
           1, 100000) AS doc_text
FROM tickets t;

CREATE TRIGGER ticket_search_ticket_inserted AFTER INSERT ON tickets
BEGIN
    INSERT OR IGNORE INTO ticket_search_docs (ticket_id) VALUES (new.ticket_id);
    REPLACE INTO ticket_search (rowid, text)
        SELECT d.doc, v.doc_text FROM ticket_search_text v
        JOIN ticket_search_docs d ON d.ticket_id = v.ticket_id
        WHERE v.ticket_id = new.ticket_id;
END;

-- A refold rewrites every column; only a change of text reindexes.
CREATE TRIGGER ticket_search_ticket_text_changed AFTER UPDATE OF subject, body, customer ON tickets
WHEN old.subject IS NOT new.subject OR old.body IS NOT new.body OR old.customer IS NOT new.customer
BEGIN
    REPLACE INTO ticket_search (rowid, text)
        SELECT d.doc, v.doc_text FROM ticket_search_text v
        JOIN ticket_search_docs d ON d.ticket_id = v.ticket_id
        WHERE v.ticket_id = new.ticket_id;
END;

CREATE TRIGGER ticket_search_ticket_deleted AFTER DELETE ON tickets
BEGIN
    DELETE FROM ticket_search
        WHERE rowid = (SELECT doc FROM ticket_search_docs WHERE ticket_id = old.ticket_id);
    DELETE FROM ticket_search_docs WHERE ticket_id = old.ticket_id;
END;

-- A note of a ticket not here yet indexes nothing: the ticket's own
-- trigger reads its notes when it arrives.
CREATE TRIGGER ticket_search_note_inserted AFTER INSERT ON notes
WHEN new.body <> ''
BEGIN
    REPLACE INTO ticket_search (rowid, text)
        SELECT d.doc, v.doc_text FROM ticket_search_text v
        JOIN ticket_search_docs d ON d.ticket_id = v.ticket_id
        WHERE v.ticket_id = new.ticket_id;
END;

CREATE TRIGGER ticket_search_note_changed AFTER UPDATE OF body, ticket_id ON notes
BEGIN
    REPLACE INTO ticket_search (rowid, text)
        SELECT d.doc, v.doc_text FROM ticket_search_text v
        JOIN ticket_search_docs d ON d.ticket_id = v.ticket_id
        WHERE v.ticket_id IN (old.ticket_id, new.ticket_id);
END;

CREATE TRIGGER ticket_search_note_deleted AFTER DELETE ON notes
BEGIN
    REPLACE INTO ticket_search (rowid, text)
        SELECT d.doc, v.doc_text FROM ticket_search_text v
        JOIN ticket_search_docs d ON d.ticket_id = v.ticket_id
        WHERE v.ticket_id = old.ticket_id;
END;

-- Backfill: the tickets and notes already here, in ticket id order.
INSERT INTO ticket_search_docs (ticket_id) SELECT ticket_id FROM tickets ORDER BY ticket_id;
INSERT INTO ticket_search (rowid, text)
    SELECT d.doc, v.doc_text FROM ticket_search_text v
    JOIN ticket_search_docs d ON d.ticket_id = v.ticket_id;
