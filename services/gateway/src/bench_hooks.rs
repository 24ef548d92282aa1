//! Hooks for the benchmark suite (`benches/`), not an API: the real
//! continuity sweep over a region's store, without the gateway's tasks
//! around it, so its cost can be timed one sweep at a time.

use std::sync::Arc;

use meridian_core::{Clock, RegionId};
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
        let region_index = rules.region(region.as_str())?.index;
        let regions = rules.regions().iter().map(|r| r.id.clone()).collect();
        let rules = Arc::new(rules);
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let meter = meridian_telemetry::opentelemetry::global::meter("meridian-bench");
        let limits = Limits::default();
        let api = TicketApi::new(ApiParts {
            metrics: GatewayMetrics::new(&meter, &region),
            region,
            region_index,
            store,
            clock,
            rules: Some(Arc::new(ActiveRules::new(rules.as_ref().clone()))),
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
            notifier: meridian_notify::Notifier::disabled(),
        });
        Some(Self {
            api,
            rules,
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
