//! The regional gateway: owns one region's ticket queue and serves the public
//! `meridian.v1.TicketService` over gRPC, with standard health checking
//! (`grpc.health.v1`) and server reflection so generic clients work without
//! Meridian's protos.
//!
//! Boundary: a handler decodes and validates the request (through
//! `meridian-proto`), asks `meridian-core` whether the change is allowed,
//! writes through `meridian-store`, and encodes the answer; a handoff is a
//! saga across two regions (`handoff.rs`). Domain rules live
//! in the core, durability and fencing in the store; the gateway keeps no
//! ticket state in memory, so several replicas may serve one region's
//! database. Errors become gRPC statuses in one place, [`error`].
//!
//! Entry point: [`run`] with a config, a bound listener and a shutdown
//! future; `main.rs` and the `meridian` CLI only build those.

#![forbid(unsafe_code)]

// Modules depend downwards only, in this order (lowest first):
// error, spans, watch, metrics → peers (calls to other gateways) → context
// (the shared `TicketApi`) → handoff (the saga, both sides), failover →
// service (TicketService), mesh (MeshService), escalation, shift, sla,
// spike, notifications, conflicts, replica → this file (`run`). Exception:
// `metrics::observe` reads the context it is registered for.
#[doc(hidden)]
pub mod bench_hooks;
pub mod config;
mod conflicts;
mod context;
pub mod error;
pub mod escalation;
pub mod failover;
mod handoff;
mod idempotency;
mod load;
mod mail;
pub mod mail_settings;
mod mesh;
mod metrics;
mod notifications;
pub mod notify_settings;
mod peers;
mod people;
mod replica;
mod service;
mod shift;
mod sla;
mod spans;
mod spike;
pub mod watch;

use std::{future::Future, sync::Arc};

use meridian_core::Clock;
use meridian_proto::v1::{
    mesh_service_server::MeshServiceServer, ticket_service_server::TicketServiceServer,
};
use meridian_replication::{AntiEntropy, AntiEntropyConfig, ReplicationConfig, Replicator};
use meridian_rules_source::{ActiveRules, RulesSource};
use meridian_store::Store;
use meridian_tls::MeshTls;
use mesh::MeshApi;
use peers::MeshLink;
use tokio::net::TcpListener;
use tonic::transport::Server;

pub use config::{GatewayConfig, Limits, MeshSettings, RulesSettings, TelemetrySettings, TlsFiles};
pub use context::{REGION_HEADER, TRACEPARENT_HEADER, TicketApi, WriteGate};
pub use error::{Error, Result};
pub use mail_settings::MailSettings;
pub use notify_settings::NotifySettings;

/// The wall clock, for production. Tests and the simulation pass their own.
pub use meridian_store::SystemClock;

/// The sockets a gateway serves on: the public one for clients and, with a
/// mesh, the internal one (mutual TLS) for other regions' gateways.
pub struct Listeners {
    pub public: TcpListener,
    pub mesh: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses the config names.
    pub async fn bind(config: &GatewayConfig) -> Result<Listeners> {
        let public = TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", config.listen)))?;
        let mesh = match &config.mesh {
            Some(mesh) => Some(TcpListener::bind(mesh.listen).await.map_err(|e| {
                Error::Config(format!("mesh: cannot listen on {}: {e}", mesh.listen))
            })?),
            None => None,
        };
        Ok(Listeners { public, mesh })
    }
}

/// A clock that runs `speed` times faster than the wall clock from
/// `start`: `meridian up --speed 60` shows a day of shifts in 24 minutes.
#[derive(Debug)]
pub struct ScaledClock {
    start: jiff::Timestamp,
    origin: std::time::Instant,
    speed: u32,
}

impl ScaledClock {
    pub fn new(start: jiff::Timestamp, speed: u32) -> Self {
        Self {
            start,
            origin: std::time::Instant::now(),
            speed: speed.max(1),
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> jiff::Timestamp {
        let elapsed = self.origin.elapsed().saturating_mul(self.speed);
        let elapsed = jiff::SignedDuration::try_from(elapsed).unwrap_or(jiff::SignedDuration::MAX);
        self.start
            .checked_add(elapsed)
            .unwrap_or(jiff::Timestamp::MAX)
    }
}

/// Opens the region's store and serves until `shutdown` completes, then
/// drains in-flight calls and closes the store.
pub async fn run(
    config: GatewayConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    run_with_clock(config, listener, shutdown, Arc::new(SystemClock)).await
}

/// [`run`] with an injected clock.
pub async fn run_with_clock(
    config: GatewayConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    clock: Arc<dyn Clock>,
) -> Result<()> {
    // Certificates first: a bad file should stop the start before anything
    // touches the database.
    if let Some(tls) = &config.tls {
        public_tls_config(tls)?;
    }
    let mesh = match &config.mesh {
        Some(settings) => Some(TcpListener::bind(settings.listen).await.map_err(|e| {
            Error::Config(format!("mesh: cannot listen on {}: {e}", settings.listen))
        })?),
        None => None,
    };
    run_listeners(
        config,
        Listeners {
            public: listener,
            mesh,
        },
        shutdown,
        clock,
    )
    .await
}

/// [`run_with_clock`] on sockets bound by the caller (tests and `meridian
/// up` bind every region's sockets first, so each knows its peers').
///
/// Serves as a standby until this process holds the region's writer lock
/// (another replica holds it), then as the region's active replica; returns
/// [`Error::Replica`] if it stops being the active one.
pub async fn run_listeners(
    config: GatewayConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
    clock: Arc<dyn Clock>,
) -> Result<()> {
    if let Some(tls) = &config.tls {
        public_tls_config(tls)?;
    }
    // One shutdown for both lives of the process: standby, then active.
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let Listeners { public, mesh } = listeners;
    let Some((mut lock, public)) =
        replica::become_active(&config, public, shutdown.clone()).await?
    else {
        return Ok(());
    };
    // Opened only now, under the lock: the sequence head and cursors come
    // from the database, and the new writer generation fences off any
    // former active that lost the lock without noticing.
    let store = Store::open_fenced(&config.store, &config.region, clock.clone()).await?;
    let serving = serve_listeners(
        &config,
        store.clone(),
        Listeners { public, mesh },
        shutdown,
        clock,
    );
    // Losing the lock, or finding the region superseded, ends the process's
    // active life: it stops serving and reports the reason, and its
    // supervisor starts it again as a standby.
    let result = tokio::select! {
        result = serving => result,
        lost = lock.lost() => Err(Error::Replica(lost.to_string())),
        superseded = store.superseded() => Err(Error::Replica(superseded.to_string())),
    };
    if result.is_ok() {
        store.close().await;
    } else if tokio::time::timeout(REPLICA_CLOSE_MAX, store.close())
        .await
        .is_err()
    {
        // A database that cannot be reached may hold a commit for as long
        // as TCP does; the fence already keeps it from mattering.
        tracing::warn!(region = %config.region, "the store did not close in time after leaving the active role");
    }
    drop(lock);
    result
}

/// How long a replica that stopped being active waits for its store to
/// close before it exits regardless.
const REPLICA_CLOSE_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Loads the rules file, if the config names one, and starts its reload
/// task; the task ends when the returned guard is dropped.
async fn load_rules(config: &GatewayConfig) -> Result<LoadedRules> {
    let Some(settings) = &config.rules else {
        return Ok(LoadedRules::default());
    };
    let source = RulesSource::load(&settings.file)
        .await
        .map_err(|e| Error::Config(format!("rules: {e}")))?;
    check_region_indexes(config, &source.active.current())?;
    let active = source.active.clone();
    let watcher = tokio::spawn(source.watch(settings.reload_interval, |_| {}));
    let mut loaded = LoadedRules {
        rules: Some(active.clone()),
        roster: None,
        _watchers: vec![AbortOnDrop(watcher)],
    };
    if let Some(path) = &settings.roster {
        let roster =
            meridian_rules_source::RosterSource::load(path, config.region.as_str(), active)
                .await
                .map_err(|e| Error::Config(format!("rules.roster: {e}")))?;
        loaded.roster = Some(roster.active.clone());
        let watcher =
            tokio::spawn(roster.watch(config.region.to_string(), settings.reload_interval));
        loaded._watchers.push(AbortOnDrop(watcher));
    }
    Ok(loaded)
}

/// The rules and roster in force, and their reload tasks (which end when
/// this is dropped).
#[derive(Default)]
struct LoadedRules {
    rules: Option<Arc<ActiveRules>>,
    roster: Option<Arc<meridian_rules_source::ActiveRoster>>,
    _watchers: Vec<AbortOnDrop>,
}

/// The gateway's region order must give every region the epoch index the
/// rules give it: both encode owners in epochs.
fn check_region_indexes(config: &GatewayConfig, rules: &meridian_rules::Rules) -> Result<()> {
    for region in rules.regions() {
        match config.region_index(&region.id) {
            Some(index) if index == region.index => {}
            found => {
                return Err(Error::Config(format!(
                    "rules: region {} has epoch index {} in {} but {} in the gateway's regions list; make them agree",
                    region.id,
                    region.index,
                    settings_file(config),
                    found.map_or_else(|| "none".to_owned(), |i| i.to_string())
                )));
            }
        }
    }
    Ok(())
}

fn settings_file(config: &GatewayConfig) -> String {
    config
        .rules
        .as_ref()
        .map_or_else(String::new, |r| r.file.display().to_string())
}

/// How often mesh certificates are checked for a new version on disk.
pub const TLS_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Aborts a background task when its owner goes away.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves the gateway's services over an already open store (which stays
/// open afterwards): for callers that want the store's own counters.
pub async fn serve(
    config: &GatewayConfig,
    store: Store,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    clock: Arc<dyn Clock>,
) -> Result<()> {
    serve_listeners(
        config,
        store,
        Listeners {
            public: listener,
            mesh: None,
        },
        shutdown,
        clock,
    )
    .await
}

async fn serve_listeners(
    config: &GatewayConfig,
    store: Store,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
    clock: Arc<dyn Clock>,
) -> Result<()> {
    let Listeners {
        public: listener,
        mesh: mesh_listener,
    } = listeners;
    let local_index = config
        .region_index(&config.region)
        .ok_or_else(|| Error::Config(format!("region {} is not in regions", config.region)))?;
    let loaded_rules = load_rules(config).await?;
    let rules = loaded_rules.rules.clone();
    let (mesh, _tls_reload) = match &config.mesh {
        Some(settings) => {
            let tls = MeshTls::load(settings.tls.clone())
                .map_err(|e| Error::Tls(format!("mesh: {e}")))?;
            let reload = tls.spawn_reload(TLS_RELOAD_INTERVAL);
            let link = MeshLink::new(
                tls.clone(),
                settings.peers.clone(),
                settings.handoff_timeout,
            );
            let replication = ReplicationConfig::new(
                config.region.clone(),
                config.regions.clone(),
                settings.peers.clone(),
            );
            let replicator =
                Replicator::new(replication, store.clone(), tls.clone(), clock.clone())
                    .map_err(|e| Error::Config(format!("mesh: {e}")))?;
            (Some((tls, Arc::new(link), replicator)), Some(reload))
        }
        None => (None, None),
    };
    // Anti-entropy backs the streams up, and relays the events of a region
    // that is gone to the regions it never reached.
    let anti_entropy = mesh
        .as_ref()
        .map(|(_, _, replicator)| {
            AntiEntropy::new(
                replicator,
                AntiEntropyConfig::new(config.anti_entropy_interval),
            )
        })
        .transpose()
        .map_err(|e| Error::Config(format!("mesh: {e}")))?;
    // With a coordinator, the region's lease gates owner-scoped writes.
    let failover = match &config.coordinator {
        Some(settings) => {
            Some(failover::Failover::start(settings, config.region.clone(), clock.clone()).await?)
        }
        None => None,
    };
    let (stop_streams, stopping) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_streams.send(true);
    };
    // The config's metrics (tests), else the process's (`Telemetry::init`).
    let meter = match &config.metrics {
        Some(metrics) => metrics.meter("meridian-gateway"),
        None => meridian_telemetry::opentelemetry::global::meter("meridian-gateway"),
    };
    // Notifications: the region's outbox on the store's database.
    let notifier = open_notifier(config).await?;
    let api = TicketApi::new(context::ApiParts {
        region: config.region.clone(),
        region_index: local_index,
        store,
        clock,
        rules,
        roster: loaded_rules.roster.clone(),
        stopping: stopping.clone(),
        mesh: mesh.as_ref().map(|(_, link, _)| link.clone()),
        gate: failover.as_ref().map_or_else(
            || config.write_gate.clone(),
            |failover| failover.write_gate(),
        ),
        replicator: mesh.as_ref().map(|(_, _, replicator)| replicator.clone()),
        peer_tiers: config
            .mesh
            .as_ref()
            .map(|m| m.peer_durability_tiers.clone())
            .unwrap_or_default(),
        metrics: metrics::GatewayMetrics::new(&meter, &config.region),
        watch_caps: watch::WatchCaps::new(
            config.limits.watch_streams_per_principal_max,
            config.limits.watch_streams_max,
        ),
        watch_stall: config.limits.watch_stall_timeout,
        regions: config.regions.clone(),
        notifier: notifier.clone(),
    });
    let _observed = metrics::observe(
        &meter,
        &api,
        mesh.as_ref().map(|(_, _, replicator)| replicator.clone()),
        config.telemetry.queue_scan_interval,
    );
    let _conflict_watch = AbortOnDrop(tokio::spawn(conflicts::watch(api.clone())));
    let _idempotency_prune = AbortOnDrop(tokio::spawn(idempotency::prune(api.clone())));
    let _lease_task = failover.as_ref().map(|failover| {
        let link = mesh.as_ref().map(|(_, link, _)| link.clone());
        AbortOnDrop(tokio::spawn(failover.clone().run(
            api.clone(),
            link,
            stopping.clone(),
        )))
    });
    // Escalation and stranded-ticket alerts (escalation.rs), shared by the
    // sweep and the escalation scan.
    // A test may install its own target; otherwise they go through the
    // notification service.
    let sink = match config.rules.as_ref().map(|s| s.alerts.clone()) {
        Some(sink) if sink.is_installed() => sink,
        _ => {
            escalation::AlertSink::new(Arc::new(escalation::NotifierAlerts(api.notifier().clone())))
        }
    };
    let escalations = escalation::Escalations::new(sink);
    let _stranded_gauge = escalations.observe(&meter, &config.region);
    // Shift ends hand tickets to other regions: only with rules and a mesh.
    let _shift_task = match (&config.rules, &config.mesh) {
        (Some(settings), Some(_)) => Some(AbortOnDrop(tokio::spawn(shift::run(
            api.clone(),
            settings.shift_check_interval,
            settings.sweep_interval,
            escalations.clone(),
        )))),
        _ => None,
    };
    let _escalation_task = config.rules.as_ref().map(|settings| {
        AbortOnDrop(tokio::spawn(escalation::run(
            api.clone(),
            settings.sla_scan_interval,
            escalations.clone(),
        )))
    });
    // Volume-spike alerts follow the rules' [spike] table.
    let _spike_task = config.rules.as_ref().map(|settings| {
        AbortOnDrop(tokio::spawn(spike::run(
            api.clone(),
            settings.shift_check_interval,
        )))
    });
    let _notifier_task = notifier.is_enabled().then(|| {
        AbortOnDrop(tokio::spawn(notifications::run(
            api.clone(),
            config.notify.delivery.poll_interval,
        )))
    });
    let _delivery_task = notifier.is_enabled().then(|| {
        let metrics = meridian_notify::DeliveryMetrics::new(&meter, config.region.as_str());
        let delivery = notifier
            .clone()
            .deliver(config.notify.delivery, Some(metrics));
        AbortOnDrop(tokio::spawn(async move {
            if let Err(error) = delivery.await {
                tracing::error!(error = %error, "notification delivery stopped");
            }
        }))
    });
    // Mail: the support mailbox, replies and acknowledgements (mail.rs).
    let _mail = match &config.mail {
        Some(settings) => {
            Some(mail::start(api.clone(), settings.clone(), &config.store.url, &meter).await?)
        }
        None => None,
    };
    let _sla_monitor = config.rules.as_ref().map(|settings| {
        AbortOnDrop(tokio::spawn(sla::monitor(
            api.clone(),
            settings.sla_scan_interval,
        )))
    });
    let tickets = TicketServiceServer::new(api.clone())
        .max_decoding_message_size(config.limits.request_bytes_max)
        .max_encoding_message_size(service::RESPONSE_BYTES_MAX);
    let tickets = tonic::service::interceptor::InterceptedService::new(
        tickets,
        service::MeshRegions(Arc::new(config.regions.clone())),
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<TicketServiceServer<TicketApi>>().await;
    // Reflection in both versions: v1 for current tools, v1alpha for the
    // many clients that still speak only it (grpcio-reflection, older grpcurl).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(meridian_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Only what this port serves: the descriptor set also holds
            // services of other ports, which would answer UNIMPLEMENTED.
            .with_service_name("meridian.v1.TicketService")
            .with_service_name("meridian.v1.RegionLoadService")
            .with_service_name("meridian.v1.AgentService")
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

    let server = meridian_tls::with_http2_limits(Server::builder())
        .timeout(config.limits.request_timeout)
        .concurrency_limit_per_connection(config.limits.concurrency_per_connection_max);
    let public_tls = config.tls.as_ref().map(public_tls_config).transpose()?;
    let has_tls = public_tls.is_some();
    let local_addr = listener.local_addr()?;
    // Every TicketService call passes the token check first; health and
    // reflection stay open for probes and tools.
    // The keys' freshness shows in metrics and as the health of
    // `meridian.auth.Keys` (`meridian health --service meridian.auth.Keys`).
    let (auth, _jwks_reload, _key_health, _key_metrics) = match &config.auth {
        Some(settings) => {
            let (verifier, reload) = settings
                // Token lifetimes are real time, even under `up --speed`.
                .start_verifier(Arc::new(SystemClock))
                .map_err(|e| Error::Config(format!("auth: {e}")))?;
            let keys = verifier.keys().clone();
            let key_metrics = keys.observe(&meter);
            let key_health = AbortOnDrop(tokio::spawn(meridian_auth::report_key_health(
                keys,
                health.clone(),
            )));
            let layer = meridian_auth::AuthLayer::new(verifier, meridian_auth::gateway_policy());
            (layer, Some(reload), Some(key_health), Some(key_metrics))
        }
        None => {
            meridian_auth::warn_unauthenticated("gateway", local_addr);
            (meridian_auth::AuthLayer::disabled(), None, None, None)
        }
    };
    tracing::info!(region = %config.region, addr = %local_addr, tls = has_tls, auth = auth.is_enabled(), "gateway serving");
    // RED metrics outermost, so calls the token check refuses count too.
    use meridian_telemetry::opentelemetry::KeyValue;
    let rpc_metrics = |port: &'static str| {
        meridian_telemetry::RpcMetricsLayer::new(
            &meter,
            vec![
                KeyValue::new("meridian.region", config.region.to_string()),
                KeyValue::new("meridian.server", port),
            ],
        )
    };
    let public = server
        .layer(rpc_metrics("gateway"))
        .layer(meridian_proto::codec::OversizeLayer::new(
            config.limits.request_bytes_max,
            "limits.request_bytes_max",
        ))
        .layer(auth)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(tickets)
        .add_service(
            meridian_proto::v1::region_load_service_server::RegionLoadServiceServer::new(
                load::LoadApi::new(api.clone()),
            ),
        )
        .add_service(
            meridian_proto::v1::agent_service_server::AgentServiceServer::new(
                people::AgentApi::new(api.clone()),
            ),
        )
        // TLS, the HTTP/2 preface within the handshake timeout, and
        // connections per address; Nagle off on every accepted socket.
        .serve_with_incoming_shutdown(
            meridian_tls::public_incoming(listener, public_tls, config.limits.public),
            shutdown,
        );
    match (mesh, mesh_listener) {
        (Some((tls, _, replicator)), Some(mesh_listener)) => {
            let mesh_addr = mesh_listener.local_addr()?;
            tracing::info!(region = %config.region, addr = %mesh_addr, identity = %tls.identity(), "mesh serving");
            let stopped = |mut stopping: tokio::sync::watch::Receiver<bool>| async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            // No server-wide timeout here: replication streams live as long
            // as the connection; each unary call carries its own deadline.
            let internal = meridian_tls::with_http2_limits(Server::builder())
                .layer(rpc_metrics("mesh"))
                .add_service(MeshServiceServer::new(
                    MeshApi::new(api.clone())
                        .with_failover(failover.clone(), Some(replicator.clone())),
                ))
                .add_service(replicator.service())
                .add_optional_service(anti_entropy.as_ref().map(AntiEntropy::service))
                .serve_with_incoming_shutdown(
                    tls.incoming(mesh_listener),
                    stopped(stopping.clone()),
                );
            let repairing =
                anti_entropy.map(|anti_entropy| anti_entropy.run(stopped(stopping.clone())));
            let repairing = async move {
                if let Some(repairing) = repairing {
                    repairing.await;
                }
            };
            let replicating = replicator.run(stopped(stopping));
            let (public, internal, (), ()) = tokio::join!(public, internal, replicating, repairing);
            public?;
            internal?;
        }
        (Some(_), None) => {
            return Err(Error::Config(
                "mesh is configured but no mesh listener was given".into(),
            ));
        }
        (None, _) => public.await?,
    }
    tracing::info!(region = %config.region, "gateway stopped");
    Ok(())
}

/// The notifier of `[notify]` and the legacy `rules.webhooks`; disabled
/// (opening nothing) without targets.
async fn open_notifier(config: &GatewayConfig) -> Result<meridian_notify::Notifier> {
    let legacy = config.rules.as_ref().map_or(&[][..], |r| &r.webhooks[..]);
    let targets = config.notify.all_targets(legacy)?;
    meridian_notify::Notifier::open(&config.store.url, targets, config.notify.retry)
        .await
        .map_err(|e| Error::Config(format!("notify: {e}")))
}

/// The public port's rustls configuration from `[tls]`.
fn public_tls_config(tls: &TlsFiles) -> Result<Arc<meridian_tls::rustls::ServerConfig>> {
    let (cert, key) = load_identity(tls)?;
    meridian_tls::public_server_config(&cert, &key)
        .map_err(|e| Error::Tls(format!("{}: {e}", tls.cert.display())))
}

fn load_identity(tls: &TlsFiles) -> Result<(Vec<u8>, Vec<u8>)> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|e| Error::Tls(format!("{what} {}: {e}", path.display())))
    };
    let cert = read(&tls.cert, "tls.cert")?;
    if !cert.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(Error::Tls(format!(
            "tls.cert {}: not a PEM certificate",
            tls.cert.display()
        )));
    }
    let key = read(&tls.key, "tls.key")?;
    if !key.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(Error::Tls(format!(
            "tls.key {}: not a PEM private key",
            tls.key.display()
        )));
    }
    Ok((cert, key))
}
