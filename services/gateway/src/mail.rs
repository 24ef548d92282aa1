//! A region's mail (`[mail]`, docs/mail.md): three tasks over the mail
//! ledger and a `mail` channel of the region's outbox.
//!
//! - **Intake** reads the support mailbox ([`MailboxReader`]) and, for each
//!   message, in order: a duplicate delivery does nothing; a message on a
//!   ticket (threaded by In-Reply-To, References or `[#ref]`) becomes an
//!   inbound note at the ticket's owner, here or over the mesh; any other
//!   message becomes a ticket through the router's follow-the-sun decision
//!   (`SubmitTicket`, keyed by its Message-ID), answered by an
//!   acknowledgement that says when a person will answer. The mailbox
//!   cursor is saved only after every message before it is committed; a
//!   message that fails for a moment stops the batch and is read again.
//! - **Replies** tail every region's log (a cursor per origin, in the
//!   outbox) for public replies on tickets whose thread this region holds,
//!   wherever the reply was written, and put each in the outbox once (its
//!   key is the note id).
//! - **Sending** claims outbox items and hands them to the SMTP server. A
//!   crash between the commit and the send leaves the item claimed; it is
//!   sent after its lease, with the same Message-ID.
//!
//! Exactly once, step by step: a new ticket's creation is keyed by the
//! Message-ID (a re-read replays it); its acknowledgement is enqueued under
//! `ack:<ticket>` before the message is marked read in the ledger; a
//! message on an existing ticket is recorded with the note id it will be
//! written under before the note is written, so a re-read writes the same
//! id, which the owner refuses as a duplicate.

use std::{sync::Arc, time::Duration};

use meridian_core::{EventKind, RegionId, TicketId, Visibility};
use meridian_mail::{
    InboundMessage,
    imap::{KeptIn, MailboxReader},
    ledger::{Direction, Ledger, MailThread, MessageEntry, QuarantineEntry},
    smtp::{self, OutboundMail, SmtpSender, Thread},
    thread::{self as threading, Threading, TicketRef},
};
use meridian_outbox::{Outbox, RetryPolicy};
use meridian_proto::v1::{
    self, router_service_client::RouterServiceClient, ticket_service_server::TicketService,
};
use meridian_telemetry::opentelemetry::{
    KeyValue,
    metrics::{Counter, Meter},
};
use tokio::sync::Notify;
use tonic::{
    Code, Request,
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

use crate::{context::TicketApi, mail_settings::MailSettings};

/// The outbox channel mails wait in.
pub const MAIL_CHANNEL: &str = "mail";
/// Events read from one origin's log at once.
const PAGE_EVENTS_MAX: u32 = 500;
/// Mails claimed at once.
const SEND_BATCH_MAX: u32 = 16;
/// The longest wait between reconnects after the mailbox failed.
const RECONNECT_MAX: Duration = Duration::from_secs(60);
/// How often the replies task looks at the logs without being woken.
const REPLIES_TICK: Duration = Duration::from_secs(2);
/// The longest subject a ticket takes (`meridian_core` limits it).
const SUBJECT_CHARS_MAX: usize = 250;

/// What the three tasks share.
struct MailCtx {
    api: TicketApi,
    settings: MailSettings,
    ledger: Ledger,
    outbox: Outbox,
    router: RouterServiceClient<Channel>,
    bearer: MetadataValue<tonic::metadata::Ascii>,
    wake_sender: Notify,
    metrics: MailMetrics,
}

struct MailMetrics {
    region: KeyValue,
    messages: Counter<u64>,
    quarantined: Counter<u64>,
    sent: Counter<u64>,
}

impl MailMetrics {
    fn new(meter: &Meter, region: &RegionId) -> Self {
        Self {
            region: KeyValue::new("meridian.region", region.to_string()),
            messages: meter
                .u64_counter("meridian.mail.messages")
                .with_description("Customer mails read from the mailbox, by what became of them (new, message, duplicate, refused)")
                .with_unit("{message}")
                .build(),
            quarantined: meter
                .u64_counter("meridian.mail.quarantined")
                .with_description("Mails kept aside because they cannot become a ticket (meridian mail quarantine lists them)")
                .with_unit("{message}")
                .build(),
            sent: meter
                .u64_counter("meridian.mail.sent")
                .with_description("Mails handed to the SMTP server, by outcome (sent, retry, dead)")
                .with_unit("{message}")
                .build(),
        }
    }

    fn message(&self, outcome: &'static str) {
        self.messages
            .add(1, &[self.region.clone(), KeyValue::new("outcome", outcome)]);
    }
}

/// Keeps the tasks running; dropping it stops them.
pub(crate) struct MailTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for MailTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Opens the ledger and the outbox on the store's database and starts the
/// tasks. Fails only on what the configuration got wrong.
pub(crate) async fn start(
    api: TicketApi,
    settings: MailSettings,
    store_url: &str,
    meter: &Meter,
) -> crate::Result<MailTasks> {
    let config = |what: String| crate::Error::Config(format!("mail: {what}"));
    let ledger = Ledger::open(store_url)
        .await
        .map_err(|e| config(e.to_string()))?;
    let timeout = settings
        .smtp
        .as_ref()
        .map_or(Duration::from_secs(30), |s| s.timeout);
    // A claimed mail is another sender's for twice a send's timeout.
    let policy = RetryPolicy {
        claim_lease: timeout.saturating_mul(2),
        ..RetryPolicy::default()
    };
    let outbox = Outbox::open(store_url, policy)
        .await
        .map_err(|e| config(e.to_string()))?;
    let mut endpoint = Endpoint::from_shared(settings.router.clone())
        .map_err(|e| config(format!("router {:?}: {e}", settings.router)))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true);
    if settings.router.starts_with("https://") {
        let Some(pem) = &settings.router_ca else {
            return Err(config("router_ca: is required for an https router".into()));
        };
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| config(format!("router TLS: {e}")))?;
    }
    let bearer = MetadataValue::try_from(format!("Bearer {}", settings.token))
        .map_err(|_| config("token_file: the token is not a header value".into()))?;
    let sender = settings
        .smtp
        .as_ref()
        .map(SmtpSender::new)
        .transpose()
        .map_err(|e| config(format!("smtp: {e}")))?;
    let ctx = Arc::new(MailCtx {
        metrics: MailMetrics::new(meter, api.region()),
        api,
        settings,
        ledger,
        outbox,
        router: RouterServiceClient::new(endpoint.connect_lazy()),
        bearer,
        wake_sender: Notify::new(),
    });
    tracing::info!(
        region = %ctx.api.region(),
        imap = %format!("{}:{}", ctx.settings.imap.host, ctx.settings.imap.port),
        mailbox = %ctx.settings.imap.mailbox,
        smtp = %ctx.settings.smtp.as_ref().map_or("none".to_owned(), |s| format!("{}:{}", s.host, s.port)),
        "mail: reading the support mailbox"
    );
    let mut tasks = vec![tokio::spawn(intake(ctx.clone()))];
    if let Some(sender) = sender {
        tasks.push(tokio::spawn(replies(ctx.clone())));
        tasks.push(tokio::spawn(send(ctx, sender)));
    }
    Ok(MailTasks(tasks))
}

// ---- intake ----

async fn intake(ctx: Arc<MailCtx>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match read_mailbox(&ctx, &mut backoff).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(region = %ctx.api.region(), error = %error, retry_in = ?backoff, "mail: mailbox loop stopped; reading again from the saved cursor");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        }
    }
}

/// One session with the mailbox: poll, commit, save the cursor, wait.
async fn read_mailbox(ctx: &MailCtx, backoff: &mut Duration) -> Result<(), String> {
    let mailbox = ctx.settings.imap.mailbox.clone();
    let saved = ctx
        .ledger
        .cursor(&mailbox)
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = MailboxReader::connect(ctx.settings.imap.clone(), saved)
        .await
        .map_err(|e| format!("cannot open the mailbox: {e}"))?;
    loop {
        let batch = reader.poll().await.map_err(|e| format!("poll: {e}"))?;
        let validity = reader.cursor().uid_validity;
        for kept in &batch.quarantined {
            let kept_in = match &kept.kept_in {
                KeptIn::Mailbox(name) => name.clone(),
                KeptIn::LeftInPlace { error } => format!("left in place, flagged: {error}"),
            };
            tracing::warn!(region = %ctx.api.region(), uid = kept.uid, reason = %kept.reason, kept_in = %kept_in, "mail: a message cannot become a ticket; kept aside");
            ctx.metrics
                .quarantined
                .add(1, std::slice::from_ref(&ctx.metrics.region));
            ctx.ledger
                .record_quarantine(&QuarantineEntry {
                    mailbox: mailbox.clone(),
                    uid_validity: validity,
                    uid: kept.uid,
                    reason: kept.reason.to_string(),
                    kept_in,
                    recorded_at_ms: now_ms(ctx),
                })
                .await
                .map_err(|e| e.to_string())?;
        }
        for fetched in &batch.messages {
            take(ctx, &fetched.message).await.map_err(|e| {
                format!(
                    "message {} (UID {}): {e}",
                    fetched.message.message_id, fetched.uid
                )
            })?;
        }
        ctx.ledger
            .set_cursor(&mailbox, reader.cursor(), now_ms(ctx))
            .await
            .map_err(|e| e.to_string())?;
        *backoff = Duration::from_secs(1);
        reader
            .wait_for_mail(ctx.settings.poll_interval)
            .await
            .map_err(|e| format!("wait: {e}"))?;
    }
}

fn now_ms(ctx: &MailCtx) -> i64 {
    ctx.api.now().as_millisecond()
}

/// Does what one customer mail asks for, once.
async fn take(ctx: &MailCtx, message: &InboundMessage) -> Result<(), String> {
    if let Some(entry) = ctx
        .ledger
        .message(&message.message_id)
        .await
        .map_err(|e| e.to_string())?
    {
        if entry.done || entry.direction == Direction::Out {
            ctx.metrics.message("duplicate");
            return Ok(());
        }
        // Recorded, but its note may not be written: write it (again).
        let ticket = parse_ticket(&entry.ticket_id)?;
        let note_id = entry.note_id.unwrap_or_default();
        return add_message(ctx, ticket, None, &note_id, message).await;
    }
    match threading::thread(&ctx.ledger, message)
        .await
        .map_err(|e| e.to_string())?
    {
        Threading::Duplicate(_) => {
            ctx.metrics.message("duplicate");
            Ok(())
        }
        Threading::Existing(ticket, by) => {
            let ticket = parse_ticket(&ticket)?;
            let record = ctx
                .api
                .store()
                .get_ticket(ticket)
                .await
                .map_err(|e| e.to_string())?;
            // A closed ticket takes no more messages: the mail starts anew.
            let known = record.map(|r| r.ticket);
            if known
                .as_ref()
                .is_some_and(|t| t.status == meridian_core::Status::Closed)
            {
                tracing::info!(%ticket, "mail: a message on a closed ticket becomes a new ticket");
                return create(ctx, message).await;
            }
            tracing::debug!(%ticket, by = ?by, "mail: a message on an existing ticket");
            let note_id = ctx
                .api
                .mint_note_id(ctx.api.now())
                .map_err(|e| e.to_string())?
                .to_string();
            ctx.ledger
                .record_message(
                    &MessageEntry {
                        message_id: message.message_id.clone(),
                        ticket_id: ticket.to_string(),
                        direction: Direction::In,
                        note_id: Some(note_id.clone()),
                        done: false,
                    },
                    now_ms(ctx),
                )
                .await
                .map_err(|e| e.to_string())?;
            add_message(ctx, ticket, known, &note_id, message).await
        }
        Threading::New => create(ctx, message).await,
    }
}

fn parse_ticket(text: &str) -> Result<TicketId, String> {
    text.parse::<TicketId>()
        .map_err(|e| format!("the ledger names ticket {text:?}: {e}"))
}

/// What a customer wrote, as a note or a ticket body: the text, then the
/// attachments by name, size and type (their bodies are not kept).
fn text_of(message: &InboundMessage, bytes_max: usize) -> String {
    let mut text = message.text_body.trim().to_owned();
    if !message.attachments.is_empty() {
        text.push_str("\n\nAttachments (not stored):");
        for a in &message.attachments {
            text.push_str(&format!(
                "\n- {} ({} bytes, {})",
                a.name, a.size, a.content_type
            ));
        }
    }
    if text.is_empty() {
        text = "(no text)".to_owned();
    }
    truncate(text, bytes_max)
}

fn truncate(mut text: String, bytes_max: usize) -> String {
    const MARK: &str = "\n[truncated: the mail was longer]";
    if text.len() <= bytes_max {
        return text;
    }
    let mut cut = bytes_max.saturating_sub(MARK.len());
    while cut > 0 && !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(MARK);
    text
}

fn customer_of(message: &InboundMessage) -> String {
    match &message.from_name {
        Some(name) if !name.trim().is_empty() => {
            format!("{} <{}>", name.trim(), message.from_address)
        }
        _ => message.from_address.clone(),
    }
}

/// Writes a customer message as an inbound note at the ticket's owner.
/// `known` is the ticket when the caller has just read it.
async fn add_message(
    ctx: &MailCtx,
    ticket: TicketId,
    known: Option<meridian_core::Ticket>,
    note_id: &str,
    message: &InboundMessage,
) -> Result<(), String> {
    let known = match known {
        Some(known) => Some(known),
        None => ctx
            .api
            .store()
            .get_ticket(ticket)
            .await
            .map_err(|e| e.to_string())?
            .map(|record| record.ticket),
    };
    let Some(known) = known else {
        // Replication has not brought it yet: read the mail again later.
        return Err(format!("ticket {ticket} is not in this region's store yet"));
    };
    let owner = known.owner.owner_region.clone();
    let request = v1::AddNoteRequest {
        ticket_id: ticket.to_string(),
        author: truncate(customer_of(message), meridian_core::note::AUTHOR_CHARS_MAX),
        body: text_of(message, meridian_core::note::NOTE_BODY_BYTES_MAX),
        visibility: v1::Visibility::Inbound as i32,
        note_id: note_id.to_owned(),
    };
    let answer = if &owner == ctx.api.region() {
        let mut local = Request::new(request);
        local.extensions_mut().insert(principal(ctx.api.region()));
        ctx.api.add_note(local).await.map(|_| ())
    } else {
        match ctx.api.mesh() {
            Some(mesh) => mesh.add_customer_message(&owner, request).await.map(|_| ()),
            None => {
                return Err(format!(
                    "ticket {ticket} is owned by {owner} and this gateway has no mesh to reach it"
                ));
            }
        }
    };
    match answer {
        Ok(()) => ctx.metrics.message("message"),
        // Written before a crash or a lost answer: the same note id.
        Err(status) if status.code() == Code::AlreadyExists => ctx.metrics.message("duplicate"),
        Err(status) => {
            return Err(format!(
                "adding the message to ticket {ticket} at {owner}: {}",
                status.message()
            ));
        }
    }
    ctx.ledger
        .message_done(&message.message_id)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(mut thread) = ctx
        .ledger
        .thread(&ticket.to_string())
        .await
        .map_err(|e| e.to_string())?
    {
        // A reply answers the customer's newest mail.
        thread.last_message_id = message.message_id.clone();
        thread.last_references = message.references.clone();
        ctx.ledger
            .save_thread(&thread, now_ms(ctx))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A new ticket through the router, and its acknowledgement.
async fn create(ctx: &MailCtx, message: &InboundMessage) -> Result<(), String> {
    let subject = match message.subject.trim() {
        "" => "(no subject)".to_owned(),
        s => s.chars().take(SUBJECT_CHARS_MAX).collect(),
    };
    let create = v1::CreateTicketRequest {
        subject,
        body: text_of(message, meridian_core::ticket::limits::BODY_BYTES_MAX),
        customer: message.from_address.clone(),
        tier: ctx.settings.tier.clone(),
        language: message.language.clone().unwrap_or_default(),
        idempotency_key: idempotency_key(&message.message_id),
        ..Default::default()
    };
    let mut request = Request::new(v1::SubmitTicketRequest {
        ticket: Some(create),
    });
    request
        .metadata_mut()
        .insert(meridian_auth::AUTHORIZATION, ctx.bearer.clone());
    let mut router = ctx.router.clone();
    let answer = match router.submit_ticket(request).await {
        Ok(answer) => answer.into_inner(),
        // The mail itself is what the router refused: keep it aside (it
        // stays in the mailbox) and go on.
        Err(status)
            if matches!(
                status.code(),
                Code::InvalidArgument | Code::PermissionDenied | Code::AlreadyExists
            ) =>
        {
            tracing::warn!(message_id = %message.message_id, error = %status.message(), "mail: the router refused the ticket; kept aside");
            ctx.metrics.message("refused");
            ctx.ledger
                .record_quarantine(&QuarantineEntry {
                    mailbox: ctx.settings.imap.mailbox.clone(),
                    uid_validity: 0,
                    uid: 0,
                    reason: format!(
                        "{}: refused by the router ({:?}): {}",
                        message.message_id,
                        status.code(),
                        status.message()
                    ),
                    kept_in: format!("{} (left in place)", ctx.settings.imap.mailbox),
                    recorded_at_ms: now_ms(ctx),
                })
                .await
                .map_err(|e| e.to_string())?;
            return record_read(ctx, message, None).await;
        }
        Err(status) => {
            return Err(format!(
                "the router: {:?}: {}",
                status.code(),
                status.message()
            ));
        }
    };
    let ticket_id = answer
        .ticket
        .as_ref()
        .map(|t| t.id.clone())
        .ok_or("the router answered without a ticket")?;
    let ticket = parse_ticket(&ticket_id)?;
    ctx.metrics
        .message(if answer.replayed { "duplicate" } else { "new" });
    tracing::info!(%ticket, region = %answer.region, message_id = %message.message_id, "mail: a new ticket from the mailbox");
    let thread = MailThread {
        ticket_id: ticket_id.clone(),
        reference: reference(ticket),
        customer_address: message.from_address.clone(),
        customer_name: message.from_name.clone(),
        subject: message.subject.clone(),
        last_message_id: message.message_id.clone(),
        last_references: message.references.clone(),
    };
    if ctx.settings.smtp.is_some() {
        let when = answer
            .acknowledgement
            .trim()
            .trim_start_matches("A person will answer ")
            .trim_end_matches('.')
            .to_owned();
        let when = if when.is_empty() {
            "as soon as our next shift opens".to_owned()
        } else {
            when
        };
        let ack = smtp::acknowledgement(
            &Thread::from_inbound(message),
            &from(ctx),
            &ticket_ref(&thread)?,
            smtp::message_id_for(&format!("ack.{ticket_id}"), &ctx.settings.domain),
            &when,
        );
        enqueue(ctx, &format!("ack:{ticket_id}"), &ack, ticket).await?;
    }
    ctx.ledger
        .save_thread(&thread, now_ms(ctx))
        .await
        .map_err(|e| e.to_string())?;
    record_read(ctx, message, Some(ticket)).await
}

/// Marks a customer mail read: from now on it is a duplicate.
async fn record_read(
    ctx: &MailCtx,
    message: &InboundMessage,
    ticket: Option<TicketId>,
) -> Result<(), String> {
    ctx.ledger
        .record_message(
            &MessageEntry {
                message_id: message.message_id.clone(),
                ticket_id: ticket.map(|t| t.to_string()).unwrap_or_default(),
                direction: Direction::In,
                note_id: None,
                done: true,
            },
            now_ms(ctx),
        )
        .await
        .map_err(|e| e.to_string())
}

/// The idempotency key of a mail's ticket: its Message-ID, digested to fit
/// a key's 128 printable characters.
fn idempotency_key(message_id: &str) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, message_id.as_bytes());
    digest
        .as_ref()
        .iter()
        .fold(String::from("mail:"), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// The short reference in subjects: the ticket's short id, what agents
/// read in lists and the console.
pub(crate) fn reference(ticket: TicketId) -> String {
    ticket.short()
}

fn ticket_ref(thread: &MailThread) -> Result<TicketRef, String> {
    // The ticket id itself (36 characters) is a well-formed reference too.
    TicketRef::new(&thread.reference)
        .or_else(|| TicketRef::new(&thread.ticket_id))
        .ok_or_else(|| format!("ticket {:?} has no usable reference", thread.ticket_id))
}

fn from(ctx: &MailCtx) -> smtp::From {
    smtp::From {
        address: ctx.settings.from_address.clone(),
        name: ctx.settings.from_name.clone(),
    }
}

/// Puts a mail in the outbox (once per key) and records its Message-ID, so
/// the customer's answer to it threads onto its ticket.
async fn enqueue(
    ctx: &MailCtx,
    key: &str,
    mail: &OutboundMail,
    ticket: TicketId,
) -> Result<(), String> {
    let payload = serde_json::to_string(mail).map_err(|e| format!("encoding a mail: {e}"))?;
    let added = ctx
        .outbox
        .enqueue(MAIL_CHANNEL, key, &payload, ctx.api.now())
        .await
        .map_err(|e| e.to_string())?;
    ctx.ledger
        .record_message(
            &MessageEntry {
                message_id: mail.message_id.clone(),
                ticket_id: ticket.to_string(),
                direction: Direction::Out,
                note_id: None,
                done: true,
            },
            now_ms(ctx),
        )
        .await
        .map_err(|e| e.to_string())?;
    if added {
        ctx.wake_sender.notify_one();
    }
    Ok(())
}

// ---- replies ----

fn replies_cursor(ctx: &MailCtx, origin: &RegionId) -> String {
    format!("mail:{}:{origin}", ctx.api.region())
}

/// Tails every origin's log for public replies on this region's threads.
async fn replies(ctx: Arc<MailCtx>) {
    let store = ctx.api.store().clone();
    let mut commits = store.subscribe();
    let mut first = true;
    loop {
        match replies_pass(&ctx, first).await {
            Ok(()) => first = false,
            Err(error) => {
                tracing::warn!(region = %ctx.api.region(), error = %error, "mail: cannot read the log for replies; retrying");
            }
        }
        tokio::select! {
            received = commits.recv() => {
                if matches!(received, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
            }
            () = tokio::time::sleep(REPLIES_TICK) => {}
        }
    }
}

async fn replies_pass(ctx: &MailCtx, first: bool) -> Result<(), String> {
    let store = ctx.api.store();
    let origins = store.origins().await.map_err(|e| e.to_string())?;
    for origin in origins {
        let name = replies_cursor(ctx, &origin);
        let mut cursor = match ctx.outbox.cursor(&name).await.map_err(|e| e.to_string())? {
            Some(saved) => saved,
            // Mail is new here: replies written from now on. An origin
            // that appears later is new too, so it starts at its start.
            None if first => {
                let head = if &origin == ctx.api.region() {
                    store.local_head().await
                } else {
                    store.cursor(&origin).await
                }
                .map_err(|e| e.to_string())?;
                ctx.outbox
                    .set_cursor(&name, head, ctx.api.now())
                    .await
                    .map_err(|e| e.to_string())?;
                head
            }
            None => 0,
        };
        loop {
            let events = store
                .events_after(&origin, cursor, PAGE_EVENTS_MAX)
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = events.last().map(|e| e.origin_seq) else {
                break;
            };
            for event in &events {
                if let EventKind::NoteAdded { note } = &event.kind
                    && note.visibility == Visibility::Public
                {
                    reply(ctx, note).await?;
                }
            }
            cursor = last;
            ctx.outbox
                .set_cursor(&name, cursor, ctx.api.now())
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Puts a public reply in the outbox if its ticket came by mail here.
async fn reply(ctx: &MailCtx, note: &meridian_core::Note) -> Result<(), String> {
    let Some(thread) = ctx
        .ledger
        .thread(&note.ticket_id.to_string())
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    if note.body.is_empty() {
        // A redacted copy: the ticket is pinned to regions this is not one
        // of, and its text must not leave them.
        tracing::warn!(ticket = %note.ticket_id, note = %note.id, "mail: a reply on a pinned ticket is not mailed from outside its residency");
        return Ok(());
    }
    let mail = smtp::reply(
        &Thread::answering(&thread),
        &from(ctx),
        &ticket_ref(&thread)?,
        smtp::message_id_for(&format!("reply.{}", note.id), &ctx.settings.domain),
        &note.body,
    );
    enqueue(ctx, &format!("reply:{}", note.id), &mail, note.ticket_id).await
}

// ---- sending ----

async fn send(ctx: Arc<MailCtx>, sender: SmtpSender) {
    let idle = Duration::from_millis(500);
    loop {
        let claimed = match ctx
            .outbox
            .claim(MAIL_CHANNEL, ctx.api.now(), SEND_BATCH_MAX)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(error = %error, "mail: cannot claim from the outbox; retrying");
                Vec::new()
            }
        };
        if claimed.is_empty() {
            tokio::select! {
                () = ctx.wake_sender.notified() => {}
                () = tokio::time::sleep(idle) => {}
            }
            continue;
        }
        for item in claimed {
            let outcome = match serde_json::from_str::<OutboundMail>(&item.payload) {
                Ok(mail) => {
                    if ctx.settings.hold_before_send {
                        eprintln!(
                            "meridian-mail failpoint: holding before sending {} (kill me now)",
                            mail.message_id
                        );
                        std::future::pending::<()>().await;
                    }
                    sender.send(&mail).await.map_err(|e| e.to_string())
                }
                Err(e) => Err(format!("the outbox item is not a mail: {e}")),
            };
            let now = ctx.api.now();
            let settled = match &outcome {
                Ok(()) => {
                    ctx.metrics.sent.add(
                        1,
                        &[ctx.metrics.region.clone(), KeyValue::new("outcome", "sent")],
                    );
                    tracing::info!(key = %item.key, "mail: sent");
                    ctx.outbox.delivered(&item, now).await.map(|_| ())
                }
                Err(error) => {
                    tracing::warn!(key = %item.key, attempt = item.attempts, error = %error, "mail: the SMTP server did not take a mail");
                    ctx.outbox.failed(&item, now, error).await.map(|failure| {
                        let outcome = match failure {
                            meridian_outbox::Failure::Dead => "dead",
                            _ => "retry",
                        };
                        ctx.metrics.sent.add(
                            1,
                            &[
                                ctx.metrics.region.clone(),
                                KeyValue::new("outcome", outcome),
                            ],
                        );
                    })
                }
            };
            if let Err(error) = settled {
                tracing::warn!(key = %item.key, error = %error, "mail: cannot settle an outbox item; it is sent again after its lease");
            }
        }
    }
}

/// Who a region's mail loop is when it writes in-process (or through a
/// peer's mesh service): an intake system, speaking for the customer.
pub(crate) fn principal(region: &meridian_core::RegionId) -> meridian_auth::Principal {
    meridian_auth::Principal {
        subject: format!("meridian:mail:{region}"),
        role: meridian_auth::Role::Intake,
        region: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_text_is_cut_on_a_character_boundary_and_says_so() {
        let text = "é".repeat(100);
        let cut = truncate(text, 60);
        assert!(cut.len() <= 60, "{}", cut.len());
        assert!(cut.ends_with("[truncated: the mail was longer]"));
        assert_eq!(truncate("short".into(), 60), "short");
    }

    #[test]
    fn a_mail_key_is_a_valid_idempotency_key_and_stable() {
        let key = idempotency_key("<abc@example.com>");
        assert_eq!(key, idempotency_key("<abc@example.com>"));
        assert_ne!(key, idempotency_key("<abd@example.com>"));
        assert_eq!(key.len(), 5 + 64);
        assert!(key.bytes().all(|b| b.is_ascii_graphic()));
    }
}
