//! The event envelope: every state change is an event, and each region's
//! events form a log dense in `origin_seq`, which is the replication cursor.

use serde::{Deserialize, Serialize};

use crate::{Epoch, HlcTimestamp, Note, Priority, RegionId, Status, Ticket, TicketId};

/// One event as it is stored and replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub origin_region: RegionId,
    /// Dense per origin, starting at 1.
    pub origin_seq: u64,
    pub ticket_id: TicketId,
    /// The ownership epoch the event was written at.
    pub epoch: Epoch,
    pub hlc_time: HlcTimestamp,
    /// W3C trace context of the span that produced the event.
    pub traceparent: Option<String>,
    pub kind: EventKind,
}

/// Owner-scoped field changes, stamped with the epoch they were written at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketChanges {
    pub epoch: Epoch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `Some(None)` clears the assignee; it travels as an explicit null.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "explicit_null")]
    pub assignee: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
}

/// Reads a present field (even `null`) as `Some`, so that "clear" and
/// "unchanged" stay distinct.
fn explicit_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl TicketChanges {
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.assignee.is_none() && self.priority.is_none()
    }
}

/// What happened. The name is stored beside the payload so the log is
/// readable without decoding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload", rename_all = "snake_case")]
pub enum EventKind {
    TicketCreated { ticket: Box<Ticket> },
    TicketUpdated { changes: TicketChanges },
    NoteAdded { note: Note },
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::TicketCreated { .. } => "ticket_created",
            EventKind::TicketUpdated { .. } => "ticket_updated",
            EventKind::NoteAdded { .. } => "note_added",
        }
    }

    /// Owner-scoped events may only be written by the owner at its epoch;
    /// the rest (notes) merge from anywhere.
    pub fn is_owner_scoped(&self) -> bool {
        matches!(self, EventKind::TicketCreated { .. } | EventKind::TicketUpdated { .. })
    }

    /// The payload alone, as JSON (the `kind` column holds the name).
    pub fn payload_json(&self) -> serde_json::Result<String> {
        match serde_json::to_value(self)? {
            serde_json::Value::Object(mut map) => {
                Ok(map.remove("payload").unwrap_or(serde_json::Value::Null).to_string())
            }
            other => Ok(other.to_string()),
        }
    }

    /// Rebuilds an event kind from its stored name and payload.
    pub fn from_parts(kind: &str, payload: &str) -> serde_json::Result<Self> {
        let payload: serde_json::Value = serde_json::from_str(payload)?;
        serde_json::from_value(serde_json::json!({ "kind": kind, "payload": payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_round_trips_through_name_and_payload() {
        let kind = EventKind::TicketUpdated {
            changes: TicketChanges {
                epoch: Epoch::initial(2),
                status: Some(Status::Open),
                assignee: Some(None),
                priority: None,
            },
        };
        let payload = kind.payload_json().unwrap();
        assert_eq!(payload, r#"{"changes":{"assignee":null,"epoch":2,"status":"open"}}"#);
        assert_eq!(EventKind::from_parts(kind.name(), &payload).unwrap(), kind);
        assert!(EventKind::from_parts("no_such_kind", "{}").is_err());
    }
}
