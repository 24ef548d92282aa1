//! The global router: decides which region takes each new ticket under the
//! follow-the-sun rules, and forwards it to that region's gateway. Serves
//! `meridian.v1.RouterService`, standard gRPC health (`grpc.health.v1`) and
//! server reflection.
//!
//! Boundary: the router keeps no ticket state. A decision is a pure function
//! of (rules version, instant, region health, region load, ticket
//! attributes) computed by `meridian-rules`; this crate supplies the inputs
//! and performs the effects:
//! - the rules, read from disk and hot-reloaded by `meridian-rules-source`:
//!   a bad file is refused with `FILE:LINE:COL` problems and the old rules
//!   stay;
//! - region health, from probing each gateway's health service
//!   (`health`), judged against the injected [`Clock`];
//! - forwarding a submitted ticket to the chosen gateway, and to the next
//!   candidate when that fails (`service`).
//!
//! Protobuf conversions live in `meridian-proto`; errors become gRPC
//! statuses in one place, [`error`].
//!
//! Entry point: [`run`] with a config, a bound listener and a shutdown
//! future; `main.rs` and the `meridian` CLI only build those.

#![forbid(unsafe_code)]

pub mod config;
mod console;
pub mod error;
pub mod failover;
mod health;
pub mod journey;
mod service;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;

use meridian_core::{Clock, RegionId};
use meridian_proto::v1::router_service_server::RouterServiceServer;
use meridian_rules::Rules;
use meridian_rules_source::RulesSource;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Server};

pub use config::{ConsoleConfig, HealthConfig, Limits, PublicTls, RouterConfig};
pub use console::{STREAMS_PER_PRINCIPAL_MAX, WHAT_IF_BYTES_MAX};
/// The console's what-if, for `meridian rules what-if`.
pub mod what_if {
    pub use crate::console::view::{
        ChangedCell, GRID_DAYS, GridRow, GridView, PastTicket, ProblemView, Rerouted, WhatIf,
        what_if,
    };
}
pub use error::{Error, Result};

use crate::health::HealthTable;
use crate::service::RouterApi;

/// The largest response the router sends: a decision lists every region, so
/// even 64 regions stay far below this.
const RESPONSE_BYTES_MAX: usize = 1024 * 1024;

/// The wall clock, for production. Tests and the simulation pass their own.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// Loads the rules, starts probing the gateways and watching the rules
/// file, and serves until `shutdown` completes. Fails at start when the
/// rules file cannot be read or is refused.
pub async fn run(
    config: RouterConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    run_with_clock(config, listener, shutdown, Arc::new(SystemClock)).await
}

/// [`run`] with an injected clock: decisions and health ages read it.
pub async fn run_with_clock(
    config: RouterConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    clock: Arc<dyn Clock>,
) -> Result<()> {
    let console_listener = match &config.console {
        Some(console) => Some(TcpListener::bind(console.listen).await.map_err(|e| {
            Error::Config(format!(
                "console.listen: cannot bind {}: {e}",
                console.listen
            ))
        })?),
        None => None,
    };
    run_with_console(config, listener, console_listener, shutdown, clock).await
}

/// [`run_with_clock`] with the console's listener bound by the caller (so
/// `meridian up` and tests can bind port 0 and know the port). Serves the
/// console only when `config.console` is set.
pub async fn run_with_console(
    config: RouterConfig,
    listener: TcpListener,
    console_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send,
    clock: Arc<dyn Clock>,
) -> Result<()> {
    let source = RulesSource::load(&config.rules_path).await?;
    let gateway_regions: BTreeSet<RegionId> = config.gateways.keys().cloned().collect();
    warn_unserved(&source.active.current(), &gateway_regions);
    let rules = source.active.clone();
    let health = Arc::new(HealthTable::new(&gateway_regions, config.health.timeout));

    let gateway_tls = gateway_tls(&config)?;
    let mut channels = HashMap::new();
    for (region, url) in &config.gateways {
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| Error::Config(format!("gateways.{region}: {url:?}: {e}")))?;
        if url.starts_with("https://") {
            let Some(tls) = &gateway_tls else {
                return Err(Error::Config(format!(
                    "gateways.{region}: {url:?} is https: set tls.gateway_ca"
                )));
            };
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| Error::Config(format!("gateways.{region}: {url:?}: {e}")))?;
        }
        let endpoint = endpoint
            .connect_timeout(config.health.probe_deadline)
            // Keep-alives notice a gateway whose host vanished without
            // closing the connection.
            .http2_keep_alive_interval(config.health.probe_interval)
            .keep_alive_timeout(config.health.probe_deadline)
            .tcp_nodelay(true);
        // Lazy: a gateway that is down at start is simply unhealthy until it
        // comes up; the channel reconnects by itself.
        channels.insert(region.clone(), endpoint.connect_lazy());
    }

    // Background work ends with the server: the set aborts its tasks when
    // dropped, on every return path.
    let mut tasks = JoinSet::new();
    let served_regions = gateway_regions.clone();
    tasks.spawn(source.watch(config.rules_reload_interval, move |rules| {
        warn_unserved(rules, &served_regions)
    }));
    for (region, channel) in &channels {
        tasks.spawn(health::probe(
            region.clone(),
            channel.clone(),
            health.clone(),
            clock.clone(),
            config.health.probe_interval,
            config.health.probe_deadline,
        ));
    }

    // Failover: with a coordinator, take over regions whose lease expires.
    if let Some(settings) = &config.failover {
        let failover = failover::Failover::start(settings, rules.clone(), clock.clone()).await?;
        tasks.spawn(failover.run());
    }

    // One verifier (one JWKS, one reload) for the gRPC layer and the
    // console; token lifetimes are real time, whatever clock routes.
    let (verifier, _jwks_reload) = match &config.auth {
        Some(settings) => {
            let (verifier, reload) = settings
                .start_verifier(Arc::new(SystemClock))
                .map_err(|e| Error::Config(format!("auth: {e}")))?;
            (Some(verifier), Some(reload))
        }
        None => (None, None),
    };

    // One API for the gRPC service and the console's intake endpoint.
    let api = RouterApi::new(rules, health, channels.clone(), clock, config.limits);
    if let (Some(settings), Some(console_listener)) = (&config.console, console_listener) {
        let addr = console_listener.local_addr()?;
        let transport = console::transport(verifier.is_some(), config.tls.is_some(), addr)
            .map_err(Error::Config)?;
        let (acceptor, scheme) = match (transport, &config.tls) {
            (console::Transport::Https, Some(tls)) => {
                let read = |path: &std::path::Path, what: &str| {
                    std::fs::read(path)
                        .map_err(|e| Error::Config(format!("{what} {}: {e}", path.display())))
                };
                let acceptor = console::tls_acceptor(
                    &read(&tls.cert, "tls.cert")?,
                    &read(&tls.key, "tls.key")?,
                )
                .map_err(Error::Config)?;
                (Some(acceptor), "https")
            }
            _ => (None, "http"),
        };
        let auth = verifier.clone().map(|verifier| console::ConsoleAuth {
            verifier,
            tls: acceptor.is_some(),
        });
        let console = console::Console::new(
            settings,
            api.clone(),
            &channels,
            gateway_token(&config)?,
            auth,
        );
        tracing::info!(url = %format!("{scheme}://{addr}/"), auth = verifier.is_some(), "console serving");
        tasks.spawn(console::serve(
            Arc::new(console),
            console_listener,
            acceptor,
        ));
    }

    let router = RouterServiceServer::new(api)
        .max_decoding_message_size(config.limits.request_bytes_max)
        .max_encoding_message_size(RESPONSE_BYTES_MAX);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<RouterServiceServer<RouterApi>>()
        .await;
    // The token keys' freshness: health of `meridian.auth.Keys`, and metrics.
    let _key_health = verifier.as_ref().map(|verifier| {
        KeyHealthTask(tokio::spawn(meridian_auth::report_key_health(
            verifier.keys().clone(),
            health_reporter.clone(),
        )))
    });
    let _key_metrics = verifier.as_ref().map(|verifier| {
        verifier
            .keys()
            .observe(&meridian_telemetry::opentelemetry::global::meter(
                "meridian-router",
            ))
    });
    // Reflection in both versions, as the gateway does: v1 for current
    // tools, v1alpha for clients that speak only it (grpcio-reflection).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(meridian_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Only what this port serves: the descriptor set also holds
            // services of other ports, which would answer UNIMPLEMENTED.
            .with_service_name("meridian.v1.RouterService")
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| Error::Config(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| Error::Config(format!("reflection: {e}")))?;

    let local_addr = listener.local_addr()?;
    let server = meridian_tls::with_http2_limits(Server::builder())
        .timeout(config.limits.request_timeout)
        .concurrency_limit_per_connection(config.limits.concurrency_per_connection_max);
    let public_tls = match &config.tls {
        Some(tls) => {
            let (cert, key) = load_identity(tls)?;
            let config = meridian_tls::public_server_config(&cert, &key)
                .map_err(|e| Error::Config(format!("tls.cert {}: {e}", tls.cert.display())))?;
            Some(config)
        }
        None => None,
    };
    // Every RouterService call passes the token check first; health and
    // reflection stay open.
    let auth = match verifier {
        Some(verifier) => meridian_auth::AuthLayer::new(verifier, meridian_auth::router_policy()),
        None => {
            meridian_auth::warn_unauthenticated("router", local_addr);
            meridian_auth::AuthLayer::disabled()
        }
    };
    tracing::info!(
        addr = %local_addr, gateways = config.gateways.len(), tls = config.tls.is_some(), auth = auth.is_enabled(),
        "router serving"
    );
    // RED metrics outermost, so calls the token check refuses count too.
    let rpc_metrics = meridian_telemetry::RpcMetricsLayer::new(
        &meridian_telemetry::opentelemetry::global::meter("meridian-router"),
        vec![meridian_telemetry::opentelemetry::KeyValue::new(
            "meridian.server",
            "router",
        )],
    );
    let served = server
        .layer(rpc_metrics)
        .layer(meridian_proto::codec::OversizeLayer::new(
            config.limits.request_bytes_max,
            "limits.request_bytes_max",
        ))
        .layer(auth)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(router)
        // TLS, the HTTP/2 preface within the handshake timeout and
        // connections per address; Nagle off on every accepted socket
        // (delayed ACKs would hold small responses back ~40 ms).
        .serve_with_incoming_shutdown(
            meridian_tls::public_incoming(listener, public_tls, config.limits.public),
            shutdown,
        )
        .await;
    tasks.shutdown().await;
    served?;
    tracing::info!("router stopped");
    Ok(())
}

/// The client TLS settings for `https://` gateways, from `tls.gateway_ca`.
fn gateway_tls(config: &RouterConfig) -> Result<Option<ClientTlsConfig>> {
    let Some(path) = &config.gateway_ca else {
        return Ok(None);
    };
    let pem = std::fs::read(path)
        .map_err(|e| Error::Config(format!("tls.gateway_ca {}: {e}", path.display())))?;
    Ok(Some(
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
    ))
}

/// The token of `[auth] gateway_token_file`, for the router's own calls.
fn gateway_token(config: &RouterConfig) -> Result<meridian_auth::BearerToken> {
    let token = match &config.gateway_token_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("auth.gateway_token_file {}: {e}", path.display()))
        })?),
        None => None,
    };
    meridian_auth::BearerToken::new(token.as_deref())
        .map_err(|e| Error::Config(format!("auth.gateway_token_file: {e}")))
}

fn load_identity(tls: &config::PublicTls) -> Result<(Vec<u8>, Vec<u8>)> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|e| Error::Config(format!("{what} {}: {e}", path.display())))
    };
    Ok((read(&tls.cert, "tls.cert")?, read(&tls.key, "tls.key")?))
}

/// Logs the regions the rules name that have no gateway (never routed to)
/// and the gateways of regions the rules do not name (never used).
fn warn_unserved(rules: &Rules, gateways: &BTreeSet<RegionId>) {
    let version = rules.version_id();
    for region in rules.regions() {
        if !gateways.contains(&region.id) {
            tracing::warn!(rules_version = %version, region = %region.id, "region has no gateway endpoint configured and will not be routed to");
        }
    }
    for region in gateways {
        if rules.region(region.as_str()).is_none() {
            tracing::warn!(rules_version = %version, region = %region, "gateway configured for a region the rules do not define");
        }
    }
}

/// The key-health task of [`meridian_auth::report_key_health`]; stops when
/// dropped.
struct KeyHealthTask(tokio::task::JoinHandle<()>);

impl Drop for KeyHealthTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
