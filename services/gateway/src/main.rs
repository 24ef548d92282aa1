//! `meridian-gateway`: runs one regional gateway from a config file. The
//! same thing as `meridian gateway --config FILE`, as its own small binary
//! for container images that want nothing else.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Runs one Meridian regional gateway")]
struct Args {
    /// The gateway's TOML config; MERIDIAN_* variables override its keys.
    #[arg(long, env = "MERIDIAN_CONFIG")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
    ).init();
    let args = Args::parse();
    let config = meridian_gateway::GatewayConfig::load(&args.config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    meridian_gateway::run(config, listener, shutdown).await?;
    Ok(())
}
