//! The mailbox reader: IMAP over TLS, polling by UID.
//!
//! How a poll works:
//! 1. `UID FETCH <last_uid+1>:* (UID RFC822.SIZE)` lists what is new. The
//!    reader remembers the highest UID it has handed out (the
//!    [`Cursor`]); with the mailbox's `UIDVALIDITY` that pair names a
//!    position that survives reconnects. When `UIDVALIDITY` changes (the
//!    mailbox was rebuilt) the cursor restarts at 0 and Message-ID dedupe
//!    absorbs the re-reads.
//! 2. Messages over the size limit are kept aside without being fetched;
//!    the rest are fetched with `BODY.PEEK[]` (so `\Seen` is not set: people
//!    looking at the mailbox still see what is unread) in batches.
//! 3. Each is parsed ([`parse_inbound`]). One that cannot become a ticket
//!    is moved to the quarantine mailbox (created when missing) with
//!    `UID MOVE`, or `UID COPY` plus `\Deleted` where the server lacks
//!    MOVE. If even that fails it stays where it is, flagged `\Flagged`,
//!    and the poll reports it: never dropped, and the poll goes on.
//! 4. A Message-ID the reader has already handed out (in this process) is
//!    reported as a duplicate; across restarts the store's dedupe (see
//!    `thread.rs`) is what counts.
//!
//! The caller persists [`MailboxReader::cursor`] only after it committed
//! what the poll returned. A crash in between re-reads those messages, and
//! dedupe by Message-ID makes the re-read harmless: at-least-once reading,
//! exactly-once tickets.
//!
//! Between polls [`MailboxReader::wait_for_mail`] uses IDLE when the server
//! offers it (so new mail is seen within a round trip) and sleeps
//! otherwise.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use async_imap::{Client, Session};
use futures::TryStreamExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::message::{InboundMessage, MESSAGE_BYTES_MAX_DEFAULT, Malformed, parse_inbound};
use crate::tls::{TrustRoots, client_config};
use crate::{Error, Result, Security};

type ImapSession = Session<TlsStream<TcpStream>>;

/// How many Message-IDs the reader remembers for in-process dedupe.
const SEEN_IDS_MAX: usize = 10_000;

/// Where and how to read a support mailbox.
#[derive(Debug, Clone)]
pub struct ImapConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The name the server's certificate must carry; `host` when `None`.
    pub tls_server_name: Option<String>,
    pub trust: TrustRoots,
    pub username: String,
    pub password: String,
    /// The mailbox read for new mail.
    pub mailbox: String,
    /// Where messages that cannot be parsed are kept.
    pub quarantine_mailbox: String,
    /// Bodies fetched per `UID FETCH`.
    pub fetch_batch_max: usize,
    pub message_bytes_max: usize,
    /// Limit on each network step (connect, handshake, one command).
    pub io_timeout: Duration,
}

impl ImapConfig {
    /// Implicit TLS on `port`, `INBOX`, `Quarantine`, the public roots.
    pub fn new(host: &str, port: u16, username: &str, password: &str) -> ImapConfig {
        ImapConfig {
            host: host.to_owned(),
            port,
            security: Security::ImplicitTls,
            tls_server_name: None,
            trust: TrustRoots::Public,
            username: username.to_owned(),
            password: password.to_owned(),
            mailbox: "INBOX".to_owned(),
            quarantine_mailbox: "Quarantine".to_owned(),
            fetch_batch_max: 50,
            message_bytes_max: MESSAGE_BYTES_MAX_DEFAULT,
            io_timeout: Duration::from_secs(30),
        }
    }
}

/// A position in one incarnation of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub uid_validity: u32,
    /// Every UID up to this one has been handed out.
    pub last_uid: u32,
}

/// A new message that parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub uid: u32,
    pub message: InboundMessage,
}

/// Where a refused message was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeptIn {
    /// Moved to this mailbox.
    Mailbox(String),
    /// The move failed; the message stays in the read mailbox, flagged.
    LeftInPlace { error: String },
}

/// A message that cannot become a ticket, and where it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Its UID in the read mailbox before it was moved.
    pub uid: u32,
    pub reason: Malformed,
    pub kept_in: KeptIn,
}

/// What one poll found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollBatch {
    pub messages: Vec<Fetched>,
    pub quarantined: Vec<Quarantined>,
    /// UID and Message-ID of deliveries already handed out by this reader.
    pub duplicates: Vec<(u32, String)>,
}

/// Reads one mailbox; see the module doc.
pub struct MailboxReader {
    config: ImapConfig,
    session: Option<ImapSession>,
    cursor: Cursor,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    can_idle: bool,
    can_move: bool,
}

impl MailboxReader {
    /// Connects, logs in and selects the mailbox. `cursor` is the position
    /// persisted after the last committed poll, if any.
    pub async fn connect(config: ImapConfig, cursor: Option<Cursor>) -> Result<MailboxReader> {
        let mut reader = MailboxReader {
            config,
            session: None,
            cursor: cursor.unwrap_or_default(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            can_idle: false,
            can_move: false,
        };
        reader.reconnect().await?;
        Ok(reader)
    }

    /// The position to persist once the last poll's messages are committed.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Whether the server offered IDLE.
    pub fn can_idle(&self) -> bool {
        self.can_idle
    }

    async fn reconnect(&mut self) -> Result<()> {
        self.session = None;
        let mut session = open_session(&self.config).await?;
        let t = self.config.io_timeout;
        let caps = timed(t, "CAPABILITY", session.capabilities()).await?;
        self.can_idle = caps.has_str("IDLE");
        self.can_move = caps.has_str("MOVE");
        ensure_mailbox(&mut session, &self.config.quarantine_mailbox, t).await?;
        let selected = timed(t, "SELECT", session.select(&self.config.mailbox)).await?;
        let validity = selected.uid_validity.ok_or_else(|| {
            Error::Protocol(format!(
                "mailbox {:?}: the server sent no UIDVALIDITY",
                self.config.mailbox
            ))
        })?;
        if validity != self.cursor.uid_validity {
            if self.cursor.uid_validity != 0 {
                tracing::warn!(
                    mailbox = %self.config.mailbox,
                    old = self.cursor.uid_validity,
                    new = validity,
                    "uidvalidity changed; rereading the mailbox, message-id dedupe applies"
                );
            }
            self.cursor = Cursor {
                uid_validity: validity,
                last_uid: 0,
            };
        }
        self.session = Some(session);
        Ok(())
    }

    async fn session(&mut self) -> Result<&mut ImapSession> {
        if self.session.is_none() {
            self.reconnect().await?;
        }
        self.session
            .as_mut()
            .ok_or_else(|| Error::Protocol("no IMAP session after reconnect".to_owned()))
    }

    /// Reads everything new since the cursor. A network error drops the
    /// session (the next call reconnects) and leaves the cursor where the
    /// last fully handled message put it.
    pub async fn poll(&mut self) -> Result<PollBatch> {
        let result = self.poll_inner().await;
        if result.is_err() {
            self.session = None;
        }
        result
    }

    async fn poll_inner(&mut self) -> Result<PollBatch> {
        let t = self.config.io_timeout;
        let max = self.config.message_bytes_max;
        let batch_max = self.config.fetch_batch_max.max(1);
        let quarantine = self.config.quarantine_mailbox.clone();
        let from = self.cursor.last_uid.saturating_add(1);
        // Taken out for the poll and put back at its end: an error leaves
        // no half-used session behind.
        self.session().await?;
        let mut owned = self
            .session
            .take()
            .ok_or_else(|| Error::Protocol("no IMAP session".to_owned()))?;
        let session = &mut owned;

        // NOOP is IMAP's poll: a server (Dovecot does) may look for new
        // mail in a selected mailbox only when asked. Its untagged
        // EXISTS/EXPUNGE land in the unsolicited queue, drained here since
        // the listing below is what counts.
        timed(t, "NOOP", session.noop()).await?;
        while session.unsolicited_responses.try_recv().is_ok() {}
        // `n:*` always matches the highest UID, even below n: filter.
        let listing: Vec<(u32, u32)> = timed(t, "UID FETCH sizes", async {
            let stream = session
                .uid_fetch(format!("{from}:*"), "(UID RFC822.SIZE)")
                .await?;
            let fetches: Vec<_> = stream.try_collect().await?;
            Ok::<_, async_imap::error::Error>(
                fetches
                    .iter()
                    .filter_map(|f| Some((f.uid?, f.size.unwrap_or(0))))
                    .collect(),
            )
        })
        .await?;
        let mut listing: Vec<(u32, u32)> = listing
            .into_iter()
            .filter(|(uid, _)| *uid >= from)
            .collect();
        listing.sort_unstable();

        let mut batch = PollBatch::default();
        for chunk in listing.chunks(batch_max) {
            let mut refused: Vec<(u32, Malformed)> = Vec::new();
            let wanted: Vec<u32> = chunk
                .iter()
                .filter_map(|&(uid, size)| {
                    let size = usize::try_from(size).unwrap_or(usize::MAX);
                    if size > max {
                        refused.push((uid, Malformed::TooLarge { size, max }));
                        None
                    } else {
                        Some(uid)
                    }
                })
                .collect();
            let mut bodies: Vec<(u32, Vec<u8>)> = if wanted.is_empty() {
                Vec::new()
            } else {
                let set = uid_set(&wanted);
                timed(t, "UID FETCH bodies", async {
                    let stream = session.uid_fetch(set, "(UID BODY.PEEK[])").await?;
                    let fetches: Vec<_> = stream.try_collect().await?;
                    Ok::<_, async_imap::error::Error>(
                        fetches
                            .iter()
                            .filter_map(|f| Some((f.uid?, f.body()?.to_vec())))
                            .collect(),
                    )
                })
                .await?
            };
            bodies.sort_by_key(|(uid, _)| *uid);
            for (uid, raw) in bodies {
                match parse_inbound(&raw, max) {
                    Ok(message) => {
                        if self.seen.contains(&message.message_id) {
                            batch.duplicates.push((uid, message.message_id));
                        } else {
                            remember(&mut self.seen, &mut self.seen_order, &message.message_id);
                            batch.messages.push(Fetched { uid, message });
                        }
                    }
                    Err(reason) => refused.push((uid, reason)),
                }
            }
            refused.sort_by_key(|(uid, _)| *uid);
            for (uid, reason) in refused {
                let kept_in = keep_aside(session, uid, &quarantine, self.can_move, t).await;
                tracing::warn!(
                    uid,
                    reason = %reason,
                    kept_in = ?kept_in,
                    "inbound message cannot become a ticket; kept aside"
                );
                batch.quarantined.push(Quarantined {
                    uid,
                    reason,
                    kept_in,
                });
            }
            if let Some(&(last, _)) = chunk.last() {
                self.cursor.last_uid = self.cursor.last_uid.max(last);
            }
        }
        self.session = Some(owned);
        Ok(batch)
    }

    /// The raw bytes of the messages in `uid_set` (`1:*`, `4,9:12`), by
    /// UID, without parsing, dedupe or moving anything: for tools that look
    /// at mail as stored (and the benchmark's baseline).
    pub async fn fetch_raw(&mut self, uid_set: &str) -> Result<Vec<(u32, Vec<u8>)>> {
        let t = self.config.io_timeout;
        let session = self.session().await?;
        let result = timed(t, "UID FETCH raw", async {
            let stream = session.uid_fetch(uid_set, "(UID BODY.PEEK[])").await?;
            let fetches: Vec<_> = stream.try_collect().await?;
            Ok::<_, async_imap::error::Error>(
                fetches
                    .iter()
                    .filter_map(|f| Some((f.uid?, f.body()?.to_vec())))
                    .collect::<Vec<_>>(),
            )
        })
        .await;
        if result.is_err() {
            self.session = None;
        }
        result
    }

    /// Returns when the mailbox may have new mail, or after `max`: IDLE when
    /// the server offers it, a plain sleep otherwise. `true` when the
    /// server announced a change.
    pub async fn wait_for_mail(&mut self, max: Duration) -> Result<bool> {
        if !self.can_idle {
            tokio::time::sleep(max).await;
            return Ok(false);
        }
        let t = self.config.io_timeout;
        let session = match self.session.take() {
            Some(s) => s,
            None => {
                self.reconnect().await?;
                self.session
                    .take()
                    .ok_or_else(|| Error::Protocol("no IMAP session after reconnect".to_owned()))?
            }
        };
        let mut idle = session.idle();
        timed(t, "IDLE", idle.init()).await?;
        let (wait, _stop) = idle.wait_with_timeout(max);
        let response = wait.await.map_err(Error::Imap)?;
        let changed = matches!(
            response,
            async_imap::extensions::idle::IdleResponse::NewData(_)
        );
        let session = timed(t, "IDLE DONE", idle.done()).await?;
        self.session = Some(session);
        Ok(changed)
    }

    /// Logs out politely; errors are ignored (the server drops us anyway).
    pub async fn logout(mut self) {
        if let Some(mut s) = self.session.take() {
            let _ = tokio::time::timeout(self.config.io_timeout, s.logout()).await;
        }
    }
}

fn remember(seen: &mut HashSet<String>, order: &mut VecDeque<String>, id: &str) {
    if seen.insert(id.to_owned()) {
        order.push_back(id.to_owned());
        if order.len() > SEEN_IDS_MAX
            && let Some(old) = order.pop_front()
        {
            seen.remove(&old);
        }
    }
}

/// `1,2,3,7` as `1:3,7`.
fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

async fn keep_aside(
    session: &mut ImapSession,
    uid: u32,
    quarantine: &str,
    can_move: bool,
    t: Duration,
) -> KeptIn {
    let uid_s = uid.to_string();
    let moved = if can_move {
        timed(t, "UID MOVE", session.uid_mv(&uid_s, quarantine)).await
    } else {
        match timed(t, "UID COPY", session.uid_copy(&uid_s, quarantine)).await {
            Ok(()) => {
                timed(t, "UID STORE", async {
                    let stream = session
                        .uid_store(&uid_s, "+FLAGS.SILENT (\\Deleted)")
                        .await?;
                    let _: Vec<_> = stream.try_collect().await?;
                    Ok::<_, async_imap::error::Error>(())
                })
                .await
            }
            Err(e) => Err(e),
        }
    };
    match moved {
        Ok(()) => KeptIn::Mailbox(quarantine.to_owned()),
        Err(e) => {
            // Flag it so a person looking at the mailbox sees it; the flag
            // failing too changes nothing about where it is.
            let _ = timed(t, "UID STORE", async {
                let stream = session
                    .uid_store(&uid_s, "+FLAGS.SILENT (\\Flagged)")
                    .await?;
                let _: Vec<_> = stream.try_collect().await?;
                Ok::<_, async_imap::error::Error>(())
            })
            .await;
            KeptIn::LeftInPlace {
                error: e.to_string(),
            }
        }
    }
}

async fn ensure_mailbox(session: &mut ImapSession, name: &str, t: Duration) -> Result<()> {
    let exists = timed(t, "LIST", async {
        let names: Vec<_> = session.list(None, Some(name)).await?.try_collect().await?;
        Ok::<_, async_imap::error::Error>(!names.is_empty())
    })
    .await?;
    if !exists {
        timed(t, "CREATE", session.create(name)).await?;
    }
    Ok(())
}

async fn open_session(config: &ImapConfig) -> Result<ImapSession> {
    let t = config.io_timeout;
    let addr = format!("{}:{}", config.host, config.port);
    let tcp = tokio::time::timeout(t, TcpStream::connect(&addr))
        .await
        .map_err(|_| Error::Timeout {
            what: "IMAP connect",
            after: t,
        })?
        .map_err(|source| Error::Connect {
            addr: addr.clone(),
            source,
        })?;
    let tcp = match config.security {
        Security::ImplicitTls => tcp,
        Security::StartTls => {
            let mut plain = Client::new(tcp);
            greeting(&mut plain, t).await?;
            timed(
                t,
                "STARTTLS",
                plain.run_command_and_check_ok("STARTTLS", None),
            )
            .await?;
            plain.into_inner()
        }
    };
    let name = config
        .tls_server_name
        .clone()
        .unwrap_or_else(|| config.host.clone());
    let server_name = rustls::pki_types::ServerName::try_from(name.clone())
        .map_err(|e| Error::Config(format!("tls_server_name {name:?}: {e}")))?;
    let connector = TlsConnector::from(client_config(&config.trust)?);
    let tls = tokio::time::timeout(t, connector.connect(server_name, tcp))
        .await
        .map_err(|_| Error::Timeout {
            what: "IMAP TLS handshake",
            after: t,
        })?
        .map_err(|e| Error::Tls(format!("IMAP {addr}: {e}")))?;
    let mut client = Client::new(tls);
    if config.security == Security::ImplicitTls {
        greeting(&mut client, t).await?;
    }
    tokio::time::timeout(t, client.login(&config.username, &config.password))
        .await
        .map_err(|_| Error::Timeout {
            what: "IMAP LOGIN",
            after: t,
        })?
        .map_err(|(e, _)| Error::Login {
            user: config.username.clone(),
            reason: e.to_string(),
        })
}

async fn greeting<T>(client: &mut Client<T>, t: Duration) -> Result<()>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    match tokio::time::timeout(t, client.read_response()).await {
        Err(_) => Err(Error::Timeout {
            what: "IMAP greeting",
            after: t,
        }),
        Ok(Err(e)) => Err(Error::Protocol(format!("IMAP greeting: {e}"))),
        Ok(Ok(None)) => Err(Error::Protocol(
            "IMAP server closed the connection before its greeting".to_owned(),
        )),
        Ok(Ok(Some(_))) => Ok(()),
    }
}

async fn timed<T, F>(t: Duration, what: &'static str, fut: F) -> Result<T>
where
    F: std::future::Future<Output = std::result::Result<T, async_imap::error::Error>>,
{
    match tokio::time::timeout(t, fut).await {
        Err(_) => Err(Error::Timeout { what, after: t }),
        Ok(r) => r.map_err(Error::Imap),
    }
}

#[cfg(test)]
mod tests {
    use super::uid_set;

    #[test]
    fn uid_sets_compress_runs() {
        assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(uid_set(&[4]), "4");
    }
}
