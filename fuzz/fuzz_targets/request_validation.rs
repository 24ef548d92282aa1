//! Every public `TicketService` request, as arbitrary bytes, through exactly
//! what the gateway runs before it touches the store: prost decoding, the
//! field-by-field conversion in `meridian_proto::convert`, and the core's
//! pure decision on a fixed ticket (`services/gateway/src/service.rs`).
//! The first byte picks the request; the rest is its encoding.
//!
//! No input may panic. Beyond that, a create the gateway accepts must
//! produce a ticket whose own encoding, sent back as a request, is accepted
//! to the same value (conversion is idempotent), and a handoff it decides
//! must write a note that peers accept.
#![no_main]

use std::sync::OnceLock;

use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;
use meridian_core::{self as core, Epoch, Note, NoteId, Ownership, RegionId, Ticket, TicketId};
use meridian_proto::{convert, v1};
use prost::Message;

/// The gateway's region in this harness, and the ticket's owner.
const HOME: &str = "eu-west";
const HOME_INDEX: u16 = 1;
/// The page size limit of `ListTickets` (`service::PAGE_SIZE_MAX`).
const PAGE_SIZE_MAX: u32 = 500;

fn now() -> Timestamp {
    Timestamp::from_second(1_750_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn home() -> RegionId {
    RegionId::new(HOME).unwrap_or_else(|e| panic!("the harness's region is valid: {e}"))
}

/// A stored ticket the requests are decided against: owned here, resident
/// in two regions, so handoffs inside and outside its residency are both
/// reachable.
fn stored() -> &'static Ticket {
    static TICKET: OnceLock<Ticket> = OnceLock::new();
    TICKET.get_or_init(|| {
        let req = v1::CreateTicketRequest {
            subject: "VPN down".into(),
            body: "since 9am".into(),
            customer: "acme".into(),
            tier: "premium".into(),
            skills: vec!["networking".into()],
            language: "en".into(),
            residency: vec![HOME.into(), "us-east".into()],
            priority: v1::Priority::High.into(),
            idempotency_key: String::new(),
        };
        let new = core::NewTicket::try_from(req).unwrap_or_else(|e| panic!("the harness's ticket is valid: {e}"));
        let owner = Ownership::new(home(), HOME_INDEX, Epoch::initial(HOME_INDEX))
            .unwrap_or_else(|e| panic!("the harness's owner is valid: {e}"));
        Ticket::create(TicketId::new_v7(now(), [7; 10]), new, owner, now())
            .unwrap_or_else(|e| panic!("the harness's ticket is valid: {e}"))
    })
}

fn create(req: v1::CreateTicketRequest) {
    let Ok((new, key)) = convert::create_from_proto(req) else { return };
    let owner = stored().owner.clone();
    let Ok(ticket) = Ticket::create(TicketId::new_v7(now(), [1; 10]), new.clone(), owner, now()) else {
        panic!("Ticket::create refused a NewTicket that conversion accepted");
    };
    // The response, sent back as a request, converts to the same ticket.
    let shown = convert::ticket_to_proto(&ticket);
    let again = v1::CreateTicketRequest {
        subject: shown.subject,
        body: shown.body,
        customer: shown.customer,
        tier: shown.tier,
        skills: shown.skills,
        language: shown.language,
        residency: shown.residency,
        priority: shown.priority,
        idempotency_key: key.as_ref().map(ToString::to_string).unwrap_or_default(),
    };
    match convert::create_from_proto(again) {
        Ok(back) => assert_eq!(back, (new, key), "conversion is not idempotent"),
        Err(e) => panic!("an accepted ticket's own encoding is refused: {e}"),
    }
}

fn update(req: v1::UpdateTicketRequest) {
    let Ok((_id, patch)) = convert::update_from_proto(&req) else { return };
    let mut ticket = stored().clone();
    if let Ok(changes) = ticket.decide_patch(&home(), &patch) {
        ticket.apply(&changes, now());
        let _ = convert::ticket_to_proto(&ticket).encode_to_vec();
    }
}

/// `add_note`: the ticket id, then the note the handler builds and checks.
fn add_note(req: v1::AddNoteRequest) {
    let Ok(ticket_id) = convert::ticket_id("ticket_id", &req.ticket_id) else { return };
    let note = Note {
        id: NoteId::new_v7(now(), [2; 10]),
        ticket_id,
        region: home(),
        author: req.author,
        body: req.body,
        created_at: now(),
        auto: false,
        visibility: meridian_core::Visibility::Internal,
    };
    if note.validate().is_ok() {
        let _ = convert::note_to_proto(&note).encode_to_vec();
    }
}

fn handoff(req: v1::HandoffRequest) {
    let Ok((_id, to, note)) = convert::handoff_from_proto(&req) else { return };
    if stored().decide_handoff(&home(), &to, &note).is_err() {
        return;
    }
    // The offer carries the note rendered as a ticket note, and every peer
    // checks it like one (`replication::check_note`): a handoff accepted
    // here but refused there would stop this region's log at that event.
    let written = Note {
        id: NoteId::new_v7(now(), [3; 10]),
        ticket_id: stored().id,
        region: home(),
        author: note.author.clone(),
        body: note.render(&home(), &to),
        created_at: now(),
        auto: note.auto,
        visibility: meridian_core::Visibility::Internal,
    };
    if let Err(e) = written.validate() {
        panic!("a handoff the owner decides writes a note every peer refuses: {e}");
    }
}

/// `list_tickets`' checks, in the handler's order.
fn list(req: v1::ListTicketsRequest) {
    if req.page_size > PAGE_SIZE_MAX {
        return;
    }
    let _ = convert::status_from_proto("status", req.status);
    if !req.owner_region.is_empty() {
        let _ = convert::region_id("owner_region", &req.owner_region);
    }
    if !req.tier.is_empty() {
        let _ = core::Tier::new(req.tier.as_str());
    }
    if !req.page_token.is_empty() {
        let _ = convert::ticket_id("page_token", &req.page_token);
    }
}

fn watch(req: v1::WatchEventsRequest) {
    use v1::watch_events_request::Scope;
    match req.scope {
        Some(Scope::TicketId(raw)) => drop(convert::ticket_id("ticket_id", &raw)),
        Some(Scope::Region(raw)) => drop(convert::region_id("region", &raw)),
        None => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    match which % 7 {
        0 => {
            if let Ok(req) = v1::CreateTicketRequest::decode(bytes) {
                create(req);
            }
        }
        1 => {
            if let Ok(req) = v1::UpdateTicketRequest::decode(bytes) {
                update(req);
            }
        }
        2 => {
            if let Ok(req) = v1::AddNoteRequest::decode(bytes) {
                add_note(req);
            }
        }
        3 => {
            if let Ok(req) = v1::HandoffRequest::decode(bytes) {
                handoff(req);
            }
        }
        4 => {
            if let Ok(req) = v1::ListTicketsRequest::decode(bytes) {
                list(req);
            }
        }
        5 => {
            if let Ok(req) = v1::GetTicketRequest::decode(bytes) {
                let _ = convert::ticket_id("ticket_id", &req.ticket_id);
            }
        }
        _ => {
            if let Ok(req) = v1::WatchEventsRequest::decode(bytes) {
                watch(req);
            }
        }
    }
});
