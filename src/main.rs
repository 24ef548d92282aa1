//! `meridian`: the one command of the mesh. It runs a regional gateway
//! (`meridian gateway`), the whole three-region mesh on loopback
//! (`meridian up`), talks to gateways (`meridian ticket …`), checks and
//! explains follow-the-sun rules (`meridian rules …`, `meridian sla …`) and
//! drives load (`meridian load`).
//!
//! Boundary: argument parsing, printing and process lifecycle only. Every
//! answer comes from a library crate; services are started through their
//! `run` functions, exactly as the tests start them.

#![forbid(unsafe_code)]

mod agent_cli;
mod certs_cli;
mod cli_output;
mod health_cli;
mod mail_cli;
mod notify_cli;
mod region_cli;
mod rules_cli;
mod ticket_cli;
mod token_cli;
mod trace_cli;
mod up;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use meridian::load;

#[derive(Parser)]
#[command(
    name = "meridian",
    version,
    about = "Meridian: a follow-the-sun support mesh"
)]
struct Cli {
    /// Log as JSON lines instead of text (the same as --log-format json).
    #[arg(long, global = true, env = "MERIDIAN_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one regional gateway from a config file.
    Gateway {
        /// The gateway's TOML config; MERIDIAN_* variables override its keys.
        #[arg(long, env = "MERIDIAN_CONFIG")]
        config: PathBuf,
        // Server flags live on server commands only: a client command must
        // not read MERIDIAN_METRICS_LISTEN and take the service's port.
        #[command(flatten)]
        telemetry: meridian_telemetry::TelemetryArgs,
    },
    /// Run the global router from a config file.
    Router {
        /// The router's TOML config; MERIDIAN_* variables override its keys.
        #[arg(long, env = "MERIDIAN_ROUTER_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        telemetry: meridian_telemetry::TelemetryArgs,
    },
    /// Run the whole mesh on loopback: the router and three regional
    /// gateways over embedded SQLite, with mutual TLS between regions.
    /// Ctrl-C stops it cleanly.
    Up {
        #[command(flatten)]
        args: up::UpArgs,
        #[command(flatten)]
        telemetry: meridian_telemetry::TelemetryArgs,
    },
    /// Create, read, list, update and annotate tickets at a gateway.
    #[command(subcommand)]
    Ticket(ticket_cli::TicketCommand),
    /// A region's agents: the roster now, presence, open tickets.
    #[command(subcommand)]
    Agent(agent_cli::AgentCommand),
    /// Show a ticket's journey through the regions: who held it and for how
    /// long, each handoff with its note, where it waited, and its trace.
    Trace(trace_cli::TraceArgs),
    /// Check, explain and simulate follow-the-sun rules files.
    #[command(subcommand)]
    Rules(rules_cli::RulesCommand),
    /// SLA arithmetic against a rules file.
    #[command(subcommand)]
    Sla(rules_cli::SlaCommand),
    /// Fail a region over by hand (two-region meshes, or no router failover).
    #[command(subcommand)]
    Region(region_cli::RegionCommand),
    /// Make and renew the development CA and service certificates for
    /// mutual TLS.
    #[command(subcommand)]
    Certs(certs_cli::CertsCommand),
    /// Make development signing keys and mint bearer tokens for the public
    /// services.
    #[command(subcommand)]
    Token(token_cli::TokenCommand),
    /// Drive CreateTicket load at a gateway and report throughput and
    /// latency next to bare baselines measured in the same run.
    Load(load::LoadArgs),
    /// Ask a gateway or router whether it is SERVING (grpc.health.v1, over
    /// TLS with --ca): the Kubernetes probes of the TLS public ports.
    Health(health_cli::HealthArgs),
    /// The notification outbox: dead letters, and sending one again.
    #[command(subcommand)]
    Notify(notify_cli::NotifyCommand),
    /// A region's mail: messages kept aside, and outgoing mails by state.
    #[command(subcommand)]
    Mail(mail_cli::MailCommand),
}

impl Command {
    /// The telemetry flags of a server command; none for a client command.
    fn server_telemetry(&self) -> Option<&meridian_telemetry::TelemetryArgs> {
        match self {
            Command::Gateway { telemetry, .. }
            | Command::Router { telemetry, .. }
            | Command::Up { telemetry, .. } => Some(telemetry),
            _ => None,
        }
    }
}

fn main() -> ExitCode {
    let matches = match Cli::command().try_get_matches() {
        Ok(matches) => matches,
        Err(error) => return cli_output::usage_error(error),
    };
    let json = cli_output::wants_json(&matches);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => return cli_output::usage_error(error),
    };
    match run(cli) {
        Ok(code) => code,
        Err(error) => cli_output::fail(&error, json),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Inside the runtime: the OTLP exporter's connection lives on it.
        let telemetry = init_telemetry(&cli).await?;
        let result = run_async(cli.command).await;
        // Flush spans and metrics whether or not the command succeeded.
        if let Err(error) = telemetry.shutdown().await {
            eprintln!("warning: {error}");
        }
        result
    })
}

async fn run_async(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Gateway { config, .. } => {
            let config = meridian_gateway::GatewayConfig::load(&config)?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            meridian_gateway::run(config, listener, ctrl_c()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Router { config, .. } => {
            let config = meridian_router::RouterConfig::load(&config)?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            meridian_router::run(config, listener, ctrl_c()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Up { args, .. } => up::run(args).await,
        Command::Ticket(cmd) => ticket_cli::run(cmd).await,
        Command::Agent(cmd) => agent_cli::run(cmd).await,
        Command::Trace(args) => trace_cli::run(args).await,
        Command::Load(args) => load::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Health(args) => health_cli::run(args).await,
        Command::Notify(cmd) => notify_cli::run(cmd).await,
        Command::Mail(cmd) => mail_cli::run(cmd).await,
        Command::Certs(cmd) => certs_cli::run(cmd),
        Command::Token(cmd) => token_cli::run(cmd),
        Command::Region(cmd) => region_cli::run(cmd).await,
        Command::Rules(cmd) => rules_cli::run_rules(cmd),
        Command::Sla(cmd) => rules_cli::run_sla(cmd),
    }
}

/// Completes on the first Ctrl-C (or SIGTERM on Unix).
pub async fn ctrl_c() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Services log at info; one-shot client commands only warn, so their
/// output stays what the user asked for. Logs go to stderr; spans and
/// metrics are exported only when an OTLP endpoint is given.
async fn init_telemetry(cli: &Cli) -> anyhow::Result<meridian_telemetry::Telemetry> {
    // The region and `[telemetry] metrics_listen` are the config's; a
    // config that does not load fails properly once the command runs.
    let (service, default_filter, region, metrics_listen) = match &cli.command {
        Command::Gateway { config, .. } => {
            let config = meridian_gateway::GatewayConfig::load(config).ok();
            let listen = config.as_ref().and_then(|c| c.telemetry.metrics_listen);
            (
                "meridian-gateway",
                "info",
                config.map(|c| c.region.to_string()),
                listen,
            )
        }
        Command::Router { config, .. } => (
            "meridian-router",
            "info",
            None,
            meridian_router::RouterConfig::load(config)
                .ok()
                .and_then(|c| c.metrics_listen),
        ),
        // One process, every region: spans and series name their region
        // themselves, and one `/metrics` serves them all.
        Command::Up { .. } => ("meridian-up", "info", None, None),
        _ => ("meridian", "warn", None, None),
    };
    let server = cli.command.server_telemetry();
    let mut config = match server {
        Some(flags) => flags.config(service),
        None => meridian_telemetry::TelemetryConfig::new(service),
    };
    config.region = region;
    config.log_writer = meridian_telemetry::LogWriter::Stderr;
    config.default_log_filter = default_filter.to_owned();
    if cli.log_json {
        config.log_format = meridian_telemetry::LogFormat::Json;
    }
    // Client commands (the health probe among them) take no server flags,
    // so they neither export nor take a service's /metrics port.
    let mut telemetry = meridian_telemetry::Telemetry::init(&config)?;
    let flag = server.and_then(|flags| flags.metrics_listen);
    if let Some(addr) = flag.or(metrics_listen) {
        telemetry.serve_metrics(addr).await?;
    }
    Ok(telemetry)
}
