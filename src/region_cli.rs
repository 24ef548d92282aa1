//! `meridian region …`: failover by hand.
//!
//! In a two-region mesh (or wherever no router runs failover) an operator
//! decides the takeover. This module parses arguments and prints; the
//! takeover itself is `meridian_router::failover::failover_by_hand`, the
//! same record-then-carry-out the router does: one transaction in etcd
//! (refused while the region still holds a live lease, so a region that is
//! merely slow is never taken over), then `TakeOver` on the successor's
//! gateway over mutual TLS with a router certificate.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use meridian_core::RegionId;
use meridian_router::failover::{connect_etcd, failover_by_hand};
use meridian_tls::{MeshTls, Service, TlsFiles};

#[derive(Debug, clap::Subcommand)]
pub enum RegionCommand {
    /// Record in etcd that SUCCESSOR takes REGION over, then have
    /// SUCCESSOR's gateway take every open ticket REGION owns. Refused while
    /// REGION holds a live lease. Running it again finishes the same
    /// takeover and takes nothing twice.
    Failover(FailoverArgs),
}

#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// The failed region.
    region: RegionId,
    /// The region that takes its tickets.
    #[arg(long = "to")]
    successor: RegionId,
    /// The successor gateway's internal (mesh) address, HOST:PORT.
    #[arg(long)]
    successor_addr: String,
    /// etcd client URLs, comma-separated or repeated; needed here or in
    /// the environment.
    // Checked in `failover`, not with `required`: clap would show it as
    // required even when MERIDIAN_ETCD_ENDPOINTS supplies it.
    #[arg(long = "etcd", env = "MERIDIAN_ETCD_ENDPOINTS", value_delimiter = ',')]
    etcd: Vec<String>,
    /// Where Meridian's keys live in etcd (the gateways' and router's
    /// `key_prefix`); default: the coordinator's.
    #[arg(long)]
    key_prefix: Option<String>,
    /// A development PKI directory (`meridian certs dev`): use the router
    /// certificate of --tls-region from it.
    #[arg(long, requires = "tls_region", conflicts_with_all = ["cert", "key", "ca"])]
    tls_dir: Option<PathBuf>,
    /// Which region's router certificate of --tls-dir to present.
    #[arg(long, requires = "tls_dir")]
    tls_region: Option<RegionId>,
    /// A router certificate (PEM), with --key and --ca.
    #[arg(long, requires_all = ["key", "ca"])]
    cert: Option<PathBuf>,
    /// The router certificate's private key (PEM).
    #[arg(long, requires_all = ["cert", "ca"])]
    key: Option<PathBuf>,
    /// The CA bundle the successor's certificate must chain to.
    #[arg(long, requires_all = ["cert", "key"])]
    ca: Option<PathBuf>,
    /// How long the successor may take to answer.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
}

pub async fn run(cmd: RegionCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RegionCommand::Failover(args) => failover(args).await,
    }
}

async fn failover(args: FailoverArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.region != args.successor,
        "--to: {} cannot take itself over",
        args.region
    );
    anyhow::ensure!(args.timeout_ms > 0, "--timeout-ms must be at least 1");
    let files = match (args.tls_dir, args.tls_region, args.cert, args.key, args.ca) {
        (Some(dir), Some(region), None, None, None) => {
            TlsFiles::dev(&dir, &region, Service::Router)
        }
        (None, None, Some(cert), Some(key), Some(ca)) => TlsFiles { cert, key, ca },
        _ => anyhow::bail!(
            "name the router certificate: --tls-dir DIR --tls-region REGION, or --cert, --key and --ca"
        ),
    };
    let tls = MeshTls::load(files).context("cannot load the router certificate")?;
    anyhow::ensure!(
        tls.identity().service() == Service::Router,
        "{} is not a router identity; gateways accept takeovers only from the router",
        tls.identity()
    );
    let timeout = Duration::from_millis(args.timeout_ms);
    anyhow::ensure!(
        args.etcd.iter().any(|e| !e.trim().is_empty()),
        "--etcd: give the etcd client URLs (or set MERIDIAN_ETCD_ENDPOINTS)"
    );
    let coordinator = connect_etcd(args.etcd, args.key_prefix, Duration::from_secs(5))
        .await
        .context("cannot set up the etcd client")?;
    let done = failover_by_hand(
        coordinator.as_ref(),
        &tls,
        &args.region,
        &args.successor,
        &args.successor_addr,
        timeout,
    )
    .await
    .with_context(|| format!("failover of {} to {}", args.region, args.successor))?;
    let token = done.takeover.fencing_token;
    if done.recorded_now {
        println!(
            "takeover of {} by {} recorded at fencing token {token}",
            args.region, args.successor
        );
    } else {
        println!(
            "takeover of {} by {} was already recorded at fencing token {token}; finished it",
            args.region, args.successor
        );
    }
    println!(
        "{} took {} ticket(s) (its log through seq {}; durable in another region: {})",
        args.successor,
        done.answer.tickets_taken,
        done.answer.through_seq,
        if done.answer.peer_durable {
            "yes"
        } else {
            "not yet"
        }
    );
    println!(
        "when {} returns it learns this takeover, acknowledges it and leases again by itself",
        args.region
    );
    Ok(ExitCode::SUCCESS)
}
