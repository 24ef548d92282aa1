//! `meridian up --speed N`: the mesh's clock runs N times real time while
//! the router's health probes run on real time. Before the fix the router
//! judged a probe's age on the fast clock, so at 30x every region went
//! "down" between two probes and no ticket could be routed.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use meridian_proto::v1::{self, FilterReason};

use support::{MERIDIAN, start_up};

mod support;

/// Ten simulated hours at 600x (one real minute): every healthy region stays
/// up in every routing decision, from the first one that sees all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_healthy_region_stays_up_at_speed() {
    const SPEED: u32 = 600;
    const SIMULATED: Duration = Duration::from_secs(10 * 3600);
    let dir = tempfile::tempdir().unwrap();
    let (up, banner) = start_up(
        Command::new(MERIDIAN)
            .args([
                "up",
                "--no-auth",
                "--base-port",
                "0",
                "--start",
                "2026-12-07T07:50:00Z",
                "--speed",
            ])
            .arg(SPEED.to_string())
            .arg("--data-dir")
            .arg(dir.path()),
    );
    let mut router = String::new();
    for line in &banner {
        if let ["router", url, ..] = line.split_whitespace().collect::<Vec<_>>()[..] {
            router = url.to_owned();
        }
    }
    assert!(
        router.starts_with("http://"),
        "meridian up printed no router URL"
    );
    let mut client = v1::router_service_client::RouterServiceClient::connect(router)
        .await
        .unwrap();

    let route = || v1::RouteRequest {
        ticket: Some(v1::TicketAttributes::default()),
    };
    // The router hears each gateway within a probe interval of starting.
    let started = Instant::now();
    loop {
        let decision = client
            .route(route())
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap();
        let unheard: Vec<_> = decision
            .candidates
            .iter()
            .filter(|c| c.filtered() == FilterReason::NoHealthReport)
            .collect();
        if unheard.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never heard every gateway: {unheard:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let real = SIMULATED / SPEED;
    let started = Instant::now();
    let mut decisions = 0;
    while started.elapsed() < real {
        let decision = client
            .route(route())
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap();
        decisions += 1;
        let down: Vec<String> = decision
            .candidates
            .iter()
            .filter(|c| {
                matches!(
                    c.filtered(),
                    FilterReason::Down | FilterReason::NoHealthReport
                )
            })
            .map(|c| format!("{}: {:?}", c.region, c.filtered()))
            .collect();
        assert!(
            down.is_empty(),
            "after {:?} real ({} simulated minutes) a healthy region is reported down: {down:?}",
            started.elapsed(),
            started.elapsed().as_secs() * u64::from(SPEED) / 60
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(decisions > 100, "only {decisions} decisions checked");
    drop(up);
}
