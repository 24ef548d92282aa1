//! The mesh's transport inside the simulation: tonic over turmoil's
//! simulated TCP, and identities from simulated host names.
//!
//! Production replication runs over mutual TLS, and the accepting side
//! reads the caller's SPIFFE identity from its certificate. Here there is
//! no TLS (handshakes cost real CPU and real randomness): the dialler
//! connects with plain simulated TCP ([`SimTransport`]), and the server
//! side puts a [`PeerIdentity`] in each request's extensions from the
//! caller's host name ([`identify`]), which `meridian_tls::require` reads
//! before any certificate. The replication and anti-entropy services then
//! check that identity exactly as they do in production.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use meridian_core::RegionId;
use meridian_replication::{BoxFuture, PeerTransport};
use meridian_tls::{PeerIdentity, Service, TrustDomain};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codegen::http::Uri;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::rng::Rng;

/// Opens simulated TCP connections for tonic channels.
#[derive(Debug, Clone, Copy, Default)]
pub struct Connector;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<turmoil::net::TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::other(format!("{uri} names no host")))?
                .to_owned();
            let port = uri
                .port_u16()
                .ok_or_else(|| io::Error::other(format!("{uri} names no port")))?;
            let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// The replicator's transport in the simulation: simulated TCP, and
/// reconnect jitter drawn from the seed.
pub struct SimTransport {
    rng: Mutex<Rng>,
}

impl SimTransport {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Mutex::new(Rng::new(seed)),
        }
    }
}

impl PeerTransport for SimTransport {
    fn connect(
        &self,
        _peer: &RegionId,
        endpoint: Endpoint,
    ) -> BoxFuture<'static, Result<Channel, tonic::transport::Error>> {
        Box::pin(async move { endpoint.connect_with_connector(Connector).await })
    }

    fn connect_lazy(&self, _peer: &RegionId, endpoint: Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(Connector)
    }

    fn jitter(&self, pause: Duration) -> Duration {
        let half = pause / 2;
        let half_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        let random = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .next_u64();
        half + Duration::from_nanos(random % half_nanos)
    }
}

/// An accepted simulated connection, with the addresses tonic records for
/// each request (so the server can tell who called).
pub struct Accepted(pub turmoil::net::TcpStream);

impl Connected for Accepted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.0.local_addr().ok(),
            remote_addr: self.0.peer_addr().ok(),
        }
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// The connections a simulated listener accepts, as tonic's server takes
/// them.
pub fn incoming(
    listener: turmoil::net::TcpListener,
) -> impl futures::Stream<Item = io::Result<Accepted>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| Accepted(stream));
        Some((accepted, listener))
    })
}

/// The server-side identity check's input: the caller's simulated host
/// name is its region, and every region host is a gateway.
pub fn identify(
    trust_domain: TrustDomain,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let addr = request
            .remote_addr()
            .ok_or_else(|| Status::unauthenticated("no remote address"))?;
        let host = turmoil::reverse_lookup(addr.ip())
            .ok_or_else(|| Status::unauthenticated(format!("{addr} has no host name")))?;
        let region = RegionId::new(host.clone())
            .map_err(|e| Status::unauthenticated(format!("host {host}: {e}")))?;
        request.extensions_mut().insert(PeerIdentity::new(
            trust_domain.clone(),
            region,
            Service::Gateway,
        ));
        Ok(request)
    }
}
