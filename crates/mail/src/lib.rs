//! `meridian-mail`: email in and out for a Meridian region.
//!
//! It owns:
//! - **reading a support mailbox** ([`imap::MailboxReader`]): IMAP over TLS
//!   (implicit or STARTTLS), UID-based polling with a persistable
//!   [`imap::Cursor`], IDLE where offered, malformed mail moved to a
//!   quarantine mailbox and reported, never dropped;
//! - **parsing** ([`message::parse_inbound`]): MIME with `mail-parser`, into
//!   an [`InboundMessage`] (threading ids, sender, subject, text, language
//!   hint, attachment list), refusing what cannot become a ticket;
//! - **threading** ([`thread::thread`]): duplicate, existing ticket (by
//!   In-Reply-To, References or a `[#ref]` subject tag) or new ticket, over
//!   a [`thread::TicketDirectory`] the gateway implements on its store;
//! - **the ledger** ([`ledger::Ledger`]): the mailbox cursor, every
//!   Message-ID read or sent with its ticket, each emailed ticket's thread,
//!   and the quarantine list, in the region's database;
//! - **sending** ([`smtp::SmtpSender`]): acknowledgements and replies with
//!   threading headers, over STARTTLS or implicit TLS with lettre.
//!
//! Boundary: no tickets (ids are opaque strings), no store, no routing. The gateway decides what a
//! message does to a ticket and owns the durable outbox; this crate speaks
//! the protocols and formats. See docs/mail.md.

#![forbid(unsafe_code)]

pub mod imap;
pub mod ledger;
pub mod message;
pub mod smtp;
pub mod thread;
mod tls;

use std::time::Duration;

pub use message::{Attachment, InboundMessage, Malformed};
pub use tls::TrustRoots;

/// How a connection to a mail server is secured. There is no plain-text
/// option: support mail carries customer data and passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    ImplicitTls,
    /// A plain greeting, then STARTTLS before anything else (IMAP 143,
    /// submission 587). Refused if the server does not offer it.
    StartTls,
}

/// What went wrong talking to a mail server or building a mail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("mail configuration: {0}")]
    Config(String),
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("IMAP login as {user:?} refused: {reason}")]
    Login { user: String, reason: String },
    #[error("IMAP: {0}")]
    Imap(#[from] async_imap::error::Error),
    #[error("{what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("SMTP: {0}")]
    Smtp(String),
    #[error("building mail: {0}")]
    Build(String),
    #[error("mail ledger: {0}")]
    Ledger(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
