//! The serving side: a stream of mutually authenticated TLS connections for
//! `tonic::transport::Server::serve_with_incoming_shutdown`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::MeshTls;
use crate::verify::refusal_reason;

/// A peer that has not finished its handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the
/// listener's backlog.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;
/// Authenticated connections waiting for the server to take them.
const ACCEPTED_QUEUE_MAX: usize = 64;
/// Pause after a failed `accept` (out of file descriptors, say) so the loop
/// does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Connections that completed a mutual-TLS handshake with the material
/// current when they arrived. Refused handshakes are logged with the
/// peer's address and the reason, and never reach the server.
///
/// Yields `tokio_rustls::server::TlsStream<TcpStream>`, for which tonic
/// implements `Connected`: handlers see the peer's certificates through
/// `Request::peer_certs()`, which is what [`crate::peer_identity`] reads.
/// Dropping the stream (tonic does at shutdown) stops accepting.
pub struct TlsIncoming {
    accepted: mpsc::Receiver<TlsStream<TcpStream>>,
    accept_loop: JoinHandle<()>,
}

impl std::fmt::Debug for TlsIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIncoming").finish_non_exhaustive()
    }
}

impl MeshTls {
    /// Accepts connections on `listener` and performs the TLS handshakes.
    /// Serve a tonic router over them with
    /// `router.serve_with_incoming_shutdown(tls.incoming(listener), shutdown)`.
    ///
    /// Must be called from within a tokio runtime.
    pub fn incoming(&self, listener: TcpListener) -> TlsIncoming {
        let (sender, accepted) = mpsc::channel(ACCEPTED_QUEUE_MAX);
        let accept_loop = tokio::spawn(accept_loop(self.clone(), listener, sender));
        TlsIncoming {
            accepted,
            accept_loop,
        }
    }
}

impl tokio_stream::Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.accepted.poll_recv(cx).map(|stream| stream.map(Ok))
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept_loop(
    tls: MeshTls,
    listener: TcpListener,
    accepted: mpsc::Sender<TlsStream<TcpStream>>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
    // Named in refusals, so a process with several listeners says which.
    let local_addr = listener
        .local_addr()
        .map(|addr| addr.to_string())
        .unwrap_or_default();
    loop {
        let permit = tokio::select! {
            () = accepted.closed() => return,
            permit = handshakes.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => return,
            },
        };
        let (tcp, remote_addr) = tokio::select! {
            () = accepted.closed() => return,
            result = listener.accept() => match result {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        // gRPC calls are small request/response exchanges: do not let
        // Nagle's algorithm hold them back.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%remote_addr, %error, "cannot set TCP_NODELAY");
        }
        let acceptor = TlsAcceptor::from(tls.server_config());
        let accepted = accepted.clone();
        let local_addr = local_addr.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let peer = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(|cert| crate::PeerIdentity::from_cert_der(cert).ok());
                    if let Some(peer) = peer {
                        tracing::debug!(%remote_addr, %peer, "mtls connection accepted");
                    }
                    // A closed queue means the server is shutting down.
                    let _ = accepted.send(stream).await;
                }
                Ok(Err(error)) => {
                    tracing::warn!(
                        %remote_addr,
                        %local_addr,
                        reason = %refusal_reason(&error),
                        "mtls handshake refused"
                    );
                }
                Err(_) => {
                    tracing::warn!(
                        %remote_addr,
                        %local_addr,
                        timeout_ms = HANDSHAKE_TIMEOUT.as_millis(),
                        "mtls handshake refused: timed out"
                    );
                }
            }
        });
    }
}
