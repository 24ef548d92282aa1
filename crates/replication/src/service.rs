//! The accepting side: the `ReplicationService` a gateway serves on its
//! internal mutual-TLS port.

use std::sync::Arc;

use meridian_proto::replication::{ReplicationMessage, frame_from_proto, hello_to_proto};
use meridian_proto::v1::{self, replication_service_server::ReplicationServiceServer};
use meridian_tls::Service;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::session::{self, OUTBOUND_QUEUE, PeerHello};
use crate::state::Shared;
use crate::{Error, FRAME_BYTES_MAX};

/// The generated tonic server around [`ReplicationHandler`]: what
/// [`Replicator::service`](crate::Replicator::service) returns, to be added
/// to an internal server that accepts only mutual TLS.
pub type ReplicationServer = ReplicationServiceServer<ReplicationHandler>;

/// Accepts replication streams from the peers this region does not dial.
/// Each stream must come from a gateway (by its certificate), and its Hello
/// must name the region of that certificate, a peer of this mesh.
#[derive(Clone)]
pub struct ReplicationHandler {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ReplicationHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationHandler")
            .field("local", self.shared.local())
            .finish_non_exhaustive()
    }
}

pub(crate) fn server(shared: Arc<Shared>) -> ReplicationServer {
    ReplicationServiceServer::new(ReplicationHandler { shared })
        .max_decoding_message_size(FRAME_BYTES_MAX)
        .max_encoding_message_size(FRAME_BYTES_MAX)
}

/// A refusal, logged with the reason before the caller hears it.
fn refuse(status: Status, remote_addr: Option<std::net::SocketAddr>) -> Status {
    tracing::warn!(
        remote_addr = ?remote_addr,
        code = ?status.code(),
        reason = %status.message(),
        "replication stream refused"
    );
    status
}

#[tonic::async_trait]
impl v1::replication_service_server::ReplicationService for ReplicationHandler {
    type ReplicateStream = ReceiverStream<Result<v1::ReplicationFrame, Status>>;

    async fn replicate(
        &self,
        request: Request<Streaming<v1::ReplicationFrame>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        let shared = &self.shared;
        let remote_addr = request.remote_addr();
        // `require` logs its own refusals.
        let identity = meridian_tls::require(&request, &[Service::Gateway])?;
        let mut inbound = request.into_inner();
        let hello_wait = shared.config.connect_timeout;
        let first = match tokio::time::timeout(hello_wait, inbound.message()).await {
            Err(_) => {
                let reason = format!(
                    "{identity} sent no hello within {} ms",
                    hello_wait.as_millis()
                );
                return Err(refuse(Status::deadline_exceeded(reason), remote_addr));
            }
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => {
                return Err(refuse(
                    Status::cancelled("the stream ended before its hello"),
                    remote_addr,
                ));
            }
            Ok(Ok(Some(frame))) => frame,
        };
        let (region, hello) = match frame_from_proto(first) {
            Ok(ReplicationMessage::Hello {
                region,
                cursor,
                head_seq,
            }) => (region, PeerHello { cursor, head_seq }),
            Ok(other) => {
                let reason = format!("the first frame must be hello, not {}", other.name());
                return Err(refuse(Status::invalid_argument(reason), remote_addr));
            }
            Err(error) => {
                return Err(refuse(
                    Status::invalid_argument(error.to_string()),
                    remote_addr,
                ));
            }
        };
        // `require_region` logs its own refusals.
        meridian_tls::require_region(&identity, &region)?;
        if !shared.peers.contains_key(&region) {
            let reason = format!("{region} is not a peer region of {}'s mesh", shared.local());
            return Err(refuse(Status::permission_denied(reason), remote_addr));
        }

        let cursor = shared
            .store
            .cursor(&region)
            .await
            .map_err(|e| Error::from(e).to_status())?;
        let head = shared
            .store
            .local_head()
            .await
            .map_err(|e| Error::from(e).to_status())?;
        shared.note_head(head);
        let (outbound, frames) = mpsc::channel(OUTBOUND_QUEUE);
        // The queue is new and empty: this cannot fail for want of room.
        let _ = outbound.try_send(Ok(hello_to_proto(shared.local(), cursor, head)));
        tracing::debug!(peer = %region, remote_addr = ?remote_addr, "replication stream accepted");
        tokio::spawn(session::run(
            shared.clone(),
            region,
            hello,
            inbound,
            outbound,
        ));
        Ok(Response::new(ReceiverStream::new(frames)))
    }
}
