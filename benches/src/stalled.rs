//! `stalled`: what clients that open `WatchEvents` streams and never read
//! them cost a gateway. One gateway runs in a process of its own (this
//! binary with `--serve-gateway`) over a region log of 1,000 events of
//! about 1 KB; raw HTTP/2 clients open 1,000 streams over 10 connections,
//! each asking for the whole log, and read nothing. The figures are the
//! gateway's resident memory idle and with the streams held, and
//! `GetStatus` latency on an idle gateway and while the streams are held.

// A benchmark stops loudly on the first failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use meridian_proto::v1::{
    self, ticket_service_client::TicketServiceClient, watch_events_request::Scope,
};
use prost::Message;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;

use crate::{
    Sizes,
    progress::Progress,
    report::{Row, ScenarioReport},
    scale::memory_mb,
};

pub async fn run(sizes: &Sizes, progress: &Progress) -> anyhow::Result<ScenarioReport> {
    let (events, streams, calls) = if sizes.smoke {
        (100, 100, 20)
    } else {
        (1_000, 1_000, 200)
    };
    let connections = 10;
    let mut report = ScenarioReport::new(
        "stalled",
        format!(
            "one gateway (SQLite) in its own process with {events} events of ~1 KB; {streams} WatchEvents streams from the whole log over {connections} raw HTTP/2 connections that never read; {calls} GetStatus calls idle and while held"
        ),
    );
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("gateway.db");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "region = \"us-east\"\nregions = [\"us-east\"]\nlisten = \"127.0.0.1:0\"\n\n[database]\nurl = \"sqlite:{}?mode=rwc\"\n",
            db.display()
        ),
    )?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--serve-gateway")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("the gateway exited at once"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let addr: SocketAddr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.strip_prefix("listening ") {
                return Ok(addr.parse()?);
            }
        }
        anyhow::bail!("the gateway stopped before listening")
    })
    .await??;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    progress.say(&format!("writing {events} events"));
    fill(&channel, events).await?;

    let idle_latency = get_status(&channel, calls).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_idle_mb, _) = memory_mb(pid)?;

    progress.say(&format!("opening {streams} stalled streams"));
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(raw_connection(addr).await?);
    }
    let (mut held, mut refused) = (Vec::new(), 0usize);
    for i in 0..streams {
        let (head, body) = open_watch(&mut clients[i % connections], addr).await?;
        if head.headers.contains_key("grpc-status") {
            refused += 1;
        } else {
            held.push(body);
        }
    }
    // Let every held stream fill whatever it may.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss_held_mb, rss_peak_mb) = memory_mb(pid)?;
    let held_latency = get_status(&channel, calls).await?;

    let base = report.row(Row::new("gateway RSS, idle", rss_idle_mb, "MB").baseline());
    report.row(
        Row::new(
            format!("gateway RSS, {streams} stalled streams opened"),
            rss_held_mb,
            "MB",
        )
        .against(&base),
    );
    report.row(Row::new("gateway peak RSS", rss_peak_mb, "MB"));
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let base = report.row(
        Row::new("GetStatus, idle", ms(&idle_latency, 0.5), "ms")
            .latency(ms(&idle_latency, 0.5), ms(&idle_latency, 0.99))
            .baseline(),
    );
    report.row(
        Row::new(
            format!("GetStatus, {streams} stalled streams"),
            ms(&held_latency, 0.5),
            "ms",
        )
        .latency(ms(&held_latency, 0.5), ms(&held_latency, 0.99))
        .against(&base),
    );
    report.target(
        &format!("RSS growth with {streams} stalled streams"),
        100.0,
        rss_held_mb - rss_idle_mb,
        "MB",
        false,
    );
    report.notes.push(format!(
        "{} streams held, {refused} refused with RESOURCE_EXHAUSTED (the per-principal cap; all come from one address)",
        held.len()
    ));
    drop(held);
    drop(clients);
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    Ok(report)
}

async fn fill(channel: &Channel, events: usize) -> anyhow::Result<()> {
    let body = "x".repeat(1_000);
    let mut pending = Vec::new();
    for i in 0..events {
        let mut client = TicketServiceClient::new(channel.clone());
        let request = v1::CreateTicketRequest {
            subject: format!("ticket {i}"),
            body: body.clone(),
            customer: "acme".into(),
            tier: "standard".into(),
            ..Default::default()
        };
        pending.push(tokio::spawn(
            async move { client.create_ticket(request).await },
        ));
        if pending.len() == 32 {
            for created in pending.drain(..) {
                created.await??;
            }
        }
    }
    for created in pending {
        created.await??;
    }
    Ok(())
}

async fn get_status(channel: &Channel, calls: usize) -> anyhow::Result<Histogram<u64>> {
    let mut client = TicketServiceClient::new(channel.clone());
    let mut latencies = Histogram::<u64>::new(3)?;
    for _ in 0..calls {
        let started = Instant::now();
        tokio::time::timeout(
            Duration::from_secs(30),
            client.get_status(v1::GetStatusRequest {}),
        )
        .await??;
        latencies.record(u64::try_from(started.elapsed().as_micros())?)?;
    }
    Ok(latencies)
}

async fn raw_connection(addr: SocketAddr) -> anyhow::Result<h2::client::SendRequest<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (client, connection) = h2::client::handshake(tcp).await?;
    // Answers pings and settings; never reads data.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn open_watch(
    client: &mut h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
) -> anyhow::Result<(http::response::Parts, h2::RecvStream)> {
    let mut ready = client.clone().ready().await?;
    let head = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}/meridian.v1.TicketService/WatchEvents"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let (response, mut send) = ready.send_request(head, false)?;
    let request = v1::WatchEventsRequest {
        scope: Some(Scope::Region("us-east".into())),
        after_seq: 0,
    };
    let message = request.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(message.len())?);
    frame.put_slice(&message);
    send.send_data(frame.freeze(), true)?;
    *client = ready;
    let response = tokio::time::timeout(Duration::from_secs(30), response).await??;
    Ok(response.into_parts())
}
