//! What tracing costs ticket intake: `CreateTicket` throughput of one
//! gateway (SQLite, WAL, synchronous=FULL) with span export off, on at
//! 100% sampling and on at 10%, exporting over OTLP/gRPC to a real OTLP
//! receiver (`testing::OtlpReceiver`) in the parent process.
//!
//! Telemetry is process-wide (one global subscriber), so each measurement
//! runs in a child process of this example, configured as a gateway
//! binary would be (`Telemetry::init`, default batching, logs at warn).
//! Rounds interleave the three settings (off, 100%, 10%, off, …) so drift
//! of a shared machine spreads over all of them; the median round of each
//! is reported with its ratio to export-off of the same run, and the best
//! round of each (the least disturbed on a shared machine).
//!
//! `cargo run --release -p meridian-gateway --example trace_overhead -- [SECONDS] [ROUNDS] [CONCURRENCY]`
//!
//! SECONDS per measured round (5, after 1 s of warm-up), ROUNDS per
//! setting (5), CONCURRENCY closed-loop callers on one connection (16).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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

const WARM_UP: Duration = Duration::from_secs(1);
/// Export off, on at 100%, on at 10%.
const SETTINGS: [Option<f64>; 3] = [None, Some(1.0), Some(0.1)];

fn name(setting: Option<f64>) -> String {
    setting.map_or_else(|| "export off".to_owned(), |ratio| format!("export on, {:.0}% sampled", ratio * 100.0))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let ratio: Option<f64> = args[2].parse().ok();
        let endpoint = args[3].clone();
        let seconds: u64 = args[4].parse().unwrap();
        let concurrency: usize = args[5].parse().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let creates = runtime.block_on(child(ratio, endpoint, Duration::from_secs(seconds), concurrency));
        println!("{creates}");
        return;
    }
    let seconds: u64 = args.get(1).map_or(5, |a| a.parse().unwrap());
    let rounds: usize = args.get(2).map_or(5, |a| a.parse().unwrap());
    let concurrency: usize = args.get(3).map_or(16, |a| a.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(parent(seconds, rounds, concurrency));
}

async fn parent(seconds: u64, rounds: usize, concurrency: usize) {
    let receiver = OtlpReceiver::start().await.unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); SETTINGS.len()];
    for round in 0..rounds {
        for (i, setting) in SETTINGS.iter().enumerate() {
            let ratio = setting.map_or_else(|| "off".to_owned(), |r| r.to_string());
            let command_args = ["--child".to_owned(), ratio, receiver.endpoint(), seconds.to_string(), concurrency.to_string()];
            let exe = exe.clone();
            // The receiver keeps serving on this runtime while the child runs.
            let output = tokio::task::spawn_blocking(move || std::process::Command::new(exe).args(command_args).output())
                .await
                .unwrap()
                .unwrap();
            assert!(output.status.success(), "child failed: {}", String::from_utf8_lossy(&output.stderr));
            let creates: f64 = String::from_utf8_lossy(&output.stdout).trim().lines().last().unwrap().parse().unwrap();
            let per_second = creates / seconds as f64;
            eprintln!("round {}: {:<24} {per_second:>8.0} creates/s", round + 1, name(*setting));
            results[i].push(per_second);
        }
    }
    let medians: Vec<f64> = results
        .iter_mut()
        .map(|r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect();
    println!(
        "CreateTicket, 1 gateway (SQLite WAL, synchronous=FULL), {concurrency} callers, {rounds} rounds of {seconds} s per setting, median round:"
    );
    // The best round too: on a machine shared with other work, the least
    // disturbed round of each setting is the steadier comparison.
    let best: Vec<f64> = results.iter().map(|r| r.last().copied().unwrap_or(0.0)).collect();
    for (i, setting) in SETTINGS.iter().enumerate() {
        println!(
            "  {:<24} median {:>6.0} creates/s = {:>5.1}% of export off;  best {:>6.0} = {:>5.1}%   (rounds: {})",
            name(*setting),
            medians[i],
            100.0 * medians[i] / medians[0],
            best[i],
            100.0 * best[i] / best[0],
            results[i].iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
        );
    }
    println!("  spans received by the OTLP receiver: {}", receiver.spans().len());
}

/// One measurement: a gateway with this telemetry, driven for `duration`.
/// Returns the creates that succeeded in the measured part.
async fn child(ratio: Option<f64>, endpoint: String, duration: Duration, concurrency: usize) -> u64 {
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
    let config =
        GatewayConfig::new(region.clone(), vec![region], addr, StoreConfig::sqlite_file(&dir.path().join("gateway.db")));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let gateway = tokio::spawn(meridian_gateway::run(config, listener, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let channel = loop {
        match tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await {
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
    tokio::time::sleep(WARM_UP).await;
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
