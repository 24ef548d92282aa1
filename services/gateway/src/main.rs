//! `meridian-gateway`: runs one regional gateway from a config file. The
//! same thing as `meridian gateway --config FILE`, as its own small binary
//! for container images that want nothing else.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use meridian_telemetry::{Telemetry, TelemetryArgs, TelemetryConfig};

#[derive(Parser)]
#[command(version, about = "Runs one Meridian regional gateway")]
struct Args {
    /// The gateway's TOML config; MERIDIAN_* variables override its keys.
    #[arg(long, env = "MERIDIAN_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The one error style of every Meridian command: `error: ` and
            // the whole cause chain on one line (anyhow's own is `Error:`).
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = meridian_gateway::GatewayConfig::load(&args.config)?;
    let mut telemetry = Telemetry::init(&TelemetryConfig {
        region: Some(config.region.to_string()),
        ..args.telemetry.config("meridian-gateway")
    })?;
    if let Some(addr) = args
        .telemetry
        .metrics_listen
        .or(config.telemetry.metrics_listen)
    {
        telemetry.serve_metrics(addr).await?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let result = meridian_gateway::run(config, listener, shutdown).await;
    // Flush spans and metrics whether or not the gateway stopped cleanly.
    if let Err(error) = telemetry.shutdown().await {
        eprintln!("warning: {error}");
    }
    result?;
    Ok(())
}
