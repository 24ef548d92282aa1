//! The gateway's metrics (OpenTelemetry instruments, read by `/metrics`
//! and pushed over OTLP). Every series carries `meridian.region`, so one
//! process serving several regions (`meridian up`) exports them side by
//! side.
//!
//! - Counted as they happen: handoffs by outcome (`meridian.handoffs`),
//!   their latency (`meridian.handoff.latency`, seconds, offer to answer),
//!   and handoff notes by `auto` (`meridian.handoff.notes`; the share of
//!   auto notes is `auto="true"` over the sum).
//! - Observed on collection, from memory only: replication lag per peer in
//!   events and seconds (the replicator's acked and applied cursors),
//!   the rules version in force, whether the file on disk is refused
//!   (and how often and when it was), whether owner-scoped writes are fenced
//!   (the lease), and queue depth per status and SLAs at risk and breached
//!   per tier from the last count.
//! - The count: a task reads this region's owned tickets from the store
//!   every `[telemetry] queue_scan_interval_ms` (a page of 500 at a time,
//!   at most [`SCAN_TICKETS_MAX`]), so a scrape never touches the database.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use meridian_core::{RegionId, SlaState, Status};
use meridian_replication::Replicator;
use meridian_store::{Store, TicketFilter};
use meridian_telemetry::opentelemetry::{
    KeyValue,
    metrics::{Counter, Histogram, Meter, ObservableCounter, ObservableGauge},
};

use crate::context::TicketApi;

/// The most tickets one count reads; a larger queue is reported as this
/// many (and logged), rather than letting the count grow without bound.
pub const SCAN_TICKETS_MAX: usize = 100_000;
const SCAN_PAGE: u32 = 500;

/// Handoff latency buckets, in seconds: a handoff is one or two
/// inter-region round trips plus a commit on each side.
const LATENCY_BUCKETS_S: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How a handoff asked by this region ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HandoffOutcome {
    Accepted,
    Refused,
    /// The target did not answer; the offer stays pending.
    Unanswered,
    Failed,
}

impl HandoffOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HandoffOutcome::Accepted => "accepted",
            HandoffOutcome::Refused => "refused",
            HandoffOutcome::Unanswered => "unanswered",
            HandoffOutcome::Failed => "failed",
        }
    }
}

/// The instruments a gateway records into as things happen.
pub(crate) struct GatewayMetrics {
    region: KeyValue,
    handoffs: Counter<u64>,
    handoff_latency: Histogram<f64>,
    handoff_notes: Counter<u64>,
    conflicts: Counter<u64>,
}

impl GatewayMetrics {
    pub(crate) fn new(meter: &Meter, region: &RegionId) -> Self {
        Self {
            region: KeyValue::new("meridian.region", region.to_string()),
            handoffs: meter
                .u64_counter("meridian.handoffs")
                .with_description("Handoffs this region asked for, by outcome")
                .with_unit("{handoff}")
                .build(),
            handoff_latency: meter
                .f64_histogram("meridian.handoff.latency")
                .with_description("From the offer to the target's answer, by outcome")
                .with_unit("s")
                .with_boundaries(LATENCY_BUCKETS_S.to_vec())
                .build(),
            handoff_notes: meter
                .u64_counter("meridian.handoff.notes")
                .with_description("Handoff notes written with new offers, by whether they were generated (auto)")
                .with_unit("{note}")
                .build(),
            conflicts: meter
                .u64_counter("meridian.conflicts")
                .with_description("Stale owner-scoped writes this region recorded as conflicts, by the writing region")
                .with_unit("{conflict}")
                .build(),
        }
    }

    pub(crate) fn handoff(&self, outcome: HandoffOutcome, latency: Duration) {
        let attributes = [
            self.region.clone(),
            KeyValue::new("outcome", outcome.as_str()),
        ];
        self.handoffs.add(1, &attributes);
        self.handoff_latency
            .record(latency.as_secs_f64(), &attributes);
    }

    /// `count` conflicts recorded here, written by `origin` ("unknown" for
    /// ones a lagging watcher missed).
    pub(crate) fn conflicts(&self, origin: &str, count: u64) {
        self.conflicts.add(
            count,
            &[
                self.region.clone(),
                KeyValue::new("origin", origin.to_owned()),
            ],
        );
    }

    pub(crate) fn handoff_note(&self, auto: bool) {
        self.handoff_notes
            .add(1, &[self.region.clone(), KeyValue::new("auto", auto)]);
    }
}

/// The last count of this region's queue.
#[derive(Debug, Default)]
struct QueueCount {
    by_status: BTreeMap<&'static str, u64>,
    at_risk: BTreeMap<String, u64>,
    breached: BTreeMap<String, u64>,
}

/// The observable gauges and the task that counts the queue; dropping it
/// stops the task (the gauges then report nothing).
pub(crate) struct Observed {
    _gauges: Vec<ObservableGauge<u64>>,
    _lag_seconds: ObservableGauge<f64>,
    _refusals: ObservableCounter<u64>,
    _count: Arc<Mutex<QueueCount>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Registers the observable gauges of `api`'s region and starts counting
/// its queue every `scan_interval`. The callbacks hold weak references, so
/// a stopped gateway reports nothing rather than being kept alive.
pub(crate) fn observe(
    meter: &Meter,
    api: &TicketApi,
    replicator: Option<Replicator>,
    scan_interval: Duration,
) -> Observed {
    let region = KeyValue::new("meridian.region", api.region().to_string());
    let count = Arc::new(Mutex::new(QueueCount::default()));
    let mut gauges = Vec::new();

    let (weak, r) = (Arc::downgrade(&count), region.clone());
    gauges.push(
        meter
            .u64_observable_gauge("meridian.queue.depth")
            .with_description("Tickets this region owns, by status (last count)")
            .with_unit("{ticket}")
            .with_callback(move |observer| {
                with_count(&weak, |count| {
                    for (status, n) in &count.by_status {
                        observer.observe(*n, &[r.clone(), KeyValue::new("status", *status)]);
                    }
                });
            })
            .build(),
    );
    for (name, description, breached) in [
        (
            "meridian.sla.at_risk",
            "Open tickets this region owns with an SLA clock past its warning, by tier",
            false,
        ),
        (
            "meridian.sla.breached",
            "Open tickets this region owns with an SLA clock past its deadline, by tier",
            true,
        ),
    ] {
        let (weak, r, weak_api) = (Arc::downgrade(&count), region.clone(), api.downgrade());
        gauges.push(
            meter
                .u64_observable_gauge(name)
                .with_description(description)
                .with_unit("{ticket}")
                .with_callback(move |observer| {
                    // Every tier of the rules in force has a series, at
                    // zero until a ticket of it is at risk: zero is the
                    // truth, and alerts on absent series misfire.
                    let mut by_tier: BTreeMap<String, u64> = weak_api
                        .upgrade()
                        .and_then(|api| api.rules())
                        .map(|rules| {
                            rules
                                .tiers()
                                .iter()
                                .map(|t| (t.tier.to_string(), 0))
                                .collect()
                        })
                        .unwrap_or_default();
                    with_count(&weak, |count| {
                        let counted = if breached {
                            &count.breached
                        } else {
                            &count.at_risk
                        };
                        by_tier.extend(counted.iter().map(|(tier, n)| (tier.clone(), *n)));
                    });
                    for (tier, n) in by_tier {
                        observer.observe(n, &[r.clone(), KeyValue::new("tier", tier)]);
                    }
                })
                .build(),
        );
    }
    let weak_replicator = replicator.as_ref().map(Replicator::downgrade);
    let (w, r) = (weak_replicator.clone(), region.clone());
    gauges.push(
        meter
            .u64_observable_gauge("meridian.replication.lag.events")
            .with_description("Events of this region's log a peer has not acknowledged")
            .with_unit("{event}")
            .with_callback(move |observer| {
                if let Some(replicator) = w.as_ref().and_then(|w| w.upgrade()) {
                    for peer in replicator.status() {
                        observer.observe(
                            peer.lag_events,
                            &[r.clone(), KeyValue::new("peer", peer.region.to_string())],
                        );
                    }
                }
            })
            .build(),
    );
    let (w, r) = (weak_replicator, region.clone());
    let lag_seconds = meter
        .f64_observable_gauge("meridian.replication.lag")
        .with_description(
            "Age of the oldest event of this region's log a peer has not acknowledged",
        )
        .with_unit("s")
        .with_callback(move |observer| {
            if let Some(replicator) = w.as_ref().and_then(|w| w.upgrade()) {
                for peer in replicator.status() {
                    observer.observe(
                        peer.lag.as_secs_f64(),
                        &[r.clone(), KeyValue::new("peer", peer.region.to_string())],
                    );
                }
            }
        })
        .build();
    let (weak_api, r) = (api.downgrade(), region.clone());
    gauges.push(
        meter
            .u64_observable_gauge("meridian.region.on_shift")
            .with_description(
                "1 while this region is on shift by the rules in force (overlap not counted)",
            )
            .with_callback(move |observer| {
                let Some(api) = weak_api.upgrade() else {
                    return;
                };
                if let Some(on_shift) = api
                    .rules()
                    .and_then(|rules| rules.on_shift(api.region().as_str(), api.now()))
                {
                    observer.observe(u64::from(on_shift), std::slice::from_ref(&r));
                }
            })
            .build(),
    );
    // One read of the rules in force per collection, so a scrape sees one
    // version: never the old and the new side by side.
    let (weak_api, r) = (api.downgrade(), region.clone());
    gauges.push(
        meter
            .u64_observable_gauge("meridian.rules.version")
            .with_description("The rules in force (value 1; the version is the label)")
            .with_callback(move |observer| {
                if let Some(rules) = weak_api.upgrade().and_then(|api| api.rules()) {
                    observer.observe(
                        1,
                        &[r.clone(), KeyValue::new("version", rules.version_id())],
                    );
                }
            })
            .build(),
    );
    let (weak_api, r) = (api.downgrade(), region.clone());
    gauges.push(
        meter
            .u64_observable_gauge("meridian.rules.refused")
            .with_description(
                "1 while the rules file on disk is refused and older rules stay in force",
            )
            .with_callback(move |observer| {
                if let Some(active) = weak_api.upgrade().and_then(|api| api.active_rules()) {
                    observer.observe(
                        u64::from(!active.refused().is_empty()),
                        std::slice::from_ref(&r),
                    );
                }
            })
            .build(),
    );
    let (weak_api, r) = (api.downgrade(), region.clone());
    gauges.push(
        meter
            .u64_observable_gauge("meridian.rules.last_refused_timestamp")
            .with_description(
                "When a rules file was last refused, in seconds since the Unix epoch (0: never)",
            )
            .with_unit("s")
            .with_callback(move |observer| {
                if let Some(active) = weak_api.upgrade().and_then(|api| api.active_rules()) {
                    observer.observe(active.last_refused_unix_s(), std::slice::from_ref(&r));
                }
            })
            .build(),
    );
    let (weak_api, r) = (api.downgrade(), region.clone());
    let refusals = meter
        .u64_observable_counter("meridian.rules.refusals")
        .with_description("Rules files refused since start (each new bad content counts once)")
        .with_callback(move |observer| {
            if let Some(active) = weak_api.upgrade().and_then(|api| api.active_rules()) {
                observer.observe(active.refusals(), std::slice::from_ref(&r));
            }
        })
        .build();
    let (weak_api, r) = (api.downgrade(), region);
    gauges.push(
        meter
            .u64_observable_gauge("meridian.lease.fenced")
            .with_description(
                "1 while this region refuses owner-scoped writes (its lease may have lapsed)",
            )
            .with_callback(move |observer| {
                if let Some(api) = weak_api.upgrade() {
                    observer.observe(
                        u64::from(api.check_gate().is_err()),
                        std::slice::from_ref(&r),
                    );
                }
            })
            .build(),
    );

    let task = tokio::spawn(count_queue(
        api.store().clone(),
        api.region().clone(),
        Arc::downgrade(&count),
        scan_interval,
    ));
    Observed {
        _gauges: gauges,
        _lag_seconds: lag_seconds,
        _refusals: refusals,
        _count: count,
        task,
    }
}

fn with_count(count: &Weak<Mutex<QueueCount>>, read: impl FnOnce(&QueueCount)) {
    if let Some(count) = count.upgrade() {
        read(&count.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Counts the queue now and then every `interval`, until the gauges go.
async fn count_queue(
    store: Store,
    region: RegionId,
    into: Weak<Mutex<QueueCount>>,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let counted = match count_once(&store, &region).await {
            Ok(counted) => counted,
            Err(error) => {
                tracing::debug!(region = %region, %error, "cannot count the queue for metrics; keeping the last count");
                continue;
            }
        };
        let Some(into) = into.upgrade() else { return };
        *into.lock().unwrap_or_else(PoisonError::into_inner) = counted;
    }
}

async fn count_once(store: &Store, region: &RegionId) -> meridian_store::Result<QueueCount> {
    let mut count = QueueCount::default();
    for status in Status::ALL {
        count.by_status.insert(status.as_str(), 0);
    }
    let mut after = None;
    let mut seen = 0usize;
    loop {
        let filter = TicketFilter {
            owner_region: Some(region.clone()),
            after,
            limit: SCAN_PAGE,
            ..TicketFilter::default()
        };
        let page = store.list_tickets(&filter).await?;
        for ticket in &page.tickets {
            *count.by_status.entry(ticket.status.as_str()).or_default() += 1;
            if matches!(ticket.status, Status::Solved | Status::Closed) {
                continue;
            }
            let states: Vec<SlaState> = ticket.sla.clocks().map(|(_, clock)| clock.state).collect();
            if states.contains(&SlaState::Breached) {
                *count.breached.entry(ticket.tier.to_string()).or_default() += 1;
            } else if states.contains(&SlaState::AtRisk) {
                *count.at_risk.entry(ticket.tier.to_string()).or_default() += 1;
            }
        }
        seen += page.tickets.len();
        match page.next_after {
            Some(next) if seen < SCAN_TICKETS_MAX => after = Some(next),
            Some(_) => {
                tracing::warn!(region = %region, limit = SCAN_TICKETS_MAX, "queue larger than one metrics count reads; gauges show the first part");
                break;
            }
            None => break,
        }
        // Leave room for the region's own requests between pages.
        tokio::task::yield_now().await;
    }
    Ok(count)
}
