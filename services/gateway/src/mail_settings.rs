//! `[mail]` of a gateway file: the region's support mailbox, where its
//! mails go out, and how new tickets reach the router (docs/mail.md).
//!
//! ```toml
//! [mail]
//! from = "support@example.com"      # From: of acknowledgements and replies
//! from_name = "Example Support"     # optional
//! domain = "example.com"            # of Meridian's Message-IDs (default: from's domain)
//! tier = "standard"                 # the tier of tickets made from mail
//! poll_interval_ms = 30000          # re-poll (or re-IDLE) at least this often
//! router = "https://router.meridian:7100"   # new tickets: SubmitTicket
//! router_ca = "/etc/meridian/ca.pem"        # the CA of the router's certificate
//! token_file = "/etc/meridian/mail.jwt"     # an `intake` token, sent to router and owner
//!
//! [mail.imap]
//! host = "imap.example.com"
//! port = 993
//! security = "tls"                  # tls (implicit) | starttls
//! user = "support"
//! password_file = "/etc/meridian/imap-password"
//! ca = "/etc/meridian/mail-ca.pem"  # optional: trust only this CA
//! mailbox = "INBOX"                 # optional
//! quarantine = "Quarantine"         # optional
//!
//! [mail.smtp]                       # optional: without it nothing is sent
//! host = "smtp.example.com"
//! port = 587
//! security = "starttls"             # starttls | tls
//! user = "support"                  # optional, with password_file
//! password_file = "/etc/meridian/smtp-password"
//! ca = "/etc/meridian/mail-ca.pem"  # optional
//! timeout_ms = 30000                # one send; a claimed mail is retried after twice this
//! ```

use std::{path::PathBuf, time::Duration};

use meridian_mail::{Security, TrustRoots, imap::ImapConfig, smtp::SmtpConfig};
use serde::Deserialize;

use crate::{Error, Result};

/// Default of `[mail] poll_interval_ms`.
pub const MAIL_POLL_MS_DEFAULT: u64 = 30_000;
/// Default of `[mail.smtp] timeout_ms`.
pub const SMTP_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// A region's mail, checked.
#[derive(Debug, Clone)]
pub struct MailSettings {
    pub imap: ImapConfig,
    pub smtp: Option<SmtpConfig>,
    pub from_address: String,
    pub from_name: Option<String>,
    /// The right-hand side of Meridian's Message-IDs.
    pub domain: String,
    pub tier: String,
    pub poll_interval: Duration,
    /// The router's URL for `SubmitTicket`.
    pub router: String,
    /// PEM of the CA the router's certificate chains to (https routers).
    pub router_ca: Option<Vec<u8>>,
    /// The bearer token (an `intake` role) the loop calls with.
    pub token: String,
    /// Tests only (`MERIDIAN_MAIL_HOLD_BEFORE_SEND=1`): the sender stops
    /// for good just before it hands a claimed mail to the SMTP server,
    /// after printing a line, so a test can `kill -9` it there.
    pub hold_before_send: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MailSection {
    from: String,
    from_name: Option<String>,
    domain: Option<String>,
    tier: Option<String>,
    poll_interval_ms: Option<u64>,
    router: Option<String>,
    router_ca: Option<PathBuf>,
    token_file: Option<PathBuf>,
    imap: ImapSection,
    smtp: Option<SmtpSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImapSection {
    host: String,
    port: Option<u16>,
    security: Option<String>,
    user: String,
    password_file: PathBuf,
    ca: Option<PathBuf>,
    server_name: Option<String>,
    mailbox: Option<String>,
    quarantine: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmtpSection {
    host: String,
    port: Option<u16>,
    security: Option<String>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    ca: Option<PathBuf>,
    server_name: Option<String>,
    timeout_ms: Option<u64>,
}

fn security(
    at: &str,
    text: Option<&str>,
    default: Security,
) -> std::result::Result<Security, String> {
    match text {
        None => Ok(default),
        Some("tls") => Ok(Security::ImplicitTls),
        Some("starttls") => Ok(Security::StartTls),
        Some(other) => Err(format!(
            "{at}.security: {other:?} is not tls or starttls (plain text is not offered: mail carries customer data)"
        )),
    }
}

fn read(at: &str, path: &std::path::Path) -> std::result::Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{at}: cannot read {}: {e}", path.display()))
}

fn read_secret(at: &str, path: &std::path::Path) -> std::result::Result<String, String> {
    let bytes = read(at, path)?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{at}: {} is not UTF-8", path.display()))?;
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err(format!("{at}: {} is empty", path.display()));
    }
    Ok(text)
}

fn trust(at: &str, ca: Option<&std::path::Path>) -> std::result::Result<TrustRoots, String> {
    Ok(match ca {
        Some(path) => TrustRoots::CaPem(read(at, path)?),
        None => TrustRoots::Public,
    })
}

impl MailSection {
    /// Checks the section; `file` names it in errors. Files it names
    /// (passwords, CAs, the token) are read now, so a wrong path stops
    /// the gateway at start rather than at the first mail.
    pub(crate) fn into_settings(self, file: &str) -> Result<MailSettings> {
        self.check()
            .map_err(|what| Error::Config(format!("{file}: mail.{what}")))
    }

    fn check(self) -> std::result::Result<MailSettings, String> {
        let from = self.from.trim().to_owned();
        let Some((_, from_domain)) = from
            .rsplit_once('@')
            .filter(|(l, d)| !l.is_empty() && !d.is_empty())
        else {
            return Err(format!("from: {from:?} is not an email address"));
        };
        let domain = self.domain.unwrap_or_else(|| from_domain.to_owned());
        if domain.is_empty() || domain.contains(['<', '>', '@', ' ']) {
            return Err(format!(
                "domain: {domain:?} cannot be a Message-ID's domain"
            ));
        }
        let poll_interval = match self.poll_interval_ms {
            None => Duration::from_millis(MAIL_POLL_MS_DEFAULT),
            Some(0) => return Err("poll_interval_ms must be above zero".into()),
            Some(ms) => Duration::from_millis(ms),
        };
        let router = self
            .router
            .ok_or("router: is required (new tickets are submitted through the router)")?;
        if !(router.starts_with("https://") || router.starts_with("http://")) {
            return Err(format!("router: {router:?} is not an http(s) URL"));
        }
        let router_ca = self
            .router_ca
            .as_deref()
            .map(|path| read("router_ca", path))
            .transpose()?;
        if router.starts_with("https://") && router_ca.is_none() {
            return Err(
                "router_ca: is required for an https router (the CA of its certificate)".into(),
            );
        }
        let token_file = self
            .token_file
            .ok_or("token_file: is required (an intake token for the router and the owner)")?;
        let token = read_secret("token_file", &token_file)?;

        let i = self.imap;
        let imap_security = security("imap", i.security.as_deref(), Security::ImplicitTls)?;
        let default_port = match imap_security {
            Security::ImplicitTls => 993,
            Security::StartTls => 143,
        };
        let mut imap = ImapConfig::new(
            &i.host,
            i.port.unwrap_or(default_port),
            &i.user,
            &read_secret("imap.password_file", &i.password_file)?,
        );
        imap.security = imap_security;
        imap.trust = trust("imap.ca", i.ca.as_deref())?;
        imap.tls_server_name = i.server_name;
        if let Some(mailbox) = i.mailbox {
            imap.mailbox = mailbox;
        }
        if let Some(quarantine) = i.quarantine {
            imap.quarantine_mailbox = quarantine;
        }
        if imap.mailbox == imap.quarantine_mailbox {
            return Err(format!(
                "imap.quarantine: {:?} is the mailbox read; kept-aside mail needs its own",
                imap.quarantine_mailbox
            ));
        }

        let smtp = match self.smtp {
            None => None,
            Some(s) => {
                let smtp_security = security("smtp", s.security.as_deref(), Security::StartTls)?;
                let default_port = match smtp_security {
                    Security::ImplicitTls => 465,
                    Security::StartTls => 587,
                };
                let mut smtp =
                    SmtpConfig::new(&s.host, s.port.unwrap_or(default_port), smtp_security);
                smtp.trust = trust("smtp.ca", s.ca.as_deref())?;
                smtp.tls_server_name = s.server_name;
                smtp.credentials = match (s.user, s.password_file) {
                    (None, None) => None,
                    (Some(user), Some(path)) => {
                        Some((user, read_secret("smtp.password_file", &path)?))
                    }
                    _ => return Err("smtp: user and password_file go together".into()),
                };
                smtp.timeout = match s.timeout_ms {
                    None => Duration::from_millis(SMTP_TIMEOUT_MS_DEFAULT),
                    Some(0) => return Err("smtp.timeout_ms must be above zero".into()),
                    Some(ms) => Duration::from_millis(ms),
                };
                Some(smtp)
            }
        };
        Ok(MailSettings {
            imap,
            smtp,
            from_address: from,
            from_name: self.from_name,
            domain,
            tier: self.tier.unwrap_or_else(|| "standard".to_owned()),
            poll_interval,
            router,
            router_ca,
            token,
            hold_before_send: std::env::var("MERIDIAN_MAIL_HOLD_BEFORE_SEND")
                .is_ok_and(|v| v == "1"),
        })
    }
}

/// Reads a `[mail]` table on its own (what `meridian up --mail` is given),
/// with the router and token filled in by the caller when absent.
pub fn mail_settings_from_file(
    path: &std::path::Path,
    router: &str,
    router_ca: Option<&std::path::Path>,
    token_file: &std::path::Path,
) -> Result<MailSettings> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("{file}: cannot read: {e}")))?;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapper {
        mail: MailSection,
    }
    let mut wrapper: Wrapper = toml::from_str(&text)
        .map_err(|e| Error::Config(crate::config::located(&file, &text, &e)))?;
    let section = &mut wrapper.mail;
    section.router.get_or_insert_with(|| router.to_owned());
    if section.router_ca.is_none() {
        section.router_ca = router_ca.map(std::path::Path::to_path_buf);
    }
    section
        .token_file
        .get_or_insert_with(|| token_file.to_path_buf());
    wrapper.mail.into_settings(&file)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn section(dir: &std::path::Path, extra_mail: &str, imap: &str) -> String {
        std::fs::write(dir.join("password"), "secret\n").unwrap();
        std::fs::write(dir.join("token"), "eyJtoken").unwrap();
        let d = dir.display();
        format!(
            "from = \"support@example.com\"\nrouter = \"http://127.0.0.1:7100\"\n\
             token_file = \"{d}/token\"\n{extra_mail}\n\
             [imap]\nhost = \"imap.example.com\"\nuser = \"support\"\n\
             password_file = \"{d}/password\"\n{imap}\n"
        )
    }

    fn check(text: &str) -> std::result::Result<MailSettings, String> {
        toml::from_str::<MailSection>(text)
            .map_err(|e| e.to_string())?
            .check()
    }

    #[test]
    fn a_minimal_section_gets_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let settings = check(&section(dir.path(), "", "")).unwrap();
        assert_eq!(settings.domain, "example.com");
        assert_eq!(settings.tier, "standard");
        assert_eq!(settings.imap.port, 993);
        assert_eq!(settings.imap.security, Security::ImplicitTls);
        assert_eq!(settings.imap.password, "secret");
        assert_eq!(settings.token, "eyJtoken");
        assert!(settings.smtp.is_none(), "no [smtp]: nothing is sent");
        assert_eq!(
            settings.poll_interval,
            Duration::from_millis(MAIL_POLL_MS_DEFAULT)
        );
    }

    #[test]
    fn each_refusal_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("", "security = \"plain\"", "imap.security"),
            ("", "mailbox = \"Quarantine\"", "imap.quarantine"),
            ("poll_interval_ms = 0", "", "poll_interval_ms"),
            ("domain = \"a b\"", "", "domain"),
            ("router_ca = \"/nonexistent/ca.pem\"", "", "router_ca"),
        ];
        for (mail, imap, key) in cases {
            let error = check(&section(dir.path(), mail, imap)).unwrap_err();
            assert!(error.starts_with(key), "{key}: {error}");
        }
        let https = section(dir.path(), "", "").replace("http://", "https://");
        let error = check(&https).unwrap_err();
        assert!(error.starts_with("router_ca"), "{error}");
        let no_from = section(dir.path(), "", "").replace("support@example.com", "support");
        assert!(check(&no_from).unwrap_err().starts_with("from"));
        let smtp = format!(
            "{}\n[smtp]\nhost = \"smtp.example.com\"\nuser = \"support\"\n",
            section(dir.path(), "", "")
        );
        let error = check(&smtp).unwrap_err();
        assert!(
            error.contains("user and password_file go together"),
            "{error}"
        );
        let unknown = format!("{}\nport_typo = 1\n", section(dir.path(), "", ""));
        let error = check(&unknown).unwrap_err();
        assert!(error.contains("port_typo"), "{error}");
    }
}
