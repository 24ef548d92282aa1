//! Failover on the router's side: watch which regions hold leases in the
//! coordinator, and when one's lease expires, record its takeover by a
//! successor and have the successor's gateway take the tickets.
//!
//! Exactly-once is the coordinator's job: [`Coordinator::record_takeover`]
//! is one transaction conditional on the revision this router decided on,
//! so of several router replicas racing only one records the takeover; the
//! others get [`meridian_coord::Error::TakenOver`] (or a stale observation)
//! and treat it as done by someone else. Carrying a takeover out is
//! idempotent on the successor (`MeshService.TakeOver`), so every router
//! makes sure each pending takeover it sees has been carried out once,
//! whoever recorded it: a router that died between recording and calling
//! leaves nothing half done.
//!
//! The successor is the live region on shift now under the rules (on
//! shift before handing off, then handing off, then in its overlap
//! window; file order among equals), else the live region whose shift
//! starts soonest, else the first live region: tickets are never left to
//! a dead owner because the rules say nobody works now. Never the failed
//! region.
//!
//! A takeover names every live region with a known gateway, in that same
//! preference order ([`successor_order`]): the first is the primary
//! successor, and each ticket is taken by the first region of the list its
//! residency allows, so a pinned ticket whose set excludes the primary
//! still gets a live owner whenever a region of its set is live. The
//! router calls `TakeOver` on every listed region, each retried on its
//! own: one unreachable successor delays only the tickets that are its to
//! take.
//!
//! A region that was taken over comes back by acknowledging the takeover
//! and then leasing; between those two steps it holds no lease and no
//! pending takeover, which looks like a dead region. So a region this
//! router has not seen live since its last acknowledgement is taken over
//! only after `takeover_grace`: a returning region leases within one
//! round trip, while a router that starts during an outage still acts.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use jiff::Timestamp;
use meridian_coord::{
    Coordinator, EtcdConfig, EtcdCoordinator, RegionStatus, RegionView, Revision, Takeover,
};
use meridian_core::{Clock, RegionId};
use meridian_proto::v1::{self, mesh_service_client::MeshServiceClient};
use meridian_rules::{Rules, ShiftChangeKind, ShiftPosition};
use meridian_rules_source::ActiveRules;
use meridian_tls::{GatewayChannels, MeshTls, PeerIdentity, Service};
use serde::Deserialize;
use tokio::{sync::watch, task::JoinSet, time::Instant};
use tonic::{Code, Request, transport::Channel};

use crate::{Error, Result};

pub const TAKEOVER_TIMEOUT_MS_DEFAULT: u64 = 15_000;
pub const TAKEOVER_GRACE_MS_DEFAULT: u64 = 2_000;
pub const COORDINATOR_RPC_TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// How often the view is looked at again without a change: for graces
/// that run out and takeovers to retry.
const TICK: Duration = Duration::from_millis(200);
/// The pause before a takeover that could not be carried out is retried.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often the router's certificate is checked for a new version on disk.
const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// How the router takes failed regions over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverSettings {
    pub coordinator: CoordinatorChoice,
    /// This router's certificate (a router identity), key and CA bundle, to
    /// call the gateways' internal `MeshService` over mutual TLS.
    pub tls: meridian_tls::TlsFiles,
    /// Each region's gateway internal (mesh) address, `host:port`.
    pub gateways: BTreeMap<RegionId, String>,
    /// The deadline of one `TakeOver` call at a successor.
    pub takeover_timeout: Duration,
    /// How long a region this router has not seen live since its last
    /// acknowledged takeover may stay without a lease before it is taken
    /// over (see the module's docs).
    pub takeover_grace: Duration,
}

/// Which coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordinatorChoice {
    Etcd {
        endpoints: Vec<String>,
        key_prefix: Option<String>,
        rpc_timeout: Duration,
    },
    /// One the caller shares (`meridian up`, tests); not read from a file.
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

impl PartialEq for SharedCoordinator {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedCoordinator {}

impl FailoverSettings {
    /// Settings around a shared coordinator, with default timings.
    pub fn shared(
        coordinator: Arc<dyn Coordinator>,
        tls: meridian_tls::TlsFiles,
        gateways: BTreeMap<RegionId, String>,
    ) -> Self {
        FailoverSettings {
            coordinator: CoordinatorChoice::Shared(SharedCoordinator(coordinator)),
            tls,
            gateways,
            takeover_timeout: Duration::from_millis(TAKEOVER_TIMEOUT_MS_DEFAULT),
            takeover_grace: Duration::from_millis(TAKEOVER_GRACE_MS_DEFAULT),
        }
    }
}

/// The `[failover]` section of the router's file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailoverSection {
    kind: CoordinatorKind,
    #[serde(default)]
    endpoints: Vec<String>,
    key_prefix: Option<String>,
    rpc_timeout_ms: Option<u64>,
    /// The region this router replica runs in: which router certificate of
    /// a `tls_dir` it uses.
    region: Option<RegionId>,
    tls_dir: Option<std::path::PathBuf>,
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
    ca: Option<std::path::PathBuf>,
    #[serde(default)]
    gateways: BTreeMap<RegionId, String>,
    takeover_timeout_ms: Option<u64>,
    takeover_grace_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CoordinatorKind {
    Etcd,
}

impl FailoverSection {
    pub(crate) fn into_settings(self, file: &str) -> Result<FailoverSettings> {
        let millis = |key: &str, value: Option<u64>, default: u64| match value {
            Some(0) => Err(Error::Config(format!(
                "{file}: failover.{key}: must be at least 1"
            ))),
            Some(value) => Ok(Duration::from_millis(value)),
            None => Ok(Duration::from_millis(default)),
        };
        let CoordinatorKind::Etcd = self.kind;
        if self.endpoints.is_empty() {
            return Err(Error::Config(format!(
                "{file}: failover.endpoints: etcd needs at least one endpoint, like \"http://127.0.0.1:2379\""
            )));
        }
        let tls = match (self.tls_dir, self.region, self.cert, self.key, self.ca) {
            (Some(dir), Some(region), None, None, None) => {
                meridian_tls::TlsFiles::dev(&dir, &region, Service::Router)
            }
            (None, None, Some(cert), Some(key), Some(ca)) => {
                meridian_tls::TlsFiles { cert, key, ca }
            }
            _ => {
                return Err(Error::Config(format!(
                    "{file}: failover: set either tls_dir and region (a development PKI), or all of cert, key and ca"
                )));
            }
        };
        if self.gateways.is_empty() {
            return Err(Error::Config(format!(
                "{file}: failover.gateways: name each region's gateway mesh address (host:port), or there is no successor to call"
            )));
        }
        Ok(FailoverSettings {
            coordinator: CoordinatorChoice::Etcd {
                endpoints: self.endpoints,
                key_prefix: self.key_prefix,
                rpc_timeout: millis(
                    "rpc_timeout_ms",
                    self.rpc_timeout_ms,
                    COORDINATOR_RPC_TIMEOUT_MS_DEFAULT,
                )?,
            },
            tls,
            gateways: self.gateways,
            takeover_timeout: millis(
                "takeover_timeout_ms",
                self.takeover_timeout_ms,
                TAKEOVER_TIMEOUT_MS_DEFAULT,
            )?,
            takeover_grace: millis(
                "takeover_grace_ms",
                self.takeover_grace_ms,
                TAKEOVER_GRACE_MS_DEFAULT,
            )?,
        })
    }
}

/// Connects to etcd (lazily: this succeeds while etcd is down; a malformed
/// endpoint is refused).
pub async fn connect_etcd(
    endpoints: Vec<String>,
    key_prefix: Option<String>,
    rpc_timeout: Duration,
) -> Result<Arc<dyn Coordinator>, FailoverError> {
    let mut config = EtcdConfig::new(endpoints);
    if let Some(prefix) = key_prefix {
        config.key_prefix = prefix;
    }
    config.rpc_timeout = rpc_timeout;
    config.connect_timeout = config.connect_timeout.min(rpc_timeout);
    Ok(Arc::new(EtcdCoordinator::connect(config).await?))
}

/// Why a takeover could not be recorded or carried out.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error("coordinator: {0}")]
    Coordinator(#[from] meridian_coord::Error),
    #[error("tls: {0}")]
    Tls(#[from] meridian_tls::Error),
    /// The successor's gateway refused or could not be reached.
    #[error("{successor} did not take {failed} over: {code:?}: {message}")]
    Successor {
        failed: RegionId,
        successor: RegionId,
        code: Code,
        message: String,
    },
    /// A takeover by another successor is pending.
    #[error(
        "{failed} was already taken over by {} at fencing token {}; carry that one out instead (meridian region failover {failed} --to {})",
        .takeover.successor, .takeover.fencing_token, .takeover.successor
    )]
    OtherSuccessor {
        failed: RegionId,
        takeover: Takeover,
    },
}

/// What a takeover carried out by hand did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandTakeover {
    pub takeover: Takeover,
    /// `false` when the takeover had been recorded before (by a router or
    /// an earlier run) and this run only carried it out.
    pub recorded_now: bool,
    pub answer: v1::TakeOverResponse,
}

/// `meridian region failover FAILED --to SUCCESSOR`: records that
/// `successor` takes `failed` over (refused while `failed` holds a live
/// lease), then has the successor's gateway at `successor_addr` take the
/// tickets. Running it again after a partial failure finishes the same
/// takeover. A takeover by hand names one successor: a ticket pinned to a
/// set without it stays with `failed`. A pending takeover (say, a router's)
/// that lists `successor` anywhere is carried out at `successor`: its share.
pub async fn failover_by_hand(
    coordinator: &dyn Coordinator,
    tls: &MeshTls,
    failed: &RegionId,
    successor: &RegionId,
    successor_addr: &str,
    timeout: Duration,
) -> Result<HandTakeover, FailoverError> {
    let status = coordinator.region_status(failed).await?;
    let (takeover, recorded_now) = match status.takeover {
        Some(takeover) if takeover.names(successor) => (takeover, false),
        Some(takeover) => {
            return Err(FailoverError::OtherSuccessor {
                failed: failed.clone(),
                takeover,
            });
        }
        None => match coordinator
            .record_takeover(failed, std::slice::from_ref(successor), status.revision)
            .await
        {
            Ok(takeover) => (takeover, true),
            Err(meridian_coord::Error::TakenOver { takeover }) if takeover.names(successor) => {
                (takeover, false)
            }
            Err(meridian_coord::Error::TakenOver { takeover }) => {
                return Err(FailoverError::OtherSuccessor {
                    failed: failed.clone(),
                    takeover,
                });
            }
            Err(error) => return Err(error.into()),
        },
    };
    let channel = tls.connect_lazy(successor_addr, gateway_identity(tls, successor))?;
    let answer = carry_out(channel, &takeover, successor, timeout).await?;
    Ok(HandTakeover {
        takeover,
        recorded_now,
        answer,
    })
}

/// Calls `TakeOver` on `successor`'s gateway (one of the takeover's).
async fn carry_out(
    channel: Channel,
    takeover: &Takeover,
    successor: &RegionId,
    timeout: Duration,
) -> Result<v1::TakeOverResponse, FailoverError> {
    let mut request = Request::new(v1::TakeOverRequest {
        failed_region: takeover.failed_region.to_string(),
        fencing_token: takeover.fencing_token.get(),
    });
    request.set_timeout(timeout);
    match MeshServiceClient::new(channel).take_over(request).await {
        Ok(answer) => Ok(answer.into_inner()),
        Err(status) => Err(FailoverError::Successor {
            failed: takeover.failed_region.clone(),
            successor: successor.clone(),
            code: status.code(),
            message: status.message().to_owned(),
        }),
    }
}

fn gateway_identity(tls: &MeshTls, region: &RegionId) -> PeerIdentity {
    PeerIdentity::new(
        tls.identity().trust_domain().clone(),
        region.clone(),
        Service::Gateway,
    )
}

/// Every region of `live` but `failed`, in the order they succeed it: the
/// first is [`choose_successor`]'s pick, the second its pick once the first
/// is set aside, and so on. Empty when no other region is live.
pub fn successor_order(
    rules: &Rules,
    at: Timestamp,
    failed: &RegionId,
    live: &[RegionId],
) -> Vec<RegionId> {
    let mut left: Vec<RegionId> = live
        .iter()
        .filter(|region| *region != failed)
        .cloned()
        .collect();
    let mut order = Vec::with_capacity(left.len());
    while let Some(next) = choose_successor(rules, at, failed, &left) {
        left.retain(|region| *region != next);
        order.push(next);
    }
    order
}

/// Picks who takes `failed`'s tickets among the `live` regions (see the
/// module's docs). `None` when no other region is live.
pub fn choose_successor(
    rules: &Rules,
    at: Timestamp,
    failed: &RegionId,
    live: &[RegionId],
) -> Option<RegionId> {
    let candidates: Vec<&RegionId> = live.iter().filter(|region| *region != failed).collect();
    let is_candidate = |name: &str| {
        candidates
            .iter()
            .find(|region| region.as_str() == name)
            .copied()
    };
    let rank = |position: ShiftPosition, handing_off: bool| match (position, handing_off) {
        (ShiftPosition::OnShift, false) => 0,
        (ShiftPosition::OnShift, true) => 1,
        _ => 2,
    };
    let on_shift = rules
        .active_at(at)
        .into_iter()
        .filter_map(|active| {
            is_candidate(&active.region)
                .map(|region| (rank(active.position, active.handing_off), region))
        })
        .min_by_key(|(rank, _)| *rank);
    if let Some((_, region)) = on_shift {
        return Some(region.clone());
    }
    let coming = candidates
        .iter()
        .filter_map(|region| {
            let change = rules.next_change_of(rules.region(region.as_str())?, at)?;
            (change.kind == ShiftChangeKind::Start).then_some((change.at, *region))
        })
        .min_by_key(|(at, _)| *at);
    if let Some((_, region)) = coming {
        return Some(region.clone());
    }
    candidates.first().map(|region| (*region).clone())
}

/// One successor's part of one takeover: (failed region, fencing token,
/// successor).
type CallKey = (RegionId, Revision, RegionId);

/// The router's failover task.
pub(crate) struct Failover {
    coordinator: Arc<dyn Coordinator>,
    rules: Arc<ActiveRules>,
    clock: Arc<dyn Clock>,
    channels: GatewayChannels,
    takeover_timeout: Duration,
    takeover_grace: Duration,
    _tls_reload: meridian_tls::ReloadTask,
}

/// What this router knows of one region between views.
#[derive(Debug, Default)]
struct Track {
    /// The last acknowledgement seen, and whether the region held a lease
    /// since.
    acknowledged: Option<Revision>,
    seen_live: bool,
    /// When this router first saw the region without a lease.
    dead_since: Option<Instant>,
}

impl Failover {
    pub(crate) async fn start(
        settings: &FailoverSettings,
        rules: Arc<ActiveRules>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>> {
        let coordinator = match &settings.coordinator {
            CoordinatorChoice::Etcd {
                endpoints,
                key_prefix,
                rpc_timeout,
            } => connect_etcd(endpoints.clone(), key_prefix.clone(), *rpc_timeout)
                .await
                .map_err(|e| Error::Config(format!("failover: {e}")))?,
            CoordinatorChoice::Shared(shared) => shared.0.clone(),
        };
        let tls = MeshTls::load(settings.tls.clone())
            .map_err(|e| Error::Config(format!("failover: tls: {e}")))?;
        if tls.identity().service() != Service::Router {
            return Err(Error::Config(format!(
                "failover: tls: {} is not a router identity; gateways accept takeovers only from the router",
                tls.identity()
            )));
        }
        let tls_reload = tls.spawn_reload(TLS_RELOAD_INTERVAL);
        Ok(Arc::new(Failover {
            coordinator,
            rules,
            clock,
            channels: GatewayChannels::new(tls, settings.gateways.clone()),
            takeover_timeout: settings.takeover_timeout,
            takeover_grace: settings.takeover_grace,
            _tls_reload: tls_reload,
        }))
    }

    /// Watches the regions until the task is aborted.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut tracks: HashMap<RegionId, Track> = HashMap::new();
        // Per takeover and successor: the calls carried out (or found
        // finished), and those under way. Each successor of a takeover is
        // called and retried on its own, so one that cannot be reached
        // holds up no other.
        let mut done: HashSet<CallKey> = HashSet::new();
        let mut retry_at: HashMap<CallKey, Instant> = HashMap::new();
        let mut under_way: JoinSet<(CallKey, bool)> = JoinSet::new();
        let mut busy: HashSet<CallKey> = HashSet::new();
        let mut view = self.watch().await;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = view.changed() => if changed.is_err() {
                    tracing::warn!("the coordinator's region watch ended; watching again");
                    view = self.watch().await;
                },
                _ = tick.tick() => {}
                Some(finished) = under_way.join_next() => {
                    if let Ok((key, ok)) = finished {
                        busy.remove(&key);
                        if ok {
                            done.insert(key);
                        } else {
                            retry_at.insert(key, Instant::now() + RETRY_AFTER);
                        }
                    }
                }
            }
            let snapshot = view.borrow_and_update().clone();
            // A broken watch may show a stale view: decide nothing on it.
            if !snapshot.connected {
                continue;
            }
            for takeover in self.decide(&snapshot, &mut tracks).await {
                for successor in takeover.successors() {
                    let key = (
                        takeover.failed_region.clone(),
                        takeover.fencing_token,
                        successor.clone(),
                    );
                    if done.contains(&key)
                        || busy.contains(&key)
                        || retry_at.get(&key).is_some_and(|at| *at > Instant::now())
                    {
                        continue;
                    }
                    busy.insert(key.clone());
                    let (this, takeover, successor) =
                        (self.clone(), takeover.clone(), successor.clone());
                    under_way
                        .spawn(async move { (key, this.complete(&takeover, &successor).await) });
                }
            }
        }
    }

    async fn watch(&self) -> watch::Receiver<RegionView> {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.coordinator.watch_regions().await {
                Ok(view) => return view,
                Err(error) => {
                    tracing::warn!(error = %error, "cannot watch the regions in the coordinator; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Records the takeovers the view calls for, and returns every pending
    /// takeover (recorded now or before, by anyone) to be carried out.
    async fn decide(
        &self,
        view: &RegionView,
        tracks: &mut HashMap<RegionId, Track>,
    ) -> Vec<Takeover> {
        let now = Instant::now();
        let mut pending = Vec::new();
        for (region, status) in &view.regions {
            let track = tracks.entry(region.clone()).or_default();
            if status.acknowledged != track.acknowledged {
                // Back from a takeover: its grace counts from now.
                track.acknowledged = status.acknowledged;
                track.seen_live = false;
                track.dead_since = None;
            }
            if status.is_live() {
                track.seen_live = true;
                track.dead_since = None;
                continue;
            }
            if let Some(takeover) = &status.takeover {
                track.dead_since = None;
                pending.push(takeover.clone());
                continue;
            }
            let dead_since = *track.dead_since.get_or_insert(now);
            if !track.seen_live && now.duration_since(dead_since) < self.takeover_grace {
                continue;
            }
            if let Some(takeover) = self.take_over(view, status).await {
                pending.push(takeover);
            }
        }
        pending
    }

    /// Records the takeover of a region whose lease expired; `None` when
    /// this router cannot or need not.
    async fn take_over(&self, view: &RegionView, status: &RegionStatus) -> Option<Takeover> {
        let failed = &status.region;
        let live: Vec<RegionId> = view
            .live_regions()
            .filter(|region| self.channels.knows(region))
            .cloned()
            .collect();
        let successors = successor_order(&self.rules.current(), self.clock.now(), failed, &live);
        let Some(successor) = successors.first().cloned() else {
            tracing::warn!(region = %failed, "region's lease expired but no other region with a known gateway is live to take it over");
            return None;
        };
        match self
            .coordinator
            .record_takeover(failed, &successors, view.revision)
            .await
        {
            Ok(takeover) => {
                tracing::warn!(region = %failed, successor = %successor, also = ?takeover.also, fencing_token = %takeover.fencing_token,
                    observed_revision = %view.revision, "region's lease expired; takeover recorded");
                Some(takeover)
            }
            Err(meridian_coord::Error::TakenOver { takeover }) => {
                tracing::info!(region = %failed, successor = %takeover.successor, fencing_token = %takeover.fencing_token,
                    "another router recorded this takeover");
                Some(takeover)
            }
            Err(
                error @ (meridian_coord::Error::StaleObservation { .. }
                | meridian_coord::Error::RegionAlive { .. }
                | meridian_coord::Error::SuccessorNotLive { .. }),
            ) => {
                tracing::info!(region = %failed, successor = %successor, reason = %error, "takeover not recorded; deciding again on a newer view");
                None
            }
            Err(error) => {
                tracing::warn!(region = %failed, successor = %successor, error = %error, "cannot record the takeover");
                None
            }
        }
    }

    /// Has `successor` (one of the takeover's) take its share of the
    /// tickets; `true` once there is nothing left for it to do.
    async fn complete(&self, takeover: &Takeover, successor: &RegionId) -> bool {
        let channel = match self.channel(successor) {
            Ok(channel) => channel,
            Err(reason) => {
                tracing::error!(region = %takeover.failed_region, successor = %successor, reason = %reason, "cannot call the successor");
                return false;
            }
        };
        match carry_out(channel, takeover, successor, self.takeover_timeout).await {
            Ok(answer) => {
                tracing::info!(region = %takeover.failed_region, successor = %successor, fencing_token = %takeover.fencing_token,
                    tickets_taken = answer.tickets_taken, through_seq = answer.through_seq, peer_durable = answer.peer_durable,
                    "takeover carried out");
                true
            }
            // The region already came back and acknowledged, or the record
            // is gone: nothing left to carry out.
            Err(FailoverError::Successor {
                code: Code::FailedPrecondition | Code::NotFound,
                message,
                ..
            }) => {
                tracing::info!(region = %takeover.failed_region, successor = %successor, reason = %message, "takeover needs no more work");
                true
            }
            Err(error) => {
                tracing::warn!(region = %takeover.failed_region, successor = %successor, error = %error, "takeover not carried out yet; will retry");
                false
            }
        }
    }

    fn channel(&self, region: &RegionId) -> std::result::Result<Channel, String> {
        self.channels.channel(region).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
version = "t"
overlap_minutes = 30

[[regions]]
id = "east"
index = 0
time_zone = "UTC"
skills = ["general"]
capacity = 10
preference = 50
[[regions.shifts]]
name = "day"
days = ["mon-sun"]
start = "08:00"
end = "16:00"
queue_owner = "e"

[[regions]]
id = "west"
index = 1
time_zone = "UTC"
skills = ["general"]
capacity = 10
preference = 50
[[regions.shifts]]
name = "day"
days = ["mon-sun"]
start = "14:00"
end = "22:00"
queue_owner = "w"

[[regions]]
id = "south"
index = 2
time_zone = "UTC"
skills = ["general"]
capacity = 10
preference = 50
[[regions.shifts]]
name = "day"
days = ["mon-sun"]
start = "23:00"
end = "07:00"
queue_owner = "s"

[tiers.standard]
calendar = "24x7"
first_response_minutes = 60
next_response_minutes = 120
resolution_minutes = 480
"#;

    fn region(name: &str) -> RegionId {
        RegionId::new(name).unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn the_successor_is_on_shift_then_coming_on_shift_never_the_failed_one() {
        let rules = Rules::parse("rules.toml", RULES).unwrap();
        let all = [region("east"), region("west"), region("south")];
        // 10:00: only east is on shift; west fails, east takes over.
        assert_eq!(
            choose_successor(&rules, at("2026-06-02T10:00:00Z"), &region("west"), &all),
            Some(region("east"))
        );
        // East fails at 10:00: nobody else on shift; west starts at 14:00, south at 23:00.
        assert_eq!(
            choose_successor(&rules, at("2026-06-02T10:00:00Z"), &region("east"), &all),
            Some(region("west"))
        );
        // 15:00: east is on shift but handing off, west on shift: west.
        assert_eq!(
            choose_successor(&rules, at("2026-06-02T15:45:00Z"), &region("south"), &all),
            Some(region("west"))
        );
        // 22:45: south is in its overlap window and the only one active.
        assert_eq!(
            choose_successor(&rules, at("2026-06-02T22:45:00Z"), &region("east"), &all),
            Some(region("south"))
        );
        // Only dead or failed regions: nobody.
        assert_eq!(
            choose_successor(
                &rules,
                at("2026-06-02T10:00:00Z"),
                &region("east"),
                &[region("east")]
            ),
            None
        );
        // A live region the rules do not know still beats leaving tickets to a dead owner.
        let strangers = [region("east"), region("north")];
        assert_eq!(
            choose_successor(
                &rules,
                at("2026-06-02T10:00:00Z"),
                &region("east"),
                &strangers
            ),
            Some(region("north"))
        );
    }

    #[test]
    fn the_successor_list_follows_the_same_preference_never_naming_the_failed_region() {
        let rules = Rules::parse("rules.toml", RULES).unwrap();
        let all = [region("east"), region("west"), region("south")];
        let order = |at_text: &str, failed: &str, live: &[RegionId]| {
            successor_order(&rules, at(at_text), &region(failed), live)
        };
        // 10:00, west fails: east is on shift; south starts at 23:00.
        assert_eq!(
            order("2026-06-02T10:00:00Z", "west", &all),
            [region("east"), region("south")]
        );
        // 10:00, east fails: west starts at 14:00, before south.
        assert_eq!(
            order("2026-06-02T10:00:00Z", "east", &all),
            [region("west"), region("south")]
        );
        // 15:45, south fails: west on shift before east, which is handing off.
        assert_eq!(
            order("2026-06-02T15:45:00Z", "south", &all),
            [region("west"), region("east")]
        );
        // 22:45: south is in its overlap window; then east (next at 08:00) before west (14:00).
        let four = [
            region("west"),
            region("east"),
            region("south"),
            region("north"),
        ];
        assert_eq!(
            order("2026-06-02T22:45:00Z", "north", &four),
            [region("south"), region("east"), region("west")]
        );
        // A region the rules do not know comes last, in the order given.
        let strangers = [
            region("north"),
            region("east"),
            region("west"),
            region("zeta"),
        ];
        assert_eq!(
            order("2026-06-02T10:00:00Z", "east", &strangers),
            [region("west"), region("north"), region("zeta")]
        );
        // The head of the list is always choose_successor's pick.
        for at_text in [
            "2026-06-02T03:00:00Z",
            "2026-06-02T10:00:00Z",
            "2026-06-02T15:45:00Z",
            "2026-06-02T22:45:00Z",
        ] {
            for failed in ["east", "west", "south"] {
                let list = order(at_text, failed, &all);
                assert_eq!(
                    list.first().cloned(),
                    choose_successor(&rules, at(at_text), &region(failed), &all)
                );
                assert_eq!(list.len(), 2, "{at_text} {failed}: {list:?}");
                assert!(!list.contains(&region(failed)));
            }
        }
        assert!(order("2026-06-02T10:00:00Z", "east", &[region("east")]).is_empty());
    }

    fn section(text: &str) -> Result<FailoverSettings> {
        let section: FailoverSection =
            toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        section.into_settings("router.toml")
    }

    #[test]
    fn the_router_file_takes_a_failover_section() {
        let text = "listen = \"127.0.0.1:7100\"\n[rules]\npath = \"rules.toml\"\n\
                    [failover]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\n\
                    cert = \"/c.pem\"\nkey = \"/k.pem\"\nca = \"/ca.pem\"\ntakeover_grace_ms = 500\n\
                    [failover.gateways]\neast = \"127.0.0.1:7111\"\n";
        let config = crate::RouterConfig::parse("router.toml", text, |_| None).unwrap();
        let failover = config.failover.unwrap();
        assert_eq!(failover.takeover_grace, Duration::from_millis(500));
        assert_eq!(failover.tls.ca, std::path::PathBuf::from("/ca.pem"));
        assert!(
            matches!(failover.coordinator, CoordinatorChoice::Etcd { ref endpoints, .. } if endpoints.len() == 1)
        );
        let err = crate::RouterConfig::parse(
            "router.toml",
            &text.replace("kind = \"etcd\"", "kind = \"zk\""),
            |_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("router.toml:"), "{err}");
    }

    #[test]
    fn reads_and_checks_the_section() {
        let good = "kind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nregion = \"east\"\ntls_dir = \"/pki\"\n\
                    [gateways]\neast = \"127.0.0.1:7111\"\n";
        let settings = section(good).unwrap();
        assert_eq!(
            settings.tls.cert,
            std::path::PathBuf::from("/pki/east-router.pem")
        );
        assert_eq!(
            settings.takeover_grace,
            Duration::from_millis(TAKEOVER_GRACE_MS_DEFAULT)
        );
        assert_eq!(settings.gateways.len(), 1);
        let err = section(&good.replace("region = \"east\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("set either tls_dir and region"), "{err}");
        let err = section(&good.replace("[\"http://127.0.0.1:2379\"]", "[]"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("failover.endpoints: etcd needs at least one endpoint"),
            "{err}"
        );
        let err = section(&good.replace("[gateways]\neast = \"127.0.0.1:7111\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("failover.gateways"), "{err}");
        let err = section(&format!("takeover_grace_ms = 0\n{good}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("failover.takeover_grace_ms: must be at least 1"),
            "{err}"
        );
    }
}
