//! Failover on the gateway's side: the region's lease, self-fencing, taking
//! over a failed region's tickets, and coming back after being taken over.
//!
//! - **Lease.** With a coordinator configured, the gateway holds its
//!   region's lease for as long as it runs and installs a [`WriteGate`]
//!   backed by it: owner-scoped writes are allowed only while
//!   [`Lease::may_write`] holds, which turns false before the coordinator
//!   can let the lease expire (the lease fences itself when renewals stop
//!   getting through). Notes are never gated. Until the first lease is
//!   granted the gateway serves reads and notes and refuses owner-scoped
//!   writes, so a restart within the old lease's ttl never writes beside a
//!   process that might still hold it.
//! - **Takeover.** When the router has recorded that this region succeeds a
//!   failed one, it calls `MeshService.TakeOver` here; [`Failover::take_over`]
//!   checks the coordinator's record (the token must be the pending one and
//!   name this region among its successors) and writes `TakenOver` at the
//!   next epoch this region owns for every open ticket the failed region
//!   owns in this region's projection and that is this region's to take.
//!   The store fences each one on the failed region still owning it below
//!   that epoch, so a second call takes nothing new. A takeover lists
//!   several successors (the primary first): each ticket is taken by the
//!   first one its residency allows, so the successors' shares are
//!   disjoint.
//! - **Returning.** A region with a takeover awaiting its acknowledgement
//!   must learn the epochs the successors minted before it leases again: it
//!   asks every successor to finish the takeover (the same idempotent
//!   `TakeOver`, which answers where the takeover ends in that successor's
//!   log), waits until replication has applied each log that far,
//!   acknowledges the takeover, and only then takes its lease. A successor
//!   that does not answer holds the return up only while one of the
//!   region's open tickets is that successor's to take. From then on its
//!   own stale writes (made before it fenced, replicated late) arrive
//!   everywhere at an epoch below the successor's and are kept as
//!   conflicts.
//!
//! Asking the successor, rather than waiting for the router's call to have
//! happened, keeps the return working when the router died between
//! recording the takeover and calling the successor: the takeover is
//! decided once, in the coordinator, and carrying it out is idempotent.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use futures::{StreamExt, stream};
use meridian_coord::{
    Coordinator, EtcdConfig, EtcdCoordinator, Lease, LeaseState, LocalConfig, LocalCoordinator,
    Revision, Takeover,
};
use meridian_core::{Clock, RegionId, Status as TicketStatus};
use meridian_proto::v1;
use meridian_replication::Replicator;
use meridian_store::TicketFilter;
use serde::Deserialize;
use tokio::sync::watch;
use tracing::Instrument;

use crate::{
    Error, Result, WriteGate,
    context::TicketApi,
    error::{ApiError, from_store},
    peers::MeshLink,
};

pub const LEASE_TTL_MS_DEFAULT: u64 = 5_000;
pub const SAFETY_MARGIN_MS_DEFAULT: u64 = 1_500;
pub const COORDINATOR_RPC_TIMEOUT_MS_DEFAULT: u64 = 2_000;
pub const CATCH_UP_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Tickets read per page while taking a region over.
const TAKEOVER_PAGE: u32 = 500;
/// `TakenOver` writes in flight at once: the store's writer commits
/// concurrent writes in one transaction, so this is its batch size.
const TAKEOVER_WRITES_IN_FLIGHT: usize = 64;
/// Pauses between attempts when the coordinator or the successor fails:
/// capped low, because a fenced region is down until an attempt succeeds.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How the gateway reaches the coordination store, and its lease.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    pub backend: CoordinatorBackend,
    /// The lease's time-to-live: how long after this gateway's last
    /// successful renewal the coordinator may let the region's lease expire
    /// (and the router take the region over). etcd rounds up to whole
    /// seconds.
    pub lease_ttl: Duration,
    /// How long one attempt of a returning region to learn its takeover
    /// (the successor's answer, then replication) may take before it is
    /// retried.
    pub catch_up_timeout: Duration,
}

/// Which coordinator.
#[derive(Debug, Clone)]
pub enum CoordinatorBackend {
    /// A real etcd cluster (v3 gRPC API): what regions in separate
    /// processes share.
    Etcd {
        endpoints: Vec<String>,
        /// Where Meridian's keys live; `None` for the default.
        key_prefix: Option<String>,
        /// How long before the lease's earliest possible expiry this
        /// gateway fences itself.
        safety_margin: Duration,
        /// The deadline of each call to etcd.
        rpc_timeout: Duration,
    },
    /// A private in-process coordinator on the gateway's clock: a lone
    /// gateway, or trying the configuration out. Nothing else sees it.
    Local { safety_margin: Duration },
    /// A coordinator the caller built and shares, like `meridian up`'s one
    /// in-process coordinator for its three gateways and router. Its own
    /// settings decide the safety margin. Not read from a file.
    Shared(SharedCoordinator),
}

/// A coordinator shared by several services in one process.
#[derive(Clone)]
pub struct SharedCoordinator(pub Arc<dyn Coordinator>);

impl std::fmt::Debug for SharedCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedCoordinator")
    }
}

impl CoordinatorSettings {
    /// Settings for a coordinator the caller shares, with default timings.
    pub fn shared(coordinator: Arc<dyn Coordinator>) -> Self {
        CoordinatorSettings {
            backend: CoordinatorBackend::Shared(SharedCoordinator(coordinator)),
            lease_ttl: Duration::from_millis(LEASE_TTL_MS_DEFAULT),
            catch_up_timeout: Duration::from_millis(CATCH_UP_TIMEOUT_MS_DEFAULT),
        }
    }
}

/// The `[coordinator]` section of the gateway's file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CoordinatorSection {
    kind: CoordinatorKind,
    #[serde(default)]
    endpoints: Vec<String>,
    key_prefix: Option<String>,
    lease_ttl_ms: Option<u64>,
    safety_margin_ms: Option<u64>,
    rpc_timeout_ms: Option<u64>,
    catch_up_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CoordinatorKind {
    Etcd,
    Local,
}

impl CoordinatorSection {
    pub(crate) fn into_settings(self, file: &str) -> Result<CoordinatorSettings> {
        let millis = |key: &str, value: Option<u64>, default: u64| match value {
            Some(0) => Err(Error::Config(format!(
                "{file}: coordinator.{key}: must be at least 1"
            ))),
            Some(value) => Ok(Duration::from_millis(value)),
            None => Ok(Duration::from_millis(default)),
        };
        let lease_ttl = millis("lease_ttl_ms", self.lease_ttl_ms, LEASE_TTL_MS_DEFAULT)?;
        let safety_margin = millis(
            "safety_margin_ms",
            self.safety_margin_ms,
            SAFETY_MARGIN_MS_DEFAULT,
        )?;
        if safety_margin >= lease_ttl {
            return Err(Error::Config(format!(
                "{file}: coordinator.safety_margin_ms ({} ms) must be shorter than coordinator.lease_ttl_ms ({} ms), \
                 or the gateway is fenced as soon as it leases",
                safety_margin.as_millis(),
                lease_ttl.as_millis()
            )));
        }
        let rpc_timeout = millis(
            "rpc_timeout_ms",
            self.rpc_timeout_ms,
            COORDINATOR_RPC_TIMEOUT_MS_DEFAULT,
        )?;
        let catch_up_timeout = millis(
            "catch_up_timeout_ms",
            self.catch_up_timeout_ms,
            CATCH_UP_TIMEOUT_MS_DEFAULT,
        )?;
        let backend = match self.kind {
            CoordinatorKind::Etcd => {
                if self.endpoints.is_empty() {
                    return Err(Error::Config(format!(
                        "{file}: coordinator.endpoints: etcd needs at least one endpoint, like \"http://127.0.0.1:2379\""
                    )));
                }
                CoordinatorBackend::Etcd {
                    endpoints: self.endpoints,
                    key_prefix: self.key_prefix,
                    safety_margin,
                    rpc_timeout,
                }
            }
            CoordinatorKind::Local => {
                if !self.endpoints.is_empty() || self.key_prefix.is_some() {
                    return Err(Error::Config(format!(
                        "{file}: coordinator: endpoints and key_prefix are for kind = \"etcd\"; the local coordinator has none"
                    )));
                }
                CoordinatorBackend::Local { safety_margin }
            }
        };
        Ok(CoordinatorSettings {
            backend,
            lease_ttl,
            catch_up_timeout,
        })
    }
}

/// The region's lease and takeovers, for one gateway.
pub(crate) struct Failover {
    region: RegionId,
    coordinator: Arc<dyn Coordinator>,
    lease_ttl: Duration,
    catch_up_timeout: Duration,
    slot: Arc<LeaseSlot>,
    /// One takeover carried out at a time: the router and a returning
    /// region may ask at once, and the count each gets should be honest.
    taking_over: tokio::sync::Mutex<()>,
}

impl Failover {
    /// Connects to the coordinator (etcd connects lazily, so this succeeds
    /// while etcd is down; a bad endpoint is refused here).
    pub(crate) async fn start(
        settings: &CoordinatorSettings,
        region: RegionId,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>> {
        let coordinator: Arc<dyn Coordinator> = match &settings.backend {
            CoordinatorBackend::Etcd {
                endpoints,
                key_prefix,
                safety_margin,
                rpc_timeout,
            } => {
                let mut config = EtcdConfig::new(endpoints.clone());
                if let Some(prefix) = key_prefix {
                    config.key_prefix.clone_from(prefix);
                }
                config.safety_margin = *safety_margin;
                config.rpc_timeout = *rpc_timeout;
                config.connect_timeout = config.connect_timeout.min(*rpc_timeout);
                Arc::new(
                    EtcdCoordinator::connect(config)
                        .await
                        .map_err(|e| Error::Config(format!("coordinator: {e}")))?,
                )
            }
            CoordinatorBackend::Local { safety_margin } => Arc::new(LocalCoordinator::new(
                clock,
                LocalConfig {
                    safety_margin: *safety_margin,
                    ..LocalConfig::default()
                },
            )),
            CoordinatorBackend::Shared(shared) => shared.0.clone(),
        };
        let slot = Arc::new(LeaseSlot::new(region.clone()));
        Ok(Arc::new(Failover {
            region,
            coordinator,
            lease_ttl: settings.lease_ttl,
            catch_up_timeout: settings.catch_up_timeout,
            slot,
            taking_over: tokio::sync::Mutex::new(()),
        }))
    }

    /// The gate owner-scoped writes pass: open only while the region's
    /// lease may write.
    pub(crate) fn write_gate(&self) -> WriteGate {
        let slot = self.slot.clone();
        WriteGate::new(move || slot.fenced_reason())
    }

    /// Holds the region's lease until `stopping` turns true: learns and
    /// acknowledges a pending takeover first, leases, logs fencing and
    /// unfencing, and leases again whenever the lease is lost. On stop the
    /// lease is dropped without being revoked, like a crashed process's:
    /// it expires after its ttl, and a restart within that ttl waits.
    pub(crate) async fn run(
        self: Arc<Self>,
        api: TicketApi,
        link: Option<Arc<MeshLink>>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let mut retry = RETRY_MIN;
        loop {
            let step = tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => break,
                step = self.lease_or_learn(&api, link.as_deref()) => step,
            };
            match step {
                Ok(lease) => {
                    retry = RETRY_MIN;
                    if self.hold(lease, &mut stopping).await {
                        break;
                    }
                }
                Err(Wait::Now) => {}
                Err(wait) => {
                    let pause = match wait {
                        Wait::Backoff => {
                            let pause = retry;
                            retry = (retry * 2).min(RETRY_MAX);
                            pause
                        }
                        Wait::For(pause) => pause,
                        Wait::Now => Duration::ZERO,
                    };
                    tokio::select! {
                        _ = stopping.wait_for(|stop| *stop) => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        self.slot.wait("the gateway is stopping");
        tracing::info!(region = %self.region, "lease handle dropped: no more renewals");
    }

    /// One attempt to get the region's lease, learning a pending takeover
    /// of the region first.
    async fn lease_or_learn(
        &self,
        api: &TicketApi,
        link: Option<&MeshLink>,
    ) -> Result<Lease, Wait> {
        match self.coordinator.takeover_of(&self.region).await {
            Ok(Some(takeover)) => self.learn(&takeover, api, link).await?,
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(region = %self.region, error = %error, "cannot read this region's takeover record");
                self.slot
                    .wait(format!("the coordinator cannot be read ({error})"));
                return Err(Wait::Backoff);
            }
        }
        match self
            .coordinator
            .acquire_lease(&self.region, self.lease_ttl)
            .await
        {
            Ok(lease) => Ok(lease),
            Err(meridian_coord::Error::LeaseHeld { lease_id, .. }) => {
                // An earlier process of this region (or a twin started by
                // mistake) holds it: writing now could interleave with it.
                tracing::info!(region = %self.region, lease_id = %lease_id, "an earlier lease of this region is still live; waiting for it to expire");
                self.slot.wait(format!(
                    "an earlier lease of {} ({lease_id}) is still live",
                    self.region
                ));
                Err(Wait::For((self.lease_ttl / 4).clamp(RETRY_MIN, RETRY_MAX)))
            }
            // Taken over between the two reads: learn it on the next round.
            Err(meridian_coord::Error::TakenOver { .. }) => Err(Wait::Now),
            Err(error) => {
                tracing::warn!(region = %self.region, error = %error, "cannot acquire this region's lease");
                self.slot.wait(format!("no lease: {error}"));
                Err(Wait::Backoff)
            }
        }
    }

    /// A returning region: has every successor finish its share of the
    /// takeover and say where it ends in its log, waits for replication to
    /// apply each log that far, then acknowledges.
    ///
    /// A successor that does not answer (dead, or cut off from this region)
    /// is passed over only when none of the open tickets this region still
    /// owns, as its own store shows them, is that successor's to take: then
    /// it minted no epoch this region needs to learn. Otherwise the region
    /// keeps asking, as it does for a primary that does not answer: leasing
    /// without those epochs would let it write on tickets another region
    /// owns.
    async fn learn(
        &self,
        takeover: &Takeover,
        api: &TicketApi,
        link: Option<&MeshLink>,
    ) -> Result<(), Wait> {
        let successor = &takeover.successor;
        let token = takeover.fencing_token;
        let named: Vec<&str> = takeover.successors().map(RegionId::as_str).collect();
        let named = named.join(", ");
        self.slot.wait(format!(
            "{} was taken over by {named} (fencing token {token}); learning the epochs they minted",
            self.region
        ));
        tracing::warn!(region = %self.region, successor = %successor, also = ?takeover.also, fencing_token = %token,
            "this region was taken over; learning the successors' epochs before leasing again");
        let Some(link) = link else {
            tracing::error!(region = %self.region, successor = %successor,
                "this region was taken over but has no mesh to learn the takeover from; configure [mesh]");
            return Err(Wait::For(RETRY_MAX));
        };
        let ask = v1::TakeOverRequest {
            failed_region: self.region.to_string(),
            fencing_token: token.get(),
        };
        // All at once: one successor that does not answer costs one timeout,
        // not one per successor.
        let answers = futures::future::join_all(takeover.successors().map(|successor| {
            let ask = ask.clone();
            async move {
                (
                    successor,
                    link.take_over(successor, ask, self.catch_up_timeout).await,
                )
            }
        }))
        .await;
        let mut silent = Vec::new();
        let mut learnt = Vec::new();
        for (successor, answer) in answers {
            match answer {
                Ok(answer) => learnt.push((successor, answer.through_seq)),
                Err(error) => {
                    tracing::warn!(region = %self.region, successor = %successor, code = ?error.code(), error = %error.public_message(),
                        "a successor did not say where the takeover ends");
                    silent.push(successor);
                }
            }
        }
        if !silent.is_empty() {
            match self.owed_to(takeover, &silent, api).await {
                Ok(0) => {
                    tracing::info!(region = %self.region, silent = ?silent,
                        "passing over successors that do not answer: none of this region's open tickets is theirs to take");
                }
                Ok(owed) => {
                    tracing::warn!(region = %self.region, silent = ?silent, tickets = owed,
                        "successors that do not answer may have taken tickets of this region; asking again");
                    return Err(Wait::Backoff);
                }
                Err(error) => {
                    tracing::warn!(region = %self.region, error = %error, "cannot read this region's tickets");
                    return Err(Wait::Backoff);
                }
            }
        }
        for (successor, through_seq) in &learnt {
            match api
                .store()
                .wait_applied(successor, *through_seq, self.catch_up_timeout)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(region = %self.region, successor = %successor, through_seq,
                        "still applying a successor's log up to the end of the takeover");
                    return Err(Wait::Now);
                }
                Err(error) => {
                    tracing::warn!(region = %self.region, error = %error, "cannot read the replication cursor");
                    return Err(Wait::Backoff);
                }
            }
        }
        match self
            .coordinator
            .acknowledge_takeover(&self.region, token)
            .await
        {
            Ok(()) => {
                tracing::info!(region = %self.region, successors = %named, fencing_token = %token,
                    through_seq = ?learnt, "takeover learnt and acknowledged; leasing again");
                crate::notifications::returned(api, &named, token.get()).await;
                Ok(())
            }
            Err(error) => {
                tracing::warn!(region = %self.region, fencing_token = %token, error = %error, "cannot acknowledge the takeover");
                Err(Wait::Backoff)
            }
        }
    }

    /// How many open tickets this region owns in its own store whose taker
    /// under `takeover` is one of `successors`.
    async fn owed_to(
        &self,
        takeover: &Takeover,
        successors: &[&RegionId],
        api: &TicketApi,
    ) -> Result<u64, meridian_store::Error> {
        let store = api.store();
        let mut owed = 0u64;
        let mut after = None;
        loop {
            let filter = TicketFilter {
                owner_region: Some(self.region.clone()),
                after,
                limit: TAKEOVER_PAGE,
                ..TicketFilter::default()
            };
            let page = store.list_tickets(&filter).await?;
            for ticket in page
                .tickets
                .iter()
                .filter(|ticket| ticket.status != TicketStatus::Closed)
            {
                let taker = takeover
                    .taker(|region| meridian_core::residency::may_hold(&ticket.residency, region));
                if taker.is_some_and(|taker| successors.contains(&taker)) {
                    owed += 1;
                }
            }
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(owed),
            }
        }
    }

    /// Installs the lease and follows its state until it is lost (`false`)
    /// or the gateway stops (`true`).
    async fn hold(&self, lease: Lease, stopping: &mut watch::Receiver<bool>) -> bool {
        let mut states = lease.subscribe();
        let (lease_id, ttl) = (lease.id(), lease.ttl());
        tracing::info!(region = %self.region, lease_id = %lease_id, ttl_ms = ttl.as_millis(),
            "lease acquired; owner-scoped writes allowed");
        self.slot.lease(lease);
        let mut fenced = false;
        let mut renewing = false;
        loop {
            let changed = tokio::select! {
                _ = stopping.wait_for(|stop| *stop) => return true,
                changed = states.changed() => changed,
            };
            if changed.is_err() {
                // The lease's publisher is gone with the lease itself.
                self.slot.wait("the lease handle is gone");
                return false;
            }
            let state = *states.borrow_and_update();
            match state {
                LeaseState::Held { .. } => {
                    if fenced || renewing {
                        tracing::info!(region = %self.region, lease_id = %lease_id, "lease renewed; owner-scoped writes unfenced");
                    }
                    (fenced, renewing) = (false, false);
                }
                LeaseState::Renewing { fence_at, .. } => {
                    if !renewing {
                        tracing::warn!(region = %self.region, lease_id = %lease_id, fence_at = %fence_at,
                            "lease renewals are failing; owner-scoped writes stop at fence_at unless one gets through");
                    }
                    renewing = true;
                }
                LeaseState::Fenced { expires_at } => {
                    if !fenced {
                        tracing::warn!(region = %self.region, lease_id = %lease_id, expires_at = %expires_at,
                            "lease not renewed in time; owner-scoped writes fenced");
                    }
                    fenced = true;
                }
                LeaseState::Lost => {
                    tracing::warn!(region = %self.region, lease_id = %lease_id,
                        "lease lost; owner-scoped writes stay fenced until the region leases again");
                    self.slot
                        .wait(format!("the lease of {} expired", self.region));
                    return false;
                }
            }
        }
    }

    /// Takes `failed`'s tickets for this region, as the pending takeover
    /// with `fencing_token` says. Idempotent.
    pub(crate) async fn take_over(
        &self,
        api: &TicketApi,
        replicator: Option<&Replicator>,
        failed: &RegionId,
        fencing_token: Revision,
    ) -> Result<v1::TakeOverResponse, ApiError> {
        let me = api.region();
        if failed == me {
            return Err(ApiError::Invalid(meridian_proto::ConvertError::new(
                "failed_region",
                format!("{failed} is this region; it cannot take itself over"),
            )));
        }
        let _one_at_a_time = self.taking_over.lock().await;
        let pending = self
            .coordinator
            .takeover_of(failed)
            .await
            .map_err(coordinator_unavailable)?;
        let takeover = match pending {
            Some(takeover) if takeover.fencing_token == fencing_token && takeover.names(me) => {
                takeover
            }
            Some(takeover) if takeover.fencing_token == fencing_token => {
                let named: Vec<&str> = takeover.successors().map(RegionId::as_str).collect();
                return Err(ApiError::TakeoverMismatch(format!(
                    "the takeover of {failed} at fencing token {fencing_token} names {} as successors, not {me}",
                    named.join(", ")
                )));
            }
            Some(takeover) => {
                return Err(ApiError::TakeoverMismatch(format!(
                    "the pending takeover of {failed} has fencing token {}, not {fencing_token}",
                    takeover.fencing_token
                )));
            }
            None => {
                let status = self
                    .coordinator
                    .region_status(failed)
                    .await
                    .map_err(coordinator_unavailable)?;
                return Err(if status.acknowledged == Some(fencing_token) {
                    ApiError::TakeoverMismatch(format!(
                        "{failed} already acknowledged the takeover at fencing token {fencing_token} and owns its tickets again"
                    ))
                } else {
                    ApiError::NoTakeover(failed.clone())
                });
            }
        };
        // The successor writes at new epochs of its own: only while it may.
        api.check_gate()?;
        let store = api.store();
        let mut taken = 0u64;
        let mut kept_home = 0u64;
        let mut left_to_others = 0u64;
        let mut after = None;
        loop {
            let filter = TicketFilter {
                owner_region: Some(failed.clone()),
                after,
                limit: TAKEOVER_PAGE,
                ..TicketFilter::default()
            };
            let page = store.list_tickets(&filter).await.map_err(from_store)?;
            api.check_gate()?;
            // Closed is final: no owner-scoped write can ever happen on a
            // closed ticket, so moving it would cost an event per ticket
            // of history and change nothing anyone can do.
            // Residency: each open ticket is taken by the first successor
            // its set allows (the same answer in every successor, so the
            // takers are disjoint); one no listed region may hold stays
            // with its failed owner until it returns.
            let mut mine = Vec::new();
            for ticket in page
                .tickets
                .iter()
                .filter(|t| t.status != TicketStatus::Closed)
            {
                match takeover
                    .taker(|region| meridian_core::residency::may_hold(&ticket.residency, region))
                {
                    Some(taker) if taker == me => mine.push(ticket),
                    Some(taker) => {
                        left_to_others += 1;
                        tracing::debug!(ticket_id = %ticket.id, from = %failed, taker = %taker, "ticket left to the successor of its residency");
                    }
                    None => {
                        kept_home += 1;
                        // Said once, by the primary: every successor sees it.
                        if &takeover.successor == me {
                            tracing::info!(ticket_id = %ticket.id, from = %failed,
                                reason = %meridian_core::residency::refusal(&ticket.residency, me).unwrap_or_default(),
                                "ticket not taken over; no live successor is in its residency, so it waits for its owner");
                        }
                    }
                }
            }
            let writes: Vec<_> = mine
                .into_iter()
                .map(|ticket| {
                    let (id, new_epoch) =
                        (ticket.id, ticket.owner.epoch.next_for(api.region_index()));
                    // One `takeover` span per ticket, in the ticket's trace;
                    // its `TakenOver` event names it.
                    let span =
                        crate::spans::ticket_span(crate::spans::Step::Takeover, me, id, None);
                    span.record("meridian.epoch", new_epoch.raw());
                    span.record("meridian.reason", failed.as_str());
                    let meta = api
                        .meta_with(meridian_telemetry::propagation::traceparent_of(&span))
                        .by(meridian_core::Actor::system("failover"));
                    let (store, failed) = (store.clone(), failed.clone());
                    async move {
                        (
                            id,
                            store
                                .take_over(id, failed, fencing_token.get(), new_epoch, meta)
                                .await,
                        )
                    }
                    .instrument(span)
                })
                .collect();
            let mut outcomes = stream::iter(writes).buffer_unordered(TAKEOVER_WRITES_IN_FLIGHT);
            while let Some((id, outcome)) = outcomes.next().await {
                match outcome {
                    Ok((ticket, event)) => {
                        taken += 1;
                        tracing::debug!(ticket_id = %id, from = %failed, epoch = %ticket.owner.epoch, seq = event.origin_seq, "ticket taken over");
                    }
                    // Moved between the read and the write (an acceptance
                    // replicated in, or a concurrent call): not ours to take.
                    Err(meridian_store::Error::Fenced { owner, epoch }) => {
                        tracing::debug!(ticket_id = %id, owner = %owner, epoch = %epoch, "ticket moved before it could be taken over");
                    }
                    Err(error) => return Err(from_store(error)),
                }
            }
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let through_seq = store.local_head().await.map_err(from_store)?;
        // Takeovers ask for `peer` durability: with the failed region gone,
        // this region's copy must not be the only one.
        let peer_durable = match replicator {
            Some(replicator) if through_seq > 0 => match replicator
                .wait_peer_durable(through_seq, api.handoff_wait())
                .await
            {
                Ok(peer) => {
                    tracing::debug!(through_seq, peer = %peer, "takeover durable in a peer");
                    true
                }
                Err(error) => {
                    tracing::warn!(from = %failed, through_seq, error = %error, "takeover not yet durable in another region");
                    false
                }
            },
            _ => false,
        };
        tracing::info!(from = %failed, fencing_token = %fencing_token, tickets_taken = taken, left_to_other_successors = left_to_others,
            kept_by_residency = kept_home, through_seq, peer_durable, "takeover carried out");
        Ok(v1::TakeOverResponse {
            tickets_taken: taken,
            through_seq,
            peer_durable,
        })
    }
}

/// What to do after an attempt that did not end with a lease.
enum Wait {
    /// Try again at once (the next step is already known).
    Now,
    /// Something failed: pause, longer each time.
    Backoff,
    For(Duration),
}

fn coordinator_unavailable(error: meridian_coord::Error) -> ApiError {
    tracing::warn!(error = %error, "coordinator call failed");
    ApiError::CoordinatorUnreachable(error.to_string())
}

/// The lease the gate reads, or why there is none.
struct LeaseSlot {
    region: RegionId,
    slot: Mutex<Slot>,
}

enum Slot {
    Waiting(String),
    Leased(Lease),
}

impl LeaseSlot {
    fn new(region: RegionId) -> Self {
        let reason = format!("{region} has not acquired its lease yet");
        LeaseSlot {
            region,
            slot: Mutex::new(Slot::Waiting(reason)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// No lease, for this reason; a lease held so far is dropped (its
    /// renewals stop; it is not revoked).
    fn wait(&self, reason: impl Into<String>) {
        let previous = std::mem::replace(&mut *self.lock(), Slot::Waiting(reason.into()));
        drop(previous);
    }

    fn lease(&self, lease: Lease) {
        *self.lock() = Slot::Leased(lease);
    }

    /// Why owner-scoped writes are refused now, if they are. Reads the
    /// lease's clock, so it is exact even before the renewal task has
    /// published the state.
    fn fenced_reason(&self) -> Option<String> {
        match &*self.lock() {
            Slot::Waiting(reason) => Some(reason.clone()),
            Slot::Leased(lease) => match lease.state() {
                LeaseState::Held { .. } | LeaseState::Renewing { .. } => None,
                LeaseState::Fenced { expires_at } => Some(format!(
                    "the lease of {} was not renewed in time and may expire at {expires_at}",
                    self.region
                )),
                LeaseState::Lost => Some(format!("the lease of {} expired", self.region)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> Result<CoordinatorSettings> {
        let section: CoordinatorSection =
            toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        section.into_settings("gw.toml")
    }

    #[test]
    fn reads_the_section() {
        let settings = section(
            "kind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nlease_ttl_ms = 3000\n",
        )
        .unwrap();
        assert_eq!(settings.lease_ttl, Duration::from_secs(3));
        match settings.backend {
            CoordinatorBackend::Etcd {
                endpoints,
                key_prefix,
                safety_margin,
                rpc_timeout,
            } => {
                assert_eq!(endpoints, ["http://127.0.0.1:2379"]);
                assert_eq!(key_prefix, None);
                assert_eq!(
                    safety_margin,
                    Duration::from_millis(SAFETY_MARGIN_MS_DEFAULT)
                );
                assert_eq!(
                    rpc_timeout,
                    Duration::from_millis(COORDINATOR_RPC_TIMEOUT_MS_DEFAULT)
                );
            }
            other => panic!("{other:?}"),
        }
        let settings =
            section("kind = \"local\"\nsafety_margin_ms = 200\nlease_ttl_ms = 1000\n").unwrap();
        assert!(
            matches!(settings.backend, CoordinatorBackend::Local { safety_margin } if safety_margin == Duration::from_millis(200))
        );
    }

    #[test]
    fn the_gateway_file_takes_a_coordinator_section() {
        let text = "region = \"us-east\"\nlisten = \"127.0.0.1:7101\"\n[database]\nurl = \"sqlite::memory:\"\n\
                    [coordinator]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\n\
                    lease_ttl_ms = 4000\nsafety_margin_ms = 1000\n";
        let config = crate::GatewayConfig::parse("gw.toml", text, |_| None).unwrap();
        assert_eq!(
            config.coordinator.unwrap().lease_ttl,
            Duration::from_secs(4)
        );
        let short = text.replace("lease_ttl_ms = 4000", "lease_ttl_ms = 900");
        let err = crate::GatewayConfig::parse("gw.toml", &short, |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "config: gw.toml: coordinator.safety_margin_ms (1000 ms) must be shorter"
            ),
            "{err}"
        );
    }

    #[test]
    fn refuses_settings_that_cannot_work() {
        let err = section("kind = \"etcd\"\n").unwrap_err().to_string();
        assert!(
            err.contains("coordinator.endpoints: etcd needs at least one endpoint"),
            "{err}"
        );
        let err = section("kind = \"local\"\nlease_ttl_ms = 1000\nsafety_margin_ms = 1000\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "safety_margin_ms (1000 ms) must be shorter than coordinator.lease_ttl_ms (1000 ms)"
            ),
            "{err}"
        );
        let err = section("kind = \"local\"\nendpoints = [\"http://x:1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("are for kind = \"etcd\""), "{err}");
        let err = section("kind = \"local\"\nlease_ttl_ms = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("coordinator.lease_ttl_ms: must be at least 1"),
            "{err}"
        );
        assert!(section("kind = \"zookeeper\"\n").is_err());
    }
}
