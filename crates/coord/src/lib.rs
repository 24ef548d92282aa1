//! Failover coordination: region leases and takeover records.
//!
//! Each region's gateway holds a **lease** on its region and keeps it alive in
//! the background; the [`Lease`] handle reports its state through a
//! `tokio::sync::watch` and **fences** itself (refuses owner-scoped writes)
//! once `now >= last successful renewal + ttl - safety_margin`, which is
//! strictly before the coordination store can let the lease expire. The
//! router watches which regions hold live leases ([`Coordinator::watch_regions`])
//! and, when one expires, records a **takeover** by an ordered list of
//! successors in one transaction
//! ([`Coordinator::record_takeover`]): exactly one concurrent takeover wins,
//! and the store revision of that write is the **fencing token**, greater than
//! any token handed out before. A returning region reads the record
//! ([`Coordinator::takeover_of`]), catches up, and acknowledges it
//! ([`Coordinator::acknowledge_takeover`]) before it may take a lease again.
//!
//! Two implementations sit behind the [`Coordinator`] trait:
//! - [`EtcdCoordinator`], over etcd's v3 gRPC API (code generated from the
//!   subset in `proto/` by protox, no system `protoc`), with lease timing on
//!   monotonic time;
//! - [`LocalCoordinator`], in-process for the single-process mesh and tests,
//!   driven by an injected [`meridian_core::Clock`].
//!
//! Boundary: this crate owns the keys under its prefix in etcd and the
//! meaning of leases, takeovers and fencing tokens. It knows nothing of
//! tickets, epochs or replication: the gateway turns a fenced lease into
//! refused writes, and the router and gateways turn a takeover into
//! `TakenOver` events. It never retries a write whose outcome it cannot tell
//! without first reading back whether it was applied.

#![forbid(unsafe_code)]

mod error;
mod etcd;
mod keys;
mod lease;
mod local;
mod types;

pub use error::{Error, Result};
pub use etcd::{EtcdConfig, EtcdCoordinator};
pub use keys::KeyLayout;
pub use lease::{Lease, LeaseState};
pub use local::{LocalConfig, LocalCoordinator};
pub use types::{LeaseId, LiveLease, RegionStatus, RegionView, Revision, Takeover};

use std::time::Duration;

use meridian_core::RegionId;
use tokio::sync::watch;

/// What failover needs from a coordination store. Object safe: services hold
/// an `Arc<dyn Coordinator>`.
#[tonic::async_trait]
pub trait Coordinator: Send + Sync + 'static {
    /// Takes `region`'s lease for at least `ttl` (etcd rounds up to whole
    /// seconds and to its minimum; [`Lease::ttl`] says what was granted) and
    /// keeps it alive in the background until the handle is dropped,
    /// [`Lease::stop_renewing`] or [`Lease::release`].
    ///
    /// Fails with [`Error::LeaseHeld`] while any live lease on the region
    /// exists (also one held by an earlier process of the same region: wait
    /// for its ttl), and with [`Error::TakenOver`] while a takeover of the
    /// region awaits acknowledgement.
    async fn acquire_lease(&self, region: &RegionId, ttl: Duration) -> Result<Lease>;

    /// One region's lease and takeover state, read at the store's latest
    /// revision (a linearizable read on etcd).
    async fn region_status(&self, region: &RegionId) -> Result<RegionStatus>;

    /// Every region's state, kept current in the background for as long as a
    /// receiver exists. A region whose lease expires shows up with
    /// `lease: None` within the store's expiry granularity.
    async fn watch_regions(&self) -> Result<watch::Receiver<RegionView>>;

    /// Records, in one transaction, that `successors` take over
    /// `failed_region`'s tickets: the first is the primary
    /// ([`Takeover::successor`]), the rest ([`Takeover::also`]) take, in
    /// that order, the tickets whose residency excludes those before them.
    /// It succeeds only if, at the moment it is applied, `failed_region`
    /// holds no live lease, no takeover of it awaits acknowledgement, every
    /// successor holds a live lease, and `failed_region` has not
    /// acknowledged a takeover after `expected_revision` (the
    /// [`RegionStatus::revision`] or [`RegionView::revision`] the caller
    /// decided on). Of two concurrent takeovers exactly one wins; the loser
    /// gets [`Error::TakenOver`] naming the winner. `successors` must be
    /// non-empty, without repeats, and must not name `failed_region`.
    async fn record_takeover(
        &self,
        failed_region: &RegionId,
        successors: &[RegionId],
        expected_revision: Revision,
    ) -> Result<Takeover>;

    /// The takeover of `region` that awaits its acknowledgement, if any.
    async fn takeover_of(&self, region: &RegionId) -> Result<Option<Takeover>>;

    /// Called by a returning region once it has learnt the epochs minted
    /// since the takeover: clears the pending record (one transaction,
    /// conditional on `fencing_token` still being the pending one), after
    /// which the region may acquire its lease again. Idempotent.
    async fn acknowledge_takeover(&self, region: &RegionId, fencing_token: Revision) -> Result<()>;
}
