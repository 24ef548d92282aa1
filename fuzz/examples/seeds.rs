//! Writes the committed seed corpora of `request_validation` and
//! `replication_frame`: a handful of small valid encodings of each message,
//! so the fuzzers start from inputs that get past prost and the first
//! checks. Run from `fuzz/`: `cargo +nightly run --example seeds`.
//! `rules_parse`'s seeds are the repository's example rules files.

use std::{collections::BTreeSet, fs, path::Path};

use jiff::Timestamp;
use meridian_core::{
    self as core, Epoch, EventEnvelope, EventKind, HandoffNote, HlcTimestamp, Note, NoteId, Ownership, RegionId, Ticket,
    TicketChanges, TicketId,
};
use meridian_proto::{convert, replication, v1};
use prost::Message;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn at(second: i64) -> Result<Timestamp> {
    Ok(Timestamp::from_second(1_750_000_000 + second)?)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join(name), bytes)?;
    Ok(())
}

/// A request seed: the selector byte `request_validation` reads first, then
/// the encoding.
fn request(dir: &Path, name: &str, which: u8, message: &impl Message) -> Result<()> {
    let mut bytes = vec![which];
    message.encode(&mut bytes)?;
    write(dir, name, &bytes)
}

fn requests(dir: &Path) -> Result<()> {
    let id = TicketId::new_v7(at(0)?, [7; 10]).to_string();
    let create = v1::CreateTicketRequest {
        subject: "VPN down".into(),
        body: "since 9am".into(),
        customer: "acme".into(),
        tier: "premium".into(),
        skills: vec!["networking".into()],
        language: "en".into(),
        residency: vec!["eu-west".into(), "us-east".into()],
        priority: v1::Priority::Urgent.into(),
        idempotency_key: String::new(),
    };
    request(dir, "create", 0, &create)?;
    let minimal = v1::CreateTicketRequest { subject: "s".into(), customer: "c".into(), ..Default::default() };
    request(dir, "create-minimal", 0, &minimal)?;
    let update = v1::UpdateTicketRequest {
        ticket_id: id.clone(),
        status: Some(v1::Status::Open.into()),
        assignee: Some("ana".into()),
        priority: Some(v1::Priority::Low.into()),
        ..Default::default()
    };
    request(dir, "update", 1, &update)?;
    let unassign = v1::UpdateTicketRequest { ticket_id: id.clone(), clear_assignee: true, ..Default::default() };
    request(dir, "update-unassign", 1, &unassign)?;
    let note = v1::AddNoteRequest { ticket_id: id.clone(), author: "ana".into(), body: "called the customer".into(), visibility: 0, note_id: String::new() };
    request(dir, "note", 2, &note)?;
    let handoff = v1::HandoffRequest {
        ticket_id: id.clone(),
        to_region: "us-east".into(),
        note: Some(v1::HandoffNote {
            current_status: v1::Status::Open.into(),
            last_action: "restarted the tunnel".into(),
            next_action: "check the logs".into(),
            deadline: Some(convert::timestamp_to_proto(at(3_600)?)),
            text: "customer is waiting".into(),
            author: "ana".into(),
        }),
    };
    request(dir, "handoff", 3, &handoff)?;
    // The longest text a handoff note may have, which leaves no room for
    // the status and actions the note is rendered with.
    let mut long = handoff.clone();
    if let Some(note) = &mut long.note {
        note.text = "x".repeat(core::note::NOTE_BODY_BYTES_MAX);
    }
    request(dir, "handoff-longest-text", 3, &long)?;
    let list = v1::ListTicketsRequest {
        status: v1::Status::Open.into(),
        owner_region: "eu-west".into(),
        assignee: "ana".into(),
        tier: "premium".into(),
        page_size: 20,
        page_token: id.clone(),
        sla_at_risk: true,
    };
    request(dir, "list", 4, &list)?;
    request(dir, "get", 5, &v1::GetTicketRequest { ticket_id: id.clone() })?;
    let watch = v1::WatchEventsRequest { scope: Some(v1::watch_events_request::Scope::Region("eu-west".into())), after_seq: 3 };
    request(dir, "watch-region", 6, &watch)?;
    let watch = v1::WatchEventsRequest { scope: Some(v1::watch_events_request::Scope::TicketId(id)), after_seq: 0 };
    request(dir, "watch-ticket", 6, &watch)
}

fn envelope(seq: u64, ticket_id: TicketId, epoch: Epoch, kind: EventKind) -> Result<EventEnvelope> {
    Ok(EventEnvelope {
        origin_region: RegionId::new("eu-west")?,
        origin_seq: seq,
        ticket_id,
        epoch,
        hlc_time: HlcTimestamp::new(1_750_000_000_000 + seq, 0),
        traceparent: (seq == 1).then(|| "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
        actor: None,
        kind,
    })
}

fn frames(dir: &Path) -> Result<()> {
    let eu = RegionId::new("eu-west")?;
    let us = RegionId::new("us-east")?;
    let id = TicketId::new_v7(at(0)?, [7; 10]);
    let epoch = Epoch::initial(1);
    let ticket = Ticket {
        id,
        subject: "VPN down".into(),
        body: "since 9am".into(),
        customer: "acme".into(),
        tier: core::Tier::new("premium")?,
        skills: BTreeSet::from([core::Skill::new("networking")?]),
        language: "en".into(),
        residency: BTreeSet::from([eu.clone(), us.clone()]),
        status: core::Status::New,
        assignee: None,
        priority: core::Priority::High,
        owner: Ownership::new(eu.clone(), 1, epoch)?,
        handoff_to: None,
        sla: core::SlaDeadlines::default(),
        created_at: at(0)?,
        updated_at: at(0)?,
    };
    let note = |n: u8, body: &str| -> Result<Note> {
        Ok(Note {
            id: NoteId::new_v7(at(i64::from(n))?, [n; 10]),
            ticket_id: id,
            region: eu.clone(),
            author: "ana".into(),
            body: body.into(),
            created_at: at(i64::from(n))?,
            auto: false,
            visibility: meridian_core::Visibility::Internal,
        })
    };
    let handoff = HandoffNote {
        current_status: core::Status::Open,
        last_action: "restarted the tunnel".into(),
        next_action: "check the logs".into(),
        deadline: Some(at(3_600)?),
        text: "customer is waiting".into(),
        author: "ana".into(),
        auto: false,
    };
    let events = [
        envelope(1, id, epoch, EventKind::TicketCreated { ticket: Box::new(ticket) })?,
        envelope(2, id, epoch, EventKind::NoteAdded { note: note(2, "called the customer")? })?,
        envelope(
            3,
            id,
            epoch,
            EventKind::TicketUpdated {
                changes: TicketChanges {
                    epoch,
                    status: Some(core::Status::Open),
                    assignee: Some(Some("ana".into())),
                    ..Default::default()
                },
            },
        )?,
        envelope(4, id, epoch, EventKind::TicketUpdated { changes: TicketChanges { epoch, assignee: Some(None), ..Default::default() } })?,
        envelope(5, id, epoch, EventKind::HandoffOffered { to: us.clone(), handoff, note: note(5, "handing over")? })?,
        envelope(6, id, epoch, EventKind::HandoffRefused { to: us.clone(), reason: "off shift".into() })?,
    ];
    let proto: Vec<v1::Event> = events.iter().map(convert::event_to_proto).collect();
    write(dir, "batch-ticket-life", &replication::batch_to_proto(proto.clone()).encode_to_vec())?;
    write(dir, "batch-one", &replication::batch_to_proto(proto[..1].to_vec()).encode_to_vec())?;
    // An acceptance in the target's log, at the epoch it mints.
    let accepted = EventEnvelope {
        origin_region: us.clone(),
        ..envelope(1, id, Epoch::from_raw(epoch.raw() + core::EPOCH_STRIDE + 1), EventKind::HandoffAccepted {
            from: eu.clone(),
            offer_seq: 5,
            previous_epoch: epoch,
        })?
    };
    let taken = EventEnvelope {
        origin_region: us.clone(),
        ..envelope(2, id, Epoch::from_raw(epoch.raw() + 2 * core::EPOCH_STRIDE + 1), EventKind::TakenOver {
            from: eu.clone(),
            fencing_token: 42,
            previous_epoch: epoch,
            through_seq: 4,
        })?
    };
    let moves = vec![convert::event_to_proto(&accepted), convert::event_to_proto(&taken)];
    write(dir, "batch-ownership", &replication::batch_to_proto(moves).encode_to_vec())?;
    write(dir, "hello", &replication::hello_to_proto(&eu, 3, 6).encode_to_vec())?;
    write(dir, "ack", &replication::ack_to_proto(6).encode_to_vec())?;
    write(dir, "resend", &replication::resend_to_proto(4).encode_to_vec())?;
    write(dir, "heartbeat", &replication::heartbeat_to_proto(6, at(10)?).encode_to_vec())
}

fn main() -> Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    requests(&corpus.join("request_validation"))?;
    frames(&corpus.join("replication_frame"))?;
    println!("seeds written under {}", corpus.display());
    Ok(())
}
