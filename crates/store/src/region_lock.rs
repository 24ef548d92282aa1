//! Which of several gateway replicas on one database is the region's active
//! writer: the one holding the region lock.
//!
//! On PostgreSQL the lock is a session-level advisory lock on a connection of
//! its own, held for as long as the process is active. It is released by the
//! server when that session ends: at once when the process dies (the kernel
//! closes the socket), after the TCP keepalive probes when the host vanishes.
//! On SQLite it is an exclusive `flock` on a file beside the database, which
//! the kernel releases when the process dies. An in-memory SQLite database
//! belongs to one process, so its lock is always free.
//!
//! The lock only elects; [`crate::Store::open_fenced`] fences. A former
//! active that lost its lock without noticing cannot commit beside the new
//! one, because the new one claims a newer writer generation.

use std::{path::PathBuf, time::Duration};

use meridian_core::RegionId;
use sqlx::{AnyConnection, Connection, Executor, Row};
use tokio::{sync::watch, task::JoinHandle};

use crate::{Backend, Error, Result, StoreConfig};

/// How often the holder checks that its lock session is still alive.
pub const REGION_LOCK_HEARTBEAT_MS: u64 = 1_000;
/// How long one liveness check of the lock session may take before the lock
/// counts as lost.
pub const REGION_LOCK_CHECK_TIMEOUT_MS: u64 = 3_000;
/// How long the lock session may go silent before the server drops it (and
/// with it the lock): idle seconds before the first keepalive probe, seconds
/// between probes, probes. Keep in step with [`KEEPALIVE_SETTINGS`].
pub const REGION_LOCK_KEEPALIVE_S: (u32, u32, u32) = (5, 2, 3);

/// Per-session server settings of the lock connection, so a vanished client
/// host releases the lock within about 11 s instead of the kernel default of
/// hours. `tcp_user_timeout` bounds unacknowledged sends the same way.
const KEEPALIVE_SETTINGS: &str = "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
     SET tcp_keepalives_count = 3; SET tcp_user_timeout = 11000";

/// The advisory lock key: the region within the database and schema, so
/// test schemas (and several regions sharing a server) never collide.
const ADVISORY_KEY_SQL: &str = "hashtextextended('meridian.region-writer/' || current_database() || '/' || current_schema() || '/' || $1, 0)";

/// The region lock, held until dropped (or [`RegionLock::release`]d).
pub struct RegionLock {
    region: RegionId,
    held: Held,
}

enum Held {
    /// The heartbeat task owns the lock session; aborting it drops the
    /// connection, which releases the lock.
    Postgres {
        heartbeat: JoinHandle<()>,
        lost: watch::Receiver<Option<String>>,
    },
    /// The open file carries the `flock`; closing it releases the lock.
    SqliteFile {
        _file: std::fs::File,
        path: PathBuf,
    },
    Memory,
}

impl std::fmt::Debug for RegionLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.held {
            Held::Postgres { .. } => "postgres advisory lock".to_owned(),
            Held::SqliteFile { path, .. } => format!("lock file {}", path.display()),
            Held::Memory => "in-memory database".to_owned(),
        };
        f.debug_struct("RegionLock")
            .field("region", &self.region)
            .field("held", &kind)
            .finish()
    }
}

impl RegionLock {
    /// Takes the region lock if no one holds it: `None` when another
    /// process does (this one is then a standby and may try again).
    pub async fn try_acquire(
        config: &StoreConfig,
        region: &RegionId,
    ) -> Result<Option<RegionLock>> {
        let backend = config.validate()?;
        sqlx::any::install_default_drivers();
        let held = match backend {
            Backend::Postgres => try_postgres(config, region).await?,
            Backend::Sqlite if config.is_sqlite_memory() => Some(Held::Memory),
            Backend::Sqlite => try_sqlite_file(&sqlite_lock_path(&config.url)?)?,
        };
        Ok(held.map(|held| RegionLock {
            region: region.clone(),
            held,
        }))
    }

    pub fn region(&self) -> &RegionId {
        &self.region
    }

    /// Resolves when the lock is no longer certainly held: the lock session
    /// failed a liveness check or broke. Never resolves for a file lock,
    /// which lasts as long as the process.
    pub async fn lost(&mut self) -> Error {
        match &mut self.held {
            Held::Postgres { lost, .. } => {
                let reason = lost
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|reason| reason.clone());
                Error::Config(format!(
                    "lost the writer lock of region {}: {}",
                    self.region,
                    reason.unwrap_or_else(|| "its session ended".to_owned())
                ))
            }
            Held::SqliteFile { .. } | Held::Memory => std::future::pending().await,
        }
    }

    /// Gives the lock up now.
    pub fn release(self) {
        drop(self);
    }
}

impl Drop for RegionLock {
    fn drop(&mut self) {
        if let Held::Postgres { heartbeat, .. } = &self.held {
            heartbeat.abort();
        }
    }
}

async fn try_postgres(config: &StoreConfig, region: &RegionId) -> Result<Option<Held>> {
    let mut conn = AnyConnection::connect(&config.url).await?;
    conn.execute(KEEPALIVE_SETTINGS).await?;
    let taken: bool = sqlx::query(&format!(
        "SELECT pg_try_advisory_lock({ADVISORY_KEY_SQL}) AS taken"
    ))
    .bind(region.as_str())
    .fetch_one(&mut conn)
    .await?
    .try_get("taken")?;
    if !taken {
        if let Err(error) = conn.close().await {
            tracing::debug!(error = %error, "closing the unused lock session failed");
        }
        return Ok(None);
    }
    let (report, lost) = watch::channel(None);
    let heartbeat = tokio::spawn(heartbeat(conn, region.clone(), report));
    Ok(Some(Held::Postgres { heartbeat, lost }))
}

/// Checks the lock session every [`REGION_LOCK_HEARTBEAT_MS`]; reports the
/// first failure and ends, which drops the session.
async fn heartbeat(
    mut conn: AnyConnection,
    region: RegionId,
    report: watch::Sender<Option<String>>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(REGION_LOCK_HEARTBEAT_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let check = tokio::time::timeout(
            Duration::from_millis(REGION_LOCK_CHECK_TIMEOUT_MS),
            conn.execute("SELECT 1"),
        )
        .await;
        let failure = match check {
            Ok(Ok(_)) => continue,
            Ok(Err(error)) => format!("the lock session failed: {error}"),
            Err(_) => {
                format!("the lock session did not answer within {REGION_LOCK_CHECK_TIMEOUT_MS} ms")
            }
        };
        tracing::error!(region = %region, reason = %failure, "region writer lock lost");
        report.send_replace(Some(failure));
        return;
    }
}

/// The file whose `flock` is the lock: the database's path plus `.writer-lock`.
fn sqlite_lock_path(url: &str) -> Result<PathBuf> {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() {
        return Err(Error::Config(format!(
            "database URL {url:?} names no SQLite file"
        )));
    }
    let mut decoded = Vec::with_capacity(path.len());
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    let mut path = String::from_utf8_lossy(&decoded).into_owned();
    path.push_str(".writer-lock");
    Ok(PathBuf::from(path))
}

fn try_sqlite_file(path: &std::path::Path) -> Result<Option<Held>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| {
            Error::Config(format!(
                "cannot open the region lock file {}: {e}",
                path.display()
            ))
        })?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(Held::SqliteFile {
            _file: file,
            path: path.to_owned(),
        })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(Error::Config(format!(
            "cannot lock the region lock file {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_file_sits_beside_the_database() {
        let config = StoreConfig::sqlite_file(std::path::Path::new("/tmp/a b/r?.db"));
        assert_eq!(
            sqlite_lock_path(&config.url).unwrap(),
            PathBuf::from("/tmp/a b/r?.db.writer-lock")
        );
        assert_eq!(
            sqlite_lock_path("sqlite:///var/x.db").unwrap(),
            PathBuf::from("/var/x.db.writer-lock")
        );
        assert!(sqlite_lock_path("sqlite:?mode=rwc").is_err());
    }

    #[tokio::test]
    async fn a_second_holder_of_one_sqlite_file_waits() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::sqlite_file(&dir.path().join("r.db"));
        let region = RegionId::new("us-east").unwrap();
        let first = RegionLock::try_acquire(&config, &region)
            .await
            .unwrap()
            .expect("free lock");
        // flock conflicts between open files even within one process.
        assert!(
            RegionLock::try_acquire(&config, &region)
                .await
                .unwrap()
                .is_none()
        );
        first.release();
        assert!(
            RegionLock::try_acquire(&config, &region)
                .await
                .unwrap()
                .is_some()
        );
        let memory = StoreConfig::new("sqlite::memory:");
        assert!(
            RegionLock::try_acquire(&memory, &region)
                .await
                .unwrap()
                .is_some()
        );
    }
}
