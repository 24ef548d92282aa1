//! A region's mail ledger: what its mailbox loop has read and written, kept
//! in the region's own database next to the store (its own tables and its
//! own typed pool, as the outbox does).
//!
//! - **The cursor** of each mailbox ([`Cursor`]), saved only after the
//!   messages before it were committed.
//! - **Message-IDs** ([`MessageEntry`]): every customer message read and
//!   every mail sent, with its ticket. A message read for an existing ticket
//!   is recorded `pending` with the note id it will be written under before
//!   the note is written, and `done` after: a crash in between writes the
//!   same note id again, which the store refuses as a duplicate, so the
//!   message lands once.
//! - **Threads** ([`MailThread`]): per emailed ticket, the customer, the
//!   subject, its short reference and the newest customer Message-ID with
//!   its References, which a reply answers.
//! - **Quarantine** ([`QuarantineEntry`]): messages that could not become a
//!   ticket, for SREs (`meridian mail quarantine`, a gauge).
//!
//! Ticket and note ids are opaque strings here: this crate knows no tickets.

use meridian_outbox::{db::Pool, on_pool};

use crate::{
    Error, Result,
    imap::Cursor,
    thread::{TicketDirectory, TicketRef},
};

/// Connections the ledger keeps: the one mailbox loop and a reader or two.
const POOL_CONNECTIONS_MAX: u32 = 3;
/// The most quarantine entries listed at once.
pub const QUARANTINE_LIST_MAX: u32 = 500;

const SCHEMA: [&str; 5] = [
    "CREATE TABLE IF NOT EXISTS mail_cursors (
        mailbox TEXT PRIMARY KEY,
        uid_validity BIGINT NOT NULL,
        last_uid BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS mail_messages (
        message_id TEXT PRIMARY KEY,
        ticket_id TEXT NOT NULL,
        direction TEXT NOT NULL,
        note_id TEXT,
        state TEXT NOT NULL,
        recorded_at_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS mail_threads (
        ticket_id TEXT PRIMARY KEY,
        reference TEXT NOT NULL,
        customer_address TEXT NOT NULL,
        customer_name TEXT,
        subject TEXT NOT NULL,
        last_message_id TEXT NOT NULL,
        last_references TEXT NOT NULL,
        updated_at_ms BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS mail_threads_reference ON mail_threads (reference, updated_at_ms)",
    "CREATE TABLE IF NOT EXISTS mail_quarantine (
        mailbox TEXT NOT NULL,
        uid_validity BIGINT NOT NULL,
        uid BIGINT NOT NULL,
        reason TEXT NOT NULL,
        kept_in TEXT NOT NULL,
        recorded_at_ms BIGINT NOT NULL,
        PRIMARY KEY (mailbox, uid_validity, uid))",
];

/// Which way a mail went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the customer, read from the mailbox.
    In,
    /// From Meridian: an acknowledgement or a reply.
    Out,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// One Message-ID the ledger knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEntry {
    pub message_id: String,
    pub ticket_id: String,
    pub direction: Direction,
    /// The note a customer message on an existing ticket is written as.
    pub note_id: Option<String>,
    /// `false` while its note may not be written yet.
    pub done: bool,
}

/// The mail conversation of one ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailThread {
    pub ticket_id: String,
    /// The short reference in subjects, `[#<reference>]`.
    pub reference: String,
    pub customer_address: String,
    pub customer_name: Option<String>,
    /// The subject the conversation started with.
    pub subject: String,
    /// The newest customer message: what a reply answers.
    pub last_message_id: String,
    /// Its References, oldest first.
    pub last_references: Vec<String>,
}

/// A message kept aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    pub mailbox: String,
    pub uid_validity: u32,
    pub uid: u32,
    pub reason: String,
    /// Where it is now: a mailbox, or "left in place: <error>".
    pub kept_in: String,
    pub recorded_at_ms: i64,
}

/// See the module doc.
#[derive(Clone, Debug)]
pub struct Ledger {
    pool: Pool,
}

fn db(e: sqlx::Error) -> Error {
    Error::Ledger(e.to_string())
}

impl Ledger {
    /// Opens the ledger on the region's database (`sqlite:…` or
    /// `postgres://…`) and creates its tables if they are missing.
    pub async fn open(url: &str) -> Result<Ledger> {
        let pool = Pool::connect(url, POOL_CONNECTIONS_MAX)
            .await
            .map_err(|e| Error::Ledger(e.to_string()))?;
        pool.create_tables(&SCHEMA)
            .await
            .map_err(|e| Error::Ledger(e.to_string()))?;
        Ok(Ledger { pool })
    }

    /// The saved position in `mailbox`, if any.
    pub async fn cursor(&self, mailbox: &str) -> Result<Option<Cursor>> {
        let sql = "SELECT uid_validity, last_uid FROM mail_cursors WHERE mailbox = $1";
        let row: Option<(i64, i64)> = on_pool!(&self.pool, |p| sqlx::query_as(sql)
            .bind(mailbox)
            .fetch_optional(p)
            .await)
        .map_err(db)?;
        row.map(|(validity, last)| {
            Ok(Cursor {
                uid_validity: u32_of(validity, "uid_validity")?,
                last_uid: u32_of(last, "last_uid")?,
            })
        })
        .transpose()
    }

    pub async fn set_cursor(&self, mailbox: &str, cursor: Cursor, now_ms: i64) -> Result<()> {
        let sql = "INSERT INTO mail_cursors (mailbox, uid_validity, last_uid, updated_at_ms) \
                   VALUES ($1, $2, $3, $4) ON CONFLICT (mailbox) DO UPDATE SET \
                   uid_validity = excluded.uid_validity, last_uid = excluded.last_uid, \
                   updated_at_ms = excluded.updated_at_ms";
        on_pool!(&self.pool, |p| sqlx::query(sql)
            .bind(mailbox)
            .bind(i64::from(cursor.uid_validity))
            .bind(i64::from(cursor.last_uid))
            .bind(now_ms)
            .execute(p)
            .await
            .map(drop))
        .map_err(db)?;
        Ok(())
    }

    /// The entry of a Message-ID (without angle brackets), if known.
    pub async fn message(&self, message_id: &str) -> Result<Option<MessageEntry>> {
        let sql = "SELECT ticket_id, direction, note_id, state FROM mail_messages \
                   WHERE message_id = $1";
        let row: Option<(String, String, Option<String>, String)> =
            on_pool!(&self.pool, |p| sqlx::query_as(sql)
                .bind(message_id)
                .fetch_optional(p)
                .await)
            .map_err(db)?;
        Ok(
            row.map(|(ticket_id, direction, note_id, state)| MessageEntry {
                message_id: message_id.to_owned(),
                ticket_id,
                direction: if direction == "out" {
                    Direction::Out
                } else {
                    Direction::In
                },
                note_id,
                done: state == "done",
            }),
        )
    }

    /// Records a Message-ID; an id already known is left as it is (the
    /// first ticket it named stays its ticket).
    pub async fn record_message(&self, entry: &MessageEntry, now_ms: i64) -> Result<()> {
        let sql = "INSERT INTO mail_messages \
                   (message_id, ticket_id, direction, note_id, state, recorded_at_ms) \
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (message_id) DO NOTHING";
        on_pool!(&self.pool, |p| sqlx::query(sql)
            .bind(&entry.message_id)
            .bind(&entry.ticket_id)
            .bind(entry.direction.as_str())
            .bind(&entry.note_id)
            .bind(if entry.done { "done" } else { "pending" })
            .bind(now_ms)
            .execute(p)
            .await
            .map(drop))
        .map_err(db)?;
        Ok(())
    }

    /// How many Message-IDs of `direction` are recorded as done: customer
    /// mails taken (tickets made, messages added), or mails enqueued.
    pub async fn message_count(&self, direction: Direction) -> Result<u64> {
        let sql = "SELECT COUNT(*) FROM mail_messages WHERE direction = $1 AND state = 'done'";
        let (n,): (i64,) = on_pool!(&self.pool, |p| sqlx::query_as(sql)
            .bind(direction.as_str())
            .fetch_one(p)
            .await)
        .map_err(db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Marks a pending message's note written.
    pub async fn message_done(&self, message_id: &str) -> Result<()> {
        let sql = "UPDATE mail_messages SET state = 'done' WHERE message_id = $1";
        on_pool!(&self.pool, |p| sqlx::query(sql)
            .bind(message_id)
            .execute(p)
            .await
            .map(drop))
        .map_err(db)?;
        Ok(())
    }

    /// The thread of a ticket, if it came by mail to this region.
    pub async fn thread(&self, ticket_id: &str) -> Result<Option<MailThread>> {
        let sql = format!("SELECT {THREAD_COLUMNS} FROM mail_threads WHERE ticket_id = $1");
        let row: Option<ThreadRow> = on_pool!(&self.pool, |p| sqlx::query_as(&sql)
            .bind(ticket_id)
            .fetch_optional(p)
            .await)
        .map_err(db)?;
        Ok(row.map(thread_of))
    }

    /// Writes a ticket's thread (a new one, or its newest customer message).
    pub async fn save_thread(&self, thread: &MailThread, now_ms: i64) -> Result<()> {
        let sql = "INSERT INTO mail_threads (ticket_id, reference, customer_address, \
                   customer_name, subject, last_message_id, last_references, updated_at_ms) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (ticket_id) DO UPDATE SET \
                   last_message_id = excluded.last_message_id, \
                   last_references = excluded.last_references, \
                   updated_at_ms = excluded.updated_at_ms";
        on_pool!(&self.pool, |p| sqlx::query(sql)
            .bind(&thread.ticket_id)
            .bind(&thread.reference)
            .bind(&thread.customer_address)
            .bind(&thread.customer_name)
            .bind(&thread.subject)
            .bind(&thread.last_message_id)
            .bind(thread.last_references.join(" "))
            .bind(now_ms)
            .execute(p)
            .await
            .map(drop))
        .map_err(db)?;
        Ok(())
    }

    /// The newest thread whose short reference this is. References are
    /// short (what people read in lists), so two tickets may share one;
    /// the newest wins, and In-Reply-To, checked before, is exact.
    pub async fn thread_by_reference(&self, reference: &str) -> Result<Option<MailThread>> {
        let sql = format!(
            "SELECT {THREAD_COLUMNS} FROM mail_threads WHERE reference = $1 \
             ORDER BY updated_at_ms DESC LIMIT 1"
        );
        let row: Option<ThreadRow> = on_pool!(&self.pool, |p| sqlx::query_as(&sql)
            .bind(reference)
            .fetch_optional(p)
            .await)
        .map_err(db)?;
        Ok(row.map(thread_of))
    }

    /// Records a message kept aside; recording it again changes nothing.
    pub async fn record_quarantine(&self, entry: &QuarantineEntry) -> Result<()> {
        let sql = "INSERT INTO mail_quarantine \
                   (mailbox, uid_validity, uid, reason, kept_in, recorded_at_ms) \
                   VALUES ($1, $2, $3, $4, $5, $6) \
                   ON CONFLICT (mailbox, uid_validity, uid) DO NOTHING";
        on_pool!(&self.pool, |p| sqlx::query(sql)
            .bind(&entry.mailbox)
            .bind(i64::from(entry.uid_validity))
            .bind(i64::from(entry.uid))
            .bind(&entry.reason)
            .bind(&entry.kept_in)
            .bind(entry.recorded_at_ms)
            .execute(p)
            .await
            .map(drop))
        .map_err(db)?;
        Ok(())
    }

    /// The newest quarantined messages first, at most `limit`.
    pub async fn quarantine(&self, limit: u32) -> Result<Vec<QuarantineEntry>> {
        let sql = "SELECT mailbox, uid_validity, uid, reason, kept_in, recorded_at_ms \
                   FROM mail_quarantine ORDER BY recorded_at_ms DESC, uid DESC LIMIT $1";
        let rows: Vec<(String, i64, i64, String, String, i64)> =
            on_pool!(&self.pool, |p| sqlx::query_as(sql)
                .bind(i64::from(limit.min(QUARANTINE_LIST_MAX)))
                .fetch_all(p)
                .await)
            .map_err(db)?;
        rows.into_iter()
            .map(|(mailbox, validity, uid, reason, kept_in, at)| {
                Ok(QuarantineEntry {
                    mailbox,
                    uid_validity: u32_of(validity, "uid_validity")?,
                    uid: u32_of(uid, "uid")?,
                    reason,
                    kept_in,
                    recorded_at_ms: at,
                })
            })
            .collect()
    }

    /// How many messages are kept aside.
    pub async fn quarantine_count(&self) -> Result<u64> {
        let sql = "SELECT COUNT(*) FROM mail_quarantine";
        let (n,): (i64,) =
            on_pool!(&self.pool, |p| sqlx::query_as(sql).fetch_one(p).await).map_err(db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The columns a [`ThreadRow`] reads, in its order.
const THREAD_COLUMNS: &str = "ticket_id, reference, customer_address, customer_name, subject, \
                              last_message_id, last_references";

type ThreadRow = (
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
);

fn thread_of(row: ThreadRow) -> MailThread {
    let (ticket_id, reference, customer_address, customer_name, subject, last, refs) = row;
    MailThread {
        ticket_id,
        reference,
        customer_address,
        customer_name,
        subject,
        last_message_id: last,
        last_references: refs.split_whitespace().map(str::to_owned).collect(),
    }
}

fn u32_of(value: i64, column: &str) -> Result<u32> {
    u32::try_from(value)
        .map_err(|_| Error::Ledger(format!("{column} {value} is out of range for a UID")))
}

/// Threading over the ledger: a Message-ID it recorded (read or sent, and
/// done), and a subject reference of one of its threads.
impl TicketDirectory for Ledger {
    type Ticket = String;
    type Error = Error;

    async fn ticket_for_message_id(&self, message_id: &str) -> Result<Option<String>> {
        // A mail kept aside was read but made no ticket (an empty id): an
        // answer to it threads by its other evidence, or starts anew.
        Ok(self
            .message(message_id)
            .await?
            .map(|entry| entry.ticket_id)
            .filter(|ticket| !ticket.is_empty()))
    }

    async fn ticket_for_ref(&self, reference: &TicketRef) -> Result<Option<String>> {
        Ok(self
            .thread_by_reference(reference.as_str())
            .await?
            .map(|thread| thread.ticket_id))
    }
}
