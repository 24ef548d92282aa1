//! The two seams replication runs on: the region's event log
//! ([`ReplicaLog`]) and the way to reach peers ([`PeerTransport`]).
//!
//! Production has one implementation of each: [`meridian_store::Store`] and
//! [`meridian_tls::MeshTls`] (mutual TLS over TCP). The deterministic
//! simulation (`meridian-sim`) has the other: an in-memory log with the
//! store's contract, and plain TCP over turmoil's simulated network. The
//! session, anti-entropy and dialling code is the same in both.
//!
//! Who called is not part of the transport: the accepting services ask
//! `meridian_tls::require`, which takes a [`meridian_tls::PeerIdentity`]
//! from the request's extensions when a layer put one there (the
//! simulation's layer does, from the simulated host's name) and otherwise
//! reads the verified client certificate.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use meridian_core::{EventEnvelope, RegionId, TicketId};
use meridian_store::Store;
use meridian_tls::{MeshTls, PeerIdentity, Service};
use tokio::sync::broadcast;
use tonic::transport::{Channel, Endpoint};

/// A boxed future, as the seams' methods return them (object-safe traits).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What replication needs of a region's store, and nothing more. The
/// contract is the store's: each origin's log is dense from 1;
/// `apply_remote` is idempotent (events at or below the cursor are
/// skipped), refuses a gap with [`meridian_store::Error::Gap`] and moves the
/// origin's cursor in the same commit; `subscribe` sees every commit
/// (local and applied), dropping what a slow receiver has not read.
pub trait ReplicaLog: Send + Sync + 'static {
    fn local_region(&self) -> &RegionId;
    /// This store's durable cursor of `origin`'s log.
    fn cursor<'a>(&'a self, origin: &'a RegionId) -> BoxFuture<'a, meridian_store::Result<u64>>;
    /// The last sequence number of this region's own log.
    fn local_head(&self) -> BoxFuture<'_, meridian_store::Result<u64>>;
    /// Up to `limit` events of `origin`'s log after `after_seq`, in order.
    fn events_after<'a>(
        &'a self,
        origin: &'a RegionId,
        after_seq: u64,
        limit: u32,
    ) -> BoxFuture<'a, meridian_store::Result<Vec<EventEnvelope>>>;
    /// Every event committed from now on.
    fn subscribe(&self) -> broadcast::Receiver<Arc<EventEnvelope>>;
    /// Applies `origin`'s events and returns the new cursor.
    fn apply_remote<'a>(
        &'a self,
        origin: &'a RegionId,
        events: Vec<EventEnvelope>,
    ) -> BoxFuture<'a, meridian_store::Result<u64>>;
    /// Whether the cursor of `origin` reached `seq` within `timeout`.
    fn wait_applied<'a>(
        &'a self,
        origin: &'a RegionId,
        seq: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, meridian_store::Result<bool>>;
    /// Whether any ticket here may be pinned to a residency (if not, the
    /// region's own events ship without a look-up).
    fn may_hold_pinned(&self) -> bool;
    /// The residency of each of these tickets held here (empty: anywhere).
    fn residencies<'a>(
        &'a self,
        ids: &'a [TicketId],
    ) -> BoxFuture<'a, meridian_store::Result<Residencies>>;
}

/// Each ticket's residency, as [`ReplicaLog::residencies`] answers.
pub type Residencies = HashMap<TicketId, BTreeSet<RegionId>>;

impl ReplicaLog for Store {
    fn local_region(&self) -> &RegionId {
        Store::local_region(self)
    }

    fn cursor<'a>(&'a self, origin: &'a RegionId) -> BoxFuture<'a, meridian_store::Result<u64>> {
        Box::pin(Store::cursor(self, origin))
    }

    fn local_head(&self) -> BoxFuture<'_, meridian_store::Result<u64>> {
        Box::pin(Store::local_head(self))
    }

    fn events_after<'a>(
        &'a self,
        origin: &'a RegionId,
        after_seq: u64,
        limit: u32,
    ) -> BoxFuture<'a, meridian_store::Result<Vec<EventEnvelope>>> {
        Box::pin(Store::events_after(self, origin, after_seq, limit))
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<EventEnvelope>> {
        Store::subscribe(self)
    }

    fn apply_remote<'a>(
        &'a self,
        origin: &'a RegionId,
        events: Vec<EventEnvelope>,
    ) -> BoxFuture<'a, meridian_store::Result<u64>> {
        Box::pin(Store::apply_remote(self, origin, events))
    }

    fn wait_applied<'a>(
        &'a self,
        origin: &'a RegionId,
        seq: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, meridian_store::Result<bool>> {
        Box::pin(Store::wait_applied(self, origin, seq, timeout))
    }

    fn may_hold_pinned(&self) -> bool {
        Store::may_hold_pinned(self)
    }

    fn residencies<'a>(
        &'a self,
        ids: &'a [TicketId],
    ) -> BoxFuture<'a, meridian_store::Result<Residencies>> {
        Box::pin(Store::residencies(self, ids))
    }
}

/// How this region's replicator opens channels to a peer's gateway, and
/// how it spreads its reconnects.
pub trait PeerTransport: Send + Sync + 'static {
    /// A channel to `peer`'s gateway at `endpoint`, connected now.
    fn connect(
        &self,
        peer: &RegionId,
        endpoint: Endpoint,
    ) -> BoxFuture<'static, Result<Channel, tonic::transport::Error>>;
    /// A channel to `peer`'s gateway at `endpoint` that connects on first
    /// use and reconnects after.
    fn connect_lazy(&self, peer: &RegionId, endpoint: Endpoint) -> Channel;
    /// A pause somewhere in `[pause / 2, pause]`, so that regions that lost
    /// each other at once do not dial again in lockstep. The simulation
    /// draws it from its seed.
    fn jitter(&self, pause: Duration) -> Duration {
        let random = RandomState::new().hash_one(std::time::SystemTime::now());
        let half = pause / 2;
        let half_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_nanos(random % half_nanos)
    }
}

/// Mutual TLS: the server must present `peer`'s gateway certificate.
impl PeerTransport for MeshTls {
    fn connect(
        &self,
        peer: &RegionId,
        endpoint: Endpoint,
    ) -> BoxFuture<'static, Result<Channel, tonic::transport::Error>> {
        let connector = self.connector(gateway_of(self, peer));
        Box::pin(async move { endpoint.connect_with_connector(connector).await })
    }

    fn connect_lazy(&self, peer: &RegionId, endpoint: Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(self.connector(gateway_of(self, peer)))
    }
}

fn gateway_of(tls: &MeshTls, peer: &RegionId) -> PeerIdentity {
    PeerIdentity::new(
        tls.identity().trust_domain().clone(),
        peer.clone(),
        Service::Gateway,
    )
}
