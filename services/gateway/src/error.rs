//! The gateway's error type, and the one place errors become gRPC statuses.

use meridian_core as core;
use meridian_proto::ConvertError;
use tonic::{Code, Status, metadata::MetadataValue};

/// Why the gateway could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration was refused; the message names file, line and key.
    #[error("config: {0}")]
    Config(String),
    #[error("tls: {0}")]
    Tls(String),
    #[error(transparent)]
    Store(#[from] meridian_store::Error),
    #[error("serve: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// This replica stopped being the region's active replica.
    #[error("replica: {0}")]
    Replica(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Metadata keys that carry the current owner on `FAILED_PRECONDITION`, so
/// a client can redirect without parsing the message.
pub const OWNER_REGION_KEY: &str = "meridian-owner-region";
pub const OWNER_EPOCH_KEY: &str = "meridian-owner-epoch";

/// A gRPC code's canonical name, for messages.
pub fn code_name(code: Code) -> &'static str {
    use Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A request field that failed validation: `INVALID_ARGUMENT` naming it.
pub(crate) fn invalid(error: ConvertError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// The caller is not the owner: `FAILED_PRECONDITION`, naming the owner in
/// the message and in metadata.
fn not_owner(owner: &core::RegionId, epoch: core::Epoch) -> Status {
    let mut status =
        Status::failed_precondition(format!("ticket is owned by {owner} at epoch {epoch}"));
    if let Ok(value) = MetadataValue::try_from(owner.as_str()) {
        status.metadata_mut().insert(OWNER_REGION_KEY, value);
    }
    status
        .metadata_mut()
        .insert(OWNER_EPOCH_KEY, MetadataValue::from(epoch.raw()));
    status
}

pub(crate) fn from_core(error: core::Error) -> Status {
    match error {
        core::Error::InvalidField { .. } => Status::invalid_argument(error.to_string()),
        core::Error::IllegalTransition { .. }
        | core::Error::HandoffPending { .. }
        | core::Error::NoSuchOffer { .. } => Status::failed_precondition(error.to_string()),
        core::Error::NotOwner { owner, epoch } => not_owner(&owner, epoch),
        core::Error::EpochOwnerMismatch { .. } => Status::internal(error.to_string()),
    }
}

/// Storage errors never reach the client as SQL: refusals keep their
/// message (it names the record), everything else is logged here and
/// answered with a generic message.
pub(crate) fn from_store(error: meridian_store::Error) -> Status {
    use meridian_store::Error as E;
    match error {
        E::Fenced { owner, epoch } => not_owner(&owner, epoch),
        E::TicketNotFound(_) => Status::not_found(error.to_string()),
        E::Duplicate(_) => Status::already_exists(error.to_string()),
        E::Invalid(inner) => from_core(inner),
        E::Closed => Status::unavailable("gateway is shutting down"),
        E::Superseded { .. } => Status::unavailable(error.to_string()),
        ref e if e.is_retryable() => {
            tracing::warn!(error = %e, "storage busy");
            Status::unavailable("storage is busy; retry")
        }
        e => {
            tracing::error!(error = %e, "storage failure");
            Status::new(Code::Internal, "storage failure; see the gateway's log")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_names_the_owner_in_message_and_metadata() {
        let owner = core::RegionId::new("eu-west").unwrap();
        let status = from_store(meridian_store::Error::Fenced {
            owner,
            epoch: core::Epoch::from_raw(1025),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "ticket is owned by eu-west at epoch 1025");
        assert_eq!(status.metadata().get(OWNER_REGION_KEY).unwrap(), "eu-west");
        assert_eq!(status.metadata().get(OWNER_EPOCH_KEY).unwrap(), "1025");
    }

    #[test]
    fn database_errors_do_not_leak() {
        let raw = sqlx::Error::Protocol("SELECT secret FROM tickets".into());
        let status = from_store(meridian_store::Error::Database(raw));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"), "{}", status.message());
        let busy = from_store(meridian_store::Error::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(busy.code(), Code::Unavailable);
    }
}
