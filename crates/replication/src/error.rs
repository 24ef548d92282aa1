//! The crate's one error type, and its mapping to gRPC status codes.

use meridian_core::RegionId;

/// Why a replication call or stream failed. Messages name the peer and
/// what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("replication config: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] meridian_store::Error),
    /// `region` is not a peer in this mesh's region list.
    #[error("{0} is not a peer region of this mesh")]
    UnknownPeer(RegionId),
    /// A mesh of one region: no write can become peer-durable.
    #[error("this region has no peers, so no write can be peer-durable")]
    NoPeers,
    /// No peer acknowledged `seq` of this region's log in time.
    #[error("no peer applied origin_seq {seq} within {timeout_ms} ms (peers' acks: {acked})")]
    NotPeerDurable {
        seq: u64,
        timeout_ms: u128,
        acked: String,
    },
    /// This region had not applied `peer`'s log up to `seq` in time.
    #[error("{peer}'s log is not applied here up to {seq} within {timeout_ms} ms")]
    NotApplied {
        peer: RegionId,
        seq: u64,
        timeout_ms: u128,
    },
    /// Dialling a peer failed before its stream opened.
    #[error("connect to {peer} at {addr}: {reason}")]
    Connect {
        peer: RegionId,
        addr: String,
        reason: String,
    },
    /// The peer answered the stream with an error status.
    #[error("{peer} ended the stream: {code:?}: {message}")]
    Remote {
        peer: RegionId,
        code: tonic::Code,
        message: String,
    },
    /// The peer sent a frame this side cannot accept.
    #[error("{peer} broke the replication protocol: {reason}")]
    Protocol { peer: RegionId, reason: String },
    /// Nothing arrived from the peer for too long.
    #[error("{peer} sent nothing for {silent_ms} ms")]
    PeerSilent { peer: RegionId, silent_ms: u128 },
    /// The stream closed (the peer hung up, or its connection dropped).
    #[error("stream with {peer} closed")]
    Closed { peer: RegionId },
    /// The store refused a batch from `peer` for a reason other than a gap:
    /// replication of that origin stops here rather than skip the event.
    #[error("applying {peer}'s events: {source}")]
    Apply {
        peer: RegionId,
        source: meridian_store::Error,
    },
    /// A newer stream with the same peer took over.
    #[error("stream with {peer} replaced by a newer one")]
    Replaced { peer: RegionId },
    #[error("replication is shutting down")]
    Shutdown,
    /// This store's log of `origin` is not dense up to its head: an event
    /// below the cursor is missing. Anti-entropy cannot digest it.
    #[error(
        "this store's log of {origin} has a hole after origin_seq {after_seq}, though it holds up to {max_seq}"
    )]
    LogHole {
        origin: RegionId,
        after_seq: u64,
        max_seq: u64,
    },
    /// A peer answered an anti-entropy call with an error status.
    #[error("{peer} answered {call} with {code:?}: {message}")]
    Call {
        peer: RegionId,
        call: &'static str,
        code: tonic::Code,
        message: String,
    },
    /// A peer did not answer an anti-entropy call in time.
    #[error("{peer} did not answer {call} within {timeout_ms} ms")]
    CallTimeout {
        peer: RegionId,
        call: &'static str,
        timeout_ms: u128,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The status a stream's server side ends with when it fails with this
    /// error.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Status;
        let message = self.to_string();
        match self {
            Error::Protocol { .. } => Status::invalid_argument(message),
            Error::UnknownPeer(_) => Status::permission_denied(message),
            Error::Apply { .. } => Status::failed_precondition(message),
            Error::NotPeerDurable { .. } | Error::NotApplied { .. } => {
                Status::deadline_exceeded(message)
            }
            Error::Store(e) if !e.is_retryable() => Status::internal(message),
            Error::LogHole { .. } => Status::internal(message),
            Error::Config(_) => Status::internal(message),
            _ => Status::unavailable(message),
        }
    }
}
