//! `meridian-tls`: who a Meridian service is, and mutual TLS between
//! services.
//!
//! It owns:
//! - **identities**: [`PeerIdentity`], the SPIFFE id
//!   `spiffe://<trust-domain>/region/<region>/<service>` carried as the one
//!   URI SAN of a service's certificate, with [`TrustDomain`] and
//!   [`Service`];
//! - **the development PKI** ([`dev_ca`], [`issue`], [`write_dev_pki`]):
//!   a CA and a certificate per region and service, made with rcgen;
//! - **mutual TLS for tonic** ([`MeshTls`]): the server side
//!   ([`MeshTls::incoming`]) requires a client certificate from the CA bundle
//!   and in our trust domain; the client side ([`MeshTls::connect`],
//!   [`MeshConnector`]) presents its certificate and accepts only the one
//!   server identity it meant to reach. Both reload certificate, key and CA
//!   bundle from disk without a restart ([`MeshTls::spawn_reload`]);
//! - **authorization after the handshake** ([`require`], [`RequirePeer`],
//!   [`require_region`]): which services may call a service.
//!
//! Boundary: this crate knows certificates, handshakes and identities, not
//! what services do. It serves no gRPC service and defines no protobuf; the
//! services decide which peers they accept, by calling [`require`] or
//! installing [`RequirePeer`]. The public ports' listeners ([`public_incoming`],
//! [`with_http2_limits`]) are here too, because they share the handshake
//! discipline; what a bearer token allows is not.
//!
//! Why reload swaps whole configurations: each reload builds a new rustls
//! `ServerConfig` (and client configurations) from files that were checked
//! together (key matches certificate, certificate chains to the bundle and
//! is valid now, identity unchanged), and each new handshake takes the
//! current one. A certificate, its key and the trust bundle therefore
//! change atomically, connections already open keep the material they
//! started with, and no TLS session from before a CA rotation is resumed
//! under the new trust bundle.
//!
//! # Serving and calling
//!
//! ```no_run
//! use std::time::Duration;
//! use meridian_tls::{MeshTls, PeerIdentity, RequirePeer, Service, TlsFiles};
//! use tonic::service::interceptor::InterceptedService;
//!
//! # async fn example(dir: &std::path::Path, region: meridian_core::RegionId) -> anyhow::Result<()> {
//! // A gateway's certificate, key and CA bundle, reloaded every 5 s.
//! let tls = MeshTls::load(TlsFiles::dev(dir, &region, Service::Gateway))?;
//! let _reload = tls.spawn_reload(Duration::from_secs(5));
//!
//! // Serve: only gateways may call. A handler reads the caller with
//! // `meridian_tls::peer_identity(&request)`, or checks it itself with
//! // `meridian_tls::require(&request, &[Service::Gateway])`.
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(
//!     tonic::transport::Server::builder()
//!         .add_service(InterceptedService::new(health, RequirePeer::new(&[Service::Gateway])))
//!         .serve_with_incoming_shutdown(tls.incoming(listener), std::future::pending()),
//! );
//!
//! // Call: the server must be exactly this identity.
//! let peer: PeerIdentity = format!("spiffe://meridian.local/region/{region}/gateway").parse()?;
//! let channel = tls.connect(&addr.to_string(), peer).await?;
//! let _client = tonic_health::pb::health_client::HealthClient::new(channel);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

/// The rustls this crate builds its configurations with.
pub use rustls;

mod authz;
mod client;
mod dev_pki;
mod error;
mod identity;
mod material;
mod mesh;
mod outbound;
mod public;
mod server;
mod verify;

pub use authz::{RequirePeer, authorize, peer_identity, require, require_region};
pub use client::{CONNECT_TIMEOUT, GatewayChannels, MeshConnector};
pub use dev_pki::{
    CA_CERT_FILE, CA_KEY_FILE, DevCa, DevPkiPlan, IssuedCert, PkiFile, Validity, WrittenFile,
    dev_ca, issue, issue_server, issue_with_uri, write_atomically, write_dev_pki,
};
pub use error::{Error, Result};
pub use identity::{PeerIdentity, Service, TrustDomain};
pub use material::TlsFiles;
pub use mesh::{MeshTls, ReloadTask, Reloaded};
pub use outbound::{OutboundTlsError, outbound_client_config};
pub use public::{
    HTTP2_CONNECTION_WINDOW_BYTES, HTTP2_HEADER_LIST_BYTES_MAX, HTTP2_KEEPALIVE_INTERVAL,
    HTTP2_KEEPALIVE_TIMEOUT, HTTP2_STREAM_WINDOW_BYTES, HTTP2_STREAMS_PER_CONNECTION_MAX,
    PUBLIC_CONNECTIONS_PER_ADDRESS_MAX, PUBLIC_HANDSHAKE_TIMEOUT,
    PUBLIC_HANDSHAKES_PER_ADDRESS_MAX, PublicIncoming, PublicLimits, PublicStream, public_incoming,
    public_server_config, with_http2_limits,
};
pub use server::{HANDSHAKE_TIMEOUT, HANDSHAKES_IN_FLIGHT_MAX, TlsIncoming};
