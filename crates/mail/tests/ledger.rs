//! The mail ledger on both backends: SQLite always, PostgreSQL when
//! `DATABASE_URL` is set (each case in a fresh schema).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meridian_mail::imap::Cursor;
use meridian_mail::ledger::{Direction, Ledger, MailThread, MessageEntry, QuarantineEntry};
use meridian_mail::thread::{TicketDirectory, TicketRef};
use meridian_test_support::{Backing, TestDatabase};

async fn each_backend(case: impl AsyncFn(Ledger, Backing)) {
    for backing in Backing::available() {
        let db = TestDatabase::new(backing).await.unwrap();
        let ledger = Ledger::open(&db.config().url).await.unwrap();
        // Opening again (a restart) finds the tables and keeps them.
        Ledger::open(&db.config().url).await.unwrap().close().await;
        case(ledger.clone(), backing).await;
        ledger.close().await;
        db.drop_now().await;
    }
}

fn thread(ticket: &str, reference: &str, last: &str) -> MailThread {
    MailThread {
        ticket_id: ticket.into(),
        reference: reference.into(),
        customer_address: "carla@customer.test".into(),
        customer_name: Some("Carla".into()),
        subject: "Printer on fire".into(),
        last_message_id: last.into(),
        last_references: vec!["m0@customer.test".into()],
    }
}

#[tokio::test]
async fn the_cursor_is_saved_per_mailbox_and_moves() {
    each_backend(async |ledger, backing| {
        assert_eq!(ledger.cursor("INBOX").await.unwrap(), None, "{backing:?}");
        let first = Cursor {
            uid_validity: 7,
            last_uid: 40,
        };
        ledger.set_cursor("INBOX", first, 1).await.unwrap();
        ledger
            .set_cursor(
                "INBOX",
                Cursor {
                    uid_validity: 7,
                    last_uid: 41,
                },
                2,
            )
            .await
            .unwrap();
        assert_eq!(
            ledger.cursor("INBOX").await.unwrap(),
            Some(Cursor {
                uid_validity: 7,
                last_uid: 41
            })
        );
        assert_eq!(ledger.cursor("Other").await.unwrap(), None);
        // The largest UIDs IMAP allows round-trip.
        let top = Cursor {
            uid_validity: u32::MAX,
            last_uid: u32::MAX,
        };
        ledger.set_cursor("Other", top, 3).await.unwrap();
        assert_eq!(ledger.cursor("Other").await.unwrap(), Some(top));
    })
    .await;
}

#[tokio::test]
async fn a_message_is_pending_until_done_and_its_first_ticket_stays() {
    each_backend(async |ledger, backing| {
        let entry = MessageEntry {
            message_id: "m2@customer.test".into(),
            ticket_id: "t-1".into(),
            direction: Direction::In,
            note_id: Some("n-1".into()),
            done: false,
        };
        ledger.record_message(&entry, 10).await.unwrap();
        assert_eq!(
            ledger.message("m2@customer.test").await.unwrap(),
            Some(entry.clone()),
            "{backing:?}"
        );
        // Recording it again (a re-read) changes nothing.
        ledger
            .record_message(
                &MessageEntry {
                    ticket_id: "t-2".into(),
                    note_id: Some("n-2".into()),
                    ..entry.clone()
                },
                11,
            )
            .await
            .unwrap();
        assert_eq!(
            ledger.message("m2@customer.test").await.unwrap(),
            Some(entry.clone())
        );
        assert_eq!(ledger.message_count(Direction::In).await.unwrap(), 0);
        ledger.message_done("m2@customer.test").await.unwrap();
        let done = ledger.message("m2@customer.test").await.unwrap().unwrap();
        assert!(done.done);
        assert_eq!(done.note_id.as_deref(), Some("n-1"));
        assert_eq!(ledger.message_count(Direction::In).await.unwrap(), 1);
        assert_eq!(ledger.message("unknown@x").await.unwrap(), None);
        // A mail kept aside is read (a duplicate if delivered again) but
        // names no ticket to thread an answer onto.
        let kept = MessageEntry {
            message_id: "refused@customer.test".into(),
            ticket_id: String::new(),
            direction: Direction::In,
            note_id: None,
            done: true,
        };
        ledger.record_message(&kept, 12).await.unwrap();
        assert!(
            ledger
                .message("refused@customer.test")
                .await
                .unwrap()
                .unwrap()
                .done
        );
        assert_eq!(
            ledger
                .ticket_for_message_id("refused@customer.test")
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            ledger
                .ticket_for_message_id("m2@customer.test")
                .await
                .unwrap()
                .as_deref(),
            Some("t-1")
        );
    })
    .await;
}

#[tokio::test]
async fn a_thread_keeps_its_start_and_follows_the_newest_customer_mail() {
    each_backend(async |ledger, backing| {
        ledger
            .save_thread(&thread("t-1", "ab12cd34", "m1@customer.test"), 100)
            .await
            .unwrap();
        let mut newer = thread("t-1", "ab12cd34", "m3@customer.test");
        newer.subject = "changed".into();
        newer.last_references = vec!["m1@customer.test".into(), "ack.t-1@meridian.test".into()];
        ledger.save_thread(&newer, 200).await.unwrap();
        let got = ledger.thread("t-1").await.unwrap().unwrap();
        assert_eq!(
            got.subject, "Printer on fire",
            "{backing:?}: the subject stays"
        );
        assert_eq!(got.last_message_id, "m3@customer.test");
        assert_eq!(got.last_references, newer.last_references);
        assert_eq!(got.customer_name.as_deref(), Some("Carla"));
        // Two tickets share a short reference: the newest thread wins.
        ledger
            .save_thread(&thread("t-2", "ab12cd34", "m9@customer.test"), 300)
            .await
            .unwrap();
        let by_ref = ledger
            .ticket_for_ref(&TicketRef::new("ab12cd34").unwrap())
            .await
            .unwrap();
        assert_eq!(by_ref.as_deref(), Some("t-2"));
        assert_eq!(
            ledger
                .ticket_for_ref(&TicketRef::new("ffffffff").unwrap())
                .await
                .unwrap(),
            None
        );
    })
    .await;
}

#[tokio::test]
async fn quarantine_is_listed_newest_first_and_recorded_once() {
    each_backend(async |ledger, backing| {
        for (uid, at) in [(3, 10), (5, 30), (4, 20)] {
            let entry = QuarantineEntry {
                mailbox: "INBOX".into(),
                uid_validity: 7,
                uid,
                reason: format!("no From address ({uid})"),
                kept_in: "Quarantine".into(),
                recorded_at_ms: at,
            };
            ledger.record_quarantine(&entry).await.unwrap();
            ledger.record_quarantine(&entry).await.unwrap();
        }
        let kept = ledger.quarantine(10).await.unwrap();
        let uids: Vec<u32> = kept.iter().map(|e| e.uid).collect();
        assert_eq!(uids, vec![5, 4, 3], "{backing:?}");
        assert_eq!(ledger.quarantine_count().await.unwrap(), 3);
        assert_eq!(ledger.quarantine(1).await.unwrap().len(), 1);
    })
    .await;
}
