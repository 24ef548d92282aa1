//! The replication frame decoder: `v1::ReplicationFrame` → [`ReplicationMessage`],
//! and the encoders for the other direction.
//!
//! Frames come from another region over the network, so every field is
//! checked here before anything reaches the store, and a refusal names the
//! field by its path in the frame (`batch.events[3].payload_json.note.body`).
//! The decoder never panics, whatever the bytes; it is the target of the
//! replication fuzzer.
//!
//! What it checks of an event: every envelope field (region slug, sequence
//! number and epoch within the store's range, UUIDv7 ticket id, W3C
//! traceparent), a known kind whose JSON payload decodes, the payload's
//! text limits (the same ones a local write must pass), and that the
//! payload agrees with its envelope (ticket ids, the epoch of a change).
//! What it leaves to the store: anything that needs stored state (gaps,
//! duplicates, fencing).

use jiff::Timestamp;
use meridian_core::{self as core, EventEnvelope, EventKind, HlcTimestamp, RegionId};

use crate::{ConvertError, convert, timestamp_to_proto, v1};

type Result<T> = std::result::Result<T, ConvertError>;

/// The most events one batch may carry.
pub const BATCH_EVENTS_MAX: usize = 10_000;
/// The largest payload one event may carry, in bytes of JSON.
pub const PAYLOAD_BYTES_MAX: usize = 1024 * 1024;
/// The longest traceparent accepted (version 00 is 55 characters; later
/// versions may append fields).
pub const TRACEPARENT_CHARS_MAX: usize = 512;
/// Sequence numbers, epochs and HLC times are stored as signed 64-bit
/// integers: larger values could never be stored.
const STORED_INT_MAX: u64 = i64::MAX as u64;

/// A decoded replication frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// The first frame each way: the sender's region, its durable cursor of
    /// the receiver's log, and its own log head.
    Hello {
        region: RegionId,
        cursor: u64,
        head_seq: u64,
    },
    /// Events of the sender's own log: one origin, strictly ascending
    /// `origin_seq`, never empty.
    Batch(Vec<EventEnvelope>),
    /// The receiver's durable cursor of the sender's log.
    Ack { applied_seq: u64 },
    /// Send again from this sequence number (at least 1).
    Resend { from_seq: u64 },
    /// The sender's log head and clock.
    Heartbeat { head_seq: u64, sent_at: Timestamp },
}

impl ReplicationMessage {
    /// The frame's name, for logs and protocol errors.
    pub fn name(&self) -> &'static str {
        match self {
            ReplicationMessage::Hello { .. } => "hello",
            ReplicationMessage::Batch(_) => "batch",
            ReplicationMessage::Ack { .. } => "ack",
            ReplicationMessage::Resend { .. } => "resend",
            ReplicationMessage::Heartbeat { .. } => "heartbeat",
        }
    }
}

/// Decodes and checks one frame.
pub fn frame_from_proto(frame: v1::ReplicationFrame) -> Result<ReplicationMessage> {
    use v1::replication_frame::Frame;
    match frame.frame {
        None => Err(ConvertError::new(
            "frame",
            "is required: one of hello, batch, ack, resend, heartbeat",
        )),
        Some(Frame::Hello(hello)) => {
            if hello.region.is_empty() {
                return Err(ConvertError::new("hello.region", "is required"));
            }
            Ok(ReplicationMessage::Hello {
                region: convert::region_id("hello.region", &hello.region)?,
                cursor: stored_int("hello.cursor", hello.cursor)?,
                head_seq: stored_int("hello.head_seq", hello.head_seq)?,
            })
        }
        Some(Frame::Batch(batch)) => {
            batch_from_proto("batch", &batch).map(ReplicationMessage::Batch)
        }
        Some(Frame::Ack(ack)) => Ok(ReplicationMessage::Ack {
            applied_seq: stored_int("ack.applied_seq", ack.applied_seq)?,
        }),
        Some(Frame::Resend(resend)) => {
            let from_seq = stored_int("resend.from_seq", resend.from_seq)?;
            if from_seq == 0 {
                return Err(ConvertError::new("resend.from_seq", "must be at least 1"));
            }
            Ok(ReplicationMessage::Resend { from_seq })
        }
        Some(Frame::Heartbeat(heartbeat)) => {
            let Some(sent_at) = &heartbeat.sent_at else {
                return Err(ConvertError::new("heartbeat.sent_at", "is required"));
            };
            Ok(ReplicationMessage::Heartbeat {
                head_seq: stored_int("heartbeat.head_seq", heartbeat.head_seq)?,
                sent_at: convert::timestamp_from_proto("heartbeat.sent_at", sent_at)?,
            })
        }
    }
}

/// Decodes a batch: at least one and at most [`BATCH_EVENTS_MAX`] events,
/// all of one origin, in strictly ascending `origin_seq` (a hole is allowed:
/// the store answers it with a gap, and the receiver asks for a resend).
pub fn batch_from_proto(field: &str, batch: &v1::EventBatch) -> Result<Vec<EventEnvelope>> {
    let events_field = format!("{field}.events");
    if batch.events.is_empty() {
        return Err(ConvertError::new(events_field, "must not be empty"));
    }
    if batch.events.len() > BATCH_EVENTS_MAX {
        return Err(ConvertError::new(
            events_field,
            format!(
                "has {} events; the limit is {BATCH_EVENTS_MAX}",
                batch.events.len()
            ),
        ));
    }
    let mut events: Vec<EventEnvelope> = Vec::with_capacity(batch.events.len());
    for (i, raw) in batch.events.iter().enumerate() {
        let prefix = format!("{events_field}[{i}]");
        let event = event_from_proto(&prefix, raw)?;
        if let Some(previous) = events.last() {
            if event.origin_region != previous.origin_region {
                return Err(ConvertError::new(
                    format!("{prefix}.origin_region"),
                    format!(
                        "is {}, but the batch is of {}: a batch carries one origin",
                        event.origin_region, previous.origin_region
                    ),
                ));
            }
            if event.origin_seq <= previous.origin_seq {
                return Err(ConvertError::new(
                    format!("{prefix}.origin_seq"),
                    format!(
                        "{} follows {}: a batch is in strictly ascending order",
                        event.origin_seq, previous.origin_seq
                    ),
                ));
            }
        }
        events.push(event);
    }
    Ok(events)
}

/// Decodes one replicated event; `field` is its path in the frame, the
/// prefix of every field name in an error.
pub fn event_from_proto(field: &str, event: &v1::Event) -> Result<EventEnvelope> {
    let at = |name: &str| format!("{field}.{name}");
    if event.origin_region.is_empty() {
        return Err(ConvertError::new(at("origin_region"), "is required"));
    }
    let origin_region = convert::region_id(&at("origin_region"), &event.origin_region)?;
    let origin_seq = stored_int(&at("origin_seq"), event.origin_seq)?;
    if origin_seq == 0 {
        return Err(ConvertError::new(at("origin_seq"), "must be at least 1"));
    }
    let ticket_id = convert::ticket_id(&at("ticket_id"), &event.ticket_id)?;
    let epoch = core::Epoch::from_raw(stored_int(&at("epoch"), event.epoch)?);
    let hlc_time = HlcTimestamp(stored_int(&at("hlc_time"), event.hlc_time)?);
    let traceparent = if event.traceparent.is_empty() {
        None
    } else {
        check_traceparent(&event.traceparent)
            .map_err(|reason| ConvertError::new(at("traceparent"), reason))?;
        Some(event.traceparent.clone())
    };
    let actor = actor_from_proto(field, &event.actor_subject, &event.actor_role)?;
    let kind = kind_from_proto(field, &event.kind, &event.payload_json)?;
    check_payload(field, &kind, ticket_id, epoch)?;
    Ok(EventEnvelope {
        origin_region,
        origin_seq,
        ticket_id,
        epoch,
        hlc_time,
        traceparent,
        actor,
        kind,
    })
}

/// The longest actor subject a log stores (a token's `sub`).
pub const ACTOR_SUBJECT_CHARS_MAX: usize = 256;
/// The longest actor role (`admin`, `system`, ...).
pub const ACTOR_ROLE_CHARS_MAX: usize = 32;

/// Both parts or neither: an event from before actors were recorded has
/// none, and a half-named actor is a sender's bug.
fn actor_from_proto(field: &str, subject: &str, role: &str) -> Result<Option<core::Actor>> {
    let at = |name: &str| format!("{field}.{name}");
    match (subject.is_empty(), role.is_empty()) {
        (true, true) => return Ok(None),
        (false, true) => {
            return Err(ConvertError::new(
                at("actor_role"),
                "is required with actor_subject",
            ));
        }
        (true, false) => {
            return Err(ConvertError::new(
                at("actor_subject"),
                "is required with actor_role",
            ));
        }
        (false, false) => {}
    }
    for (name, value, max) in [
        ("actor_subject", subject, ACTOR_SUBJECT_CHARS_MAX),
        ("actor_role", role, ACTOR_ROLE_CHARS_MAX),
    ] {
        if value.chars().count() > max {
            return Err(ConvertError::new(
                at(name),
                format!("is longer than {max} characters"),
            ));
        }
        if let Some(bad) = value.chars().find(|c| c.is_control()) {
            return Err(ConvertError::new(
                at(name),
                format!("contains the control character {bad:?}"),
            ));
        }
    }
    Ok(Some(core::Actor::new(subject, role)))
}

fn kind_from_proto(field: &str, kind: &str, payload: &str) -> Result<EventKind> {
    if kind.is_empty() {
        return Err(ConvertError::new(format!("{field}.kind"), "is required"));
    }
    if payload.len() > PAYLOAD_BYTES_MAX {
        return Err(ConvertError::new(
            format!("{field}.payload_json"),
            format!(
                "is {} bytes; the limit is {PAYLOAD_BYTES_MAX}",
                payload.len()
            ),
        ));
    }
    EventKind::from_parts(kind, payload).map_err(|e| {
        let reason = e.to_string();
        // The kind is read first: an unknown one is the kind's fault, any
        // other error the payload's.
        if reason.starts_with("unknown variant") {
            ConvertError::new(
                format!("{field}.kind"),
                format!("{kind:?} is not an event kind this region knows"),
            )
        } else {
            ConvertError::new(
                format!("{field}.payload_json"),
                format!("is not a valid {kind} payload: {reason}"),
            )
        }
    })
}

/// Checks a payload's content the way a local write would have been
/// checked, and that it agrees with its envelope.
fn check_payload(
    field: &str,
    kind: &EventKind,
    ticket_id: core::TicketId,
    epoch: core::Epoch,
) -> Result<()> {
    let payload = format!("{field}.payload_json");
    let named = |inner: &str| format!("{payload}.{inner}");
    let same_ticket = |inner: &str, carried: core::TicketId| {
        if carried == ticket_id {
            Ok(())
        } else {
            Err(ConvertError::new(
                named(inner),
                format!("is {carried}, but the event is about ticket {ticket_id}"),
            ))
        }
    };
    // A redacted copy (residency, see `meridian_core::residency`) has its
    // text emptied: all of it, or it is not one. Its other fields are
    // checked like any event's.
    let redacted = core::residency::is_redacted(kind);
    if redacted && core::residency::redact(kind) != *kind {
        return Err(ConvertError::new(
            payload.clone(),
            "is partly redacted: a redacted event has all of its text emptied",
        ));
    }
    match kind {
        EventKind::TicketCreated { ticket } => {
            same_ticket("ticket.id", ticket.id)?;
            if ticket.owner.epoch != epoch {
                return Err(ConvertError::new(
                    named("ticket.owner.epoch"),
                    format!(
                        "is {}, but the event was written at epoch {epoch}",
                        ticket.owner.epoch
                    ),
                ));
            }
            // The redacted copy's text is checked as a placeholder would be.
            let text = |value: &String| {
                if redacted {
                    "redacted".to_owned()
                } else {
                    value.clone()
                }
            };
            let mut as_new = ticket.as_new();
            as_new.subject = text(&ticket.subject);
            as_new.customer = text(&ticket.customer);
            as_new
                .validate()
                .map_err(|e| core_error(&named("ticket"), e))?;
            if let Some(assignee) = &ticket.assignee {
                core::ticket::check_assignee(assignee)
                    .map_err(|e| core_error(&named("ticket"), e))?;
            }
        }
        EventKind::NoteAdded { note } => {
            same_ticket("note.ticket_id", note.ticket_id)?;
            check_note(&named("note"), note, redacted)?;
        }
        EventKind::HandoffOffered { handoff, note, .. } => {
            same_ticket("note.ticket_id", note.ticket_id)?;
            check_note(&named("note"), note, redacted)?;
            if !redacted {
                handoff
                    .validate()
                    .map_err(|e| core_error(&named("handoff"), e))?;
            }
        }
        EventKind::HandoffAccepted {
            offer_seq,
            previous_epoch,
            ..
        } => {
            if *offer_seq == 0 || *offer_seq > STORED_INT_MAX {
                return Err(ConvertError::new(
                    named("offer_seq"),
                    format!("{offer_seq} is not a sequence number"),
                ));
            }
            if *previous_epoch >= epoch {
                return Err(ConvertError::new(
                    named("previous_epoch"),
                    format!(
                        "is {previous_epoch}, but an acceptance moves to a later epoch than {epoch}"
                    ),
                ));
            }
        }
        _ => {}
    }
    if let Some(changes) = kind.owner_changes() {
        if changes.epoch != epoch {
            return Err(ConvertError::new(
                named("changes.epoch"),
                format!(
                    "is {}, but the event was written at epoch {epoch}",
                    changes.epoch
                ),
            ));
        }
        if changes.is_empty() {
            return Err(ConvertError::new(
                named("changes"),
                "names no field to change",
            ));
        }
        if let Some(Some(assignee)) = &changes.assignee {
            core::ticket::check_assignee(assignee).map_err(|e| core_error(&named("changes"), e))?;
        }
    }
    Ok(())
}

fn check_note(field: &str, note: &core::Note, redacted: bool) -> Result<()> {
    core::NoteId::from_uuid(note.id.as_uuid()).map_err(|e| core_error(field, e))?;
    if redacted {
        return Ok(());
    }
    note.validate().map_err(|e| core_error(field, e))
}

/// A core validation error under `prefix`: `prefix.field: reason`.
fn core_error(prefix: &str, error: core::Error) -> ConvertError {
    match error {
        core::Error::InvalidField { field, reason } => {
            // Handoff notes name their fields `note.x` in the core; inside a
            // payload the prefix already says which note.
            let field = field.strip_prefix("note.").unwrap_or(field);
            ConvertError::new(format!("{prefix}.{field}"), reason)
        }
        other => ConvertError::new(prefix, other.to_string()),
    }
}

fn stored_int(field: &str, value: u64) -> Result<u64> {
    if value > STORED_INT_MAX {
        return Err(ConvertError::new(
            field,
            format!("{value} is larger than {STORED_INT_MAX}"),
        ));
    }
    Ok(value)
}

/// A W3C trace context `traceparent`, by the one parser
/// (`meridian_core::traceparent`), within the stored length.
fn check_traceparent(value: &str) -> std::result::Result<(), String> {
    if value.len() > TRACEPARENT_CHARS_MAX {
        return Err(format!(
            "is {} characters; the limit is {TRACEPARENT_CHARS_MAX}",
            value.len()
        ));
    }
    core::traceparent::Traceparent::parse(value)
        .map(drop)
        .map_err(|error| format!("{}: {error}", core::echo(value)))
}

// ---- encoding ----

pub fn hello_to_proto(region: &RegionId, cursor: u64, head_seq: u64) -> v1::ReplicationFrame {
    frame(v1::replication_frame::Frame::Hello(v1::Hello {
        region: region.to_string(),
        cursor,
        head_seq,
    }))
}

/// A batch of events already converted with [`convert::event_to_proto`].
pub fn batch_to_proto(events: Vec<v1::Event>) -> v1::ReplicationFrame {
    frame(v1::replication_frame::Frame::Batch(v1::EventBatch {
        events,
    }))
}

pub fn ack_to_proto(applied_seq: u64) -> v1::ReplicationFrame {
    frame(v1::replication_frame::Frame::Ack(v1::Ack { applied_seq }))
}

pub fn resend_to_proto(from_seq: u64) -> v1::ReplicationFrame {
    frame(v1::replication_frame::Frame::Resend(v1::Resend {
        from_seq,
    }))
}

pub fn heartbeat_to_proto(head_seq: u64, sent_at: Timestamp) -> v1::ReplicationFrame {
    frame(v1::replication_frame::Frame::Heartbeat(v1::Heartbeat {
        head_seq,
        sent_at: Some(timestamp_to_proto(sent_at)),
    }))
}

fn frame(frame: v1::replication_frame::Frame) -> v1::ReplicationFrame {
    v1::ReplicationFrame { frame: Some(frame) }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::convert::event_to_proto;

    fn region(name: &str) -> RegionId {
        RegionId::new(name).unwrap()
    }

    fn ticket_id(n: u8) -> core::TicketId {
        core::TicketId::new_v7(
            Timestamp::from_millisecond(1_750_000_000_000).unwrap(),
            [n; 10],
        )
    }

    fn note(ticket: core::TicketId) -> core::Note {
        core::Note {
            id: core::NoteId::new_v7(
                Timestamp::from_millisecond(1_750_000_000_500).unwrap(),
                [9; 10],
            ),
            ticket_id: ticket,
            region: region("eu-west"),
            author: "ana".into(),
            body: "called the customer".into(),
            created_at: Timestamp::from_millisecond(1_750_000_000_500).unwrap(),
            auto: false,
            visibility: meridian_core::Visibility::Internal,
        }
    }

    fn created(seq: u64) -> EventEnvelope {
        let id = ticket_id(seq as u8);
        let at = Timestamp::from_millisecond(1_750_000_000_000).unwrap();
        let ticket = core::Ticket {
            id,
            subject: "VPN down".into(),
            body: "since 9am".into(),
            customer: "acme".into(),
            tier: core::Tier::new("premium").unwrap(),
            skills: BTreeSet::from([core::Skill::new("networking").unwrap()]),
            language: "en".into(),
            residency: BTreeSet::new(),
            status: core::Status::New,
            assignee: None,
            priority: core::Priority::High,
            owner: core::Ownership {
                owner_region: region("eu-west"),
                epoch: core::Epoch::initial(1),
            },
            handoff_to: None,
            sla: core::SlaDeadlines::default(),
            created_at: at,
            updated_at: at,
        };
        EventEnvelope {
            origin_region: region("eu-west"),
            origin_seq: seq,
            ticket_id: id,
            epoch: core::Epoch::initial(1),
            hlc_time: HlcTimestamp::new(1_750_000_000_000, 3),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            actor: None,
            kind: EventKind::TicketCreated {
                ticket: Box::new(ticket),
            },
        }
    }

    fn noted(seq: u64, ticket: core::TicketId) -> EventEnvelope {
        EventEnvelope {
            origin_region: region("eu-west"),
            origin_seq: seq,
            ticket_id: ticket,
            epoch: core::Epoch::initial(1),
            hlc_time: HlcTimestamp::new(1_750_000_000_100, 0),
            traceparent: None,
            actor: None,
            kind: EventKind::NoteAdded { note: note(ticket) },
        }
    }

    fn batch(events: &[EventEnvelope]) -> v1::ReplicationFrame {
        batch_to_proto(events.iter().map(event_to_proto).collect())
    }

    /// The name of the field a bad frame is refused for.
    fn refused(frame: v1::ReplicationFrame) -> String {
        frame_from_proto(frame).unwrap_err().field
    }

    #[test]
    fn every_frame_round_trips() {
        let one = created(1);
        let two = noted(2, one.ticket_id);
        let at = Timestamp::from_millisecond(1_750_000_123_456).unwrap();
        let cases = [
            (
                hello_to_proto(&region("eu-west"), 7, 9),
                ReplicationMessage::Hello {
                    region: region("eu-west"),
                    cursor: 7,
                    head_seq: 9,
                },
            ),
            (
                batch(&[one.clone(), two.clone()]),
                ReplicationMessage::Batch(vec![one, two]),
            ),
            (
                ack_to_proto(12),
                ReplicationMessage::Ack { applied_seq: 12 },
            ),
            (
                resend_to_proto(13),
                ReplicationMessage::Resend { from_seq: 13 },
            ),
            (
                heartbeat_to_proto(14, at),
                ReplicationMessage::Heartbeat {
                    head_seq: 14,
                    sent_at: at,
                },
            ),
        ];
        for (frame, expected) in cases {
            assert_eq!(frame_from_proto(frame).unwrap(), expected);
        }
    }

    #[test]
    fn an_actor_travels_with_its_event() {
        let mut event = created(1);
        event.actor = Some(core::Actor::new("ana", "agent"));
        let back = event_from_proto("e", &event_to_proto(&event)).unwrap();
        assert_eq!(back, event);
        let none = event_from_proto("e", &event_to_proto(&created(2))).unwrap();
        assert_eq!(none.actor, None, "an event from before actors has none");
    }

    #[test]
    fn bad_envelope_fields_are_named() {
        let good = event_to_proto(&created(1));
        type Spoil = Box<dyn Fn(&mut v1::Event)>;
        let cases: Vec<(&str, Spoil)> = vec![
            (
                "batch.events[0].origin_region",
                Box::new(|e| e.origin_region = "EU West".into()),
            ),
            (
                "batch.events[0].origin_region",
                Box::new(|e| e.origin_region.clear()),
            ),
            ("batch.events[0].origin_seq", Box::new(|e| e.origin_seq = 0)),
            (
                "batch.events[0].origin_seq",
                Box::new(|e| e.origin_seq = u64::MAX),
            ),
            (
                "batch.events[0].ticket_id",
                Box::new(|e| e.ticket_id = "not-a-uuid".into()),
            ),
            (
                "batch.events[0].ticket_id",
                Box::new(|e| e.ticket_id = "67e55044-10b1-426f-9247-bb680e5fe0c8".into()),
            ),
            ("batch.events[0].epoch", Box::new(|e| e.epoch = u64::MAX)),
            (
                "batch.events[0].actor_role",
                Box::new(|e| e.actor_subject = "ana".into()),
            ),
            (
                "batch.events[0].actor_subject",
                Box::new(|e| {
                    e.actor_subject = "x".repeat(ACTOR_SUBJECT_CHARS_MAX + 1);
                    e.actor_role = "agent".into();
                }),
            ),
            (
                "batch.events[0].actor_role",
                Box::new(|e| {
                    e.actor_subject = "ana".into();
                    e.actor_role = "ag\nent".into();
                }),
            ),
            (
                "batch.events[0].hlc_time",
                Box::new(|e| e.hlc_time = 1 << 63),
            ),
            (
                "batch.events[0].traceparent",
                Box::new(|e| e.traceparent = "00-zz".into()),
            ),
            (
                "batch.events[0].traceparent",
                Box::new(|e| e.traceparent = format!("00-{}-b7ad6b7169203331-01", "0".repeat(32))),
            ),
            (
                "batch.events[0].kind",
                Box::new(|e| e.kind = "ticket_exploded".into()),
            ),
            ("batch.events[0].kind", Box::new(|e| e.kind.clear())),
            (
                "batch.events[0].payload_json",
                Box::new(|e| e.payload_json = "{not json".into()),
            ),
            (
                "batch.events[0].payload_json",
                Box::new(|e| e.payload_json = "{\"ticket\": 5}".into()),
            ),
            (
                "batch.events[0].payload_json",
                Box::new(|e| e.payload_json = " ".repeat(PAYLOAD_BYTES_MAX + 1)),
            ),
            (
                "batch.events[0].payload_json.ticket.owner.epoch",
                Box::new(|e| e.epoch += 1),
            ),
        ];
        for (field, spoil) in cases {
            let mut event = good.clone();
            spoil(&mut event);
            assert_eq!(refused(batch_to_proto(vec![event])), field);
        }
    }

    #[test]
    fn payloads_are_checked_like_local_writes() {
        let ticket = created(1);
        let EventKind::TicketCreated { ticket: t } = &ticket.kind else {
            unreachable!()
        };
        let mut blank_subject = ticket.clone();
        blank_subject.kind = EventKind::TicketCreated {
            ticket: Box::new(core::Ticket {
                subject: " ".into(),
                ..(**t).clone()
            }),
        };
        assert_eq!(
            refused(batch(&[blank_subject])),
            "batch.events[0].payload_json.ticket.subject"
        );

        let mut other_ticket = ticket.clone();
        other_ticket.ticket_id = ticket_id(99);
        assert_eq!(
            refused(batch(&[other_ticket])),
            "batch.events[0].payload_json.ticket.id"
        );

        let mut empty_note = noted(2, ticket.ticket_id);
        if let EventKind::NoteAdded { note } = &mut empty_note.kind {
            note.body = "   ".into();
        }
        assert_eq!(
            refused(batch(&[empty_note])),
            "batch.events[0].payload_json.note.body"
        );

        let stale_change = EventEnvelope {
            kind: EventKind::TicketUpdated {
                changes: core::TicketChanges {
                    epoch: core::Epoch::initial(2),
                    status: Some(core::Status::Open),
                    ..Default::default()
                },
            },
            ..noted(3, ticket.ticket_id)
        };
        assert_eq!(
            refused(batch(&[stale_change])),
            "batch.events[0].payload_json.changes.epoch"
        );

        let empty_change = EventEnvelope {
            kind: EventKind::TicketUpdated {
                changes: core::TicketChanges {
                    epoch: core::Epoch::initial(1),
                    ..Default::default()
                },
            },
            ..noted(3, ticket.ticket_id)
        };
        assert_eq!(
            refused(batch(&[empty_change])),
            "batch.events[0].payload_json.changes"
        );

        let backwards = EventEnvelope {
            kind: EventKind::HandoffAccepted {
                from: region("us-east"),
                offer_seq: 4,
                previous_epoch: core::Epoch::initial(1),
            },
            ..noted(3, ticket.ticket_id)
        };
        assert_eq!(
            refused(batch(&[backwards])),
            "batch.events[0].payload_json.previous_epoch"
        );
    }

    /// Redacted copies (residency) decode as they are; half-redacted ones
    /// are refused, and a redacted copy still passes every other check.
    #[test]
    fn redacted_copies_decode_and_half_redacted_ones_do_not() {
        let mut pinned = created(1);
        if let EventKind::TicketCreated { ticket } = &mut pinned.kind {
            ticket.residency = BTreeSet::from([region("eu-west")]);
        }
        let events = [
            core::residency::redact_event(&pinned),
            core::residency::redact_event(&noted(2, pinned.ticket_id)),
        ];
        let Ok(ReplicationMessage::Batch(decoded)) = frame_from_proto(batch(&events)) else {
            panic!("refused")
        };
        assert_eq!(decoded, events);
        assert!(
            decoded
                .iter()
                .all(|e| core::residency::is_redacted(&e.kind))
        );

        let mut half = events[0].clone();
        if let EventKind::TicketCreated { ticket } = &mut half.kind {
            ticket.body = "still here".into();
        }
        assert_eq!(refused(batch(&[half])), "batch.events[0].payload_json");
        let mut half_note = events[1].clone();
        if let EventKind::NoteAdded { note } = &mut half_note.kind {
            note.author = "ana".into();
        }
        assert_eq!(refused(batch(&[half_note])), "batch.events[0].payload_json");
        let mut moved = events[1].clone();
        moved.ticket_id = ticket_id(42);
        assert_eq!(
            refused(batch(&[moved])),
            "batch.events[0].payload_json.note.ticket_id"
        );
    }

    #[test]
    fn batches_are_one_origin_ascending_and_bounded() {
        let one = created(1);
        let two = noted(2, one.ticket_id);
        assert_eq!(
            refused(batch(&[two.clone(), one.clone()])),
            "batch.events[1].origin_seq"
        );
        assert_eq!(
            refused(batch(&[one.clone(), one.clone()])),
            "batch.events[1].origin_seq"
        );
        let foreign = EventEnvelope {
            origin_region: region("apac-south"),
            ..two.clone()
        };
        assert_eq!(
            refused(batch(&[one.clone(), foreign])),
            "batch.events[1].origin_region"
        );
        assert_eq!(refused(batch(&[])), "batch.events");
        let many: Vec<v1::Event> = (1..=BATCH_EVENTS_MAX as u64 + 1)
            .map(|seq| event_to_proto(&noted(seq, one.ticket_id)))
            .collect();
        assert_eq!(refused(batch_to_proto(many)), "batch.events");
        // A hole is the store's to find (and the receiver's to ask again for).
        let hole = noted(5, one.ticket_id);
        assert!(frame_from_proto(batch(&[one, hole])).is_ok());
    }

    #[test]
    fn bad_control_frames_are_named() {
        assert_eq!(refused(v1::ReplicationFrame { frame: None }), "frame");
        assert_eq!(
            refused(hello_to_proto(&region("eu-west"), 0, 0).tap_hello(|h| h.region.clear())),
            "hello.region"
        );
        assert_eq!(
            refused(hello_to_proto(&region("eu-west"), u64::MAX, 0)),
            "hello.cursor"
        );
        assert_eq!(refused(resend_to_proto(0)), "resend.from_seq");
        let no_time = frame(v1::replication_frame::Frame::Heartbeat(v1::Heartbeat {
            head_seq: 1,
            sent_at: None,
        }));
        assert_eq!(refused(no_time), "heartbeat.sent_at");
        let bad_time = frame(v1::replication_frame::Frame::Heartbeat(v1::Heartbeat {
            head_seq: 1,
            sent_at: Some(prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            }),
        }));
        assert_eq!(refused(bad_time), "heartbeat.sent_at");
    }

    #[test]
    fn traceparents() {
        assert!(
            check_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").is_ok()
        );
        assert!(
            check_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra")
                .is_ok()
        );
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert!(check_traceparent(bad).is_err(), "{bad:?}");
        }
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn arbitrary_bytes_never_panic() {
        use prost::Message;
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let good = batch(&[created(1)]).encode_to_vec();
        for round in 0..2_000 {
            let mut bytes = good.clone();
            for _ in 0..(round % 8 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % bytes.len();
                bytes[i] = (seed >> 32) as u8;
            }
            if let Ok(frame) = v1::ReplicationFrame::decode(bytes.as_slice()) {
                let _ = frame_from_proto(frame);
            }
        }
    }

    trait TapHello {
        fn tap_hello(self, f: impl FnOnce(&mut v1::Hello)) -> Self;
    }

    impl TapHello for v1::ReplicationFrame {
        fn tap_hello(mut self, f: impl FnOnce(&mut v1::Hello)) -> Self {
            if let Some(v1::replication_frame::Frame::Hello(hello)) = &mut self.frame {
                f(hello);
            }
            self
        }
    }
}
