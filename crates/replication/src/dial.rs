//! The dialling side: one loop per peer this region dials, reconnecting
//! with capped exponential backoff.

use std::sync::Arc;

use meridian_core::RegionId;
use meridian_proto::replication::{ReplicationMessage, frame_from_proto, hello_to_proto};
use meridian_proto::v1::{self, replication_service_client::ReplicationServiceClient};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Endpoint;

use crate::session::{self, OUTBOUND_QUEUE, Outbound, PeerHello, remote};
use crate::state::Shared;
use crate::{Error, FRAME_BYTES_MAX, Result};

/// Dials `peer` at `addr` and keeps a stream open until replication shuts
/// down (the caller aborts the task).
pub(crate) async fn dial_loop(shared: Arc<Shared>, peer: RegionId, addr: String) {
    let config = &shared.config;
    let mut backoff = config.reconnect_backoff_min;
    loop {
        let (opened, reason) = match open(&shared, &peer, &addr).await {
            Ok((hello, inbound, outbound)) => (
                true,
                session::run(shared.clone(), peer.clone(), hello, inbound, outbound).await,
            ),
            Err(reason) => (false, reason),
        };
        if *shared.shutdown.borrow() {
            return;
        }
        if opened {
            // A stream that opened proves the path works: start again from
            // the shortest pause. (The session logged why it ended.)
            backoff = config.reconnect_backoff_min;
        } else {
            shared.record_error(&peer, &reason.to_string());
            tracing::warn!(peer = %peer, addr = %addr, reason = %reason, retry_ms = backoff.as_millis(), "cannot open replication stream");
        }
        let mut shutdown = shared.shutdown.subscribe();
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(shared.transport.jitter(backoff)) => {}
        }
        backoff = backoff.saturating_mul(2).min(config.reconnect_backoff_max);
    }
}

/// Connects through the transport (with mutual TLS, the server must be
/// `peer`'s gateway), opens the stream and exchanges Hellos.
async fn open(
    shared: &Arc<Shared>,
    peer: &RegionId,
    addr: &str,
) -> Result<(PeerHello, Streaming<v1::ReplicationFrame>, Outbound)> {
    let config = &shared.config;
    let connect_error = |reason: String| Error::Connect {
        peer: peer.clone(),
        addr: addr.to_owned(),
        reason,
    };
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| connect_error(e.to_string()))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true);
    let opening = async {
        let channel = shared
            .transport
            .connect(peer, endpoint)
            .await
            .map_err(|e| connect_error(error_chain(&e)))?;
        let mut client = ReplicationServiceClient::new(channel)
            .max_decoding_message_size(FRAME_BYTES_MAX)
            .max_encoding_message_size(FRAME_BYTES_MAX);
        let cursor = shared.store.cursor(peer).await?;
        let head = shared.store.local_head().await?;
        shared.note_head(head);
        let (outbound, frames) = mpsc::channel(OUTBOUND_QUEUE);
        // The queue is new and empty: this cannot fail for want of room.
        let _ = outbound.try_send(Ok(hello_to_proto(shared.local(), cursor, head)));
        // A final status on the outgoing queue ends the request stream.
        let requests = ReceiverStream::new(frames).map_while(Result::ok);
        let response = client
            .replicate(requests)
            .await
            .map_err(|status| remote(peer, status))?;
        let mut inbound = response.into_inner();
        let first = inbound
            .message()
            .await
            .map_err(|status| remote(peer, status))?;
        let Some(first) = first else {
            return Err(Error::Closed { peer: peer.clone() });
        };
        let protocol = |reason: String| Error::Protocol {
            peer: peer.clone(),
            reason,
        };
        match frame_from_proto(first).map_err(|e| protocol(e.to_string()))? {
            ReplicationMessage::Hello {
                region,
                cursor,
                head_seq,
            } if &region == peer => Ok((PeerHello { cursor, head_seq }, inbound, outbound)),
            ReplicationMessage::Hello { region, .. } => {
                Err(protocol(format!("its hello names {region}")))
            }
            other => Err(protocol(format!(
                "the first frame must be hello, not {}",
                other.name()
            ))),
        }
    };
    let mut shutdown = shared.shutdown.subscribe();
    tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => Err(Error::Shutdown),
        opened = tokio::time::timeout(config.connect_timeout * 2, opening) => match opened {
            Ok(opened) => opened,
            Err(_) => Err(connect_error(format!("no hello within {} ms", (config.connect_timeout * 2).as_millis()))),
        },
    }
}

/// An error and its sources, for a log line: tonic's transport errors say
/// little at the top.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
