//! Fixtures for Meridian's black-box tests: a fresh database on either
//! backend, and the rule for outside servers.
//!
//! The rule: a test that needs an outside server (PostgreSQL) runs whenever
//! it is there and says loudly when it is not; with `MERIDIAN_REQUIRE_ALL=1`
//! (set by `.ci/run`) an absent server is a failure, so CI always runs
//! everything. Only tests depend on this crate.

#![forbid(unsafe_code)]
// A fixture that cannot be set up must stop the test on the spot.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod chaos_proxy;
pub mod guards;
pub mod https_receiver;
pub mod mail_servers;
pub mod proxy;
pub mod webhook;

use std::path::PathBuf;

use meridian_store::StoreConfig;
use sqlx::{AnyConnection, Connection, Executor};

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    Sqlite,
    Postgres,
}

impl Backing {
    /// SQLite always; PostgreSQL too when `DATABASE_URL` is set.
    pub fn available() -> Vec<Backing> {
        let mut all = vec![Backing::Sqlite];
        if postgres_url().is_some() {
            all.push(Backing::Postgres);
        }
        all
    }
}

/// Whether absent outside servers must fail tests instead of skipping them.
pub fn require_all() -> bool {
    std::env::var("MERIDIAN_REQUIRE_ALL").as_deref() == Ok("1")
}

/// The etcd binary (`MERIDIAN_ETCD_BIN`, `etcd` on `PATH`, or Debian's
/// `/usr/bin/etcd`), or `None` after a loud line saying `what` is skipped.
/// Panics under `MERIDIAN_REQUIRE_ALL=1`.
pub fn etcd_binary(what: &str) -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let found = std::env::var_os("MERIDIAN_ETCD_BIN")
        .map(PathBuf::from)
        .filter(|path| path.is_file())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("etcd"))
                    .find(|path| path.is_file())
            })
        })
        .or_else(|| Some(PathBuf::from("/usr/bin/etcd")).filter(|path| path.is_file()));
    if found.is_none() {
        assert!(
            !require_all(),
            "MERIDIAN_REQUIRE_ALL=1 but etcd is not installed: apt-get install etcd-server (binary /usr/bin/etcd), or set MERIDIAN_ETCD_BIN"
        );
        eprintln!(
            "{what} SKIPPED: no etcd binary on PATH (apt-get install etcd-server, or set MERIDIAN_ETCD_BIN)"
        );
    }
    found
}

/// `DATABASE_URL`, or `None` after saying loudly that PostgreSQL tests are
/// skipped. Panics under `MERIDIAN_REQUIRE_ALL=1`.
pub fn postgres_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                !require_all(),
                "MERIDIAN_REQUIRE_ALL=1 but DATABASE_URL is not set: PostgreSQL tests cannot run"
            );
            eprintln!("PostgreSQL tests SKIPPED: DATABASE_URL is not set");
            None
        }
    }
}

/// A database that exists for one test: a SQLite file in a temporary
/// directory, or a fresh PostgreSQL schema. Call [`TestDatabase::drop_now`]
/// at the end to remove a PostgreSQL schema; a leaked one is harmless.
pub struct TestDatabase {
    pub backing: Backing,
    config: StoreConfig,
    schema: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A new, empty database. `None` only for PostgreSQL without
    /// `DATABASE_URL` (see [`postgres_url`]).
    pub async fn new(backing: Backing) -> Option<TestDatabase> {
        sqlx::any::install_default_drivers();
        match backing {
            Backing::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let config = StoreConfig::sqlite_file(&dir.path().join("region.db"));
                Some(TestDatabase {
                    backing,
                    config,
                    schema: None,
                    _dir: Some(dir),
                })
            }
            Backing::Postgres => {
                let url = postgres_url()?;
                let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
                let mut admin = AnyConnection::connect(&url)
                    .await
                    .expect("connect to DATABASE_URL");
                admin
                    .execute(format!("CREATE SCHEMA {schema}").as_str())
                    .await
                    .expect("create schema");
                admin.close().await.expect("close admin connection");
                let separator = if url.contains('?') { '&' } else { '?' };
                let config = StoreConfig::new(format!(
                    "{url}{separator}options=-c%20search_path%3D{schema}"
                ));
                Some(TestDatabase {
                    backing,
                    config,
                    schema: Some((url, schema)),
                    _dir: None,
                })
            }
        }
    }

    /// How to open a store on this database.
    pub fn config(&self) -> StoreConfig {
        self.config.clone()
    }

    /// The SQLite file, for tests that look at it directly.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self._dir.as_ref().map(|d| d.path().join("region.db"))
    }

    /// Drops the PostgreSQL schema (SQLite's directory goes with `self`).
    pub async fn drop_now(self) {
        if let Some((url, schema)) = &self.schema {
            let mut admin = AnyConnection::connect(url)
                .await
                .expect("connect to DATABASE_URL");
            admin
                .execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
                .await
                .expect("drop schema");
            let _ = admin.close().await;
        }
    }
}
