//! One inbound email as Meridian sees it, parsed with `mail-parser`.
//!
//! `mail-parser` is deliberately lenient: it returns *something* for almost
//! any bytes. A ticket needs more than something, so [`parse_inbound`] adds
//! the checks that decide whether a message can become (or join) a ticket,
//! and refuses the rest with a [`Malformed`] reason. The reader keeps a
//! refused message aside rather than dropping it (see `imap.rs`).

use mail_parser::{HeaderValue, MessageParser, MimeHeaders};

/// The largest message the reader parses; a larger one is kept aside.
pub const MESSAGE_BYTES_MAX_DEFAULT: usize = 25 * 1024 * 1024;

/// An attachment, listed but not stored (issue 17: bodies are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The file name the sender gave, or `attachment-N` when none.
    pub name: String,
    /// Decoded size in bytes.
    pub size: usize,
    /// `type/subtype`, lowercase; `application/octet-stream` when absent.
    pub content_type: String,
}

/// An email ready to become a ticket or a message on one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// Without angle brackets. Synthesized as `sha256-<hex>@meridian.invalid`
    /// from the raw bytes when the message has none, so dedupe still works.
    pub message_id: String,
    /// Whether `message_id` was synthesized.
    pub message_id_synthesized: bool,
    /// Message-IDs this message answers, without angle brackets.
    pub in_reply_to: Vec<String>,
    /// The thread's Message-IDs, oldest first, without angle brackets.
    pub references: Vec<String>,
    /// The sender's address (lowercase domain kept as sent).
    pub from_address: String,
    /// The sender's display name, if any.
    pub from_name: Option<String>,
    /// Empty when the message has none.
    pub subject: String,
    /// The first text body (HTML-only mail is converted to text by
    /// mail-parser); empty when the message has no body at all.
    pub text_body: String,
    /// The primary subtag of `Content-Language` (`de` for `de-AT`),
    /// lowercase, when the header is present and well formed.
    pub language: Option<String>,
    pub attachments: Vec<Attachment>,
    /// Size of the raw message in bytes.
    pub raw_size: usize,
}

/// Why a message cannot be taken in. Each says what an SRE looks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("message is {size} bytes, over the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("no header section could be parsed")]
    NoHeaders,
    #[error("no From address: nobody to answer")]
    NoSender,
    #[error("multipart body without a boundary parameter in Content-Type")]
    MultipartWithoutBoundary,
    #[error("multipart body whose boundary {boundary:?} never occurs")]
    BoundaryNeverOccurs { boundary: String },
}

/// Parses one raw RFC 5322 message, refusing what cannot become a ticket.
pub fn parse_inbound(raw: &[u8], message_bytes_max: usize) -> Result<InboundMessage, Malformed> {
    if raw.len() > message_bytes_max {
        return Err(Malformed::TooLarge {
            size: raw.len(),
            max: message_bytes_max,
        });
    }
    let message = MessageParser::default()
        .parse(raw)
        .ok_or(Malformed::NoHeaders)?;
    if message.headers().is_empty() {
        return Err(Malformed::NoHeaders);
    }
    // mail-parser treats a multipart part with no (or an absent) boundary
    // as one opaque part; for a ticket that means a lost body, so refuse.
    if let Some(ct) = message.content_type()
        && ct.ctype().eq_ignore_ascii_case("multipart")
    {
        match ct.attribute("boundary") {
            None => return Err(Malformed::MultipartWithoutBoundary),
            Some(boundary) => {
                let marker = format!("--{boundary}");
                if !contains(raw, marker.as_bytes()) {
                    return Err(Malformed::BoundaryNeverOccurs {
                        boundary: boundary.to_owned(),
                    });
                }
            }
        }
    }
    let from = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address().map(|addr| (addr, a.name())))
        .filter(|(addr, _)| addr.contains('@'))
        .ok_or(Malformed::NoSender)?;

    let (message_id, message_id_synthesized) = match message.message_id() {
        Some(id) if !id.trim().is_empty() => (strip_brackets(id), false),
        _ => (synthesized_id(raw), true),
    };
    let attachments = message
        .attachments()
        .enumerate()
        .map(|(i, part)| Attachment {
            name: part
                .attachment_name()
                .map_or_else(|| format!("attachment-{}", i + 1), str::to_owned),
            size: part.contents().len(),
            content_type: part.content_type().map_or_else(
                || "application/octet-stream".to_owned(),
                |ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
                    None => ct.ctype().to_ascii_lowercase(),
                },
            ),
        })
        .collect();
    Ok(InboundMessage {
        message_id,
        message_id_synthesized,
        in_reply_to: id_list(message.in_reply_to()),
        references: id_list(message.references()),
        from_address: from.0.to_owned(),
        from_name: from.1.map(str::to_owned).filter(|n| !n.trim().is_empty()),
        subject: message.subject().unwrap_or_default().to_owned(),
        text_body: message
            .body_text(0)
            .map(|b| b.into_owned())
            .unwrap_or_default(),
        language: language_hint(message.content_language()),
        attachments,
        raw_size: raw.len(),
    })
}

/// `<abc@host>` → `abc@host`.
pub fn strip_brackets(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned()
}

fn id_list(value: &HeaderValue<'_>) -> Vec<String> {
    let raw: Vec<&str> = match value {
        HeaderValue::Text(t) => vec![t.as_ref()],
        HeaderValue::TextList(list) => list.iter().map(AsRef::as_ref).collect(),
        _ => Vec::new(),
    };
    raw.into_iter()
        .map(strip_brackets)
        .filter(|id| !id.is_empty())
        .collect()
}

/// The primary language subtag of the first Content-Language entry.
fn language_hint(value: &HeaderValue<'_>) -> Option<String> {
    let first: &str = match value {
        HeaderValue::Text(t) => t.as_ref(),
        HeaderValue::TextList(list) => list.first()?.as_ref(),
        _ => return None,
    };
    let primary = first.trim().split(['-', '_']).next()?;
    let ok = (2..=3).contains(&primary.len()) && primary.bytes().all(|b| b.is_ascii_alphabetic());
    ok.then(|| primary.to_ascii_lowercase())
}

fn synthesized_id(raw: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, raw);
    let hex: String = digest
        .as_ref()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256-{hex}@meridian.invalid")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = MESSAGE_BYTES_MAX_DEFAULT;

    #[test]
    fn a_plain_message_parses_with_its_threading_and_language() {
        let raw = b"From: Ana Silva <ana@example.com>\r\n\
To: support@example.org\r\n\
Subject: Re: printer on fire [#0190abcd]\r\n\
Message-ID: <m2@example.com>\r\n\
In-Reply-To: <ack1@meridian.example>\r\n\
References: <m1@example.com> <ack1@meridian.example>\r\n\
Content-Language: pt-BR\r\n\
\r\n\
It is still burning.\r\n";
        let m = parse_inbound(raw, MAX).unwrap();
        assert_eq!(m.message_id, "m2@example.com");
        assert!(!m.message_id_synthesized);
        assert_eq!(m.in_reply_to, vec!["ack1@meridian.example"]);
        assert_eq!(
            m.references,
            vec!["m1@example.com", "ack1@meridian.example"]
        );
        assert_eq!(m.from_address, "ana@example.com");
        assert_eq!(m.from_name.as_deref(), Some("Ana Silva"));
        assert_eq!(m.language.as_deref(), Some("pt"));
        assert_eq!(m.text_body.trim(), "It is still burning.");
    }

    #[test]
    fn attachments_are_listed_by_name_size_and_type() {
        let raw = b"From: a@example.com\r\n\
Subject: logs\r\n\
Message-ID: <x@example.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain\r\n\
\r\n\
see attached\r\n\
--b1\r\n\
Content-Type: application/pdf; name=\"report.pdf\"\r\n\
Content-Disposition: attachment; filename=\"report.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
aGVsbG8gd29ybGQ=\r\n\
--b1--\r\n";
        let m = parse_inbound(raw, MAX).unwrap();
        assert_eq!(m.text_body.trim(), "see attached");
        assert_eq!(
            m.attachments,
            vec![Attachment {
                name: "report.pdf".into(),
                size: 11,
                content_type: "application/pdf".into(),
            }]
        );
    }

    #[test]
    fn what_cannot_become_a_ticket_is_refused_with_a_reason() {
        let no_boundary =
            b"From: a@example.com\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\nhi\r\n";
        assert_eq!(
            parse_inbound(no_boundary, MAX),
            Err(Malformed::MultipartWithoutBoundary)
        );
        let lost_boundary =
            b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n--x\r\nhi\r\n";
        assert!(matches!(
            parse_inbound(lost_boundary, MAX),
            Err(Malformed::BoundaryNeverOccurs { .. })
        ));
        assert_eq!(
            parse_inbound(b"Subject: hi\r\n\r\nbody", MAX),
            Err(Malformed::NoSender)
        );
        assert_eq!(
            parse_inbound(b"From: a@example.com\r\n\r\nbody", 5),
            Err(Malformed::TooLarge { size: 27, max: 5 })
        );
    }

    #[test]
    fn a_message_without_message_id_gets_a_stable_synthesized_one() {
        let raw = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
        let a = parse_inbound(raw, MAX).unwrap();
        let b = parse_inbound(raw, MAX).unwrap();
        assert!(a.message_id_synthesized);
        assert_eq!(a.message_id, b.message_id);
        assert!(a.message_id.ends_with("@meridian.invalid"));
    }
}
