//! Email intake, mailbox side: messages per second from a real Dovecot
//! over IMAPS through `MailboxReader::poll` (fetch, MIME parse, dedupe
//! bookkeeping), beside its baseline measured in the same run — bare
//! `UID FETCH` of the same messages in the same batch size over the same
//! kind of connection, without parsing.
//!
//! Then the gateway's mail loop end to end: a gateway of us-east (on shift
//! at the router's clock, so every ticket lands there) with `[mail]`
//! reading the same mailbox, and the router: messages per second from the
//! mailbox to committed tickets (the ledger marks a mail read after its
//! ticket is committed). Last, outbound: public replies committed on those
//! tickets, per second through the outbox to a real aiosmtpd, beside bare
//! `SmtpSender::send` of the same number of mails to it.
//!
//! Needs dovecot (`apt-get install dovecot-imapd`) and aiosmtpd; without
//! them the scenario is skipped loudly (failed under
//! `MERIDIAN_REQUIRE_ALL=1`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A benchmark: fail loudly.

use std::time::{Duration, Instant};

use meridian_mail::TrustRoots;
use meridian_mail::imap::{ImapConfig, MailboxReader};
use meridian_test_support::mail_servers::{Dovecot, IMAP_PASSWORD, IMAP_USER, SmtpServer, SmtpTls};

use crate::{
    Sizes,
    progress::Progress,
    report::{Row, ScenarioReport},
};

const BATCH: usize = 50;

/// A support mail of about 3 KB: a text part and a small PDF attachment.
fn message(i: usize) -> Vec<u8> {
    let attachment = "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K".repeat(24);
    format!(
        "From: Customer {i} <customer{i}@example.com>\r\n\
To: support@meridian.example\r\n\
Subject: Order {i} arrived broken\r\n\
Message-ID: <bench-{i}@example.com>\r\n\
Date: Mon, 7 Dec 2026 09:00:00 +0000\r\n\
Content-Language: en\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\
\r\n\
--b{i}\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
{body}\r\n\
--b{i}\r\n\
Content-Type: application/pdf; name=\"photo-{i}.pdf\"\r\n\
Content-Disposition: attachment; filename=\"photo-{i}.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{attachment}\r\n\
--b{i}--\r\n",
        body = "The parcel was crushed and the device does not start. ".repeat(12),
    )
    .into_bytes()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub async fn run(
    server: &Dovecot,
    sizes: &Sizes,
    progress: &Progress,
) -> anyhow::Result<ScenarioReport> {
    let (count, rounds) = if sizes.smoke {
        (20, 1)
    } else {
        (2_000, sizes.rounds as usize)
    };
    let mut report = ScenarioReport::new(
        "mail-intake",
        format!(
            "Dovecot over IMAPS on loopback; {count} messages of ~3 KB (text + attachment), \
             {BATCH} per UID FETCH, {rounds} rounds, median"
        ),
    );
    progress.say("delivering");
    for i in 0..count {
        server.deliver(&message(i));
    }
    let mut config = ImapConfig::new("127.0.0.1", server.port, IMAP_USER, IMAP_PASSWORD);
    config.tls_server_name = Some("localhost".into());
    config.trust = TrustRoots::CaPem(server.ca_pem.clone().into_bytes());
    config.fetch_batch_max = BATCH;
    config.io_timeout = Duration::from_secs(60);

    // Warm Dovecot's index and cache once, so neither side pays for it.
    let mut warm = MailboxReader::connect(config.clone(), None).await?;
    anyhow::ensure!(warm.fetch_raw("1:*").await?.len() == count);
    warm.logout().await;

    let mut bare = Vec::new();
    let mut parsed = Vec::new();
    for round in 0..rounds {
        progress.say(&format!("round {}/{rounds}", round + 1));
        // Baseline: the same batches, bytes only.
        let mut reader = MailboxReader::connect(config.clone(), None).await?;
        let started = Instant::now();
        let mut got = 0;
        let mut from = 1;
        while got < count {
            let to = from + BATCH - 1;
            got += reader.fetch_raw(&format!("{from}:{to}")).await?.len();
            from = to + 1;
        }
        bare.push(count as f64 / started.elapsed().as_secs_f64());
        reader.logout().await;

        // Measured: poll from an empty cursor, as a region starting up.
        let mut reader = MailboxReader::connect(config.clone(), None).await?;
        let started = Instant::now();
        let batch = reader.poll().await?;
        parsed.push(count as f64 / started.elapsed().as_secs_f64());
        anyhow::ensure!(
            batch.messages.len() == count && batch.quarantined.is_empty(),
            "poll returned {} messages and {} quarantined of {count}",
            batch.messages.len(),
            batch.quarantined.len()
        );
        reader.logout().await;
    }
    let baseline =
        report.row(Row::new("bare IMAP fetch (baseline)", median(bare), "msg/s").baseline());
    let parsed = median(parsed);
    report.row(Row::new("fetch + parse (MailboxReader::poll)", parsed, "msg/s").against(&baseline));
    // Issue 17 names no figure. Parsing must not be what a mailbox waits
    // on: at least half the rate of fetching the same bytes.
    report.target(
        "fetch + parse against bare fetch",
        0.5,
        parsed / baseline.value,
        "×",
        true,
    );
    let Some(smtp) = SmtpServer::start("mail-intake (outbound)", SmtpTls::StartTls) else {
        report
            .notes
            .push("outbound skipped: python3 cannot import aiosmtpd".to_owned());
        return Ok(report);
    };
    progress.say("committing tickets through the gateway's mail loop");
    let committed = committed(server, &smtp, &config, count, progress).await?;
    let submit = report.row(
        Row::new(
            "SubmitTicket one at a time (baseline)",
            committed.submit_per_s,
            "ticket/s",
        )
        .baseline(),
    );
    report.row(
        Row::new(
            "mailbox → committed tickets (gateway mail loop)",
            committed.tickets_per_s,
            "msg/s",
        )
        .against(&submit),
    );
    let bare_send = report.row(
        Row::new(
            "bare SmtpSender::send (baseline)",
            committed.bare_send_per_s,
            "mail/s",
        )
        .baseline(),
    );
    report.row(
        Row::new(
            "public reply → SMTP server (outbox)",
            committed.replies_per_s,
            "mail/s",
        )
        .against(&bare_send),
    );
    Ok(report)
}

struct Committed {
    submit_per_s: f64,
    tickets_per_s: f64,
    bare_send_per_s: f64,
    replies_per_s: f64,
}

/// The mail loop end to end: see the module doc.
async fn committed(
    server: &Dovecot,
    smtp: &SmtpServer,
    imap: &ImapConfig,
    count: usize,
    progress: &Progress,
) -> anyhow::Result<Committed> {
    use meridian_core::RegionId;
    use meridian_mail::{Security, ledger::Direction, smtp::SmtpConfig};
    use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};

    let _ = server;
    let dir = tempfile::tempdir()?;
    let rules_path = dir.path().join("rules.toml");
    std::fs::write(&rules_path, crate::route::RULES)?;
    let rules = meridian_rules::Rules::parse("rules.toml", crate::route::RULES)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let regions: Vec<RegionId> = rules.regions().iter().map(|r| r.id.clone()).collect();
    let region: RegionId = "us-east".parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let gateway_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway_addr = gateway_listener.local_addr()?;
    let router_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let router_addr = router_listener.local_addr()?;
    let db = dir.path().join("us-east.db");
    let store_url = format!("sqlite:{}", db.display());
    let mut smtp_config = SmtpConfig::new("127.0.0.1", smtp.port, Security::StartTls);
    smtp_config.tls_server_name = Some("localhost".into());
    smtp_config.trust = TrustRoots::CaPem(smtp.ca_pem.clone().into_bytes());
    smtp_config.timeout = Duration::from_secs(10);
    let settings = |smtp: Option<SmtpConfig>| meridian_gateway::MailSettings {
        imap: imap.clone(),
        smtp,
        from_address: "support@meridian.example".into(),
        from_name: None,
        domain: "meridian.example".into(),
        tier: "standard".into(),
        poll_interval: Duration::from_millis(200),
        router: format!("http://{router_addr}"),
        router_ca: None,
        token: "unauthenticated".into(),
        hold_before_send: false,
    };
    let gateway_config = |smtp: Option<SmtpConfig>| {
        let mut config = meridian_gateway::GatewayConfig::new(
            region.clone(),
            regions.clone(),
            gateway_addr,
            meridian_store::StoreConfig::sqlite_file(&db),
        );
        config.rules = Some(meridian_gateway::RulesSettings::new(rules_path.clone()));
        config.mail = Some(settings(smtp));
        config
    };
    let mut endpoints = std::collections::BTreeMap::new();
    endpoints.insert(region.clone(), format!("http://{gateway_addr}"));
    let mut router_config = meridian_router::RouterConfig::new(router_addr, &rules_path, endpoints)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    router_config.health.probe_interval = Duration::from_millis(200);
    let clock = std::sync::Arc::new(meridian_core::ManualClock::new(
        crate::route::BENCH_INSTANT.parse()?,
    ));
    let (stop_router, router_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(meridian_router::run_with_clock(
        router_config,
        router_listener,
        async {
            let _ = router_stopped.await;
        },
        clock,
    ));
    // Let the router see the gateway healthy before the first mail.
    tokio::time::sleep(Duration::from_millis(600)).await;

    // Intake: the mailbox already holds `count` mails; no SMTP yet, so no
    // acknowledgement competes with the commits.
    let started = Instant::now();
    let (stop_gateway, gateway_stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(meridian_gateway::run(
        gateway_config(None),
        gateway_listener,
        async {
            let _ = gateway_stopped.await;
        },
    ));
    let ledger = wait_for_ledger(&store_url).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let taken = ledger.message_count(Direction::In).await?;
        if taken as usize >= count {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {taken} of {count} mails became tickets"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tickets_per_s = count as f64 / started.elapsed().as_secs_f64();

    // Baseline for intake: the same number of tickets submitted through
    // the router one at a time, as the loop does, by a gRPC client.
    progress.say("bare SubmitTicket, one at a time");
    let mut router = meridian_proto::v1::router_service_client::RouterServiceClient::connect(
        format!("http://{router_addr}"),
    )
    .await?;
    let started = Instant::now();
    for i in 0..count {
        router
            .submit_ticket(v1::SubmitTicketRequest {
                ticket: Some(v1::CreateTicketRequest {
                    subject: format!("Submitted order {i}"),
                    body: "The parcel was crushed and the device does not start.".into(),
                    customer: format!("customer{i}@example.com"),
                    tier: "standard".into(),
                    language: "en".into(),
                    idempotency_key: format!("bench-submit-{i}"),
                    ..Default::default()
                }),
            })
            .await?;
    }
    let submit_per_s = count as f64 / started.elapsed().as_secs_f64();
    let _ = stop_gateway.send(());
    let _ = gateway.await;

    // Baseline for outbound: the same number of mails, sent directly.
    progress.say("bare SMTP sends");
    let sender = meridian_mail::smtp::SmtpSender::new(&smtp_config)?;
    let before = smtp.received().len();
    let started = Instant::now();
    for i in 0..count {
        let mail = meridian_mail::smtp::OutboundMail {
            message_id: format!("bare-{i}@meridian.example"),
            from_address: "support@meridian.example".into(),
            from_name: None,
            to_address: format!("customer{i}@example.com"),
            to_name: None,
            subject: format!("Re: Order {i} arrived broken"),
            in_reply_to: Some(format!("bench-{i}@example.com")),
            references: vec![format!("bench-{i}@example.com")],
            text: "We are sending a replacement.".into(),
        };
        sender.send(&mail).await?;
    }
    let bare_send_per_s = count as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(
        smtp.received().len() == before + count,
        "the bare sends all arrived"
    );

    // Outbound: the gateway again, now with SMTP; one public reply per
    // ticket, committed as fast as one client writes them.
    progress.say("replies through the outbox");
    let gateway_listener = tokio::net::TcpListener::bind(gateway_addr).await?;
    let (stop_gateway, gateway_stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(meridian_gateway::run(
        gateway_config(Some(smtp_config.clone())),
        gateway_listener,
        async {
            let _ = gateway_stopped.await;
        },
    ));
    let mut client = loop {
        match TicketServiceClient::connect(format!("http://{gateway_addr}")).await {
            Ok(client) => break client,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mut ids = Vec::with_capacity(count);
    let mut page_token = String::new();
    loop {
        let page = client
            .list_tickets(v1::ListTicketsRequest {
                page_size: 500,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        // The mail's tickets, not the baseline's.
        ids.extend(
            page.tickets
                .into_iter()
                .filter(|t| !t.subject.starts_with("Submitted"))
                .map(|t| t.id),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    anyhow::ensure!(ids.len() == count, "{} tickets, not {count}", ids.len());
    // The replies task starts at the log's head on its first start: let it
    // save that position before the first reply.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = smtp.received().len();
    let started = Instant::now();
    for id in &ids {
        client
            .add_note(v1::AddNoteRequest {
                ticket_id: id.clone(),
                author: "bench agent".into(),
                body: "We are sending a replacement.".into(),
                visibility: v1::Visibility::Public as i32,
                note_id: String::new(),
            })
            .await?;
    }
    let got = smtp
        .wait_for(before + count, Duration::from_secs(600))
        .len();
    anyhow::ensure!(
        got == before + count,
        "{} of {count} replies reached the SMTP server",
        got - before
    );
    let replies_per_s = count as f64 / started.elapsed().as_secs_f64();
    let _ = stop_gateway.send(());
    let _ = gateway.await;
    let _ = stop_router.send(());
    ledger.close().await;
    Ok(Committed {
        submit_per_s,
        tickets_per_s,
        bare_send_per_s,
        replies_per_s,
    })
}

/// The ledger once the gateway has created its tables.
async fn wait_for_ledger(url: &str) -> anyhow::Result<meridian_mail::ledger::Ledger> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match meridian_mail::ledger::Ledger::open(url).await {
            Ok(ledger) => return Ok(ledger),
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}
