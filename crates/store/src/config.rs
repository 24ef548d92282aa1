//! How a store is opened: the database URL and the limits of its writer.

use std::{fmt, path::Path};

use crate::{Error, Result};

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a URL names, by its scheme.
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url
            .split_once(':')
            .map(|(scheme, _)| scheme)
            .unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(Error::Config(format!(
                "database URL must start with sqlite: or postgres:, not {:?}",
                redact_url(url).split(':').next().unwrap_or_default()
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SQLite's `synchronous` setting: how hard a commit pushes to disk. Only
/// `Full` and `Extra` make an acknowledged commit survive power loss in WAL
/// mode; `Normal` survives a crash of the process but may lose the last
/// commits on power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    Normal,
    #[default]
    Full,
    Extra,
}

impl Synchronous {
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }
}

/// How to open a [`Store`](crate::Store).
#[derive(Clone)]
pub struct StoreConfig {
    /// `sqlite:PATH?mode=rwc` or `postgres://user@host:port/db`.
    pub url: String,
    /// SQLite only; PostgreSQL's durability is the server's configuration.
    pub sqlite_synchronous: Synchronous,
    /// Connections in the pool: one at a time is used by the writer, the rest
    /// serve reads.
    pub max_connections: u32,
    /// The most queued writes committed together in one transaction.
    pub batch_max: usize,
    /// Writes that may wait for the writer before callers are held back.
    pub queue_capacity: usize,
}

pub const MAX_CONNECTIONS_DEFAULT: u32 = 8;
pub const BATCH_MAX_DEFAULT: usize = 256;
pub const QUEUE_CAPACITY_DEFAULT: usize = 1024;

impl StoreConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            sqlite_synchronous: Synchronous::default(),
            max_connections: MAX_CONNECTIONS_DEFAULT,
            batch_max: BATCH_MAX_DEFAULT,
            queue_capacity: QUEUE_CAPACITY_DEFAULT,
        }
    }

    /// A SQLite database in `path`, created if missing.
    pub fn sqlite_file(path: &Path) -> Self {
        Self::new(format!("sqlite:{}?mode=rwc", encode_path(path)))
    }

    pub(crate) fn validate(&self) -> Result<Backend> {
        let backend = Backend::from_url(&self.url)?;
        if self.max_connections == 0 {
            return Err(Error::Config("max_connections must be at least 1".into()));
        }
        if self.batch_max == 0 {
            return Err(Error::Config("batch_max must be at least 1".into()));
        }
        if self.queue_capacity == 0 {
            return Err(Error::Config("queue_capacity must be at least 1".into()));
        }
        Ok(backend)
    }

    /// An in-memory SQLite database lives as long as one of its connections,
    /// so the pool must keep one open for the life of the store.
    pub(crate) fn is_sqlite_memory(&self) -> bool {
        self.url.contains(":memory:") || self.url.contains("mode=memory")
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redact_url(&self.url))
            .field("sqlite_synchronous", &self.sqlite_synchronous)
            .field("max_connections", &self.max_connections)
            .field("batch_max", &self.batch_max)
            .field("queue_capacity", &self.queue_capacity)
            .finish()
    }
}

/// The URL with any password replaced, for logs and `Debug`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Percent-encodes the bytes of a path that would end or confuse the URL
/// (sqlx decodes them again before opening the file).
fn encode_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' | '?' | '#' | ' ' | '"' | '<' | '>' | '`' | '{' | '}' => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_from_url() {
        assert_eq!(
            Backend::from_url("sqlite:/tmp/x.db?mode=rwc").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(
            Backend::from_url("postgres://postgres@127.0.0.1/test").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            Backend::from_url("postgresql://h/db").unwrap(),
            Backend::Postgres
        );
        let err = Backend::from_url("mysql://root:hunter2@h/db")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("must start with sqlite: or postgres:"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn debug_hides_the_password() {
        let config =
            StoreConfig::new("postgres://meridian:s3cret@db:5432/meridian?sslmode=require");
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://meridian:***@db:5432/meridian?sslmode=require"),
            "{shown}"
        );
        assert_eq!(
            redact_url("postgres://postgres@h/test"),
            "postgres://postgres@h/test"
        );
    }

    #[test]
    fn sqlite_file_encodes_awkward_paths() {
        let config = StoreConfig::sqlite_file(Path::new("/tmp/a b/c?d#e%.db"));
        assert_eq!(config.url, "sqlite:/tmp/a%20b/c%3Fd%23e%25.db?mode=rwc");
        assert_eq!(config.sqlite_synchronous, Synchronous::Full);
    }
}
