//! Shift end, driven by the rules. While this region is on shift the task
//! remembers which shift it is; in the overlap window before the shift ends
//! it logs the open tickets it will hand over and how many still lack an
//! agent's note; once the shift has ended it hands every open ticket it owns
//! to the region the routing rules choose for it at that instant (residency
//! and skills honoured, this region counted as down), records a
//! `ShiftSummary` that replicates to every region; the notifier task
//! ([`crate::notifications`]) tells people from the recorded event. A shift
//! that meets this region's next one (day, then late) only changes the
//! queue owner: its tickets stay, and the summary names the next owner.
//!
//! A handoff note is the agent's when someone wrote a note on the ticket
//! during the overlap window; otherwise Meridian writes one from the
//! ticket's history and flags it `auto`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use jiff::Timestamp;
use meridian_core::{EventKind, HandoffNote, RegionId, ShiftSummary, Status, Ticket};
use meridian_rules::{RegionHealth, RouteRequest, Rules, ShiftPosition};
use meridian_store::{TicketFilter, TicketRecord};
use tokio::time::MissedTickBehavior;

use crate::{context::TicketApi, escalation::Escalations};

/// The shift this region is on, as the task last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OnShift {
    start: Timestamp,
    end: Timestamp,
    previewed: bool,
}

/// What the last continuity sweep saw: a change in any of it sweeps again.
struct LastSweep {
    at: Timestamp,
    rules_version: String,
    positions: Vec<(String, ShiftPosition)>,
}

/// Runs until the task is dropped.
pub(crate) async fn run(
    api: TicketApi,
    interval: Duration,
    sweep_interval: Duration,
    escalations: Arc<Escalations>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut current: Option<OnShift> = None;
    let sweep_every =
        jiff::SignedDuration::try_from(sweep_interval).unwrap_or(jiff::SignedDuration::MAX);
    let mut last_sweep: Option<LastSweep> = None;
    loop {
        ticker.tick().await;
        let Some(rules) = api.rules() else { continue };
        let now = api.now();
        let me = api.region().clone();
        let active = rules.active_at(now);
        let mine = active
            .iter()
            .find(|a| a.region == me.as_str() && a.position == ShiftPosition::OnShift);
        if let Some(shift) = current
            && now >= shift.end
            && mine.is_none_or(|m| m.effective_start != shift.start)
        {
            // A shift that meets the region's next one (a day shift, then
            // a late one) changes the queue owner, not the region: the
            // tickets stay here.
            let next_here = mine
                .filter(|m| m.effective_start == shift.end)
                .map(|m| m.queue_owner.as_str());
            match shift_end(&api, &rules, shift.start, shift.end, next_here).await {
                Ok(summary) => {
                    tracing::info!(region = %me, handed_off = summary.handed_off.len(), kept = summary.kept.len(),
                        auto_notes = summary.auto_notes, "shift ended");
                }
                Err(error) => tracing::error!(region = %me, error = %error, "shift end failed"),
            }
            current = None;
        }
        match mine {
            Some(m) => {
                let seen = current.filter(|c| c.start == m.effective_start);
                let mut shift = seen.unwrap_or(OnShift {
                    start: m.effective_start,
                    end: m.effective_end,
                    previewed: false,
                });
                shift.end = m.effective_end;
                if m.handing_off && !shift.previewed {
                    shift.previewed = true;
                    preview(&api, shift.end).await;
                }
                current = Some(shift);
            }
            None if current.is_some_and(|c| now < c.end) => {}
            None => current = None,
        }
        // The continuity sweep, after any shift end above has handed its
        // tickets over: on its period, and at once whenever a shift starts
        // or ends anywhere in the mesh or the rules change.
        let seen: Vec<(String, ShiftPosition)> = active
            .iter()
            .map(|a| (a.region.clone(), a.position))
            .collect();
        let due = last_sweep.as_ref().is_none_or(|last| {
            now.duration_since(last.at) >= sweep_every
                || last.at > now
                || last.rules_version != rules.version_id()
                || last.positions != seen
        });
        if due {
            sweep(&api, &rules, now, &escalations).await;
            last_sweep = Some(LastSweep {
                at: now,
                rules_version: rules.version_id(),
                positions: seen,
            });
        }
    }
}

/// The continuity sweep (invariant 7): every open ticket this region owns
/// while it may not work it (off shift, or lacking the ticket's skills or
/// residency) goes to the best region that is on shift and may take it, by
/// the same decision as intake, with an auto note where no agent wrote one
/// in the last overlap window. A ticket nobody on shift may take stays,
/// and is logged, alerted and counted as stranded (`escalation.rs`).
pub(crate) async fn sweep(
    api: &TicketApi,
    rules: &Rules,
    now: Timestamp,
    escalations: &Escalations,
) {
    let me = api.region().clone();
    // The listing alone: a ticket's notes are read only if it moves.
    let open = match open_listing(api).await {
        Ok(open) => open,
        Err(error) => {
            tracing::warn!(region = %me, error = %error, "continuity sweep could not list open tickets");
            return;
        }
    };
    let all_up: HashMap<RegionId, RegionHealth> = rules
        .regions()
        .iter()
        .map(|r| (r.id.clone(), RegionHealth::Up))
        .collect();
    let others = without(rules, &me);
    let window_start = now.checked_sub(api.overlap()).unwrap_or(now);
    let (mut moved, mut stranded) = (0usize, 0usize);
    // Tickets share a handful of tier, skill, residency, priority and
    // language combinations: each is decided once per sweep, not once per
    // ticket (a decision reads every region's calendar).
    let mut decided: HashMap<RouteRequest, Verdict<'_>> = HashMap::new();
    for ticket in open.iter().filter(|t| t.owner.owner_region == me) {
        let verdict = decided
            .entry(route_request(ticket))
            .or_insert_with_key(|request| {
                let here = rules.decide(now, &all_up, &HashMap::new(), request);
                let workable_here = here
                    .candidates
                    .iter()
                    .any(|c| *c.region == me && c.filtered.is_none());
                let there = rules.decide(now, &others, &HashMap::new(), request);
                let to = match (there.region, there.reason) {
                    (
                        Some(to),
                        meridian_rules::Reason::OnShift | meridian_rules::Reason::Overlap,
                    ) if *to != me => Some(to.clone()),
                    _ => None,
                };
                Verdict {
                    here,
                    workable_here,
                    to,
                }
            });
        if verdict.workable_here {
            continue;
        }
        let Some(to) = verdict.to.clone() else {
            stranded += 1;
            escalations.stranded(api, ticket, &verdict.here).await;
            continue;
        };
        let id = ticket.id;
        let record = match api.store().get_ticket(id).await {
            Ok(Some(record)) => record,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(ticket_id = %id, error = %error, "continuity sweep could not read the ticket");
                continue;
            }
        };
        let note = match agent_note(&record, window_start, now) {
            Some(note) => note,
            None => match api.store().events_for_ticket(id).await {
                Ok(events) => sweep_note(auto_note(&record, &events)),
                Err(error) => {
                    tracing::warn!(ticket_id = %id, error = %error, "continuity sweep could not read the ticket's events");
                    continue;
                }
            },
        };
        let note = note.fit_to_note(&me, &to);
        match crate::handoff::offer(
            api,
            &me,
            id,
            to.clone(),
            note,
            api.meta_with(None)
                .by(meridian_core::Actor::system("shift-end")),
        )
        .await
        {
            Ok(_) => {
                moved += 1;
                tracing::info!(ticket_id = %id, to = %to, "continuity sweep handed an off-shift ticket on");
            }
            Err(error) => {
                tracing::warn!(ticket_id = %id, to = %to, error = %error.public_message(), "continuity sweep handoff failed; next sweep tries again");
            }
        }
    }
    escalations.set_stranded(stranded);
    if moved > 0 || stranded > 0 {
        tracing::info!(region = %me, moved, stranded, "continuity sweep");
    }
}

/// What the sweep decided for one kind of ticket.
struct Verdict<'r> {
    /// Routing with every region up: why this region may not work it.
    here: meridian_rules::Decision<'r>,
    workable_here: bool,
    /// The region on shift that should take it, if any.
    to: Option<RegionId>,
}

/// An auto note says who wrote it: the sweep, not a shift end.
fn sweep_note(mut note: HandoffNote) -> HandoffNote {
    note.text = note.text.replacen(
        "at shift end",
        "in the continuity sweep (this region may not work it now)",
        1,
    );
    note
}

/// Every open ticket this region owns, without notes.
async fn open_listing(api: &TicketApi) -> Result<Vec<Ticket>, meridian_store::Error> {
    let store = api.store();
    let mut filter = TicketFilter {
        owner_region: Some(api.region().clone()),
        limit: 500,
        ..TicketFilter::default()
    };
    let mut open = Vec::new();
    loop {
        let page = store.list_tickets(&filter).await?;
        open.extend(page.tickets.into_iter().filter(|t| t.status.is_open()));
        match page.next_after {
            Some(after) => filter.after = Some(after),
            None => return Ok(open),
        }
    }
}

/// Every open ticket this region owns, with its notes.
async fn open_tickets(api: &TicketApi) -> Result<Vec<TicketRecord>, meridian_store::Error> {
    let mut open = Vec::new();
    for ticket in open_listing(api).await? {
        if let Some(record) = api.store().get_ticket(ticket.id).await? {
            open.push(record);
        }
    }
    Ok(open)
}

/// The agent's handoff note: the latest note a person wrote on the ticket
/// during the overlap window before `end`.
fn agent_note(
    record: &TicketRecord,
    window_start: Timestamp,
    end: Timestamp,
) -> Option<HandoffNote> {
    let note = record
        .notes
        .iter()
        .rev()
        .find(|n| !n.auto && n.created_at >= window_start && n.created_at <= end)?;
    let first_line = note.body.lines().next().unwrap_or_default();
    Some(HandoffNote {
        current_status: record.ticket.status,
        last_action: first_line.chars().take(500).collect(),
        next_action: "continue as the note says".into(),
        deadline: record.ticket.sla.resolution.map(|c| c.due),
        text: note.body.clone(),
        author: note.author.clone(),
        auto: false,
    })
}

/// A note written from the ticket's history, for a ticket nobody wrote one
/// for: what happened last and what is due next.
fn auto_note(record: &TicketRecord, events: &[meridian_core::EventEnvelope]) -> HandoffNote {
    let ticket = &record.ticket;
    let last_note = record.notes.iter().rev().find(|n| !n.auto);
    let last_status = events.iter().rev().find_map(|e| match &e.kind {
        EventKind::TicketUpdated { changes } => changes.status,
        _ => None,
    });
    let last_action = match (last_note, last_status) {
        (Some(note), _) => format!(
            "{} noted: {}",
            note.author,
            note.body.lines().next().unwrap_or_default()
        ),
        (None, Some(status)) => format!("status set to {status}"),
        (None, None) => format!("created {}", ticket.created_at),
    };
    let unanswered =
        |c: &Option<meridian_core::SlaClock>| c.filter(|c| c.state != meridian_core::SlaState::Met);
    let next_action = match (
        unanswered(&ticket.sla.first_response),
        unanswered(&ticket.sla.next_response),
        ticket.sla.resolution,
    ) {
        (Some(first), _, _) => {
            format!("first response due {} ({})", first.due, first.state)
        }
        (None, Some(next), _) => {
            format!(
                "answer the customer's latest message: next response due {} ({})",
                next.due, next.state
            )
        }
        (_, _, Some(resolution)) => {
            format!("resolution due {} ({})", resolution.due, resolution.state)
        }
        _ => "review the ticket and reply to the customer".into(),
    };
    let text = format!(
        "Written by Meridian at shift end: {} notes, {} events, assignee {}.",
        record.notes.len(),
        events.len(),
        ticket.assignee.as_deref().unwrap_or("none")
    );
    HandoffNote {
        current_status: ticket.status,
        last_action: last_action.chars().take(500).collect(),
        next_action,
        deadline: ticket.sla.resolution.map(|c| c.due),
        text,
        author: "meridian".into(),
        auto: true,
    }
}

pub(crate) fn route_request(ticket: &Ticket) -> RouteRequest {
    RouteRequest {
        tier: Some(ticket.tier.clone()),
        skills: ticket.skills.iter().cloned().collect(),
        residency: ticket.residency.iter().map(ToString::to_string).collect(),
        priority: ticket.priority,
        language: Some(ticket.language.clone()),
    }
}

/// Every region up but this one: routing as it will be once this shift ends.
/// (Routing skips regions with no health report, so all must be named.)
fn without(rules: &Rules, me: &RegionId) -> HashMap<RegionId, RegionHealth> {
    rules
        .regions()
        .iter()
        .map(|r| {
            (
                r.id.clone(),
                if &r.id == me {
                    RegionHealth::Down
                } else {
                    RegionHealth::Up
                },
            )
        })
        .collect()
}

/// Where a ticket goes at `end`: the routing decision with this region down.
fn incoming_region(
    rules: &Rules,
    me: &RegionId,
    end: Timestamp,
    request: &RouteRequest,
) -> Option<RegionId> {
    let decision = rules.decide(end, &without(rules, me), &HashMap::new(), request);
    decision.region.filter(|r| *r != me).cloned()
}

async fn preview(api: &TicketApi, end: Timestamp) {
    let Ok(open) = open_tickets(api).await else {
        return;
    };
    let window_start = end.checked_sub(api.overlap()).unwrap_or(end);
    let lacking = open
        .iter()
        .filter(|r| agent_note(r, window_start, end).is_none())
        .count();
    tracing::info!(region = %api.region(), shift_end = %end, open = open.len(), lacking_agent_note = lacking,
        "shift ends soon: open tickets will be handed off; those without an agent's note get an auto note");
}

/// Hands every open ticket over and records the summary.
async fn shift_end(
    api: &TicketApi,
    rules: &Rules,
    start: Timestamp,
    end: Timestamp,
    next_here: Option<&str>,
) -> Result<ShiftSummary, String> {
    let me = api.region().clone();
    let open = open_tickets(api).await.map_err(|e| e.to_string())?;
    let window_start = end.checked_sub(api.overlap()).unwrap_or(end);
    let mut summary = ShiftSummary {
        region: me.clone(),
        shift_start: start,
        shift_end: end,
        handed_off: Vec::new(),
        kept: Vec::new(),
        sla_at_risk: open
            .iter()
            .filter(|r| r.ticket.sla.is_at_risk())
            .map(|r| r.ticket.id)
            .collect(),
        escalations_open: open
            .iter()
            .filter(|r| r.ticket.status == Status::Escalated)
            .map(|r| r.ticket.id)
            .collect(),
        auto_notes: 0,
        next_region: None,
        next_queue_owner: None,
    };
    if let Some(owner) = next_here {
        summary.kept = open
            .iter()
            .map(|r| {
                let why = format!("stays with {me} for its next shift ({owner})");
                (r.ticket.id, why)
            })
            .collect();
        summary.next_region = Some(me.clone());
        summary.next_queue_owner = Some(owner.to_owned());
        api.store()
            .record_shift_summary(
                summary.clone(),
                api.meta_with(None)
                    .by(meridian_core::Actor::system("shift-end")),
            )
            .await
            .map_err(|e| e.to_string())?;
        return Ok(summary);
    }
    for record in &open {
        let id = record.ticket.id;
        let residency = &record.ticket.residency;
        let Some(to) = incoming_region(rules, &me, end, &route_request(&record.ticket)) else {
            let reason = if residency.is_empty() {
                "no other region may take it now".to_owned()
            } else {
                let set: Vec<&str> = residency.iter().map(RegionId::as_str).collect();
                format!(
                    "no other region of its residency ({}) may take it now",
                    set.join(", ")
                )
            };
            summary.kept.push((id, reason));
            continue;
        };
        // Routing honours residency; this keeps a pinned ticket home even
        // if the rules ever chose otherwise (the handoff would be refused).
        if let Some(reason) = meridian_core::residency::refusal(residency, &to) {
            tracing::warn!(ticket_id = %id, to = %to, reason = %reason, "shift-end target outside the ticket's residency; ticket kept");
            summary.kept.push((id, reason));
            continue;
        }
        let note = match agent_note(record, window_start, end) {
            Some(note) => note,
            None => {
                let events = api
                    .store()
                    .events_for_ticket(id)
                    .await
                    .map_err(|e| e.to_string())?;
                auto_note(record, &events)
            }
        };
        // An agent's note may be as long as a note may be; with the
        // handoff's status lines around it, it must be shortened to travel.
        let note = note.fit_to_note(&me, &to);
        let auto = note.auto;
        match crate::handoff::offer(
            api,
            &me,
            id,
            to.clone(),
            note,
            api.meta_with(None)
                .by(meridian_core::Actor::system("shift-end")),
        )
        .await
        {
            Ok(_) => {
                summary.auto_notes += u32::from(auto);
                summary.handed_off.push((id, to));
            }
            Err(error) => {
                let message = error.public_message();
                tracing::warn!(ticket_id = %id, to = %to, error = %message, "shift-end handoff failed; ticket kept");
                summary.kept.push((id, message));
            }
        }
    }
    let next = {
        let decision = rules.decide(
            end,
            &without(rules, &me),
            &HashMap::new(),
            &RouteRequest::default(),
        );
        (
            decision.region.filter(|r| **r != me).cloned(),
            decision.queue_owner.map(str::to_owned),
        )
    };
    summary.next_region = next
        .0
        .or_else(|| summary.handed_off.first().map(|(_, r)| r.clone()));
    summary.next_queue_owner = next.1;
    api.store()
        .record_shift_summary(
            summary.clone(),
            api.meta_with(None)
                .by(meridian_core::Actor::system("shift-end")),
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(summary)
}
