//! Schema migrations: one embedded set per backend, applied in order, in one
//! transaction, and recorded in `schema_migrations`. A runner of our own
//! rather than sqlx's `migrate!`, which would cost the sqlx-macros build.

use sqlx::{Any, AnyPool, Executor, Row, Transaction};

use crate::{Backend, Error, Result};

/// One schema step. Steps written in the SQL both backends speak (adding a
/// TEXT or BIGINT column, an index) are one file ([`Migration::portable`]);
/// the rest have a file per backend.
struct Migration {
    version: i64,
    sqlite: &'static str,
    postgres: &'static str,
}

impl Migration {
    const fn portable(version: i64, sql: &'static str) -> Self {
        Self {
            version,
            sqlite: sql,
            postgres: sql,
        }
    }

    fn sql(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Sqlite => self.sqlite,
            Backend::Postgres => self.postgres,
        }
    }
}

/// Every step, in order. Add a portable step as
/// `Migration::portable(N, include_str!("../migrations/NNNN_what.sql"))`.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: include_str!("../migrations/sqlite/0001_init.sql"),
        postgres: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration::portable(2, include_str!("../migrations/0002_writer_generation.sql")),
    Migration::portable(3, include_str!("../migrations/0003_note_visibility.sql")),
    Migration::portable(4, include_str!("../migrations/0004_idempotency_keys.sql")),
    Migration::portable(5, include_str!("../migrations/0005_people.sql")),
    Migration {
        version: 6,
        sqlite: include_str!("../migrations/sqlite/0006_ticket_search.sql"),
        postgres: include_str!("../migrations/postgres/0006_ticket_search.sql"),
    },
];

/// The newest schema version this build knows.
pub fn schema_version(_backend: Backend) -> i64 {
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Opens a write transaction. On SQLite it takes the write lock at `BEGIN`
/// (`IMMEDIATE`): a deferred transaction that reads first and writes later
/// can fail with `SQLITE_BUSY` when another connection wrote in between,
/// without the busy timeout ever being consulted.
pub(crate) async fn begin_write(
    pool: &AnyPool,
    backend: Backend,
) -> Result<Transaction<'static, Any>, sqlx::Error> {
    match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => pool.begin().await,
    }
}

/// Brings the schema up to date. Safe to run from several processes at once:
/// PostgreSQL serializes them on a table lock, SQLite on its write lock.
pub(crate) async fn migrate(pool: &AnyPool, backend: Backend, now_ms: i64) -> Result<()> {
    // Statements without parameters go through `Executor::execute` on a
    // `&str`, not `sqlx::raw_sql`: raw_sql's future cannot be proven `Send`
    // inside a caller's `tokio::spawn` (an HRTB limitation of rustc).
    pool.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        .await?;

    let mut tx = begin_write(pool, backend).await?;
    if backend == Backend::Postgres {
        (&mut *tx)
            .execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
            .await?;
    }
    let applied = sqlx::query("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.try_get::<i64, _>("version"))
        .collect::<Result<Vec<i64>, sqlx::Error>>()?;

    let known = schema_version(backend);
    if let Some(&newest) = applied.iter().max()
        && newest > known
    {
        return Err(Error::Migration {
            version: newest,
            reason: format!(
                "the database is at schema version {newest}, newer than this build knows ({known}); \
                 run a newer meridian"
            ),
        });
    }

    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        let failed = |e: sqlx::Error| Error::Migration {
            version: migration.version,
            reason: e.to_string(),
        };
        (&mut *tx)
            .execute(migration.sql(backend))
            .await
            .map_err(failed)?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(migration.version)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        tracing::info!(backend = %backend, version = migration.version, "schema migrated");
    }
    tx.commit().await?;
    Ok(())
}
