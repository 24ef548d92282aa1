//! `notify`: how long a notification takes from its event's commit to the
//! receiver (issue 15). One region's real notifier and delivery tasks
//! (`meridian_gateway::bench_hooks::NotifyBench`) follow a SQLite store;
//! the benchmark commits `ShiftSummary` events into it, and a real HTTPS
//! receiver on loopback (certificate from a CA made for the run) records
//! when each POST's body had arrived. The path measured is the gateway's:
//! the commit wakes the notifier, which reads the log, renders the JSON
//! body and enqueues it in the outbox (a durable commit); the delivery
//! task claims it and POSTs it over a fresh TLS connection, as it does for
//! every notification.
//!
//! - **one at a time**: the next event is committed once the last arrived:
//!   the latency a person sees on a quiet region;
//! - **burst**: events committed back to back, as at a shift end or an
//!   SLA storm: queueing included.
//!
//! The baseline is one bare HTTPS POST of the same size to the same
//! receiver on a fresh connection (connect, TLS handshake, POST, answer),
//! in the same run: what delivery costs without the log and the outbox.

// A benchmark stops loudly on the first failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Full;
use meridian_core::{ManualClock, RegionId, ShiftSummary};
use meridian_notify::{Format, Target};
use meridian_store::{Store, StoreConfig};
use meridian_test_support::https_receiver::{HttpsReceiver, Mode};

use crate::{
    Sizes,
    catchup::meta,
    progress::Progress,
    report::{Chart, Quantiles, Row, ScenarioReport, histogram, ms},
};

/// The longest one notification may take before the run gives up.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The `i`th shift of us-east: a distinct summary (its id comes from the
/// shift's end), so each is a new event.
fn summary(region: &RegionId, i: u32) -> ShiftSummary {
    let end = jiff::Timestamp::from_second(1_780_000_000 + i64::from(i) * 3_600).unwrap();
    ShiftSummary {
        region: region.clone(),
        shift_start: end - jiff::SignedDuration::from_hours(8),
        shift_end: end,
        handed_off: Vec::new(),
        kept: Vec::new(),
        sla_at_risk: Vec::new(),
        escalations_open: Vec::new(),
        auto_notes: 0,
        next_region: Some(RegionId::new("eu-west").unwrap()),
        next_queue_owner: Some("eu-west-lead".into()),
    }
}

/// The event's origin sequence number, from an outbox item key
/// (`shift_summary:us-east:SEQ@TARGET`).
fn seq_of(key: &str) -> Option<u64> {
    key.split('@').next()?.rsplit(':').next()?.parse().ok()
}

/// Waits until the receiver has `count` POSTs.
async fn arrived(receiver: &HttpsReceiver, count: usize) {
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    while receiver.posts().len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} notifications arrived within {ARRIVAL_TIMEOUT:?}",
            receiver.posts().len()
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Commits `count` summaries (waiting for each to arrive when `one_by_one`)
/// and returns each one's time from commit to arrival.
async fn measure(
    store: &Store,
    receiver: &HttpsReceiver,
    region: &RegionId,
    first: u32,
    count: u32,
    one_by_one: bool,
) -> Histogram<u64> {
    let before = receiver.posts().len();
    let mut committed: HashMap<u64, Instant> = HashMap::new();
    for i in first..first + count {
        let event = store
            .record_shift_summary(summary(region, i), meta())
            .await
            .unwrap();
        committed.insert(event.origin_seq, Instant::now());
        if one_by_one {
            arrived(receiver, before + committed.len()).await;
        }
    }
    arrived(receiver, before + count as usize).await;
    let mut latencies = histogram();
    for post in &receiver.posts()[before..] {
        assert!(post.accepted, "the receiver refused {:?}", post.key);
        let seq = post.key.as_deref().and_then(seq_of).unwrap();
        let at = committed.remove(&seq).unwrap();
        latencies
            .record(micros(post.at.saturating_duration_since(at)))
            .unwrap();
    }
    assert!(committed.is_empty(), "not delivered: {committed:?}");
    latencies
}

/// One bare HTTPS POST on a fresh connection, as delivery makes it.
async fn bare_post(
    tls: &tokio_rustls::TlsConnector,
    port: u16,
    body: Bytes,
    key: &str,
) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost")?;
    let stream = tls.connect(name, tcp).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let request = http::Request::post("/bare")
        .header("host", format!("localhost:{port}"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Full::new(body))?;
    let answer = sender.send_request(request).await?;
    anyhow::ensure!(
        answer.status().is_success(),
        "bare POST: {}",
        answer.status()
    );
    driver.abort();
    Ok(())
}

pub async fn run(sizes: &Sizes, progress: &Progress) -> anyhow::Result<ScenarioReport> {
    let (one_by_one, burst, bare) = if sizes.smoke {
        (20, 20, 20)
    } else {
        (500, 500, 500)
    };
    let mut report = ScenarioReport::new(
        "notify",
        format!(
            "one region's notifier and delivery tasks over SQLite (WAL) to a JSON target over HTTPS on loopback; {one_by_one} shift summaries one at a time, then {burst} back to back; {bare} bare POSTs as the baseline"
        ),
    );
    let receiver = HttpsReceiver::start(Mode::Accept).await;
    let port: u16 = receiver
        .base_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("receiver URL {} has no port", receiver.base_url))?;

    let dir = tempfile::tempdir()?;
    let region = RegionId::new("us-east")?;
    let config = StoreConfig::sqlite_file(&dir.path().join("notify.db"));
    let store = Store::open(&config, &region).await?;
    let rules_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules.example.toml");
    let rules =
        meridian_rules::Rules::parse("rules.example.toml", &std::fs::read_to_string(&rules_path)?)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let target = Target::new(
        "bench",
        &format!("{}/hook", receiver.base_url),
        Format::Json,
        Some(receiver.ca.clone()),
        Vec::new(),
    )?;
    let clock = Arc::new(ManualClock::new("2026-06-02T14:00:00Z".parse()?));
    let bench = meridian_gateway::bench_hooks::NotifyBench::start(
        region.clone(),
        store.clone(),
        &config.url,
        rules,
        clock,
        vec![target],
    )
    .await
    .map_err(|e| anyhow::anyhow!("notify bench: {e}"))?;

    // Warm up: the outbox's tables, the first TLS session, the page cache.
    progress.say("warming up");
    measure(bench.store(), &receiver, &region, 0, 5, true).await;
    let body = Bytes::from(
        receiver
            .posts()
            .last()
            .map(|p| p.body.to_string())
            .unwrap_or_default(),
    );

    progress.say(&format!("{bare} bare HTTPS POSTs"));
    let tls = tokio_rustls::TlsConnector::from(
        meridian_tls::outbound_client_config(Some(&receiver.ca))
            .map_err(|e| anyhow::anyhow!("the receiver's CA: {e}"))?,
    );
    let mut bare_latency = histogram();
    for i in 0..bare {
        let started = Instant::now();
        bare_post(&tls, port, body.clone(), &format!("bare-{i}")).await?;
        bare_latency.record(micros(started.elapsed()))?;
    }

    progress.say(&format!("{one_by_one} notifications one at a time"));
    let single = measure(bench.store(), &receiver, &region, 100, one_by_one, true).await;
    progress.say(&format!("{burst} notifications back to back"));
    let bursty = measure(
        bench.store(),
        &receiver,
        &region,
        100 + one_by_one,
        burst,
        false,
    )
    .await;

    let b = Quantiles::from(&bare_latency);
    let baseline = report.row(
        Row::new(
            "bare HTTPS POST, fresh connection (baseline)",
            ms(b.p50),
            "ms",
        )
        .latency(ms(b.p50), ms(b.p99))
        .baseline(),
    );
    let s = Quantiles::from(&single);
    report.row(
        Row::new("commit → receiver, one at a time", ms(s.p50), "ms")
            .latency(ms(s.p50), ms(s.p99))
            .against(&baseline),
    );
    let q = Quantiles::from(&bursty);
    report.row(
        Row::new(
            format!("commit → receiver, {burst} back to back"),
            ms(q.p50),
            "ms",
        )
        .latency(ms(q.p50), ms(q.p99))
        .against(&baseline),
    );
    // Issue 15 names no figure. A person should hear of an event well
    // within a second; a quarter of one leaves room for a slow receiver.
    report.target(
        "commit → receiver p99, one at a time",
        250.0,
        ms(s.p99),
        "ms",
        false,
    );
    report.notes.push(
        "The baseline is timed by the client (connect to answer); the notification from the commit's acknowledgement to the moment the receiver had read the body. Each notification is its own fresh TLS connection, as delivery makes them (crates/notify/src/deliver.rs).".into(),
    );
    report.charts.push(Chart::percentiles(
        "notify-latency",
        "notification latency from commit to receiver",
        &[
            ("bare POST".into(), b),
            ("one at a time".into(), s),
            ("back to back".into(), q),
        ],
    ));
    drop(bench);
    store.close().await;
    Ok(report)
}
