//! `meridian-replication`: each region's event log shipped to every other
//! region, over one mutual-TLS gRPC stream per pair of regions.
//!
//! It owns:
//! - **the streams** ([`Replicator`]): of each pair of regions the one listed
//!   first in the mesh dials and the other accepts ([`Replicator::service`]);
//!   the dialler reconnects with capped exponential backoff. Both ends run
//!   the same session: Hello with the durable cursor of the other's log,
//!   then each ships only its own log after that cursor (backlog from the
//!   log, then live commits), applies what it receives idempotently with
//!   its cursor, acks, and answers a gap with a resend request. A gap is
//!   never skipped, and a reconnect resumes exactly where each side is
//!   durable;
//! - **who may replicate**: only gateways (by their SPIFFE certificate),
//!   each only for the region its certificate names;
//! - **lag and durability**: per-peer status ([`Replicator::status`]: acked
//!   and applied cursors, lag in events and seconds, heartbeats), and the
//!   `peer` durability tier ([`Replicator::wait_peer_durable`]);
//! - **the convergence check** ([`check_convergence`]): do stores hold the
//!   same logs and projections;
//! - **anti-entropy and relay** ([`AntiEntropy`]): every interval each
//!   region compares per-origin heads and bucket digests with every peer,
//!   fetches what it lacks of any origin from whichever peer holds it (so a
//!   region's events outlive the region), and reports ranges that differ.
//!
//! Boundary: the store decides what applying an event means (projections,
//! fencing, conflicts) and guarantees idempotence and gap detection; this
//! crate moves events and never interprets them. Frames are decoded and
//! checked in `meridian-proto` (`meridian_proto::replication`). It does not
//! decide ownership, handoffs or failover, which build on it, and it serves
//! no listener of its own: the gateway hosts [`Replicator::service`] on its
//! internal mutual-TLS server. Local writes never wait on it: the store
//! publishes commits on a broadcast that drops what a slow stream has not
//! read, and the stream pages those events from the log instead.
//!
//! # Wiring
//!
//! ```no_run
//! # use std::{collections::BTreeMap, sync::Arc, time::Duration};
//! # use meridian_replication::{Replicator, ReplicationConfig};
//! # async fn example(
//! #     store: meridian_store::Store,
//! #     tls: meridian_tls::MeshTls,
//! #     clock: Arc<dyn meridian_core::Clock>,
//! #     regions: Vec<meridian_core::RegionId>,
//! #     peers: BTreeMap<meridian_core::RegionId, String>,
//! #     listener: tokio::net::TcpListener,
//! #     seq: u64,
//! # ) -> anyhow::Result<()> {
//! let config = ReplicationConfig::new(store.local_region().clone(), regions, peers);
//! let replicator = Replicator::new(config, store, tls.clone(), clock)?;
//! // The internal server: mutual TLS only.
//! tokio::spawn(
//!     tonic::transport::Server::builder()
//!         .add_service(replicator.service())
//!         .serve_with_incoming_shutdown(tls.incoming(listener), std::future::pending()),
//! );
//! tokio::spawn(replicator.clone().run(std::future::pending()));
//! // `peer` durability for the write that got `seq`:
//! let peer = replicator.wait_peer_durable(seq, Duration::from_secs(5)).await?;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod anti_entropy;
mod config;
pub mod convergence;
mod dial;
mod digest;
mod error;
mod replicator;
pub mod residency;
mod seam;
mod service;
mod session;
mod state;
pub mod trace;

pub use anti_entropy::{
    ANTI_ENTROPY_CALL_TIMEOUT_DEFAULT, ANTI_ENTROPY_INTERVAL_DEFAULT, AntiEntropy,
    AntiEntropyConfig, AntiEntropyHandler, AntiEntropyServer, AntiEntropyStats, BUCKET_EVENTS_MAX,
    DivergentBucket, FETCH_EVENTS_MAX,
};
pub use config::{
    BATCH_BYTES_MAX_DEFAULT, BATCH_EVENTS_MAX_DEFAULT, CONNECT_TIMEOUT_DEFAULT, FRAME_BYTES_MAX,
    HEARTBEAT_INTERVAL_DEFAULT, PEER_SILENCE_MAX_DEFAULT, RECONNECT_BACKOFF_MAX_DEFAULT,
    RECONNECT_BACKOFF_MIN_DEFAULT, ReplicationConfig,
};
pub use convergence::{
    Acked, ConvergenceReport, Divergence, RegionView, check_acked, check_convergence, check_owners,
    check_views, differing_parts, read_view,
};
pub use digest::BUCKET_EVENTS_DEFAULT;
pub use error::{Error, Result};
pub use replicator::{Replicator, WeakReplicator};
pub use seam::{BoxFuture, PeerTransport, ReplicaLog, Residencies};
pub use service::{ReplicationHandler, ReplicationServer};
pub use state::PeerStatus;
