//! A ticket's journey through the mesh, built once for `meridian trace` and
//! the console's journey page: from what each region's gateway answered
//! (the ticket, its conflicts, its events, its replication status),
//! [`build_journey`] derives the regions that held the ticket with from/to
//! instants and durations, each offer, acceptance, refusal and takeover
//! with its note, conflicts merged across regions, and which asked region
//! has not yet applied which event. Pure: no I/O, no clock (`now` is an
//! argument). Reading the gateways and rendering are the callers' part.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use meridian_core::{EventEnvelope, EventKind, TicketId};
use meridian_proto::v1;
use serde::Serialize;

/// The trace id as a tracing UI shows it: the ticket id's 128 bits as 32
/// lowercase hex digits.
pub fn trace_id_hex(ticket_id: TicketId) -> String {
    format!("{:032x}", meridian_telemetry::ticket::trace_id(ticket_id))
}

/// An instant as the CLI prints it everywhere (docs/cli.md): RFC 3339 in
/// UTC with exactly three fractional digits.
fn ser_instant<S: serde::Serializer>(at: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{at:.3}"))
}

fn ser_opt_instant<S: serde::Serializer>(at: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => ser_instant(at, s),
        None => s.serialize_none(),
    }
}

/// What one region's gateway answered about the ticket.
#[derive(Debug, Clone, Default)]
pub struct RegionCopy {
    pub region: String,
    pub url: String,
    /// `None` when the region does not have the ticket (yet).
    pub ticket: Option<v1::Ticket>,
    pub conflicts: Vec<v1::Conflict>,
    pub events: Vec<v1::Event>,
    /// More events than were read.
    pub events_truncated: bool,
    /// The region's replication with each peer, now.
    pub peers: Vec<v1::PeerStatus>,
}

/// The ticket's journey through the mesh.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Journey {
    pub ticket_id: String,
    /// The ticket id's 128 bits as 32 hex digits: the id of its trace.
    pub trace_id: String,
    pub trace_url: Option<String>,
    pub subject: Option<String>,
    pub status: Option<String>,
    /// The holder of the highest epoch in the events seen.
    pub owner: Option<Holder>,
    /// Each region's time holding the ticket, oldest first.
    pub stays: Vec<Stay>,
    /// Every event, in hybrid-logical-time order (causal across regions).
    pub steps: Vec<Step>,
    pub conflicts: Vec<ConflictView>,
    /// Each region asked, and what it has.
    pub regions: Vec<RegionSeen>,
    /// Regions the asked gateways replicate with that were not asked.
    pub not_asked: Vec<String>,
    pub unreached: Vec<Unreached>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub region: String,
    pub epoch: u64,
}

/// One region's time as the ticket's owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stay {
    pub region: String,
    pub epoch: u64,
    /// How the region came to hold it: `created`, `handoff` or `takeover`.
    pub came_by: String,
    /// The region it came from (handoff, takeover).
    pub from_region: Option<String>,
    #[serde(serialize_with = "ser_instant")]
    pub since: Timestamp,
    /// When the next holder took it, or the ticket closed; `None` while it
    /// still holds it.
    #[serde(serialize_with = "ser_opt_instant")]
    pub until: Option<Timestamp>,
    /// `until` (or now) minus `since`.
    pub held_ms: i64,
    /// The stay ended because the ticket was closed.
    pub closed: bool,
}

/// One event of the ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The origin's hybrid-logical time, as a wall-clock instant.
    #[serde(serialize_with = "ser_instant")]
    pub at: Timestamp,
    pub origin_region: String,
    pub origin_seq: u64,
    pub epoch: u64,
    pub kind: String,
    #[serde(flatten)]
    pub detail: StepDetail,
    /// Who made it: `subject (role)`; `None` for events from before actors
    /// were recorded.
    pub actor: Option<String>,
    pub traceparent: Option<String>,
    /// Asked regions that have not applied this event (yet).
    pub missing_in: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepDetail {
    Created {
        subject: String,
    },
    Updated {
        changes: Vec<String>,
    },
    Note {
        author: String,
        body: String,
        auto: bool,
        /// internal, public (a reply to the customer) or inbound (the
        /// customer's message).
        visibility: meridian_core::Visibility,
    },
    Sla {
        metric: String,
        #[serde(serialize_with = "ser_instant")]
        due: Timestamp,
    },
    HandoffOffered {
        to: String,
        note: HandoffNoteView,
    },
    HandoffAccepted {
        from: String,
        offer_seq: u64,
        /// From the offer to the acceptance: includes the target applying
        /// the offerer's log up to the offer. `None` if the offer is not
        /// among the events seen.
        after_offer_ms: Option<i64>,
    },
    HandoffRefused {
        to: String,
        reason: String,
    },
    TakenOver {
        from: String,
        fencing_token: u64,
        through_seq: u64,
    },
    Other,
    /// The gateway sent an event this command cannot read.
    Undecoded {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandoffNoteView {
    pub current_status: String,
    pub last_action: String,
    pub next_action: String,
    #[serde(serialize_with = "ser_opt_instant")]
    pub deadline: Option<Timestamp>,
    pub text: String,
    pub author: String,
    pub auto: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictView {
    pub origin_region: String,
    pub origin_seq: u64,
    pub stale_epoch: u64,
    pub current_epoch: u64,
    pub changes: String,
    /// The asked regions that show it.
    pub seen_in: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionSeen {
    pub region: String,
    pub url: String,
    pub has_ticket: bool,
    pub events: usize,
    pub events_truncated: bool,
    /// Who this region thinks owns the ticket.
    pub sees_owner: Option<Holder>,
    /// Its view lags the journey's owner: an acceptance or takeover has
    /// not reached it yet.
    pub behind: bool,
    pub lag: Vec<PeerLag>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerLag {
    pub peer: String,
    pub connected: bool,
    /// This region's events the peer has not acknowledged, and the age of
    /// the oldest of them.
    pub lag_events: u64,
    pub lag_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreached {
    pub url: String,
    pub error: String,
}

/// A decoded event, or the reason it could not be decoded.
struct Seen {
    raw: v1::Event,
    decoded: Result<EventEnvelope, String>,
}

impl Seen {
    fn at(&self) -> Timestamp {
        hlc_instant(self.raw.hlc_time)
    }
}

/// An HLC value's wall-clock part (milliseconds since the epoch).
fn hlc_instant(hlc: u64) -> Timestamp {
    let millis = meridian_core::HlcTimestamp(hlc).millis();
    i64::try_from(millis)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn millis_between(from: Timestamp, to: Timestamp) -> i64 {
    to.as_millisecond() - from.as_millisecond()
}

/// Builds the journey from what each region answered. Pure: `now` closes
/// the current holder's stay.
pub fn build_journey(ticket_id: TicketId, copies: &[RegionCopy], now: Timestamp) -> Journey {
    // The union of every region's events, keyed by their place in their
    // origin's log; which asked regions hold each.
    let mut seen: BTreeMap<(String, u64), Seen> = BTreeMap::new();
    let mut held_by: BTreeMap<(String, u64), BTreeSet<&str>> = BTreeMap::new();
    for copy in copies {
        for raw in &copy.events {
            let key = (raw.origin_region.clone(), raw.origin_seq);
            held_by
                .entry(key.clone())
                .or_default()
                .insert(copy.region.as_str());
            seen.entry(key).or_insert_with(|| Seen {
                raw: raw.clone(),
                decoded: meridian_proto::replication::event_from_proto("event", raw)
                    .map_err(|e| e.to_string()),
            });
        }
    }
    let mut ordered: Vec<&Seen> = seen.values().collect();
    ordered.sort_by(|a, b| {
        (a.raw.hlc_time, &a.raw.origin_region, a.raw.origin_seq).cmp(&(
            b.raw.hlc_time,
            &b.raw.origin_region,
            b.raw.origin_seq,
        ))
    });

    let stays = stays(&ordered, copies, now);
    let owner = stays.last().map(|s| Holder {
        region: s.region.clone(),
        epoch: s.epoch,
    });
    let asked: Vec<&str> = copies.iter().map(|c| c.region.as_str()).collect();
    let steps = ordered
        .iter()
        .map(|event| {
            let key = (event.raw.origin_region.clone(), event.raw.origin_seq);
            let holders = held_by.get(&key);
            let missing_in = asked
                .iter()
                .filter(|r| holders.is_none_or(|h| !h.contains(*r)))
                .map(|r| (*r).to_owned())
                .collect();
            Step {
                at: event.at(),
                origin_region: event.raw.origin_region.clone(),
                origin_seq: event.raw.origin_seq,
                epoch: event.raw.epoch,
                kind: event.raw.kind.clone(),
                detail: detail(event, &seen),
                actor: (!event.raw.actor_subject.is_empty())
                    .then(|| format!("{} ({})", event.raw.actor_subject, event.raw.actor_role)),
                traceparent: (!event.raw.traceparent.is_empty())
                    .then(|| event.raw.traceparent.clone()),
                missing_in,
            }
        })
        .collect();

    let mut conflicts: BTreeMap<(String, u64), ConflictView> = BTreeMap::new();
    for copy in copies {
        for c in &copy.conflicts {
            conflicts
                .entry((c.origin_region.clone(), c.origin_seq))
                .or_insert_with(|| ConflictView {
                    origin_region: c.origin_region.clone(),
                    origin_seq: c.origin_seq,
                    stale_epoch: c.stale_epoch,
                    current_epoch: c.current_epoch,
                    changes: c.changes_json.clone(),
                    seen_in: Vec::new(),
                })
                .seen_in
                .push(copy.region.clone());
        }
    }

    let regions = copies
        .iter()
        .map(|copy| {
            let sees_owner = copy
                .ticket
                .as_ref()
                .and_then(|t| t.owner.as_ref())
                .map(|o| Holder {
                    region: o.owner_region.clone(),
                    epoch: o.epoch,
                });
            let behind = match (&sees_owner, &owner) {
                (Some(seen), Some(owner)) => seen.epoch < owner.epoch,
                (None, Some(_)) => true,
                _ => false,
            };
            RegionSeen {
                region: copy.region.clone(),
                url: copy.url.clone(),
                has_ticket: copy.ticket.is_some(),
                events: copy.events.len(),
                events_truncated: copy.events_truncated,
                sees_owner,
                behind,
                lag: copy
                    .peers
                    .iter()
                    .map(|p| PeerLag {
                        peer: p.region.clone(),
                        connected: p.connected,
                        lag_events: p.lag_events,
                        lag_seconds: p.lag_seconds,
                    })
                    .collect(),
            }
        })
        .collect();
    let not_asked: BTreeSet<String> = copies
        .iter()
        .flat_map(|c| c.peers.iter().map(|p| p.region.clone()))
        .filter(|r| !asked.contains(&r.as_str()))
        .collect();

    // The freshest view of the ticket: the copy at the highest epoch.
    let freshest = copies
        .iter()
        .filter_map(|c| c.ticket.as_ref())
        .max_by_key(|t| {
            (
                t.owner.as_ref().map_or(0, |o| o.epoch),
                t.updated_at.map_or(0, |u| u.seconds),
            )
        });
    Journey {
        ticket_id: ticket_id.to_string(),
        trace_id: trace_id_hex(ticket_id),
        trace_url: None,
        subject: freshest.map(|t| t.subject.clone()),
        status: freshest.map(|t| status_name(t.status).to_owned()),
        owner,
        stays,
        steps,
        conflicts: conflicts.into_values().collect(),
        regions,
        not_asked: not_asked.into_iter().collect(),
        unreached: Vec::new(),
    }
}

/// The regions that held the ticket: each epoch is minted by one event (the
/// creation, an acceptance or a takeover) and held by that event's origin
/// until the next higher epoch is minted. Epochs only grow, so ordering by
/// epoch is ordering by ownership.
fn stays(ordered: &[&Seen], copies: &[RegionCopy], now: Timestamp) -> Vec<Stay> {
    let mut minted: Vec<(u64, Stay)> = Vec::new();
    for event in ordered {
        let Ok(envelope) = &event.decoded else {
            continue;
        };
        let (came_by, from_region) = match &envelope.kind {
            EventKind::TicketCreated { .. } => ("created", None),
            EventKind::HandoffAccepted { from, .. } => ("handoff", Some(from.to_string())),
            EventKind::TakenOver { from, .. } => ("takeover", Some(from.to_string())),
            _ => continue,
        };
        let epoch = envelope.epoch.raw();
        if minted.iter().any(|(e, _)| *e == epoch) {
            continue;
        }
        minted.push((
            epoch,
            Stay {
                region: envelope.origin_region.to_string(),
                epoch,
                came_by: came_by.to_owned(),
                from_region,
                since: event.at(),
                until: None,
                held_ms: 0,
                closed: false,
            },
        ));
    }
    minted.sort_by_key(|(epoch, _)| *epoch);
    let mut stays: Vec<Stay> = minted.into_iter().map(|(_, stay)| stay).collect();
    if stays.is_empty() {
        // No minting event seen (say, the creation has not replicated to
        // any asked region): the owner the gateways report, since creation.
        if let Some(ticket) = copies.iter().filter_map(|c| c.ticket.as_ref()).next()
            && let Some(owner) = &ticket.owner
            && let Some(created) = ticket
                .created_at
                .as_ref()
                .and_then(|t| meridian_proto::timestamp_from_proto("", t).ok())
        {
            stays.push(Stay {
                region: owner.owner_region.clone(),
                epoch: owner.epoch,
                came_by: "created".to_owned(),
                from_region: None,
                since: created,
                until: None,
                held_ms: 0,
                closed: false,
            });
        }
    }
    let next_since: Vec<Option<Timestamp>> = stays
        .iter()
        .skip(1)
        .map(|s| Some(s.since))
        .chain([None])
        .collect();
    let closed_at = closed_at(ordered);
    for (stay, next) in stays.iter_mut().zip(next_since) {
        stay.until = next;
        if next.is_none()
            && let Some(closed) = closed_at.filter(|c| *c >= stay.since)
        {
            stay.until = Some(closed);
            stay.closed = true;
        }
        stay.held_ms = millis_between(stay.since, stay.until.unwrap_or(now)).max(0);
    }
    stays
}

/// When the ticket was last closed, if its last status change closed it.
fn closed_at(ordered: &[&Seen]) -> Option<Timestamp> {
    let mut closed = None;
    for event in ordered {
        let Ok(envelope) = &event.decoded else {
            continue;
        };
        if let Some(status) = envelope.kind.owner_changes().and_then(|c| c.status) {
            closed = (status == meridian_core::Status::Closed).then(|| event.at());
        }
    }
    closed
}

fn detail(event: &Seen, all: &BTreeMap<(String, u64), Seen>) -> StepDetail {
    let envelope = match &event.decoded {
        Ok(envelope) => envelope,
        Err(reason) => {
            return StepDetail::Undecoded {
                reason: reason.clone(),
            };
        }
    };
    match &envelope.kind {
        EventKind::TicketCreated { ticket } => StepDetail::Created {
            subject: ticket.subject.clone(),
        },
        EventKind::TicketUpdated { changes } => {
            let mut list = Vec::new();
            if let Some(status) = changes.status {
                list.push(format!("status {status}"));
            }
            match &changes.assignee {
                Some(Some(who)) => list.push(format!("assignee {who}")),
                Some(None) => list.push("unassigned".to_owned()),
                None => {}
            }
            if let Some(priority) = changes.priority {
                list.push(format!("priority {priority}"));
            }
            if changes.sla.is_some() && list.is_empty() {
                list.push("SLA clocks".to_owned());
            }
            StepDetail::Updated { changes: list }
        }
        EventKind::NoteAdded { note } => StepDetail::Note {
            author: note.author.clone(),
            body: note.body.clone(),
            auto: note.auto,
            visibility: note.visibility,
        },
        EventKind::SlaWarning { metric, due, .. } | EventKind::SlaBreached { metric, due, .. } => {
            StepDetail::Sla {
                metric: metric.to_string(),
                due: *due,
            }
        }
        EventKind::HandoffOffered { to, handoff, .. } => StepDetail::HandoffOffered {
            to: to.to_string(),
            note: HandoffNoteView {
                current_status: handoff.current_status.to_string(),
                last_action: handoff.last_action.clone(),
                next_action: handoff.next_action.clone(),
                deadline: handoff.deadline,
                text: handoff.text.clone(),
                author: handoff.author.clone(),
                auto: handoff.auto,
            },
        },
        EventKind::HandoffAccepted {
            from, offer_seq, ..
        } => StepDetail::HandoffAccepted {
            from: from.to_string(),
            offer_seq: *offer_seq,
            after_offer_ms: all
                .get(&(from.to_string(), *offer_seq))
                .map(|offer| millis_between(offer.at(), event.at())),
        },
        EventKind::HandoffRefused { to, reason } => StepDetail::HandoffRefused {
            to: to.to_string(),
            reason: reason.clone(),
        },
        EventKind::TakenOver {
            from,
            fencing_token,
            through_seq,
            ..
        } => StepDetail::TakenOver {
            from: from.to_string(),
            fencing_token: *fencing_token,
            through_seq: *through_seq,
        },
        // Region-wide events (shift summaries, intake spikes) and kinds added
        // later: shown by name.
        _ => StepDetail::Other,
    }
}

fn status_name(raw: i32) -> &'static str {
    match meridian_proto::convert::status_from_proto("", raw)
        .ok()
        .flatten()
    {
        Some(status) => status.as_str(),
        None => "unspecified",
    }
}
