//! Meridian's durable storage for one region: the event log of every origin,
//! the ticket projection, notes, conflicts, the local log head and the
//! replication cursors, on SQLite (embedded) or PostgreSQL (production)
//! through one set of code on sqlx's `Any` driver.
//!
//! What it owns: the outbox rule (an event and the projection change it
//! describes commit in one transaction, never one without the other), dense
//! per-origin sequence numbers, execution of the core's plans with the
//! compare-and-set in the SQL statement itself (a guard becomes the `WHERE`
//! clause, see `exec.rs` and docs/store.md), idempotent and gap-free
//! replication apply, and group commit through a single writer task (an
//! answer means committed).
//!
//! What it must never do: decide domain rules (which change an event makes,
//! under which guard, what a miss means, when to refold: all
//! `meridian_core::plan`), speak gRPC or know about peers, read the wall
//! clock where a caller's instant exists, or acknowledge a write before it
//! has committed.

#![forbid(unsafe_code)]

mod codec;
mod config;
mod error;
mod exec;
mod ops;
mod region_lock;
mod schema;
mod search;
mod store;
mod writer;

use jiff::Timestamp;
use meridian_core::{
    Epoch, EventEnvelope, Note, RegionId, Status, Ticket, TicketChanges, TicketId, Tier,
};

pub use config::{
    BATCH_MAX_DEFAULT, Backend, MAX_CONNECTIONS_DEFAULT, QUEUE_CAPACITY_DEFAULT, StoreConfig,
    Synchronous,
};
pub use error::{Error, Result};
pub use region_lock::{
    REGION_LOCK_CHECK_TIMEOUT_MS, REGION_LOCK_HEARTBEAT_MS, REGION_LOCK_KEEPALIVE_S, RegionLock,
};
pub use schema::schema_version;
pub use search::SearchQuery;
pub use store::{
    EVENTS_PAGE_MAX, LIST_LIMIT_MAX, SQLITE_BUSY_TIMEOUT_MS, SUBSCRIBE_CAPACITY, Store,
    SystemClock, WriteMeta,
};
pub use writer::WriterStats;

/// The longest digest an [`IdempotencyKey`] may carry (a SHA-256 in hex is 64).
pub const IDEMPOTENCY_DIGEST_LEN_MAX: usize = 128;

/// A creation's idempotency key as the store keeps it
/// ([`Store::create_ticket_idempotent`]): digests the caller computed, so the
/// store holds neither the caller's identity nor the request's text twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Digest of the caller's scope and key: unique per region.
    pub key_digest: String,
    /// Digest of the validated request the key was first used with.
    pub request_digest: String,
}

/// What a keyed creation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The ticket was created now: its `TicketCreated` event.
    Created(EventEnvelope),
    /// The key had already created a ticket from the same request; nothing
    /// was written. The ticket is as it is now, and the creation event's
    /// place in its origin's log.
    Replayed {
        ticket: Ticket,
        origin_region: RegionId,
        origin_seq: u64,
    },
}

/// A ticket with everything shown alongside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketRecord {
    pub ticket: Ticket,
    /// By creation time, then note id.
    pub notes: Vec<Note>,
    /// In the order they were recorded.
    pub conflicts: Vec<ConflictRecord>,
}

/// A conflict as the store recorded it, published after its commit
/// ([`Store::subscribe_conflicts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedConflict {
    pub ticket_id: meridian_core::TicketId,
    pub conflict: ConflictRecord,
}

/// An owner-scoped write that arrived at an epoch other than the ticket's
/// current one. It was not applied; it is kept so a person can see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictRecord {
    pub origin_region: RegionId,
    pub origin_seq: u64,
    /// The epoch the write was made at.
    pub stale_epoch: Epoch,
    /// The ticket's epoch when the write arrived.
    pub current_epoch: Epoch,
    pub changes: TicketChanges,
    pub recorded_at: Timestamp,
}

/// Which tickets `list_tickets` returns: those matching every given field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketFilter {
    pub status: Option<Status>,
    pub owner_region: Option<RegionId>,
    pub assignee: Option<String>,
    pub tier: Option<Tier>,
    /// Only tickets with an SLA clock at risk or breached.
    pub sla_at_risk: bool,
    /// Only tickets after this id (the previous page's `next_after`).
    pub after: Option<TicketId>,
    /// Page size, clamped to `1..=500`.
    pub limit: u32,
}

impl Default for TicketFilter {
    fn default() -> Self {
        Self {
            status: None,
            owner_region: None,
            assignee: None,
            tier: None,
            sla_at_risk: false,
            after: None,
            limit: 100,
        }
    }
}

/// What a region's queue holds: `queue_counts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Tickets the region owns, by status name; statuses with none are absent.
    pub by_status: std::collections::BTreeMap<String, u64>,
    /// Owned tickets, neither solved nor closed, with an SLA clock at risk or breached.
    pub sla_at_risk: u64,
}

/// Open tickets of a region by assignee ([`Store::assignments`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignments {
    /// Open tickets per agent; agents with none are absent.
    pub open_by_agent: std::collections::HashMap<String, u32>,
    pub unassigned: u32,
    /// When the oldest unassigned open ticket was created.
    pub oldest_unassigned: Option<jiff::Timestamp>,
}

/// One page of `list_tickets`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketPage {
    pub tickets: Vec<Ticket>,
    /// Set only when another page may follow.
    pub next_after: Option<TicketId>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    async fn pragma(store: &Store, name: &str) -> String {
        // Hold several connections at once so more than one is checked: the
        // settings are per connection.
        let mut conns = Vec::new();
        for _ in 0..3 {
            conns.push(store.pool().acquire().await.unwrap());
        }
        let mut seen = Vec::new();
        for conn in &mut conns {
            let row = sqlx::query(&format!("PRAGMA {name}"))
                .fetch_one(&mut **conn)
                .await
                .unwrap();
            let value = row
                .try_get::<String, _>(0)
                .or_else(|_| row.try_get::<i64, _>(0).map(|v| v.to_string()));
            seen.push(value.unwrap());
        }
        seen.dedup();
        assert_eq!(seen.len(), 1, "connections disagree on {name}: {seen:?}");
        seen.remove(0)
    }

    #[tokio::test]
    async fn sqlite_pragmas_are_set_on_every_connection() {
        let dir = tempfile::tempdir().unwrap();
        let region = RegionId::new("us-east").unwrap();
        for (synchronous, expected) in [
            (Synchronous::Full, "2"),
            (Synchronous::Normal, "1"),
            (Synchronous::Extra, "3"),
        ] {
            let path = dir.path().join(format!("{}.db", synchronous.as_str()));
            let mut config = StoreConfig::sqlite_file(&path);
            config.sqlite_synchronous = synchronous;
            let store = Store::open(&config, &region).await.unwrap();
            assert_eq!(pragma(&store, "journal_mode").await, "wal");
            assert_eq!(
                pragma(&store, "synchronous").await,
                expected,
                "{synchronous:?}"
            );
            assert_eq!(pragma(&store, "foreign_keys").await, "1");
            assert_eq!(
                pragma(&store, "busy_timeout").await,
                SQLITE_BUSY_TIMEOUT_MS.to_string()
            );
            store.close().await;
        }
    }

    #[tokio::test]
    async fn default_config_is_durable() {
        let config = StoreConfig::new("sqlite::memory:");
        assert_eq!(config.sqlite_synchronous, Synchronous::Full);
        assert_eq!(config.batch_max, 256);
        assert_eq!(config.queue_capacity, 1024);
        let region = RegionId::new("us-east").unwrap();
        let store = Store::open(&config, &region).await.unwrap();
        assert_eq!(store.backend(), Backend::Sqlite);
        assert_eq!(store.local_head().await.unwrap(), 0);
        store.close().await;
    }

    #[tokio::test]
    async fn bad_config_is_refused_by_name() {
        let region = RegionId::new("us-east").unwrap();
        let mut config = StoreConfig::new("sqlite::memory:");
        config.batch_max = 0;
        let err = Store::open(&config, &region).await.unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("batch_max")),
            "{err}"
        );
        let err = Store::open(&StoreConfig::new("mysql://x/y"), &region)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::sqlite_file(&dir.path().join("m.db"));
        let region = RegionId::new("us-east").unwrap();
        let store = Store::open(&config, &region).await.unwrap();
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)")
            .execute(store.pool())
            .await
            .unwrap();
        store.close().await;
        let err = Store::open(&config, &region).await.unwrap_err();
        assert!(
            matches!(err, Error::Migration { version: 999, .. }),
            "{err}"
        );
    }
}
