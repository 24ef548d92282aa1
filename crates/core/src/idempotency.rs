//! Idempotency keys of ticket creations (issue 17): a client names a
//! creation so that a retry of it creates nothing new. This module only
//! says what a key may look like and whose it is; the gateway looks keys up
//! and the store keeps them (see ARCHITECTURE.md, "Idempotent creation").

use std::fmt;

use crate::{Error, Result};

/// The longest key, in characters (all ASCII).
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 128;

/// A client's name for one creation: 1..=128 printable ASCII characters
/// (space through `~`), compared exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks `raw`; an empty key is an error here (the API reads empty as
    /// "no key" before it gets this far).
    pub fn new(raw: impl Into<String>) -> Result<Self> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err(Error::invalid("idempotency_key", "is empty"));
        }
        if let Some((at, c)) = raw.char_indices().find(|(_, c)| !(' '..='~').contains(c)) {
            return Err(Error::invalid(
                "idempotency_key",
                format!("has {c:?} at byte {at}; a key is printable ASCII (space through '~')"),
            ));
        }
        if raw.len() > IDEMPOTENCY_KEY_CHARS_MAX {
            return Err(Error::invalid(
                "idempotency_key",
                format!(
                    "is {} characters; the limit is {IDEMPOTENCY_KEY_CHARS_MAX}",
                    raw.len()
                ),
            ));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whose key it is: two callers may use the same key without meeting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyScope {
    /// An authenticated caller: the token's subject.
    Subject(String),
    /// An unauthenticated caller: the ticket's customer field.
    Customer(String),
}

impl KeyScope {
    /// The scope's bytes for a digest: a tag, then the value, so that a
    /// subject and a customer of the same name stay apart.
    pub fn canonical(&self) -> String {
        match self {
            KeyScope::Subject(s) => format!("sub:{s}"),
            KeyScope::Customer(c) => format!("customer:{c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_ascii_up_to_the_limit() {
        assert!(IdempotencyKey::new("order-42 retry ~").is_ok());
        assert!(IdempotencyKey::new("a".repeat(IDEMPOTENCY_KEY_CHARS_MAX)).is_ok());
        for bad in [
            String::new(),
            "a".repeat(IDEMPOTENCY_KEY_CHARS_MAX + 1),
            "tab\there".to_owned(),
            "é".to_owned(),
            "nl\n".to_owned(),
        ] {
            let err = IdempotencyKey::new(bad.clone()).unwrap_err();
            assert!(
                matches!(
                    &err,
                    Error::InvalidField {
                        field: "idempotency_key",
                        ..
                    }
                ),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn scopes_of_the_same_name_differ() {
        assert_ne!(
            KeyScope::Subject("acme".into()).canonical(),
            KeyScope::Customer("acme".into()).canonical()
        );
    }
}
