//! A durable outbox in the region's own database.
//!
//! Work that must leave the process (a webhook POST, an email) is written
//! here first and delivered afterwards, so a crash between "decided" and
//! "delivered" loses nothing: the item is still in the table when the
//! process comes back. Items are keyed by `(channel, key)`; enqueueing a
//! key that is already there is a no-op, which is what makes a producer
//! that replays its input after a crash send each thing once.
//!
//! An item's life: `pending` → claimed (its `not_before` moves a claim
//! lease ahead and its attempt count goes up, so a claimer that dies gives
//! it back when the lease runs out) → `delivered`, or back to `pending`
//! after a failure with exponential backoff and jitter, or `dead` once
//! [`RetryPolicy::attempts_max`] attempts failed. A dead letter stays until
//! someone requeues it ([`Outbox::requeue`]). Delivery is therefore at
//! least once; receivers deduplicate by the key, which every channel sends.
//!
//! Boundary: this crate owns its tables (`outbox_items`, `outbox_cursors`)
//! and its own typed connection pool on the store's database URL. It never
//! touches the event log, whose only writer is the store's writer; a
//! consumer of the log keeps its position here ([`Outbox::cursor`]) so it
//! resumes where it stopped. Time is passed in by the caller (no wall clock
//! here), so tests and `meridian up --speed` drive it.

#![forbid(unsafe_code)]

pub mod db;
mod error;
mod retry;

use std::time::Duration;

use jiff::Timestamp;
use sqlx::Row;

use db::Pool;
pub use error::{Error, Result};
pub use retry::RetryPolicy;

/// Connections the outbox keeps: one deliverer and the odd producer.
const POOL_CONNECTIONS_MAX: u32 = 4;
/// The most items one claim returns.
pub const CLAIM_BATCH_MAX: u32 = 256;
/// The most characters of a delivery error kept on the item.
const ERROR_CHARS_MAX: usize = 1000;

/// Where an item is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Delivered,
    Dead,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivered => "delivered",
            State::Dead => "dead",
        }
    }

    fn parse(text: &str) -> Result<State> {
        match text {
            "pending" => Ok(State::Pending),
            "delivered" => Ok(State::Delivered),
            "dead" => Ok(State::Dead),
            other => Err(Error::Corrupt(format!("unknown item state {other:?}"))),
        }
    }
}

/// One item as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: i64,
    pub channel: String,
    pub key: String,
    /// The channel's own encoding (the notifier stores JSON).
    pub payload: String,
    pub state: State,
    /// Delivery attempts started so far (a claim starts one).
    pub attempts: u32,
    /// Not claimed before this instant.
    pub not_before: Timestamp,
    pub created_at: Timestamp,
    pub last_error: Option<String>,
}

/// What became of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Tried again at this instant.
    Retry(Timestamp),
    /// Out of attempts: a dead letter now.
    Dead,
    /// The item was claimed again meanwhile (its lease ran out); the newer
    /// attempt decides.
    Stale,
}

/// Items by state, for gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
}

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    item_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    not_before_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    last_error TEXT,
    UNIQUE (channel, item_key)
);
CREATE INDEX IF NOT EXISTS outbox_items_due ON outbox_items (state, channel, not_before_ms);
CREATE TABLE IF NOT EXISTS outbox_cursors (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
";

const POSTGRES_SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS outbox_items (
        id BIGSERIAL PRIMARY KEY,
        channel TEXT NOT NULL,
        item_key TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        not_before_ms BIGINT NOT NULL,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL,
        last_error TEXT,
        UNIQUE (channel, item_key)
    )",
    "CREATE INDEX IF NOT EXISTS outbox_items_due ON outbox_items (state, channel, not_before_ms)",
    "CREATE TABLE IF NOT EXISTS outbox_cursors (
        name TEXT PRIMARY KEY,
        position BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL
    )",
];

const ITEM_COLUMNS: &str =
    "id, channel, item_key, payload, state, attempts, not_before_ms, created_ms, last_error";

/// The durable outbox of one region.
#[derive(Clone, Debug)]
pub struct Outbox {
    pool: Pool,
    policy: RetryPolicy,
}

impl Outbox {
    /// Opens the outbox on the store's database (`sqlite:…` or
    /// `postgres://…`) and creates its tables if they are missing.
    pub async fn open(url: &str, policy: RetryPolicy) -> Result<Outbox> {
        policy.check()?;
        let pool = Pool::connect(url, POOL_CONNECTIONS_MAX).await?;
        match &pool {
            Pool::Sqlite(sqlite) => {
                sqlx::raw_sql(SQLITE_SCHEMA).execute(sqlite).await?;
            }
            Pool::Postgres(_) => pool.create_tables(&POSTGRES_SCHEMA).await?,
        }
        Ok(Outbox { pool, policy })
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Adds an item due at `not_before`. Returns `false`, changing nothing,
    /// when `(channel, key)` is already there in any state.
    pub async fn enqueue(
        &self,
        channel: &str,
        key: &str,
        payload: &str,
        not_before: Timestamp,
    ) -> Result<bool> {
        let at = not_before.as_millisecond();
        let sql = "INSERT INTO outbox_items
                (channel, item_key, payload, state, attempts, not_before_ms, created_ms, updated_ms, last_error)
            VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4, NULL)
            ON CONFLICT (channel, item_key) DO NOTHING";
        let done = on_pool!(&self.pool, |pool| sqlx::query(sql)
            .bind(channel)
            .bind(key)
            .bind(payload)
            .bind(at)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(done == 1)
    }

    /// Claims up to `limit` pending items of `channel` due at `now`, oldest
    /// first: each starts an attempt and is hidden from other claims for
    /// [`RetryPolicy::claim_lease`].
    pub async fn claim(&self, channel: &str, now: Timestamp, limit: u32) -> Result<Vec<Item>> {
        let limit = i64::from(limit.clamp(1, CLAIM_BATCH_MAX));
        let now_ms = now.as_millisecond();
        let lease_ms = millis(self.policy.claim_lease);
        let lock = match self.pool {
            Pool::Sqlite(_) => "",
            // Concurrent claimers (replicas, a CLI) skip each other's rows.
            Pool::Postgres(_) => "FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE outbox_items SET attempts = attempts + 1, not_before_ms = $1, updated_ms = $2
             WHERE id IN (SELECT id FROM outbox_items
                 WHERE channel = $3 AND state = 'pending' AND not_before_ms <= $2
                 ORDER BY not_before_ms, id LIMIT $4 {lock})
             RETURNING {ITEM_COLUMNS}"
        );
        let mut items = on_pool!(&self.pool, |pool| {
            let rows = sqlx::query(&sql)
                .bind(now_ms.saturating_add(lease_ms))
                .bind(now_ms)
                .bind(channel)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter().map(item).collect::<Result<Vec<_>>>()?
        });
        items.sort_by_key(|i| (i.created_at, i.id));
        Ok(items)
    }

    /// The attempt succeeded.
    pub async fn delivered(&self, item: &Item, now: Timestamp) -> Result<()> {
        let sql = "UPDATE outbox_items SET state = 'delivered', updated_ms = $1, last_error = NULL
            WHERE id = $2";
        on_pool!(&self.pool, |pool| sqlx::query(sql)
            .bind(now.as_millisecond())
            .bind(item.id)
            .execute(pool)
            .await
            .map(drop)?);
        Ok(())
    }

    /// The attempt failed with `error`: the item is retried after the
    /// policy's backoff, or becomes a dead letter after its last attempt.
    pub async fn failed(&self, item: &Item, now: Timestamp, error: &str) -> Result<Failure> {
        let error: String = error.chars().take(ERROR_CHARS_MAX).collect();
        let dead = item.attempts >= self.policy.attempts_max;
        let (state, at) = if dead {
            ("dead", now)
        } else {
            let delay = self.policy.delay(item.attempts, random());
            ("pending", now.checked_add(delay).unwrap_or(Timestamp::MAX))
        };
        // Only the attempt that claimed it last may settle it.
        let sql = "UPDATE outbox_items SET state = $1, not_before_ms = $2, updated_ms = $3, last_error = $4
            WHERE id = $5 AND attempts = $6 AND state = 'pending'";
        let changed = on_pool!(&self.pool, |pool| sqlx::query(sql)
            .bind(state)
            .bind(at.as_millisecond())
            .bind(now.as_millisecond())
            .bind(&error)
            .bind(item.id)
            .bind(i64::from(item.attempts))
            .execute(pool)
            .await?
            .rows_affected());
        Ok(match (changed, dead) {
            (0, _) => Failure::Stale,
            (_, true) => Failure::Dead,
            (_, false) => Failure::Retry(at),
        })
    }

    /// Dead letters, oldest first; of one channel or all.
    pub async fn dead_letters(&self, channel: Option<&str>, limit: u32) -> Result<Vec<Item>> {
        self.list(State::Dead, channel, limit).await
    }

    /// Items in `state`, oldest first; of one channel or all.
    pub async fn list(&self, state: State, channel: Option<&str>, limit: u32) -> Result<Vec<Item>> {
        let sql = format!(
            "SELECT {ITEM_COLUMNS} FROM outbox_items
             WHERE state = $1 AND ($2 IS NULL OR channel = $2)
             ORDER BY created_ms, id LIMIT $3"
        );
        on_pool!(&self.pool, |pool| {
            let rows = sqlx::query(&sql)
                .bind(state.as_str())
                .bind(channel)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            rows.iter().map(item).collect()
        })
    }

    /// One item by its key.
    pub async fn get(&self, channel: &str, key: &str) -> Result<Option<Item>> {
        let sql =
            format!("SELECT {ITEM_COLUMNS} FROM outbox_items WHERE channel = $1 AND item_key = $2");
        on_pool!(&self.pool, |pool| {
            let row = sqlx::query(&sql)
                .bind(channel)
                .bind(key)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(item).transpose()
        })
    }

    /// Puts a dead letter back in line, due at `now`, with a fresh attempt
    /// budget. Returns `false` when no dead letter has that key.
    pub async fn requeue(&self, channel: &str, key: &str, now: Timestamp) -> Result<bool> {
        let sql = "UPDATE outbox_items SET state = 'pending', attempts = 0, not_before_ms = $1, updated_ms = $1
            WHERE channel = $2 AND item_key = $3 AND state = 'dead'";
        let changed = on_pool!(&self.pool, |pool| sqlx::query(sql)
            .bind(now.as_millisecond())
            .bind(channel)
            .bind(key)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(changed == 1)
    }

    /// How many items are in each state.
    pub async fn counts(&self) -> Result<Counts> {
        let sql = "SELECT state, COUNT(*) AS n FROM outbox_items GROUP BY state";
        let rows: Vec<(String, i64)> = on_pool!(&self.pool, |pool| {
            let rows = sqlx::query(sql).fetch_all(pool).await?;
            rows.iter()
                .map(|row| Ok((row.try_get("state")?, row.try_get("n")?)))
                .collect::<Result<Vec<_>>>()?
        });
        let mut counts = Counts::default();
        for (state, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            match State::parse(&state)? {
                State::Pending => counts.pending = n,
                State::Delivered => counts.delivered = n,
                State::Dead => counts.dead = n,
            }
        }
        Ok(counts)
    }

    /// Forgets delivered items last touched before `before`. Their keys
    /// stop deduplicating then, so `before` must lie further back than any
    /// producer replays (the notifier replays from its cursor only).
    pub async fn prune_delivered(&self, before: Timestamp) -> Result<u64> {
        let sql = "DELETE FROM outbox_items WHERE state = 'delivered' AND updated_ms < $1";
        Ok(on_pool!(&self.pool, |pool| sqlx::query(sql)
            .bind(before.as_millisecond())
            .execute(pool)
            .await?
            .rows_affected()))
    }

    /// A log consumer's saved position, if it saved one.
    pub async fn cursor(&self, name: &str) -> Result<Option<u64>> {
        let sql = "SELECT position FROM outbox_cursors WHERE name = $1";
        let position: Option<i64> = on_pool!(&self.pool, |pool| {
            let row = sqlx::query(sql).bind(name).fetch_optional(pool).await?;
            row.map(|row| row.try_get("position")).transpose()?
        });
        position
            .map(|p| u64::try_from(p).map_err(|_| Error::Corrupt(format!("cursor {name} is {p}"))))
            .transpose()
    }

    /// Saves a consumer's position. Positions only move forward: a stale
    /// writer (an old replica) cannot move it back.
    pub async fn set_cursor(&self, name: &str, position: u64, now: Timestamp) -> Result<()> {
        let position = i64::try_from(position)
            .map_err(|_| Error::Config(format!("cursor {name}: position {position} too large")))?;
        let sql = "INSERT INTO outbox_cursors (name, position, updated_ms) VALUES ($1, $2, $3)
            ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_ms = excluded.updated_ms
            WHERE outbox_cursors.position < excluded.position";
        on_pool!(&self.pool, |pool| sqlx::query(sql)
            .bind(name)
            .bind(position)
            .bind(now.as_millisecond())
            .execute(pool)
            .await
            .map(drop)?);
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await
    }
}

fn item<R: Row>(row: &R) -> Result<Item>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
{
    let time = |column: &str| -> Result<Timestamp> {
        let ms: i64 = row.try_get(column)?;
        Timestamp::from_millisecond(ms).map_err(|e| Error::Corrupt(format!("{column} {ms}: {e}")))
    };
    let attempts: i64 = row.try_get("attempts")?;
    let state: String = row.try_get("state")?;
    Ok(Item {
        id: row.try_get("id")?,
        channel: row.try_get("channel")?,
        key: row.try_get("item_key")?,
        payload: row.try_get("payload")?,
        state: State::parse(&state)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        not_before: time("not_before_ms")?,
        created_at: time("created_ms")?,
        last_error: row.try_get("last_error")?,
    })
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Jitter's randomness; a failing OS source only makes retries line up.
fn random() -> u64 {
    getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15)
}
