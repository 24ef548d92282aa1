//! `meridian certs …`: certificates for the mesh's mutual TLS.
//!
//! This module parses arguments and prints; the PKI itself is made by
//! `meridian-tls` (`write_dev_pki`), which `meridian up` and the tests use
//! too.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use meridian_core::RegionId;
use meridian_tls::{
    CA_CERT_FILE, CA_KEY_FILE, DevCa, DevPkiPlan, PkiFile, Service, TrustDomain, Validity,
    WrittenFile, issue_server, write_atomically, write_dev_pki,
};

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Write a development CA and a certificate per region and service:
    /// ca.pem, ca-key.pem, <region>-<service>.pem and <region>-<service>-key.pem.
    /// Run it again to renew the certificates under the same CA; running
    /// services pick up the new files without a restart.
    Dev {
        /// The directory to write to (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The SPIFFE trust domain of the identities.
        #[arg(long, default_value = "meridian.local")]
        trust_domain: TrustDomain,
        /// Regions to issue certificates for, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "us-east,eu-west,apac-south"
        )]
        regions: Vec<RegionId>,
        /// Services to issue certificates for in every region, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "gateway,router")]
        services: Vec<Service>,
        /// How long the service certificates are valid, in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// How long a new CA is valid, in days.
        #[arg(long, default_value_t = 3650)]
        ca_days: u32,
        /// Make a new CA even if the directory holds one. Services that trust
        /// the old CA refuse the new certificates until they get the new ca.pem.
        #[arg(long)]
        new_ca: bool,
    },
    /// Issue a TLS server certificate for a public port (gateway or router)
    /// from the development CA in --pki: NAME.pem and NAME-key.pem there,
    /// naming every --dns name plus localhost, 127.0.0.1 and ::1. It
    /// carries no SPIFFE id, so the mesh never accepts it as a peer.
    Server {
        /// A directory `meridian certs dev` wrote (ca.pem, ca-key.pem).
        #[arg(long)]
        pki: PathBuf,
        /// The files' name: NAME.pem and NAME-key.pem.
        #[arg(long)]
        name: String,
        /// The DNS names clients dial, comma-separated or repeated.
        #[arg(long, value_delimiter = ',', required = true)]
        dns: Vec<String>,
        /// How long the certificate is valid, in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

pub fn run(cmd: CertsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertsCommand::Dev {
            out,
            trust_domain,
            regions,
            services,
            days,
            ca_days,
            new_ca,
        } => {
            anyhow::ensure!(!regions.is_empty(), "--regions: name at least one region");
            anyhow::ensure!(
                !services.is_empty(),
                "--services: name at least one service"
            );
            anyhow::ensure!(
                days > 0 && ca_days > 0,
                "--days and --ca-days must be at least 1"
            );
            let now = SystemTime::now();
            let plan = DevPkiPlan {
                trust_domain,
                regions,
                services,
                ca_validity: Validity::days_from(now, ca_days),
                cert_validity: Validity::days_from(now, days),
                replace_ca: new_ca,
            };
            let had_ca = out.join(CA_CERT_FILE).exists();
            let written = write_dev_pki(&out, &plan).with_context(|| {
                let hint = if had_ca && !new_ca {
                    " (keeping the CA there; --new-ca makes a new one)"
                } else {
                    ""
                };
                format!(
                    "cannot write the development PKI to {}{hint}",
                    out.display()
                )
            })?;
            print!("{}", render(&plan, &out, &written));
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Server {
            pki,
            name,
            dns,
            days,
        } => {
            anyhow::ensure!(days > 0, "--days must be at least 1");
            anyhow::ensure!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'),
                "--name {name:?}: letters, digits, '-', '_' and '.' only (it names files)"
            );
            let read = |file: &str| {
                let path = pki.join(file);
                std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "cannot read {} (make the CA with `meridian certs dev --out {}`)",
                        path.display(),
                        pki.display()
                    )
                })
            };
            let ca =
                DevCa::from_pem(&read(CA_CERT_FILE)?, &read(CA_KEY_FILE)?).with_context(|| {
                    format!("{}: not a development CA", pki.join(CA_CERT_FILE).display())
                })?;
            let validity = Validity::days_from(SystemTime::now(), days);
            let (cert, key) = issue_server(&ca, &dns, validity).context("--dns")?;
            let cert_path = pki.join(format!("{name}.pem"));
            let key_path = pki.join(format!("{name}-key.pem"));
            // Key first, as `certs dev` does: a poller never pairs a new
            // certificate with the old key.
            write_atomically(&key_path, key.as_bytes(), 0o600)
                .with_context(|| format!("cannot write {}", key_path.display()))?;
            write_atomically(&cert_path, cert.as_bytes(), 0o644)
                .with_context(|| format!("cannot write {}", cert_path.display()))?;
            println!(
                "{}  server certificate for {}, localhost, 127.0.0.1, ::1  {}",
                cert_path.display(),
                dns.join(", "),
                format_time(validity.not_after)
            );
            println!("{}  private key, mode 0600", key_path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn render(plan: &DevPkiPlan, out: &std::path::Path, written: &[WrittenFile]) -> String {
    let ca_kept = written
        .iter()
        .any(|file| file.file == PkiFile::CaCert && file.kept);
    let rows: Vec<[String; 3]> = written
        .iter()
        .map(|file| {
            let name = file
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let contents = match &file.file {
                PkiFile::CaCert if file.kept => "CA certificate (kept)".to_owned(),
                PkiFile::CaCert => "CA certificate".to_owned(),
                PkiFile::CaKey if file.kept => "CA private key (kept)".to_owned(),
                PkiFile::CaKey => "CA private key, mode 0600".to_owned(),
                PkiFile::Cert(identity) => identity.to_string(),
                PkiFile::Key(_) => "private key, mode 0600".to_owned(),
            };
            let expires = file.not_after.map(format_time).unwrap_or_default();
            [name, contents, expires]
        })
        .collect();
    let header = [
        "FILE".to_owned(),
        "CONTENTS".to_owned(),
        "EXPIRES".to_owned(),
    ];
    let width = |column: usize| {
        rows.iter()
            .chain(std::iter::once(&header))
            .map(|row| row[column].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (file_width, contents_width) = (width(0), width(1));

    let mut text = format!(
        "development PKI for trust domain {} in {} ({})\n",
        plan.trust_domain,
        out.display(),
        if ca_kept {
            "existing CA kept, certificates renewed"
        } else {
            "new CA"
        }
    );
    for [file, contents, expires] in std::iter::once(&header).chain(&rows) {
        let line = format!("{file:<file_width$}  {contents:<contents_width$}  {expires}");
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// A certificate's expiry in UTC, at the CLI's one precision.
fn format_time(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time).map_or_else(|_| "?".to_owned(), crate::cli_output::instant)
}
