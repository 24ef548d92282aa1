//! The region's database as the crates that keep tables of their own next
//! to the store open it (this outbox, the mail ledger): a typed pool per
//! backend (no `Any` driver: its type mapping is the lowest common one),
//! SQLite in WAL mode waiting for the store's writer rather than failing.

use std::time::Duration;

use sqlx::{
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqlitePoolOptions},
};

use crate::{Error, Result};

/// The two databases a region's store may live in.
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Runs the same query code against whichever pool this is: the SQL is
/// written once (`$N` placeholders, which SQLite accepts too).
#[macro_export]
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            $crate::db::Pool::Sqlite($p) => $body,
            $crate::db::Pool::Postgres($p) => $body,
        }
    };
}

impl Pool {
    /// Connects to `url` (`sqlite:…` or `postgres://…`) with at most
    /// `connections_max` connections (one for an in-memory SQLite, which
    /// exists only as long as its one connection).
    pub async fn connect(url: &str, connections_max: u32) -> Result<Pool> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            "sqlite" => {
                let options: SqliteConnectOptions = url
                    .parse()
                    .map_err(|e| Error::Config(format!("database URL: {e}")))?;
                // The store's writer holds the write lock in bursts; wait
                // for it rather than fail, as the store's own pool does.
                let options = options
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5));
                let in_memory = url.contains(":memory:") || url.contains("mode=memory");
                let pool = SqlitePoolOptions::new()
                    .max_connections(if in_memory { 1 } else { connections_max })
                    .min_connections(u32::from(in_memory))
                    .idle_timeout((!in_memory).then_some(Duration::from_secs(600)))
                    .max_lifetime((!in_memory).then_some(Duration::from_secs(1800)))
                    .connect_with(options)
                    .await?;
                Ok(Pool::Sqlite(pool))
            }
            "postgres" | "postgresql" => Ok(Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(connections_max)
                    .connect(url)
                    .await?,
            )),
            _ => Err(Error::Config(
                "database URL must start with sqlite: or postgres:".into(),
            )),
        }
    }

    /// Runs each statement (`CREATE TABLE IF NOT EXISTS …`) in order.
    pub async fn create_tables(&self, statements: &[&str]) -> Result<()> {
        for statement in statements {
            on_pool!(self, |p| sqlx::query(statement).execute(p).await.map(drop))?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(self, |p| p.close().await);
    }
}
