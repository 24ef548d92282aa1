//! The core's one error type.

use crate::{Epoch, RegionId, Status};

/// Why a domain operation was refused. Each variant names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A field of a request or a record failed validation.
    #[error("{field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// A status change the state machine does not allow.
    #[error("status: cannot go from {from} to {to}")]
    IllegalTransition { from: Status, to: Status },
    /// An owner-scoped write from a region that does not own the ticket at
    /// the current epoch.
    #[error("ticket is owned by {owner} at epoch {epoch}")]
    NotOwner { owner: RegionId, epoch: Epoch },
    /// The owner offered the ticket to another region and awaits the
    /// answer: no owner-scoped change until then.
    #[error("ticket is being handed off to {to}; wait for its answer")]
    HandoffPending { to: RegionId },
    /// An acceptance that matches no pending offer.
    #[error("no handoff from {from} to {to} is pending")]
    NoSuchOffer { from: RegionId, to: RegionId },
    /// An epoch whose encoded owner is not the region that claims it.
    #[error("epoch {epoch} does not belong to region index {region_index}")]
    EpochOwnerMismatch { epoch: Epoch, region_index: u16 },
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
