//! Hooks for the benchmark suite (`benches/`), not an API: the real
//! continuity sweep over a region's store, without the gateway's tasks
//! around it, so its cost can be timed one sweep at a time; and the real
//! notifier and delivery tasks over a store the benchmark writes to, so
//! the time from an event's commit to its receiver can be measured.

use std::sync::Arc;

use meridian_core::{Clock, RegionId};
use meridian_notify::{DeliverySettings, Notifier, Target, meridian_outbox::RetryPolicy};
use meridian_rules::Rules;
use meridian_rules_source::ActiveRules;
use meridian_store::Store;

use crate::{
    config::Limits,
    context::{ApiParts, TicketApi, WriteGate},
    escalation::{AlertSink, Escalations},
    metrics::GatewayMetrics,
    watch::WatchCaps,
};

/// One region's sweep, ready to run again and again.
pub struct SweepBench {
    api: TicketApi,
    rules: Arc<Rules>,
    escalations: Arc<Escalations>,
    _stopping: tokio::sync::watch::Sender<bool>,
}

impl SweepBench {
    /// `region` must be one of `rules`' regions; `sink` receives the
    /// stranded-ticket alerts.
    pub fn new(
        region: RegionId,
        store: Store,
        rules: Rules,
        clock: Arc<dyn Clock>,
        sink: AlertSink,
    ) -> Option<Self> {
        let (api, stop) = bench_api(region, store, &rules, clock, Notifier::disabled())?;
        Some(Self {
            api,
            rules: Arc::new(rules),
            escalations: Escalations::new(sink),
            _stopping: stop,
        })
    }

    /// One continuity sweep at the clock's instant; returns the number of
    /// stranded tickets it found.
    pub async fn sweep(&self) -> u64 {
        crate::shift::sweep(&self.api, &self.rules, self.api.now(), &self.escalations).await;
        self.escalations.stranded_count()
    }
}

/// A region's ticket API as the gateway builds it, without a mesh or
/// replication; `None` if `region` is not one of `rules`' regions.
fn bench_api(
    region: RegionId,
    store: Store,
    rules: &Rules,
    clock: Arc<dyn Clock>,
    notifier: Notifier,
) -> Option<(TicketApi, tokio::sync::watch::Sender<bool>)> {
    let region_index = rules.region(region.as_str())?.index;
    let regions = rules.regions().iter().map(|r| r.id.clone()).collect();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let meter = meridian_telemetry::opentelemetry::global::meter("meridian-bench");
    let limits = Limits::default();
    let api = TicketApi::new(ApiParts {
        metrics: GatewayMetrics::new(&meter, &region),
        region,
        region_index,
        store,
        clock,
        rules: Some(Arc::new(ActiveRules::new(rules.clone()))),
        roster: None,
        stopping,
        mesh: None,
        gate: WriteGate::default(),
        replicator: None,
        peer_tiers: Vec::new(),
        watch_caps: WatchCaps::new(
            limits.watch_streams_per_principal_max,
            limits.watch_streams_max,
        ),
        watch_stall: limits.watch_stall_timeout,
        regions,
        notifier,
    });
    Some((api, stop))
}

/// One region's notifier and delivery tasks, as the gateway runs them,
/// over a store the benchmark writes events into: the path from an
/// event's commit to the receiver.
pub struct NotifyBench {
    api: TicketApi,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _stopping: tokio::sync::watch::Sender<bool>,
}

impl NotifyBench {
    /// Opens the region's outbox on `store_url` (the store's own database)
    /// and starts the notifier and the delivery task for `targets`.
    pub async fn start(
        region: RegionId,
        store: Store,
        store_url: &str,
        rules: Rules,
        clock: Arc<dyn Clock>,
        targets: Vec<Target>,
    ) -> Result<Self, String> {
        let notifier = Notifier::open(store_url, targets, RetryPolicy::default())
            .await
            .map_err(|e| e.to_string())?;
        let (api, stop) = bench_api(region, store, &rules, clock, notifier.clone())
            .ok_or("the region is not in the rules")?;
        let settings = DeliverySettings::default();
        let tasks = vec![
            tokio::spawn(crate::notifications::run(
                api.clone(),
                settings.poll_interval,
            )),
            tokio::spawn(async move {
                if let Err(error) = notifier.deliver(settings, None).await {
                    tracing::error!(error = %error, "bench: notification delivery stopped");
                }
            }),
        ];
        // The notifier starts from the log's head on its first start: wait
        // until it has saved that cursor, or the first events go unnoticed.
        let name = crate::notifications::cursor_name(&api);
        let outbox = api
            .notifier()
            .outbox()
            .cloned()
            .ok_or("no outbox: the notifier has no target")?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while outbox
            .cursor(&name)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
        {
            if tokio::time::Instant::now() > deadline {
                return Err("the notifier saved no cursor within 10 s".into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(Self {
            api,
            tasks,
            _stopping: stop,
        })
    }

    /// The store whose commits are notified.
    pub fn store(&self) -> &Store {
        self.api.store()
    }
}

impl Drop for NotifyBench {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
