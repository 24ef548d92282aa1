//! Notifications survive `kill -9`: `meridian up` notifies a real HTTPS
//! receiver (a CA generated for the test) that first answers 500, so every
//! notification sits in the regions' outboxes, retrying; the whole mesh is
//! killed with SIGKILL between commit and delivery; the receiver recovers
//! and the mesh restarts on the same data directory. Every notification
//! attempted before the crash then arrives, and no key is accepted twice.
//! Then the dead-letter commands: `meridian notify dead-letters` lists a
//! letter that ran out of attempts and `meridian notify retry` requeues it.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use meridian_notify::meridian_outbox::{Outbox, RetryPolicy, State};
use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};
use meridian_test_support::https_receiver::{HttpsReceiver, Mode};
use support::{Killed, MERIDIAN, start_up};

mod support;

const SPEED: u64 = 600;
const REGIONS: [&str; 3] = ["us-east", "eu-west", "apac-south"];

/// Starts `meridian up` at `start` and returns it with each region's
/// gateway URL.
fn up(dir: &Path, start: jiff::Timestamp, webhook: &str) -> (Killed, BTreeMap<String, String>) {
    // Dropped, the guard kills with SIGKILL: no graceful shutdown, as a crash.
    let (up, banner) = start_up(
        Command::new(MERIDIAN)
            .args(["up", "--no-auth", "--base-port", "0", "--speed"])
            .arg(SPEED.to_string())
            .arg("--start")
            .arg(start.to_string())
            .arg("--webhook")
            .arg(webhook)
            .arg("--data-dir")
            .arg(dir),
    );
    let mut gateways = BTreeMap::new();
    for line in &banner {
        if let ["gateway", region, url, ..] = line.split_whitespace().collect::<Vec<_>>()[..] {
            gateways.insert(region.to_owned(), url.to_owned());
        }
    }
    assert_eq!(
        gateways.len(),
        3,
        "meridian up printed no gateway URLs: {gateways:?}"
    );
    (up, gateways)
}

async fn create_tickets(gateways: &BTreeMap<String, String>, per_region: usize) {
    for url in gateways.values() {
        let mut client = TicketServiceClient::connect(url.clone()).await.unwrap();
        for i in 0..per_region {
            client
                .create_ticket(v1::CreateTicketRequest {
                    subject: format!("Outage report {i}"),
                    body: "the VPN drops every hour".into(),
                    customer: "acme".into(),
                    tier: "enterprise".into(),
                    skills: vec!["general".into()],
                    language: "en".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
}

fn keys_attempted(receiver: &HttpsReceiver) -> BTreeSet<String> {
    receiver.posts().into_iter().filter_map(|p| p.key).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_notification_arrives_once_by_key_across_kill_9() {
    let receiver = HttpsReceiver::start(Mode::Fail(500)).await;
    let webhook = format!(
        "hook={}/hooks/meridian,format=json,ca={}",
        receiver.base_url,
        receiver.ca.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let start: jiff::Timestamp = "2026-12-07T07:50:00Z".parse().unwrap();
    let started = Instant::now();
    let (first, gateways) = up(dir.path(), start, &webhook);
    create_tickets(&gateways, 3).await;

    // SLA warnings and breaches of the enterprise tickets (30 minutes to a
    // first response: seconds at 600x) and shift summaries, all refused.
    let deadline = Instant::now() + Duration::from_secs(90);
    // Escalation keys come first now (an unanswered first response at
    // risk escalates); wait for the SLA kinds too.
    let has = |kind: &str| {
        keys_attempted(&receiver)
            .iter()
            .any(|k| k.starts_with(kind))
    };
    while keys_attempted(&receiver).len() < 12 || !has("sla_warning:") || !has("sla_breach:") {
        assert!(
            Instant::now() < deadline,
            "too few notifications attempted: {:?}",
            keys_attempted(&receiver)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(first); // kill -9
    let before_crash = keys_attempted(&receiver);
    assert!(
        receiver.accepted().is_empty(),
        "the receiver accepted nothing yet"
    );

    receiver.set_mode(Mode::Accept);
    let resume_at = start
        + jiff::SignedDuration::try_from(started.elapsed() * u32::try_from(SPEED).unwrap())
            .unwrap();
    let (second, _) = up(dir.path(), resume_at, &webhook);
    receiver
        .wait_accepted(
            "every notification attempted before the crash",
            Duration::from_secs(90),
            |accepted| before_crash.iter().all(|k| accepted.contains_key(k)),
        )
        .await;
    drop(second);

    let accepted = receiver.accepted();
    let twice: Vec<_> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "keys accepted more than once: {twice:?}");
    for post in receiver.posts() {
        assert_eq!(post.path, "/hooks/meridian");
        assert_eq!(post.body["idempotency_key"].as_str(), post.key.as_deref());
    }
    // What the outboxes say was delivered is exactly what arrived.
    let mut delivered = BTreeSet::new();
    for region in REGIONS {
        let url = format!(
            "sqlite:{}?mode=rwc",
            dir.path().join(format!("{region}.db")).display()
        );
        let outbox = Outbox::open(&url, RetryPolicy::default()).await.unwrap();
        for item in outbox
            .list(State::Delivered, Some("webhook"), 10_000)
            .await
            .unwrap()
        {
            let key = item.key.strip_suffix("@hook").unwrap().to_owned();
            // Event-derived keys (`kind:origin:seq`) name their origin, and
            // only the origin notifies; escalation and stranded keys name
            // the ticket instead.
            if let Some(origin) = key.split(':').nth(1).filter(|o| REGIONS.contains(o)) {
                assert_eq!(origin, region, "{key} in {region}'s outbox");
            }
            delivered.insert(key);
        }
        assert!(outbox.dead_letters(None, 10).await.unwrap().is_empty());
        outbox.close().await;
    }
    let missing: Vec<_> = delivered
        .iter()
        .filter(|k| !accepted.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "marked delivered but never accepted: {missing:?}"
    );
    let kinds: BTreeSet<&str> = accepted
        .keys()
        .filter_map(|k| k.split(':').next())
        .collect();
    assert!(
        kinds.contains("sla_warning") && kinds.contains("sla_breach"),
        "kinds delivered: {kinds:?}"
    );
    eprintln!(
        "{} notifications attempted before kill -9, {} accepted after restart, kinds {kinds:?}",
        before_crash.len(),
        accepted.len()
    );
}

#[tokio::test]
async fn dead_letters_are_listed_and_requeued_by_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite:{}?mode=rwc",
        dir.path().join("us-east.db").display()
    );
    let policy = RetryPolicy {
        attempts_max: 1,
        ..RetryPolicy::default()
    };
    let outbox = Outbox::open(&url, policy).await.unwrap();
    let now = jiff::Timestamp::now();
    outbox
        .enqueue("webhook", "sla_breach:us-east:7@ops", "{}", now)
        .await
        .unwrap();
    let item = outbox
        .claim("webhook", now, 1)
        .await
        .unwrap()
        .pop()
        .unwrap();
    outbox
        .failed(&item, now, "HTTP 503 Service Unavailable")
        .await
        .unwrap();
    outbox.close().await;

    let run = |args: &[&str]| {
        let out = Command::new(MERIDIAN)
            .args(["notify"])
            .args(args)
            .args(["--database-url", &url])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, listed, _) = run(&["dead-letters"]);
    assert!(ok);
    assert!(
        listed.contains("sla_breach:us-east:7@ops") && listed.contains("HTTP 503"),
        "{listed}"
    );
    let (ok, _, err) = run(&["retry", "nope@ops"]);
    assert!(!ok && err.contains("no dead letter has the key"), "{err}");
    let (ok, out, _) = run(&["retry", "sla_breach:us-east:7@ops"]);
    assert!(ok && out.contains("requeued"), "{out}");
    let (_, listed, _) = run(&["dead-letters"]);
    assert!(listed.contains("no dead letters"), "{listed}");
    let (_, status, _) = run(&["status"]);
    assert!(
        status.contains("pending 1") && status.contains("dead 0"),
        "{status}"
    );
}
