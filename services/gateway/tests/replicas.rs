//! Two `meridian-gateway` processes for one region on one PostgreSQL
//! database: exactly one is active, the other a standby that refuses writes
//! with the reason; killing the active (`kill -9`) under load promotes the
//! standby within a bounded time, and the region's log stays one dense,
//! unique sequence holding every acknowledged write exactly once. A stalled
//! former active whose lock session died cannot commit beside its successor.
//!
//! Real processes on loopback. The tests run whenever `DATABASE_URL` is set
//! and say loudly when it is not; under `MERIDIAN_REQUIRE_ALL=1` an absent
//! server fails them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};
use meridian_test_support::{Backing, TestDatabase};
use sqlx::{AnyConnection, Connection, Row};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_meridian-gateway");
const TICKETS: &str = "meridian.v1.TicketService";
/// The most a standby may take to become active once the active is killed:
/// the server releases the lock when the socket closes, and a standby
/// retries every 500 ms; the rest is slack for a loaded 2-core machine.
const FAILOVER_MAX: Duration = Duration::from_secs(10);
/// The most a gateway may take to start serving at all.
const START_MAX: Duration = Duration::from_secs(30);

/// One gateway process; killed when dropped.
struct Replica {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Replica {
    fn start(name: &'static str, dir: &Path, database_url: &str) -> Replica {
        let addr = free_port();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "region = \"us-east\"\nregions = [\"us-east\", \"eu-west\", \"apac-south\"]\nlisten = \"{addr}\"\n\n\
                 [database]\nurl = \"{database_url}\"\n"
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(GATEWAY);
        command
            .arg("--config")
            .arg(&config)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null());
        for (var, _) in meridian_gateway::config::ENV_OVERRIDES {
            command.env_remove(var);
        }
        command
            .env_remove("MERIDIAN_CONFIG")
            .env("RUST_LOG", "info");
        let child = command.spawn().expect("start meridian-gateway");
        Replica {
            name,
            child,
            addr,
            log,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The health of `service` ("" is the process), or `None` when the
    /// gateway does not answer.
    async fn health(&self, service: &str) -> Option<ServingStatus> {
        let channel = Channel::from_shared(self.url())
            .unwrap()
            .connect_timeout(Duration::from_millis(300));
        let channel = tokio::time::timeout(Duration::from_millis(500), channel.connect())
            .await
            .ok()?
            .ok()?;
        let mut client = HealthClient::new(channel);
        let check = client.check(HealthCheckRequest {
            service: service.into(),
        });
        let answer = tokio::time::timeout(Duration::from_millis(500), check)
            .await
            .ok()?
            .ok()?;
        ServingStatus::try_from(answer.into_inner().status).ok()
    }

    async fn wait_health(
        &self,
        service: &str,
        wanted: ServingStatus,
        within: Duration,
    ) -> Duration {
        let started = Instant::now();
        loop {
            if self.health(service).await == Some(wanted) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "{}: {service:?} not {wanted:?} within {within:?}; its log:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {}", self.child.id());
    }

    /// Waits for the process to end by itself; its exit status.
    async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < within,
                "{} still running after {within:?}:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

fn create_request(subject: String) -> v1::CreateTicketRequest {
    v1::CreateTicketRequest {
        subject,
        body: "it broke".into(),
        customer: "acme".into(),
        tier: "premium".into(),
        skills: vec!["networking".into()],
        language: "en".into(),
        residency: Vec::new(),
        priority: v1::Priority::Normal as i32,
        idempotency_key: String::new(),
    }
}

async fn client(url: &str) -> Option<TicketServiceClient<Channel>> {
    let channel = Channel::from_shared(url.to_owned())
        .unwrap()
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(5));
    let channel = tokio::time::timeout(Duration::from_millis(500), channel.connect())
        .await
        .ok()?
        .ok()?;
    Some(TicketServiceClient::new(channel))
}

/// What the clients were told was durable: ticket id → the origin_seq of
/// its creation, note id → the origin_seq of the note.
#[derive(Default)]
struct Acked {
    tickets: BTreeMap<String, u64>,
    notes: BTreeMap<String, u64>,
}

/// A client that creates a ticket and adds a note to it, over and over,
/// through whichever replica answers, until `stop`. A refused or failed
/// call was not acknowledged and is simply tried again with a new ticket;
/// only answers count.
async fn load(worker: usize, urls: Vec<String>, stop: Arc<AtomicBool>, acked: Arc<Mutex<Acked>>) {
    let mut clients: Vec<Option<TicketServiceClient<Channel>>> = vec![None; urls.len()];
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut done = false;
        for (i, url) in urls.iter().enumerate() {
            if clients[i].is_none() {
                clients[i] = client(url).await;
            }
            let Some(client) = clients[i].as_mut() else {
                continue;
            };
            n += 1;
            match client
                .create_ticket(create_request(format!("load {worker}-{n}")))
                .await
            {
                Ok(created) => {
                    let created = created.into_inner();
                    let ticket = created.ticket.unwrap();
                    acked
                        .lock()
                        .unwrap()
                        .tickets
                        .insert(ticket.id.clone(), created.origin_seq);
                    let note = v1::AddNoteRequest {
                        ticket_id: ticket.id,
                        author: "agent".into(),
                        body: format!("n {n}"),
                        visibility: 0,
                        note_id: String::new(),
                    };
                    if let Ok(added) = client.add_note(note).await {
                        let added = added.into_inner();
                        acked
                            .lock()
                            .unwrap()
                            .notes
                            .insert(added.note.unwrap().id, added.origin_seq);
                    }
                    done = true;
                    break;
                }
                Err(status)
                    if status.code() == Code::Unavailable
                        && status.message().contains("standby replica") => {}
                Err(_) => clients[i] = None,
            }
        }
        if !done {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn connect(database_url: &str) -> AnyConnection {
    AnyConnection::connect(database_url).await.unwrap()
}

/// The region's log, in order.
async fn local_log(db: &mut AnyConnection) -> Vec<(u64, String, String)> {
    sqlx::query("SELECT origin_seq, ticket_id, kind FROM events WHERE origin_region = 'us-east' ORDER BY origin_seq")
        .fetch_all(db)
        .await
        .unwrap()
        .iter()
        .map(|row| {
            (row.get::<i64, _>(0) as u64, row.get::<String, _>(1), row.get::<String, _>(2))
        })
        .collect()
}

async fn writer_generation(db: &mut AnyConnection) -> i64 {
    sqlx::query("SELECT writer_generation FROM origins WHERE region = 'us-east'")
        .fetch_one(db)
        .await
        .unwrap()
        .get(0)
}

async fn start_pair(dir: &Path, url: &str) -> (Replica, Replica) {
    let a = Replica::start("replica-a", dir, url);
    a.wait_health(TICKETS, ServingStatus::Serving, START_MAX)
        .await;
    let b = Replica::start("replica-b", dir, url);
    // The standby is alive but not ready.
    b.wait_health("", ServingStatus::Serving, START_MAX).await;
    assert_eq!(
        b.health(TICKETS).await,
        Some(ServingStatus::NotServing),
        "{}",
        b.log_text()
    );
    assert_eq!(a.health(TICKETS).await, Some(ServingStatus::Serving));
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_active_promotes_the_standby_without_losing_or_doubling_a_write() {
    let Some(database) = TestDatabase::new(Backing::Postgres).await else {
        return;
    };
    let url = database.config().url;
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = start_pair(dir.path(), &url).await;

    // The standby refuses writes and says why.
    let mut standby = client(&b.url()).await.unwrap();
    let refused = standby
        .create_ticket(create_request("to the standby".into()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(
        refused.message(),
        "standby replica of region us-east: another replica holds the region"
    );

    // Load through whichever replica is active, from four clients.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Acked::default()));
    let workers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(load(w, vec![a.url(), b.url()], stop.clone(), acked.clone())))
        .collect();
    let started = Instant::now();
    while acked.lock().unwrap().tickets.len() < 100 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the active replica did not take load"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // kill -9 mid-load; the standby must take over in bounded time.
    let before_kill = acked.lock().unwrap().tickets.len();
    let killed_at = Instant::now();
    a.child.kill().unwrap();
    a.wait_exit(Duration::from_secs(5)).await;
    b.wait_health(TICKETS, ServingStatus::Serving, FAILOVER_MAX)
        .await;
    let failover = killed_at.elapsed();
    // The first write the new active acknowledges.
    while acked.lock().unwrap().tickets.len() < before_kill + 100 {
        assert!(
            killed_at.elapsed() < FAILOVER_MAX + Duration::from_secs(20),
            "the new active took no load"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let (tickets_acked, notes_acked) = {
        let acked = acked.lock().unwrap();
        (acked.tickets.len(), acked.notes.len())
    };
    eprintln!(
        "replicas: kill -9 to standby serving: {} ms; acknowledged {tickets_acked} creations ({before_kill} before \
         the kill), {notes_acked} notes",
        failover.as_millis(),
    );
    assert!(
        b.log_text().contains("standby promoted"),
        "{}",
        b.log_text()
    );

    // The database: one dense, unique log; every acknowledged write in it
    // exactly once, at the sequence number its client was told.
    let mut db = connect(&url).await;
    let log = local_log(&mut db).await;
    let seqs: Vec<u64> = log.iter().map(|(seq, _, _)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "origin_seq is gapless and unique"
    );
    let head: i64 = sqlx::query("SELECT last_seq FROM origins WHERE region = 'us-east'")
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get(0);
    assert_eq!(head as usize, log.len());
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    for (ticket_id, seq) in &acked.tickets {
        let created: Vec<_> = log
            .iter()
            .filter(|(_, id, kind)| id == ticket_id && kind == "ticket_created")
            .collect();
        assert_eq!(created.len(), 1, "ticket {ticket_id} created once");
        assert_eq!(
            created[0].0, *seq,
            "ticket {ticket_id} at the acknowledged origin_seq"
        );
        let rows: i64 = sqlx::query("SELECT COUNT(*) FROM tickets WHERE ticket_id = $1")
            .bind(ticket_id)
            .fetch_one(&mut db)
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 1);
    }
    for (note_id, seq) in &acked.notes {
        let rows: i64 = sqlx::query("SELECT COUNT(*) FROM notes WHERE note_id = $1")
            .bind(note_id)
            .fetch_one(&mut db)
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 1, "note {note_id} stored once");
        assert!(
            log.iter()
                .any(|(s, _, kind)| s == seq && kind == "note_added"),
            "note {note_id} at origin_seq {seq}"
        );
    }
    // Every creation in the log is one some client was told about, or one
    // whose answer was lost with the killed process: never a duplicate.
    let creations = log
        .iter()
        .filter(|(_, _, kind)| kind == "ticket_created")
        .count();
    assert!(creations >= acked.tickets.len());
    assert!(
        creations - acked.tickets.len() <= 4,
        "at most one unanswered creation per client at the kill"
    );
    // Two processes became active, one after the other.
    assert_eq!(writer_generation(&mut db).await, 2);
    let _ = db.close().await;
    drop(b);
    database.drop_now().await;
}

/// The advisory lock key of the region, as the store computes it, split the
/// way `pg_locks` shows it.
const LOCK_HOLDER_PID: &str = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
     AND ((classid::bigint << 32) | objid::bigint) = \
     hashtextextended('meridian.region-writer/' || current_database() || '/' || current_schema() || '/us-east', 0)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_former_active_cannot_commit_beside_its_successor() {
    let Some(database) = TestDatabase::new(Backing::Postgres).await else {
        return;
    };
    let url = database.config().url;
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = start_pair(dir.path(), &url).await;
    let mut to_a = client(&a.url()).await.unwrap();
    let first = to_a
        .create_ticket(create_request("before the stall".into()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.origin_seq, 1);

    // Freeze the active, and end its lock session as a network partition
    // between it and the database would: its other connections live on.
    a.signal("STOP");
    let mut db = connect(&url).await;
    let pid: i32 = sqlx::query(LOCK_HOLDER_PID)
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get(0);
    let ended: bool = sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get(0);
    assert!(ended);
    // A write the frozen process will find waiting when it wakes.
    let stalled = tokio::spawn(async move {
        to_a.create_ticket(create_request("stalled write".into()))
            .await
    });
    b.wait_health(TICKETS, ServingStatus::Serving, FAILOVER_MAX)
        .await;
    let mut to_b = client(&b.url()).await.unwrap();
    let next = to_b
        .create_ticket(create_request("after the takeover".into()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next.origin_seq, 2,
        "the successor continues the log from the database"
    );
    assert_eq!(writer_generation(&mut db).await, 2);

    // The former active wakes: it must neither commit nor keep serving.
    a.signal("CONT");
    let status = a.wait_exit(Duration::from_secs(15)).await;
    assert!(
        !status.success(),
        "the superseded replica reports failure:\n{}",
        a.log_text()
    );
    let log = a.log_text();
    assert!(
        log.contains("lost the writer lock of region us-east")
            || log.contains("another replica became the active writer"),
        "{log}"
    );
    if let Ok(Ok(answer)) = stalled.await {
        panic!(
            "the stalled write was acknowledged by the superseded replica: {:?}",
            answer.into_inner()
        );
    }
    let stalled_rows: i64 =
        sqlx::query("SELECT COUNT(*) FROM tickets WHERE subject = 'stalled write'")
            .fetch_one(&mut db)
            .await
            .unwrap()
            .get(0);
    assert_eq!(
        stalled_rows, 0,
        "nothing of the former active committed after the takeover"
    );
    let after = to_b
        .create_ticket(create_request("still writing".into()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.origin_seq, 3);
    let seqs: Vec<u64> = local_log(&mut db)
        .await
        .iter()
        .map(|(seq, _, _)| *seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let _ = db.close().await;
    drop(b);
    database.drop_now().await;
}

/// With a coordinator, the promoted standby leases the region only once the
/// crashed active's lease has expired: meanwhile it serves notes (never
/// gated) and refuses creations as fenced, then writes on, continuing the
/// region's one log. In-process (`run_listeners`), so both replicas share
/// one in-process coordinator; "crashing" the active drops its run future,
/// which drops the lock session and stops renewing the lease without
/// revoking it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_standby_leases_the_region_once_the_old_lease_expires() {
    use meridian_coord::{Coordinator, LocalConfig, LocalCoordinator};
    use meridian_core::{Clock, RegionId};
    use meridian_gateway::{GatewayConfig, Listeners, SystemClock, failover::CoordinatorSettings};

    const LEASE_TTL: Duration = Duration::from_millis(2_000);
    let Some(database) = TestDatabase::new(Backing::Postgres).await else {
        return;
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let coordinator: Arc<dyn Coordinator> = Arc::new(LocalCoordinator::new(
        clock.clone(),
        LocalConfig {
            safety_margin: Duration::from_millis(300),
            tick: Duration::from_millis(20),
        },
    ));
    let regions: Vec<RegionId> = ["us-east", "eu-west", "apac-south"]
        .into_iter()
        .map(|r| RegionId::new(r).unwrap())
        .collect();
    let start = || {
        let coordinator = coordinator.clone();
        let regions = regions.clone();
        let store = database.config();
        let clock = clock.clone();
        async move {
            let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = public.local_addr().unwrap();
            let mut config = GatewayConfig::new(regions[0].clone(), regions, addr, store);
            config.coordinator = Some(CoordinatorSettings {
                lease_ttl: LEASE_TTL,
                ..CoordinatorSettings::shared(coordinator)
            });
            let task = tokio::spawn(meridian_gateway::run_listeners(
                config,
                Listeners { public, mesh: None },
                std::future::pending(),
                clock,
            ));
            (addr, task)
        }
    };
    let (a_addr, a_task) = start().await;
    let a_url = format!("http://{a_addr}");
    // The active leases the region, then creates.
    let ticket = {
        let started = Instant::now();
        loop {
            if let Some(mut to_a) = client(&a_url).await
                && let Ok(created) = to_a
                    .create_ticket(create_request("under the first lease".into()))
                    .await
            {
                break created.into_inner().ticket.unwrap();
            }
            assert!(
                started.elapsed() < START_MAX,
                "the active never leased the region"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (b_addr, b_task) = start().await;
    let b_url = format!("http://{b_addr}");
    let started = Instant::now();
    loop {
        if let Some(mut to_b) = client(&b_url).await
            && let Err(refused) = to_b
                .create_ticket(create_request("to the standby".into()))
                .await
            && refused
                .message()
                .starts_with("standby replica of region us-east")
        {
            break;
        }
        assert!(
            started.elapsed() < START_MAX,
            "the second replica never answered as a standby"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Crash the active.
    a_task.abort();
    let crashed_at = Instant::now();
    let mut to_b = loop {
        if let Some(mut to_b) = client(&b_url).await
            && to_b.get_status(v1::GetStatusRequest {}).await.is_ok()
        {
            break to_b;
        }
        assert!(
            crashed_at.elapsed() < FAILOVER_MAX,
            "the standby was not promoted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let promoted = crashed_at.elapsed();
    // Notes are never gated: the new active takes them at once.
    let note = v1::AddNoteRequest {
        ticket_id: ticket.id.clone(),
        author: "agent".into(),
        body: "still here".into(),
        visibility: 0,
        note_id: String::new(),
    };
    let noted = to_b.add_note(note).await.unwrap().into_inner();
    assert_eq!(noted.origin_seq, 2, "the new active continues the log");
    // Creations wait for the old lease to expire, then go through.
    let mut refused_fenced = 0;
    let created = loop {
        match to_b
            .create_ticket(create_request("under the new lease".into()))
            .await
        {
            Ok(created) => break created.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                refused_fenced += 1;
            }
        }
        assert!(
            crashed_at.elapsed() < LEASE_TTL + FAILOVER_MAX,
            "the new active never leased the region"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let leased = crashed_at.elapsed();
    eprintln!(
        "replicas: crash to promotion {} ms, to the first creation under the new lease {} ms (lease ttl {} ms)",
        promoted.as_millis(),
        leased.as_millis(),
        LEASE_TTL.as_millis()
    );
    if promoted < LEASE_TTL.saturating_sub(Duration::from_millis(500)) {
        assert!(
            refused_fenced > 0,
            "creations were allowed before the old lease could have expired"
        );
    }
    assert_eq!(created.origin_seq, 3);
    b_task.abort();
    let _ = b_task.await;
    database.drop_now().await;
}

/// SQLite takes the same roles: a second process on the same file waits as
/// a standby (the lock file beside the database) and takes over when the
/// first dies, continuing the one log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_sqlite_file_is_a_standby() {
    let database = TestDatabase::new(Backing::Sqlite).await.unwrap();
    let url = database.config().url;
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = start_pair(dir.path(), &url).await;
    let mut to_a = client(&a.url()).await.unwrap();
    assert_eq!(
        to_a.create_ticket(create_request("first".into()))
            .await
            .unwrap()
            .into_inner()
            .origin_seq,
        1
    );
    let refused = client(&b.url())
        .await
        .unwrap()
        .create_ticket(create_request("second".into()))
        .await
        .unwrap_err();
    assert_eq!(
        refused.message(),
        "standby replica of region us-east: another replica holds the region"
    );

    a.child.kill().unwrap();
    a.wait_exit(Duration::from_secs(5)).await;
    b.wait_health(TICKETS, ServingStatus::Serving, FAILOVER_MAX)
        .await;
    let mut to_b = client(&b.url()).await.unwrap();
    assert_eq!(
        to_b.create_ticket(create_request("after".into()))
            .await
            .unwrap()
            .into_inner()
            .origin_seq,
        2
    );
    let mut db = connect(&url).await;
    assert_eq!(writer_generation(&mut db).await, 2);
    let _ = db.close().await;
}
