//! What tracing costs ticket intake: `CreateTicket` throughput of one
//! gateway (SQLite, WAL, synchronous=FULL) with span export off, on at
//! 100% sampling and on at 10%, exporting over OTLP/gRPC to a real OTLP
//! receiver (`testing::OtlpReceiver`) in the parent process.
//!
//! Telemetry is process-wide (one global subscriber), so each measurement
//! runs in a child process (this binary with `--trace-child`), configured as a gateway
//! binary would be (`Telemetry::init`, default batching, logs at warn).
//! Rounds interleave the three settings (off, 100%, 10%, off, …) so drift
//! of a shared machine spreads over all of them; the median round of each
//! is reported with its ratio to export-off of the same run, and the best
//! round of each (the least disturbed on a shared machine).
//!
//! Full size: 5 s per measured round after 1 s of warm-up, rounds + 2
//! rounds per setting, 16 closed-loop callers on one connection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A benchmark: fail loudly.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use meridian_core::RegionId;
use meridian_gateway::GatewayConfig;
use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};
use meridian_store::StoreConfig;
use meridian_telemetry::{Telemetry, TelemetryConfig, testing::OtlpReceiver};

use crate::{
    Sizes,
    progress::Progress,
    report::{Chart, Row, ScenarioReport, Series},
};

/// The first argument that makes this binary a measurement's child.
pub const CHILD_FLAG: &str = "--trace-child";

const WARM_UP_MAX: Duration = Duration::from_secs(1);
/// Export off, on at 100%, on at 10%.
const SETTINGS: [Option<f64>; 3] = [None, Some(1.0), Some(0.1)];

fn name(setting: Option<f64>) -> String {
    setting.map_or_else(
        || "export off".to_owned(),
        |ratio| format!("export on, {:.0}% sampled", ratio * 100.0),
    )
}

/// The child's side: `--trace-child RATIO|off ENDPOINT MILLIS CONCURRENCY`;
/// prints the creates that succeeded while measured.
pub async fn child_main(args: &[String]) -> anyhow::Result<()> {
    let [ratio, endpoint, millis, concurrency] = args else {
        anyhow::bail!("{CHILD_FLAG} RATIO ENDPOINT MILLIS CONCURRENCY");
    };
    let ratio: Option<f64> = ratio.parse().ok();
    let creates = child(
        ratio,
        endpoint.clone(),
        Duration::from_millis(millis.parse()?),
        concurrency.parse()?,
    )
    .await;
    println!("{creates}");
    Ok(())
}

pub async fn run(sizes: &Sizes, progress: &Progress) -> anyhow::Result<ScenarioReport> {
    let (duration, rounds, concurrency) = if sizes.smoke {
        (Duration::from_millis(300), 1, 4)
    } else {
        (Duration::from_secs(5), sizes.rounds as usize + 2, 16)
    };
    let receiver = OtlpReceiver::start().await?;
    let exe = std::env::current_exe()?;
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); SETTINGS.len()];
    for round in 0..rounds {
        for (i, setting) in SETTINGS.iter().enumerate() {
            progress.say(&format!("round {}/{rounds}: {}", round + 1, name(*setting)));
            let ratio = setting.map_or_else(|| "off".to_owned(), |r| r.to_string());
            let command_args = [
                CHILD_FLAG.to_owned(),
                ratio,
                receiver.endpoint(),
                duration.as_millis().to_string(),
                concurrency.to_string(),
            ];
            let exe = exe.clone();
            // The receiver keeps serving on this runtime while the child runs.
            let output = tokio::task::spawn_blocking(move || {
                std::process::Command::new(exe).args(command_args).output()
            })
            .await??;
            anyhow::ensure!(
                output.status.success(),
                "child failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            let creates: f64 = stdout.trim().lines().last().unwrap_or_default().parse()?;
            results[i].push(creates / duration.as_secs_f64());
        }
    }
    let medians: Vec<f64> = results
        .iter_mut()
        .map(|r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect();
    let mut report = ScenarioReport::new(
        "trace-overhead",
        format!(
            "CreateTicket on one gateway (SQLite WAL, synchronous=FULL), {concurrency} callers, {rounds} interleaved rounds of {duration:?} per setting, export over OTLP/gRPC to a real receiver"
        ),
    );
    let off = report.row(Row::new(name(None), medians[0], "creates/s").baseline());
    for (i, setting) in SETTINGS.iter().enumerate().skip(1) {
        let row = report.row(Row::new(name(*setting), medians[i], "creates/s").against(&off));
        if *setting == Some(1.0) {
            let overhead = 100.0 * (1.0 - row.ratio.unwrap_or(0.0));
            report.target("overhead at 100% sampling", 5.0, overhead, "%", false);
        }
    }
    report.notes.push(format!(
        "spans received by the OTLP receiver: {}",
        receiver.spans().len()
    ));
    report.charts.push(Chart {
        name: "trace-overhead-rounds".into(),
        title: "intake throughput per round, by tracing setting".into(),
        x_label: "round (sorted)".into(),
        y_label: "creates/s".into(),
        log_x: false,
        log_y: false,
        x_ticks: (0..rounds)
            .map(|r| (r as f64, (r + 1).to_string()))
            .collect(),
        series: SETTINGS
            .iter()
            .zip(&results)
            .map(|(setting, rates)| Series {
                name: name(*setting),
                points: rates
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i as f64, *v))
                    .collect(),
            })
            .collect(),
    });
    Ok(report)
}

/// One measurement: a gateway with this telemetry, driven for `duration`.
/// Returns the creates that succeeded in the measured part.
async fn child(
    ratio: Option<f64>,
    endpoint: String,
    duration: Duration,
    concurrency: usize,
) -> u64 {
    let region = RegionId::new("us-east").unwrap();
    let telemetry = Telemetry::init(&TelemetryConfig {
        region: Some(region.to_string()),
        otlp_endpoint: ratio.map(|_| endpoint),
        sample_ratio: ratio.unwrap_or(1.0),
        default_log_filter: "warn".to_owned(),
        ..TelemetryConfig::new("meridian-gateway")
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = GatewayConfig::new(
        region.clone(),
        vec![region],
        addr,
        StoreConfig::sqlite_file(&dir.path().join("gateway.db")),
    );
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let gateway = tokio::spawn(meridian_gateway::run(config, listener, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let channel = loop {
        match tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            Ok(channel) => break channel,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let measuring = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let creates = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let mut client = TicketServiceClient::new(channel.clone());
            let (measuring, done, creates) = (measuring.clone(), done.clone(), creates.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let request = v1::CreateTicketRequest {
                        subject: "CSV export truncated".into(),
                        body: "The nightly export stops after 65,535 rows.".into(),
                        customer: format!("customer-{worker}"),
                        skills: vec!["billing".into()],
                        language: "en".into(),
                        ..Default::default()
                    };
                    let ok = client.create_ticket(request).await.is_ok();
                    if ok && measuring.load(Ordering::Relaxed) {
                        creates.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(WARM_UP_MAX.min(duration)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let creates = creates.load(Ordering::Relaxed);
    let _ = stop.send(true);
    gateway.await.unwrap().unwrap();
    telemetry.shutdown().await.unwrap();
    // Scaled to the nominal duration, so a late wake-up does not count.
    (creates as f64 * duration.as_secs_f64() / elapsed.as_secs_f64()) as u64
}
