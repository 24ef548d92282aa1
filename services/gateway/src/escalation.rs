//! Escalation that acts, and stranded-ticket alerts (docs/escalation.md).
//!
//! On its interval the escalation scan looks at the open tickets this
//! region owns that are `escalated` or have an SLA clock past its warning
//! point, and finds their *triggers*: the move to `escalated`, a
//! first-response clock at risk (nobody has answered), a resolution clock
//! at risk while this region is off shift. Each trigger has a stable key;
//! a ticket whose notes already carry the key was escalated for it, here
//! or in a region it went to since, so a trigger escalates once. The
//! untreated triggers of a ticket escalate together, in one step: the
//! ticket goes, by the normal handoff with an auto note that names the
//! keys and the reason, to the first region of this region's escalation
//! path that is on shift and may take it (the routing decision's own
//! filters: residency, health, skills, shift); where none is (or every
//! handoff fails), the path's on-call target is notified and an auto note
//! records it. The notification goes out before the note, with the same
//! key, so a crash between the two notifies again under the same key and
//! the outbox keeps one.
//!
//! The continuity sweep (`shift.rs`) reports each ticket it finds that
//! nobody on shift may take: logged and alerted once per stranding (key:
//! ticket, owner epoch and the owner's shift boundary), and counted in the
//! `meridian.tickets.stranded` gauge.
//!
//! Notifications go through [`Alerts`], the seam to the notification
//! service; this module never writes anything but notes and handoffs.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use jiff::Timestamp;
use meridian_core::{
    EventKind, HandoffNote, Note, RegionId, SlaClock, SlaState, Status, Ticket, TicketId,
};
use meridian_rules::{Decision, FilterReason, RegionHealth, Rules, ShiftPosition};
use meridian_store::TicketFilter;
use meridian_telemetry::opentelemetry::{
    KeyValue,
    metrics::{Meter, ObservableGauge},
};
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

use crate::{
    context::TicketApi,
    spans::{self, Step},
};

/// Tickets one escalation scan looks at; the rest wait for the next scan.
pub const ESCALATION_SCAN_MAX: usize = 1_000;
/// Keys this process remembers as handled; past this the memory starts
/// over (the notes stay the guard, so forgetting costs only reads).
const HANDLED_KEYS_MAX: usize = 100_000;
/// The author of every note this module writes.
const AUTHOR: &str = "meridian";

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// A ticket was escalated: moved along its path, or, with a `target`,
    /// nobody on the path may take it and the on-call target must.
    Escalation,
    /// Nobody on shift may take a ticket (the continuity sweep).
    Stranded,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Escalation => "escalation",
            AlertKind::Stranded => "stranded",
        }
    }
}

/// One notification for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Stable: the same trigger gives the same key after a crash, so the
    /// receiver sees it once.
    pub key: String,
    pub kind: AlertKind,
    /// The region that sends it.
    pub region: RegionId,
    pub ticket_id: TicketId,
    pub subject: String,
    pub title: String,
    pub text: String,
    /// A named target (the rules' `oncall`); `None` means every target
    /// that takes this kind.
    pub target: Option<String>,
    pub at: Timestamp,
}

/// The boxed future an [`Alerts`] implementation returns.
pub type AlertFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Where alerts go: the notification service (durable, idempotent by
/// key), or a test's in-process target. `Ok` means accepted for delivery.
pub trait Alerts: Send + Sync {
    fn notify(&self, alert: Alert) -> AlertFuture<'_>;
}

/// The gateway's alert target; without one, alerts are only logged.
#[derive(Clone, Default)]
pub struct AlertSink(Option<Arc<dyn Alerts>>);

impl AlertSink {
    pub fn new(alerts: Arc<dyn Alerts>) -> Self {
        Self(Some(alerts))
    }

    /// Whether a target is installed (else alerts are only logged).
    pub fn is_installed(&self) -> bool {
        self.0.is_some()
    }

    async fn notify(&self, alert: Alert) -> Result<(), String> {
        tracing::warn!(key = %alert.key, kind = alert.kind.as_str(), ticket_id = %alert.ticket_id,
            target = alert.target.as_deref().unwrap_or("(subscribers)"), title = %alert.title, "alert");
        match &self.0 {
            Some(alerts) => alerts.notify(alert).await,
            None => Ok(()),
        }
    }
}

impl fmt::Debug for AlertSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "AlertSink(installed)"
        } else {
            "AlertSink(log only)"
        })
    }
}

impl PartialEq for AlertSink {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for AlertSink {}

/// Shared by the escalation scan and the continuity sweep of one gateway.
pub(crate) struct Escalations {
    sink: AlertSink,
    /// Keys escalated, notified, or alerted as stranded by this process.
    handled: Mutex<HashSet<String>>,
    /// Tickets the last continuity sweep found nobody on shift may take.
    stranded: AtomicU64,
}

impl Escalations {
    pub(crate) fn new(sink: AlertSink) -> Arc<Self> {
        Arc::new(Self {
            sink,
            handled: Mutex::new(HashSet::new()),
            stranded: AtomicU64::new(0),
        })
    }

    fn is_handled(&self, key: &str) -> bool {
        self.handled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }

    fn mark_handled(&self, key: String) {
        let mut handled = self.handled.lock().unwrap_or_else(PoisonError::into_inner);
        if handled.len() >= HANDLED_KEYS_MAX {
            handled.clear();
        }
        handled.insert(key);
    }

    /// The number of stranded tickets the last sweep found.
    pub(crate) fn set_stranded(&self, count: usize) {
        self.stranded
            .store(u64::try_from(count).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn stranded_count(&self) -> u64 {
        self.stranded.load(Ordering::Relaxed)
    }

    /// Registers `meridian.tickets.stranded` for `region`; keep the gauge.
    pub(crate) fn observe(
        self: &Arc<Self>,
        meter: &Meter,
        region: &RegionId,
    ) -> ObservableGauge<u64> {
        let weak = Arc::downgrade(self);
        let label = KeyValue::new("meridian.region", region.to_string());
        meter
            .u64_observable_gauge("meridian.tickets.stranded")
            .with_description(
                "Open tickets this region holds that no region on shift may take (last continuity sweep)",
            )
            .with_unit("{ticket}")
            .with_callback(move |observer| {
                if let Some(this) = weak.upgrade() {
                    observer.observe(
                        this.stranded.load(Ordering::Relaxed),
                        std::slice::from_ref(&label),
                    );
                }
            })
            .build()
    }

    /// A ticket the sweep found nobody on shift may take: logged and
    /// alerted once per stranding. `here` is the routing decision for the
    /// ticket with every region up.
    pub(crate) async fn stranded(&self, api: &TicketApi, ticket: &Ticket, here: &Decision<'_>) {
        let me = api.region();
        let key = stranding_key(ticket, me, here);
        if self.is_handled(&key) {
            return;
        }
        let why = candidates_text(here);
        tracing::warn!(ticket_id = %ticket.id, region = %me, key = %key, why = %why,
            "ticket stranded: no region on shift may take it");
        let alert = Alert {
            key: key.clone(),
            kind: AlertKind::Stranded,
            region: me.clone(),
            ticket_id: ticket.id,
            subject: ticket.subject.clone(),
            title: format!("Stranded in {me}: {}", ticket.subject),
            text: format!(
                "Ticket {} ({}, {}) is held by {me}, which may not work it now, and no region on shift may take it: {why}. {}",
                ticket.id,
                ticket.subject,
                ticket.status,
                sla_line(ticket),
            ),
            target: None,
            at: api.now(),
        };
        match self.sink.notify(alert).await {
            Ok(()) => self.mark_handled(key),
            Err(error) => {
                tracing::warn!(ticket_id = %ticket.id, error = %error, "stranded alert not accepted; the next sweep tries again")
            }
        }
    }
}

/// One stranding: the ticket, its owner's epoch (a new owner is a new
/// stranding) and the owner's shift boundary (the next shift start while
/// off shift, the end of its on-shift time while on shift but lacking a
/// skill), so the same stranding gives the same key after a restart, and
/// the next night's is another.
pub(crate) fn stranding_key(ticket: &Ticket, me: &RegionId, here: &Decision<'_>) -> String {
    let boundary = here
        .candidates
        .iter()
        .find(|c| c.region == me)
        .and_then(|c| c.next_shift_at.or(c.shift_ends_at))
        .map_or_else(|| "none".to_owned(), |at| at.to_string());
    format!(
        "stranded:{}:{}:{boundary}",
        ticket.id,
        ticket.owner.epoch.raw()
    )
}

/// Why each region was not kept, for a log line or an alert.
fn candidates_text(decision: &Decision<'_>) -> String {
    let parts: Vec<String> = decision
        .candidates
        .iter()
        .map(|c| match c.filtered {
            None => format!("{}: eligible", c.region),
            Some(reason) => format!("{}: {}", c.region, filter_text(reason, c.next_shift_at)),
        })
        .collect();
    parts.join(", ")
}

fn filter_text(reason: FilterReason, next_shift_at: Option<Timestamp>) -> String {
    match (reason, next_shift_at) {
        (FilterReason::OffShift, Some(at)) => format!("off shift until {at}"),
        (reason, _) => reason.as_str().replace('_', " "),
    }
}

fn sla_line(ticket: &Ticket) -> String {
    let parts: Vec<String> = ticket
        .sla
        .clocks()
        .map(|(metric, c)| format!("{} due {} ({})", metric.label(), c.due, c.state))
        .collect();
    if parts.is_empty() {
        "No SLA.".to_owned()
    } else {
        format!("SLA: {}.", parts.join(", "))
    }
}

/// Why a ticket escalates, with its stable key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trigger {
    pub key: String,
    pub reason: String,
}

fn past_warning(clock: Option<&SlaClock>) -> Option<&SlaClock> {
    clock.filter(|c| matches!(c.state, SlaState::AtRisk | SlaState::Breached))
}

/// The triggers a ticket shows now, without the status one (which needs
/// the ticket's events): a first-response clock past its warning point
/// (nobody has answered), a resolution clock past it while the owner is
/// off shift. Keys name the clock by its deadline, so a restarted clock
/// is a new trigger and the same one never is.
pub(crate) fn sla_triggers(ticket: &Ticket, owner_off_shift: bool) -> Vec<Trigger> {
    let mut out = Vec::new();
    if let Some(clock) = past_warning(ticket.sla.first_response.as_ref()) {
        out.push(Trigger {
            key: format!("escalation:{}:first_response:{}", ticket.id, clock.due),
            reason: format!(
                "first response {} (due {}) and nobody has answered",
                state_words(clock.state),
                clock.due
            ),
        });
    }
    if let Some(clock) = past_warning(ticket.sla.next_response.as_ref()) {
        out.push(Trigger {
            key: format!("escalation:{}:next_response:{}", ticket.id, clock.due),
            reason: format!(
                "next response {} (due {}): the customer wrote again and nobody has answered",
                state_words(clock.state),
                clock.due
            ),
        });
    }
    if let Some(clock) = past_warning(ticket.sla.resolution.as_ref())
        && owner_off_shift
    {
        out.push(Trigger {
            key: format!("escalation:{}:resolution:{}", ticket.id, clock.due),
            reason: format!(
                "resolution {} (due {}) while {} is off shift",
                state_words(clock.state),
                clock.due,
                ticket.owner.owner_region
            ),
        });
    }
    out
}

fn state_words(state: SlaState) -> &'static str {
    match state {
        SlaState::Breached => "breached",
        _ => "at risk",
    }
}

/// The move to `escalated`: keyed by the event that made it, so the
/// regions the ticket goes to see the same key.
fn status_trigger(ticket: &Ticket, events: &[meridian_core::EventEnvelope]) -> Trigger {
    let made = events.iter().rev().find(|e| {
        matches!(&e.kind, EventKind::TicketUpdated { changes } if changes.status == Some(Status::Escalated))
    });
    let key = match made {
        Some(e) => format!(
            "escalation:{}:status:{}:{}",
            ticket.id, e.origin_region, e.origin_seq
        ),
        None => format!(
            "escalation:{}:status:epoch-{}",
            ticket.id,
            ticket.owner.epoch.raw()
        ),
    };
    Trigger {
        key,
        reason: "moved to escalated".to_owned(),
    }
}

/// The marker a note carries for a key it handled.
fn marker(key: &str) -> String {
    format!("[{key}]")
}

/// Runs until the task is dropped.
pub(crate) async fn run(api: TicketApi, interval: Duration, escalations: Arc<Escalations>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(rules) = api.rules() else { continue };
        if let Err(error) = scan(&api, &rules, &escalations).await {
            tracing::warn!(region = %api.region(), error = %error, "escalation scan failed, retrying next tick");
        }
    }
}

/// One pass; returns how many tickets escalated.
pub(crate) async fn scan(
    api: &TicketApi,
    rules: &Rules,
    escalations: &Escalations,
) -> meridian_store::Result<usize> {
    // A fenced region escalates nothing: its successor will.
    if api.check_gate().is_err() {
        return Ok(0);
    }
    let now = api.now();
    let me = api.region().clone();
    let mut seen = HashSet::new();
    let mut candidates = Vec::new();
    for filter in [
        TicketFilter {
            owner_region: Some(me.clone()),
            status: Some(Status::Escalated),
            limit: 500,
            ..TicketFilter::default()
        },
        TicketFilter {
            owner_region: Some(me.clone()),
            sla_at_risk: true,
            limit: 500,
            ..TicketFilter::default()
        },
    ] {
        let mut filter = filter;
        loop {
            let page = api.store().list_tickets(&filter).await?;
            for ticket in page.tickets {
                if ticket.status.is_open()
                    && ticket.handoff_to.is_none()
                    && candidates.len() < ESCALATION_SCAN_MAX
                    && seen.insert(ticket.id)
                {
                    candidates.push(ticket);
                }
            }
            match page.next_after {
                Some(after) if candidates.len() < ESCALATION_SCAN_MAX => filter.after = Some(after),
                _ => break,
            }
        }
    }
    if candidates.is_empty() {
        return Ok(0);
    }
    let all_up: HashMap<RegionId, RegionHealth> = rules
        .regions()
        .iter()
        .map(|r| (r.id.clone(), RegionHealth::Up))
        .collect();
    let me_off_shift = rules
        .decide(now, &all_up, &HashMap::new(), &Default::default())
        .candidates
        .iter()
        .any(|c| c.region == &me && c.position == ShiftPosition::OffShift);
    let mut escalated = 0;
    for ticket in candidates {
        let mut triggers = sla_triggers(&ticket, me_off_shift);
        if ticket.status == Status::Escalated {
            let events = api.store().events_for_ticket(ticket.id).await?;
            triggers.insert(0, status_trigger(&ticket, &events));
        }
        triggers.retain(|t| !escalations.is_handled(&t.key));
        if triggers.is_empty() {
            continue;
        }
        let Some(record) = api.store().get_ticket(ticket.id).await? else {
            continue;
        };
        // Keys already in a note were handled here or in a region the
        // ticket came from. A note written here is notified again under
        // the same key (this region's outbox keeps one), so a crash after
        // the note loses no notification; a note from another region was
        // notified by that region's outbox, and a second outbox would post
        // the key twice.
        let mut pending = Vec::new();
        for trigger in triggers {
            match record
                .notes
                .iter()
                .find(|n| n.auto && n.body.contains(&marker(&trigger.key)))
            {
                Some(note) if note.region != me => escalations.mark_handled(trigger.key),
                Some(note) => {
                    let target = if note.body.starts_with("Handoff ") {
                        None
                    } else {
                        oncall_target(rules, &note.region)
                    };
                    let alert =
                        escalation_alert(api, &record.ticket, &trigger.key, &note.body, target);
                    if escalations.sink.notify(alert).await.is_ok() {
                        escalations.mark_handled(trigger.key);
                    }
                }
                None => pending.push(trigger),
            }
        }
        if pending.is_empty() {
            continue;
        }
        let span = spans::ticket_span(Step::Escalate, &me, ticket.id, None);
        let reasons: Vec<&str> = pending.iter().map(|t| t.reason.as_str()).collect();
        span.record("meridian.reason", reasons.join("; ").as_str());
        match escalate(api, rules, escalations, &record.ticket, &pending, now)
            .instrument(span.clone())
            .await
        {
            Ok(outcome) => {
                match &outcome {
                    Outcome::HandedOff(to) => {
                        span.record("meridian.handoff.to", to.as_str());
                        spans::record_outcome(&span, "handed_off", None);
                    }
                    Outcome::OnCall(target) => {
                        spans::record_outcome(
                            &span,
                            "oncall_notified",
                            Some(target.as_deref().unwrap_or("(subscribers)")),
                        );
                    }
                }
                for trigger in pending {
                    escalations.mark_handled(trigger.key);
                }
                escalated += 1;
            }
            Err(error) => {
                spans::record_outcome(&span, "failed", Some(&error));
                tracing::warn!(ticket_id = %ticket.id, error = %error, "escalation failed; the next scan tries again");
            }
        }
    }
    Ok(escalated)
}

enum Outcome {
    HandedOff(RegionId),
    OnCall(Option<String>),
}

/// The on-call target of an escalation from `region`: its own, else that
/// of the first region of its path that names one.
fn oncall_target(rules: &Rules, region: &RegionId) -> Option<String> {
    let start = rules.region(region.as_str())?;
    start.oncall.clone().or_else(|| {
        start
            .escalation
            .iter()
            .find_map(|r| rules.region(r.as_str()).and_then(|r| r.oncall.clone()))
    })
}

fn escalation_alert(
    api: &TicketApi,
    ticket: &Ticket,
    key: &str,
    text: &str,
    target: Option<String>,
) -> Alert {
    Alert {
        key: key.to_owned(),
        kind: AlertKind::Escalation,
        region: api.region().clone(),
        ticket_id: ticket.id,
        subject: ticket.subject.clone(),
        title: match &target {
            Some(target) => format!("Escalation for {target}: {}", ticket.subject),
            None => format!("Escalated: {}", ticket.subject),
        },
        text: text.to_owned(),
        target,
        at: api.now(),
    }
}

/// One escalation step for all of `triggers`: along the path, else on-call.
async fn escalate(
    api: &TicketApi,
    rules: &Rules,
    escalations: &Escalations,
    ticket: &Ticket,
    triggers: &[Trigger],
    now: Timestamp,
) -> Result<Outcome, String> {
    let me = api.region().clone();
    let markers: Vec<String> = triggers.iter().map(|t| marker(&t.key)).collect();
    let reason = triggers
        .iter()
        .map(|t| t.reason.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let path: Vec<RegionId> = rules
        .region(me.as_str())
        .map(|r| r.escalation.clone())
        .unwrap_or_default();
    let all_up: HashMap<RegionId, RegionHealth> = rules
        .regions()
        .iter()
        .map(|r| (r.id.clone(), RegionHealth::Up))
        .collect();
    let decision = rules.decide(
        now,
        &all_up,
        &HashMap::new(),
        &crate::shift::route_request(ticket),
    );
    let mut steps: Vec<String> = Vec::new();
    for to in &path {
        let Some(candidate) = decision.candidates.iter().find(|c| c.region == to) else {
            steps.push(format!("{to}: not in the rules"));
            continue;
        };
        if let Some(filtered) = candidate.filtered {
            steps.push(format!(
                "{to}: {}",
                filter_text(filtered, candidate.next_shift_at)
            ));
            continue;
        }
        let text = format!(
            "Escalation {}: {reason}. Path of {me}: {}{to} is on shift and may take it.",
            markers.join(" "),
            steps.iter().map(|s| format!("{s}; ")).collect::<String>(),
        );
        let note = HandoffNote {
            current_status: ticket.status,
            last_action: format!("escalated by Meridian: {reason}")
                .chars()
                .take(500)
                .collect(),
            next_action: next_action(ticket),
            deadline: ticket
                .sla
                .first_response
                .filter(|c| c.state != SlaState::Met)
                .or(ticket
                    .sla
                    .next_response
                    .filter(|c| c.state != SlaState::Met))
                .or(ticket.sla.resolution)
                .map(|c| c.due),
            text,
            author: AUTHOR.into(),
            auto: true,
        }
        .fit_to_note(&me, to);
        let body = note.render(&me, to);
        match crate::handoff::offer(
            api,
            &me,
            ticket.id,
            to.clone(),
            note,
            api.meta_with(None)
                .by(meridian_core::Actor::system("escalation")),
        )
        .await
        {
            Ok(_) => {
                tracing::info!(ticket_id = %ticket.id, from = %me, to = %to, reason = %reason, "escalated along the path");
                for trigger in triggers {
                    let alert = escalation_alert(api, ticket, &trigger.key, &body, None);
                    if let Err(error) = escalations.sink.notify(alert).await {
                        // Logged only: the new owner leaves a note from
                        // this region to this region's outbox
                        // (docs/escalation.md).
                        tracing::warn!(ticket_id = %ticket.id, error = %error, "escalation notice not accepted");
                    }
                }
                return Ok(Outcome::HandedOff(to.clone()));
            }
            Err(status) => {
                tracing::warn!(ticket_id = %ticket.id, to = %to, error = %status, "escalation handoff failed; trying the next region of the path");
                steps.push(format!("{to}: handoff failed ({status})"));
            }
        }
    }
    // Nobody on the path: the on-call target, then the note that says so.
    let target = oncall_target(rules, &me);
    let path_text = if path.is_empty() {
        format!("{me} has no escalation path")
    } else if steps.is_empty() {
        format!("path of {me} is empty")
    } else {
        format!("Path of {me}: {}", steps.join("; "))
    };
    let told = match &target {
        Some(target) => format!("on-call target {target} notified"),
        None => "no on-call target in the rules; escalation subscribers notified".to_owned(),
    };
    let body = format!(
        "Escalation {}: {reason}. {path_text}. No region of the path may take it: {told}; the ticket stays with {me}.\n{}",
        markers.join(" "),
        sla_line(ticket),
    );
    for trigger in triggers {
        let alert = escalation_alert(api, ticket, &trigger.key, &body, target.clone());
        escalations.sink.notify(alert).await?;
    }
    let meta = api
        .meta_with(None)
        .by(meridian_core::Actor::system("escalation"));
    let note = Note {
        id: api.mint_note_id(meta.at).map_err(|e| e.to_string())?,
        ticket_id: ticket.id,
        region: me.clone(),
        author: AUTHOR.into(),
        body,
        created_at: meta.at,
        auto: true,
        visibility: meridian_core::Visibility::Internal,
    };
    api.store()
        .add_note(note, meta)
        .await
        .map_err(|e| e.to_string())?;
    tracing::warn!(ticket_id = %ticket.id, region = %me, target = target.as_deref().unwrap_or("(subscribers)"), reason = %reason,
        "escalation found no region of the path on shift; on-call notified");
    Ok(Outcome::OnCall(target))
}

fn next_action(ticket: &Ticket) -> String {
    let unmet = |c: &Option<meridian_core::SlaClock>| c.filter(|c| c.state != SlaState::Met);
    if let Some(first) = unmet(&ticket.sla.first_response) {
        return format!("answer the customer: first response due {}", first.due);
    }
    if let Some(next) = unmet(&ticket.sla.next_response) {
        return format!(
            "answer the customer's latest message: next response due {}",
            next.due
        );
    }
    match ticket.sla.resolution {
        Some(resolution) => format!("resolve by {}", resolution.due),
        None => "take over the escalated ticket".to_owned(),
    }
}

/// Alerts through the region's notification service (durable outbox,
/// idempotent by key): the sink every gateway uses unless a test installs
/// its own.
pub(crate) struct NotifierAlerts(pub(crate) meridian_notify::Notifier);

impl Alerts for NotifierAlerts {
    fn notify(&self, alert: Alert) -> AlertFuture<'_> {
        Box::pin(async move {
            let kind = match alert.kind {
                AlertKind::Escalation => meridian_notify::Kind::Escalation,
                AlertKind::Stranded => meridian_notify::Kind::Stranded,
            };
            let notification = meridian_notify::Notification {
                key: alert.key,
                kind,
                region: alert.region,
                title: alert.title,
                text: alert.text,
                tickets: vec![meridian_notify::TicketLine {
                    id: alert.ticket_id,
                    subject: alert.subject,
                    sla: String::new(),
                    next_step: String::new(),
                }],
                target: alert.target,
                at: alert.at,
                data: serde_json::Value::Null,
            };
            self.0
                .notify(notification)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use meridian_core::{Epoch, Ownership, Priority, SlaDeadlines, Tier};

    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn ticket(first: SlaState, resolution: SlaState) -> Ticket {
        let created = at("2026-06-02T14:00:00Z");
        let clock = |due: &str, state| SlaClock {
            due: at(due),
            warn_at: at(due),
            state,
        };
        Ticket {
            id: TicketId::new_v7(created, [7; 10]),
            subject: "Database down".into(),
            body: String::new(),
            customer: "acme".into(),
            tier: Tier::new("enterprise").unwrap(),
            skills: BTreeSet::new(),
            language: "en".into(),
            residency: BTreeSet::new(),
            status: Status::New,
            assignee: None,
            priority: Priority::Normal,
            owner: Ownership {
                owner_region: RegionId::new("us-east").unwrap(),
                epoch: Epoch::initial(0),
            },
            handoff_to: None,
            sla: SlaDeadlines {
                first_response: Some(clock("2026-06-02T14:30:00Z", first)),
                next_response: None,
                resolution: Some(clock("2026-06-02T22:00:00Z", resolution)),
            },
            created_at: created,
            updated_at: created,
        }
    }

    fn keys(triggers: &[Trigger]) -> Vec<String> {
        let id = ticket(SlaState::Running, SlaState::Running).id;
        triggers
            .iter()
            .map(|t| t.key.replace(&id.to_string(), "T"))
            .collect()
    }

    #[test]
    fn sla_triggers_follow_the_clocks_and_the_shift() {
        let running = ticket(SlaState::Running, SlaState::Running);
        assert!(sla_triggers(&running, true).is_empty(), "nothing at risk");

        // First response at risk: nobody has answered, on shift or not.
        let warned = ticket(SlaState::AtRisk, SlaState::Running);
        assert_eq!(
            keys(&sla_triggers(&warned, false)),
            ["escalation:T:first_response:2026-06-02T14:30:00Z"]
        );
        // The breach of the same clock is the same trigger.
        let breached = ticket(SlaState::Breached, SlaState::Running);
        assert_eq!(
            sla_triggers(&breached, false)[0].key,
            sla_triggers(&warned, false)[0].key
        );
        // Answered: no first-response trigger; resolution at risk counts
        // only while the owner is off shift.
        let resolution = ticket(SlaState::Met, SlaState::AtRisk);
        assert!(sla_triggers(&resolution, false).is_empty());
        assert_eq!(
            keys(&sla_triggers(&resolution, true)),
            ["escalation:T:resolution:2026-06-02T22:00:00Z"]
        );
        assert!(
            sla_triggers(&resolution, true)[0]
                .reason
                .contains("while us-east is off shift")
        );
        let paused = ticket(SlaState::Paused, SlaState::Paused);
        assert!(sla_triggers(&paused, true).is_empty());
    }

    #[test]
    fn a_handled_key_is_found_in_its_note_only() {
        let key = "escalation:T:first_response:2026-06-02T14:30:00Z";
        let body = format!(
            "Handoff us-east → eu-west (auto)\n\nEscalation {}: …",
            marker(key)
        );
        assert!(body.contains(&marker(key)));
        assert!(!body.contains(&marker("escalation:T:first_response:2026-06-02T14:31:00Z")));
        // A key that is a prefix of another is not mistaken for it.
        assert!(!body.contains(&marker("escalation:T:first_response")));
    }
}
