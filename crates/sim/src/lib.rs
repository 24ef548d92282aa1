//! `meridian-sim`: the mesh under a deterministic simulation.
//!
//! Three regions and the router run as [turmoil] hosts on one thread, on
//! simulated time and a simulated network. Each region runs the real
//! replication code of `meridian-replication` (the streams, their
//! sessions, anti-entropy and its relay, the dialler's reconnects) served
//! by tonic over simulated TCP, on an in-memory model of the store
//! ([`model`]) that mirrors every commit into the real store on an
//! in-memory SQLite database ([`sql`]); the router holds the regions' leases and records takeovers
//! when one lapses. A seeded driver sends the workload (creates routed by
//! shift, updates, notes, handoffs, shift changes) and injects faults
//! (partitions full and one-way, held links, latency, flaky links,
//! crashes and restarts). After the work it heals everything, runs until
//! quiet, and [`check`] looks for lost, duplicated and divergent events,
//! acknowledged writes missing anywhere, projections that differ and
//! epochs written by two regions.
//!
//! Everything that decides what happens comes from the seed: turmoil's
//! network randomness (`rng_seed`), the driver's [`rng::Rng`], and the
//! replicator's reconnect jitter ([`net::SimTransport`]). The same seed
//! gives the same faults and the same final logs; `MERIDIAN_SEED=N`
//! replays one (see ARCHITECTURE.md, "Deterministic simulation").
//!
//! Boundary: a test harness. It exercises the SQL store's writes, fencing,
//! apply and refolds ([`sql`]: every region's tickets in SQL must equal the
//! fold of its log), but not TLS, the gateway's or router's gRPC services,
//! or etcd; what it models in their place is listed in ARCHITECTURE.md.

#![forbid(unsafe_code)]

pub mod check;
pub mod model;
pub mod net;
pub mod rng;
mod run;
pub mod sql;

pub use check::{Acked, Report, Violation};

/// Whether this build replays a seed exactly: built with
/// `--cfg tokio_unstable` (the workspace's `.cargo/config.toml`), turmoil seeds each host's tokio
/// runtime, whose `select!` otherwise polls ready branches in a random
/// order. Without it a seed still replays the same fault schedule and the
/// same workload draws, but interleavings (and so the final logs) may vary.
pub const EXACT_REPLAY: bool = cfg!(sim_exact);
pub use run::{Outcome, SimOptions, run_seed};
