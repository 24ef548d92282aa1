//! The dialling side: a connector for tonic channels that does TCP, then a
//! mutual-TLS handshake that insists on one server identity.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::server::HANDSHAKE_TIMEOUT;
use crate::verify::refusal_reason;
use meridian_core::RegionId;

use crate::{Error, MeshTls, PeerIdentity, Result, Service};

/// How long [`MeshTls::connect`] waits for TCP and TLS together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A tower service from URI to an authenticated TLS connection, for
/// `tonic::transport::Endpoint::connect_with_connector`. Every connection,
/// including tonic's reconnects, uses the material current at that moment.
///
/// The endpoint's URI must use the `http://` scheme: TLS happens here, so
/// tonic must not try to add its own.
#[derive(Clone, Debug)]
pub struct MeshConnector {
    tls: MeshTls,
    expected: PeerIdentity,
}

impl MeshTls {
    /// A connector for channels to a server that must be `expected`.
    pub fn connector(&self, expected: PeerIdentity) -> MeshConnector {
        MeshConnector {
            tls: self.clone(),
            expected,
        }
    }

    /// A channel to `addr` (`host:port`) whose server must be `expected`;
    /// connects now, so a refused server is an error here.
    pub async fn connect(&self, addr: &str, expected: PeerIdentity) -> Result<Channel> {
        endpoint(addr)?
            .connect_with_connector(self.connector(expected))
            .await
            .map_err(|source| Error::Connect {
                addr: addr.to_owned(),
                source,
            })
    }

    /// As [`MeshTls::connect`], but connects on first use.
    pub fn connect_lazy(&self, addr: &str, expected: PeerIdentity) -> Result<Channel> {
        Ok(endpoint(addr)?.connect_with_connector_lazy(self.connector(expected)))
    }
}

/// Channels to other regions' gateways, one per region, made on first use
/// and reused; each dials the region's mesh address and accepts only that
/// region's gateway identity in this process's trust domain.
pub struct GatewayChannels {
    tls: MeshTls,
    addrs: std::collections::BTreeMap<RegionId, String>,
    channels: std::sync::Mutex<std::collections::HashMap<RegionId, Channel>>,
}

impl GatewayChannels {
    /// `addrs`: each region's gateway mesh `host:port`.
    pub fn new(tls: MeshTls, addrs: std::collections::BTreeMap<RegionId, String>) -> Self {
        Self {
            tls,
            addrs,
            channels: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Whether `region` has an address here.
    pub fn knows(&self, region: &RegionId) -> bool {
        self.addrs.contains_key(region)
    }

    /// The channel to `region`'s gateway.
    pub fn channel(&self, region: &RegionId) -> Result<Channel> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(channel) = channels.get(region) {
            return Ok(channel.clone());
        }
        let addr = self.addrs.get(region).ok_or_else(|| Error::Endpoint {
            addr: region.to_string(),
            reason: format!("no gateway mesh address is configured for {region}"),
        })?;
        let expected = PeerIdentity::new(
            self.tls.identity().trust_domain().clone(),
            region.clone(),
            Service::Gateway,
        );
        let channel = self.tls.connect_lazy(addr, expected)?;
        channels.insert(region.clone(), channel.clone());
        Ok(channel)
    }
}

fn endpoint(addr: &str) -> Result<Endpoint> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map(|endpoint| endpoint.connect_timeout(CONNECT_TIMEOUT))
        .map_err(|e| Error::Endpoint {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })
}

impl MeshConnector {
    pub fn expected(&self) -> &PeerIdentity {
        &self.expected
    }

    /// TCP to `host:port`, then the TLS handshake. A server that fails the
    /// checks is refused, and the refusal logged with the reason.
    pub async fn connect_tls(&self, host: &str, port: u16) -> io::Result<TlsStream<TcpStream>> {
        // An IPv6 literal comes bracketed out of a URI.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let config = self
            .tls
            .client_config(&self.expected)
            .map_err(io::Error::other)?;
        // Sent as SNI; never checked, since the SPIFFE id is.
        let server_name = ServerName::try_from(host.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("server name {host:?}: {e}"),
            )
        })?;
        let handshake = TlsConnector::from(config).connect(server_name, tcp);
        let refused = |reason: String| {
            tracing::warn!(addr = %format_args!("{host}:{port}"), expected = %self.expected, %reason, "mtls connection refused");
            reason
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => {
                let reason = refused(refusal_reason(&error));
                Err(io::Error::new(error.kind(), reason))
            }
            Err(_) => {
                let reason = refused(format!(
                    "handshake timed out after {} ms",
                    HANDSHAKE_TIMEOUT.as_millis()
                ));
                Err(io::Error::new(io::ErrorKind::TimedOut, reason))
            }
        }
    }
}

impl tower_service::Service<Uri> for MeshConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{uri}: needs a host and a port"),
                ));
            };
            connector.connect_tls(host, port).await.map(TokioIo::new)
        })
    }
}
