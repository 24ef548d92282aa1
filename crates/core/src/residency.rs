//! Residency: a ticket pinned to a set of regions keeps its text in them.
//!
//! Outside the set a region holds a *redacted* copy of each event of the
//! ticket: the same kind at the same `(origin_region, origin_seq)`, with the
//! ids, owner, epoch, status, tier, skills, SLA clocks and note ids intact
//! (so it can route, count queues, check fencing and keep every log dense),
//! and every free text emptied: the ticket's subject, body and customer, a
//! note's body and author, a handoff note's actions, text and author.
//!
//! The mark of a redacted event is its emptied required text: a ticket
//! without a subject, a note without a body. Local writes refuse both (see
//! [`crate::NewTicket::validate`] and [`crate::Note::validate`]), so no real
//! event can look redacted, and a redacted one needs no extra field in the
//! stored or replicated format.
//!
//! [`outgoing`] is the one decision every path that ships events out of a
//! region makes (replication streams, anti-entropy answers, the log tails
//! carried in handoff calls): the full event to a region inside the set,
//! the redacted one outside, and nothing when the sender cannot tell which
//! (the ticket is not here yet) or holds only the redacted copy and the
//! receiver is inside the set: an in-set region must get the full event
//! from a region that has it, never a redacted copy it would keep.

use std::collections::BTreeSet;

use crate::{EventEnvelope, EventKind, HandoffNote, Note, RegionId, Ticket, TicketId};

/// Whether `region` may hold the text of a ticket with this residency
/// (an empty set means anywhere).
pub fn may_hold(residency: &BTreeSet<RegionId>, region: &RegionId) -> bool {
    residency.is_empty() || residency.contains(region)
}

/// The reason a ticket's data may not go to `region`, naming the set, or
/// `None` when it may.
pub fn refusal(residency: &BTreeSet<RegionId>, region: &RegionId) -> Option<String> {
    if may_hold(residency, region) {
        return None;
    }
    let allowed: Vec<&str> = residency.iter().map(RegionId::as_str).collect();
    Some(format!(
        "{region} is outside the ticket's residency ({}); its data may not move there",
        allowed.join(", ")
    ))
}

/// Whether the kind carries free text that residency keeps home.
pub fn carries_text(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::TicketCreated { .. }
            | EventKind::NoteAdded { .. }
            | EventKind::HandoffOffered { .. }
    )
}

/// The ticket whose residency decides where this event's text may go, when
/// the event does not say so itself (a creation carries its residency).
pub fn residency_ticket(kind: &EventKind) -> Option<TicketId> {
    match kind {
        EventKind::NoteAdded { note } | EventKind::HandoffOffered { note, .. } => {
            Some(note.ticket_id)
        }
        _ => None,
    }
}

/// Whether `here` must refuse this replicated event: it is a redacted copy
/// of a ticket whose residency includes `here`, which keeps the full event
/// (a sender that has only the copy must not send it). `stored` is the
/// residency of the event's ticket as held here, for events that do not
/// carry it ([`residency_ticket`]); a note of a ticket not here yet cannot
/// be checked and is let in.
pub fn refuses_copy(
    kind: &EventKind,
    stored: Option<&BTreeSet<RegionId>>,
    here: &RegionId,
) -> bool {
    if !is_redacted(kind) {
        return false;
    }
    match kind {
        EventKind::TicketCreated { ticket } => may_hold(&ticket.residency, here),
        _ => stored.is_some_and(|residency| may_hold(residency, here)),
    }
}

/// Whether this is a redacted copy (see the module's doc for the mark).
pub fn is_redacted(kind: &EventKind) -> bool {
    match kind {
        EventKind::TicketCreated { ticket } => ticket.is_redacted(),
        EventKind::NoteAdded { note } | EventKind::HandoffOffered { note, .. } => {
            note.body.is_empty()
        }
        _ => false,
    }
}

/// The redacted form of an event kind: every free text emptied, the rest
/// kept. Pure and idempotent; kinds without text come back unchanged.
pub fn redact(kind: &EventKind) -> EventKind {
    match kind {
        EventKind::TicketCreated { ticket } => EventKind::TicketCreated {
            ticket: Box::new(ticket.redacted()),
        },
        EventKind::NoteAdded { note } => EventKind::NoteAdded {
            note: note.redacted(),
        },
        EventKind::HandoffOffered { to, handoff, note } => EventKind::HandoffOffered {
            to: to.clone(),
            handoff: handoff.redacted(),
            note: note.redacted(),
        },
        other => other.clone(),
    }
}

/// The event with its kind redacted.
pub fn redact_event(event: &EventEnvelope) -> EventEnvelope {
    EventEnvelope {
        kind: redact(&event.kind),
        ..event.clone()
    }
}

/// Whether `a` and `b` are copies of the same event, one of them perhaps the
/// redacted copy of the other.
pub fn same_event(a: &EventEnvelope, b: &EventEnvelope) -> bool {
    a == b
        || (is_redacted(&b.kind) && redact_event(a) == *b)
        || (is_redacted(&a.kind) && redact_event(b) == *a)
}

/// What to ship of `event` to `to`. `residency` is the ticket's set as the
/// sender knows it, `None` when it does not have the ticket; a creation
/// carries its own. `None` means the sender must not ship it (see the
/// module's doc): the receiver gets it from a region that can.
pub fn outgoing(
    event: &EventEnvelope,
    residency: Option<&BTreeSet<RegionId>>,
    to: &RegionId,
) -> Option<EventEnvelope> {
    match decide(event, residency, to) {
        Shipping::Full => Some(event.clone()),
        Shipping::Redacted => Some(redact_event(event)),
        Shipping::Withhold => None,
    }
}

/// How an event leaves for one region: [`outgoing`] without the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shipping {
    /// As it is stored here.
    Full,
    /// Its [`redact`]ed form.
    Redacted,
    /// Not from here (see [`outgoing`]).
    Withhold,
}

/// Decides how `event` leaves for `to`; the arguments are [`outgoing`]'s.
pub fn decide(
    event: &EventEnvelope,
    residency: Option<&BTreeSet<RegionId>>,
    to: &RegionId,
) -> Shipping {
    if !carries_text(&event.kind) {
        return Shipping::Full;
    }
    let residency = match &event.kind {
        EventKind::TicketCreated { ticket } => Some(&ticket.residency),
        _ => residency,
    };
    match residency {
        None => Shipping::Withhold,
        Some(set) if may_hold(set, to) => {
            if is_redacted(&event.kind) {
                Shipping::Withhold
            } else {
                Shipping::Full
            }
        }
        Some(_) => Shipping::Redacted,
    }
}

impl Ticket {
    /// The ticket without its subject, body and customer.
    pub fn redacted(&self) -> Ticket {
        Ticket {
            subject: String::new(),
            body: String::new(),
            customer: String::new(),
            ..self.clone()
        }
    }

    /// Whether this is a redacted copy: a real ticket always has a subject.
    pub fn is_redacted(&self) -> bool {
        self.subject.is_empty()
    }
}

impl Note {
    /// The note without its body and author: its id, ticket, region and
    /// time stay, so the note is counted and merged everywhere.
    pub fn redacted(&self) -> Note {
        Note {
            author: String::new(),
            body: String::new(),
            ..self.clone()
        }
    }
}

impl HandoffNote {
    /// The handoff note without its free text; the status it was written
    /// at, its deadline and whether Meridian wrote it stay.
    pub fn redacted(&self) -> HandoffNote {
        HandoffNote {
            last_action: String::new(),
            next_action: String::new(),
            text: String::new(),
            author: String::new(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Epoch, HlcTimestamp, NoteId, Status, TicketChanges};
    use jiff::Timestamp;

    fn region(name: &str) -> RegionId {
        RegionId::new(name).unwrap()
    }

    fn pinned() -> Ticket {
        let mut ticket = crate::ticket::tests::sample_ticket();
        ticket.residency = [region("us-east")].into();
        ticket
    }

    fn event(kind: EventKind) -> EventEnvelope {
        EventEnvelope {
            origin_region: region("us-east"),
            origin_seq: 3,
            ticket_id: pinned().id,
            epoch: Epoch::initial(0),
            hlc_time: HlcTimestamp(7),
            traceparent: None,
            actor: None,
            kind,
        }
    }

    fn note() -> Note {
        Note {
            id: NoteId::new_v7(Timestamp::UNIX_EPOCH, [2; 10]),
            ticket_id: pinned().id,
            region: region("us-east"),
            author: "ana".into(),
            body: "the customer's card number is on file".into(),
            created_at: Timestamp::UNIX_EPOCH,
            auto: false,
            visibility: crate::Visibility::Internal,
        }
    }

    fn offer() -> EventKind {
        let handoff = HandoffNote {
            current_status: Status::Open,
            last_action: "called them".into(),
            next_action: "call again".into(),
            deadline: None,
            text: "secret".into(),
            author: "ana".into(),
            auto: false,
        };
        EventKind::HandoffOffered {
            to: region("us-west"),
            handoff,
            note: note(),
        }
    }

    #[test]
    fn redaction_empties_every_text_and_keeps_the_envelope() {
        let created = event(EventKind::TicketCreated {
            ticket: Box::new(pinned()),
        });
        let redacted = redact_event(&created);
        let EventKind::TicketCreated { ticket } = &redacted.kind else {
            panic!("kind changed")
        };
        assert_eq!(
            (
                ticket.subject.as_str(),
                ticket.body.as_str(),
                ticket.customer.as_str()
            ),
            ("", "", "")
        );
        assert_eq!(ticket.owner, pinned().owner);
        assert_eq!(ticket.residency, pinned().residency);
        assert_eq!(
            (ticket.status, &ticket.tier, ticket.sla),
            (pinned().status, &pinned().tier, pinned().sla)
        );
        assert_eq!(
            (redacted.origin_seq, redacted.epoch, redacted.ticket_id),
            (3, created.epoch, created.ticket_id)
        );
        let json = redacted.kind.payload_json().unwrap();
        assert!(
            !json.contains("Printer") && !json.contains("fire") && !json.contains("acme"),
            "{json}"
        );

        for kind in [EventKind::NoteAdded { note: note() }, offer()] {
            let redacted = redact(&kind);
            let json = redacted.payload_json().unwrap();
            for text in ["card number", "ana", "called them", "call again", "secret"] {
                assert!(!json.contains(text), "{text} left in {json}");
            }
            assert!(is_redacted(&redacted) && !is_redacted(&kind));
            assert_eq!(redact(&redacted), redacted, "redaction is idempotent");
        }
        let update = EventKind::TicketUpdated {
            changes: TicketChanges {
                epoch: Epoch::initial(0),
                status: Some(Status::Open),
                ..TicketChanges::default()
            },
        };
        assert_eq!(redact(&update), update);
        assert!(!is_redacted(&update) && !carries_text(&update));
    }

    #[test]
    fn outgoing_ships_full_inside_redacted_outside_and_nothing_it_cannot_vouch_for() {
        let set: BTreeSet<RegionId> = [region("us-east"), region("us-west")].into();
        let (inside, outside) = (region("us-west"), region("eu-west"));
        let note = event(EventKind::NoteAdded { note: note() });
        assert_eq!(outgoing(&note, Some(&set), &inside), Some(note.clone()));
        assert_eq!(
            outgoing(&note, Some(&set), &outside),
            Some(redact_event(&note))
        );
        assert_eq!(
            outgoing(&note, Some(&BTreeSet::new()), &outside),
            Some(note.clone()),
            "unpinned goes anywhere"
        );
        assert_eq!(
            outgoing(&note, None, &outside),
            None,
            "unknown residency: withheld"
        );
        let copy = redact_event(&note);
        assert_eq!(
            outgoing(&copy, Some(&set), &inside),
            None,
            "a redacted copy never goes inside the set"
        );
        assert_eq!(outgoing(&copy, Some(&set), &outside), Some(copy.clone()));
        // A creation decides by its own residency, whatever the caller knows.
        let created = event(EventKind::TicketCreated {
            ticket: Box::new(pinned()),
        });
        assert_eq!(
            outgoing(&created, None, &region("us-east")),
            Some(created.clone())
        );
        assert_eq!(
            outgoing(&created, None, &outside),
            Some(redact_event(&created))
        );
        assert!(same_event(&note, &copy) && same_event(&copy, &note) && same_event(&note, &note));
        let mut other = copy.clone();
        other.origin_seq += 1;
        assert!(!same_event(&note, &other));
        assert_eq!(
            refusal(&set, &outside).unwrap(),
            "eu-west is outside the ticket's residency (us-east, us-west); its data may not move there"
        );
        assert_eq!(refusal(&set, &inside), None);
    }
}
