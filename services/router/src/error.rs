//! The router's error type, and the one place errors become gRPC statuses.

use meridian_core::RegionId;
use meridian_proto::ConvertError;
use tonic::Status;

/// Why the router could not start, or could not answer a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration was refused; the message names file, line and key.
    #[error("config: {0}")]
    Config(String),
    /// The rules file could not be read, or was refused, at start (there
    /// are no old rules to keep); one `FILE:LINE:COL: message` a line.
    #[error("rules: {0}")]
    Rules(#[from] meridian_rules_source::Error),
    /// A request field is malformed; the error names it.
    #[error(transparent)]
    Invalid(#[from] ConvertError),
    /// No region may take the ticket. `retryable` when some region was
    /// excluded only for being down, so the same request may succeed later.
    #[error("no region can take the ticket: {detail}")]
    NoEligibleRegion { detail: String, retryable: bool },
    /// Every gateway tried failed (or the attempt budget ran out).
    #[error("no gateway took the ticket: {attempts}")]
    ForwardFailed { attempts: String },
    /// A gateway refused the ticket itself; another region would refuse it
    /// too, so no other was tried.
    #[error("gateway {region} refused the ticket: {message}")]
    GatewayRefused { region: RegionId, message: String },
    /// A gateway refused the ticket because its idempotency key already
    /// created another ticket there from a different request. Another
    /// region would not know the key and would create a duplicate, so no
    /// other was tried.
    #[error("gateway {region} refused the ticket: {message}")]
    IdempotencyConflict { region: RegionId, message: String },
    /// The chosen region has no gateway endpoint (the decision only picks
    /// regions with a health report; a guard).
    #[error("no gateway endpoint is configured for this region")]
    NoGatewayEndpoint,
    /// A gateway did not answer a forwarded ticket in time.
    #[error("no answer within {ms} ms")]
    GatewayTimeout { ms: u128 },
    /// A gateway refused a call the router made for its caller (finding a
    /// ticket's owner, delivering a customer message): passed on with the
    /// gateway's code, since it is the answer the caller would have had.
    #[error("gateway {region}: {}", .status.message())]
    GatewayStatus {
        region: RegionId,
        status: Box<Status>,
    },
    /// No gateway asked holds the ticket.
    #[error("no ticket {id}: not found at {asked}")]
    TicketNotFound { id: String, asked: String },
    /// The ticket was not found at the gateways that answered, and some
    /// that might hold it could not be asked.
    #[error(
        "ticket {id} not found at the gateways that answered ({asked}); could not ask {unreachable}"
    )]
    TicketUnreachable {
        id: String,
        asked: String,
        unreachable: String,
    },
    /// The caller's token names a region the mesh does not have.
    #[error("{0}")]
    UnknownTokenRegion(String),
    #[error("serve: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid(_) | Error::GatewayRefused { .. } => {
                Status::invalid_argument(error.to_string())
            }
            Error::NoEligibleRegion {
                retryable: true, ..
            }
            | Error::ForwardFailed { .. }
            | Error::NoGatewayEndpoint => Status::unavailable(error.to_string()),
            Error::GatewayTimeout { .. } => Status::deadline_exceeded(error.to_string()),
            Error::IdempotencyConflict { .. } => Status::already_exists(error.to_string()),
            Error::UnknownTokenRegion(_) => Status::permission_denied(error.to_string()),
            Error::GatewayStatus { ref status, .. } => {
                Status::new(status.code(), error.to_string())
            }
            Error::TicketNotFound { .. } => Status::not_found(error.to_string()),
            Error::TicketUnreachable { .. } => Status::unavailable(error.to_string()),
            Error::NoEligibleRegion {
                retryable: false, ..
            } => Status::failed_precondition(error.to_string()),
            // Start-up errors never reach a request; if one did, it is the
            // router's fault, and the details belong in its log.
            Error::Config(_) | Error::Rules(_) | Error::Serve(_) | Error::Io(_) => {
                tracing::error!(error = %error, "internal error while serving a request");
                Status::internal("router failure; see the router's log")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn request_errors_map_to_codes_that_say_whether_to_retry() {
        let invalid = Status::from(Error::Invalid(ConvertError::new(
            "ticket.tier",
            "must not be empty",
        )));
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert_eq!(invalid.message(), "ticket.tier: must not be empty");
        let down = Error::NoEligibleRegion {
            detail: "us-east: down".into(),
            retryable: true,
        };
        assert_eq!(Status::from(down).code(), Code::Unavailable);
        let never = Error::NoEligibleRegion {
            detail: "us-east: residency".into(),
            retryable: false,
        };
        assert_eq!(Status::from(never).code(), Code::FailedPrecondition);
        assert_eq!(
            Status::from(Error::ForwardFailed {
                attempts: String::new()
            })
            .code(),
            Code::Unavailable
        );
        let internal = Status::from(Error::Config("secret path".into()));
        assert_eq!(internal.code(), Code::Internal);
        assert!(!internal.message().contains("secret"));
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
