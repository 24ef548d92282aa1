//! The outbox on both backends: SQLite always, PostgreSQL when
//! `DATABASE_URL` is set (each case in a fresh schema), alongside an open
//! store on the same database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use meridian_outbox::{Failure, Outbox, RetryPolicy, State};
use meridian_test_support::{Backing, TestDatabase};

fn policy() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_secs(2),
        max: Duration::from_secs(60),
        attempts_max: 3,
        claim_lease: Duration::from_secs(30),
    }
}

fn t0() -> Timestamp {
    "2026-12-07T08:00:00Z".parse().unwrap()
}

fn at(seconds: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(seconds)
}

async fn each_backend(case: impl AsyncFn(Outbox, Backing)) {
    for backing in Backing::available() {
        let db = TestDatabase::new(backing).await.unwrap();
        let outbox = Outbox::open(&db.config().url, policy()).await.unwrap();
        case(outbox.clone(), backing).await;
        outbox.close().await;
        db.drop_now().await;
    }
}

#[tokio::test]
async fn enqueue_is_idempotent_by_channel_and_key() {
    each_backend(async |outbox, backing| {
        assert!(
            outbox
                .enqueue("webhook", "k1", "{\"a\":1}", at(0))
                .await
                .unwrap()
        );
        assert!(
            !outbox
                .enqueue("webhook", "k1", "{\"a\":2}", at(5))
                .await
                .unwrap(),
            "{backing:?}: a second enqueue of a key is a no-op"
        );
        assert!(
            outbox.enqueue("email", "k1", "x", at(0)).await.unwrap(),
            "{backing:?}: keys are per channel"
        );
        let item = outbox.get("webhook", "k1").await.unwrap().unwrap();
        assert_eq!(item.payload, "{\"a\":1}", "the first payload stays");
        assert_eq!(item.not_before, at(0));
        // Still a no-op once delivered: a replaying producer sends nothing.
        let claimed = outbox.claim("webhook", at(0), 10).await.unwrap();
        outbox.delivered(&claimed[0], at(1)).await.unwrap();
        assert!(!outbox.enqueue("webhook", "k1", "{}", at(2)).await.unwrap());
        assert_eq!(outbox.claim("webhook", at(100), 10).await.unwrap(), vec![]);
    })
    .await;
}

#[tokio::test]
async fn claims_take_due_items_oldest_first_and_hide_them_for_the_lease() {
    each_backend(async |outbox, backing| {
        outbox
            .enqueue("webhook", "later", "p", at(10))
            .await
            .unwrap();
        outbox
            .enqueue("webhook", "first", "p", at(0))
            .await
            .unwrap();
        outbox
            .enqueue("webhook", "second", "p", at(1))
            .await
            .unwrap();
        outbox.enqueue("email", "other", "p", at(0)).await.unwrap();
        let claimed = outbox.claim("webhook", at(5), 10).await.unwrap();
        let keys: Vec<&str> = claimed.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["first", "second"],
            "{backing:?}: due items only, oldest first"
        );
        assert!(
            claimed
                .iter()
                .all(|i| i.attempts == 1 && i.state == State::Pending)
        );
        // Claimed items are hidden until their lease runs out.
        let again = outbox.claim("webhook", at(12), 10).await.unwrap();
        assert_eq!(
            again.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
            ["later"]
        );
        // A claimer that died: its items come back after the lease (30 s),
        // as a second attempt.
        let back = outbox.claim("webhook", at(36), 10).await.unwrap();
        let keys: Vec<(&str, u32)> = back.iter().map(|i| (i.key.as_str(), i.attempts)).collect();
        assert_eq!(keys, [("first", 2), ("second", 2)]);
        // The limit holds.
        outbox.enqueue("email", "other2", "p", at(0)).await.unwrap();
        assert_eq!(outbox.claim("email", at(1), 1).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn failures_back_off_then_dead_letter_and_requeue() {
    each_backend(async |outbox, backing| {
        outbox.enqueue("webhook", "k", "p", at(0)).await.unwrap();
        let mut now = at(0);
        let mut delays = Vec::new();
        for attempt in 1..=3u32 {
            let item = outbox
                .claim("webhook", now, 10)
                .await
                .unwrap()
                .pop()
                .unwrap();
            assert_eq!(item.attempts, attempt);
            match outbox.failed(&item, now, "HTTP 500").await.unwrap() {
                Failure::Retry(retry_at) => {
                    assert!(attempt < 3, "{backing:?}");
                    let delay = retry_at.duration_since(now).as_millis();
                    let step = 2000 * (1i128 << (attempt - 1));
                    assert!(
                        delay >= step / 2 && delay <= step,
                        "attempt {attempt}: {delay} ms"
                    );
                    delays.push(delay);
                    // Not before its time.
                    let early = retry_at - SignedDuration::from_millis(1);
                    assert!(outbox.claim("webhook", early, 10).await.unwrap().is_empty());
                    now = retry_at;
                }
                Failure::Dead => assert_eq!(attempt, 3, "{backing:?}: dead after attempts_max"),
                Failure::Stale => panic!("{backing:?}: nobody else claimed it"),
            }
        }
        assert!(
            outbox
                .claim("webhook", at(10_000), 10)
                .await
                .unwrap()
                .is_empty(),
            "a dead letter is not claimed"
        );
        let dead = outbox.dead_letters(Some("webhook"), 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].key, "k");
        assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 500"));
        assert_eq!(outbox.dead_letters(None, 10).await.unwrap().len(), 1);
        assert_eq!(outbox.counts().await.unwrap().dead, 1);
        assert!(!outbox.requeue("webhook", "nope", at(20)).await.unwrap());
        assert!(outbox.requeue("webhook", "k", at(20)).await.unwrap());
        assert!(
            !outbox.requeue("webhook", "k", at(20)).await.unwrap(),
            "no longer dead"
        );
        let item = outbox
            .claim("webhook", at(20), 10)
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(item.attempts, 1, "a requeued letter gets a fresh budget");
        outbox.delivered(&item, at(21)).await.unwrap();
        let counts = outbox.counts().await.unwrap();
        assert_eq!((counts.pending, counts.delivered, counts.dead), (0, 1, 0));
    })
    .await;
}

#[tokio::test]
async fn a_stale_attempt_does_not_settle_a_newer_claim() {
    each_backend(async |outbox, backing| {
        outbox.enqueue("webhook", "k", "p", at(0)).await.unwrap();
        let first = outbox
            .claim("webhook", at(0), 1)
            .await
            .unwrap()
            .pop()
            .unwrap();
        // The lease ran out and another claimer took it.
        let second = outbox
            .claim("webhook", at(31), 1)
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(second.attempts, 2);
        assert_eq!(
            outbox.failed(&first, at(40), "late").await.unwrap(),
            Failure::Stale,
            "{backing:?}"
        );
        outbox.delivered(&second, at(41)).await.unwrap();
        assert_eq!(
            outbox.get("webhook", "k").await.unwrap().unwrap().state,
            State::Delivered
        );
        assert_eq!(outbox.prune_delivered(at(40)).await.unwrap(), 0);
        assert_eq!(outbox.prune_delivered(at(42)).await.unwrap(), 1);
    })
    .await;
}

#[tokio::test]
async fn cursors_persist_and_only_move_forward() {
    for backing in Backing::available() {
        let db = TestDatabase::new(backing).await.unwrap();
        let url = db.config().url;
        // Beside an open store on the same database, as in a gateway.
        let store = meridian_store::Store::open(
            &db.config(),
            &meridian_core::RegionId::new("us-east").unwrap(),
        )
        .await
        .unwrap();
        let outbox = Outbox::open(&url, policy()).await.unwrap();
        assert_eq!(outbox.cursor("notifier").await.unwrap(), None);
        outbox.set_cursor("notifier", 7, at(0)).await.unwrap();
        outbox.set_cursor("notifier", 5, at(1)).await.unwrap();
        assert_eq!(
            outbox.cursor("notifier").await.unwrap(),
            Some(7),
            "{backing:?}"
        );
        outbox.set_cursor("notifier", 9, at(2)).await.unwrap();
        outbox.close().await;
        // A new process reads it back.
        let reopened = Outbox::open(&url, policy()).await.unwrap();
        assert_eq!(reopened.cursor("notifier").await.unwrap(), Some(9));
        assert_eq!(reopened.cursor("other").await.unwrap(), None);
        reopened.close().await;
        store.close().await;
        db.drop_now().await;
    }
}

#[tokio::test]
async fn bad_urls_and_policies_are_refused_clearly() {
    let error = Outbox::open("mysql://x/y", policy())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("sqlite: or postgres:"), "{error}");
    let error = Outbox::open(
        "sqlite::memory:",
        RetryPolicy {
            attempts_max: 0,
            ..policy()
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("attempts_max"), "{error}");
}
