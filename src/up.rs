//! `meridian up`: the whole mesh in one process on loopback, for a first
//! look and for development. Each region gets its own gateway, its own
//! SQLite database and its own certificate, exactly as separate processes
//! would; regions reach each other over mutual TLS with a generated
//! development CA, and the router routes by the rules in the data
//! directory (hot-reloaded: edit the file and watch the decisions change).
//!
//! The public ports serve TLS (certificates of the same development CA) and
//! require a bearer token: `up` makes a development signing key and JWKS
//! under `DATA_DIR/auth`, mints a token per role (an agent token per
//! region) into `DATA_DIR/tokens`, prints them, and writes `DATA_DIR/env`
//! for the CLI. `--no-auth` serves plaintext without tokens, as before.
//!
//! `/metrics` (every region, the router and the process) is served on
//! 127.0.0.1:9464 unless `--metrics-listen` says otherwise. The banner that
//! says where everything is comes before any service starts logging.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Context;
use meridian_core::RegionId;
use meridian_gateway::{GatewayConfig, Listeners, MeshSettings, RulesSettings};
use meridian_proto::v1;
use meridian_store::StoreConfig;
use meridian_tls::{
    CA_CERT_FILE, DevPkiPlan, Service, TlsFiles, TrustDomain, Validity, write_dev_pki,
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

/// The regions of the development mesh, in epoch-index order (the example
/// rules give them the same indexes).
pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "apac-south"];
/// The rules `up` starts with when the data directory has none.
const EXAMPLE_RULES: &str = include_str!("../deploy/rules.example.toml");
const TRUST_DOMAIN: &str = "meridian.local";
/// Where `up` serves `/metrics` unless `--metrics-listen` says otherwise:
/// the port OpenTelemetry's Prometheus exporters use by default, on
/// loopback. `--base-port 0` picks a free port here too.
pub const METRICS_PORT_DEFAULT: u16 = 9464;

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Where each region's SQLite database, the rules and the development
    /// certificates live (created if missing).
    #[arg(long, default_value = "meridian-data")]
    data_dir: PathBuf,
    /// The rules file; default: DATA_DIR/rules.toml, written from the
    /// example on first start.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// The router listens on BASE, gateways on BASE+1..3, their mesh ports
    /// on BASE+11..13, the web console on BASE+20; 0 picks free ports.
    #[arg(long, default_value_t = 7100)]
    base_port: u16,
    /// Run the mesh's clock this many times faster than real time, to
    /// watch a day of shift ends and handoffs in minutes (60: a day in 24
    /// minutes).
    #[arg(long, default_value_t = 1)]
    speed: u32,
    /// Start the mesh's clock at this instant (RFC 3339) instead of now,
    /// e.g. just before a shift ends.
    #[arg(long)]
    start: Option<jiff::Timestamp>,
    /// Link each ticket in the console to its trace in this tracing UI;
    /// `{trace_id}` is replaced by the ticket's trace id.
    #[arg(long, env = "MERIDIAN_TRACING_UI", value_name = "URL_TEMPLATE")]
    tracing_ui: Option<String>,
    /// Serve the public ports in plaintext and without tokens (loopback
    /// only; loudly logged).
    #[arg(long)]
    no_auth: bool,
    /// Send notifications to this webhook, from every region:
    /// NAME=URL[,format=slack|teams|json][,kinds=a+b][,ca=PEM]. https://,
    /// or http:// to loopback. Repeatable.
    #[arg(long = "webhook", value_name = "NAME=URL[,format=…]", value_parser = parse_webhook)]
    webhooks: Vec<meridian_notify::Target>,
    /// Point a region at a support mailbox: REGION=FILE, where FILE holds a
    /// `[mail]` table (IMAP, optional SMTP, From address; docs/mail.md).
    /// `up` fills in the router and the region's intake token. Repeatable.
    #[arg(long = "mail", value_name = "REGION=FILE", value_parser = parse_mail)]
    mail: Vec<(String, PathBuf)>,
}

fn parse_mail(spec: &str) -> Result<(String, PathBuf), String> {
    match spec.split_once('=') {
        Some((region, file)) if !region.is_empty() && !file.is_empty() => {
            Ok((region.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!("{spec:?} is not REGION=FILE")),
    }
}

fn parse_webhook(spec: &str) -> Result<meridian_notify::Target, String> {
    meridian_notify::Target::parse_spec(spec).map_err(|e| e.to_string())
}

/// What clients need when the mesh requires tokens.
struct DevAuth {
    /// `[auth]` of every public service.
    settings: meridian_auth::AuthSettings,
    ca: PathBuf,
    /// (name, token file, token), in print order.
    tokens: Vec<(String, PathBuf, String)>,
    /// The router console's own token (an sre's).
    console_token: PathBuf,
    env_file: PathBuf,
}

/// The development signing key, JWKS and one token per role (agents: one
/// per region), minted fresh at every start.
fn dev_auth(data_dir: &Path, pki: &Path, regions: &[RegionId]) -> anyhow::Result<DevAuth> {
    use meridian_auth::Role;
    let auth_dir = data_dir.join("auth");
    let key = crate::token_cli::dev_keys(&auth_dir, false, false)?;
    let tokens_dir = data_dir.join("tokens");
    std::fs::create_dir_all(&tokens_dir)
        .with_context(|| format!("cannot create {}", tokens_dir.display()))?;
    let hours = crate::token_cli::DEV_TOKEN_HOURS;
    let mut wanted: Vec<(String, Role, Option<&RegionId>)> = regions
        .iter()
        .map(|r| (format!("agent-{r}"), Role::Agent, Some(r)))
        .collect();
    wanted.extend(
        [Role::Operator, Role::Sre, Role::Admin].map(|role| (role.to_string(), role, None)),
    );
    // A mailbox loop's token per region (`--mail`): it creates tickets
    // and adds customer messages, nothing else.
    wanted.extend(
        regions
            .iter()
            .map(|r| (format!("intake-{r}"), Role::Intake, None)),
    );
    wanted.push(("console".to_owned(), Role::Sre, None));
    let mut tokens = Vec::new();
    for (name, role, region) in wanted {
        let subject = (name == "console").then(|| "meridian-console".to_owned());
        let token = crate::token_cli::mint(&key, role, region, subject, hours);
        let path = tokens_dir.join(format!("{name}.jwt"));
        meridian_tls::write_atomically(&path, token.as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", path.display()))?;
        tokens.push((name, path, token));
    }
    let console_token = tokens_dir.join("console.jwt");
    // Service tokens are files for the services, not lines for people.
    tokens.retain(|(name, _, _)| name != "console" && !name.starts_with("intake-"));
    let ca = pki.join(CA_CERT_FILE);
    let env_file = data_dir.join("env");
    Ok(DevAuth {
        settings: meridian_auth::AuthSettings::new(auth_dir.join(crate::token_cli::JWKS_FILE)),
        ca,
        tokens,
        console_token,
        env_file,
    })
}

/// `DATA_DIR/env`: what the CLI needs to call this mesh as the first
/// region's agent (`source` it), and, commented, the lines that switch to
/// each other role: another region's agent, the operator, the sre (with
/// every gateway as a peer, which `meridian trace` asks) and the admin.
fn write_env(
    auth: &DevAuth,
    gateways: &[(RegionId, String)],
    router: &str,
    rules: &Path,
) -> anyhow::Result<()> {
    let token_file = |name: &str| {
        auth.tokens
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, path, _)| absolute(path))
    };
    let (first_region, gateway) = gateways.first().context("no regions")?;
    let first_agent = token_file(&format!("agent-{first_region}")).context("no agent token")?;
    let peers: Vec<&str> = gateways.iter().map(|(_, url)| url.as_str()).collect();
    let mut env = format!(
        "# Written by `meridian up`: `source` it to call the mesh with the CLI as\n\
         # the {first_region} agent. To act as another role, run its line below.\n\
         export MERIDIAN_TARGET={gateway}\n\
         export MERIDIAN_ROUTER={router}\n\
         export MERIDIAN_CA={}\n\
         export MERIDIAN_RULES={}\n\
         export MERIDIAN_TOKEN=\"$(cat {})\"\n",
        absolute(&auth.ca).display(),
        absolute(rules).display(),
        first_agent.display(),
    );
    for (region, url) in gateways.iter().skip(1) {
        if let Some(path) = token_file(&format!("agent-{region}")) {
            env.push_str(&format!(
                "\n# The {region} agent: tickets in {region}.\n\
                 # export MERIDIAN_TARGET={url} MERIDIAN_TOKEN=\"$(cat {})\"\n",
                path.display()
            ));
        }
    }
    let roles = [
        ("operator", "rules and the console's what-if"),
        (
            "sre",
            "`meridian trace TICKET` across every region, the console",
        ),
        ("admin", "everything, region failover"),
    ];
    for (role, what) in roles {
        let Some(path) = token_file(role) else {
            continue;
        };
        // The sre reads every region: `meridian trace` asks each gateway.
        let peers = if role == "sre" {
            format!(" MERIDIAN_PEERS={}", peers.join(","))
        } else {
            String::new()
        };
        env.push_str(&format!(
            "\n# The {role}: {what}.\n# export MERIDIAN_TOKEN=\"$(cat {})\"{peers}\n",
            path.display()
        ));
    }
    std::fs::write(&auth.env_file, env)
        .with_context(|| format!("cannot write {}", auth.env_file.display()))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// What the mesh prints about itself.
struct Endpoint {
    name: String,
    url: String,
    detail: String,
}

async fn bind(base: u16, offset: u16, what: &str) -> anyhow::Result<TcpListener> {
    let port = match base {
        0 => 0,
        base => base
            .checked_add(offset)
            .context("--base-port is too high")?,
    };
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port} for {what}; is another mesh running? (--base-port)"))
}

/// The rules file to use, written from the example when missing.
fn rules_file(args: &UpArgs) -> anyhow::Result<PathBuf> {
    if let Some(path) = &args.rules {
        return Ok(path.clone());
    }
    let path = args.data_dir.join("rules.toml");
    if !path.exists() {
        std::fs::write(&path, EXAMPLE_RULES)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(path)
}

/// A development roster per region, written when missing: the agent of
/// the region's printed token and two more, working every shift of the
/// region with all its skills. Without rules that parse there are none
/// (the gateways then say what is wrong with the rules).
async fn dev_rosters(
    data_dir: &Path,
    rules: &Path,
    regions: &[RegionId],
) -> anyhow::Result<Vec<(RegionId, PathBuf)>> {
    let Ok(source) = meridian_rules_source::RulesSource::load(rules).await else {
        return Ok(Vec::new());
    };
    let rules = source.active.current();
    let mut rosters = Vec::new();
    for (i, region) in regions.iter().enumerate() {
        let path = data_dir.join(format!("roster.{region}.toml"));
        if !path.exists() {
            let Some(spec) = rules.region(region.as_str()) else {
                continue;
            };
            std::fs::write(&path, dev_roster(spec, DEV_AGENTS[i % DEV_AGENTS.len()]))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        rosters.push((region.clone(), path));
    }
    Ok(rosters)
}

/// Two people per region besides the token's agent, for the console.
const DEV_AGENTS: [[&str; 2]; 3] = [["ana", "bo"], ["eve", "finn"], ["kei", "lin"]];

fn dev_roster(region: &meridian_rules::Region, people: [&str; 2]) -> String {
    let quoted = |items: &mut dyn Iterator<Item = &str>| {
        items
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut shifts: Vec<&str> = region.shift_names().collect();
    shifts.dedup();
    let shifts = quoted(&mut shifts.into_iter());
    let skills = quoted(&mut region.skills.iter().map(|s| s.as_str()));
    let id = &region.id;
    let mut text = format!(
        "# The development roster of {id}, written by `meridian up` (docs/people.md).\n\
         # Edit it: the gateway reloads it; a file with a problem is refused\n\
         # (FILE:LINE:COL) and the last good one stays in force.\n\
         region = \"{id}\"\n\n\
         [assignment]\n\
         # off: new tickets wait for a claim; least_loaded or round_robin give\n\
         # them to available agents on shift with the skills and room.\n\
         auto = \"off\"\n\n\
         # The agent of the printed token (DATA_DIR/tokens/agent-{id}.jwt).\n\
         [[agents]]\n\
         id = \"dev-agent-{id}\"\n\
         name = \"Dev agent ({id})\"\n\
         skills = [{skills}]\n\
         max_open = 25\n\
         shifts = [{shifts}]\n"
    );
    for person in people {
        text.push_str(&format!(
            "\n[[agents]]\nid = \"{person}\"\nskills = [{skills}]\nmax_open = 10\nshifts = [{shifts}]\n"
        ));
    }
    text
}

/// The development PKI under the data directory, made once and reused.
fn dev_pki(dir: &Path, regions: &[RegionId]) -> anyhow::Result<()> {
    if dir.join(CA_CERT_FILE).exists() {
        return Ok(());
    }
    let now = SystemTime::now();
    let plan = DevPkiPlan {
        trust_domain: TrustDomain::new(TRUST_DOMAIN)?,
        regions: regions.to_vec(),
        services: vec![Service::Gateway, Service::Router],
        ca_validity: Validity::days_from(now, 3650),
        cert_validity: Validity::days_from(now, 365),
        replace_ca: false,
    };
    write_dev_pki(dir, &plan)
        .with_context(|| format!("cannot write the development PKI to {}", dir.display()))?;
    Ok(())
}

/// A server-only certificate for one public port (`gateway-us-east`,
/// `router`), made once under `pki/public/` from the development CA: no
/// SPIFFE id and no client use, so a certificate a client can fetch from a
/// public port is never a mesh identity.
fn public_cert(pki: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = pki.join("public");
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let read = |file: &str| {
        let path = pki.join(file);
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let ca =
        meridian_tls::DevCa::from_pem(&read(CA_CERT_FILE)?, &read(meridian_tls::CA_KEY_FILE)?)?;
    let validity = Validity::days_from(SystemTime::now(), 365);
    let (cert_pem, key_pem) = meridian_tls::issue_server(&ca, &["localhost".to_owned()], validity)?;
    meridian_tls::write_atomically(&key, key_pem.as_bytes(), 0o600)?;
    meridian_tls::write_atomically(&cert, cert_pem.as_bytes(), 0o644)?;
    Ok((cert, key))
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            args.data_dir.display()
        )
    })?;
    let regions: Vec<RegionId> = REGIONS
        .iter()
        .map(|r| RegionId::new(*r))
        .collect::<Result<_, _>>()?;
    let rules = rules_file(&args)?;
    let rosters = dev_rosters(&args.data_dir, &rules, &regions).await?;
    let pki = args.data_dir.join("pki");
    dev_pki(&pki, &regions)?;
    let auth = if args.no_auth {
        None
    } else {
        Some(dev_auth(&args.data_dir, &pki, &regions)?)
    };
    let scheme = if auth.is_some() { "https" } else { "http" };

    // Bind everything first, so each gateway knows its peers' addresses.
    let router_listener = bind(args.base_port, 0, "the router").await?;
    let console_listener = bind(args.base_port, 20, "the console").await?;
    let mut listeners = Vec::new();
    for (i, region) in regions.iter().enumerate() {
        let offset = u16::try_from(i).context("too many regions")?;
        let public = bind(args.base_port, 1 + offset, region.as_str()).await?;
        let mesh = bind(args.base_port, 11 + offset, region.as_str()).await?;
        listeners.push((region.clone(), public, mesh));
    }
    let mesh_addrs: Vec<(RegionId, SocketAddr)> = listeners
        .iter()
        .map(|(r, _, m)| Ok((r.clone(), m.local_addr()?)))
        .collect::<std::io::Result<_>>()?;

    let (stop, stopped) = watch::channel(false);
    let shutdown = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let mut tasks: JoinSet<(String, anyhow::Result<()>)> = JoinSet::new();
    // One in-process coordinator for the whole mesh: region leases and
    // takeovers, as etcd holds them across real regions. Leases run on real
    // time even with --speed, so keep-alives never fall behind the clock.
    let coordinator: Arc<dyn meridian_coord::Coordinator> =
        Arc::new(meridian_coord::LocalCoordinator::new(
            Arc::new(meridian_gateway::SystemClock),
            meridian_coord::LocalConfig::default(),
        ));
    let mut endpoints = Vec::new();
    let mut gateway_urls = Vec::new();
    let mut starts: Vec<ServiceStart> = Vec::new();
    if args.speed == 0 {
        anyhow::bail!("--speed must be at least 1");
    }
    let clock: Arc<dyn meridian_core::Clock> = match (args.speed, args.start) {
        (1, None) => Arc::new(meridian_gateway::SystemClock),
        (speed, start) => Arc::new(meridian_gateway::ScaledClock::new(
            start.unwrap_or_else(jiff::Timestamp::now),
            speed,
        )),
    };
    for (region, file) in &args.mail {
        if !regions.iter().any(|r| r.as_str() == region) {
            anyhow::bail!(
                "--mail {region}={}: {region} is not a region of this mesh ({})",
                file.display(),
                regions
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    for (region, public, mesh) in listeners {
        let public_addr = public.local_addr()?;
        let mesh_addr = mesh.local_addr()?;
        let db = args.data_dir.join(format!("{region}.db"));
        let mut config = GatewayConfig::new(
            region.clone(),
            regions.clone(),
            public_addr,
            StoreConfig::sqlite_file(&db),
        );
        let mut settings = RulesSettings::new(rules.clone());
        settings.roster = rosters
            .iter()
            .find(|(r, _)| *r == region)
            .map(|(_, path)| path.clone());
        config.rules = Some(settings);
        config.notify.targets = args.webhooks.clone();
        config.mesh = Some(MeshSettings {
            listen: mesh_addr,
            tls: TlsFiles::dev(&pki, &region, Service::Gateway),
            peers: mesh_addrs
                .iter()
                .filter(|(r, _)| r != &region)
                .map(|(r, a)| (r.clone(), a.to_string()))
                .collect(),
            handoff_timeout: Duration::from_millis(
                meridian_gateway::config::HANDOFF_TIMEOUT_MS_DEFAULT,
            ),
            peer_durability_tiers: vec![meridian_core::Tier::new("enterprise")?],
        });
        config.coordinator = Some(meridian_gateway::failover::CoordinatorSettings::shared(
            coordinator.clone(),
        ));
        if let Some(auth) = &auth {
            // The public port has its own server-only certificate: the
            // mesh identity stays on the mesh port.
            let (cert, key) = public_cert(&pki, &format!("gateway-{region}"))?;
            config.tls = Some(meridian_gateway::TlsFiles { cert, key });
            config.auth = Some(auth.settings.clone());
        }
        if let Some((_, file)) = args.mail.iter().find(|(r, _)| r == region.as_str()) {
            let router_url = format!("{scheme}://{}", router_listener.local_addr()?);
            let (ca, token) = match &auth {
                Some(auth) => (
                    Some(auth.ca.clone()),
                    args.data_dir.join(format!("tokens/intake-{region}.jwt")),
                ),
                None => {
                    // Nothing checks tokens: any text will do.
                    let token = args.data_dir.join("tokens/unauthenticated.jwt");
                    std::fs::create_dir_all(args.data_dir.join("tokens"))?;
                    std::fs::write(&token, "unauthenticated")?;
                    (None, token)
                }
            };
            config.mail = Some(
                meridian_gateway::mail_settings::mail_settings_from_file(
                    file,
                    &router_url,
                    ca.as_deref(),
                    &token,
                )
                .with_context(|| format!("--mail {region}={}", file.display()))?,
            );
        }
        let url = format!("{scheme}://{public_addr}");
        gateway_urls.push((region.clone(), url.clone()));
        endpoints.push(Endpoint {
            name: format!("gateway {region}"),
            url,
            detail: format!("{} (mesh mTLS {mesh_addr})", db.display()),
        });
        let stopped = shutdown(stopped.clone());
        let clock = clock.clone();
        // Started after the banner, so it comes before their logs.
        starts.push(Box::pin(async move {
            let listeners = Listeners {
                public,
                mesh: Some(mesh),
            };
            let ended = meridian_gateway::run_listeners(config, listeners, stopped, clock).await;
            (
                format!("gateway {region}"),
                ended.map_err(anyhow::Error::from),
            )
        }));
    }
    let router_addr = router_listener.local_addr()?;
    let mut router_config =
        meridian_router::RouterConfig::new(router_addr, rules.clone(), gateway_urls.clone())?;
    let first_region = regions.first().context("no regions")?;
    // Health ages are read on the mesh's clock, which --speed runs N times
    // faster than the probes' real-time interval: scale the timeout so a
    // region is still judged on the same real seconds without a probe (at
    // 30x, a 1 s probe interval is 30 s of mesh time, and an unscaled
    // timeout marked every region down between two probes).
    router_config.health.timeout = router_config.health.timeout.saturating_mul(args.speed);
    router_config.failover = Some(meridian_router::failover::FailoverSettings::shared(
        coordinator.clone(),
        TlsFiles::dev(&pki, first_region, Service::Router),
        mesh_addrs
            .iter()
            .map(|(r, a)| (r.clone(), a.to_string()))
            .collect(),
    ));
    if let Some(template) = &args.tracing_ui
        && !template.contains(meridian_router::config::TRACE_ID_PLACEHOLDER)
    {
        anyhow::bail!(
            "--tracing-ui {template:?} has no {{trace_id}} to fill (e.g. http://localhost:16686/trace/{{trace_id}})"
        );
    }
    if let Some(auth) = &auth {
        let (cert, key) = public_cert(&pki, "router")?;
        router_config.tls = Some(meridian_router::PublicTls { cert, key });
        router_config.gateway_ca = Some(auth.ca.clone());
        router_config.auth = Some(auth.settings.clone());
        router_config.gateway_token_file = Some(auth.console_token.clone());
    }
    let console_addr = console_listener.local_addr()?;
    router_config.console = Some(meridian_router::ConsoleConfig {
        listen: console_addr,
        tracing_ui: args.tracing_ui.clone(),
    });
    endpoints.insert(
        0,
        Endpoint {
            name: "router".into(),
            url: format!("{scheme}://{router_addr}"),
            detail: format!("rules {}", rules.display()),
        },
    );
    // With auth the console serves HTTPS with the router's certificate and
    // takes the same tokens; without, it is local-only plain HTTP.
    let console_url = format!("{scheme}://{console_addr}/");
    let console_detail = match &auth {
        Some(_) => {
            "web console: Now, Handoffs, Rules (log in with an sre, operator or admin token)"
        }
        None => "web console: Now, Handoffs, Rules (local-only)",
    };
    endpoints.push(Endpoint {
        name: "console".into(),
        url: console_url.clone(),
        detail: console_detail.into(),
    });
    // One click logs in as the sre: the token rides in the URL's fragment,
    // which the browser never sends (so no server or proxy logs it); the
    // login page posts it and clears it from the address bar.
    let console_login = auth.as_ref().and_then(|auth| {
        let (_, _, token) = auth.tokens.iter().find(|(name, _, _)| name == "sre")?;
        Some(format!("{scheme}://{console_addr}/login#token={token}"))
    });
    let metrics = serve_metrics(args.base_port).await?;
    if let Some(server) = &metrics {
        endpoints.push(Endpoint {
            name: "metrics".into(),
            url: format!("http://{}/metrics", server.addr),
            detail: "Prometheus: RED per method, queues, SLAs, lag (docs/operations.md)".into(),
        });
    }
    let router_url = format!("{scheme}://{router_addr}");
    let first_gateway = endpoints.get(1).map_or_else(String::new, |e| e.url.clone());
    // The banner first: where everything is, before the services log.
    println!(
        "Meridian is starting: {} regions and the router on loopback, data under {}",
        REGIONS.len(),
        args.data_dir.display()
    );
    if args.speed > 1 || args.start.is_some() {
        println!(
            "The mesh's clock starts at {} and runs {}x real time.",
            clock.now(),
            args.speed
        );
    }
    println!();
    println!("{:<20} {:<30} DETAIL", "SERVICE", "URL");
    for e in &endpoints {
        println!("{:<20} {:<30} {}", e.name, e.url, e.detail);
    }
    println!();
    match &auth {
        Some(auth) => {
            write_env(auth, &gateway_urls, &router_url, &rules)?;
            println!(
                "Public ports serve TLS (CA {}) and require a bearer token.",
                auth.ca.display()
            );
            println!(
                "Development tokens (valid {} days; also in {}):",
                crate::token_cli::DEV_TOKEN_HOURS / 24,
                args.data_dir.join("tokens").display()
            );
            for (name, _, token) in &auth.tokens {
                println!("  {name:<18} {token}");
            }
            println!();
            println!(
                "For the CLI (as the {} agent): source {}",
                first_region,
                auth.env_file.display()
            );
        }
        None => {
            println!("--no-auth: public ports are plaintext and take no token (loopback only).")
        }
    }
    println!();
    for start in starts {
        tasks.spawn(start);
    }
    let stopped_router = shutdown(stopped.clone());
    let router_clock = clock.clone();
    tasks.spawn(async move {
        let ended = meridian_router::run_with_console(
            router_config,
            router_listener,
            Some(console_listener),
            stopped_router,
            router_clock,
        )
        .await;
        ("router".to_owned(), ended.map_err(anyhow::Error::from))
    });

    // A gateway serves before it holds its lease, and refuses owner-scoped
    // writes until then; "up" means every region can take writes.
    tokio::select! {
        leased = wait_until_leased(&gateway_urls, auth.as_ref()) => leased?,
        Some(ended) = tasks.join_next() => {
            let (name, result) = ended.context("a service task panicked")?;
            result.with_context(|| format!("{name} failed while starting"))?;
            anyhow::bail!("{name} stopped while starting");
        }
    }
    println!("Meridian is up: every region holds its lease and takes writes.");
    println!();
    println!("Try:");
    println!(
        "  meridian ticket submit --router {router_url} --subject \"VPN down\" --customer acme --tier premium"
    );
    println!("  meridian ticket list --target {first_gateway}");
    println!(
        "  meridian ticket handoff ID --target {first_gateway} --to eu-west --last-action … --next-action …"
    );
    match &console_login {
        Some(url) => {
            println!(
                "  open the console, logged in as the sre (log in with the operator token to run the what-if):"
            );
            println!("    {url}");
        }
        None => println!("  open {console_url} in a browser for the console"),
    }
    println!("Ctrl-C stops the mesh.");

    let mut failure = None;
    tokio::select! {
        () = crate::ctrl_c() => tracing::info!("stopping the mesh"),
        Some(ended) = tasks.join_next() => failure = Some(describe(ended)),
    }
    let _ = stop.send(true);
    while let Some(ended) = tasks.join_next().await {
        if let Err(error) = describe(ended) {
            failure.get_or_insert(Err(error));
        }
    }
    match failure {
        Some(Err(error)) => Err(error),
        // A service that stopped by itself before Ctrl-C is a failure too.
        Some(Ok(name)) => anyhow::bail!("{name} stopped unexpectedly"),
        None => {
            println!("Meridian stopped.");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A service's task, spawned once the banner is out.
type ServiceStart =
    std::pin::Pin<Box<dyn std::future::Future<Output = (String, anyhow::Result<()>)> + Send>>;

/// Where `/metrics` is served, and the server `up` started for it (if it
/// did: `--metrics-listen` may have started one already).
struct MetricsEndpoint {
    addr: SocketAddr,
    _server: Option<meridian_telemetry::MetricsServer>,
}

/// Serves the process's metrics at 127.0.0.1:[`METRICS_PORT_DEFAULT`]
/// (any free port with `--base-port 0`), unless they are served already.
async fn serve_metrics(base_port: u16) -> anyhow::Result<Option<MetricsEndpoint>> {
    if let Some(addr) = meridian_telemetry::Metrics::serving() {
        return Ok(Some(MetricsEndpoint {
            addr,
            _server: None,
        }));
    }
    let Some(metrics) = meridian_telemetry::Metrics::installed() else {
        return Ok(None);
    };
    let port = if base_port == 0 {
        0
    } else {
        METRICS_PORT_DEFAULT
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let server = meridian_telemetry::MetricsServer::bind(addr, metrics)
        .await
        .context("is another mesh running? (--metrics-listen picks another address)")?;
    Ok(Some(MetricsEndpoint {
        addr: server.local_addr(),
        _server: Some(server),
    }))
}

fn describe(
    ended: Result<(String, anyhow::Result<()>), tokio::task::JoinError>,
) -> anyhow::Result<String> {
    match ended {
        Ok((name, Ok(()))) => Ok(name),
        Ok((name, Err(error))) => Err(error.context(format!("{name} failed"))),
        Err(error) => Err(anyhow::anyhow!("a service task ended abnormally: {error}")),
    }
}

/// Waits until every gateway in `gateways` reports that it holds its
/// region's lease (not fenced), saying which one it still waits for.
async fn wait_until_leased(
    gateways: &[(RegionId, String)],
    auth: Option<&DevAuth>,
) -> anyhow::Result<()> {
    // The console's token is an sre's: it may read every gateway's status.
    let token = match auth {
        Some(auth) => {
            Some(std::fs::read_to_string(&auth.console_token).context("the console's token")?)
        }
        None => None,
    };
    let ca = auth.map(|a| a.ca.as_path());
    const PATIENCE: Duration = Duration::from_secs(30);
    let started = std::time::Instant::now();
    for (region, url) in gateways {
        let mut said = false;
        loop {
            let status = match crate::ticket_cli::gateway_client(
                url,
                ca,
                token.as_deref(),
                Duration::from_secs(2),
            )
            .await
            {
                Ok(mut client) => client
                    .get_status(v1::GetStatusRequest {})
                    .await
                    .map(tonic::Response::into_inner)
                    .ok(),
                Err(_) => None,
            };
            if status.as_ref().is_some_and(|s| !s.fenced) {
                break;
            }
            if started.elapsed() > PATIENCE {
                let reason = status.map_or_else(|| "not answering".to_owned(), |s| s.fenced_reason);
                anyhow::bail!(
                    "gateway {region} did not take its lease within {PATIENCE:?}: {reason}"
                );
            }
            if !said && started.elapsed() > Duration::from_secs(2) {
                eprintln!("waiting for gateway {region} to take its region's lease…");
                said = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use meridian_tls::rustls::pki_types::{CertificateDer, pem::PemObject};

    use super::*;

    #[test]
    fn public_ports_get_a_certificate_that_is_no_mesh_identity() {
        let dir = tempfile::tempdir().unwrap();
        let regions = vec![RegionId::new("us-east").unwrap()];
        dev_pki(dir.path(), &regions).unwrap();
        let (cert, key) = public_cert(dir.path(), "gateway-us-east").unwrap();
        assert!(key.exists());
        let pem = std::fs::read(&cert).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        let error = meridian_tls::PeerIdentity::from_cert_der(&der).unwrap_err();
        assert!(
            error.to_string().contains("SPIFFE") || error.to_string().contains("spiffe"),
            "{error}"
        );
        // Made once: a second start serves the same certificate.
        let (again, _) = public_cert(dir.path(), "gateway-us-east").unwrap();
        assert_eq!(std::fs::read(again).unwrap(), pem);
        // The mesh keeps its own identity, with its SPIFFE id.
        let mesh = TlsFiles::dev(dir.path(), &regions[0], Service::Gateway);
        let mesh_der = CertificateDer::from_pem_slice(&std::fs::read(mesh.cert).unwrap()).unwrap();
        meridian_tls::PeerIdentity::from_cert_der(&mesh_der).unwrap();
    }
}
