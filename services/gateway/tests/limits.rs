//! What a client can hold on a gateway's public port, black box over real
//! loopback sockets: `WatchEvents` streams that are never read (memory stays
//! bounded, the gateway keeps answering, streams past the per-principal cap
//! are refused, a stalled stream is cut off with the cursor to resume
//! from), and connections that never finish their handshake (TCP only, or
//! TLS without HTTP/2), which are closed within the handshake timeout.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use meridian_core::RegionId;
use meridian_gateway::{GatewayConfig, TlsFiles};
use meridian_proto::v1::{
    self, ticket_service_client::TicketServiceClient, watch_events_request::Scope,
};
use meridian_test_support::{Backing, TestDatabase};
use prost::Message;
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};
use tonic::transport::Channel;

struct Gateway {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<meridian_gateway::Result<()>>,
    db: TestDatabase,
}

impl Gateway {
    async fn start(adjust: impl FnOnce(&mut GatewayConfig)) -> Gateway {
        let db = TestDatabase::new(Backing::Sqlite).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let region = RegionId::new("us-east").unwrap();
        let mut config = GatewayConfig::new(region.clone(), vec![region], addr, db.config());
        adjust(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(meridian_gateway::run(config, listener, async {
            let _ = stopped.await;
        }));
        Gateway {
            addr,
            stop: Some(stop),
            task,
            db,
        }
    }

    async fn client(&self) -> TicketServiceClient<Channel> {
        let url = format!("http://{}", self.addr);
        for _ in 0..100 {
            if let Ok(client) = TicketServiceClient::connect(url.clone()).await {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{url} never accepted a connection");
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Streams the test left open must not hold the shutdown up.
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        self.db.drop_now().await;
    }
}

/// Creates `count` tickets with a 1 KB body each: the region's log, which
/// every stream below is asked to replay.
async fn backlog(client: &TicketServiceClient<Channel>, count: usize) {
    let body = "x".repeat(1_000);
    let mut pending = Vec::new();
    for i in 0..count {
        let mut client = client.clone();
        let request = v1::CreateTicketRequest {
            subject: format!("ticket {i}"),
            body: body.clone(),
            customer: "acme".into(),
            tier: "standard".into(),
            ..Default::default()
        };
        pending.push(tokio::spawn(async move {
            client.create_ticket(request).await.unwrap()
        }));
        if pending.len() == 50 {
            for created in pending.drain(..) {
                created.await.unwrap();
            }
        }
    }
    for created in pending {
        created.await.unwrap();
    }
}

/// The resident set of this process (gateway and clients), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// One gRPC message frame: uncompressed, length-prefixed.
fn grpc_frame(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + body.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(body.len()).unwrap());
    frame.put_slice(&body);
    frame.freeze()
}

fn watch_region(after_seq: u64) -> v1::WatchEventsRequest {
    v1::WatchEventsRequest {
        scope: Some(Scope::Region("us-east".into())),
        after_seq,
    }
}

/// A raw HTTP/2 connection whose streams this test opens and never reads:
/// the client grants the server its default 64 KB windows and no more.
async fn raw_connection(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    // The connection task answers pings and settings; it reads no data.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Opens a `WatchEvents` stream; returns the response head and the body,
/// which the caller may leave unread.
async fn open_watch(
    client: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    request: &v1::WatchEventsRequest,
) -> (http::response::Parts, h2::RecvStream) {
    let mut ready = client.clone().ready().await.unwrap();
    let head = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}/meridian.v1.TicketService/WatchEvents"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = ready.send_request(head, false).unwrap();
    send.send_data(grpc_frame(request), true).unwrap();
    *client = ready;
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .unwrap()
        .unwrap();
    response.into_parts()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_watch_streams_cost_bounded_memory() {
    let gateway = Gateway::start(|_| {}).await;
    let client = gateway.client().await;
    backlog(&client, 1_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_bytes();

    // 1,000 streams over 10 connections, each asking for the whole log
    // and never reading a byte of it.
    let mut connections = Vec::new();
    for _ in 0..10 {
        connections.push(raw_connection(gateway.addr).await);
    }
    let (mut accepted, mut refused) = (Vec::new(), 0);
    let mut refusal = String::new();
    for i in 0..1_000 {
        let (head, body) =
            open_watch(&mut connections[i % 10], gateway.addr, &watch_region(0)).await;
        match head.headers.get("grpc-status") {
            None => accepted.push(body),
            Some(code) => {
                assert_eq!(code, "8", "a stream past the cap is RESOURCE_EXHAUSTED");
                refused += 1;
                // grpc-message is percent-encoded; spaces are all it has.
                refusal = head
                    .headers
                    .get("grpc-message")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .replace("%20", " ");
            }
        }
    }
    // Give every accepted stream time to fill whatever it is allowed to.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = rss_bytes();
    let growth_mb = held.saturating_sub(idle) as f64 / 1e6;
    eprintln!(
        "rss idle {:.1} MB, with {} stalled streams {:.1} MB (+{growth_mb:.1} MB); {refused} refused",
        idle as f64 / 1e6,
        accepted.len(),
        held as f64 / 1e6
    );
    assert!(
        growth_mb < 100.0,
        "1,000 stalled streams grew the process by {growth_mb:.1} MB"
    );
    assert_eq!(
        accepted.len(),
        meridian_gateway::watch::WATCH_STREAMS_PER_PRINCIPAL_MAX,
        "{refusal}"
    );
    assert!(refusal.contains("watch streams open"), "{refusal}");

    // Everyone else is still served.
    let mut status_client = gateway.client().await;
    let status = tokio::time::timeout(
        Duration::from_secs(5),
        status_client.get_status(v1::GetStatusRequest {}),
    )
    .await
    .expect("GetStatus answered while 1,000 streams stall")
    .unwrap()
    .into_inner();
    assert_eq!(status.local_head, 1_000);

    drop(accepted);
    drop(connections);
    gateway.stop().await;
}

/// Reads a whole gRPC response body: the events, then the trailers.
async fn read_all(mut body: h2::RecvStream) -> (Vec<v1::Event>, http::HeaderMap) {
    let mut bytes = BytesMut::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.data())
        .await
        .unwrap()
    {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        bytes.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    let mut events = Vec::new();
    let mut bytes = bytes.freeze();
    while bytes.remaining() >= 5 {
        let _compressed = bytes.get_u8();
        let len = bytes.get_u32() as usize;
        events.push(v1::Event::decode(bytes.split_to(len)).unwrap());
    }
    (events, trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_is_cut_off_with_the_cursor_to_resume_from() {
    let gateway =
        Gateway::start(|config| config.limits.watch_stall_timeout = Duration::from_millis(300))
            .await;
    let client = gateway.client().await;
    backlog(&client, 400).await;

    let mut connection = raw_connection(gateway.addr).await;
    let (head, body) = open_watch(&mut connection, gateway.addr, &watch_region(0)).await;
    assert!(head.headers.get("grpc-status").is_none(), "{head:?}");
    // The reader stops for longer than the stall timeout.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (events, trailers) = read_all(body).await;
    assert_eq!(trailers.get("grpc-status").unwrap(), "8", "{trailers:?}");
    let message = trailers
        .get("grpc-message")
        .unwrap()
        .to_str()
        .unwrap()
        .replace("%20", " ");
    let last = events.last().map_or(0, |e| e.origin_seq);
    assert!(
        last < 400,
        "the whole backlog fitted; nothing was cut off ({last})"
    );
    assert!(
        message.contains(&format!("after_seq={last}")),
        "{message} (last delivered {last})"
    );
    // The events delivered are the log's first ones, in order, no gaps.
    let seqs: Vec<u64> = events.iter().map(|e| e.origin_seq).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>());

    // Resuming from the cursor delivers the rest.
    let (head, body) = open_watch(&mut connection, gateway.addr, &watch_region(last)).await;
    assert!(head.headers.get("grpc-status").is_none(), "{head:?}");
    let mut body = body;
    let mut rest = BytesMut::new();
    while rest.len() < 5 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.data())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        rest.extend_from_slice(&chunk);
    }
    let mut rest = rest.freeze();
    rest.advance(1);
    let len = rest.get_u32() as usize;
    while rest.len() < len {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.data())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        let mut joined = BytesMut::from(&rest[..]);
        joined.extend_from_slice(&chunk);
        rest = joined.freeze();
    }
    let next = v1::Event::decode(rest.split_to(len)).unwrap();
    assert_eq!(next.origin_seq, last + 1);

    drop(body);
    drop(connection);
    gateway.stop().await;
}

/// A CA and a server-only certificate for 127.0.0.1, as `meridian up`
/// issues for a public port.
fn public_tls(dir: &std::path::Path) -> (TlsFiles, meridian_tls::rustls::RootCertStore, String) {
    use meridian_tls::rustls::pki_types::{CertificateDer, pem::PemObject};
    let validity = meridian_tls::Validity::days_from(SystemTime::now(), 30);
    let ca = meridian_tls::dev_ca(
        &meridian_tls::TrustDomain::new("meridian.test").unwrap(),
        validity,
    )
    .unwrap();
    let (cert, key) = meridian_tls::issue_server(&ca, &["localhost".to_owned()], validity).unwrap();
    std::fs::write(dir.join("public.pem"), cert).unwrap();
    std::fs::write(dir.join("public.key"), key).unwrap();
    let mut roots = meridian_tls::rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    (
        TlsFiles {
            cert: dir.join("public.pem"),
            key: dir.join("public.key"),
        },
        roots,
        ca.cert_pem().to_owned(),
    )
}

/// Waits until the server closes `stream` (EOF or reset); how long it took.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    mut stream: S,
    started: Instant,
    limit: Duration,
) -> Duration {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {} ms", limit.as_millis()),
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_within_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (files, roots, ca_pem) = public_tls(dir.path());
    let timeout = Duration::from_secs(1);
    let gateway = Gateway::start(|config| {
        config.tls = Some(files);
        config.limits.public.handshake_timeout = timeout;
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut client_config = meridian_tls::rustls::ClientConfig::builder_with_provider(Arc::new(
        meridian_tls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    client_config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));

    let started = Instant::now();
    // TLS done, then silence: no HTTP/2 preface.
    let mut tls_only = Vec::new();
    for _ in 0..10 {
        let tcp = TcpStream::connect(gateway.addr).await.unwrap();
        let name = meridian_tls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tls_only.push(connector.connect(name, tcp).await.unwrap());
    }
    // TCP only: not even a ClientHello.
    let mut tcp_only = Vec::new();
    for _ in 0..100 {
        tcp_only.push(TcpStream::connect(gateway.addr).await.unwrap());
    }
    let limit = timeout + Duration::from_secs(2);
    let mut slowest = Duration::ZERO;
    for stream in tls_only {
        slowest = slowest.max(closed_within(stream, started, limit).await);
    }
    for stream in tcp_only {
        slowest = slowest.max(closed_within(stream, started, limit).await);
    }
    eprintln!(
        "110 half-open connections closed; the last after {} ms",
        slowest.as_millis()
    );

    // A real client is served all along.
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", gateway.addr))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem)),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    TicketServiceClient::new(channel)
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap();
    gateway.stop().await;
}
