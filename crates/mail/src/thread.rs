//! Threading: which ticket an inbound message belongs to, if any.
//!
//! Mail clients thread by `In-Reply-To`/`References`; people forward,
//! copy-paste and start new mails about old tickets, so the subject's
//! ticket reference (`[#<ref>]`, which every mail Meridian sends carries)
//! is the second route. Order of evidence, strongest first:
//! 1. the message's own Message-ID is already known: a duplicate delivery;
//! 2. `In-Reply-To`, then `References` newest first: a Message-ID that
//!    Meridian sent or received on a ticket;
//! 3. a `[#<ref>]` in the subject that names a ticket;
//! 4. otherwise, a new ticket.
//!
//! The lookups are a trait ([`TicketDirectory`]) because the answers live
//! in the region's store, which the gateway owns; this crate never touches
//! it.

use std::future::Future;

use crate::message::InboundMessage;

/// The longest ticket reference accepted in a subject.
const TICKET_REF_CHARS_MAX: usize = 40;

/// A ticket reference as it appears in subjects, without `[#` and `]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TicketRef(String);

impl TicketRef {
    /// A reference: 4 to 40 ASCII letters, digits or `-`.
    pub fn new(value: &str) -> Option<TicketRef> {
        let ok = (4..=TICKET_REF_CHARS_MAX).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        ok.then(|| TicketRef(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `[#<ref>]`, the tag put in subjects.
    pub fn subject_tag(&self) -> String {
        format!("[#{}]", self.0)
    }
}

impl std::fmt::Display for TicketRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every well-formed `[#<ref>]` in a subject, in order.
pub fn subject_refs(subject: &str) -> Vec<TicketRef> {
    let mut found = Vec::new();
    let mut rest = subject;
    while let Some(start) = rest.find("[#") {
        let after = &rest[start + 2..];
        match after.find(']') {
            Some(end) => {
                if let Some(r) = TicketRef::new(after[..end].trim()) {
                    found.push(r);
                }
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    found
}

/// The answers threading needs from the region's store. `Ticket` is the
/// gateway's ticket id type.
pub trait TicketDirectory {
    type Ticket: Clone + Send;
    type Error: std::error::Error + Send + Sync + 'static;

    /// The ticket that a message with this Message-ID (without angle
    /// brackets) was received on or sent from.
    fn ticket_for_message_id(
        &self,
        message_id: &str,
    ) -> impl Future<Output = Result<Option<Self::Ticket>, Self::Error>> + Send;

    /// The ticket this subject reference names.
    fn ticket_for_ref(
        &self,
        reference: &TicketRef,
    ) -> impl Future<Output = Result<Option<Self::Ticket>, Self::Error>> + Send;
}

/// How a message was matched to a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadedBy {
    InReplyTo,
    References,
    SubjectRef,
}

/// Where an inbound message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Threading<T> {
    /// Its Message-ID is already on this ticket: nothing new to do.
    Duplicate(T),
    /// A new message on an existing ticket.
    Existing(T, ThreadedBy),
    /// A new ticket, to be routed.
    New,
}

/// Decides where `message` goes (see the module doc for the order).
pub async fn thread<D: TicketDirectory>(
    directory: &D,
    message: &InboundMessage,
) -> Result<Threading<D::Ticket>, D::Error> {
    if let Some(t) = directory.ticket_for_message_id(&message.message_id).await? {
        return Ok(Threading::Duplicate(t));
    }
    for id in &message.in_reply_to {
        if let Some(t) = directory.ticket_for_message_id(id).await? {
            return Ok(Threading::Existing(t, ThreadedBy::InReplyTo));
        }
    }
    for id in message.references.iter().rev() {
        if let Some(t) = directory.ticket_for_message_id(id).await? {
            return Ok(Threading::Existing(t, ThreadedBy::References));
        }
    }
    for r in subject_refs(&message.subject) {
        if let Some(t) = directory.ticket_for_ref(&r).await? {
            return Ok(Threading::Existing(t, ThreadedBy::SubjectRef));
        }
    }
    Ok(Threading::New)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_refs_are_found_and_junk_is_skipped() {
        let refs = subject_refs("Re: Fwd: [#ab12cd34] printer [#x] [# 0190-ffee ] [#unclosed");
        let got: Vec<&str> = refs.iter().map(TicketRef::as_str).collect();
        assert_eq!(got, vec!["ab12cd34", "0190-ffee"]);
        assert!(subject_refs("no tag here").is_empty());
        assert!(TicketRef::new("has space").is_none());
        assert_eq!(
            TicketRef::new("abcd").map(|r| r.subject_tag()),
            Some("[#abcd]".to_owned())
        );
    }
}
