/// What notifying can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A target or setting is wrong; the message names it.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Outbox(#[from] meridian_outbox::Error),
    #[error("notification body: {0}")]
    Encode(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
