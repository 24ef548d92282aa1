//! Catch-up after a partition: region A holds N events that region B has
//! never seen; B comes up, A dials it over mutual TLS on loopback, and the
//! clock runs until B's cursor of A's log reaches A's head. The baseline,
//! in the same run: the same events applied to a fresh store with
//! `Store::apply_remote` directly, in batches, with no network; and the
//! floor under that, the same events inserted as plain rows in batches.
//!
//! Full size: 10,000 and 100,000 events over several rounds, then
//! 1,000,000 once,
//! batches of 1000 events, SQLite stores (WAL, synchronous=FULL).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A benchmark: stop loudly on any failure.

use crate::{
    Sizes,
    progress::Progress,
    report::{Chart, Row, ScenarioReport, Series},
};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use futures::StreamExt;
use jiff::Timestamp;
use meridian_core::{
    Epoch, EventEnvelope, HlcTimestamp, Note, NoteId, Ownership, Priority, RegionId, Skill,
    SlaDeadlines, Status, Ticket, TicketId, Tier,
};
use meridian_replication::{ReplicationConfig, Replicator};
use meridian_store::{EVENTS_PAGE_MAX, Store, StoreConfig, WriteMeta};
use meridian_tls::{DevPkiPlan, MeshTls, Service, TlsFiles, TrustDomain, Validity, write_dev_pki};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Fresh SQLite databases, each its own file in one directory.
struct Databases {
    dir: tempfile::TempDir,
    made: AtomicU64,
}

impl Databases {
    fn fresh(&self, name: &str) -> StoreConfig {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        StoreConfig::sqlite_file(&self.dir.path().join(format!("{name}-{n}.db")))
    }
}

static NEXT: AtomicU64 = AtomicU64::new(1);

fn random_bytes(tag: u8) -> [u8; 10] {
    let mut random = [tag; 10];
    random[..8].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    random
}

pub(crate) fn meta() -> WriteMeta {
    let now = Timestamp::now();
    WriteMeta {
        hlc_time: HlcTimestamp::new(u64::try_from(now.as_millisecond()).unwrap(), 0),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        at: now,
        actor: None,
    }
}

pub(crate) fn ticket(owner: &RegionId) -> Ticket {
    let at = Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap();
    Ticket {
        id: TicketId::new_v7(at, random_bytes(1)),
        subject: "VPN drops every few minutes".into(),
        body: "Since this morning the VPN drops every few minutes for the whole Lisbon office."
            .into(),
        customer: "acme".into(),
        tier: Tier::new("standard").unwrap(),
        skills: BTreeSet::from([Skill::new("networking").unwrap()]),
        language: "en".into(),
        residency: BTreeSet::new(),
        status: Status::New,
        assignee: None,
        priority: Priority::Normal,
        owner: Ownership {
            owner_region: owner.clone(),
            epoch: Epoch::initial(0),
        },
        handoff_to: None,
        sla: SlaDeadlines::default(),
        created_at: at,
        updated_at: at,
    }
}

/// Fills `store`'s own log with `n` events: one ticket creation for every
/// four events, the rest notes on those tickets.
async fn fill(store: &Store, n: usize) {
    let region = store.local_region().clone();
    let tickets: Vec<TicketId> = futures::stream::iter(0..n.div_ceil(4))
        .map(|_| {
            let ticket = ticket(&region);
            async move { store.create_ticket(ticket, meta()).await.unwrap().ticket_id }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    futures::stream::iter(0..n - tickets.len())
        .map(|i| {
            let at = Timestamp::from_millisecond(Timestamp::now().as_millisecond()).unwrap();
            let note = Note {
                id: NoteId::new_v7(at, random_bytes(2)),
                ticket_id: tickets[i % tickets.len()],
                region: region.clone(),
                author: "ana".into(),
                body: "Customer confirms the drops continue; collecting router logs.".into(),
                created_at: at,
                auto: false,
                visibility: meridian_core::Visibility::Internal,
            };
            async move { store.add_note(note, meta()).await.unwrap() }
        })
        .buffer_unordered(256)
        .for_each(|_| async {})
        .await;
}

async fn read_log(store: &Store) -> anyhow::Result<Vec<EventEnvelope>> {
    let mut log = Vec::new();
    loop {
        let after = log
            .last()
            .map_or(0, |event: &EventEnvelope| event.origin_seq);
        let page = store
            .events_after(store.local_region(), after, EVENTS_PAGE_MAX)
            .await?;
        if page.is_empty() {
            return Ok(log);
        }
        log.extend(page);
    }
}

/// A region's replicator and internal mutual-TLS server, until stopped.
struct Running {
    replicator: Replicator,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn start(
    config: ReplicationConfig,
    store: Store,
    tls: MeshTls,
    listener: TcpListener,
) -> anyhow::Result<Running> {
    let replicator = Replicator::new(
        config,
        store,
        tls.clone(),
        Arc::new(meridian_store::SystemClock),
    )?;
    let (stop, stopped) = watch::channel(false);
    let service = replicator.service();
    let mut server_stop = stopped.clone();
    let incoming = tls.incoming(listener);
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = server_stop.wait_for(|stop| *stop).await;
            })
            .await;
    });
    let mut run_stop = stopped;
    let run = tokio::spawn(replicator.clone().run(async move {
        let _ = run_stop.wait_for(|stop| *stop).await;
    }));
    Ok(Running {
        replicator,
        stop,
        tasks: vec![run, server],
    })
}

impl Running {
    async fn stop(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

fn micros_per(elapsed: Duration, events: u64) -> f64 {
    elapsed.as_secs_f64() * 1e6 / events as f64
}

/// What the two ends spend on the wire format: events to encoded batch
/// frames (the sender), and bytes back to checked events (the receiver).
fn codec_costs(log: &[EventEnvelope], batch: usize) -> (Duration, Duration) {
    use meridian_proto::replication::{batch_to_proto, frame_from_proto};
    use prost::Message;
    let encoding = Instant::now();
    let frames: Vec<Vec<u8>> = log
        .chunks(batch)
        .map(|chunk| {
            batch_to_proto(
                chunk
                    .iter()
                    .map(meridian_proto::convert::event_to_proto)
                    .collect(),
            )
            .encode_to_vec()
        })
        .collect();
    let encode = encoding.elapsed();
    let decoding = Instant::now();
    for bytes in &frames {
        let frame = meridian_proto::v1::ReplicationFrame::decode(bytes.as_slice()).unwrap();
        frame_from_proto(frame).unwrap();
    }
    (encode, decoding.elapsed())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

const BATCH: usize = 1_000;

/// The floor of applying a log: the same events as rows (origin, seq, the
/// event's JSON) in a plain table of a fresh SQLite file with the store's
/// durability (WAL, synchronous=FULL), `BATCH` rows per multi-row INSERT
/// and one transaction per batch. No checks, no projection, no network.
async fn bare_batched_insert(
    path: &std::path::Path,
    log: &[EventEnvelope],
) -> anyhow::Result<Duration> {
    use sqlx::{Connection, Executor, sqlite::SqliteConnectOptions};
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
    let mut db = sqlx::SqliteConnection::connect_with(&options).await?;
    db.execute("CREATE TABLE events (origin TEXT NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL, PRIMARY KEY (origin, seq))")
        .await?;
    let rows: Vec<(String, i64, String)> = log
        .iter()
        .map(|e| {
            Ok((
                e.origin_region.to_string(),
                i64::try_from(e.origin_seq)?,
                serde_json::to_string(e)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    for batch in rows.chunks(BATCH) {
        let placeholders = vec!["(?, ?, ?)"; batch.len()].join(", ");
        let sql = format!("INSERT INTO events (origin, seq, payload) VALUES {placeholders}");
        let mut query = sqlx::query(&sql);
        for (origin, seq, payload) in batch {
            query = query.bind(origin).bind(seq).bind(payload);
        }
        let mut tx = db.begin().await?;
        query.execute(&mut *tx).await?;
        tx.commit().await?;
    }
    let elapsed = started.elapsed();
    db.close().await?;
    Ok(elapsed)
}

/// One size's medians: (events, catch-up events/s, baseline events/s).
struct Measured {
    events: u64,
    catchup: f64,
    baseline: f64,
    bare: f64,
    read_us: f64,
    encode_us: f64,
    decode_us: f64,
}

pub async fn run(sizes: &Sizes, progress: &Progress) -> anyhow::Result<ScenarioReport> {
    let plan: Vec<(usize, usize)> = if sizes.smoke {
        vec![(2_000, 1)]
    } else {
        vec![
            (10_000, sizes.rounds as usize),
            (100_000, sizes.rounds as usize),
            (1_000_000, 1),
        ]
    };
    sqlx::any::install_default_drivers();
    let a = RegionId::new("us-east")?;
    let b = RegionId::new("eu-west")?;
    let regions = vec![a.clone(), b.clone()];
    let databases = Databases {
        dir: tempfile::tempdir()?,
        made: AtomicU64::new(0),
    };
    let pki = tempfile::tempdir()?;
    let now = SystemTime::now();
    write_dev_pki(
        pki.path(),
        &DevPkiPlan {
            trust_domain: TrustDomain::new("meridian.bench")?,
            regions: regions.clone(),
            services: vec![Service::Gateway],
            ca_validity: Validity::days_from(now, 30),
            cert_validity: Validity::days_from(now, 30),
            replace_ca: false,
        },
    )?;
    let tls_a = MeshTls::load(TlsFiles::dev(pki.path(), &a, Service::Gateway))?;
    let tls_b = MeshTls::load(TlsFiles::dev(pki.path(), &b, Service::Gateway))?;

    let mut measured = Vec::new();
    for (events, rounds) in &plan {
        let store_a = Store::open(&databases.fresh("us-east"), &a).await?;
        progress.say(&format!("filling us-east with {events} events"));
        fill(&store_a, *events).await;
        let head = store_a.local_head().await?;
        let reading = Instant::now();
        let log = read_log(&store_a).await?;
        let read = reading.elapsed();
        anyhow::ensure!(log.len() as u64 == head, "us-east's log is not dense");
        let (encode, decode) = codec_costs(&log, BATCH);

        let mut baseline_rates = Vec::new();
        let mut catchup_rates = Vec::new();
        let mut bare_rates = Vec::new();
        for round in 1..=*rounds {
            progress.say(&format!(
                "{head} events, round {round}/{rounds}: bare batched insert"
            ));
            let bare = bare_batched_insert(
                &databases.dir.path().join(format!("bare-{round}-{head}.db")),
                &log,
            )
            .await?;
            bare_rates.push(head as f64 / bare.as_secs_f64());

            progress.say(&format!(
                "{head} events, round {round}/{rounds}: baseline apply_remote"
            ));
            // Baseline: apply_remote straight into a fresh store.
            let store_c = Store::open(&databases.fresh("baseline"), &b).await?;
            let batches: Vec<Vec<EventEnvelope>> =
                log.chunks(BATCH).map(<[EventEnvelope]>::to_vec).collect();
            let started = Instant::now();
            for batch in batches {
                store_c.apply_remote(&a, batch).await?;
            }
            let baseline = started.elapsed();
            anyhow::ensure!(
                store_c.cursor(&a).await? == head,
                "the baseline store did not apply everything"
            );
            store_c.close().await;

            progress.say(&format!(
                "{head} events, round {round}/{rounds}: catch-up over mTLS"
            ));
            // Catch-up over the network: B comes up empty, A dials it.
            let store_b = Store::open(&databases.fresh("eu-west"), &b).await?;
            let listener_a = TcpListener::bind("127.0.0.1:0").await?;
            let listener_b = TcpListener::bind("127.0.0.1:0").await?;
            let peers = BTreeMap::from([
                (a.clone(), listener_a.local_addr()?.to_string()),
                (b.clone(), listener_b.local_addr()?.to_string()),
            ]);
            let mut config_a = ReplicationConfig::new(a.clone(), regions.clone(), peers.clone());
            config_a.batch_events_max = BATCH;
            let mut config_b = ReplicationConfig::new(b.clone(), regions.clone(), peers);
            config_b.batch_events_max = BATCH;
            let running_b = start(config_b, store_b.clone(), tls_b.clone(), listener_b).await?;
            let mut applied = running_b.replicator.applied();
            let started = Instant::now();
            let running_a = start(config_a, store_a.clone(), tls_a.clone(), listener_a).await?;
            tokio::time::timeout(
                Duration::from_secs(600),
                applied.wait_for(|applied| applied.get(&a).is_some_and(|seq| *seq >= head)),
            )
            .await
            .context("eu-west did not catch up within 10 minutes")??;
            let catchup = started.elapsed();
            anyhow::ensure!(
                store_b.cursor(&a).await? == head,
                "eu-west's cursor is not at us-east's head"
            );
            running_a.stop().await;
            running_b.stop().await;
            store_b.close().await;
            baseline_rates.push(head as f64 / baseline.as_secs_f64());
            catchup_rates.push(head as f64 / catchup.as_secs_f64());
        }
        store_a.close().await;
        measured.push(Measured {
            events: head,
            catchup: median(&mut catchup_rates),
            baseline: median(&mut baseline_rates),
            bare: median(&mut bare_rates),
            read_us: micros_per(read, head),
            encode_us: micros_per(encode, head),
            decode_us: micros_per(decode, head),
        });
    }

    let mut report = ScenarioReport::new(
        "catch-up",
        format!(
            "two regions on SQLite (WAL, synchronous=FULL) over mTLS on loopback, batches of {BATCH}; sizes and rounds {plan:?}"
        ),
    );
    for m in &measured {
        let bare = report.row(
            Row::new(
                format!("{} events: bare batched insert", m.events),
                m.bare,
                "events/s",
            )
            .baseline(),
        );
        let baseline = report.row(
            Row::new(
                format!("{} events: apply_remote, no network", m.events),
                m.baseline,
                "events/s",
            )
            .baseline(),
        );
        report.row(
            Row::new(
                format!("{} events: apply_remote vs bare insert", m.events),
                m.baseline,
                "events/s",
            )
            .against(&bare),
        );
        report.row(
            Row::new(
                format!("{} events: catch-up over mTLS", m.events),
                m.catchup,
                "events/s",
            )
            .against(&baseline),
        );
        report.row(
            Row::new(
                format!("{} events: catch-up vs bare insert", m.events),
                m.catchup,
                "events/s",
            )
            .against(&bare),
        );
    }
    if let Some(largest) = measured.last() {
        report.target(
            &format!("catch-up of {} events", largest.events),
            50_000.0,
            largest.catchup,
            "events/s",
            true,
        );
        report.notes.push(format!(
            "Per event on one core at {} events: reading the origin's log {:.1} µs, encoding {:.1} µs, decoding and checking {:.1} µs.",
            largest.events, largest.read_us, largest.encode_us, largest.decode_us
        ));
    }
    report.charts.push(Chart {
        name: "catch-up-rate".into(),
        title: "catch-up rate by events left behind".into(),
        x_label: "events left behind".into(),
        y_label: "events/s".into(),
        log_x: true,
        log_y: false,
        x_ticks: Vec::new(),
        series: vec![
            Series {
                name: "catch-up over mTLS".into(),
                points: measured
                    .iter()
                    .map(|m| (m.events as f64, m.catchup))
                    .collect(),
            },
            Series {
                name: "apply_remote, no network".into(),
                points: measured
                    .iter()
                    .map(|m| (m.events as f64, m.baseline))
                    .collect(),
            },
            Series {
                name: "bare batched insert".into(),
                points: measured.iter().map(|m| (m.events as f64, m.bare)).collect(),
            },
        ],
    });
    Ok(report)
}
