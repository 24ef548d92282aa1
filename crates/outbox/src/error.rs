/// What the outbox can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database URL or a setting is wrong; the message names it.
    #[error("outbox: {0}")]
    Config(String),
    #[error("outbox database: {0}")]
    Database(#[from] sqlx::Error),
    /// A row holds a value this version cannot read (a newer version wrote it).
    #[error("outbox: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
