//! `meridian health`: one `grpc.health.v1.Health/Check`, over TLS when the
//! URL is https. The kubelet's native gRPC probes cannot speak TLS, so the
//! Kubernetes manifests probe the TLS public ports with this command as an
//! exec probe (the image has no shell; the binary is the probe). Health is
//! open without a token on every Meridian service, so none is sent.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The service's URL, e.g. https://127.0.0.1:7101 (https needs --ca).
    #[arg(long, env = "MERIDIAN_TARGET", default_value = crate::ticket_cli::TARGET_DEFAULT)]
    target: String,
    /// PEM file of the CA that signed the server's certificate.
    #[arg(long, env = "MERIDIAN_CA")]
    ca: Option<PathBuf>,
    /// The DNS name the server's certificate must carry, when the URL's host
    /// is not one of its names (a probe dials 127.0.0.1; the certificate
    /// names the Service).
    #[arg(long)]
    tls_server_name: Option<String>,
    /// Whose status to ask: "" (the default) is the process;
    /// meridian.v1.TicketService is SERVING only on the active gateway.
    #[arg(long, default_value = "")]
    service: String,
    /// Deadline of the connection and the call, in seconds.
    #[arg(long, default_value_t = 2)]
    timeout_secs: u64,
}

/// Prints the status; exit code 0 only for SERVING.
pub async fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let url = &args.target;
    let mut endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("--target {url:?} is not a URL"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    if url.starts_with("https://") {
        let Some(ca) = &args.ca else {
            bail!("--target {url} is https: pass --ca FILE (the CA's PEM)")
        };
        let pem =
            std::fs::read(ca).with_context(|| format!("cannot read --ca {}", ca.display()))?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        if let Some(name) = &args.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        endpoint = endpoint.tls_config(tls).context("TLS settings refused")?;
    } else if args.tls_server_name.is_some() {
        bail!("--tls-server-name needs an https:// --target");
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("{url}: {:?}: {}", status.code(), status.message()))?
        .into_inner()
        .status();
    let name = if args.service.is_empty() {
        "(process)"
    } else {
        args.service.as_str()
    };
    println!("{name} {}", status.as_str_name());
    Ok(if status == ServingStatus::Serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
