//! Real mail servers for tests and benchmarks, each configured from
//! scratch in a temporary directory and listening on a loopback port:
//!
//! - [`Dovecot`]: Debian's `dovecot-imapd`, IMAPS only (implicit TLS with a
//!   certificate from a fresh rcgen CA), one passwd-file user, a throwaway
//!   Maildir. Mail arrives the way a local delivery agent puts it there:
//!   as a file in `Maildir/new` ([`Dovecot::deliver`]).
//! - [`SmtpServer`]: Python's `aiosmtpd` (PyPI), STARTTLS or implicit TLS,
//!   writing each message it accepts to a file the test reads.
//!
//! Both follow the crate's rule for outside servers: absent, the test says
//! so loudly and skips; with `MERIDIAN_REQUIRE_ALL=1` absent is a failure.
//!
//! Running as root (CI): dovecot refuses root for its login and mail
//! processes, so those run as Debian's `dovenull`/`dovecot` users and the
//! Maildir belongs to `nobody`. As anyone else, everything runs as the
//! current user.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use meridian_tls::{TrustDomain, Validity, dev_ca, issue_server};

use crate::require_all;

/// The IMAP user every Dovecot fixture has.
pub const IMAP_USER: &str = "agent";
/// Its password.
pub const IMAP_PASSWORD: &str = "agent-secret";

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A CA and a server certificate for `localhost`/`127.0.0.1`.
pub struct TestPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    pub fn new() -> TestPki {
        let domain = TrustDomain::new("mail.test").unwrap();
        let ca = dev_ca(&domain, Validity::days_from(SystemTime::now(), 2)).unwrap();
        let (cert_pem, key_pem) = issue_server(
            &ca,
            &["localhost".to_owned()],
            Validity::days_from(SystemTime::now(), 2),
        )
        .unwrap();
        TestPki {
            ca_pem: ca.cert_pem().to_owned(),
            cert_pem,
            key_pem,
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, child: &mut Child, log: &Path, what: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening on {port}; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} not listening on 127.0.0.1:{port} after {START_TIMEOUT:?}; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn id_of(flag: &str) -> String {
    let out = Command::new("id").arg(flag).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The dovecot binary, or `None` after a loud skip line for `what`.
pub fn dovecot_binary(what: &str) -> Option<PathBuf> {
    let found = std::env::var_os("MERIDIAN_DOVECOT_BIN")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/sbin/dovecot")))
        .filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            !require_all(),
            "MERIDIAN_REQUIRE_ALL=1 but dovecot is not installed: apt-get install dovecot-imapd (or set MERIDIAN_DOVECOT_BIN)"
        );
        eprintln!("{what} SKIPPED: no dovecot (apt-get install dovecot-imapd)");
    }
    found
}

/// A Dovecot IMAPS server for one test. Stopped when dropped.
pub struct Dovecot {
    child: Child,
    binary: PathBuf,
    config: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    /// The CA the server's certificate chains to (PEM).
    pub ca_pem: String,
    maildir: PathBuf,
    owner: Option<(String, String)>,
}

static DELIVERED: AtomicU64 = AtomicU64::new(0);

impl Dovecot {
    /// Starts a server, or returns `None` (after saying so) when dovecot
    /// is not installed and `MERIDIAN_REQUIRE_ALL` is not set.
    pub fn start(what: &str) -> Option<Dovecot> {
        let binary = dovecot_binary(what)?;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let pki = TestPki::new();
        std::fs::write(root.join("cert.pem"), &pki.cert_pem).unwrap();
        std::fs::write(root.join("key.pem"), &pki.key_pem).unwrap();
        std::fs::write(
            root.join("passwd"),
            format!("{IMAP_USER}:{{PLAIN}}{IMAP_PASSWORD}::::::\n"),
        )
        .unwrap();
        for sub in ["run", "state", "home"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let maildir = root.join("home").join(IMAP_USER).join("Maildir");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        let (internal_user, internal_group, login_user, mail_uid, mail_gid, owner) = if is_root() {
            // The Maildir's owner must be able to reach it.
            Command::new("chmod")
                .arg("755")
                .arg(&root)
                .status()
                .unwrap();
            Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(root.join("home"))
                .status()
                .unwrap();
            (
                "dovecot".to_owned(),
                "dovecot".to_owned(),
                "dovenull".to_owned(),
                "65534".to_owned(),
                "65534".to_owned(),
                Some(("nobody".to_owned(), "nogroup".to_owned())),
            )
        } else {
            let user = id_of("-un");
            (
                user.clone(),
                id_of("-gn"),
                user,
                id_of("-u"),
                id_of("-g"),
                None,
            )
        };
        let port = free_port();
        let r = root.display();
        let config = format!(
            r#"# Written by meridian-test-support for one test.
base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/dovecot.log
protocols = imap
listen = 127.0.0.1
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = 1
ssl = required
ssl_cert = <{r}/cert.pem
ssl_key = <{r}/key.pem
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {r}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={r}/home/%u mail=maildir:{r}/home/%u/Maildir
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"#
        );
        let config_path = root.join("dovecot.conf");
        std::fs::write(&config_path, config).unwrap();
        let log = root.join("dovecot.log");
        let mut child = Command::new(&binary)
            .arg("-F")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        wait_listening(port, &mut child, &log, "dovecot");
        Some(Dovecot {
            child,
            binary,
            config: config_path,
            dir,
            port,
            ca_pem: pki.ca_pem,
            maildir,
            owner,
        })
    }

    /// Puts a message into INBOX as a delivery agent does: written in
    /// `tmp/`, renamed into `new/`.
    pub fn deliver(&self, raw: &[u8]) {
        let n = DELIVERED.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}.M{n}P{}.meridian-test", now_secs(), std::process::id());
        let tmp = self.maildir.join("tmp").join(&name);
        std::fs::write(&tmp, raw).unwrap();
        if let Some((user, group)) = &self.owner {
            Command::new("chown")
                .arg(format!("{user}:{group}"))
                .arg(&tmp)
                .status()
                .unwrap();
        }
        std::fs::rename(&tmp, self.maildir.join("new").join(&name)).unwrap();
    }

    /// How many messages are stored in `mailbox` (`INBOX` or a folder).
    pub fn count(&self, mailbox: &str) -> usize {
        let dir = if mailbox == "INBOX" {
            self.maildir.clone()
        } else {
            self.maildir.join(format!(".{mailbox}"))
        };
        ["new", "cur"]
            .iter()
            .map(|sub| {
                std::fs::read_dir(dir.join(sub))
                    .map(|d| d.count())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// The raw bytes of every message in `mailbox`.
    pub fn messages(&self, mailbox: &str) -> Vec<Vec<u8>> {
        let dir = if mailbox == "INBOX" {
            self.maildir.clone()
        } else {
            self.maildir.join(format!(".{mailbox}"))
        };
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
                for e in entries.flatten() {
                    out.push(std::fs::read(e.path()).unwrap());
                }
            }
        }
        out
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // `dovecot stop` ends the master's children too; a SIGKILL of the
        // master alone would leave them to notice on their own.
        let _ = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How the SMTP fixture offers TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain greeting; STARTTLS required before MAIL FROM.
    StartTls,
    /// TLS from the first byte.
    Implicit,
}

const SMTP_SERVER_PY: &str = include_str!("smtp_server.py");

/// Whether `python3` can import aiosmtpd, or `false` after a loud skip.
pub fn aiosmtpd_available(what: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            !require_all(),
            "MERIDIAN_REQUIRE_ALL=1 but python3 cannot import aiosmtpd: python3 -m pip install aiosmtpd"
        );
        eprintln!(
            "{what} SKIPPED: python3 cannot import aiosmtpd (python3 -m pip install aiosmtpd)"
        );
    }
    ok
}

/// An aiosmtpd server for one test, writing each accepted message to a
/// file. Stopped when dropped.
pub struct SmtpServer {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    pub ca_pem: String,
}

impl SmtpServer {
    pub fn start(what: &str, tls: SmtpTls) -> Option<SmtpServer> {
        if !aiosmtpd_available(what) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let pki = TestPki::new();
        std::fs::write(root.join("cert.pem"), &pki.cert_pem).unwrap();
        std::fs::write(root.join("key.pem"), &pki.key_pem).unwrap();
        std::fs::write(root.join("smtp_server.py"), SMTP_SERVER_PY).unwrap();
        std::fs::create_dir_all(root.join("received")).unwrap();
        let port = free_port();
        let log = root.join("smtp.log");
        let mut child = Command::new("python3")
            .arg(root.join("smtp_server.py"))
            .arg("--port")
            .arg(port.to_string())
            .arg("--cert")
            .arg(root.join("cert.pem"))
            .arg("--key")
            .arg(root.join("key.pem"))
            .arg("--out")
            .arg(root.join("received"))
            .arg("--tls")
            .arg(match tls {
                SmtpTls::StartTls => "starttls",
                SmtpTls::Implicit => "implicit",
            })
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(root.join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        wait_listening(port, &mut child, &root.join("stderr.log"), "aiosmtpd");
        Some(SmtpServer {
            child,
            dir,
            port,
            ca_pem: pki.ca_pem,
        })
    }

    /// Every message accepted so far, in arrival order: (envelope
    /// recipients, raw content).
    pub fn received(&self) -> Vec<(Vec<String>, Vec<u8>)> {
        let dir = self.dir.path().join("received");
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|p| {
                let rcpts = std::fs::read_to_string(p.with_extension("rcpt")).unwrap_or_default();
                (
                    rcpts.lines().map(str::to_owned).collect(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect()
    }

    /// Waits until at least `n` messages arrived, up to `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<(Vec<String>, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
