//! `meridian-router --config FILE`: loads the config, binds the listener and
//! runs the router until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use meridian_router::RouterConfig;
use meridian_telemetry::{Telemetry, TelemetryArgs};

/// Meridian's global router: sends each new ticket to the region on shift.
#[derive(Debug, Parser)]
#[command(name = "meridian-router", version)]
struct Args {
    /// The router's TOML config; MERIDIAN_LISTEN and MERIDIAN_RULES override it.
    #[arg(long, value_name = "FILE")]
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
    // The router serves every region, so its resource names none.
    let mut telemetry = Telemetry::init(&args.telemetry.config("meridian-router"))?;
    let config = RouterConfig::load(&args.config)?;
    if let Some(addr) = args.telemetry.metrics_listen.or(config.metrics_listen) {
        telemetry.serve_metrics(addr).await?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let result = meridian_router::run(config, listener, shutdown_signal()).await;
    // Flush spans and metrics whether or not the router stopped cleanly.
    if let Err(error) = telemetry.shutdown().await {
        eprintln!("warning: {error}");
    }
    result?;
    Ok(())
}

/// Completes on Ctrl-C, or on SIGTERM (how containers are stopped).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; stop with Ctrl-C");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}
