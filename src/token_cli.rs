//! `meridian token …`: development signing keys and bearer tokens.
//!
//! The keys and tokens are made by `meridian-auth` ([`SigningKey`],
//! [`Claims`]), the same code the services verify with and the tests mint
//! with. A real deployment gets its tokens from its identity provider and
//! points `[auth] jwks` at that provider's key set; these commands are for
//! `meridian up`, local meshes and scripts.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use meridian_auth::{Claims, Role, SigningKey, jwks::write_jwks};
use meridian_core::RegionId;

/// The private key file in a development auth directory (mode 0600).
pub const SIGNING_KEY_FILE: &str = "signing-key.json";
/// The JWKS file the services read.
pub const JWKS_FILE: &str = "jwks.json";
/// How long a development token is valid by default.
pub const DEV_TOKEN_HOURS: u32 = 30 * 24;

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a development signing key and the JWKS that services verify
    /// with (signing-key.json, jwks.json), unless the directory has them.
    Dev {
        /// The directory to write to (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Add a new key to the JWKS and sign with it from now on; the old
        /// key stays in the JWKS until --retire-old (rotation).
        #[arg(long)]
        rotate: bool,
        /// Keep only the current key in the JWKS: tokens of older keys stop
        /// working once services re-read the file.
        #[arg(long)]
        retire_old: bool,
    },
    /// Print a token signed with a development key.
    Mint {
        /// The signing key (signing-key.json of `meridian token dev`).
        #[arg(long)]
        key: PathBuf,
        /// agent, operator, sre or admin.
        #[arg(long)]
        role: String,
        /// The region claim; required for agents.
        #[arg(long)]
        region: Option<RegionId>,
        /// A rules file whose regions --region must be one of (a typo is
        /// refused, not minted into a token no gateway accepts).
        #[arg(long, env = "MERIDIAN_RULES", value_name = "FILE")]
        rules: Option<PathBuf>,
        /// Who the token is for (`sub`); default: the role and region.
        #[arg(long)]
        subject: Option<String>,
        /// How long the token is valid, in hours.
        #[arg(long, default_value_t = DEV_TOKEN_HOURS)]
        ttl_hours: u32,
    },
}

pub fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Dev {
            out,
            rotate,
            retire_old,
        } => {
            let key = dev_keys(&out, rotate, retire_old)?;
            println!(
                "signing key {} (kid {})",
                out.join(SIGNING_KEY_FILE).display(),
                key.kid()
            );
            println!("JWKS        {}", out.join(JWKS_FILE).display());
        }
        TokenCommand::Mint {
            key,
            role,
            region,
            rules,
            subject,
            ttl_hours,
        } => {
            if let (Some(region), Some(rules)) = (&region, &rules) {
                check_region(region, rules)?;
            }
            let text = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read --key {}", key.display()))?;
            let key = SigningKey::from_private_jwk(&text)
                .with_context(|| format!("--key {}", key.display()))?;
            let role: Role = role.parse().context("--role")?;
            anyhow::ensure!(
                role != Role::Agent || region.is_some(),
                "--region: an agent token needs a region"
            );
            anyhow::ensure!(ttl_hours > 0, "--ttl-hours must be at least 1");
            println!("{}", mint(&key, role, region.as_ref(), subject, ttl_hours));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses a region the rules file does not define, naming the near miss.
fn check_region(region: &RegionId, file: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read --rules {}", file.display()))?;
    let rules = meridian_rules::Rules::parse(&file.display().to_string(), &text)
        .map_err(|errors| anyhow::anyhow!("--rules {}: refused:\n{errors}", file.display()))?;
    if rules.region(region.as_str()).is_some() {
        return Ok(());
    }
    let known: Vec<&str> = rules.regions().iter().map(|r| r.id.as_str()).collect();
    let hint = meridian_rules::closest(region.as_str(), known.iter().copied())
        .map_or_else(String::new, |near| format!(" (did you mean {near:?}?)"));
    anyhow::bail!(
        "--region {region}: no such region in {}{hint}; the rules define {}",
        file.display(),
        known.join(", ")
    )
}

/// A token for `role`, valid from now for `ttl_hours`.
pub fn mint(
    key: &SigningKey,
    role: Role,
    region: Option<&RegionId>,
    subject: Option<String>,
    ttl_hours: u32,
) -> String {
    let subject = subject.unwrap_or_else(|| match region {
        Some(region) => format!("dev-{role}-{region}"),
        None => format!("dev-{role}"),
    });
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    key.mint(&Claims::new(
        subject,
        role,
        region,
        now,
        i64::from(ttl_hours) * 3600,
    ))
}

/// The development signing key in `dir`, made (with its JWKS) when
/// missing. `rotate` makes a new key and adds it to the JWKS; `retire_old`
/// leaves only the current key there.
pub fn dev_keys(dir: &Path, rotate: bool, retire_old: bool) -> anyhow::Result<SigningKey> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key_path = dir.join(SIGNING_KEY_FILE);
    let jwks_path = dir.join(JWKS_FILE);
    let existing = match std::fs::read_to_string(&key_path) {
        Ok(text) => Some(
            SigningKey::from_private_jwk(&text)
                .with_context(|| format!("{}", key_path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", key_path.display())),
    };
    let mut published: Vec<serde_json::Value> = match std::fs::read_to_string(&jwks_path) {
        Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|doc| doc.get("keys").and_then(|k| k.as_array()).cloned())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let key = match existing {
        Some(key) if !rotate => key,
        _ => {
            let kid = format!(
                "dev-{}",
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis())
            );
            let key = SigningKey::generate(kid)?;
            meridian_tls::write_atomically(&key_path, key.to_private_jwk().as_bytes(), 0o600)
                .with_context(|| format!("cannot write {}", key_path.display()))?;
            key
        }
    };
    let current = key.public_jwk();
    if retire_old {
        published.clear();
    }
    if !published.iter().any(|k| k.get("kid") == current.get("kid")) {
        published.push(current);
    }
    write_jwks(&jwks_path, &published)
        .with_context(|| format!("cannot write {}", jwks_path.display()))?;
    Ok(key)
}
