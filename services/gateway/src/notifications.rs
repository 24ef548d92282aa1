//! The notifier task: tails this region's own event log from a cursor kept
//! in the region's outbox and turns the events people must hear about
//! into notifications ([`meridian_notify`]): shift summaries, SLA warnings
//! and breaches, volume spikes and their clearing, and takeovers by this
//! region. It also watches the rules file for refusals. Returns after a
//! takeover are announced by the failover code when the region
//! acknowledges one.
//!
//! Exactly once by key: each notification's key is derived from the event
//! (`kind:origin:seq`), the outbox ignores a key it already holds, and the
//! cursor is saved only after the events before it were enqueued. A crash
//! anywhere re-reads the log from the saved cursor and re-enqueues the
//! same keys, which changes nothing; the delivery task then sends what
//! was not yet marked delivered, under the same key.
//!
//! Only this region's own events (`origin_region` = this region) are read,
//! so each event is notified by exactly one region of the mesh.

use std::{sync::Arc, time::Duration};

use meridian_core::{EventEnvelope, EventKind, IntakeSpike, ShiftSummary, SlaMetric, TicketId};
use meridian_notify::{Kind, Notification, Notifier, TicketLine, short_id};
use tokio::{sync::broadcast::error::RecvError, time::MissedTickBehavior};

use crate::context::TicketApi;

/// The most events read from the log at once.
const PAGE_EVENTS_MAX: u32 = 500;
/// The most tickets looked up for one shift summary's lines.
const SUMMARY_TICKETS_MAX: usize = 50;

pub(crate) fn cursor_name(api: &TicketApi) -> String {
    format!("notifier:{}", api.region())
}

/// Runs until the task is dropped. Does nothing without targets.
pub(crate) async fn run(api: TicketApi, interval: Duration) {
    let notifier = api.notifier().clone();
    let Some(outbox) = notifier.outbox().cloned() else {
        return;
    };
    let store = api.store().clone();
    let me = api.region().clone();
    let name = cursor_name(&api);
    // Subscribed before the cursor is read: a commit after it wakes us.
    let mut commits = store.subscribe();
    let mut cursor = loop {
        let saved = match outbox.cursor(&name).await {
            Ok(Some(saved)) => Ok(saved),
            // The first start with notifications on: from now, not the
            // region's whole history.
            Ok(None) => store.local_head().await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match saved {
            Ok(cursor) => break cursor,
            Err(error) => {
                tracing::warn!(region = %me, error = %error, "notifications: cannot read the cursor; retrying");
                tokio::time::sleep(interval).await;
            }
        }
    };
    if let Err(error) = outbox.set_cursor(&name, cursor, api.now()).await {
        tracing::warn!(region = %me, error = %error, "notifications: cannot save the cursor");
    }
    let mut refusals_seen = api.active_rules().map_or(0, |rules| rules.refusals());
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = commits.recv() => match received {
                Ok(event) if event.origin_region != me || !notable(&event.kind) => continue,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = ticker.tick() => {}
        }
        refusals_seen = rules_refused(&api, &notifier, refusals_seen).await;
        match catch_up(&api, &notifier, cursor).await {
            Ok(next) if next != cursor => {
                cursor = next;
                if let Err(error) = outbox.set_cursor(&name, cursor, api.now()).await {
                    // Harmless: the events re-read next time enqueue nothing new.
                    tracing::warn!(region = %me, error = %error, "notifications: cannot save the cursor");
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(region = %me, error = %error, "notifications: cannot read the log or write the outbox; retrying")
            }
        }
    }
}

fn notable(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::SlaWarning { .. }
            | EventKind::SlaBreached { .. }
            | EventKind::ShiftSummary { .. }
            | EventKind::IntakeSpike { .. }
            | EventKind::IntakeSpikeCleared { .. }
            | EventKind::TakenOver { .. }
    )
}

/// Enqueues the notifications of every local event after `cursor`; returns
/// the new cursor (the last event enqueued).
async fn catch_up(api: &TicketApi, notifier: &Notifier, mut cursor: u64) -> Result<u64, String> {
    let store = api.store();
    let me = api.region().clone();
    loop {
        let page = store
            .events_after(&me, cursor, PAGE_EVENTS_MAX)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last().map(|e| e.origin_seq) else {
            return Ok(cursor);
        };
        let mut takeovers: Vec<&EventEnvelope> = Vec::new();
        for event in &page {
            if let EventKind::TakenOver { .. } = event.kind {
                takeovers.push(event);
                continue;
            }
            if let Some(notification) = notification(api, event).await? {
                notifier
                    .notify(notification)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        for notification in takeover_notifications(api, &takeovers).await? {
            notifier
                .notify(notification)
                .await
                .map_err(|e| e.to_string())?;
        }
        cursor = last;
        if page.len() < PAGE_EVENTS_MAX as usize {
            return Ok(cursor);
        }
    }
}

fn event_key(kind: Kind, event: &EventEnvelope) -> String {
    format!("{kind}:{}:{}", event.origin_region, event.origin_seq)
}

/// A ticket as a notification line, from the store (`None` if unknown).
async fn ticket_line(
    api: &TicketApi,
    id: TicketId,
    next_step: String,
) -> Result<TicketLine, String> {
    let record = api
        .store()
        .get_ticket(id)
        .await
        .map_err(|e| e.to_string())?;
    Ok(match record {
        Some(record) => {
            let t = &record.ticket;
            TicketLine {
                id,
                subject: t.subject.clone(),
                sla: sla_words(t),
                next_step,
            }
        }
        None => TicketLine {
            id,
            subject: "(not in this region's store)".into(),
            sla: String::new(),
            next_step,
        },
    })
}

/// A ticket's SLA clocks in words.
fn sla_words(t: &meridian_core::Ticket) -> String {
    let mut parts = Vec::new();
    for metric in SlaMetric::ALL {
        if let Some(clock) = t.sla.clock(metric) {
            parts.push(format!(
                "{} due {} ({})",
                metric.label(),
                clock.due,
                clock.state
            ));
        }
    }
    if parts.is_empty() {
        "no SLA clock".into()
    } else {
        parts.join("; ")
    }
}

async fn notification(
    api: &TicketApi,
    event: &EventEnvelope,
) -> Result<Option<Notification>, String> {
    let region = event.origin_region.clone();
    let at = api.now();
    let queue_owner = || {
        api.rules()
            .and_then(|rules| rules.queue_owner_at(region.as_str(), at))
            .unwrap_or_else(|| "nobody on shift".into())
    };
    Ok(Some(match &event.kind {
        EventKind::SlaWarning { metric, due, .. } | EventKind::SlaBreached { metric, due, .. } => {
            let breached = matches!(event.kind, EventKind::SlaBreached { .. });
            let kind = if breached {
                Kind::SlaBreach
            } else {
                Kind::SlaWarning
            };
            let owner = queue_owner();
            let next_step = format!("{region} answers it now (queue owner: {owner})");
            let line = ticket_line(api, event.ticket_id, next_step).await?;
            let what = metric.label();
            let title = if breached {
                format!("SLA breached in {region}: {what} was due {due}")
            } else {
                format!("SLA at risk in {region}: {what} due {due}")
            };
            Notification {
                key: event_key(kind, event),
                kind,
                region,
                title,
                text: format!(
                    "{} {}: {what} {}",
                    short_id(line.id),
                    line.subject,
                    if breached {
                        "is past its deadline"
                    } else {
                        "has used most of its time"
                    }
                ),
                tickets: vec![line],
                target: None,
                at,
                data: serde_json::json!({ "event": event.kind.name(), "ticket_id": event.ticket_id, "metric": metric, "due": due }),
            }
        }
        EventKind::ShiftSummary { summary } => shift_summary(api, event, summary, at).await?,
        EventKind::IntakeSpike { spike } | EventKind::IntakeSpikeCleared { spike } => {
            let raised = matches!(event.kind, EventKind::IntakeSpike { .. });
            let text = crate::spike::spike_text(raised, spike);
            Notification {
                key: event_key(Kind::VolumeSpike, event),
                kind: Kind::VolumeSpike,
                region,
                title: spike_title(raised, spike),
                text,
                tickets: Vec::new(),
                target: None,
                at,
                data: serde_json::json!({ "event": event.kind.name(), "spike": spike }),
            }
        }
        _ => return Ok(None),
    }))
}

fn spike_title(raised: bool, spike: &IntakeSpike) -> String {
    if raised {
        format!(
            "Intake spike in {}: {} new {} tickets",
            spike.region,
            spike.count,
            spike.key()
        )
    } else {
        format!("Intake back to normal in {}: {}", spike.region, spike.key())
    }
}

async fn shift_summary(
    api: &TicketApi,
    event: &EventEnvelope,
    summary: &ShiftSummary,
    at: jiff::Timestamp,
) -> Result<Notification, String> {
    let mut tickets = Vec::new();
    for (id, to) in summary.handed_off.iter().take(SUMMARY_TICKETS_MAX) {
        tickets.push(ticket_line(api, *id, format!("handed to {to}")).await?);
    }
    for (id, why) in summary
        .kept
        .iter()
        .take(SUMMARY_TICKETS_MAX.saturating_sub(tickets.len()))
    {
        tickets.push(ticket_line(api, *id, format!("kept by {}: {why}", summary.region)).await?);
    }
    let next = match (&summary.next_region, &summary.next_queue_owner) {
        (Some(region), Some(owner)) => format!("Next queue owner: {owner} ({region})."),
        (Some(region), None) => format!("Next region: {region}."),
        (None, _) => "No region is on shift next.".into(),
    };
    let at_risk: Vec<String> = summary.sla_at_risk.iter().map(|id| short_id(*id)).collect();
    let mut text = format!(
        "{} handed off, {} kept, {} auto notes. {next}",
        summary.handed_off.len(),
        summary.kept.len(),
        summary.auto_notes
    );
    if !at_risk.is_empty() {
        text.push_str(&format!(" SLA at risk: {}.", at_risk.join(", ")));
    }
    Ok(Notification {
        key: event_key(Kind::ShiftSummary, event),
        kind: Kind::ShiftSummary,
        region: summary.region.clone(),
        title: format!(
            "{}'s shift ended at {}: {} tickets handed off",
            summary.region,
            summary.shift_end,
            summary.handed_off.len()
        ),
        text,
        tickets,
        target: None,
        at,
        data: serde_json::json!({ "summary": summary }),
    })
}

/// One notification per takeover (failed region and fencing token), listing
/// the tickets of this page it took.
async fn takeover_notifications(
    api: &TicketApi,
    events: &[&EventEnvelope],
) -> Result<Vec<Notification>, String> {
    let mut out: Vec<Notification> = Vec::new();
    for event in events {
        let EventKind::TakenOver {
            from,
            fencing_token,
            ..
        } = &event.kind
        else {
            continue;
        };
        let key = format!(
            "{}:{}:{from}:{fencing_token}",
            Kind::Takeover,
            event.origin_region
        );
        let next_step = format!("{} works it until {from} returns", event.origin_region);
        let line = ticket_line(api, event.ticket_id, next_step).await?;
        match out.iter_mut().find(|n| n.key == key) {
            Some(n) => n.tickets.push(line),
            None => out.push(Notification {
                key,
                kind: Kind::Takeover,
                region: event.origin_region.clone(),
                title: format!("{} took over {from}'s open tickets", event.origin_region),
                text: format!(
                    "{from} stopped renewing its lease; {} owns its open tickets now (fencing token {fencing_token}).",
                    event.origin_region
                ),
                tickets: vec![line],
                target: None,
                at: api.now(),
                data: serde_json::json!({ "event": "taken_over", "from": from, "fencing_token": fencing_token }),
            }),
        }
    }
    for n in &mut out {
        n.text
            .push_str(&format!(" Tickets taken: {}.", n.tickets.len()));
    }
    Ok(out)
}

/// Notifies each rules file refused since the last look. The key is the
/// refusal's time and count, so a refusal is announced once per process
/// (a restart with a bad file does not start at all).
async fn rules_refused(api: &TicketApi, notifier: &Notifier, seen: u64) -> u64 {
    let Some(rules) = api.active_rules() else {
        return seen;
    };
    let refusals = rules.refusals();
    if refusals <= seen {
        return seen;
    }
    let problems: Arc<[String]> = rules.refused();
    let region = api.region().clone();
    let version = rules.current().version_id();
    let n = Notification {
        key: format!(
            "{}:{region}:{}:{refusals}",
            Kind::RulesRefused,
            rules.last_refused_unix_s()
        ),
        kind: Kind::RulesRefused,
        region: region.clone(),
        title: format!("{region} refused its rules file; rules {version} stay in force"),
        text: problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        tickets: Vec::new(),
        target: None,
        at: api.now(),
        data: serde_json::json!({ "problems": &*problems, "rules_version": version }),
    };
    match notifier.notify(n).await {
        Ok(_) => refusals,
        Err(error) => {
            tracing::warn!(region = %region, error = %error, "notifications: cannot queue the rules refusal; retrying");
            seen
        }
    }
}

/// Tells people this region is back after a takeover (called by the
/// failover code once the takeover is acknowledged).
pub(crate) async fn returned(api: &TicketApi, successors: &str, fencing_token: u64) {
    let region = api.region().clone();
    let n = Notification {
        key: format!("{}:{region}:{fencing_token}", Kind::Return),
        kind: Kind::Return,
        region: region.clone(),
        title: format!("{region} is back after a takeover by {successors}"),
        text: format!(
            "{region} learnt the takeover (fencing token {fencing_token}) and leases again; \
             the tickets {successors} took stay with them until handed back."
        ),
        tickets: Vec::new(),
        target: None,
        at: api.now(),
        data: serde_json::json!({ "event": "returned", "successors": successors, "fencing_token": fencing_token }),
    };
    if let Err(error) = api.notifier().notify(n).await {
        tracing::warn!(region = %region, error = %error, "notifications: cannot queue the return");
    }
}
