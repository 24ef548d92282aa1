//! The words of a text search, as the store matches them.
//!
//! A user's query is never handed to a database's query language: it is cut
//! here into *terms* (maximal runs of letters and digits, lowercased), and
//! the store writes each term quoted in its backend's syntax. Punctuation,
//! quotes and operators in the text are separators and nothing else, so no
//! query can be a syntax error or reach an operator.
//!
//! Each whitespace-separated *word* of the query becomes a phrase of its
//! terms, so `ana@example.com` finds those three terms next to each other
//! (how both backends index that text) rather than anywhere in the ticket.
//! A ticket matches when it holds every phrase. The last term matches as a
//! prefix (`refu` finds `refund`) when it has at least
//! [`SEARCH_PREFIX_CHARS_MIN`] characters, so a single letter never expands
//! to most of the index.

use crate::{Error, Result};

/// The longest query text, in characters.
pub const SEARCH_QUERY_CHARS_MAX: usize = 256;
/// The most terms one query may hold.
pub const SEARCH_TERMS_MAX: usize = 16;
/// The shortest last term that matches as a prefix.
pub const SEARCH_PREFIX_CHARS_MIN: usize = 2;

/// A parsed query: phrases of terms, every term non-empty, lowercase and
/// made only of letters and digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchText {
    phrases: Vec<Vec<String>>,
    last_is_prefix: bool,
}

impl SearchText {
    /// Cuts `text` into phrases of terms. Refuses, naming the field
    /// `query`, text that is too long, holds too many terms, or holds no
    /// letter or digit at all.
    pub fn parse(text: &str) -> Result<SearchText> {
        let chars = text.chars().count();
        if chars > SEARCH_QUERY_CHARS_MAX {
            return Err(Error::invalid(
                "query",
                format!("is {chars} characters; the limit is {SEARCH_QUERY_CHARS_MAX}"),
            ));
        }
        let phrases: Vec<Vec<String>> = text
            .split_whitespace()
            .map(|word| {
                word.split(|c: char| !c.is_alphanumeric())
                    .filter(|term| !term.is_empty())
                    .map(str::to_lowercase)
                    .collect::<Vec<String>>()
            })
            .filter(|phrase| !phrase.is_empty())
            .collect();
        let terms: usize = phrases.iter().map(Vec::len).sum();
        if terms == 0 {
            return Err(Error::invalid(
                "query",
                "holds no letter or digit to search for; give at least one word",
            ));
        }
        if terms > SEARCH_TERMS_MAX {
            return Err(Error::invalid(
                "query",
                format!("holds {terms} words; the limit is {SEARCH_TERMS_MAX}"),
            ));
        }
        let last_is_prefix = phrases
            .last()
            .and_then(|phrase| phrase.last())
            .is_some_and(|term| term.chars().count() >= SEARCH_PREFIX_CHARS_MIN);
        Ok(SearchText {
            phrases,
            last_is_prefix,
        })
    }

    /// The phrases, in the order the query gave them; a ticket must hold
    /// each one.
    pub fn phrases(&self) -> &[Vec<String>] {
        &self.phrases
    }

    /// Whether the last term of the last phrase matches as a prefix.
    pub fn last_is_prefix(&self) -> bool {
        self.last_is_prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phrases(text: &str) -> Vec<Vec<String>> {
        SearchText::parse(text).unwrap().phrases().to_vec()
    }

    #[test]
    fn words_become_phrases_of_lowercase_terms() {
        assert_eq!(
            phrases("  Refund ana@Example.com  Ünïcode "),
            vec![
                vec!["refund".to_owned()],
                vec!["ana".into(), "example".into(), "com".into()],
                vec!["ünïcode".into()],
            ]
        );
    }

    #[test]
    fn query_syntax_of_either_backend_is_only_separators() {
        for (text, expected) in [
            (
                r#"" OR "printer"*"#,
                vec![vec!["or".to_owned()], vec!["printer".into()]],
            ),
            ("fire' & !(x:*", vec![vec!["fire".into()], vec!["x".into()]]),
            (
                "NEAR(a b) -c ^d",
                vec![
                    vec!["near".into(), "a".into()],
                    vec!["b".into()],
                    vec!["c".into()],
                    vec!["d".into()],
                ],
            ),
            ("o'brien\\", vec![vec!["o".into(), "brien".into()]]),
        ] {
            assert_eq!(phrases(text), expected, "{text}");
        }
    }

    proptest::proptest! {
        /// Whatever the text, a query is refused naming `query` or holds
        /// only non-empty runs of lowercase letters and digits: nothing a
        /// backend could read as syntax.
        #[test]
        fn any_text_is_refused_or_only_words(text in "\\PC{0,80}|[\"*:&|!()'\\\\^+<>{}.\\- a-zA-Z0-9ü]{0,40}") {
            match SearchText::parse(&text) {
                Ok(parsed) => {
                    proptest::prop_assert!(!parsed.phrases().is_empty());
                    for term in parsed.phrases().iter().flatten() {
                        proptest::prop_assert!(!term.is_empty());
                        proptest::prop_assert!(term.chars().all(char::is_alphanumeric), "{term:?}");
                        proptest::prop_assert_eq!(term.to_lowercase(), term.clone());
                    }
                }
                Err(Error::InvalidField { field, .. }) => proptest::prop_assert_eq!(field, "query"),
                Err(other) => proptest::prop_assert!(false, "{other}"),
            }
        }
    }

    #[test]
    fn the_last_term_is_a_prefix_unless_it_is_one_character() {
        assert!(SearchText::parse("printer fi").unwrap().last_is_prefix());
        assert!(!SearchText::parse("fire x").unwrap().last_is_prefix());
        assert!(!SearchText::parse("fire x!").unwrap().last_is_prefix());
    }

    #[test]
    fn empty_long_and_wordy_queries_are_refused_naming_query() {
        for text in ["", "   ", "!!! ... ---", "\"*\"", "&|!():*"] {
            let err = SearchText::parse(text).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidField { field: "query", reason } if reason.contains("no letter or digit")),
                "{text:?}: {err}"
            );
        }
        let long = "a".repeat(SEARCH_QUERY_CHARS_MAX + 1);
        let err = SearchText::parse(&long).unwrap_err();
        assert_eq!(
            err.to_string(),
            "query: is 257 characters; the limit is 256"
        );
        assert!(SearchText::parse(&"a".repeat(SEARCH_QUERY_CHARS_MAX)).is_ok());
        let wordy = vec!["w"; SEARCH_TERMS_MAX + 1].join(" ");
        let err = SearchText::parse(&wordy).unwrap_err();
        assert_eq!(err.to_string(), "query: holds 17 words; the limit is 16");
    }
}
