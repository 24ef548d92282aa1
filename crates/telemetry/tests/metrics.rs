//! The `/metrics` endpoint over real HTTP: what a Prometheus scrape sees
//! after a service records a counter and a histogram.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{net::SocketAddr, time::Duration};

use meridian_telemetry::{MetricsServer, Telemetry, TelemetryConfig, opentelemetry::KeyValue};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// One HTTP/1.1 request, as a scraper sends it; returns the status line,
/// the headers and the body.
async fn http(addr: SocketAddr, method: &str, path: &str) -> (String, String, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("no answer within 10 s");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (
        status.to_owned(),
        headers.to_ascii_lowercase(),
        body.to_owned(),
    )
}

#[tokio::test]
async fn metrics_endpoint_serves_a_counter_and_a_histogram_as_prometheus_text() {
    let config = TelemetryConfig {
        region: Some("eu-west".to_owned()),
        ..TelemetryConfig::new("meridian-gateway")
    };
    let (telemetry, _dispatch) = Telemetry::build(&config).unwrap();
    assert!(!telemetry.exporting(), "no endpoint, no export");
    let meter = telemetry.metrics().meter("meridian-gateway");
    let handoffs = meter
        .u64_counter("meridian.handoffs")
        .with_description("Handoffs by outcome.")
        .build();
    handoffs.add(2, &[KeyValue::new("outcome", "accepted")]);
    handoffs.add(1, &[KeyValue::new("outcome", "refused")]);
    let latency = meter
        .f64_histogram("meridian.handoff.latency")
        .with_unit("s")
        .with_boundaries(vec![0.1, 1.0, 10.0])
        .build();
    for seconds in [0.05, 0.5, 0.7, 30.0] {
        latency.record(seconds, &[KeyValue::new("to", "us-east")]);
    }
    let depth = meter.i64_up_down_counter("meridian.queue.depth").build();
    depth.add(5, &[KeyValue::new("status", "open")]);
    depth.add(-2, &[KeyValue::new("status", "open")]);

    let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), telemetry.metrics().clone())
        .await
        .unwrap();
    let (status, headers, body) = http(server.local_addr(), "GET", "/metrics").await;

    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    let lines: Vec<&str> = body.lines().collect();
    for expected in [
        "# HELP meridian_handoffs_total Handoffs by outcome.",
        "# TYPE meridian_handoffs_total counter",
        r#"meridian_handoffs_total{outcome="accepted"} 2"#,
        r#"meridian_handoffs_total{outcome="refused"} 1"#,
        "# TYPE meridian_handoff_latency_seconds histogram",
        r#"meridian_handoff_latency_seconds_bucket{to="us-east",le="0.1"} 1"#,
        r#"meridian_handoff_latency_seconds_bucket{to="us-east",le="1"} 3"#,
        r#"meridian_handoff_latency_seconds_bucket{to="us-east",le="10"} 3"#,
        r#"meridian_handoff_latency_seconds_bucket{to="us-east",le="+Inf"} 4"#,
        r#"meridian_handoff_latency_seconds_sum{to="us-east"} 31.25"#,
        r#"meridian_handoff_latency_seconds_count{to="us-east"} 4"#,
        "# TYPE meridian_queue_depth gauge",
        r#"meridian_queue_depth{status="open"} 3"#,
        "# TYPE target_info gauge",
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected:?} in:\n{body}"
        );
    }
    let target_info = lines
        .iter()
        .find(|l| l.starts_with("target_info{"))
        .unwrap();
    assert!(
        target_info.contains(r#"service_name="meridian-gateway""#),
        "{target_info}"
    );
    assert!(
        target_info.contains(r#"meridian_region="eu-west""#),
        "{target_info}"
    );
    assert!(target_info.ends_with(" 1"));

    // A later scrape sees later values: the reader collects on demand.
    handoffs.add(5, &[KeyValue::new("outcome", "accepted")]);
    let (_, _, body) = http(server.local_addr(), "GET", "/metrics").await;
    assert!(
        body.lines()
            .any(|l| l == r#"meridian_handoffs_total{outcome="accepted"} 7"#),
        "{body}"
    );

    let (status, _, _) = http(server.local_addr(), "GET", "/other").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _, _) = http(server.local_addr(), "POST", "/metrics").await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    telemetry.shutdown().await.unwrap();
}

/// The gateway reports the rules version from one observable gauge read
/// per collection: a scrape after a reload shows only the new version.
#[tokio::test]
async fn an_observable_gauge_reports_only_what_its_last_callback_saw() {
    let (telemetry, _dispatch) =
        Telemetry::build(&TelemetryConfig::new("meridian-gateway")).unwrap();
    let version = std::sync::Arc::new(std::sync::Mutex::new("v1"));
    let read = version.clone();
    let _gauge = telemetry
        .metrics()
        .meter("meridian-gateway")
        .u64_observable_gauge("meridian.rules.version")
        .with_callback(move |observer| {
            observer.observe(1, &[KeyValue::new("version", *read.lock().unwrap())])
        })
        .build();
    let versions = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("meridian_rules_version{"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        versions(&telemetry.metrics().render_prometheus().unwrap()),
        [r#"meridian_rules_version{version="v1"} 1"#]
    );
    *version.lock().unwrap() = "v2";
    assert_eq!(
        versions(&telemetry.metrics().render_prometheus().unwrap()),
        [r#"meridian_rules_version{version="v2"} 1"#]
    );
}

#[tokio::test]
async fn every_process_reports_its_resources_and_build() {
    let (telemetry, _dispatch) = Telemetry::build(&TelemetryConfig::new("meridian")).unwrap();
    let text = telemetry.metrics().render_prometheus().unwrap();
    for family in [
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_open_fds gauge",
        "# TYPE process_max_fds gauge",
        "# TYPE process_start_time_seconds gauge",
        "# TYPE meridian_build_info gauge",
    ] {
        assert!(
            text.lines().any(|l| l == family),
            "missing {family:?} in:\n{text}"
        );
    }
    let build = text
        .lines()
        .find(|l| l.starts_with("meridian_build_info{"))
        .unwrap();
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(
        build.contains(&version) && build.contains("commit=\"") && build.ends_with(" 1"),
        "{build}"
    );
}
