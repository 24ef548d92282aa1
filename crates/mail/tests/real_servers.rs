//! meridian-mail against real servers: Dovecot over IMAPS and aiosmtpd over
//! STARTTLS and implicit TLS, each started by the test on loopback with a
//! certificate from a fresh CA (crates/test-support/src/mail_servers.rs).
//! Without dovecot or aiosmtpd these tests say SKIPPED; under
//! `MERIDIAN_REQUIRE_ALL=1` they fail instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use meridian_mail::imap::{Cursor, ImapConfig, KeptIn, MailboxReader};
use meridian_mail::message::{MESSAGE_BYTES_MAX_DEFAULT, parse_inbound};
use meridian_mail::smtp::{self, SmtpConfig, SmtpSender, Thread};
use meridian_mail::thread::{ThreadedBy, Threading, TicketDirectory, TicketRef, thread};
use meridian_mail::{Error, Malformed, Security, TrustRoots};
use meridian_test_support::mail_servers::{
    Dovecot, IMAP_PASSWORD, IMAP_USER, SmtpServer, SmtpTls, TestPki,
};

fn imap_config(server: &Dovecot) -> ImapConfig {
    let mut config = ImapConfig::new("127.0.0.1", server.port, IMAP_USER, IMAP_PASSWORD);
    config.tls_server_name = Some("localhost".into());
    config.trust = TrustRoots::CaPem(server.ca_pem.clone().into_bytes());
    config.io_timeout = Duration::from_secs(10);
    config
}

fn mail(id: &str, subject: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Ana Silva <ana@example.com>\r\n\
To: support@meridian.example\r\n\
Subject: {subject}\r\n\
Message-ID: <{id}>\r\n\
Date: Mon, 7 Dec 2026 09:00:00 +0000\r\n\
{extra_headers}\
\r\n\
{body}\r\n"
    )
    .into_bytes()
}

/// The gateway's side of threading, as a map: Message-ID or ref → ticket.
#[derive(Default)]
struct Directory {
    by_message_id: Mutex<HashMap<String, u32>>,
    by_ref: Mutex<HashMap<String, u32>>,
}

impl Directory {
    fn record(&self, message_id: &str, ticket: u32) {
        self.by_message_id
            .lock()
            .unwrap()
            .insert(message_id.to_owned(), ticket);
    }
}

impl TicketDirectory for Directory {
    type Ticket = u32;
    type Error = std::convert::Infallible;

    async fn ticket_for_message_id(&self, message_id: &str) -> Result<Option<u32>, Self::Error> {
        Ok(self.by_message_id.lock().unwrap().get(message_id).copied())
    }

    async fn ticket_for_ref(&self, reference: &TicketRef) -> Result<Option<u32>, Self::Error> {
        Ok(self.by_ref.lock().unwrap().get(reference.as_str()).copied())
    }
}

#[tokio::test]
async fn new_mail_becomes_an_inbound_message_and_replies_thread_onto_its_ticket() {
    let Some(server) = Dovecot::start("mail: new mail and threading") else {
        return;
    };
    server.deliver(&mail(
        "m1@example.com",
        "Printer on fire",
        "Content-Language: de-AT\r\n",
        "Bitte helfen.",
    ));
    let mut reader = MailboxReader::connect(imap_config(&server), None)
        .await
        .unwrap();
    let batch = reader.poll().await.unwrap();
    assert_eq!(batch.messages.len(), 1, "{batch:?}\n{}", server.log());
    let m = &batch.messages[0].message;
    assert_eq!(m.message_id, "m1@example.com");
    assert_eq!(m.from_address, "ana@example.com");
    assert_eq!(m.subject, "Printer on fire");
    assert_eq!(m.text_body.trim(), "Bitte helfen.");
    assert_eq!(m.language.as_deref(), Some("de"));
    assert!(batch.quarantined.is_empty() && batch.duplicates.is_empty());

    // The gateway makes ticket 7 and sends an acknowledgement.
    let directory = Directory::default();
    assert_eq!(thread(&directory, m).await.unwrap(), Threading::New);
    directory.record("m1@example.com", 7);
    directory.record("ack-7@meridian.example", 7);
    directory.by_ref.lock().unwrap().insert("t0007".into(), 7);

    // The customer answers the acknowledgement: In-Reply-To threads it.
    server.deliver(&mail(
        "m2@example.com",
        "Re: Printer on fire [#t0007]",
        "In-Reply-To: <ack-7@meridian.example>\r\nReferences: <m1@example.com> <ack-7@meridian.example>\r\n",
        "Still burning.",
    ));
    // A fresh mail that only quotes the reference in its subject.
    server.deliver(&mail(
        "m3@example.com",
        "About [#t0007] again",
        "",
        "And smoke.",
    ));
    let batch = reader.poll().await.unwrap();
    let ids: Vec<&str> = batch
        .messages
        .iter()
        .map(|f| f.message.message_id.as_str())
        .collect();
    assert_eq!(ids, vec!["m2@example.com", "m3@example.com"]);
    assert_eq!(
        thread(&directory, &batch.messages[0].message)
            .await
            .unwrap(),
        Threading::Existing(7, ThreadedBy::InReplyTo)
    );
    assert_eq!(
        thread(&directory, &batch.messages[1].message)
            .await
            .unwrap(),
        Threading::Existing(7, ThreadedBy::SubjectRef)
    );
    // Nothing more to read; UIDs only move forward.
    assert!(reader.poll().await.unwrap().messages.is_empty());
    assert!(reader.cursor().last_uid >= 3);
    reader.logout().await;
}

#[tokio::test]
async fn a_duplicate_delivery_yields_nothing_new() {
    let Some(server) = Dovecot::start("mail: duplicate delivery") else {
        return;
    };
    let raw = mail(
        "dup@example.com",
        "Twice",
        "",
        "Same mail, delivered twice.",
    );
    server.deliver(&raw);
    server.deliver(&raw);
    let mut reader = MailboxReader::connect(imap_config(&server), None)
        .await
        .unwrap();
    let batch = reader.poll().await.unwrap();
    assert_eq!(batch.messages.len(), 1, "{batch:?}");
    assert_eq!(batch.duplicates.len(), 1, "{batch:?}");
    assert_eq!(batch.duplicates[0].1, "dup@example.com");
    let directory = Directory::default();
    directory.record("dup@example.com", 1);
    let cursor: Cursor = reader.cursor();
    reader.logout().await;

    // A restart that kept its cursor reads nothing again.
    let mut resumed = MailboxReader::connect(imap_config(&server), Some(cursor))
        .await
        .unwrap();
    assert_eq!(resumed.poll().await.unwrap(), Default::default());
    resumed.logout().await;

    // A restart that lost its cursor (crash before persisting it) rereads
    // both; the store's dedupe says they are the ticket's already.
    let mut fresh = MailboxReader::connect(imap_config(&server), None)
        .await
        .unwrap();
    let batch = fresh.poll().await.unwrap();
    assert_eq!(batch.messages.len(), 1);
    assert_eq!(
        thread(&directory, &batch.messages[0].message)
            .await
            .unwrap(),
        Threading::Duplicate(1)
    );
    fresh.logout().await;
}

#[tokio::test]
async fn a_malformed_message_is_kept_aside_and_the_next_good_one_still_arrives() {
    let Some(server) = Dovecot::start("mail: malformed MIME") else {
        return;
    };
    let malformed = b"From: bob@example.com\r\n\
Subject: broken\r\n\
Message-ID: <bad@example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed\r\n\
\r\n\
--lost\r\n\
Content-Type: text/plain\r\n\
\r\n\
where is my boundary\r\n";
    server.deliver(malformed);
    server.deliver(&mail("good@example.com", "Fine", "", "This one is fine."));
    let mut reader = MailboxReader::connect(imap_config(&server), None)
        .await
        .unwrap();
    let batch = reader.poll().await.unwrap();
    assert_eq!(batch.quarantined.len(), 1, "{batch:?}");
    assert_eq!(
        batch.quarantined[0].reason,
        Malformed::MultipartWithoutBoundary
    );
    assert_eq!(
        batch.quarantined[0].kept_in,
        KeptIn::Mailbox("Quarantine".into())
    );
    let ids: Vec<&str> = batch
        .messages
        .iter()
        .map(|f| f.message.message_id.as_str())
        .collect();
    assert_eq!(ids, vec!["good@example.com"]);
    // Kept, byte for byte, where an SRE can look; gone from INBOX's view.
    assert_eq!(server.messages("Quarantine"), vec![malformed.to_vec()]);
    assert!(reader.poll().await.unwrap().quarantined.is_empty());
    reader.logout().await;
}

#[tokio::test]
async fn idle_wakes_the_reader_when_mail_arrives() {
    let Some(server) = Dovecot::start("mail: IDLE") else {
        return;
    };
    let mut reader = MailboxReader::connect(imap_config(&server), None)
        .await
        .unwrap();
    assert!(reader.can_idle(), "dovecot offers IDLE");
    assert!(reader.poll().await.unwrap().messages.is_empty());
    let raw = mail("idle@example.com", "Wake up", "", "New mail.");
    let deliver = {
        let path_server = &server;
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            path_server.deliver(&raw);
        }
    };
    let (changed, ()) = tokio::join!(reader.wait_for_mail(Duration::from_secs(20)), deliver);
    assert!(changed.unwrap(), "IDLE reported no change");
    let batch = reader.poll().await.unwrap();
    assert_eq!(batch.messages.len(), 1);
    assert_eq!(batch.messages[0].message.message_id, "idle@example.com");
    reader.logout().await;
}

#[tokio::test]
async fn wrong_credentials_and_an_unknown_ca_are_refused() {
    let Some(server) = Dovecot::start("mail: refused connections") else {
        return;
    };
    let mut bad_password = imap_config(&server);
    bad_password.password = "wrong".into();
    match MailboxReader::connect(bad_password, None).await {
        Err(Error::Login { user, .. }) => assert_eq!(user, IMAP_USER),
        Err(other) => panic!("expected a login refusal, got {other}"),
        Ok(_) => panic!("logged in with a wrong password"),
    }
    let mut other_ca = imap_config(&server);
    other_ca.trust = TrustRoots::CaPem(TestPki::new().ca_pem.into_bytes());
    match MailboxReader::connect(other_ca, None).await {
        Err(Error::Tls(msg)) => assert!(msg.contains("certificate"), "{msg}"),
        Err(other) => panic!("expected a TLS refusal, got {other}"),
        Ok(_) => panic!("trusted a certificate from an unknown CA"),
    }
}

async fn reply_arrives_with_threading_headers(tls: SmtpTls) {
    let Some(server) = SmtpServer::start("mail: SMTP reply", tls) else {
        return;
    };
    let mut config = SmtpConfig::new(
        "127.0.0.1",
        server.port,
        match tls {
            SmtpTls::StartTls => Security::StartTls,
            SmtpTls::Implicit => Security::ImplicitTls,
        },
    );
    config.tls_server_name = Some("localhost".into());
    config.trust = TrustRoots::CaPem(server.ca_pem.clone().into_bytes());
    config.timeout = Duration::from_secs(10);
    let sender = SmtpSender::new(&config).unwrap();

    let inbound = parse_inbound(
        &mail(
            "m2@example.com",
            "Re: Printer on fire [#t0007]",
            "References: <m1@example.com> <ack-7@meridian.example>\r\n",
            "Still burning.",
        ),
        MESSAGE_BYTES_MAX_DEFAULT,
    )
    .unwrap();
    let from = smtp::From {
        address: "support@meridian.example".into(),
        name: Some("Meridian Support".into()),
    };
    let ticket = TicketRef::new("t0007").unwrap();
    let reply = smtp::reply(
        &Thread::from_inbound(&inbound),
        &from,
        &ticket,
        smtp::message_id_for("reply-42", "meridian.example"),
        "We replaced the fuser.",
    );
    sender
        .send(&reply)
        .await
        .unwrap_or_else(|e| panic!("send: {e}\n{}", server.log()));
    let ack = smtp::acknowledgement(
        &Thread::from_inbound(&inbound),
        &from,
        &ticket,
        smtp::message_id_for("ack-43", "meridian.example"),
        "when our next shift opens, Monday 09:00 UTC",
    );
    sender.send(&ack).await.unwrap();

    let received = server.wait_for(2, Duration::from_secs(10));
    assert_eq!(received.len(), 2, "{}", server.log());
    let (rcpts, raw) = &received[0];
    assert_eq!(rcpts, &vec!["ana@example.com".to_owned()]);
    // Read back with the same parser the reader uses: what a client sees.
    let got = parse_inbound(raw, MESSAGE_BYTES_MAX_DEFAULT).unwrap();
    assert_eq!(got.message_id, "reply-42@meridian.example");
    assert_eq!(got.in_reply_to, vec!["m2@example.com"]);
    assert_eq!(
        got.references,
        vec!["m1@example.com", "ack-7@meridian.example", "m2@example.com"]
    );
    assert_eq!(got.subject, "Re: Printer on fire [#t0007]");
    assert_eq!(got.text_body.trim(), "We replaced the fuser.");
    let ack_got = parse_inbound(&received[1].1, MESSAGE_BYTES_MAX_DEFAULT).unwrap();
    assert!(
        ack_got
            .text_body
            .contains("A person will answer when our next shift opens, Monday 09:00 UTC."),
        "{}",
        ack_got.text_body
    );
    assert!(ack_got.text_body.contains("[#t0007]"));

    // A server whose certificate does not chain to the configured CA is
    // refused, and nothing more arrives.
    config.trust = TrustRoots::CaPem(TestPki::new().ca_pem.into_bytes());
    let untrusting = SmtpSender::new(&config).unwrap();
    assert!(untrusting.send(&reply).await.is_err());
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn a_reply_sent_over_starttls_arrives_with_threading_headers() {
    reply_arrives_with_threading_headers(SmtpTls::StartTls).await;
}

#[tokio::test]
async fn a_reply_sent_over_implicit_tls_arrives_with_threading_headers() {
    reply_arrives_with_threading_headers(SmtpTls::Implicit).await;
}
