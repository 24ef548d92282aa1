//! Delivery to a real HTTPS receiver (hyper + rustls, a CA generated for
//! the test) through the durable outbox: each notification arrives once
//! per target with its key in the header and the body; failures retry
//! with backoff and end as dead letters that a requeue sends again; a
//! receiver that never answers or a certificate from another CA is a
//! failure, not a hang.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use jiff::Timestamp;
use meridian_core::{RegionId, TicketId};
use meridian_notify::{
    DeliverySettings, Format, Kind, Notification, Notifier, Target, TicketLine,
    meridian_outbox::{Outbox, RetryPolicy},
};
use meridian_test_support::{
    Backing, TestDatabase,
    https_receiver::{HttpsReceiver, Mode},
};

fn fast_retries(attempts_max: u32) -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(80),
        attempts_max,
        claim_lease: Duration::from_secs(5),
    }
}

fn settings() -> DeliverySettings {
    DeliverySettings {
        poll_interval: Duration::from_millis(20),
        request_timeout: Duration::from_millis(500),
        batch_max: 8,
    }
}

fn notification(key: &str, kind: Kind) -> Notification {
    let at = Timestamp::now();
    Notification {
        key: key.into(),
        kind,
        region: RegionId::new("us-east").unwrap(),
        title: format!("title of {key}"),
        text: "something happened".into(),
        tickets: vec![TicketLine {
            id: TicketId::new_v7(at, [9; 10]),
            subject: "Printer on fire".into(),
            sla: "first response due soon (at risk)".into(),
            next_step: "eu-west answers".into(),
        }],
        target: None,
        at,
        data: serde_json::Value::Null,
    }
}

struct Running {
    notifier: Notifier,
    outbox: Outbox,
    task: tokio::task::JoinHandle<()>,
    _db: TestDatabase,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(backing: Backing, targets: Vec<Target>, policy: RetryPolicy) -> Running {
    let db = TestDatabase::new(backing).await.unwrap();
    let notifier = Notifier::open(&db.config().url, targets, policy)
        .await
        .unwrap();
    let outbox = notifier.outbox().unwrap().clone();
    let task = tokio::spawn({
        let notifier = notifier.clone();
        async move {
            notifier.deliver(settings(), None).await.unwrap();
        }
    });
    Running {
        notifier,
        outbox,
        task,
        _db: db,
    }
}

fn target(name: &str, receiver: &HttpsReceiver, format: Format, kinds: Vec<Kind>) -> Target {
    Target::new(
        name,
        &format!("{}/hooks/{name}", receiver.base_url),
        format,
        Some(receiver.ca.clone()),
        kinds,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_notification_reaches_each_subscribed_target_once_by_key() {
    for backing in Backing::available() {
        let receiver = HttpsReceiver::start(Mode::Accept).await;
        let targets = vec![
            target("slack", &receiver, Format::Slack, vec![]),
            target("teams", &receiver, Format::Teams, vec![Kind::SlaBreach]),
            target(
                "json",
                &receiver,
                Format::Json,
                vec![Kind::ShiftSummary, Kind::SlaBreach],
            ),
        ];
        let run = start(backing, targets, fast_retries(3)).await;
        assert!(
            run.notifier
                .notify(notification("breach:1", Kind::SlaBreach))
                .await
                .unwrap()
        );
        assert!(
            run.notifier
                .notify(notification("summary:2", Kind::ShiftSummary))
                .await
                .unwrap()
        );
        // A replay of the same key queues nothing.
        assert!(
            !run.notifier
                .notify(notification("breach:1", Kind::SlaBreach))
                .await
                .unwrap()
        );
        // Nobody subscribed to volume spikes but slack (all kinds).
        assert!(
            run.notifier
                .notify(notification("spike:3", Kind::VolumeSpike))
                .await
                .unwrap()
        );
        // A named target only.
        let mut on_call = notification("escalation:4", Kind::Escalation);
        on_call.target = Some("teams".into());
        assert!(run.notifier.notify(on_call).await.unwrap());

        receiver
            .wait_accepted("every notification", Duration::from_secs(20), |a| {
                a.values().sum::<usize>() >= 7
            })
            .await;
        // Nothing more arrives.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let posts = receiver.posts();
        let mut seen: Vec<(String, String)> = posts
            .iter()
            .map(|p| (p.path.clone(), p.key.clone().unwrap()))
            .collect();
        seen.sort();
        let expected: Vec<(String, String)> = [
            ("/hooks/json", "breach:1"),
            ("/hooks/json", "summary:2"),
            ("/hooks/slack", "breach:1"),
            ("/hooks/slack", "escalation:4"),
            ("/hooks/slack", "spike:3"),
            ("/hooks/slack", "summary:2"),
            ("/hooks/teams", "breach:1"),
            ("/hooks/teams", "escalation:4"),
        ]
        .iter()
        .map(|(p, k)| (p.to_string(), k.to_string()))
        .collect();
        // escalation:4 named teams only: not slack.
        let expected: Vec<_> = expected
            .into_iter()
            .filter(|(p, k)| !(p == "/hooks/slack" && k == "escalation:4"))
            .collect();
        assert_eq!(seen, expected, "{backing:?}: one POST per key and target");
        for post in &posts {
            assert_eq!(
                post.body["idempotency_key"].as_str(),
                post.key.as_deref(),
                "the key is in the body too"
            );
            match post.path.as_str() {
                "/hooks/slack" => {
                    let text = post.body["text"].as_str().unwrap();
                    assert!(
                        text.contains("Printer on fire") && text.contains("09090909"),
                        "{text}"
                    );
                    assert!(post.body["blocks"].is_array());
                }
                "/hooks/teams" => assert_eq!(post.body["@type"], "MessageCard"),
                _ => assert_eq!(post.body["tickets"][0]["subject"], "Printer on fire"),
            }
        }
        let counts = run.outbox.counts().await.unwrap();
        assert_eq!((counts.pending, counts.delivered, counts.dead), (0, 7, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_then_dead_letter_and_a_requeue_delivers() {
    let receiver = HttpsReceiver::start(Mode::Fail(500)).await;
    let run = start(
        Backing::Sqlite,
        vec![target("ops", &receiver, Format::Json, vec![])],
        fast_retries(3),
    )
    .await;
    run.notifier
        .notify(notification("breach:9", Kind::SlaBreach))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let dead = run.outbox.dead_letters(None, 10).await.unwrap();
        if !dead.is_empty() {
            break dead;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(dead[0].key, "breach:9@ops");
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("HTTP 500 Internal Server Error")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.posts().len(),
        3,
        "exactly attempts_max attempts, then no more"
    );

    receiver.set_mode(Mode::Accept);
    assert!(
        run.outbox
            .requeue("webhook", "breach:9@ops", Timestamp::now())
            .await
            .unwrap()
    );
    run.notifier.wake();
    let accepted = receiver
        .wait_accepted("the requeued letter", Duration::from_secs(20), |a| {
            !a.is_empty()
        })
        .await;
    assert_eq!(accepted.get("breach:9"), Some(&1));
    assert_eq!(run.outbox.counts().await.unwrap().dead, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_or_a_foreign_certificate_is_a_failed_attempt() {
    let stalled = HttpsReceiver::start(Mode::Stall).await;
    let other = HttpsReceiver::start(Mode::Accept).await;
    // `other`'s URL with `stalled`'s CA: the certificate does not verify.
    let foreign = Target::new(
        "foreign",
        &format!("{}/hooks/foreign", other.base_url),
        Format::Json,
        Some(stalled.ca.clone()),
        vec![],
    )
    .unwrap();
    let run = start(
        Backing::Sqlite,
        vec![target("stalled", &stalled, Format::Json, vec![]), foreign],
        fast_retries(2),
    )
    .await;
    run.notifier
        .notify(notification("warn:1", Kind::SlaWarning))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let dead = run.outbox.dead_letters(None, 10).await.unwrap();
        if dead.len() == 2 {
            let errors: Vec<String> = dead
                .iter()
                .map(|d| format!("{}: {}", d.key, d.last_error.clone().unwrap()))
                .collect();
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with("warn:1@stalled")
                        && e.contains("no answer within 500 ms")),
                "{errors:?}"
            );
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with("warn:1@foreign") && e.contains("TLS")),
                "{errors:?}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letters: {dead:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        other.posts().is_empty(),
        "nothing reached a server whose certificate failed"
    );
}

#[tokio::test]
async fn a_missing_ca_file_is_refused_at_start() {
    let db = TestDatabase::new(Backing::Sqlite).await.unwrap();
    let target = Target::new(
        "ops",
        "https://localhost:1/x",
        Format::Json,
        Some("/nonexistent/ca.pem".into()),
        vec![],
    )
    .unwrap();
    let error = Notifier::open(&db.config().url, vec![target], fast_retries(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("target ops: ca /nonexistent/ca.pem"),
        "{error}"
    );
}
