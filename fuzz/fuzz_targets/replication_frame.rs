//! Arbitrary bytes as a `ReplicationFrame` from another region: prost
//! decoding, then `meridian_proto::replication::frame_from_proto`, the
//! decoder every receiving session runs (`crates/replication/src/session.rs`)
//! and, through `batch_from_proto`, the handoff path's carried events. An
//! accepted batch then goes through what the store may run on it before
//! anything is written: the core's pure fold of each ticket's events
//! (`meridian_core::replay`).
//!
//! No input may panic. Beyond that, every accepted event must survive the
//! sender's encoder: re-encoded with `event_to_proto` it decodes to the same
//! event, so a region never forwards (or answers a digest with) an event it
//! would refuse.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use meridian_core::EventEnvelope;
use meridian_proto::{
    convert::event_to_proto,
    replication::{ReplicationMessage, event_from_proto, frame_from_proto},
    v1,
};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = v1::ReplicationFrame::decode(data) else { return };
    let Ok(ReplicationMessage::Batch(events)) = frame_from_proto(frame) else { return };
    assert!(!events.is_empty(), "an accepted batch is never empty");
    for event in &events {
        match event_from_proto("event", &event_to_proto(event)) {
            Ok(again) => assert_eq!(&again, event, "an accepted event does not survive re-encoding"),
            Err(e) => panic!("an accepted event's own encoding is refused: {e}"),
        }
    }
    let mut by_ticket: BTreeMap<_, Vec<EventEnvelope>> = BTreeMap::new();
    for event in events {
        by_ticket.entry(event.ticket_id).or_default().push(event);
    }
    for events in by_ticket.values() {
        let _ = meridian_core::replay(events);
    }
});
