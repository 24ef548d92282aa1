//! Handoff latency on loopback with mutual TLS: three gateways (SQLite,
//! synchronous=FULL, replication on), tickets created in us-east and handed
//! to eu-west, each handoff timed from the call to the answer (which comes
//! only after eu-west's acceptance is durable there and has replicated back).
//! Baseline in the same run: `CreateTicket` on the same gateway (one gRPC
//! round trip and one durable commit).
//!
//! `cargo run --release -p meridian-gateway --example handoff_bench -- [HANDOFFS] [ROUNDS]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{Mesh, Options};
use hdrhistogram::Histogram;
use meridian_proto::v1;

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

fn line(name: &str, h: &Histogram<u64>) -> String {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!("{name:<10} n={:<6} p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms", h.len(), ms(0.5), ms(0.9), ms(0.99), h.max() as f64 / 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let handoffs = args.first().copied().unwrap_or(500);
    let rounds = args.get(1).copied().unwrap_or(3);
    let mesh = Mesh::start(Options::default()).await;
    let mut us = mesh.client("us-east").await;
    let create = || v1::CreateTicketRequest { subject: "bench".into(), customer: "acme".into(), tier: "premium".into(), ..Default::default() };
    // Warm-up: connections, statement caches.
    for _ in 0..50 {
        let t = us.create_ticket(create()).await.unwrap().into_inner().ticket.unwrap();
        us.handoff(v1::HandoffRequest { ticket_id: t.id, to_region: "eu-west".into(), note: Some(note()) }).await.unwrap();
    }
    let mut medians = Vec::new();
    for round in 1..=rounds {
        let mut creates = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut handed = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for _ in 0..handoffs {
            let started = Instant::now();
            let t = us.create_ticket(create()).await.unwrap().into_inner().ticket.unwrap();
            creates.record(started.elapsed().as_micros() as u64).unwrap();
            let started = Instant::now();
            let answer = us.handoff(v1::HandoffRequest { ticket_id: t.id, to_region: "eu-west".into(), note: Some(note()) }).await.unwrap();
            handed.record(started.elapsed().as_micros() as u64).unwrap();
            assert_eq!(answer.into_inner().ticket.unwrap().owner.unwrap().owner_region, "eu-west");
        }
        println!("round {round}");
        println!("  {}", line("handoff", &handed));
        println!("  {}", line("create", &creates));
        medians.push((handed.value_at_quantile(0.5), handed.value_at_quantile(0.99), creates.value_at_quantile(0.5), creates.value_at_quantile(0.99)));
    }
    medians.sort();
    let (h50, h99, c50, c99) = medians[medians.len() / 2];
    println!(
        "median round: handoff p50 {:.2} ms p99 {:.2} ms; baseline create p50 {:.2} ms p99 {:.2} ms",
        h50 as f64 / 1000.0,
        h99 as f64 / 1000.0,
        c50 as f64 / 1000.0,
        c99 as f64 / 1000.0
    );
    mesh.stop().await;
}
