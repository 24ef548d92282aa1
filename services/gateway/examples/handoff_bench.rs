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
//! `cargo run --release -p meridian-gateway --example handoff_bench -- [HANDOFFS] [ROUNDS] [DELAYED_HANDOFFS]`
//!
//! HANDOFFS per round on the direct mesh (500), ROUNDS of it (3; the median
//! round is reported), DELAYED_HANDOFFS per delay (100).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Mesh, Options};
use hdrhistogram::Histogram;
use meridian_proto::v1::{self, mesh_service_client::MeshServiceClient, ticket_service_client::TicketServiceClient};
use meridian_tls::MeshTls;
use tonic::{Code, transport::Channel};

/// The one-way delays the proxied mesh is measured at.
const DELAYS_MS: [u64; 3] = [0, 40, 150];
const WARM_UP: usize = 20;

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
    v1::CreateTicketRequest { subject: "bench".into(), customer: "acme".into(), tier: "premium".into(), ..Default::default() }
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap()
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// p50 and p99 of one measurement, in microseconds.
#[derive(Clone, Copy)]
struct Quantiles {
    n: u64,
    p50: u64,
    p99: u64,
}

impl From<&Histogram<u64>> for Quantiles {
    fn from(h: &Histogram<u64>) -> Self {
        Self { n: h.len(), p50: h.value_at_quantile(0.5), p99: h.value_at_quantile(0.99) }
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
async fn create_and_hand_off(us: &mut TicketServiceClient<Channel>, creates: &mut Histogram<u64>, handoffs: &mut Histogram<u64>) {
    let started = Instant::now();
    let ticket = us.create_ticket(create()).await.unwrap().into_inner().ticket.unwrap();
    creates.record(started.elapsed().as_micros() as u64).unwrap();
    let started = Instant::now();
    let answer = us
        .handoff(v1::HandoffRequest { ticket_id: ticket.id, to_region: "eu-west".into(), note: Some(note()) })
        .await
        .unwrap()
        .into_inner();
    handoffs.record(started.elapsed().as_micros() as u64).unwrap();
    assert_eq!(answer.ticket.unwrap().owner.unwrap().owner_region, "eu-west");
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
    let refused = client.accept_handoff(v1::AcceptHandoffRequest::default()).await.unwrap_err();
    times.record(started.elapsed().as_micros() as u64).unwrap();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
}

/// `count` handoffs, creates and round trips, interleaved.
async fn measure(link: String, count: usize, us: &mut TicketServiceClient<Channel>, rtt: &mut MeshServiceClient<Channel>) -> Row {
    let (mut creates, mut handoffs, mut round_trips) = (histogram(), histogram(), histogram());
    for _ in 0..WARM_UP {
        create_and_hand_off(us, &mut histogram(), &mut histogram()).await;
        round_trip(rtt, &mut histogram()).await;
    }
    for _ in 0..count {
        create_and_hand_off(us, &mut creates, &mut handoffs).await;
        round_trip(rtt, &mut round_trips).await;
    }
    Row { link, handoff: (&handoffs).into(), create: (&creates).into(), round_trip: (&round_trips).into() }
}

/// The direct mesh, in rounds: the figures of the target.
async fn direct(handoffs: usize, rounds: usize) -> Row {
    let mesh = Mesh::start(Options::default()).await;
    let mut us = mesh.client("us-east").await;
    let mut rtt = mesh_client(&mesh, &mesh.region("eu-west").mesh_addr.to_string()).await;
    let mut rows = Vec::new();
    for round in 1..=rounds {
        let row = measure("direct".into(), handoffs, &mut us, &mut rtt).await;
        println!("direct, round {round}");
        println!("  handoff    p50 {:>6.2} ms  p99 {:>6.2} ms", ms(row.handoff.p50), ms(row.handoff.p99));
        println!("  create     p50 {:>6.2} ms  p99 {:>6.2} ms", ms(row.create.p50), ms(row.create.p99));
        println!("  round trip p50 {:>6.2} ms  p99 {:>6.2} ms", ms(row.round_trip.p50), ms(row.round_trip.p99));
        rows.push(row);
    }
    mesh.stop().await;
    rows.sort_by_key(|row| row.handoff.p50);
    let mut median = rows.swap_remove(rows.len() / 2);
    median.link = format!("direct (median of {rounds} rounds)");
    median
}

/// The proxied mesh at each delay.
async fn delayed(handoffs: usize) -> Vec<Row> {
    let mesh = Mesh::start(Options { proxied_links: true, ..Options::default() }).await;
    let mut us = mesh.client("us-east").await;
    let mut rtt = mesh_client(&mesh, &mesh.link("us-east", "eu-west").addr.to_string()).await;
    let mut rows = Vec::new();
    for delay_ms in DELAYS_MS {
        mesh.set_link_delay(Duration::from_millis(delay_ms));
        let row = measure(format!("proxy +{delay_ms} ms each way"), handoffs, &mut us, &mut rtt).await;
        println!("{}", row.link);
        println!("  handoff    p50 {:>7.2} ms  p99 {:>7.2} ms", ms(row.handoff.p50), ms(row.handoff.p99));
        rows.push(row);
    }
    mesh.stop().await;
    rows
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let handoffs = args.first().copied().unwrap_or(500);
    let rounds = args.get(1).copied().unwrap_or(3).max(1);
    let delayed_handoffs = args.get(2).copied().unwrap_or(100);

    let mut rows = vec![direct(handoffs, rounds).await];
    rows.extend(delayed(delayed_handoffs).await);

    println!();
    println!(
        "{:<32} {:>5} | {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} | {:>12} | {:>8}",
        "link", "n", "handoff", "p99", "create", "p99", "rtt", "p99", "baseline p50", "ratio"
    );
    for row in &rows {
        // One durable commit plus one mutual-TLS round trip over the link.
        let baseline = row.create.p50 + row.round_trip.p50;
        println!(
            "{:<32} {:>5} | {:>6.2} ms {:>6.2} ms | {:>6.2} ms {:>6.2} ms | {:>6.2} ms {:>6.2} ms | {:>9.2} ms | {:>7.2}x",
            row.link,
            row.handoff.n,
            ms(row.handoff.p50),
            ms(row.handoff.p99),
            ms(row.create.p50),
            ms(row.create.p99),
            ms(row.round_trip.p50),
            ms(row.round_trip.p99),
            ms(baseline),
            row.handoff.p50 as f64 / baseline.max(1) as f64,
        );
    }
    println!("handoff, create and rtt columns: p50 then p99; baseline = create p50 + rtt p50; ratio = handoff p50 / baseline");
}
