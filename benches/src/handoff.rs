//! Handoff latency on loopback with mutual TLS: three gateways (SQLite,
//! synchronous=FULL, replication on), tickets created in us-east and handed
//! to eu-west, each handoff timed from the call to the answer (which comes
//! only after eu-west's acceptance is durable there and applied in
//! us-east).
//!
//! First on a mesh whose regions talk directly, then on one whose every
//! link goes through a proxy that adds a one-way delay (0, 40 and 150 ms
//! each way). The baseline is measured in the same run, next to each
//! figure: `CreateTicket` on the same gateway (one gRPC round trip and one
//! durable commit) plus one bare mutual-TLS round trip from us-east's
//! identity to eu-west's mesh port over the same link (an `AcceptHandoff`
//! the target refuses as malformed before touching its store).
//!
//! Full size: 500 handoffs per round on the direct mesh (the median round
//! is reported), 100 per delay. The mesh harness is the gateway tests' own.

// A benchmark stops loudly on the first failure: every unwrap here is on a
// call the mesh under test must answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../services/gateway/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Mesh, Options};
use hdrhistogram::Histogram;
use meridian_proto::v1::{
    self, mesh_service_client::MeshServiceClient, ticket_service_client::TicketServiceClient,
};
use meridian_tls::MeshTls;
use tonic::{Code, transport::Channel};

use crate::{
    Sizes,
    progress::Progress,
    report::{Chart, Quantiles, Row as Figure, ScenarioReport, histogram, ms},
};

/// The one-way delays the proxied mesh is measured at.
const DELAYS_MS: [u64; 3] = [0, 40, 150];

fn note() -> v1::HandoffNote {
    v1::HandoffNote {
        current_status: v1::Status::Open.into(),
        last_action: "bench".into(),
        next_action: "bench".into(),
        deadline: None,
        text: String::new(),
        author: "bench".into(),
    }
}

fn create() -> v1::CreateTicketRequest {
    v1::CreateTicketRequest {
        subject: "bench".into(),
        customer: "acme".into(),
        tier: "premium".into(),
        ..Default::default()
    }
}

/// One row of the table: a link, and what was measured over it.
struct Row {
    link: String,
    handoff: Quantiles,
    create: Quantiles,
    round_trip: Quantiles,
}

/// Creates a ticket in us-east and hands it to eu-west, timing both calls.
async fn create_and_hand_off(
    us: &mut TicketServiceClient<Channel>,
    creates: &mut Histogram<u64>,
    handoffs: &mut Histogram<u64>,
) {
    let started = Instant::now();
    let ticket = us
        .create_ticket(create())
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    creates
        .record(started.elapsed().as_micros() as u64)
        .unwrap();
    let started = Instant::now();
    let answer = us
        .handoff(v1::HandoffRequest {
            ticket_id: ticket.id,
            to_region: "eu-west".into(),
            note: Some(note()),
        })
        .await
        .unwrap()
        .into_inner();
    handoffs
        .record(started.elapsed().as_micros() as u64)
        .unwrap();
    assert_eq!(
        answer.ticket.unwrap().owner.unwrap().owner_region,
        "eu-west"
    );
}

/// A mesh-port client with us-east's gateway identity, to eu-west's
/// gateway at `addr` (its listener, or the proxy in front of it).
async fn mesh_client(mesh: &Mesh, addr: &str) -> MeshServiceClient<Channel> {
    let tls = MeshTls::load(mesh.tls_files("us-east")).unwrap();
    mesh.mesh_client_with(&tls, "eu-west", addr).await
}

/// One bare round trip: eu-west authenticates the call and refuses it for
/// its empty ticket id, without reading or writing anything.
async fn round_trip(client: &mut MeshServiceClient<Channel>, times: &mut Histogram<u64>) {
    let started = Instant::now();
    let refused = client
        .accept_handoff(v1::AcceptHandoffRequest::default())
        .await
        .unwrap_err();
    times.record(started.elapsed().as_micros() as u64).unwrap();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
}

/// `count` handoffs, creates and round trips, interleaved.
async fn measure(
    link: String,
    count: usize,
    warm_up: usize,
    us: &mut TicketServiceClient<Channel>,
    rtt: &mut MeshServiceClient<Channel>,
) -> Row {
    let (mut creates, mut handoffs, mut round_trips) = (histogram(), histogram(), histogram());
    for _ in 0..warm_up {
        create_and_hand_off(us, &mut histogram(), &mut histogram()).await;
        round_trip(rtt, &mut histogram()).await;
    }
    for _ in 0..count {
        create_and_hand_off(us, &mut creates, &mut handoffs).await;
        round_trip(rtt, &mut round_trips).await;
    }
    Row {
        link,
        handoff: (&handoffs).into(),
        create: (&creates).into(),
        round_trip: (&round_trips).into(),
    }
}

/// The direct mesh, in rounds: the figures of the target.
async fn direct(handoffs: usize, rounds: usize, warm_up: usize, progress: &Progress) -> Row {
    let mesh = Mesh::start(Options::default()).await;
    let mut us = mesh.client("us-east").await;
    let mut rtt = mesh_client(&mesh, &mesh.region("eu-west").mesh_addr.to_string()).await;
    let mut rows = Vec::new();
    for round in 1..=rounds {
        progress.say(&format!(
            "direct mesh, round {round}/{rounds}: {handoffs} handoffs"
        ));
        rows.push(measure("direct".into(), handoffs, warm_up, &mut us, &mut rtt).await);
    }
    mesh.stop().await;
    rows.sort_by_key(|row| row.handoff.p50);
    let mut median = rows.swap_remove(rows.len() / 2);
    median.link = "direct".into();
    median
}

/// The proxied mesh at each delay.
async fn delayed(
    handoffs: usize,
    delays_ms: &[u64],
    warm_up: usize,
    progress: &Progress,
) -> Vec<(u64, Row)> {
    let mesh = Mesh::start(Options {
        proxied_links: true,
        ..Options::default()
    })
    .await;
    let mut us = mesh.client("us-east").await;
    let mut rtt = mesh_client(&mesh, &mesh.link("us-east", "eu-west").addr.to_string()).await;
    let mut rows = Vec::new();
    for &delay_ms in delays_ms {
        progress.say(&format!(
            "proxied mesh, +{delay_ms} ms each way: {handoffs} handoffs"
        ));
        mesh.set_link_delay(Duration::from_millis(delay_ms));
        rows.push((
            delay_ms,
            measure(
                format!("proxy +{delay_ms} ms each way"),
                handoffs,
                warm_up,
                &mut us,
                &mut rtt,
            )
            .await,
        ));
    }
    mesh.stop().await;
    rows
}

pub async fn run(sizes: &Sizes, progress: &Progress) -> anyhow::Result<ScenarioReport> {
    let (handoffs, delayed_handoffs, warm_up) = if sizes.smoke {
        (5, 3, 2)
    } else {
        (500, 100, 20)
    };
    let rounds = sizes.rounds as usize;
    let mut report = ScenarioReport::new(
        "handoff",
        format!(
            "three gateways on SQLite (synchronous=FULL) with mTLS replication; {handoffs} handoffs x {rounds} rounds direct (median round), {delayed_handoffs} per added delay, {warm_up} warm-up each"
        ),
    );
    let mut rows = vec![(0, direct(handoffs, rounds, warm_up, progress).await)];
    rows.extend(delayed(delayed_handoffs, &DELAYS_MS, warm_up, progress).await);
    for (delay_ms, row) in &rows {
        // One durable commit plus one mutual-TLS round trip over the link.
        let baseline = report.row(
            Figure::new(
                format!("{}: create + mTLS round trip", row.link),
                ms(row.create.p50 + row.round_trip.p50),
                "ms",
            )
            .latency(
                ms(row.create.p50) + ms(row.round_trip.p50),
                ms(row.create.p99) + ms(row.round_trip.p99),
            )
            .baseline(),
        );
        report.row(
            Figure::new(format!("{}: handoff", row.link), ms(row.handoff.p50), "ms")
                .latency(ms(row.handoff.p50), ms(row.handoff.p99))
                .against(&baseline),
        );
        if row.link == "direct" {
            report.target(
                "handoff p99 on loopback",
                10.0,
                ms(row.handoff.p99),
                "ms",
                false,
            );
            report.target(
                "handoff p50 on loopback",
                3.0,
                ms(row.handoff.p50),
                "ms",
                false,
            );
        } else if *delay_ms > 0 {
            // One added round trip is the delay twice (once each way).
            let allowed = 2.0 * *delay_ms as f64 + 10.0;
            report.target(
                &format!("handoff p99 at +{delay_ms} ms: one added round trip + 10 ms"),
                allowed,
                ms(row.handoff.p99),
                "ms",
                false,
            );
        }
    }
    report.notes.push(
        "A handoff is three durable commits in sequence (the offer, the target's acceptance, the owner applying the acceptance) and one mTLS round trip; the ratio is against one commit plus one round trip.".into(),
    );
    let series: Vec<(String, Quantiles)> = rows
        .iter()
        .map(|(_, row)| (row.link.clone(), row.handoff))
        .collect();
    report.charts.push(Chart::percentiles(
        "handoff-latency",
        "handoff latency distribution by link",
        &series,
    ));
    Ok(report)
}
