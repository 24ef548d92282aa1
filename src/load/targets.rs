//! What the load generator drives: the gateway (spawned in this process or
//! already running), and the bare baselines it is compared with in the same
//! run: a tonic unary call that does nothing, a single-row sqlx insert, and
//! the disk's write+fsync.
//!
//! Every address is on loopback: a target that resolves elsewhere is refused.

use std::{
    net::{Ipv4Addr, SocketAddr},
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    str::FromStr as _,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use meridian_core::{Epoch, HlcTimestamp, NewTicket, Ownership, RegionId, Ticket, TicketId};
use meridian_gateway::{GatewayConfig, SystemClock};
use meridian_proto::v1::{CreateTicketRequest, ticket_service_client::TicketServiceClient};
use meridian_store::{Store, StoreConfig, WriteMeta, WriterStats};
use sqlx::{
    Connection as _, Executor as _, PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Server, server::TcpIncoming},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{SpawnBackend, driver::Op};

/// How long connecting to anything may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a spawned server may take to drain and stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Same as the store's, so the bare insert waits for SQLite's lock the way
/// the store would.
const SQLITE_BUSY_TIMEOUT: Duration =
    Duration::from_millis(meridian_store::SQLITE_BUSY_TIMEOUT_MS as u64);
/// The body of every ticket and baseline row: a short support request.
const BODY: &str = "The export to CSV stops at 65,536 rows and the last column is cut. \
                    Steps: open the report, choose Export, pick CSV. Expected all rows.";

// ---- targets ----

/// Refuses a gRPC URL whose host is not a loopback address: the load
/// generator never sends traffic off this machine. An https URL (`meridian
/// up` with auth) is checked against `ca`.
pub(crate) async fn require_loopback_url(url: &str, ca: Option<&Path>) -> anyhow::Result<Endpoint> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| anyhow!("--target {url:?} is not a URL: {e}"))?;
    let uri = endpoint.uri().clone();
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            let Some(ca) = ca else {
                bail!("--target {url} is https: pass --ca FILE (the CA's PEM; MERIDIAN_CA)")
            };
            let pem =
                std::fs::read(ca).with_context(|| format!("cannot read --ca {}", ca.display()))?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .context("TLS settings refused")?;
        }
        _ => {
            bail!("--target {url:?}: http:// or https:// on loopback (e.g. http://127.0.0.1:50051)")
        }
    }
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("--target {url:?} has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    require_loopback_host("--target", host, port).await?;
    Ok(endpoint)
}

/// One `CreateTicket` before any measuring, so that a gateway that refuses
/// the caller (no token, an expired one, a role or region it may not
/// create for) stops the run with the gateway's own reason, instead of a
/// table of failed calls. Other failures are left to the rounds, which
/// count them.
pub(crate) async fn check_access(
    channel: Channel,
    token: meridian_auth::BearerToken,
    url: &str,
) -> anyhow::Result<()> {
    let mut client = TicketServiceClient::with_interceptor(channel, token);
    match client
        .create_ticket(create_request("load-preflight@example.com"))
        .await
    {
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ) =>
        {
            bail!(
                "{url} refused CreateTicket: {} (pass --token, or MERIDIAN_TOKEN: `source DATA_DIR/env` after `meridian up`)",
                status_text(status)
            )
        }
        _ => Ok(()),
    }
}

async fn require_loopback_host(what: &str, host: &str, port: u16) -> anyhow::Result<()> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("{what}: cannot resolve {host:?}"))?
        .collect();
    if addrs.is_empty() || !addrs.iter().all(|addr| addr.ip().is_loopback()) {
        bail!(
            "{what}: {host:?} is not a loopback address; the load generator only drives servers on this machine"
        );
    }
    Ok(())
}

/// Opens `count` HTTP/2 connections to `endpoint`.
pub(crate) async fn connect(endpoint: &Endpoint, count: u32) -> anyhow::Result<Vec<Channel>> {
    let endpoint = endpoint
        .clone()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let mut channels = Vec::new();
    for _ in 0..count {
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("cannot connect to {}", endpoint.uri()))?,
        );
    }
    Ok(channels)
}

async fn loopback_listener() -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("cannot bind a loopback port")?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

fn http_endpoint(addr: SocketAddr) -> anyhow::Result<Endpoint> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| anyhow!("bad endpoint for {addr}: {e}"))
}

/// A server task of ours and the way to stop it.
struct Running {
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(mut self, what: &str) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            // The server may have stopped on its own; its result says why.
            let _ = shutdown.send(());
        }
        match tokio::time::timeout(STOP_TIMEOUT, &mut self.task).await {
            Ok(joined) => joined.with_context(|| format!("the {what} task failed"))?,
            Err(_) => {
                self.task.abort();
                bail!(
                    "the {what} did not stop within {} s",
                    STOP_TIMEOUT.as_secs()
                )
            }
        }
    }
}

/// The "echo" floor: a tonic server with only `grpc.health.v1` on it. A
/// `Health/Check` does no work but decode, look up one map entry, and
/// encode, so it measures tonic, HTTP/2 and loopback TCP and nothing else.
pub(crate) struct EchoServer {
    pub endpoint: Endpoint,
    running: Running,
}

impl EchoServer {
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let (listener, addr) = loopback_listener().await?;
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (shutdown, stopped) = oneshot::channel::<()>();
        // What `Server::serve` would do with an address: TCP_NODELAY on.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(async move {
            Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
                .context("echo server")
        });
        Ok(Self {
            endpoint: http_endpoint(addr)?,
            running: Running {
                shutdown: Some(shutdown),
                task,
            },
        })
    }

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.running.stop("echo server").await
    }
}

/// A gateway in this process, over a store we hold too (for its counters).
pub(crate) struct SpawnedGateway {
    pub endpoint: Endpoint,
    pub store: Store,
    running: Running,
}

impl SpawnedGateway {
    pub(crate) async fn start(
        store_config: StoreConfig,
        batch_max: Option<usize>,
    ) -> anyhow::Result<Self> {
        let region = RegionId::new("us-east").context("region id")?;
        let (listener, addr) = loopback_listener().await?;
        let mut config =
            GatewayConfig::new(region.clone(), vec![region.clone()], addr, store_config);
        if let Some(batch_max) = batch_max {
            config.store.batch_max = batch_max;
        }
        let store = Store::open(&config.store, &region)
            .await
            .context("cannot open the gateway's store")?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let served = store.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            meridian_gateway::serve(&config, served, listener, shutdown, Arc::new(SystemClock))
                .await
                .context("gateway")
        });
        Ok(Self {
            endpoint: http_endpoint(addr)?,
            store,
            running: Running {
                shutdown: Some(shutdown),
                task,
            },
        })
    }

    pub(crate) fn writer_stats(&self) -> WriterStats {
        self.store.writer_stats()
    }

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let stopped = self.running.stop("gateway").await;
        self.store.close().await;
        stopped
    }
}

// ---- where the data lives ----

/// A directory under the system's temporary directory, removed on drop.
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("meridian-load-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the load test's temporary directory");
        }
    }
}

/// The database behind a spawned gateway and the bare insert baseline.
pub(crate) enum Backing {
    /// Files in a temporary directory: the gateway's store and the
    /// baseline's database are separate files side by side.
    Sqlite { dir: TempDir },
    /// A fresh schema of `DATABASE_URL`, dropped afterwards.
    Postgres {
        admin_url: String,
        schema: String,
        url: String,
        durability: String,
    },
}

impl Backing {
    pub(crate) async fn create(backend: SpawnBackend) -> anyhow::Result<Self> {
        match backend {
            SpawnBackend::Sqlite => Ok(Backing::Sqlite {
                dir: TempDir::new()?,
            }),
            SpawnBackend::Postgres => {
                let admin_url = std::env::var("DATABASE_URL").map_err(|_| {
                    anyhow!("--spawn postgres needs DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test)")
                })?;
                let options = PgConnectOptions::from_str(&admin_url)
                    .context("DATABASE_URL is not a PostgreSQL URL")?;
                let host = options.get_host().to_owned();
                // A Unix socket path is on this machine by definition.
                if !host.starts_with('/') {
                    require_loopback_host("DATABASE_URL", &host, options.get_port()).await?;
                }
                let schema = format!("load_{}", uuid::Uuid::now_v7().simple());
                let mut admin = connect_admin(&admin_url).await?;
                let (fsync, synchronous_commit, wal_sync_method): (String, String, String) =
                    sqlx::query_as(
                        "SELECT current_setting('fsync'), current_setting('synchronous_commit'), \
                     current_setting('wal_sync_method')",
                    )
                    .fetch_one(&mut admin)
                    .await
                    .context("cannot read the server's durability settings")?;
                let durability = format!(
                    "fsync={fsync}, synchronous_commit={synchronous_commit}, wal_sync_method={wal_sync_method}"
                );
                admin
                    .execute(format!("CREATE SCHEMA {schema}").as_str())
                    .await
                    .context("cannot create a schema")?;
                admin
                    .close()
                    .await
                    .context("closing the admin connection")?;
                let separator = if admin_url.contains('?') { '&' } else { '?' };
                let url = format!("{admin_url}{separator}options=-c%20search_path%3D{schema}");
                Ok(Backing::Postgres {
                    admin_url,
                    schema,
                    url,
                    durability,
                })
            }
        }
    }

    /// What an acknowledged write survives, in the database's own words.
    pub(crate) fn durability(&self) -> String {
        match self {
            Backing::Sqlite { .. } => {
                "SQLite WAL, synchronous=FULL (each commit is fdatasync'ed)".to_owned()
            }
            Backing::Postgres { durability, .. } => format!("PostgreSQL {durability}"),
        }
    }

    pub(crate) fn backend(&self) -> SpawnBackend {
        match self {
            Backing::Sqlite { .. } => SpawnBackend::Sqlite,
            Backing::Postgres { .. } => SpawnBackend::Postgres,
        }
    }

    /// The gateway's store: SQLite with the store's defaults (WAL,
    /// `synchronous=FULL`), or the fresh schema.
    pub(crate) fn store_config(&self) -> StoreConfig {
        match self {
            Backing::Sqlite { dir } => StoreConfig::sqlite_file(&dir.path().join("gateway.db")),
            Backing::Postgres { url, .. } => StoreConfig::new(url.clone()),
        }
    }

    /// Where the fsync probe writes: the SQLite files' directory, or the
    /// system's temporary directory.
    pub(crate) fn scratch_dir(&self) -> Option<&Path> {
        match self {
            Backing::Sqlite { dir } => Some(dir.path()),
            Backing::Postgres { .. } => None,
        }
    }

    /// Removes what [`Backing::create`] made. The SQLite directory goes when
    /// dropped; the PostgreSQL schema is dropped here.
    pub(crate) async fn remove(self) -> anyhow::Result<()> {
        match self {
            Backing::Sqlite { dir } => {
                drop(dir);
                Ok(())
            }
            Backing::Postgres {
                admin_url, schema, ..
            } => {
                let drop_schema = async {
                    let mut admin = connect_admin(&admin_url).await?;
                    admin
                        .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
                        .await
                        .with_context(|| format!("cannot drop schema {schema}"))?;
                    admin
                        .close()
                        .await
                        .context("closing the admin connection")?;
                    Ok::<_, anyhow::Error>(())
                };
                tokio::time::timeout(STOP_TIMEOUT, drop_schema)
                    .await
                    .map_err(|_| {
                        anyhow!(
                            "dropping schema {schema} took over {} s; drop it by hand",
                            STOP_TIMEOUT.as_secs()
                        )
                    })?
            }
        }
    }
}

async fn connect_admin(url: &str) -> anyhow::Result<PgConnection> {
    tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url))
        .await
        .map_err(|_| {
            anyhow!(
                "no answer from the DATABASE_URL server within {} s",
                CONNECT_TIMEOUT.as_secs()
            )
        })?
        .context("cannot connect to DATABASE_URL")
}

// ---- the operations ----

/// `CreateTicket` on a gateway.
pub(crate) struct CreateOp {
    client: TicketServiceClient<InterceptedService<Channel, meridian_auth::BearerToken>>,
    customer: String,
}

impl CreateOp {
    /// Every call carries `token` (none for a spawned gateway, which has no
    /// `[auth]`).
    pub(crate) fn new(channel: Channel, worker: u32, token: meridian_auth::BearerToken) -> Self {
        Self {
            client: TicketServiceClient::with_interceptor(channel, token),
            customer: format!("load-{worker}@example.com"),
        }
    }
}

impl Op for CreateOp {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        let request = create_request(&self.customer);
        async move {
            let response = self
                .client
                .create_ticket(request)
                .await
                .map_err(status_text)?
                .into_inner();
            match response.ticket {
                Some(_) if response.origin_seq > 0 => Ok(()),
                _ => Err("CreateTicket answered without a ticket or a sequence number".to_owned()),
            }
        }
    }
}

fn create_request(customer: &str) -> CreateTicketRequest {
    CreateTicketRequest {
        subject: "CSV export truncated".to_owned(),
        body: BODY.to_owned(),
        customer: customer.to_owned(),
        skills: vec!["billing".to_owned()],
        language: "en".to_owned(),
        ..Default::default()
    }
}

/// `Store::create_ticket` called in this process, with the ticket built as
/// the gateway builds it: the store and its writer without gRPC, so the
/// difference to [`CreateOp`] is what the RPC layer costs.
pub(crate) struct StoreOp {
    store: Store,
    owner: Ownership,
    request: CreateTicketRequest,
    counter: u16,
}

impl StoreOp {
    pub(crate) fn new(gateway: &SpawnedGateway) -> anyhow::Result<Self> {
        let region = gateway.store.local_region().clone();
        let owner = Ownership::new(region, 0, Epoch::initial(0))
            .context("the spawned gateway's ownership")?;
        Ok(Self {
            store: gateway.store.clone(),
            owner,
            request: create_request("load@example.com"),
            counter: 0,
        })
    }

    pub(crate) fn for_worker(&self, worker: u32) -> Self {
        Self {
            store: self.store.clone(),
            owner: self.owner.clone(),
            request: create_request(&format!("load-{worker}@example.com")),
            counter: 0,
        }
    }
}

impl Op for StoreOp {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        let at = jiff::Timestamp::now();
        self.counter = self.counter.wrapping_add(1);
        let hlc_time = HlcTimestamp::new(
            u64::try_from(at.as_millisecond()).unwrap_or(0),
            self.counter,
        );
        let entropy = *uuid::Uuid::now_v7().as_bytes();
        let mut random = [0u8; 10];
        random.copy_from_slice(&entropy[6..]);
        let ticket = NewTicket::try_from(self.request.clone())
            .map_err(|e| e.to_string())
            .and_then(|new| {
                Ticket::create(TicketId::new_v7(at, random), new, self.owner.clone(), at)
                    .map_err(|e| e.to_string())
            });
        let store = self.store.clone();
        async move {
            store
                .create_ticket(
                    ticket?,
                    WriteMeta {
                        hlc_time,
                        traceparent: None,
                        at,
                        actor: None,
                    },
                )
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    }
}

/// `grpc.health.v1.Health/Check` on the echo server.
pub(crate) struct EchoOp {
    client: HealthClient<Channel>,
}

impl EchoOp {
    pub(crate) fn new(channel: Channel) -> Self {
        Self {
            client: HealthClient::new(channel),
        }
    }
}

impl Op for EchoOp {
    async fn call(&mut self) -> Result<(), String> {
        let response = self
            .client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(status_text)?;
        if response.into_inner().status == ServingStatus::Serving as i32 {
            Ok(())
        } else {
            Err("health check answered other than SERVING".to_owned())
        }
    }
}

fn status_text(status: tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// The bare sqlx baseline: one small row per `INSERT`, each its own
/// implicit transaction (so one commit, and on SQLite one fsync, per row).
#[derive(Clone)]
pub(crate) enum InsertPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

const INSERT_TABLE: &str = "CREATE TABLE IF NOT EXISTS load_insert (id TEXT PRIMARY KEY, body TEXT NOT NULL, created_at_ms BIGINT NOT NULL)";
const INSERT_ROW: &str = "INSERT INTO load_insert (id, body, created_at_ms) VALUES ($1, $2, $3)";

impl InsertPool {
    /// A pool of `connections` to the same kind of database as the
    /// gateway's: a SQLite file (WAL, `synchronous=FULL`, the store's busy
    /// timeout) or the PostgreSQL schema.
    pub(crate) async fn open(backing: &Backing, connections: u32) -> anyhow::Result<Self> {
        let pool = match backing {
            Backing::Sqlite { dir } => {
                let options = SqliteConnectOptions::new()
                    .filename(dir.path().join("insert.db"))
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT);
                let pool = SqlitePoolOptions::new()
                    .max_connections(connections)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect_with(options)
                    .await
                    .context("cannot open the baseline SQLite database")?;
                InsertPool::Sqlite(pool)
            }
            Backing::Postgres { url, .. } => {
                let pool = PgPoolOptions::new()
                    .max_connections(connections)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect(url)
                    .await
                    .context("cannot connect the baseline pool to DATABASE_URL")?;
                InsertPool::Postgres(pool)
            }
        };
        match &pool {
            InsertPool::Sqlite(p) => p.execute(INSERT_TABLE).await.map(drop),
            InsertPool::Postgres(p) => p.execute(INSERT_TABLE).await.map(drop),
        }
        .context("cannot create the baseline table")?;
        Ok(pool)
    }

    pub(crate) async fn close(&self) {
        match self {
            InsertPool::Sqlite(p) => p.close().await,
            InsertPool::Postgres(p) => p.close().await,
        }
    }
}

impl Op for InsertPool {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        let id = uuid::Uuid::now_v7().to_string();
        let now_ms = jiff::Timestamp::now().as_millisecond();
        async move {
            match self {
                InsertPool::Sqlite(pool) => sqlx::query(INSERT_ROW)
                    .bind(id)
                    .bind(BODY)
                    .bind(now_ms)
                    .execute(&*pool)
                    .await
                    .map(drop),
                InsertPool::Postgres(pool) => sqlx::query(INSERT_ROW)
                    .bind(id)
                    .bind(BODY)
                    .bind(now_ms)
                    .execute(&*pool)
                    .await
                    .map(drop),
            }
            .map_err(|e| e.to_string())
        }
    }
}

/// The disk's floor for one commit per write: overwrite one 4 KiB block of a
/// preallocated file (as SQLite reuses its WAL) and `fdatasync` it, the call
/// SQLite and PostgreSQL make to commit on Linux.
pub(crate) struct FsyncProbe {
    file: std::fs::File,
    next_block: u64,
}

const FSYNC_BLOCK: usize = 4096;
const FSYNC_FILE_BLOCKS: u64 = 256;

impl FsyncProbe {
    pub(crate) fn create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("fsync-probe.bin");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let zeros = vec![0u8; FSYNC_BLOCK];
        for block in 0..FSYNC_FILE_BLOCKS {
            file.write_all_at(&zeros, block * FSYNC_BLOCK as u64)?;
        }
        file.sync_all()
            .with_context(|| format!("cannot fsync {}", path.display()))?;
        Ok(Self {
            file,
            next_block: 0,
        })
    }

    pub(crate) fn write_and_sync(&mut self) -> Result<(), String> {
        let mut block = [0u8; FSYNC_BLOCK];
        block[..8].copy_from_slice(&self.next_block.to_le_bytes());
        let offset = (self.next_block % FSYNC_FILE_BLOCKS) * FSYNC_BLOCK as u64;
        self.next_block += 1;
        self.file
            .write_all_at(&block, offset)
            .map_err(|e| format!("write: {e}"))?;
        self.file.sync_data().map_err(|e| format!("fdatasync: {e}"))
    }
}
