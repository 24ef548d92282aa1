//! `scale`: what one gateway costs when it holds a region's whole history,
//! and how long the mesh takes to live through a week.
//!
//! 1. **A million tickets.** The tickets are written straight into a SQLite
//!    store (group commit, as a gateway writes them), then a gateway is
//!    started on that file in a process of its own (this binary with
//!    `--serve-gateway`), so that its resident memory is its own. It is
//!    measured idle, then while `ListTickets` (unfiltered, by tier, by
//!    assignee, and pages deep through page tokens) and `GetTicket` run
//!    against it over gRPC. The same gateway on an empty database is the
//!    baseline of both.
//! 2. **A simulated week** (`week`): ten regions around the globe with
//!    their own gateways, mutual-TLS mesh and follow-the-sun rules, on a
//!    manual clock driven through seven days; tickets arrive all week,
//!    routed by the rules, and every shift end hands the open ones on.
//!    The figure is the wall-clock time the week takes.

// A benchmark stops loudly on the first failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use futures::StreamExt;
use hdrhistogram::Histogram;
use meridian_core::{RegionId, TicketId, Tier};
use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};
use meridian_store::{Store, StoreConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;

use crate::{
    Sizes,
    catchup::{meta, ticket},
    progress::Progress,
    report::{Chart, Row, ScenarioReport, Series, ms},
};

mod week;

const TIERS: [&str; 3] = ["standard", "premium", "enterprise"];
const AGENTS: usize = 100;

/// Serves one gateway from `config` until stdin closes (the parent's
/// handle on this process), printing `listening ADDR` once bound.
pub async fn serve_gateway(config: &Path) -> anyhow::Result<()> {
    let config = meridian_gateway::GatewayConfig::load(config)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    println!("listening {}", listener.local_addr()?);
    let stdin_closed = async {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(_)) = lines.next_line().await {}
    };
    meridian_gateway::run(config, listener, stdin_closed).await?;
    Ok(())
}

pub async fn run(sizes: &Sizes, progress: &Progress) -> anyhow::Result<ScenarioReport> {
    let (tickets, queries) = if sizes.smoke {
        (2_000, 40)
    } else {
        (1_000_000, 2_000)
    };
    let mut report = ScenarioReport::new(
        "scale",
        format!(
            "one gateway (SQLite WAL, synchronous=FULL) in its own process holding {tickets} tickets, {queries} queries of each kind from 4 callers; a simulated week of ten regions"
        ),
    );
    let empty = measure_gateway(0, queries, progress).await?;
    let full = measure_gateway(tickets, queries, progress).await?;

    let base = report
        .row(Row::new("gateway RSS, empty database, idle", empty.rss_idle_mb, "MB").baseline());
    report.row(
        Row::new(
            format!("gateway RSS, {tickets} tickets, idle"),
            full.rss_idle_mb,
            "MB",
        )
        .against(&base),
    );
    let base = report.row(
        Row::new(
            "gateway RSS, empty database, after queries",
            empty.rss_after_mb,
            "MB",
        )
        .baseline(),
    );
    report.row(
        Row::new(
            format!("gateway RSS, {tickets} tickets, after queries"),
            full.rss_after_mb,
            "MB",
        )
        .against(&base),
    );
    report.row(Row::new(
        format!("gateway peak RSS, {tickets} tickets"),
        full.rss_peak_mb,
        "MB",
    ));
    for ((kind, empty_h), (_, full_h)) in empty.latencies.iter().zip(&full.latencies) {
        let mut row = Row::new(
            format!("{kind}, {tickets} tickets"),
            ms(full_h.value_at_quantile(0.5)),
            "ms",
        )
        .latency(
            ms(full_h.value_at_quantile(0.5)),
            ms(full_h.value_at_quantile(0.99)),
        );
        // An empty database has nothing to get and no second page.
        if !empty_h.is_empty() {
            let base = report.row(
                Row::new(
                    format!("{kind}, empty database"),
                    ms(empty_h.value_at_quantile(0.5)),
                    "ms",
                )
                .latency(
                    ms(empty_h.value_at_quantile(0.5)),
                    ms(empty_h.value_at_quantile(0.99)),
                )
                .baseline(),
            );
            row = row.against(&base);
        }
        report.row(row);
    }
    report.target(
        &format!("gateway RSS at {tickets} tickets"),
        200.0,
        full.rss_peak_mb,
        "MB",
        false,
    );
    let list_p99 = full
        .latencies
        .iter()
        .filter(|(kind, _)| kind.starts_with("ListTickets"))
        .map(|(_, h)| ms(h.value_at_quantile(0.99)))
        .fold(0.0, f64::max);
    report.target(
        &format!("ListTickets p99 at {tickets} tickets (worst kind)"),
        20.0,
        list_p99,
        "ms",
        false,
    );
    report.notes.push(format!(
        "filling the store with {tickets} tickets took {:.1} s",
        full.fill_s
    ));
    report.charts.push(Chart {
        name: "scale-list-latency".into(),
        title: format!("query latency at {tickets} tickets"),
        x_label: "percentile".into(),
        y_label: "latency (ms)".into(),
        log_x: false,
        log_y: true,
        x_ticks: ["p50", "p90", "p99", "p99.9", "max"]
            .iter()
            .enumerate()
            .map(|(i, p)| (i as f64, (*p).to_owned()))
            .collect(),
        series: full
            .latencies
            .iter()
            .map(|(kind, h)| Series {
                name: kind.clone(),
                points: [0.5, 0.9, 0.99, 0.999, 1.0]
                    .iter()
                    .enumerate()
                    .map(|(i, q)| (i as f64, ms(h.value_at_quantile(*q))))
                    .collect(),
            })
            .collect(),
    });

    week::run(sizes, progress, &mut report).await?;
    Ok(report)
}

/// One gateway's memory and query latencies.
struct GatewayFigures {
    fill_s: f64,
    rss_idle_mb: f64,
    rss_after_mb: f64,
    rss_peak_mb: f64,
    latencies: Vec<(String, Histogram<u64>)>,
}

/// `VmRSS` and `VmHWM` of a process, in MB.
pub(crate) fn memory_mb(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kib| kib / 1024.0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

async fn measure_gateway(
    tickets: usize,
    queries: usize,
    progress: &Progress,
) -> anyhow::Result<GatewayFigures> {
    let dir = tempfile::tempdir()?;
    let region = RegionId::new("us-east")?;
    let db = dir.path().join("gateway.db");
    let store = Store::open(&StoreConfig::sqlite_file(&db), &region).await?;
    let filling = Instant::now();
    let ids = fill(&store, tickets, progress).await?;
    let fill_s = filling.elapsed().as_secs_f64();
    store.close().await;

    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "region = \"us-east\"\nregions = [\"us-east\"]\nlisten = \"127.0.0.1:0\"\n\n[database]\nurl = \"sqlite:{}?mode=rwc\"\n",
            db.display()
        ),
    )?;
    progress.say(&format!("starting a gateway on {tickets} tickets"));
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
    let addr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(addr) = line.strip_prefix("listening ") {
                return Ok(addr.to_owned());
            }
        }
        anyhow::bail!("the gateway stopped before listening")
    })
    .await??;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    // Idle: after the first answer and a moment of quiet.
    TicketServiceClient::new(channel.clone())
        .list_tickets(v1::ListTicketsRequest::default())
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_idle_mb, _) = memory_mb(pid)?;

    let kinds: Vec<(&str, Query)> = vec![
        ("ListTickets first page", Query::First),
        ("ListTickets by tier", Query::Tier),
        ("ListTickets by assignee", Query::Assignee),
        ("ListTickets pages 2-5 by token", Query::Deep),
        ("GetTicket", Query::Get),
    ];
    let mut latencies = Vec::new();
    for (kind, query) in kinds {
        progress.say(&format!("{tickets} tickets: {queries} x {kind}"));
        latencies.push((
            kind.to_owned(),
            run_queries(&channel, query, queries, &ids).await?,
        ));
    }
    let (rss_after_mb, rss_peak_mb) = memory_mb(pid)?;
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    Ok(GatewayFigures {
        fill_s,
        rss_idle_mb,
        rss_after_mb,
        rss_peak_mb,
        latencies,
    })
}

#[derive(Clone, Copy)]
enum Query {
    First,
    Tier,
    Assignee,
    Deep,
    Get,
}

/// `count` queries of one kind from four closed-loop callers.
async fn run_queries(
    channel: &Channel,
    query: Query,
    count: usize,
    ids: &[TicketId],
) -> anyhow::Result<Histogram<u64>> {
    const CALLERS: usize = 4;
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let mut client = TicketServiceClient::new(channel.clone());
        let ids: Vec<TicketId> = ids
            .iter()
            .skip(caller)
            .step_by(97)
            .take(count)
            .copied()
            .collect();
        callers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            for i in (caller..count).step_by(CALLERS) {
                let request = |token: String| v1::ListTicketsRequest {
                    tier: if matches!(query, Query::Tier) {
                        TIERS[i % TIERS.len()].to_owned()
                    } else {
                        String::new()
                    },
                    assignee: if matches!(query, Query::Assignee) {
                        format!("agent-{}", i % AGENTS)
                    } else {
                        String::new()
                    },
                    page_size: 50,
                    page_token: token,
                    ..Default::default()
                };
                let started = Instant::now();
                match query {
                    Query::First | Query::Tier | Query::Assignee => {
                        client.list_tickets(request(String::new())).await?;
                    }
                    Query::Deep => {
                        // Each page's call is one sample: pages 2 to 5,
                        // reached through the tokens of the pages before.
                        let mut token = client
                            .list_tickets(request(String::new()))
                            .await?
                            .into_inner()
                            .next_page_token;
                        for _ in 1..5 {
                            if token.is_empty() {
                                break;
                            }
                            let page_started = Instant::now();
                            token = client
                                .list_tickets(request(token))
                                .await?
                                .into_inner()
                                .next_page_token;
                            histogram.record(page_started.elapsed().as_micros().max(1) as u64)?;
                        }
                        continue;
                    }
                    Query::Get => {
                        let Some(id) = ids.get(i / CALLERS % ids.len().max(1)) else {
                            continue;
                        };
                        client
                            .get_ticket(v1::GetTicketRequest {
                                ticket_id: id.to_string(),
                            })
                            .await?;
                    }
                }
                histogram.record(started.elapsed().as_micros().max(1) as u64)?;
            }
            anyhow::Ok(histogram)
        }));
    }
    let mut merged = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for caller in callers {
        merged.add(caller.await??)?;
    }
    Ok(merged)
}

/// Writes `n` tickets through the store's group commit: tiers and
/// assignees spread evenly so the filtered lists have work to do.
async fn fill(store: &Store, n: usize, progress: &Progress) -> anyhow::Result<Vec<TicketId>> {
    let region = store.local_region().clone();
    let mut ids = Vec::with_capacity(n);
    let mut written = futures::stream::iter(0..n)
        .map(|i| {
            let mut ticket = ticket(&region);
            ticket.tier = Tier::new(TIERS[i % TIERS.len()]).unwrap();
            ticket.assignee = Some(format!("agent-{}", i % AGENTS));
            ticket.customer = format!("customer-{}", i % 1000);
            async move {
                store
                    .create_ticket(ticket, meta())
                    .await
                    .map(|written| written.ticket_id)
            }
        })
        .buffer_unordered(256);
    while let Some(id) = written.next().await {
        ids.push(id?);
        if ids.len() % 50_000 == 0 {
            progress.say(&format!("filled {} of {n} tickets", ids.len()));
        }
    }
    Ok(ids)
}
