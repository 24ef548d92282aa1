//! A ticket's trace and the mesh's metrics, through real exporters: three
//! gateways over real mutual TLS and replication export spans over
//! OTLP/gRPC to a real OTLP receiver on loopback, and serve their metrics
//! on one `/metrics` (all regions in one process, as in `meridian up`).
//!
//! The harness runs every region in this one process, so the resource is
//! per process and names no region: each span says where it ran in its
//! `meridian.region` attribute, and each series in its `meridian_region`
//! label.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    time::Duration,
};

use common::{Mesh, Options, REGIONS};
use meridian_proto::v1;
use meridian_telemetry::{
    Telemetry, TelemetryConfig,
    opentelemetry::trace::{SpanId, TraceId},
    testing::{OtlpReceiver, ReceivedSpan, SpanKind},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::Request;

/// us-east is off shift; eu-west and apac-south are both on shift (example
/// rules: eu-west 07:00–16:00 UTC in summer, apac-south 23:00–08:00 UTC),
/// so each accepts the handoff made to it, and no shift ends while the
/// manual clock stands still.
const EU_AND_APAC_ON_SHIFT: &str = "2026-06-02T07:30:00Z";
const WAIT: Duration = Duration::from_secs(30);
/// The caller's own span, sent as `traceparent` with the create.
const CALLER_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn config(receiver: &OtlpReceiver) -> TelemetryConfig {
    TelemetryConfig {
        otlp_endpoint: Some(receiver.endpoint()),
        span_batch_delay: Duration::from_millis(50),
        // Logs stay quiet; spans are exported at info whatever the filter.
        default_log_filter: "warn".to_owned(),
        ..TelemetryConfig::new("meridian-test")
    }
}

fn note(author: &str) -> v1::HandoffNote {
    v1::HandoffNote {
        current_status: v1::Status::Open.into(),
        last_action: "restarted the tunnel".into(),
        next_action: "confirm with the customer".into(),
        deadline: None,
        text: String::new(),
        author: author.into(),
    }
}

/// Creates a ticket in us-east and hands it to eu-west, then (from
/// eu-west) to apac-south, or only the first handoff. Returns its id.
async fn journey(mesh: &Mesh, to_apac: bool) -> String {
    let mut us = mesh.client("us-east").await;
    let mut create = Request::new(v1::CreateTicketRequest {
        subject: "VPN down".into(),
        customer: "acme".into(),
        tier: "premium".into(),
        ..Default::default()
    });
    create
        .metadata_mut()
        .insert("traceparent", CALLER_TRACEPARENT.parse().unwrap());
    let ticket = us
        .create_ticket(create)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    us.update_ticket(v1::UpdateTicketRequest {
        ticket_id: ticket.id.clone(),
        status: Some(v1::Status::Open.into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let handed = us
        .handoff(v1::HandoffRequest {
            ticket_id: ticket.id.clone(),
            to_region: "eu-west".into(),
            note: Some(note("ana")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        handed.ticket.unwrap().owner.unwrap().owner_region,
        "eu-west"
    );
    if to_apac {
        let mut eu = mesh.client("eu-west").await;
        eu.add_note(v1::AddNoteRequest {
            ticket_id: ticket.id.clone(),
            author: "bo".into(),
            body: "picked up".into(),
            visibility: 0,
            note_id: String::new(),
        })
        .await
        .unwrap();
        let handed = eu
            .handoff(v1::HandoffRequest {
                ticket_id: ticket.id.clone(),
                to_region: "apac-south".into(),
                note: Some(note("bo")),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            handed.ticket.unwrap().owner.unwrap().owner_region,
            "apac-south"
        );
    }
    ticket.id
}

fn attr<'a>(span: &'a ReceivedSpan, key: &str) -> &'a str {
    span.attributes.get(key).map_or("", String::as_str)
}

fn named<'a>(spans: &'a [&'a ReceivedSpan], name: &str, region: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .copied()
        .filter(|s| s.name == name && attr(s, "meridian.region") == region)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_handed_across_three_regions_is_one_trace() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let (telemetry, dispatch) = Telemetry::build(&config(&receiver)).unwrap();
    // The gateways' tasks run on every worker thread: the subscriber must
    // be the process's. Only this test of this binary installs one.
    tracing::dispatcher::set_global_default(dispatch).unwrap();
    let mesh = Mesh::start(Options {
        at: EU_AND_APAC_ON_SHIFT,
        ..Options::default()
    })
    .await;
    let ticket_id = journey(&mesh, true).await;
    mesh.wait_quiet().await;
    let trace_id = TraceId::from_hex(&ticket_id.replace('-', "")).unwrap();

    // Every region has applied what the others wrote about the ticket: the
    // last acceptance (apac-south's) in us-east and eu-west, us-east's
    // create in apac-south.
    let applied = |spans: &[ReceivedSpan], region: &str, origin: &str| {
        spans.iter().any(|s| {
            s.trace_id == trace_id
                && s.name == "apply"
                && attr(s, "meridian.region") == region
                && attr(s, "meridian.origin_region") == origin
        })
    };
    let spans = receiver
        .wait_for_spans(
            "the handoff and apply spans of every region",
            WAIT,
            |spans| {
                applied(spans, "us-east", "apac-south")
                    && applied(spans, "eu-west", "apac-south")
                    && applied(spans, "apac-south", "us-east")
                    && spans
                        .iter()
                        .filter(|s| s.trace_id == trace_id && s.name.starts_with("handoff."))
                        .count()
                        >= 4
            },
        )
        .await
        .unwrap();
    let ours: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| attr(s, "meridian.ticket_id") == ticket_id)
        .collect();
    assert!(ours.len() >= 10, "too few spans of the ticket: {ours:#?}");

    // One trace: every span of the ticket is in the trace its id names,
    // under the ticket's one virtual root.
    let root = meridian_telemetry::ticket::root_span_id(
        ticket_id.parse::<meridian_core::TicketId>().unwrap(),
    );
    for span in &ours {
        assert_eq!(
            span.trace_id,
            trace_id,
            "{} in {} is outside the ticket's trace",
            span.name,
            attr(span, "meridian.region")
        );
        assert_eq!(
            span.parent_span_id,
            Some(root),
            "{} is not under the ticket's root",
            span.name
        );
        assert_eq!(
            span.resource.get("service.name").map(String::as_str),
            Some("meridian-test")
        );
        assert!(
            REGIONS.contains(&attr(span, "meridian.region")),
            "{} names no region: {:?}",
            span.name,
            span.attributes
        );
    }

    // Create in us-east, linked to the caller's span.
    let create = named(&ours, "ticket.create", "us-east");
    assert_eq!(create.len(), 1, "{ours:#?}");
    let caller = meridian_telemetry::propagation::parse_traceparent(CALLER_TRACEPARENT).unwrap();
    assert_eq!(create[0].links, vec![(caller.trace_id(), caller.span_id())]);
    assert_eq!(named(&ours, "ticket.update", "us-east").len(), 1);
    assert_eq!(named(&ours, "ticket.note", "eu-west").len(), 1);

    // One handoff span per handoff in each region involved: the offer in
    // the owner, the answer in the target, linked to the offer.
    for (from, to, epoch) in [("us-east", "eu-west", "1"), ("eu-west", "apac-south", "2")] {
        let offers = named(&ours, "handoff.offer", from);
        assert_eq!(offers.len(), 1, "offers in {from}: {offers:#?}");
        assert_eq!(attr(offers[0], "meridian.handoff.to"), to);
        assert_eq!(attr(offers[0], "meridian.outcome"), "accepted");
        assert_eq!(
            attr(offers[0], "meridian.epoch"),
            epoch,
            "the new owner's epoch"
        );
        let accepts = named(&ours, "handoff.accept", to);
        assert_eq!(accepts.len(), 1, "answers in {to}: {accepts:#?}");
        assert_eq!(attr(accepts[0], "meridian.outcome"), "accepted");
        assert_eq!(attr(accepts[0], "meridian.epoch"), epoch);
        assert_eq!(
            accepts[0].links,
            vec![(trace_id, offers[0].span_id)],
            "the answer links to the offer"
        );
    }
    assert!(
        named(&ours, "handoff.offer", "apac-south").is_empty()
            && named(&ours, "handoff.accept", "us-east").is_empty()
    );

    // Apply spans: consumers in the ticket's trace, each linked to the
    // span that produced its event, in the region the event came from.
    let by_id: HashMap<SpanId, &ReceivedSpan> = ours.iter().map(|s| (s.span_id, *s)).collect();
    let applies: Vec<&ReceivedSpan> = ours.iter().copied().filter(|s| s.name == "apply").collect();
    for region in REGIONS {
        assert!(
            applies.iter().any(|s| attr(s, "meridian.region") == region),
            "no apply span in {region}"
        );
    }
    for apply in &applies {
        assert_eq!(apply.kind, SpanKind::Consumer);
        assert_ne!(
            attr(apply, "meridian.region"),
            attr(apply, "meridian.origin_region"),
            "a region applies only others' events"
        );
        assert_eq!(apply.links.len(), 1, "{apply:#?}");
        let (link_trace, link_span) = apply.links[0];
        assert_eq!(link_trace, trace_id);
        let producer = by_id
            .get(&link_span)
            .unwrap_or_else(|| panic!("the producer of {apply:#?} was not exported"));
        assert_eq!(
            attr(producer, "meridian.region"),
            attr(apply, "meridian.origin_region"),
            "{apply:#?} links to {producer:#?}"
        );
        assert!(
            producer.name != "apply",
            "a producer is a write, not an apply"
        );
    }

    mesh.stop().await;
    telemetry.shutdown().await.unwrap();
}

/// One HTTP/1.1 GET, as a scraper sends it; returns the body.
async fn scrape(addr: SocketAddr) -> String {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("no answer within 10 s");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The value of the sample `series` (name and labels exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_handoff_queues_and_lag_of_every_region() {
    let receiver = OtlpReceiver::start().await.unwrap();
    // Built, not installed: these metrics are the mesh's through its config.
    let (mut telemetry, _dispatch) = Telemetry::build(&config(&receiver)).unwrap();
    let addr = telemetry
        .serve_metrics("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let metrics = telemetry.metrics().clone();
    let mesh = Mesh::start(Options {
        at: EU_AND_APAC_ON_SHIFT,
        metrics: Some(metrics),
        ..Options::default()
    })
    .await;
    journey(&mesh, false).await;
    mesh.wait_quiet().await;

    let text = scrape(addr).await;
    let accepted = r#"meridian_handoffs_total{meridian_region="us-east",outcome="accepted"}"#;
    assert_eq!(sample(&text, accepted), Some(1.0), "{text}");
    assert!(!text.contains(r#"outcome="refused""#), "{text}");
    let latency_count =
        r#"meridian_handoff_latency_seconds_count{meridian_region="us-east",outcome="accepted"}"#;
    assert_eq!(sample(&text, latency_count), Some(1.0), "{text}");
    let latency_sum =
        r#"meridian_handoff_latency_seconds_sum{meridian_region="us-east",outcome="accepted"}"#;
    assert!(
        sample(&text, latency_sum).is_some_and(|s| s > 0.0 && s < 30.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"meridian_handoff_notes_total{auto="false",meridian_region="us-east"}"#
        ),
        Some(1.0),
        "{text}"
    );

    // Lag per peer, in events and seconds, for every region.
    for region in REGIONS {
        for peer in REGIONS.iter().filter(|p| **p != region) {
            let labels = format!(r#"{{meridian_region="{region}",peer="{peer}"}}"#);
            let events = sample(&text, &format!("meridian_replication_lag_events{labels}"));
            assert!(
                events.is_some_and(|e| e >= 0.0),
                "no lag in events for {region} → {peer}: {text}"
            );
            let seconds = sample(&text, &format!("meridian_replication_lag_seconds{labels}"));
            assert!(
                seconds.is_some_and(|s| (0.0..60.0).contains(&s)),
                "no lag in seconds for {region} → {peer}: {text}"
            );
        }
        assert_eq!(
            sample(
                &text,
                &format!(r#"meridian_lease_fenced{{meridian_region="{region}"}}"#)
            ),
            Some(0.0),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                r#"meridian_rules_version{{meridian_region="{region}",version="#
            )),
            "{text}"
        );
    }

    // Queue depth per region and status matches what ListTickets shows,
    // once the next count has run.
    let mut expected = BTreeMap::new();
    for region in REGIONS {
        for status in [v1::Status::New, v1::Status::Open, v1::Status::Solved] {
            let listed = mesh
                .client(region)
                .await
                .list_tickets(v1::ListTicketsRequest {
                    owner_region: region.into(),
                    status: status.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .tickets
                .len();
            let name = status
                .as_str_name()
                .trim_start_matches("STATUS_")
                .to_ascii_lowercase();
            expected.insert(
                format!(r#"meridian_queue_depth{{meridian_region="{region}",status="{name}"}}"#),
                listed as f64,
            );
        }
    }
    assert_eq!(
        expected[r#"meridian_queue_depth{meridian_region="eu-west",status="open"}"#],
        1.0
    );
    let mut text = scrape(addr).await;
    for _ in 0..100 {
        if expected
            .iter()
            .all(|(series, value)| sample(&text, series) == Some(*value))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = scrape(addr).await;
    }
    for (series, value) in &expected {
        assert_eq!(sample(&text, series), Some(*value), "{series}: {text}");
    }

    // The same instruments reach the collector over OTLP.
    mesh.stop().await;
    telemetry.shutdown().await.unwrap();
    let names = receiver.metric_names();
    for name in [
        "meridian.handoffs",
        "meridian.handoff.latency",
        "meridian.queue.depth",
        "meridian.replication.lag.events",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} not exported over OTLP: {names:?}"
        );
    }
}
