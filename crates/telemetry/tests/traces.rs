//! Spans through the real pipeline: the tracing layer, the batch processor
//! and the OTLP/gRPC exporter, into a real OTLP receiver on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use meridian_core::{Epoch, EventEnvelope, EventKind, HlcTimestamp, RegionId, TicketId};
use meridian_telemetry::{
    Telemetry, TelemetryConfig,
    opentelemetry::{
        KeyValue,
        trace::{SpanId, TraceContextExt, TraceId},
    },
    propagation,
    testing::{OtlpReceiver, ReceivedSpan, SpanKind},
    ticket,
};
use tracing::dispatcher::{self, Dispatch};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How long a test waits for spans that should arrive within milliseconds.
const WAIT: Duration = Duration::from_secs(20);

fn config(receiver: &OtlpReceiver, region: &str, sample_ratio: f64) -> TelemetryConfig {
    TelemetryConfig {
        region: Some(region.to_owned()),
        otlp_endpoint: Some(receiver.endpoint()),
        sample_ratio,
        span_batch_delay: Duration::from_millis(50),
        ..TelemetryConfig::new("meridian-test")
    }
}

fn new_ticket() -> TicketId {
    TicketId::from_uuid(uuid::Uuid::now_v7()).unwrap()
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// Runs `f` with `dispatch` as this thread's subscriber.
fn within<T>(dispatch: &Dispatch, f: impl FnOnce() -> T) -> T {
    dispatcher::with_default(dispatch, f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_receiver_with_the_resource_attributes() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let config = config(&receiver, "eu-west", 1.0);
    let (telemetry, dispatch) = Telemetry::build(&config).unwrap();
    assert!(telemetry.exporting());

    within(&dispatch, || {
        let _span = tracing::info_span!("create", meridian.ticket_id = "t-1").entered();
        tracing::info!("inside the span");
    });

    let spans = receiver
        .wait_for_spans("the create span", WAIT, |s| !named(s, "create").is_empty())
        .await
        .unwrap();
    let create = named(&spans, "create")[0];
    assert_eq!(
        create.resource.get("service.name").map(String::as_str),
        Some("meridian-test")
    );
    assert_eq!(
        create.resource.get("service.instance.id"),
        Some(&config.service_instance_id)
    );
    assert_eq!(
        create.resource.get("meridian.region").map(String::as_str),
        Some("eu-west")
    );
    assert_eq!(
        create
            .attributes
            .get("meridian.ticket_id")
            .map(String::as_str),
        Some("t-1")
    );
    telemetry.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_for_one_ticket_share_its_trace_id_across_regions() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let (us, us_dispatch) = Telemetry::build(&config(&receiver, "us-east", 1.0)).unwrap();
    let (eu, eu_dispatch) = Telemetry::build(&config(&receiver, "eu-west", 1.0)).unwrap();
    let ticket_id = new_ticket();
    let other_ticket = new_ticket();

    within(&us_dispatch, || {
        let span = tracing::info_span!("create");
        ticket::set_ticket_parent(&span, ticket_id).unwrap();
        let _entered = span.enter();
        // A child made the ordinary way inherits the ticket's trace.
        let _child = tracing::info_span!("store.write").entered();
    });
    within(&eu_dispatch, || {
        let span = tracing::info_span!("handoff.accept");
        ticket::set_ticket_parent(&span, ticket_id).unwrap();
        let _entered = span.enter();
    });
    within(&eu_dispatch, || {
        let span = tracing::info_span!("create");
        ticket::set_ticket_parent(&span, other_ticket).unwrap();
        let _entered = span.enter();
    });

    let spans = receiver
        .wait_for_spans("four spans", WAIT, |s| s.len() >= 4)
        .await
        .unwrap();
    let trace = ticket::trace_id(ticket_id);
    assert_eq!(
        trace.to_bytes(),
        ticket_id.as_u128().to_be_bytes(),
        "the trace id is the ticket id's bits"
    );
    let in_trace: Vec<_> = spans.iter().filter(|s| s.trace_id == trace).collect();
    let mut names: Vec<_> = in_trace.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["create", "handoff.accept", "store.write"]);

    let root = ticket::root_span_id(ticket_id);
    let create = in_trace.iter().find(|s| s.name == "create").unwrap();
    let accept = in_trace
        .iter()
        .find(|s| s.name == "handoff.accept")
        .unwrap();
    let write = in_trace.iter().find(|s| s.name == "store.write").unwrap();
    assert_eq!(
        create.parent_span_id,
        Some(root),
        "regions' spans sit under the ticket's one root"
    );
    assert_eq!(accept.parent_span_id, Some(root));
    assert_eq!(write.parent_span_id, Some(create.span_id));
    assert_eq!(
        create.resource.get("meridian.region").map(String::as_str),
        Some("us-east")
    );
    assert_eq!(
        accept.resource.get("meridian.region").map(String::as_str),
        Some("eu-west")
    );

    let other = spans
        .iter()
        .find(|s| s.trace_id == ticket::trace_id(other_ticket))
        .unwrap();
    assert_eq!(
        other.parent_span_id,
        Some(ticket::root_span_id(other_ticket))
    );
    assert_ne!(ticket::root_span_id(other_ticket), root);

    us.shutdown().await.unwrap();
    eu.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_round_trips_through_metadata_and_the_event_envelope() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let (telemetry, dispatch) = Telemetry::build(&config(&receiver, "us-east", 1.0)).unwrap();
    let ticket_id = new_ticket();

    let (span_context, metadata, traceparent) = within(&dispatch, || {
        let span = tracing::info_span!("handoff.offer");
        ticket::set_ticket_parent(&span, ticket_id).unwrap();
        let _entered = span.enter();
        let span_context = span.context().span().span_context().clone();
        let mut metadata = tonic::metadata::MetadataMap::new();
        propagation::inject_current_metadata(&mut metadata);
        (span_context, metadata, propagation::current_traceparent())
    });
    assert!(span_context.is_valid() && span_context.is_sampled());
    assert_eq!(span_context.trace_id(), ticket::trace_id(ticket_id));

    // Through gRPC metadata, as a server would read the caller's context.
    assert_eq!(
        metadata.get("traceparent").and_then(|v| v.to_str().ok()),
        Some(propagation::format_traceparent(&span_context).as_str())
    );
    let extracted = propagation::extract_metadata(&metadata);
    let remote = extracted.span().span_context().clone();
    assert!(remote.is_remote());
    assert_eq!(
        (remote.trace_id(), remote.span_id(), remote.trace_flags()),
        (
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags()
        )
    );

    // Through the envelope, serialized as the store and the replication
    // stream carry it.
    let envelope = EventEnvelope {
        origin_region: RegionId::new("us-east").unwrap(),
        origin_seq: 7,
        ticket_id,
        epoch: Epoch::initial(0),
        hlc_time: HlcTimestamp::new(1_700_000_000_000, 0),
        traceparent: traceparent.clone(),
        actor: None,
        kind: EventKind::HandoffRefused {
            to: RegionId::new("eu-west").unwrap(),
            reason: "test".to_owned(),
        },
    };
    let stored = serde_json::to_string(&envelope).unwrap();
    let replicated: EventEnvelope = serde_json::from_str(&stored).unwrap();
    let parsed =
        propagation::parse_traceparent(replicated.traceparent.as_deref().unwrap()).unwrap();
    assert_eq!(
        (parsed.trace_id(), parsed.span_id()),
        (span_context.trace_id(), span_context.span_id())
    );
    assert!(parsed.is_sampled() && parsed.is_remote());

    // With no span there is nothing to carry.
    within(&dispatch, || {
        assert_eq!(propagation::current_traceparent(), None)
    });
    let mut empty = tonic::metadata::MetadataMap::new();
    within(&dispatch, || {
        propagation::inject_current_metadata(&mut empty)
    });
    assert!(empty.get("traceparent").is_none());
    telemetry.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_span_sits_in_the_tickets_trace_and_links_to_its_producer() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let (producer, producer_dispatch) =
        Telemetry::build(&config(&receiver, "us-east", 1.0)).unwrap();
    let (consumer, consumer_dispatch) =
        Telemetry::build(&config(&receiver, "eu-west", 1.0)).unwrap();
    let ticket_id = new_ticket();

    // The producing region writes an event from inside its span and stores
    // the span's traceparent in the envelope.
    let traceparent = within(&producer_dispatch, || {
        let span = tracing::info_span!("handoff.offer", otel.kind = "producer");
        ticket::set_ticket_parent(&span, ticket_id).unwrap();
        let _entered = span.enter();
        propagation::current_traceparent().unwrap()
    });
    // Another region applies it.
    within(&consumer_dispatch, || {
        let span = ticket::apply_span(ticket_id, Some(&traceparent));
        span.record("meridian.region", "eu-west");
        span.record("meridian.origin_seq", 7);
        let _entered = span.enter();
    });

    let spans = receiver
        .wait_for_spans("offer and apply", WAIT, |s| s.len() >= 2)
        .await
        .unwrap();
    let offer = named(&spans, "handoff.offer")[0];
    let apply = named(&spans, "apply")[0];
    assert_eq!(apply.trace_id, ticket::trace_id(ticket_id));
    assert_eq!(apply.parent_span_id, Some(ticket::root_span_id(ticket_id)));
    assert_eq!(
        apply.links,
        vec![(offer.trace_id, offer.span_id)],
        "the apply span links to the producer"
    );
    assert_eq!(apply.kind, SpanKind::Consumer);
    assert_eq!(offer.kind, SpanKind::Producer);
    assert_eq!(
        apply.attributes.get("meridian.ticket_id"),
        Some(&ticket_id.to_string())
    );
    assert_eq!(
        apply
            .attributes
            .get("meridian.origin_seq")
            .map(String::as_str),
        Some("7")
    );
    assert_eq!(
        apply.resource.get("meridian.region").map(String::as_str),
        Some("eu-west")
    );

    // A malformed traceparent costs the link, not the span.
    within(&consumer_dispatch, || {
        let _entered = ticket::apply_span(ticket_id, Some("garbage")).entered();
    });
    let spans = receiver
        .wait_for_spans("the second apply", WAIT, |s| named(s, "apply").len() >= 2)
        .await
        .unwrap();
    assert!(
        named(&spans, "apply")
            .iter()
            .any(|s| s.links.is_empty() && s.trace_id == ticket::trace_id(ticket_id))
    );

    producer.shutdown().await.unwrap();
    consumer.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_at_zero_exports_no_spans_and_at_one_exports_all() {
    let none_receiver = OtlpReceiver::start().await.unwrap();
    let all_receiver = OtlpReceiver::start().await.unwrap();
    let (none, none_dispatch) = Telemetry::build(&config(&none_receiver, "us-east", 0.0)).unwrap();
    let (all, all_dispatch) = Telemetry::build(&config(&all_receiver, "us-east", 1.0)).unwrap();
    let tickets: Vec<TicketId> = (0..40).map(|_| new_ticket()).collect();

    for (telemetry, dispatch) in [(&none, &none_dispatch), (&all, &all_dispatch)] {
        within(dispatch, || {
            for ticket_id in &tickets {
                let span = tracing::info_span!("create");
                ticket::set_ticket_parent(&span, *ticket_id).unwrap();
                let _entered = span.enter();
                let _child = tracing::info_span!("store.write").entered();
            }
            for _ in 0..10 {
                let _root = tracing::info_span!("housekeeping").entered();
            }
        });
        // A metric proves the unsampled process reached its collector.
        telemetry
            .metrics()
            .meter("test")
            .u64_counter("test.spans.made")
            .build()
            .add(1, &[]);
    }
    none.shutdown().await.unwrap();
    all.shutdown().await.unwrap();

    // Shutdown returns after the final export has been answered, so what
    // the receivers hold now is everything they will get.
    assert_eq!(all_receiver.spans().len(), 90, "100% keeps every span");
    assert!(
        none_receiver.spans().is_empty(),
        "0% exported {:?}",
        none_receiver.spans()
    );
    assert!(
        none_receiver
            .metric_names()
            .contains(&"test.spans.made".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_spans_still_waiting_for_their_batch() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let config = TelemetryConfig {
        // Far longer than the test: only the flush can send these.
        span_batch_delay: Duration::from_secs(3600),
        ..config(&receiver, "apac-south", 1.0)
    };
    let (telemetry, dispatch) = Telemetry::build(&config).unwrap();
    within(&dispatch, || {
        for _ in 0..5 {
            let _span = tracing::info_span!("pending").entered();
        }
    });
    assert!(
        receiver.spans().is_empty(),
        "the batch went out before the flush"
    );
    telemetry.shutdown().await.unwrap();
    assert_eq!(named(&receiver.spans(), "pending").len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_guard_flushes_too() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let config = TelemetryConfig {
        span_batch_delay: Duration::from_secs(3600),
        ..config(&receiver, "us-east", 1.0)
    };
    let (telemetry, dispatch) = Telemetry::build(&config).unwrap();
    within(&dispatch, || {
        let _span = tracing::info_span!("dropped").entered();
    });
    drop(telemetry);
    assert_eq!(named(&receiver.spans(), "dropped").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reach_the_receiver_over_otlp() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let config = TelemetryConfig {
        metrics_export_interval: Duration::from_millis(100),
        ..config(&receiver, "us-east", 1.0)
    };
    let (telemetry, _dispatch) = Telemetry::build(&config).unwrap();
    let meter = telemetry.metrics().meter("test");
    meter
        .u64_counter("meridian.handoffs")
        .build()
        .add(2, &[KeyValue::new("outcome", "accepted")]);
    meter
        .f64_histogram("meridian.handoff.latency")
        .with_unit("s")
        .build()
        .record(0.3, &[]);

    // Pushed on the export interval, before any shutdown.
    let names = receiver
        .wait_until("both metrics", WAIT, || {
            let names = receiver.metric_names();
            (names.contains(&"meridian.handoffs".to_owned())
                && names.contains(&"meridian.handoff.latency".to_owned()))
            .then_some(names)
        })
        .await
        .unwrap();
    assert!(!names.is_empty());
    let resource = receiver.metrics()[0].resource.clone().unwrap();
    assert!(
        resource
            .attributes
            .iter()
            .any(|kv| kv.key == "meridian.region")
    );
    telemetry.shutdown().await.unwrap();
}

#[test]
fn root_ids_are_the_same_in_every_process() {
    // The virtual root is derived, never stored: any region computes it.
    let ticket_id = new_ticket();
    assert_eq!(
        ticket::root_span_id(ticket_id),
        ticket::root_span_id(ticket_id.to_string().parse().unwrap())
    );
    assert_ne!(ticket::trace_id(ticket_id), TraceId::INVALID);
    assert_ne!(ticket::root_span_id(ticket_id), SpanId::INVALID);
}
