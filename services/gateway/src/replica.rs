//! Several gateway replicas of one region on one database: one is the
//! region's active replica, the others are standbys.
//!
//! A gateway becomes active only once it holds the region's writer lock
//! ([`RegionLock`]: a PostgreSQL advisory lock, or a lock file beside a
//! SQLite database). Until then it is a standby: it serves `grpc.health.v1`
//! with the overall service `""` SERVING (the process is alive) and
//! `meridian.v1.TicketService` NOT_SERVING (do not send it traffic), answers
//! every TicketService call with UNAVAILABLE naming the reason, and opens
//! nothing else: no store writer, replication, lease, shift, SLA or spike
//! task. It tries the lock again every [`STANDBY_RETRY_MS`]. Once it holds
//! the lock, the standby server stops and the gateway starts as usual on the
//! same socket, opening its store fenced on a new writer generation.

use std::{convert::Infallible, future::Future, sync::Arc, task::Poll, time::Duration};

use meridian_proto::v1::ticket_service_server::TicketServiceServer;
use meridian_store::RegionLock;
use tokio::net::TcpListener;
use tonic::{
    Status,
    body::Body,
    codegen::{BoxFuture, Service, http},
    server::NamedService,
    transport::Server,
};

use crate::{Error, GatewayConfig, Result, TicketApi, error::ApiError};

/// How often a standby tries to take the region's writer lock.
pub const STANDBY_RETRY_MS: u64 = 500;
/// How long the standby server may take to finish its calls once the
/// replica becomes active, before its socket is taken back regardless.
const STANDBY_DRAIN_MS: u64 = 2_000;

/// Waits until this replica holds the region's writer lock, serving as a
/// standby meanwhile. `None` when `shutdown` completed first.
pub(crate) async fn become_active(
    config: &GatewayConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<Option<(RegionLock, TcpListener)>> {
    if let Some(lock) = RegionLock::try_acquire(&config.store, &config.region).await? {
        tracing::info!(region = %config.region, "active replica of the region");
        return Ok(Some((lock, listener)));
    }
    tracing::warn!(region = %config.region, retry_ms = STANDBY_RETRY_MS,
        "standby replica: another replica holds the region's writer lock");
    let listener = Arc::new(listener);
    let (promoted, promotion) = tokio::sync::oneshot::channel::<()>();
    let standby = serve_standby(config, listener.clone(), async move {
        let _ = promotion.await;
    });
    let acquire = async {
        loop {
            tokio::time::sleep(Duration::from_millis(STANDBY_RETRY_MS)).await;
            match RegionLock::try_acquire(&config.store, &config.region).await {
                Ok(Some(lock)) => return lock,
                Ok(None) => {}
                // The database being away is a reason to keep trying, not
                // to stop: the active replica may be riding it out too.
                Err(error) => {
                    tracing::warn!(region = %config.region, error = %error, "standby cannot reach the database")
                }
            }
        }
    };
    tokio::pin!(standby, shutdown, acquire);
    let lock = tokio::select! {
        lock = &mut acquire => lock,
        () = &mut shutdown => return Ok(None),
        served = &mut standby => {
            served?;
            return Err(Error::Config("the standby server stopped on its own".into()));
        }
    };
    let _ = promoted.send(());
    // Let the standby's calls finish (they answer at once), but never wait
    // on a client that holds a stream open.
    if tokio::time::timeout(Duration::from_millis(STANDBY_DRAIN_MS), &mut standby)
        .await
        .is_err()
    {
        tracing::debug!(region = %config.region, "standby calls still open at promotion; dropped");
    }
    // The standby's incoming stream, which held the other reference, went
    // with its server future.
    let Some(listener) = Arc::into_inner(listener) else {
        return Err(Error::Config(
            "invariant: the standby server released the public socket".into(),
        ));
    };
    tracing::info!(region = %config.region, "standby promoted: active replica of the region");
    Ok(Some((lock, listener)))
}

/// The standby's server: health, and TicketService answering UNAVAILABLE.
async fn serve_standby(
    config: &GatewayConfig,
    listener: Arc<TcpListener>,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_not_serving::<TicketServiceServer<TicketApi>>()
        .await;
    let refuse = StandbyTickets {
        reason: Arc::from(format!(
            "standby replica of region {}: another replica holds the region",
            config.region
        )),
    };
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| {
            // As the active server: no Nagle delay on small answers.
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((accepted, listener))
    });
    // The standby shares its socket with the active life that follows, so
    // it keeps tonic's own TLS; it serves only health and refusals.
    let mut server =
        meridian_tls::with_http2_limits(Server::builder()).timeout(config.limits.request_timeout);
    if let Some(tls) = &config.tls {
        let (cert, key) = crate::load_identity(tls)?;
        let identity = tonic::transport::Identity::from_pem(cert, key);
        server = server.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    server
        .add_service(health_service)
        .add_service(refuse)
        .serve_with_incoming_shutdown(incoming, stop)
        .await?;
    Ok(())
}

/// `meridian.v1.TicketService` on a standby: every method is UNAVAILABLE
/// with the reason, so a client (or a router) tries another replica.
#[derive(Clone)]
struct StandbyTickets {
    reason: Arc<str>,
}

impl NamedService for StandbyTickets {
    const NAME: &'static str = <TicketServiceServer<TicketApi> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for StandbyTickets {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: http::Request<Body>) -> Self::Future {
        let response = Status::from(ApiError::Standby(self.reason.to_string())).into_http();
        Box::pin(async move { Ok(response) })
    }
}
