//! A customer's conversation by email, through `meridian up --mail`, a real
//! Dovecot (IMAPS) and a real aiosmtpd (STARTTLS), each started by the test
//! with certificates from a CA of its own.
//!
//! apac-south reads the support mailbox; the mesh's clock starts on a
//! Tuesday at 15:00 UTC, when us-east (the router's first choice) and
//! eu-west are on shift and apac-south is not. The customer writes; the
//! ticket lands in us-east and the customer gets an acknowledgement that
//! says so; a duplicate delivery and a malformed mail change nothing (the
//! latter is kept aside and listed by `meridian mail quarantine`); the
//! customer's answer to the acknowledgement threads onto the ticket at
//! us-east, over the mesh; an agent's public reply reaches the customer
//! with threading headers; the ticket is handed to eu-west; the customer
//! writes again and eu-west's reply reaches them too. Then the mesh is
//! killed with `kill -9` while a committed reply waits to be sent, and
//! after a restart that reply is sent exactly once.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};
use meridian_test_support::mail_servers::{Dovecot, IMAP_PASSWORD, IMAP_USER, SmtpServer, SmtpTls};
use support::{Killed, MERIDIAN};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

mod support;

const START: &str = "2026-12-08T15:00:00Z";
const MAILBOX_REGION: &str = "apac-south";

struct Up {
    _child: Killed,
    gateways: Vec<(String, String)>,
    tokens: Vec<(String, String)>,
    /// stderr lines, as they come.
    stderr: mpsc::Receiver<String>,
}

/// `meridian up --mail apac-south=FILE` on `dir`, with stderr read here.
fn up(dir: &Path, mail_file: &Path, start: jiff::Timestamp, hold_before_send: bool) -> Up {
    let mut command = Command::new(MERIDIAN);
    command
        .args(["up", "--base-port", "0", "--start"])
        .arg(start.to_string())
        .arg("--data-dir")
        .arg(dir)
        .arg("--mail")
        .arg(format!("{MAILBOX_REGION}={}", mail_file.display()))
        .env("RUST_LOG", "warn,meridian_gateway::mail=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if hold_before_send {
        command.env("MERIDIAN_MAIL_HOLD_BEFORE_SEND", "1");
    }
    let mut child = command.spawn().unwrap();
    let (lines_tx, stderr) = mpsc::channel();
    let err = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            eprintln!("[up] {line}");
            let _ = lines_tx.send(line);
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let child = Killed(child);
    let (mut gateways, mut tokens) = (Vec::new(), Vec::new());
    let mut ready = false;
    for line in &mut lines {
        let line = line.unwrap();
        if line.starts_with("Ctrl-C") {
            ready = true;
            break;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            ["gateway", region, url, ..] if url.starts_with("https://") => {
                gateways.push((region.to_owned(), url.to_owned()));
            }
            [name, token] if token.starts_with("eyJ") => {
                tokens.push((name.to_owned(), token.to_owned()));
            }
            _ => {}
        }
    }
    assert!(ready, "meridian up stopped before it was ready");
    std::thread::spawn(move || lines.for_each(drop));
    Up {
        _child: child,
        gateways,
        tokens,
        stderr,
    }
}

impl Up {
    async fn client(&self, dir: &Path, region: &str) -> TicketServiceClient<Channel> {
        let url = &self.gateways.iter().find(|(r, _)| r == region).unwrap().1;
        let ca = std::fs::read(dir.join("pki/ca.pem")).unwrap();
        let channel = Channel::from_shared(url.clone())
            .unwrap()
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
            .unwrap()
            .connect()
            .await
            .unwrap();
        TicketServiceClient::new(channel)
    }

    fn token(&self, name: &str) -> String {
        self.tokens
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no token {name}: {:?}", self.tokens))
            .1
            .clone()
    }

    fn request<T>(&self, token: &str, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token(token)).parse().unwrap(),
        );
        request
    }

    async fn ticket(&self, dir: &Path, region: &str, id: &str) -> v1::GetTicketResponse {
        self.client(dir, region)
            .await
            .get_ticket(self.request(
                "sre",
                v1::GetTicketRequest {
                    ticket_id: id.to_owned(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits for the ticket (as `region` sees it) to satisfy `done`.
    async fn wait_ticket(
        &self,
        dir: &Path,
        region: &str,
        id: &str,
        what: &str,
        done: impl Fn(&v1::GetTicketResponse) -> bool,
    ) -> v1::GetTicketResponse {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.ticket(dir, region, id).await;
            if done(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "{what}: {got:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn reply(&self, dir: &Path, region: &str, id: &str, text: &str) -> String {
        self.client(dir, region)
            .await
            .add_note(self.request(
                &format!("agent-{region}"),
                v1::AddNoteRequest {
                    ticket_id: id.to_owned(),
                    author: String::new(),
                    body: text.to_owned(),
                    visibility: v1::Visibility::Public as i32,
                    note_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .note
            .unwrap()
            .id
    }

    fn wait_stderr(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("meridian up never said {needle:?}"),
            }
        }
    }
}

/// A header's value in a raw mail (unfolded), if present.
fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// A reply's threading headers: its own id, the customer mail it answers,
/// that mail's chain plus that mail, and the ticket's subject.
fn assert_threaded(raw: &[u8], id: &str, in_reply_to: &str, references: &str, subject: &str) {
    assert_eq!(header(raw, "Message-ID").unwrap(), id);
    assert_eq!(header(raw, "In-Reply-To").as_deref(), Some(in_reply_to));
    assert_eq!(header(raw, "References").unwrap(), references);
    assert_eq!(header(raw, "Subject").unwrap(), subject);
}

fn body(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // lettre may send quoted-printable; undo soft breaks and the common escapes.
    body.replace("=\r\n", "")
        .replace("=3D", "=")
        .replace("=20", " ")
}

fn customer_mail(
    id: &str,
    subject: &str,
    in_reply_to: Option<&str>,
    references: &str,
    text: &str,
) -> Vec<u8> {
    let mut mail = format!(
        "From: Carla Customer <carla@customer.test>\r\n\
         To: support@meridian.test\r\n\
         Subject: {subject}\r\n\
         Message-ID: <{id}>\r\n\
         Date: Tue, 08 Dec 2026 15:00:00 +0000\r\n\
         Content-Language: en\r\n"
    );
    if let Some(parent) = in_reply_to {
        mail.push_str(&format!("In-Reply-To: <{parent}>\r\n"));
    }
    if !references.is_empty() {
        mail.push_str(&format!("References: {references}\r\n"));
    }
    mail.push_str(&format!(
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
    ));
    mail.into_bytes()
}

fn message_ids_sent(smtp: &SmtpServer) -> Vec<String> {
    smtp.received()
        .iter()
        .filter_map(|(_, raw)| header(raw, "Message-ID"))
        .collect()
}

fn wait_sent(smtp: &SmtpServer, n: usize) -> Vec<(Vec<String>, Vec<u8>)> {
    let got = smtp.wait_for(n, Duration::from_secs(60));
    assert!(
        got.len() >= n,
        "the SMTP server received {} mails, not {n}: {:?}\n{}",
        got.len(),
        message_ids_sent(smtp),
        smtp.log()
    );
    got
}

fn sla_state(
    ticket: &v1::Ticket,
    clock: fn(&v1::SlaDeadlines) -> Option<&v1::SlaClock>,
) -> v1::SlaState {
    ticket
        .sla
        .as_ref()
        .and_then(clock)
        .map_or(v1::SlaState::Unspecified, |c| c.state())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_writes_is_acknowledged_answered_and_writes_back_across_regions() {
    let what = "mail: the customer's conversation through meridian up";
    let Some(dovecot) = Dovecot::start(what) else {
        return;
    };
    let Some(smtp) = SmtpServer::start(what, SmtpTls::StartTls) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let files = dir.path();
    std::fs::write(files.join("imap-password"), IMAP_PASSWORD).unwrap();
    std::fs::write(files.join("imap-ca.pem"), &dovecot.ca_pem).unwrap();
    std::fs::write(files.join("smtp-ca.pem"), &smtp.ca_pem).unwrap();
    let mail_file = files.join("mail.toml");
    std::fs::write(
        &mail_file,
        format!(
            r#"[mail]
from = "support@meridian.test"
from_name = "Meridian Support"
tier = "standard"
poll_interval_ms = 300

[mail.imap]
host = "127.0.0.1"
port = {imap_port}
security = "tls"
server_name = "localhost"
user = "{IMAP_USER}"
password_file = "{dir}/imap-password"
ca = "{dir}/imap-ca.pem"

[mail.smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "starttls"
server_name = "localhost"
ca = "{dir}/smtp-ca.pem"
timeout_ms = 2000
"#,
            imap_port = dovecot.port,
            smtp_port = smtp.port,
            dir = files.display(),
        ),
    )
    .unwrap();
    let start: jiff::Timestamp = START.parse().unwrap();
    let began = Instant::now();
    let mesh = up(&data, &mail_file, start, false);

    // 1. The customer writes: a ticket in the region on shift, and an
    //    acknowledgement that names it and says a person answers now.
    dovecot.deliver(&customer_mail(
        "m1@customer.test",
        "Printer on fire",
        None,
        "",
        "The printer on floor 3 is smoking.",
    ));
    let sent = wait_sent(&smtp, 1);
    let (rcpt, ack) = &sent[0];
    assert_eq!(rcpt, &vec!["carla@customer.test".to_owned()]);
    let ack_id = header(ack, "Message-ID").unwrap();
    let ticket_id = ack_id
        .trim_matches(['<', '>'])
        .strip_prefix("ack.")
        .and_then(|rest| rest.split('@').next())
        .unwrap_or_else(|| panic!("an acknowledgement's Message-ID names its ticket: {ack_id}"))
        .to_owned();
    assert_eq!(
        header(ack, "In-Reply-To").as_deref(),
        Some("<m1@customer.test>")
    );
    let subject = header(ack, "Subject").unwrap();
    let reference = subject
        .split("[#")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .unwrap()
        .to_owned();
    assert!(subject.starts_with("Re: Printer on fire [#"), "{subject}");
    assert!(
        ticket_id.ends_with(&reference),
        "{reference} is the short id of {ticket_id}"
    );
    let ack_text = body(ack);
    assert!(
        ack_text.contains("A person will answer now: our team in us-east is on shift"),
        "{ack_text}"
    );
    let created = mesh
        .wait_ticket(
            &data,
            "us-east",
            &ticket_id,
            "the ticket at us-east",
            |_| true,
        )
        .await;
    let ticket = created.ticket.clone().unwrap();
    assert_eq!(ticket.owner.as_ref().unwrap().owner_region, "us-east");
    assert_eq!(ticket.customer, "carla@customer.test");
    assert_eq!(ticket.subject, "Printer on fire");
    assert!(ticket.body.contains("floor 3"));
    assert_eq!(ticket.language, "en");

    // 2. The same mail again, and a mail that cannot become a ticket: the
    //    next real mail is still read, and nothing else is new.
    dovecot.deliver(&customer_mail(
        "m1@customer.test",
        "Printer on fire",
        None,
        "",
        "The printer on floor 3 is smoking.",
    ));
    dovecot.deliver(b"Subject: no sender and no body separator");
    let references = format!("<m1@customer.test> {ack_id}");
    dovecot.deliver(&customer_mail(
        "m2@customer.test",
        &subject,
        Some(ack_id.trim_matches(['<', '>'])),
        &references,
        "It stopped smoking but smells.",
    ));
    let threaded = mesh
        .wait_ticket(
            &data,
            "us-east",
            &ticket_id,
            "the answer to the acknowledgement",
            |t| t.notes.iter().any(|n| n.body.contains("smells")),
        )
        .await;
    let inbound: Vec<&v1::Note> = threaded
        .notes
        .iter()
        .filter(|n| n.visibility() == v1::Visibility::Inbound)
        .collect();
    assert_eq!(
        inbound.len(),
        1,
        "one customer message: {:#?}",
        threaded.notes
    );
    assert_eq!(inbound[0].author, "Carla Customer <carla@customer.test>");
    let listed = mesh
        .client(&data, "us-east")
        .await
        .list_tickets(mesh.request("sre", v1::ListTicketsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tickets.len(), 1, "the duplicate made no ticket");
    let quarantine = Command::new(MERIDIAN)
        .args(["mail", "quarantine", "--json", "--database-url"])
        .arg(format!(
            "sqlite:{}",
            data.join(format!("{MAILBOX_REGION}.db")).display()
        ))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&quarantine.stdout);
    assert!(quarantine.status.success(), "{listed}");
    assert_eq!(
        listed.lines().count(),
        1,
        "the malformed mail is kept aside: {listed}"
    );
    assert!(listed.contains("Quarantine"), "{listed}");
    assert_eq!(
        dovecot.count("Quarantine"),
        1,
        "moved to the Quarantine mailbox"
    );

    // 3. An agent of us-east answers: the customer gets it, threaded.
    let reply_note = mesh
        .reply(&data, "us-east", &ticket_id, "We sent a technician.")
        .await;
    let sent = wait_sent(&smtp, 2);
    let reply = &sent[1].1;
    assert_threaded(
        reply,
        &format!("<reply.{reply_note}@meridian.test>"),
        "<m2@customer.test>",
        &format!("<m1@customer.test> {ack_id} <m2@customer.test>"),
        &subject,
    );
    assert!(body(reply).contains("We sent a technician."));
    let answered = mesh
        .ticket(&data, "us-east", &ticket_id)
        .await
        .ticket
        .unwrap();
    assert_eq!(
        sla_state(&answered, |s| s.first_response.as_ref()),
        v1::SlaState::Met,
        "the public reply met the first response"
    );

    // 4. us-east hands the ticket to eu-west; the customer writes again,
    //    which starts the next-response clock at eu-west; eu-west answers.
    mesh.client(&data, "us-east")
        .await
        .handoff(mesh.request(
            "agent-us-east",
            v1::HandoffRequest {
                ticket_id: ticket_id.clone(),
                to_region: "eu-west".into(),
                note: Some(v1::HandoffNote {
                    current_status: v1::Status::Open as i32,
                    last_action: "sent a technician".into(),
                    next_action: "confirm the printer is replaced".into(),
                    text: "customer is waiting on the technician".into(),
                    author: String::new(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    let reply_id = format!("reply.{reply_note}@meridian.test");
    dovecot.deliver(&customer_mail(
        "m3@customer.test",
        &subject,
        Some(&reply_id),
        &format!("<m1@customer.test> {ack_id} <m2@customer.test> <{reply_id}>"),
        "The technician never came.",
    ));
    let waiting = mesh
        .wait_ticket(
            &data,
            "eu-west",
            &ticket_id,
            "the customer's message at eu-west",
            |t| t.notes.iter().any(|n| n.body.contains("never came")),
        )
        .await;
    let waiting_ticket = waiting.ticket.unwrap();
    assert_eq!(
        waiting_ticket.owner.as_ref().unwrap().owner_region,
        "eu-west"
    );
    let note = waiting
        .notes
        .iter()
        .find(|n| n.body.contains("never came"))
        .unwrap();
    assert_eq!(
        note.region, "eu-west",
        "written by the owner, over the mesh"
    );
    assert_eq!(
        sla_state(&waiting_ticket, |s| s.next_response.as_ref()),
        v1::SlaState::Running,
        "the customer's message started the next-response clock"
    );
    let second_reply = mesh
        .reply(
            &data,
            "eu-west",
            &ticket_id,
            "A new technician is on the way.",
        )
        .await;
    let sent = wait_sent(&smtp, 3);
    let reply = &sent[2].1;
    assert_threaded(
        reply,
        &format!("<reply.{second_reply}@meridian.test>"),
        "<m3@customer.test>",
        &format!("<m1@customer.test> {ack_id} <m2@customer.test> <{reply_id}> <m3@customer.test>"),
        &subject,
    );
    let met = mesh
        .ticket(&data, "eu-west", &ticket_id)
        .await
        .ticket
        .unwrap();
    assert_eq!(
        sla_state(&met, |s| s.next_response.as_ref()),
        v1::SlaState::Met
    );

    // 5. kill -9 between committing a reply and sending it.
    drop(mesh);
    let resume = |began: Instant| start + jiff::SignedDuration::try_from(began.elapsed()).unwrap();
    let held = up(&data, &mail_file, resume(began), true);
    let third = held
        .reply(&data, "eu-west", &ticket_id, "The printer is replaced.")
        .await;
    let line = held.wait_stderr("holding before sending", Duration::from_secs(60));
    assert!(line.contains(&format!("reply.{third}@")), "{line}");
    drop(held); // SIGKILL
    assert_eq!(smtp.received().len(), 3, "nothing was sent before the kill");
    let after = up(&data, &mail_file, resume(began), false);
    let sent = wait_sent(&smtp, 4);
    let third_id = format!("<reply.{third}@meridian.test>");
    assert_eq!(header(&sent[3].1, "Message-ID").unwrap(), third_id);
    // The claim's lease (twice the 2 s send timeout) has run out by now;
    // a second send would come within it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let ids = message_ids_sent(&smtp);
    assert_eq!(
        ids.iter().filter(|id| **id == third_id).count(),
        1,
        "sent exactly once: {ids:?}"
    );
    assert_eq!(ids.len(), 4, "{ids:?}");
    drop(after);
}
