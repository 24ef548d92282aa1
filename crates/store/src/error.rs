//! The store's one error type.

use meridian_core::{Epoch, RegionId, TicketId};

/// Why a store operation failed. The refusals (`Fenced`, `TicketNotFound`,
/// `Duplicate`, `Invalid`, `Gap`,
/// `IdempotencyConflict`) guarantee that nothing was written; their
/// messages name the thing that was wrong and never carry SQL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An owner-scoped write at an epoch that is not the ticket's current one,
    /// or from a region that does not own the ticket. Names the current owner.
    #[error("ticket is owned by {owner} at epoch {epoch}")]
    Fenced { owner: RegionId, epoch: Epoch },
    #[error("ticket {0} not found")]
    TicketNotFound(TicketId),
    /// A record with this id already exists; the message names the record,
    /// such as `note 0190…`.
    #[error("{0} already exists")]
    Duplicate(String),
    /// A domain rule refused the write: an illegal status transition, a
    /// change that names no field, a value that does not fit its column.
    #[error(transparent)]
    Invalid(#[from] meridian_core::Error),
    /// Replicated events that do not continue the origin's log where this
    /// store's cursor stands. The sender must resend from `expected`.
    #[error("replication gap from {origin}: expected origin_seq {expected}, got {got}")]
    Gap {
        origin: RegionId,
        expected: u64,
        got: u64,
    },
    /// Another replica of the region became its active writer (claimed a
    /// newer writer generation) after this store opened: this store writes
    /// nothing any more. The process should stop serving writes.
    #[error(
        "another replica became the active writer of region {region} (writer generation {current}; this process \
         holds {held}): this process no longer writes"
    )]
    Superseded {
        region: RegionId,
        held: u64,
        current: u64,
    },
    /// A creation's idempotency key is already bound to another request: the
    /// same caller and key, a different validated request. Names the ticket
    /// the key created; nothing was written.
    #[error("the idempotency key already created ticket {ticket_id} from a different request")]
    IdempotencyConflict { ticket_id: TicketId },
    /// The store was closed (or its writer task is gone).
    #[error("store is closed")]
    Closed,
    /// A stored value that does not decode; the message names table and column.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration {version} failed: {reason}")]
    Migration { version: i64, reason: String },
    #[error("store configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the same call may succeed if tried again later: the database
    /// was busy, a lock wait or serialization check failed, a connection was
    /// lost or the pool had no free connection in time. Refusals are never
    /// retryable: trying again gives the same answer.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Database(e) => sqlx_is_retryable(e),
            _ => false,
        }
    }

    pub(crate) fn corrupt(table: &str, column: &str, why: impl std::fmt::Display) -> Self {
        Error::Corrupt(format!("{table}.{column}: {why}"))
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid(meridian_core::Error::InvalidField {
            field,
            reason: reason.into(),
        })
    }
}

fn sqlx_is_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else { return false };
            // SQLite reports extended result codes; the primary code is the
            // low byte. 5 is SQLITE_BUSY, 6 is SQLITE_LOCKED.
            if let Ok(sqlite_code) = code.parse::<i64>() {
                return matches!(sqlite_code & 0xff, 5 | 6);
            }
            // PostgreSQL SQLSTATEs: serialization failure, deadlock, lock not
            // available, server shutting down, too many connections, and the
            // whole connection-exception class.
            matches!(
                &*code,
                "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03" | "53300"
            ) || code.starts_with("08")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retryable() {
        assert!(Error::Database(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(Error::Database(sqlx::Error::Io(std::io::Error::other("reset"))).is_retryable());
        assert!(!Error::Database(sqlx::Error::RowNotFound).is_retryable());
        assert!(!Error::Closed.is_retryable());
        let owner = RegionId::new("eu-west").unwrap();
        let fenced = Error::Fenced {
            owner,
            epoch: Epoch::from_raw(1),
        };
        assert!(!fenced.is_retryable());
        assert_eq!(fenced.to_string(), "ticket is owned by eu-west at epoch 1");
    }
}
