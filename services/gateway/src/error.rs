//! The gateway's error types, and the one place errors become gRPC statuses.

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

/// Why a request failed: what every handler, the mesh service and the
/// takeover return. `From<ApiError> for Status` below is the one place the
/// gateway builds a gRPC status (`tests/status_in_one_place.rs` keeps it so);
/// code that must know what happened matches a variant, never a message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is malformed; the error names it.
    #[error(transparent)]
    Invalid(#[from] ConvertError),
    /// The core refused the change (not the owner, illegal move, …).
    #[error(transparent)]
    Core(#[from] core::Error),
    /// The store refused or failed; a client never sees SQL.
    #[error(transparent)]
    Store(#[from] meridian_store::Error),
    #[error("ticket {0} not found")]
    TicketNotFound(core::TicketId),
    /// A create's idempotency key already created another ticket from a
    /// different request.
    #[error(
        "idempotency_key {key:?} already created ticket {ticket_id} from a different request; \
         a new ticket needs a new key"
    )]
    IdempotencyConflict {
        key: String,
        ticket_id: core::TicketId,
    },
    /// The region's lease may lapse: no owner-scoped write now.
    #[error("owner-scoped writes are fenced: {0}")]
    Fenced(String),
    /// A pinned ticket's text may not be written in this region.
    #[error("residency: {reason}; {hint}")]
    Residency { reason: String, hint: &'static str },
    #[error("tier {tier}: SLA deadline cannot be computed: {detail}")]
    Sla { tier: String, detail: String },
    #[error("this gateway has no mesh configured; it cannot hand off")]
    NoMesh,
    /// The target answered the offer with a refusal (recorded here).
    #[error("{to} refused the handoff: {reason}")]
    HandoffRefused { to: core::RegionId, reason: String },
    /// The target did not answer; the offer stays pending.
    #[error(
        "handoff to {to} is pending: {to} did not answer ({code}: {message}); call again to resend the offer"
    )]
    HandoffUnanswered {
        to: core::RegionId,
        code: &'static str,
        message: String,
    },
    #[error("cannot reach {region}: {detail}")]
    PeerUnreachable {
        region: core::RegionId,
        detail: String,
    },
    /// A handoff target that has not yet applied the owner's log.
    #[error("{me} has not yet applied {from}'s log up to the offer (seq {seq}); retry")]
    OfferNotApplied {
        me: core::RegionId,
        from: core::RegionId,
        seq: u64,
    },
    #[error("ticket {ticket} is already owned by {owner} at epoch {epoch}")]
    AlreadyOwned {
        ticket: core::TicketId,
        owner: core::RegionId,
        epoch: core::Epoch,
    },
    /// A takeover this region is not part of, or not the pending one.
    #[error("{0}")]
    TakeoverMismatch(String),
    #[error("no takeover of {0} is pending")]
    NoTakeover(core::RegionId),
    #[error("the coordinator cannot be reached: {0}")]
    CoordinatorUnreachable(String),
    /// Unimplemented rather than a precondition: the router takes a failed
    /// precondition as "nothing left to do", and a gateway without a
    /// coordinator must be fixed, not skipped.
    #[error("{0} has no [coordinator] configured; it cannot take regions over")]
    NoCoordinator(core::RegionId),
    /// Committed here, but the tier's `peer` durability was not reached.
    #[error(
        "committed in {region} as event {seq}, but no other region has applied it yet ({detail}); \
         it will replicate when a peer is reachable"
    )]
    NotPeerDurable {
        region: core::RegionId,
        seq: u64,
        detail: String,
    },
    #[error("{0}")]
    PermissionDenied(String),
    /// An assignment or a presence the roster does not allow (no roster,
    /// an unfit agent, an agent off shift): the message says why.
    #[error("{0}")]
    Roster(String),
    /// A watch-stream cap, or a reader cut off for not reading.
    #[error("{0}")]
    Exhausted(String),
    #[error("gateway is shutting down")]
    ShuttingDown,
    #[error("cannot mint an id right now")]
    NoEntropy,
    /// This replica is a standby; the message says who is active.
    #[error("{0}")]
    Standby(String),
    /// A bug or an impossible state; the message is for the log as much as
    /// for the client.
    #[error("{0}")]
    Internal(String),
    /// A status another crate chose (meridian-auth's and meridian-tls's
    /// checks), passed through unchanged.
    #[error("{}", .0.message())]
    Passed(Status),
}

impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        ApiError::Passed(status)
    }
}

impl ApiError {
    /// The gRPC code this error is answered with.
    pub fn code(&self) -> Code {
        use ApiError as A;
        match self {
            A::Invalid(_) => Code::InvalidArgument,
            A::Core(error) => core_code(error),
            A::Store(error) => store_code(error),
            A::TicketNotFound(_) | A::NoTakeover(_) => Code::NotFound,
            A::IdempotencyConflict { .. } => Code::AlreadyExists,
            A::Residency { .. }
            | A::Sla { .. }
            | A::NoMesh
            | A::HandoffRefused { .. }
            | A::AlreadyOwned { .. }
            | A::TakeoverMismatch(_)
            | A::Roster(_) => Code::FailedPrecondition,
            A::Fenced(_)
            | A::HandoffUnanswered { .. }
            | A::PeerUnreachable { .. }
            | A::OfferNotApplied { .. }
            | A::CoordinatorUnreachable(_)
            | A::ShuttingDown
            | A::NoEntropy
            | A::Standby(_) => Code::Unavailable,
            A::NoCoordinator(_) => Code::Unimplemented,
            A::NotPeerDurable { .. } => Code::DeadlineExceeded,
            A::PermissionDenied(_) => Code::PermissionDenied,
            A::Exhausted(_) => Code::ResourceExhausted,
            A::Internal(_) => Code::Internal,
            A::Passed(status) => status.code(),
        }
    }

    /// The message a client (or a shift summary) sees: the error's text,
    /// except that storage failures are not spelled out.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Store(error) => store_message(error),
            ApiError::Core(error) => error.to_string(),
            other => other.to_string(),
        }
    }
}

/// A request field that failed validation: `INVALID_ARGUMENT` naming it.
pub(crate) fn invalid(error: ConvertError) -> ApiError {
    ApiError::Invalid(error)
}

pub(crate) fn from_core(error: core::Error) -> ApiError {
    ApiError::Core(error)
}

pub(crate) fn from_store(error: meridian_store::Error) -> ApiError {
    ApiError::Store(error)
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

fn core_code(error: &core::Error) -> Code {
    match error {
        core::Error::InvalidField { .. } => Code::InvalidArgument,
        core::Error::IllegalTransition { .. }
        | core::Error::HandoffPending { .. }
        | core::Error::NoSuchOffer { .. }
        | core::Error::NotOwner { .. } => Code::FailedPrecondition,
        core::Error::EpochOwnerMismatch { .. } => Code::Internal,
    }
}

fn store_code(error: &meridian_store::Error) -> Code {
    use meridian_store::Error as E;
    match error {
        E::Fenced { .. } => Code::FailedPrecondition,
        E::TicketNotFound(_) => Code::NotFound,
        E::Duplicate(_) | E::IdempotencyConflict { .. } => Code::AlreadyExists,
        E::Invalid(inner) => core_code(inner),
        E::Closed | E::Superseded { .. } => Code::Unavailable,
        e if e.is_retryable() => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// Storage errors never reach the client as SQL: refusals keep their
/// message (it names the record), everything else gets a generic one.
fn store_message(error: &meridian_store::Error) -> String {
    use meridian_store::Error as E;
    match error {
        E::Fenced { .. }
        | E::TicketNotFound(_)
        | E::Duplicate(_)
        | E::IdempotencyConflict { .. }
        | E::Invalid(_)
        | E::Superseded { .. } => error.to_string(),
        E::Closed => "gateway is shutting down".to_owned(),
        e if e.is_retryable() => "storage is busy; retry".to_owned(),
        _ => "storage failure; see the gateway's log".to_owned(),
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        use meridian_store::Error as E;
        match error {
            ApiError::Passed(status) => status,
            ApiError::Core(core::Error::NotOwner { owner, epoch })
            | ApiError::Store(E::Fenced { owner, epoch })
            | ApiError::Store(E::Invalid(core::Error::NotOwner { owner, epoch })) => {
                not_owner(&owner, epoch)
            }
            ApiError::Store(ref e) if store_code(e) == Code::Unavailable && e.is_retryable() => {
                tracing::warn!(error = %e, "storage busy");
                Status::new(Code::Unavailable, store_message(e))
            }
            ApiError::Store(ref e) if store_code(e) == Code::Internal => {
                tracing::error!(error = %e, "storage failure");
                Status::new(Code::Internal, store_message(e))
            }
            other => Status::new(other.code(), other.public_message()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_names_the_owner_in_message_and_metadata() {
        let owner = core::RegionId::new("eu-west").unwrap();
        let status = Status::from(from_store(meridian_store::Error::Fenced {
            owner,
            epoch: core::Epoch::from_raw(1025),
        }));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "ticket is owned by eu-west at epoch 1025");
        assert_eq!(status.metadata().get(OWNER_REGION_KEY).unwrap(), "eu-west");
        assert_eq!(status.metadata().get(OWNER_EPOCH_KEY).unwrap(), "1025");
    }

    #[test]
    fn database_errors_do_not_leak() {
        let raw = sqlx::Error::Protocol("SELECT secret FROM tickets".into());
        let status = Status::from(from_store(meridian_store::Error::Database(raw)));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("SELECT"), "{}", status.message());
        let busy = Status::from(from_store(meridian_store::Error::Database(
            sqlx::Error::PoolTimedOut,
        )));
        assert_eq!(busy.code(), Code::Unavailable);
    }

    #[test]
    fn handoff_outcomes_keep_their_wording_and_codes() {
        let to = core::RegionId::new("apac-south").unwrap();
        let refused = ApiError::HandoffRefused {
            to: to.clone(),
            reason: "apac-south is not on shift".into(),
        };
        assert_eq!(refused.code(), Code::FailedPrecondition);
        let status = Status::from(refused);
        assert_eq!(
            status.message(),
            "apac-south refused the handoff: apac-south is not on shift"
        );
        let unanswered = Status::from(ApiError::HandoffUnanswered {
            to,
            code: code_name(Code::DeadlineExceeded),
            message: "timeout".into(),
        });
        assert_eq!(unanswered.code(), Code::Unavailable);
        assert!(
            unanswered
                .message()
                .starts_with("handoff to apac-south is pending: apac-south did not answer (DEADLINE_EXCEEDED: timeout)"),
            "{}",
            unanswered.message()
        );
    }

    #[test]
    fn a_status_from_another_crate_passes_unchanged() {
        let denied = Status::permission_denied("agent ana of us-east may not read it");
        let status = Status::from(ApiError::from(denied));
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(status.message(), "agent ana of us-east may not read it");
    }

    /// `Status::<constructor>(` anywhere in `src/` but `error.rs`: the
    /// guard that keeps statuses built in one place.
    #[test]
    fn statuses_are_built_only_in_error_rs() {
        let found = meridian_test_support::guards::statuses_built_outside_error_rs(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        );
        assert!(
            found.is_empty(),
            "build statuses in src/error.rs (add a variant):\n{}",
            found.join("\n")
        );
    }
}
