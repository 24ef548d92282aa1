//! [`Replicator`]: the handle a gateway holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use meridian_core::{Clock, RegionId};
use meridian_store::Store;
use meridian_tls::{MeshTls, Service};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::seam::{PeerTransport, ReplicaLog};
use crate::service::{self, ReplicationServer};
use crate::state::{PeerStatus, Shared};
use crate::{Error, ReplicationConfig, Result, dial};

/// Replication of one region with every peer of its mesh. Cheap to clone;
/// clones share everything.
///
/// Wiring in a gateway: serve [`Replicator::service`] on the internal
/// mutual-TLS server (next to the other gateway-to-gateway services), spawn
/// [`Replicator::run`] with the gateway's shutdown signal, and read
/// [`Replicator::status`] for the status RPC and metrics.
#[derive(Clone)]
pub struct Replicator {
    pub(crate) shared: Arc<Shared>,
}

/// See [`Replicator::downgrade`].
#[derive(Clone)]
pub struct WeakReplicator(std::sync::Weak<Shared>);

impl WeakReplicator {
    pub fn upgrade(&self) -> Option<Replicator> {
        self.0.upgrade().map(|shared| Replicator { shared })
    }
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("local", self.shared.local())
            .finish_non_exhaustive()
    }
}

impl Replicator {
    /// Checks the configuration against the store and the certificate (both
    /// must be this region's, the certificate a gateway's). Starts nothing.
    pub fn new(
        config: ReplicationConfig,
        store: Store,
        tls: MeshTls,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let identity = tls.identity();
        let replicator = Self::with_seams(config, Arc::new(store), Arc::new(tls), clock)?;
        let local = replicator.shared.local();
        if identity.region() != local || identity.service() != Service::Gateway {
            return Err(Error::Config(format!(
                "the certificate is {identity}; replication for {local} needs that region's gateway certificate"
            )));
        }
        Ok(replicator)
    }

    /// A replicator over any log and transport: what the deterministic
    /// simulation runs (an in-memory log, simulated TCP). Checks the
    /// configuration against the log; the transport is trusted to reach
    /// peers' gateways. Starts nothing.
    pub fn with_seams(
        config: ReplicationConfig,
        log: Arc<dyn ReplicaLog>,
        transport: Arc<dyn PeerTransport>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        config.validate()?;
        if log.local_region() != &config.local {
            return Err(Error::Config(format!(
                "the store is region {}'s, but replication is configured for {}",
                log.local_region(),
                config.local
            )));
        }
        Ok(Self {
            shared: Arc::new(Shared::new(config, log, transport, clock)),
        })
    }

    pub fn config(&self) -> &ReplicationConfig {
        &self.shared.config
    }

    /// The tonic service that accepts peers' streams. Serve it only over
    /// mutual TLS (`MeshTls::incoming`): it refuses callers without a
    /// gateway certificate.
    pub fn service(&self) -> ReplicationServer {
        service::server(self.shared.clone())
    }

    /// Dials the peers this region dials (keeping their streams open, and
    /// reopening them with backoff), and measures lag every heartbeat
    /// interval, until `shutdown` completes; then closes every stream,
    /// accepted ones included. Call it once per replicator.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let shared = &self.shared;
        let mut tasks = JoinSet::new();
        for peer in shared
            .config
            .peer_regions()
            .filter(|peer| shared.config.dials(peer))
        {
            if let Some(addr) = shared.config.peers.get(peer) {
                tasks.spawn(dial::dial_loop(shared.clone(), peer.clone(), addr.clone()));
            }
        }
        tasks.spawn(monitor(shared.clone()));
        tracing::info!(region = %shared.local(), peers = shared.peers.len(), "replication running");
        shutdown.await;
        shared.shutdown.send_replace(true);
        tasks.shutdown().await;
        tracing::info!(region = %shared.local(), "replication stopped");
    }

    /// Every peer's stream and lag, in the mesh's order.
    pub fn status(&self) -> Vec<PeerStatus> {
        self.shared.status()
    }

    /// A handle that does not keep the replicator alive (for metric
    /// callbacks, which outlive the gateway that registered them).
    pub fn downgrade(&self) -> WeakReplicator {
        WeakReplicator(Arc::downgrade(&self.shared))
    }

    /// Waits until at least one peer has durably applied this region's log
    /// up to `seq`, and names the first such peer. This is the `peer`
    /// durability tier: call it with the sequence number of a write that
    /// must survive the loss of this region. Errors with
    /// [`Error::NotPeerDurable`] after `timeout`, and [`Error::NoPeers`] at
    /// once in a mesh of one.
    pub async fn wait_peer_durable(&self, seq: u64, timeout: Duration) -> Result<RegionId> {
        if self.shared.peers.is_empty() {
            return Err(Error::NoPeers);
        }
        let durable_at = |acked: &BTreeMap<RegionId, u64>| {
            acked
                .iter()
                .filter(|(_, applied)| **applied >= seq)
                .max_by_key(|(_, applied)| **applied)
                .map(|(r, _)| r.clone())
        };
        let mut acked = self.shared.acked.subscribe();
        let waited =
            tokio::time::timeout(timeout, acked.wait_for(|acked| durable_at(acked).is_some()))
                .await;
        match waited {
            Ok(Ok(acked)) => durable_at(&acked).ok_or(Error::Shutdown),
            // The sender lives as long as `self`.
            Ok(Err(_)) => Err(Error::Shutdown),
            Err(_) => {
                let acked = self.shared.acked.borrow().clone();
                let acked = self
                    .shared
                    .peers
                    .keys()
                    .map(|peer| match acked.get(peer) {
                        Some(seq) => format!("{peer}={seq}"),
                        None => format!("{peer}=unknown"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                Err(Error::NotPeerDurable {
                    seq,
                    timeout_ms: timeout.as_millis(),
                    acked,
                })
            }
        }
    }

    /// Waits until this region has durably applied `peer`'s log up to `seq`
    /// (a handoff target waits for the offer it is asked to accept).
    pub async fn wait_applied(&self, peer: &RegionId, seq: u64, timeout: Duration) -> Result<()> {
        if !self.shared.peers.contains_key(peer) {
            return Err(Error::UnknownPeer(peer.clone()));
        }
        if self.shared.store.wait_applied(peer, seq, timeout).await? {
            Ok(())
        } else {
            Err(Error::NotApplied {
                peer: peer.clone(),
                seq,
                timeout_ms: timeout.as_millis(),
            })
        }
    }

    /// This region's applied cursor of each peer's log, updated as streams
    /// apply batches (and every heartbeat interval from the store).
    pub fn applied(&self) -> watch::Receiver<BTreeMap<RegionId, u64>> {
        self.shared.applied.subscribe()
    }

    /// Each peer's acknowledged cursor of this region's log.
    pub fn acked(&self) -> watch::Receiver<BTreeMap<RegionId, u64>> {
        self.shared.acked.subscribe()
    }
}

/// Every heartbeat interval: the local head, the applied cursors, and the
/// age of each peer's oldest unacknowledged event.
async fn monitor(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(shared.config.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = measure(&shared).await {
            tracing::warn!(error = %error, "measuring replication lag failed");
        }
    }
}

async fn measure(shared: &Shared) -> Result<()> {
    let store = &shared.store;
    let head = store.local_head().await?;
    shared.note_head(head);
    for peer in shared.peers.keys() {
        shared.record_applied(peer, store.cursor(peer).await?);
        if let Some(seq) = shared.unacked_to_measure(peer)
            && let Some(event) = store
                .events_after(shared.local(), seq - 1, 1)
                .await?
                .first()
        {
            let millis = i64::try_from(event.hlc_time.millis()).unwrap_or(i64::MAX);
            let at = Timestamp::from_millisecond(millis).unwrap_or(Timestamp::MAX);
            shared.record_oldest_unacked(peer, event.origin_seq, at);
        }
    }
    let lagging: Vec<(RegionId, u64)> = shared
        .status()
        .into_iter()
        .filter(|peer| peer.lag_events > 0)
        .map(|peer| (peer.region, peer.lag_events))
        .collect();
    if !lagging.is_empty() {
        tracing::trace!(head = shared.local_head.load(Ordering::Relaxed), lagging = ?lagging, "replication lag");
    }
    Ok(())
}
