//! The public gRPC ports (a gateway's, the router's): TLS with a plain
//! server certificate for clients that bring bearer tokens, or plain TCP
//! on loopback, and the limits that keep a client from holding resources
//! it does not use.
//!
//! A connection is handed to the gRPC server only once it has finished
//! its TLS handshake (when there is TLS) and sent the HTTP/2 connection
//! preface, all within [`PublicLimits::handshake_timeout`]: a peer that
//! opens TCP and says nothing, or stops after TLS, is closed then. hyper
//! itself waits for a preface forever. After the preface, HTTP/2 keepalive
//! pings ([`with_http2_limits`]) close a peer that stops answering.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::{Error, Result};

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Connections past their handshake waiting for the server to take them.
const ACCEPTED_QUEUE_MAX: usize = 64;
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Concurrent HTTP/2 streams (calls) one connection may open.
pub const HTTP2_STREAMS_PER_CONNECTION_MAX: u32 = 128;
/// Bytes a client may send on one stream before the server reads them.
pub const HTTP2_STREAM_WINDOW_BYTES: u32 = 256 * 1024;
/// Bytes a client may send on one connection before the server reads them.
pub const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;
/// How often an HTTP/2 connection is pinged, and how long the answer may
/// take before the connection is closed.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest header block a client may send.
pub const HTTP2_HEADER_LIST_BYTES_MAX: u32 = 16 * 1024;

/// A tonic server with the HTTP/2 limits of a Meridian port: concurrent
/// streams and flow-control windows (so a client cannot make the server
/// buffer without bound) and keepalive pings (so a dead peer is closed).
pub fn with_http2_limits(server: tonic::transport::Server) -> tonic::transport::Server {
    server
        .max_concurrent_streams(HTTP2_STREAMS_PER_CONNECTION_MAX)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW_BYTES)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .http2_max_header_list_size(HTTP2_HEADER_LIST_BYTES_MAX)
}

/// Connection limits of a public port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicLimits {
    /// TLS handshake and HTTP/2 preface must both be done by then.
    pub handshake_timeout: Duration,
    /// Open connections from one client address; further ones are closed
    /// on arrival.
    pub connections_per_address_max: usize,
    /// Connections from one address still in their handshake.
    pub handshakes_per_address_max: usize,
}

pub const PUBLIC_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const PUBLIC_CONNECTIONS_PER_ADDRESS_MAX: usize = 256;
pub const PUBLIC_HANDSHAKES_PER_ADDRESS_MAX: usize = 32;

impl Default for PublicLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: PUBLIC_HANDSHAKE_TIMEOUT,
            connections_per_address_max: PUBLIC_CONNECTIONS_PER_ADDRESS_MAX,
            handshakes_per_address_max: PUBLIC_HANDSHAKES_PER_ADDRESS_MAX,
        }
    }
}

/// A rustls server configuration for a public port from a PEM certificate
/// chain and key: TLS 1.2 and 1.3, ALPN `h2`, no client certificates
/// (clients authenticate with bearer tokens).
pub fn public_server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Public(format!("tls.cert: not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Public("tls.cert: no CERTIFICATE block".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| Error::Public(format!("tls.key: not a PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Counts per client address, shared by the accept loop and the
/// connections it handed out.
#[derive(Default)]
struct PerAddress {
    connections: HashMap<IpAddr, usize>,
    handshakes: HashMap<IpAddr, usize>,
}

type Counts = Arc<Mutex<PerAddress>>;

fn lock(counts: &Counts) -> std::sync::MutexGuard<'_, PerAddress> {
    // A poisoned lock only means a panic elsewhere; the counts stay usable.
    counts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn release(map: &mut HashMap<IpAddr, usize>, address: IpAddr) {
    if let Some(count) = map.get_mut(&address) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(&address);
        }
    }
}

/// One connection slot of one address, given back when dropped.
struct Slot {
    counts: Counts,
    address: IpAddr,
    handshaking: bool,
}

impl Slot {
    fn handshake_done(&mut self) {
        let mut counts = lock(&self.counts);
        release(&mut counts.handshakes, self.address);
        self.handshaking = false;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        release(&mut counts.connections, self.address);
        if self.handshaking {
            release(&mut counts.handshakes, self.address);
        }
    }
}

/// Connections of a public port that finished their handshake within the
/// limit. Pass to `serve_with_incoming_shutdown`; dropping it stops
/// accepting.
pub struct PublicIncoming {
    accepted: mpsc::Receiver<PublicStream>,
    accept_loop: JoinHandle<()>,
}

impl std::fmt::Debug for PublicIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicIncoming").finish_non_exhaustive()
    }
}

/// Accepts connections on `listener`, with TLS when `tls` is given.
/// Must be called from within a tokio runtime.
pub fn public_incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    limits: PublicLimits,
) -> PublicIncoming {
    let (sender, accepted) = mpsc::channel(ACCEPTED_QUEUE_MAX);
    let accept_loop = tokio::spawn(accept_loop(listener, tls, limits, sender));
    PublicIncoming {
        accepted,
        accept_loop,
    }
}

impl tokio_stream::Stream for PublicIncoming {
    type Item = std::result::Result<PublicStream, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.accepted.poll_recv(cx).map(|stream| stream.map(Ok))
    }
}

impl Drop for PublicIncoming {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    limits: PublicLimits,
    accepted: mpsc::Sender<PublicStream>,
) {
    let counts: Counts = Arc::default();
    let local_addr = listener
        .local_addr()
        .map(|addr| addr.to_string())
        .unwrap_or_default();
    loop {
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
        let address = remote_addr.ip();
        let slot = {
            let mut per = lock(&counts);
            let connections = per.connections.get(&address).copied().unwrap_or(0);
            let handshakes = per.handshakes.get(&address).copied().unwrap_or(0);
            if connections >= limits.connections_per_address_max
                || handshakes >= limits.handshakes_per_address_max
            {
                tracing::warn!(
                    %remote_addr, %local_addr, connections, handshakes,
                    "connection refused: too many connections from one address"
                );
                continue;
            }
            *per.connections.entry(address).or_insert(0) += 1;
            *per.handshakes.entry(address).or_insert(0) += 1;
            Slot {
                counts: counts.clone(),
                address,
                handshaking: true,
            }
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%remote_addr, %error, "cannot set TCP_NODELAY");
        }
        let tls = tls.clone();
        let accepted = accepted.clone();
        let local_addr = local_addr.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(limits.handshake_timeout, handshake(tcp, tls)).await {
                Ok(Ok((io, prefix))) => {
                    let mut slot = slot;
                    slot.handshake_done();
                    let stream = PublicStream {
                        io,
                        prefix,
                        prefix_read: 0,
                        _slot: slot,
                    };
                    // A closed queue means the server is shutting down.
                    let _ = accepted.send(stream).await;
                }
                Ok(Err(error)) => {
                    tracing::debug!(%remote_addr, %local_addr, %error, "connection refused in its handshake");
                }
                Err(_) => {
                    tracing::info!(
                        %remote_addr, %local_addr, timeout_ms = limits.handshake_timeout.as_millis(),
                        "connection closed: no TLS handshake and HTTP/2 preface in time"
                    );
                }
            }
        });
    }
}

async fn handshake(
    tcp: TcpStream,
    tls: Option<Arc<ServerConfig>>,
) -> std::io::Result<(Io, [u8; 24])> {
    let mut io = match tls {
        Some(config) => Io::Tls(Box::new(TlsAcceptor::from(config).accept(tcp).await?)),
        None => Io::Plain(tcp),
    };
    let mut prefix = [0; 24];
    io.read_exact(&mut prefix).await?;
    if &prefix != PREFACE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not an HTTP/2 connection preface",
        ));
    }
    Ok((io, prefix))
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A public connection after its handshake: replays the preface it read,
/// then passes bytes through. Holds its address's connection slot.
pub struct PublicStream {
    io: Io,
    prefix: [u8; 24],
    prefix_read: usize,
    _slot: Slot,
}

impl Connected for PublicStream {
    // Bearer tokens, not client certificates, say who calls a public
    // port: the TCP addresses are all a handler needs.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match &self.io {
            Io::Plain(tcp) => tcp.connect_info(),
            Io::Tls(tls) => tls.get_ref().0.connect_info(),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncRead for PublicStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.prefix_read < this.prefix.len() {
            let rest = &this.prefix[this.prefix_read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.prefix_read += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PublicStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(tcp) => tcp.is_write_vectored(),
            Io::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
