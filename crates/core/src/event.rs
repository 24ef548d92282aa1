//! The event envelope: every state change is an event, and each region's
//! events form a log dense in `origin_seq`, which is the replication cursor.

use serde::{Deserialize, Serialize};

use jiff::Timestamp;

use crate::{
    Actor, Epoch, HandoffNote, HlcTimestamp, IntakeSpike, Note, Priority, RegionId, SlaDeadlines,
    SlaMetric, Status, Ticket, TicketId,
};

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
    /// Who made the change: the caller's token subject and role, or
    /// Meridian itself ([`Actor::system`]). `None` on events written before
    /// actors were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    pub kind: EventKind,
}

/// Owner-scoped field changes, stamped with the epoch they were written at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketChanges {
    pub epoch: Epoch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `Some(None)` clears the assignee; it travels as an explicit null.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "explicit_null"
    )]
    pub assignee: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// The ticket's SLA clocks after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<SlaDeadlines>,
}

/// Reads a present field (even `null`) as `Some`, so that "clear" and
/// "unchanged" stay distinct.
fn explicit_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl TicketChanges {
    pub fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.assignee.is_none()
            && self.priority.is_none()
            && self.sla.is_none()
    }
}

/// What happened. The name is stored beside the payload so the log is
/// readable without decoding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload", rename_all = "snake_case")]
pub enum EventKind {
    TicketCreated {
        ticket: Box<Ticket>,
    },
    TicketUpdated {
        changes: TicketChanges,
    },
    NoteAdded {
        note: Note,
    },
    /// An SLA clock passed the warning share of its target. Owner-scoped:
    /// the owner records it, and `changes` carries the clocks after it.
    SlaWarning {
        metric: SlaMetric,
        due: Timestamp,
        changes: TicketChanges,
    },
    /// An SLA clock passed its deadline.
    SlaBreached {
        metric: SlaMetric,
        due: Timestamp,
        changes: TicketChanges,
    },
    /// The owner offers the ticket to `to` at the event's epoch, with the
    /// structured handoff note and the ticket note it is shown as (carried
    /// whole, so every replica stores the same note). The owner makes no
    /// owner-scoped change until the answer.
    HandoffOffered {
        to: RegionId,
        handoff: HandoffNote,
        note: Note,
    },
    /// Written by the new owner (the event's origin) at the new epoch: it
    /// owns the ticket from now on. `offer_seq` is the offer in `from`'s log.
    HandoffAccepted {
        from: RegionId,
        offer_seq: u64,
        previous_epoch: Epoch,
    },
    /// Written by the owner when the target refused: the owner keeps the
    /// ticket, and the refusal stays in its history.
    HandoffRefused {
        to: RegionId,
        reason: String,
    },
    /// Written by the successor (the event's origin) at a new epoch it owns,
    /// after the coordinator recorded its takeover of `from`, the failed
    /// owner; `fencing_token` is the coordinator's revision of that record.
    /// `previous_epoch` is the epoch `from` held, and `through_seq` the last
    /// event of `from`'s log the successor had applied: `from`'s writes at
    /// that epoch after it are stale everywhere, including in `from`'s own
    /// copy (see [`crate::replay`]).
    TakenOver {
        from: RegionId,
        fencing_token: u64,
        previous_epoch: Epoch,
        through_seq: u64,
    },
    /// A region's shift ended: what it handed over and to whom. Its
    /// `ticket_id` is the summary's own id ([`ShiftSummary::id`]).
    ShiftSummary {
        summary: ShiftSummary,
    },
    /// A region's intake of one tier and skill spiked above its rolling
    /// baseline ([`crate::spike`]). Regional, like a shift summary: its
    /// `ticket_id` is the alert's own id ([`IntakeSpike::raised_id`]).
    IntakeSpike {
        spike: IntakeSpike,
    },
    /// That intake fell back; `ticket_id` is [`IntakeSpike::cleared_id`].
    IntakeSpikeCleared {
        spike: IntakeSpike,
    },
}

/// The stored name of each event kind ([`EventKind::name`]), for queries
/// that select by kind.
pub mod kind_name {
    pub const TICKET_CREATED: &str = "ticket_created";
    pub const TICKET_UPDATED: &str = "ticket_updated";
    pub const NOTE_ADDED: &str = "note_added";
    pub const SLA_WARNING: &str = "sla_warning";
    pub const SLA_BREACHED: &str = "sla_breached";
    pub const HANDOFF_OFFERED: &str = "handoff_offered";
    pub const HANDOFF_ACCEPTED: &str = "handoff_accepted";
    pub const HANDOFF_REFUSED: &str = "handoff_refused";
    pub const TAKEN_OVER: &str = "taken_over";
    pub const SHIFT_SUMMARY: &str = "shift_summary";
    pub const INTAKE_SPIKE: &str = "intake_spike";
    pub const INTAKE_SPIKE_CLEARED: &str = "intake_spike_cleared";
}

/// What an outgoing shift leaves the incoming one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftSummary {
    pub region: RegionId,
    pub shift_start: Timestamp,
    pub shift_end: Timestamp,
    /// Tickets handed off at the end of the shift, with where they went.
    pub handed_off: Vec<(TicketId, RegionId)>,
    /// Open tickets it could not hand off (refused, unreachable), kept.
    pub kept: Vec<(TicketId, String)>,
    /// Open tickets whose SLA is at risk or breached.
    pub sla_at_risk: Vec<TicketId>,
    /// Open tickets in status `escalated`.
    pub escalations_open: Vec<TicketId>,
    /// Handoff notes written by Meridian because the agent wrote none.
    pub auto_notes: u32,
    pub next_region: Option<RegionId>,
    pub next_queue_owner: Option<String>,
}

impl ShiftSummary {
    /// The summary's id: a UUIDv7 at the shift's end whose random bits come
    /// from the region's name, so the same shift end always gets the same id
    /// (a retried summary is a duplicate, not a second one).
    pub fn id(&self) -> TicketId {
        let mut random = [0u8; 10];
        // FNV-1a over the region's name: stable across builds and machines.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.region.as_str().bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        random[..8].copy_from_slice(&hash.to_be_bytes());
        TicketId::new_v7(self.shift_end, random)
    }

    /// The summary as a person reads it (a chat message, a log): one line
    /// of counts and who is next, then one line per list, each ticket by
    /// its short id ([`TicketId::short`]), as the console shows it.
    pub fn text(&self) -> String {
        let ids = |ids: &mut dyn Iterator<Item = String>| ids.collect::<Vec<_>>().join(", ");
        let next = match (&self.next_region, &self.next_queue_owner) {
            (Some(region), Some(owner)) => format!("{region} ({owner})"),
            (Some(region), None) => region.to_string(),
            (None, _) => "nobody on shift".to_owned(),
        };
        let mut text = format!(
            "{} shift {:.0} – {:.0} ended: {} handed off, {} kept, {} at SLA risk, {} escalations open; next: {next}",
            self.region,
            self.shift_start,
            self.shift_end,
            self.handed_off.len(),
            self.kept.len(),
            self.sla_at_risk.len(),
            self.escalations_open.len(),
        );
        if !self.handed_off.is_empty() {
            text.push_str("\nhanded off: ");
            text.push_str(&ids(&mut self
                .handed_off
                .iter()
                .map(|(id, to)| format!("{} → {to}", id.short()))));
        }
        if !self.kept.is_empty() {
            text.push_str("\nkept: ");
            text.push_str(&ids(&mut self
                .kept
                .iter()
                .map(|(id, why)| format!("{} ({why})", id.short()))));
        }
        if !self.sla_at_risk.is_empty() {
            text.push_str("\nat SLA risk: ");
            text.push_str(&ids(&mut self.sla_at_risk.iter().map(TicketId::short)));
        }
        if !self.escalations_open.is_empty() {
            text.push_str("\nescalations open: ");
            text.push_str(&ids(&mut self.escalations_open.iter().map(TicketId::short)));
        }
        text
    }
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::TicketCreated { .. } => kind_name::TICKET_CREATED,
            EventKind::TicketUpdated { .. } => kind_name::TICKET_UPDATED,
            EventKind::NoteAdded { .. } => kind_name::NOTE_ADDED,
            EventKind::SlaWarning { .. } => kind_name::SLA_WARNING,
            EventKind::SlaBreached { .. } => kind_name::SLA_BREACHED,
            EventKind::HandoffOffered { .. } => kind_name::HANDOFF_OFFERED,
            EventKind::HandoffAccepted { .. } => kind_name::HANDOFF_ACCEPTED,
            EventKind::HandoffRefused { .. } => kind_name::HANDOFF_REFUSED,
            EventKind::TakenOver { .. } => kind_name::TAKEN_OVER,
            EventKind::ShiftSummary { .. } => kind_name::SHIFT_SUMMARY,
            EventKind::IntakeSpike { .. } => kind_name::INTAKE_SPIKE,
            EventKind::IntakeSpikeCleared { .. } => kind_name::INTAKE_SPIKE_CLEARED,
        }
    }

    /// The owner-scoped field changes an event carries, projected the same
    /// way whatever the event is called.
    pub fn owner_changes(&self) -> Option<&TicketChanges> {
        match self {
            EventKind::TicketUpdated { changes }
            | EventKind::SlaWarning { changes, .. }
            | EventKind::SlaBreached { changes, .. } => Some(changes),
            _ => None,
        }
    }

    /// The names of the kinds that carry owner-scoped changes.
    pub const CHANGE_KINDS: [&'static str; 3] = [
        kind_name::TICKET_UPDATED,
        kind_name::SLA_WARNING,
        kind_name::SLA_BREACHED,
    ];

    /// The names of the kinds that move ownership or a pending offer.
    pub const OWNERSHIP_KINDS: [&'static str; 4] = [
        kind_name::HANDOFF_OFFERED,
        kind_name::HANDOFF_ACCEPTED,
        kind_name::HANDOFF_REFUSED,
        kind_name::TAKEN_OVER,
    ];

    /// Whether this event moves ownership or a pending offer.
    pub fn is_ownership(&self) -> bool {
        matches!(
            self,
            EventKind::HandoffOffered { .. }
                | EventKind::HandoffAccepted { .. }
                | EventKind::HandoffRefused { .. }
                | EventKind::TakenOver { .. }
        )
    }

    /// Owner-scoped events may only be written by the owner at its epoch;
    /// the rest (notes, and the regional records that belong to no ticket)
    /// merge from anywhere.
    pub fn is_owner_scoped(&self) -> bool {
        !matches!(
            self,
            EventKind::NoteAdded { .. }
                | EventKind::ShiftSummary { .. }
                | EventKind::IntakeSpike { .. }
                | EventKind::IntakeSpikeCleared { .. }
        )
    }

    /// The payload alone, as JSON (the `kind` column holds the name).
    pub fn payload_json(&self) -> serde_json::Result<String> {
        match serde_json::to_value(self)? {
            serde_json::Value::Object(mut map) => Ok(map
                .remove("payload")
                .unwrap_or(serde_json::Value::Null)
                .to_string()),
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
    fn a_shift_summary_reads_with_short_ids() {
        let id = |s: &str| s.parse::<TicketId>().unwrap();
        let region = |s: &str| RegionId::new(s).unwrap();
        // One shift end: the ids share their time prefix, not their tails.
        let (a, b) = (
            id("01a24e7d-3c11-7a34-95bb-18f51cc8967b"),
            id("01a24e7d-3c11-7a34-95bb-0000deadbeef"),
        );
        let summary = ShiftSummary {
            region: region("eu-west"),
            shift_start: "2026-12-07T08:00:00Z".parse().unwrap(),
            shift_end: "2026-12-07T17:00:00Z".parse().unwrap(),
            handed_off: vec![(a, region("us-east"))],
            kept: vec![(b, "us-east lacks the skill database".into())],
            sla_at_risk: vec![a],
            escalations_open: Vec::new(),
            auto_notes: 1,
            next_region: Some(region("us-east")),
            next_queue_owner: Some("us-east-day-lead".into()),
        };
        assert_eq!(
            summary.text(),
            "eu-west shift 2026-12-07T08:00:00Z – 2026-12-07T17:00:00Z ended: 1 handed off, 1 kept, \
             1 at SLA risk, 0 escalations open; next: us-east (us-east-day-lead)\n\
             handed off: 1cc8967b → us-east\n\
             kept: deadbeef (us-east lacks the skill database)\n\
             at SLA risk: 1cc8967b"
        );
    }

    #[test]
    fn kind_round_trips_through_name_and_payload() {
        let kind = EventKind::TicketUpdated {
            changes: TicketChanges {
                epoch: Epoch::initial(2),
                status: Some(Status::Open),
                assignee: Some(None),
                priority: None,
                sla: None,
            },
        };
        let payload = kind.payload_json().unwrap();
        assert_eq!(
            payload,
            r#"{"changes":{"assignee":null,"epoch":2,"status":"open"}}"#
        );
        assert_eq!(EventKind::from_parts(kind.name(), &payload).unwrap(), kind);
        assert!(EventKind::from_parts("no_such_kind", "{}").is_err());
    }

    #[test]
    fn intake_spikes_are_regional_records() {
        let spike = IntakeSpike {
            region: RegionId::new("us-east").unwrap(),
            tier: crate::Tier::new("premium").unwrap(),
            skill: Some(crate::Skill::new("billing").unwrap()),
            bucket_start: "2026-06-01T14:16:00Z".parse().unwrap(),
            bucket_end: "2026-06-01T14:17:00Z".parse().unwrap(),
            count: 40,
            baseline: crate::Rate::from_f64(3.25),
            deviation: crate::Rate::from_f64(1.803),
            threshold: crate::Rate::from_f64(10.462),
            since: "2026-06-01T14:16:00Z".parse().unwrap(),
            peak: 40,
            queue_owner: Some("us-east-day-lead".into()),
        };
        for kind in [
            EventKind::IntakeSpike {
                spike: spike.clone(),
            },
            EventKind::IntakeSpikeCleared {
                spike: spike.clone(),
            },
        ] {
            let payload = kind.payload_json().unwrap();
            assert!(payload.contains(r#""baseline":3.25"#), "{payload}");
            assert_eq!(EventKind::from_parts(kind.name(), &payload).unwrap(), kind);
            assert!(
                !kind.is_owner_scoped() && !kind.is_ownership() && kind.owner_changes().is_none(),
                "{kind:?}"
            );
        }
    }
}
