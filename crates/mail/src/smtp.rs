//! Outbound mail: acknowledgements and public replies, built so mail
//! clients thread them, and sent with lettre over STARTTLS or implicit TLS.
//!
//! Threading (RFC 5322 §3.6.4): a reply's `In-Reply-To` is the parent's
//! Message-ID and its `References` are the parent's `References` followed
//! by the parent's Message-ID. Every subject carries the ticket tag
//! `[#<ref>]`, so a customer who starts a fresh mail by editing the subject
//! still lands on the ticket.
//!
//! The Message-ID of an outbound mail is an input, not generated here: the
//! durable outbox stores it with the mail, so a resend after a crash carries
//! the same Message-ID and the customer's client shows one message.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::message::InboundMessage;
use crate::thread::TicketRef;
use crate::tls::TrustRoots;
use crate::{Error, Result, Security};

/// How many Message-IDs a `References` header keeps (the oldest, the
/// newest ones): long threads must not grow headers without bound.
const REFERENCES_MAX: usize = 20;

/// The conversation a mail belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    pub customer_address: String,
    pub customer_name: Option<String>,
    /// The subject without `Re:` prefixes or the ticket tag.
    pub subject: String,
    /// The Message-ID answered, without angle brackets.
    pub parent_message_id: Option<String>,
    /// The parent's own `References`, oldest first.
    pub parent_references: Vec<String>,
}

impl Thread {
    /// The thread a reply continues: it answers the customer's newest mail
    /// the ledger holds for the ticket.
    pub fn answering(thread: &crate::ledger::MailThread) -> Thread {
        Thread {
            customer_address: thread.customer_address.clone(),
            customer_name: thread.customer_name.clone(),
            subject: thread.subject.clone(),
            parent_message_id: Some(thread.last_message_id.clone()),
            parent_references: thread.last_references.clone(),
        }
    }

    /// The thread an inbound customer message starts or continues.
    pub fn from_inbound(message: &InboundMessage) -> Thread {
        Thread {
            customer_address: message.from_address.clone(),
            customer_name: message.from_name.clone(),
            subject: message.subject.clone(),
            parent_message_id: Some(message.message_id.clone()),
            parent_references: message.references.clone(),
        }
    }
}

/// A mail ready to send (and to store in an outbox before sending: it
/// serializes to JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutboundMail {
    /// Without angle brackets.
    pub message_id: String,
    pub from_address: String,
    pub from_name: Option<String>,
    pub to_address: String,
    pub to_name: Option<String>,
    pub subject: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub text: String,
}

/// Who Meridian's mails come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    pub address: String,
    pub name: Option<String>,
}

/// `<token>@<domain>`: a Message-ID for a mail Meridian sends, from a token
/// unique to that mail (the outbox entry's or event's id).
pub fn message_id_for(token: &str, domain: &str) -> String {
    format!("{token}@{domain}")
}

/// The reply subject: `Re: <subject> [#ref]`, without stacking `Re:`.
pub fn reply_subject(subject: &str, ticket: &TicketRef) -> String {
    let tag = ticket.subject_tag();
    let mut base = subject.trim();
    loop {
        let lower = base.to_ascii_lowercase();
        if lower.starts_with("re:") || lower.starts_with("aw:") || lower.starts_with("sv:") {
            base = base[3..].trim_start();
        } else {
            break;
        }
    }
    let base = base.replace(&tag, "");
    let base = base.trim();
    if base.is_empty() {
        format!("Re: {tag}")
    } else {
        format!("Re: {base} {tag}")
    }
}

fn references_for(thread: &Thread) -> Vec<String> {
    let mut refs = thread.parent_references.clone();
    if let Some(parent) = &thread.parent_message_id
        && refs.last() != Some(parent)
    {
        refs.push(parent.clone());
    }
    if refs.len() > REFERENCES_MAX {
        // Keep the thread's root and the newest ones, as RFC 5322 suggests.
        let tail = refs.split_off(refs.len() - (REFERENCES_MAX - 1));
        refs.truncate(1);
        refs.extend(tail);
    }
    refs
}

/// A public reply on a ticket.
pub fn reply(
    thread: &Thread,
    from: &From,
    ticket: &TicketRef,
    message_id: String,
    text: &str,
) -> OutboundMail {
    OutboundMail {
        message_id,
        from_address: from.address.clone(),
        from_name: from.name.clone(),
        to_address: thread.customer_address.clone(),
        to_name: thread.customer_name.clone(),
        subject: reply_subject(&thread.subject, ticket),
        in_reply_to: thread.parent_message_id.clone(),
        references: references_for(thread),
        text: text.to_owned(),
    }
}

/// The acknowledgement sent when a mail becomes a ticket: the reference to
/// quote, and `when_answered`, the rules' answer to "when will a person
/// answer" (for example "now: our team in Frankfurt is on shift", or "when
/// our next shift opens, Monday 09:00 UTC").
pub fn acknowledgement(
    thread: &Thread,
    from: &From,
    ticket: &TicketRef,
    message_id: String,
    when_answered: &str,
) -> OutboundMail {
    let text = format!(
        "Hello,\r\n\r\n\
We have received your message and opened request {tag}.\r\n\
A person will answer {when}.\r\n\r\n\
To add to this request, reply to this mail and keep {tag} in the subject.\r\n",
        tag = ticket.subject_tag(),
        when = when_answered.trim().trim_end_matches('.'),
    );
    reply(thread, from, ticket, message_id, &text)
}

impl OutboundMail {
    /// The RFC 5322 message lettre sends.
    pub fn to_message(&self) -> Result<lettre::Message> {
        let from = mailbox(&self.from_address, self.from_name.as_deref(), "from")?;
        let to = mailbox(&self.to_address, self.to_name.as_deref(), "to")?;
        let mut builder = lettre::Message::builder()
            .from(from)
            .to(to)
            .subject(self.subject.clone())
            .message_id(Some(format!("<{}>", self.message_id)));
        if let Some(parent) = &self.in_reply_to {
            builder = builder.in_reply_to(format!("<{parent}>"));
        }
        if !self.references.is_empty() {
            let refs: Vec<String> = self.references.iter().map(|r| format!("<{r}>")).collect();
            builder = builder.references(refs.join(" "));
        }
        builder
            .header(ContentType::TEXT_PLAIN)
            .body(self.text.clone())
            .map_err(|e| Error::Build(e.to_string()))
    }
}

fn mailbox(address: &str, name: Option<&str>, field: &str) -> Result<Mailbox> {
    let address = address
        .parse()
        .map_err(|e| Error::Build(format!("{field} address {address:?}: {e}")))?;
    Ok(Mailbox::new(name.map(str::to_owned), address))
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// STARTTLS (submission, 587) or implicit TLS (465). Plain text is not
    /// offered: the mails carry customer data.
    pub security: Security,
    pub tls_server_name: Option<String>,
    pub trust: TrustRoots,
    /// `None` for a relay that authenticates by address.
    pub credentials: Option<(String, String)>,
    pub timeout: Duration,
}

impl SmtpConfig {
    pub fn new(host: &str, port: u16, security: Security) -> SmtpConfig {
        SmtpConfig {
            host: host.to_owned(),
            port,
            security,
            tls_server_name: None,
            trust: TrustRoots::Public,
            credentials: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Sends mail through one SMTP server, reusing connections (lettre's pool).
#[derive(Clone)]
pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl SmtpSender {
    pub fn new(config: &SmtpConfig) -> Result<SmtpSender> {
        let name = config
            .tls_server_name
            .clone()
            .unwrap_or_else(|| config.host.clone());
        let mut params = TlsParameters::builder(name);
        if let TrustRoots::CaPem(pem) = &config.trust {
            params = params.certificate_store(CertificateStore::None);
            for der in TrustRoots::ca_certificates(pem)? {
                let cert = Certificate::from_der(der.to_vec())
                    .map_err(|e| Error::Config(format!("CA bundle: {e}")))?;
                params = params.add_root_certificate(cert);
            }
        }
        let params = params
            .build_rustls()
            .map_err(|e| Error::Config(format!("SMTP TLS: {e}")))?;
        let tls = match config.security {
            Security::StartTls => Tls::Required(params),
            Security::ImplicitTls => Tls::Wrapper(params),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .tls(tls)
            .timeout(Some(config.timeout));
        if let Some((user, password)) = &config.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(SmtpSender {
            transport: builder.build(),
        })
    }

    /// Sends one mail; `Ok` means the server accepted it for delivery.
    pub async fn send(&self, mail: &OutboundMail) -> Result<()> {
        let message = mail.to_message()?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| Error::Smtp(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread() -> Thread {
        Thread {
            customer_address: "ana@example.com".into(),
            customer_name: Some("Ana".into()),
            subject: "RE: Re: printer [#abcd1234]".into(),
            parent_message_id: Some("m2@example.com".into()),
            parent_references: vec!["m1@example.com".into()],
        }
    }

    #[test]
    fn replies_carry_threading_headers_and_one_tag() {
        let from = From {
            address: "support@meridian.example".into(),
            name: Some("Support".into()),
        };
        let r = TicketRef::new("abcd1234").unwrap();
        let mail = acknowledgement(
            &thread(),
            &from,
            &r,
            message_id_for("ack-1", "meridian.example"),
            "now: our team in eu-west is on shift.",
        );
        assert_eq!(mail.subject, "Re: printer [#abcd1234]");
        assert_eq!(mail.in_reply_to.as_deref(), Some("m2@example.com"));
        assert_eq!(mail.references, vec!["m1@example.com", "m2@example.com"]);
        assert!(mail.text.contains("[#abcd1234]"));
        assert!(
            mail.text
                .contains("A person will answer now: our team in eu-west is on shift.\r\n")
        );
        let formatted = String::from_utf8(mail.to_message().unwrap().formatted()).unwrap();
        assert!(
            formatted.contains("In-Reply-To: <m2@example.com>"),
            "{formatted}"
        );
        assert!(
            formatted.contains("Message-ID: <ack-1@meridian.example>"),
            "{formatted}"
        );
    }

    #[test]
    fn long_reference_chains_keep_the_root_and_the_newest() {
        let mut t = thread();
        t.parent_references = (0..30).map(|i| format!("r{i}@x")).collect();
        let refs = references_for(&t);
        assert_eq!(refs.len(), REFERENCES_MAX);
        assert_eq!(refs[0], "r0@x");
        assert_eq!(refs.last().map(String::as_str), Some("m2@example.com"));
    }

    #[test]
    fn a_bad_address_names_the_field() {
        let mut mail = reply(
            &thread(),
            &From {
                address: "not an address".into(),
                name: None,
            },
            &TicketRef::new("abcd").unwrap(),
            "x@y".into(),
            "hi",
        );
        let err = mail.to_message().unwrap_err().to_string();
        assert!(err.contains("from address"), "{err}");
        mail.from_address = "ok@example.com".into();
        assert!(mail.to_message().is_ok());
    }
}
