//! The crate's one error type.

use meridian_core::RegionId;

use crate::types::{LeaseId, Revision, Takeover};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The region already holds a live lease.
    #[error(
        "region {region} already holds live lease {lease_id}; wait for it to expire (or release it) before acquiring again"
    )]
    LeaseHeld { region: RegionId, lease_id: LeaseId },

    /// A takeover of the region awaits acknowledgement: the region must
    /// learn the epochs minted since and call `acknowledge_takeover` first.
    #[error(
        "region {} was taken over by {} at fencing token {}; the region must catch up and acknowledge that takeover first",
        .takeover.failed_region, .takeover.successor, .takeover.fencing_token
    )]
    TakenOver { takeover: Takeover },

    /// A takeover was asked for a region whose lease is still live.
    #[error("cannot take over region {region}: it still holds live lease {lease_id}")]
    RegionAlive { region: RegionId, lease_id: LeaseId },

    /// A takeover named a successor that holds no live lease.
    #[error("cannot hand region {failed_region} to {successor}: {successor} holds no live lease")]
    SuccessorNotLive {
        failed_region: RegionId,
        successor: RegionId,
    },

    /// The region acknowledged a takeover after the caller's observation.
    #[error(
        "cannot take over region {region}: it acknowledged a takeover at revision {acknowledged_at}, after the observed revision {expected_revision}; read its status again"
    )]
    StaleObservation {
        region: RegionId,
        expected_revision: Revision,
        acknowledged_at: Revision,
    },

    /// An acknowledgement named a fencing token that is not the pending one.
    #[error(
        "region {region} has no pending takeover with fencing token {fencing_token} (pending: {})",
        describe_pending(.pending)
    )]
    NoSuchTakeover {
        region: RegionId,
        fencing_token: Revision,
        pending: Option<Revision>,
    },

    /// Arguments or settings that cannot work together.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },

    /// An etcd endpoint that is not a usable URI.
    #[error("etcd endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },

    /// An etcd call that failed, after retries where retrying was safe.
    #[error("etcd {rpc} failed after {attempts} attempt(s): {status}")]
    Etcd {
        rpc: &'static str,
        attempts: u32,
        status: Box<tonic::Status>,
    },

    /// etcd answered something the v3 API does not allow.
    #[error("etcd {rpc}: unexpected answer: {reason}")]
    Protocol { rpc: &'static str, reason: String },

    /// A record under the coordinator's prefix that does not decode.
    #[error("record {key:?} is malformed: {reason}")]
    Corrupt { key: String, reason: String },

    /// The coordinator was dropped while the call was under way.
    #[error("the coordinator is shut down")]
    Closed,
}

fn describe_pending(pending: &Option<Revision>) -> String {
    match pending {
        Some(token) => format!("fencing token {token}"),
        None => "none".to_owned(),
    }
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
