//! Text search over tickets: a parsed query ([`meridian_core::SearchText`])
//! written in each backend's match syntax, against the per-ticket documents
//! that migration 0006's triggers keep (SQLite FTS5, PostgreSQL tsvector
//! with a GIN index; docs/store.md), paged like `list_tickets`.

use meridian_core::{RegionId, SearchText, Status, TicketId};

use crate::{
    Backend, Result, Store, TicketPage,
    codec::{Bind, SqlBuilder, TICKET_COLUMNS},
};

/// Which tickets `search_tickets` returns: those whose text holds every
/// word of `text` and that match every other given field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// What the user typed; parsed by [`SearchText::parse`].
    pub text: String,
    pub owner_region: Option<RegionId>,
    pub status: Option<Status>,
    /// Only tickets after this id (the previous page's `next_after`).
    pub after: Option<TicketId>,
    /// Page size, clamped to `1..=500`.
    pub limit: u32,
}

impl Store {
    /// A page of the tickets matching `query`, in ticket id order with the
    /// same cursor as [`Store::list_tickets`]. Text that holds nothing to
    /// search for is refused as [`crate::Error::Invalid`] naming `query`.
    ///
    /// Only tickets whose text this region may hold are searched: the index
    /// already holds nothing of a ticket pinned elsewhere (the store keeps
    /// only its redacted copy), and the residency condition makes sure a
    /// search could not show one even so.
    pub async fn search_tickets(&self, query: &SearchQuery) -> Result<TicketPage> {
        let text = SearchText::parse(&query.text)?;
        let mut sql = SqlBuilder::new(format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE ticket_id IN ("
        ));
        match self.backend() {
            Backend::Sqlite => sql
                .push(
                    "SELECT d.ticket_id FROM ticket_search \
                     JOIN ticket_search_docs d ON d.doc = ticket_search.rowid \
                     WHERE ticket_search MATCH ",
                )
                .bind(Bind::Text(fts5_query(&text))),
            Backend::Postgres => sql
                .push("SELECT ticket_id FROM ticket_search WHERE doc @@ to_tsquery('simple', ")
                .bind(Bind::Text(tsquery(&text)))
                .push(")"),
        };
        sql.push(")");
        // The residency as stored: a JSON array of region slugs, `[]` for
        // anywhere. A quoted slug cannot occur inside another one.
        sql.push(" AND (residency = '[]' OR ");
        match self.backend() {
            Backend::Sqlite => sql.push("instr(residency, "),
            Backend::Postgres => sql.push("strpos(residency, "),
        };
        sql.bind(Bind::Text(format!("\"{}\"", self.local_region())))
            .push(") > 0)");
        if let Some(owner) = &query.owner_region {
            sql.push(" AND owner_region = ")
                .bind(Bind::Text(owner.as_str().to_owned()));
        }
        if let Some(status) = query.status {
            sql.push(" AND status = ")
                .bind(Bind::Text(status.as_str().to_owned()));
        }
        self.ticket_page(sql, query.after, query.limit).await
    }
}

/// The query in FTS5 syntax: each phrase a quoted string (terms hold only
/// letters and digits, and a quote would be doubled anyway), the last one
/// followed by `*` when its last term is a prefix; juxtaposed strings must
/// all match.
fn fts5_query(text: &SearchText) -> String {
    let phrases = text.phrases();
    let mut query = String::new();
    for (i, phrase) in phrases.iter().enumerate() {
        if i > 0 {
            query.push(' ');
        }
        query.push('"');
        query.push_str(&phrase.join(" ").replace('"', "\"\""));
        query.push('"');
        if i + 1 == phrases.len() && text.last_is_prefix() {
            query.push_str(" *");
        }
    }
    query
}

/// The query in `to_tsquery` syntax: each term a quoted lexeme (quotes and
/// backslashes escaped, though terms hold only letters and digits), the
/// terms of a phrase joined by `<->`, phrases by `&`, the last term marked
/// `:*` when it is a prefix.
fn tsquery(text: &SearchText) -> String {
    let phrases = text.phrases();
    let mut query = String::new();
    for (i, phrase) in phrases.iter().enumerate() {
        if i > 0 {
            query.push_str(" & ");
        }
        query.push('(');
        for (j, term) in phrase.iter().enumerate() {
            if j > 0 {
                query.push_str(" <-> ");
            }
            query.push('\'');
            query.push_str(&term.replace('\\', "\\\\").replace('\'', "''"));
            query.push('\'');
            if i + 1 == phrases.len() && j + 1 == phrase.len() && text.last_is_prefix() {
                query.push_str(":*");
            }
        }
        query.push(')');
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_gets_quoted_phrases_and_one_prefix() {
        let text = SearchText::parse(r#"Refund "ana@example.co"#).unwrap();
        assert_eq!(fts5_query(&text), r#""refund" "ana example co" *"#);
        assert_eq!(
            tsquery(&text),
            "('refund') & ('ana' <-> 'example' <-> 'co':*)"
        );
        let text = SearchText::parse("fire x").unwrap();
        assert_eq!(fts5_query(&text), r#""fire" "x""#);
        assert_eq!(tsquery(&text), "('fire') & ('x')");
    }
}
