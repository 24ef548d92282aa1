//! Notes: an append-only set keyed by note id. Notes may be added in any
//! region at any epoch; sets merge by union, so none is ever lost.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::text::{TextKind, check_free_text};
use crate::{Error, NoteId, RegionId, Result, Status, TicketId};

pub const NOTE_BODY_BYTES_MAX: usize = 16 * 1024;
pub const AUTHOR_CHARS_MAX: usize = 200;
pub const HANDOFF_FIELD_CHARS_MAX: usize = 2_000;

/// Who a note is for: the ticket's conversation is the customer's
/// messages, the agents' public replies, and internal notes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Between agents; never reaches the customer.
    #[default]
    Internal,
    /// A reply to the customer: meets the first- and next-response clocks.
    Public,
    /// A message from the customer: starts the next-response clock.
    Inbound,
}

impl Visibility {
    pub const ALL: [Visibility; 3] = [
        Visibility::Internal,
        Visibility::Public,
        Visibility::Inbound,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Internal => "internal",
            Visibility::Public => "public",
            Visibility::Inbound => "inbound",
        }
    }

    /// As people read it: "note", "reply", "customer message".
    pub fn label(self) -> &'static str {
        match self {
            Visibility::Internal => "note",
            Visibility::Public => "reply",
            Visibility::Inbound => "customer message",
        }
    }

    /// Notes written before visibility existed are internal, and internal
    /// notes serialize as they always did.
    pub fn is_internal(&self) -> bool {
        *self == Visibility::Internal
    }

    /// Part of the conversation with the customer (not an internal note).
    pub fn is_message(self) -> bool {
        self != Visibility::Internal
    }
}

impl std::fmt::Display for Visibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Visibility {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Visibility::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown visibility {s:?}; use internal, public or inbound"))
    }
}

/// A note on a ticket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Note {
    pub id: NoteId,
    pub ticket_id: TicketId,
    /// The region the note was written in.
    pub region: RegionId,
    pub author: String,
    pub body: String,
    pub created_at: Timestamp,
    /// Written by Meridian from the ticket's history rather than by a person.
    pub auto: bool,
    /// Internal note, public reply or customer message.
    #[serde(default, skip_serializing_if = "Visibility::is_internal")]
    pub visibility: Visibility,
}

/// The structured note that must accompany every handoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffNote {
    pub current_status: Status,
    pub last_action: String,
    pub next_action: String,
    pub deadline: Option<Timestamp>,
    pub text: String,
    pub author: String,
    pub auto: bool,
}

impl Note {
    pub fn validate(&self) -> Result<()> {
        check_author(&self.author)?;
        if self.body.trim().is_empty() {
            return Err(Error::InvalidField {
                field: "body",
                reason: "must not be empty".into(),
            });
        }
        if self.body.len() > NOTE_BODY_BYTES_MAX {
            return Err(Error::InvalidField {
                field: "body",
                reason: format!(
                    "is {} bytes; the limit is {NOTE_BODY_BYTES_MAX}",
                    self.body.len()
                ),
            });
        }
        check_free_text("body", &self.body, TextKind::Body)
    }
}

fn check_author(author: &str) -> Result<()> {
    if author.trim().is_empty() {
        return Err(Error::InvalidField {
            field: "author",
            reason: "must not be empty".into(),
        });
    }
    if author.chars().count() > AUTHOR_CHARS_MAX {
        return Err(Error::InvalidField {
            field: "author",
            reason: format!("must be one line of at most {AUTHOR_CHARS_MAX} characters"),
        });
    }
    check_free_text("author", author, TextKind::Line)
}

impl HandoffNote {
    /// The note as people read it on the ticket.
    pub fn render(&self, from: &RegionId, to: &RegionId) -> String {
        let mut body = format!(
            "Handoff {from} → {to}{}\nstatus: {}\nlast action: {}\nnext action: {}",
            if self.auto { " (auto)" } else { "" },
            self.current_status,
            self.last_action,
            self.next_action
        );
        if let Some(deadline) = self.deadline {
            body.push_str(&format!("\ndeadline: {deadline}"));
        }
        if !self.text.trim().is_empty() {
            body.push_str("\n\n");
            body.push_str(self.text.trim());
        }
        body
    }

    /// Shortens `text` (at a character boundary, marked with `…`) so that
    /// the note rendered for `from → to` fits one ticket note. For notes
    /// Meridian writes itself from a longer source, such as an agent's note
    /// copied at shift end; a person's handoff is refused instead.
    pub fn fit_to_note(mut self, from: &RegionId, to: &RegionId) -> Self {
        const MARK: &str = "…";
        let rendered = self.render(from, to).len();
        if rendered <= NOTE_BODY_BYTES_MAX {
            return self;
        }
        let over = rendered - NOTE_BODY_BYTES_MAX + MARK.len();
        let mut keep = self.text.trim().len().saturating_sub(over);
        let text = self.text.trim();
        while keep > 0 && !text.is_char_boundary(keep) {
            keep -= 1;
        }
        self.text = format!("{}{MARK}", &text[..keep]);
        self
    }

    pub fn validate(&self) -> Result<()> {
        check_author(&self.author)?;
        for (field, value) in [
            ("note.last_action", &self.last_action),
            ("note.next_action", &self.next_action),
        ] {
            if value.trim().is_empty() {
                return Err(Error::InvalidField {
                    field,
                    reason: "must not be empty".into(),
                });
            }
            if value.chars().count() > HANDOFF_FIELD_CHARS_MAX {
                return Err(Error::InvalidField {
                    field,
                    reason: format!("is longer than {HANDOFF_FIELD_CHARS_MAX} characters"),
                });
            }
            check_free_text(field, value, TextKind::Line)?;
        }
        if self.text.len() > NOTE_BODY_BYTES_MAX {
            return Err(Error::InvalidField {
                field: "note.text",
                reason: format!("is longer than {NOTE_BODY_BYTES_MAX} bytes"),
            });
        }
        check_free_text("note.text", &self.text, TextKind::Body)
    }
}

/// The notes of one ticket, as a grow-only set. `merge` is commutative,
/// associative and idempotent, so replicas that saw the same notes in any
/// order, any number of times, agree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteSet(BTreeMap<NoteId, Note>);

impl NoteSet {
    pub fn insert(&mut self, note: Note) {
        match self.0.get(&note.id) {
            // The same id twice is the same note delivered twice. Should two
            // copies ever differ, keep the greater so every replica picks alike.
            Some(existing) if existing >= &note => {}
            _ => {
                self.0.insert(note.id, note);
            }
        }
    }

    pub fn merge(&mut self, other: &NoteSet) {
        for note in other.0.values() {
            self.insert(note.clone());
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Note> {
        self.0.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn note(id_seed: u8, body_seed: u8) -> Note {
        let at = Timestamp::from_millisecond(1_700_000_000_000 + i64::from(id_seed)).unwrap();
        Note {
            id: NoteId::new_v7(at, [id_seed; 10]),
            ticket_id: TicketId::new_v7(Timestamp::UNIX_EPOCH, [0; 10]),
            region: RegionId::new("eu-west").unwrap(),
            author: "ana".into(),
            body: format!("body {body_seed}"),
            created_at: at,
            auto: false,
            visibility: crate::Visibility::Internal,
        }
    }

    fn note_set() -> impl Strategy<Value = NoteSet> {
        proptest::collection::vec((0u8..12, 0u8..3), 0..10).prop_map(|seeds| {
            let mut set = NoteSet::default();
            for (id, body) in seeds {
                set.insert(note(id, body));
            }
            set
        })
    }

    fn merged(a: &NoteSet, b: &NoteSet) -> NoteSet {
        let mut out = a.clone();
        out.merge(b);
        out
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in note_set(), b in note_set()) {
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in note_set(), b in note_set(), c in note_set()) {
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        }

        #[test]
        fn merge_is_idempotent_and_loses_nothing(a in note_set(), b in note_set()) {
            let ab = merged(&a, &b);
            prop_assert_eq!(merged(&ab, &b), ab.clone());
            for n in a.iter().chain(b.iter()) {
                prop_assert!(ab.0.contains_key(&n.id), "note {} lost in merge", n.id);
            }
        }
    }

    #[test]
    fn empty_note_is_refused() {
        let mut n = note(1, 1);
        n.body = "  ".into();
        assert_eq!(
            n.validate().unwrap_err().to_string(),
            "body: must not be empty"
        );
    }
}
