//! The example deployment in `deploy/` cannot rot: every config there loads
//! with the loader of the service it is for, the gateways, the router, the
//! rules and `compose.yaml` agree with each other, every public port serves
//! TLS and requires tokens from a JWKS that is actually mounted, and the
//! image and the certificate script keep their promises (non-root, no
//! shell; certificates that name the compose services, a JWKS and tokens).
//! No containers run here: there may be no Docker and no network.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use meridian_core::RegionId;
use meridian_gateway::GatewayConfig;
use meridian_router::RouterConfig;
use meridian_rules::Rules;

/// Where each config lives inside the containers (see compose.yaml).
const CONTAINER_DIR: &str = "/etc/meridian";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(name: &str) -> String {
    let path = deploy_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every deploy/*.toml, by the loader its name calls for.
struct Configs {
    gateways: Vec<(String, GatewayConfig)>,
    router: RouterConfig,
    rules: Rules,
}

fn load_all() -> Configs {
    let mut gateways = Vec::new();
    let mut routers = Vec::new();
    let mut rules = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".toml"))
        .collect();
    names.sort();
    for name in names {
        let text = read(&name);
        let label = format!("deploy/{name}");
        // No environment: the files alone must be complete and valid.
        if name.starts_with("gateway") {
            let config =
                GatewayConfig::parse(&label, &text, |_| None).unwrap_or_else(|e| panic!("{e}"));
            gateways.push((name, config));
        } else if name.starts_with("router") {
            routers.push(
                RouterConfig::parse(&label, &text, |_| None).unwrap_or_else(|e| panic!("{e}")),
            );
        } else if name.starts_with("rules") {
            rules.push(Rules::parse(&label, &text).unwrap_or_else(|e| panic!("{e}")));
        } else {
            panic!(
                "deploy/{name}: which service reads it? Name it gateway*, router* or rules*, or teach this test"
            );
        }
    }
    assert_eq!(routers.len(), 1, "one router config");
    assert_eq!(rules.len(), 1, "one rules file");
    Configs {
        gateways,
        router: routers.remove(0),
        rules: rules.remove(0),
    }
}

/// The service names of compose.yaml (the keys two spaces in under
/// `services:`); the hosts the configs may name.
fn compose_services(compose: &str) -> BTreeSet<String> {
    let mut in_services = false;
    let mut services = BTreeSet::new();
    for line in compose.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') && !line.is_empty() {
            in_services = line.trim_end() == "services:";
            continue;
        }
        if in_services
            && let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !name.starts_with(' ')
            && !name.starts_with('#')
        {
            services.insert(name.to_owned());
        }
    }
    services
}

/// The bind mounts (`- SOURCE:TARGET[:ro]`) of one compose service.
fn compose_volumes(compose: &str, service: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut in_volumes = false;
    let mut volumes = Vec::new();
    for line in compose.lines() {
        if line.starts_with("  ") && !line.starts_with("   ") && !line.trim_start().starts_with('#')
        {
            in_service = line.trim_end() == format!("  {service}:");
            in_volumes = false;
            continue;
        }
        if !line.starts_with(' ') && !line.is_empty() && !line.starts_with('#') {
            in_service = false;
        }
        if !in_service {
            continue;
        }
        let trimmed = line.trim();
        if line.starts_with("    ") && !line.starts_with("     ") && !trimmed.starts_with('#') {
            in_volumes = trimmed == "volumes:";
            continue;
        }
        if in_volumes && let Some(volume) = trimmed.strip_prefix("- ") {
            let mut parts = volume.split(':');
            let (source, target) = (
                parts.next().unwrap(),
                parts
                    .next()
                    .unwrap_or_else(|| panic!("{service}: {volume}")),
            );
            volumes.push((source.to_owned(), target.to_owned()));
        }
    }
    volumes
}

/// The file in deploy/ (relative, without `./`) that `service` sees at
/// `path`, through a mount of the file or of a directory above it.
fn mounted_from(compose: &str, service: &str, path: &Path) -> Option<PathBuf> {
    compose_volumes(compose, service)
        .into_iter()
        .find_map(|(source, target)| {
            let source = source.strip_prefix("./")?;
            let rest = path.strip_prefix(&target).ok()?;
            Some(if rest.as_os_str().is_empty() {
                PathBuf::from(source)
            } else {
                Path::new(source).join(rest)
            })
        })
}

/// Every file the gateway and router configs name that dev-certs.sh makes,
/// with the service that reads it: mesh and public TLS, JWKS, token.
fn named_files(configs: &Configs) -> Vec<(String, PathBuf)> {
    let mut named = Vec::new();
    for (_, gateway) in &configs.gateways {
        let service = format!("gateway-{}", gateway.region);
        let mesh = &gateway.mesh.as_ref().unwrap().tls;
        let public = gateway.tls.as_ref().unwrap();
        let auth = gateway.auth.as_ref().unwrap();
        let jwks = auth
            .jwks
            .as_ref()
            .expect("the deployments read a JWKS file");
        for file in [
            &mesh.cert,
            &mesh.key,
            &mesh.ca,
            &public.cert,
            &public.key,
            jwks,
        ] {
            named.push((service.clone(), file.clone()));
        }
    }
    let router = &configs.router;
    let failover = &router.failover.as_ref().unwrap().tls;
    let public = router.tls.as_ref().unwrap();
    for file in [
        &failover.cert,
        &failover.key,
        &failover.ca,
        &public.cert,
        &public.key,
    ] {
        named.push(("router".to_owned(), file.clone()));
    }
    named.push(("router".to_owned(), router.gateway_ca.clone().unwrap()));
    named.push((
        "router".to_owned(),
        router
            .auth
            .as_ref()
            .unwrap()
            .jwks
            .clone()
            .expect("router.toml: [auth] names a JWKS file"),
    ));
    named.push((
        "router".to_owned(),
        router.gateway_token_file.clone().unwrap(),
    ));
    named
}

fn host_port(addr: &str) -> (&str, u16) {
    let addr = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let (host, port) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{addr:?} has no port"));
    (
        host,
        port.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}")),
    )
}

#[test]
fn every_deploy_config_loads_and_they_agree_with_each_other_and_compose() {
    let configs = load_all();
    let compose = read("compose.yaml");
    let services = compose_services(&compose);
    let rule_regions: BTreeMap<RegionId, u16> = configs
        .rules
        .regions()
        .iter()
        .map(|r| (r.id.clone(), r.index))
        .collect();
    assert_eq!(
        configs.gateways.len(),
        rule_regions.len(),
        "one gateway config per region of the rules"
    );

    // Each region's gateway: where its peers find it, by region.
    let mut mesh_ports = BTreeMap::new();
    let mut public_ports = BTreeMap::new();
    for (name, gateway) in &configs.gateways {
        let region = gateway.region.clone();
        assert_eq!(
            name,
            &format!("gateway.{region}.toml"),
            "a gateway config is named after its region"
        );
        // The gateway refuses to start when its region order disagrees
        // with the rules' epoch indexes.
        for (id, index) in &rule_regions {
            assert_eq!(
                gateway.region_index(id),
                Some(*index),
                "{name}: regions order vs the rules' index of {id}"
            );
        }
        let rules = gateway
            .rules
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: has [rules]"));
        assert_eq!(
            rules.file,
            Path::new(CONTAINER_DIR).join("rules.toml"),
            "{name}"
        );
        let mesh = gateway
            .mesh
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: has [mesh]"));
        let peers: BTreeSet<&RegionId> = mesh.peers.keys().collect();
        let others: BTreeSet<&RegionId> = rule_regions.keys().filter(|r| **r != region).collect();
        assert_eq!(peers, others, "{name}: a peer for every other region");
        assert_eq!(
            mesh.tls.ca,
            Path::new(CONTAINER_DIR).join("pki/ca.pem"),
            "{name}"
        );
        assert!(gateway.coordinator.is_some(), "{name}: leases in etcd");
        assert_eq!(
            gateway.telemetry.metrics_listen.map(|a| a.port()),
            Some(9464),
            "{name}: /metrics"
        );
        let service = format!("gateway-{region}");
        assert!(
            services.contains(&service),
            "compose.yaml has a {service} service: {services:?}"
        );
        assert!(
            compose.contains(&format!("./{name}:{CONTAINER_DIR}/gateway.toml:ro")),
            "compose.yaml mounts deploy/{name} into {service}"
        );
        assert!(
            compose.contains(&format!("\"127.0.0.1:{0}:{0}\"", gateway.listen.port())),
            "compose.yaml publishes {service}'s public port {}",
            gateway.listen.port()
        );
        mesh_ports.insert(region.clone(), (service.clone(), mesh.listen.port()));
        public_ports.insert(region, (service, gateway.listen.port()));
    }
    for (name, gateway) in &configs.gateways {
        for (peer, addr) in &gateway.mesh.as_ref().unwrap().peers {
            let (host, port) = host_port(addr);
            assert_eq!(
                (host.to_owned(), port),
                mesh_ports[peer],
                "{name}: mesh.peers.{peer}"
            );
        }
    }

    // The router reaches every gateway on its public port, and fails
    // regions over through their mesh ports.
    let router = &configs.router;
    assert_eq!(
        router.rules_path,
        Path::new("rules.toml"),
        "relative to router.toml, beside it in the container"
    );
    assert_eq!(
        router.metrics_listen.map(|a| a.port()),
        Some(9464),
        "router.toml: /metrics"
    );
    assert_eq!(
        router.gateways.keys().collect::<Vec<_>>(),
        rule_regions.keys().collect::<Vec<_>>()
    );
    for (region, url) in &router.gateways {
        let (host, port) = host_port(url);
        assert_eq!(
            (host.to_owned(), port),
            public_ports[region],
            "router.toml: gateways.{region}"
        );
    }
    let failover = router.failover.as_ref().expect("router.toml: [failover]");
    for (region, addr) in &failover.gateways {
        let (host, port) = host_port(addr);
        assert_eq!(
            (host.to_owned(), port),
            mesh_ports[region],
            "router.toml: failover.gateways.{region}"
        );
    }
    assert!(
        failover
            .tls
            .cert
            .starts_with(Path::new(CONTAINER_DIR).join("pki")),
        "{:?}",
        failover.tls
    );
    assert!(compose.contains(&format!("./router.toml:{CONTAINER_DIR}/router.toml:ro")));
    assert!(compose.contains(&format!("\"127.0.0.1:{0}:{0}\"", router.listen.port())));
}

/// Every public port serves TLS and requires tokens, and every file that
/// protection rests on is mounted where the config looks for it; the
/// router's token reaches the router alone, and the signing key no one.
#[test]
fn every_public_port_serves_tls_and_requires_tokens_from_a_mounted_jwks() {
    let configs = load_all();
    let compose = read("compose.yaml");
    for (name, gateway) in &configs.gateways {
        let service = format!("gateway-{}", gateway.region);
        // Not loopback, so the loader itself refuses it without [auth].
        assert!(
            !gateway.listen.ip().is_loopback(),
            "{name}: listens for the other containers"
        );
        let auth = gateway
            .auth
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: has [auth]"));
        let tls = gateway
            .tls
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: has [tls] on the public port"));
        let file = auth
            .jwks
            .as_deref()
            .unwrap_or_else(|| panic!("{name}: [auth] names a JWKS file"));
        let jwks = mounted_from(&compose, &service, file)
            .unwrap_or_else(|| panic!("{service} mounts {:?}", auth.jwks));
        assert_eq!(
            jwks,
            Path::new("auth/jwks.json"),
            "{name}: the JWKS copy dev-certs.sh writes"
        );
        assert!(
            compose_volumes(&compose, &service)
                .contains(&("./auth".to_owned(), format!("{CONTAINER_DIR}/auth"))),
            "{service}: the JWKS directory is mounted whole (a file mount never sees a rotation)"
        );
        for file in [&tls.cert, &tls.key] {
            let source = mounted_from(&compose, &service, file)
                .unwrap_or_else(|| panic!("{service} mounts {file:?}"));
            assert!(
                source.starts_with("pki"),
                "{name}: {file:?} comes from {source:?}"
            );
        }
        assert!(
            tls.cert
                .ends_with(format!("public-gateway-{}.pem", gateway.region)),
            "{name}: the public certificate that names {service}, not the mesh identity: {:?}",
            tls.cert
        );
        assert!(mounted_from(&compose, &service, Path::new("/etc/meridian/router.jwt")).is_none());
    }

    let router = &configs.router;
    assert!(!router.listen.ip().is_loopback());
    let auth = router.auth.as_ref().expect("router.toml: [auth]");
    let tls = router
        .tls
        .as_ref()
        .expect("router.toml: [tls] cert and key");
    let file = auth
        .jwks
        .as_deref()
        .expect("router.toml: [auth] names a JWKS file");
    assert_eq!(
        mounted_from(&compose, "router", file).as_deref(),
        Some(Path::new("auth/jwks.json"))
    );
    for file in [&tls.cert, &tls.key] {
        assert!(
            mounted_from(&compose, "router", file).is_some_and(|s| s.starts_with("pki")),
            "router mounts {file:?}"
        );
    }
    for (region, url) in &router.gateways {
        assert!(
            url.starts_with("https://"),
            "router.toml: gateways.{region} = {url:?} is TLS"
        );
    }
    let gateway_ca = router
        .gateway_ca
        .as_ref()
        .expect("router.toml: tls.gateway_ca for https gateways");
    assert_eq!(
        mounted_from(&compose, "router", gateway_ca).as_deref(),
        Some(Path::new("pki/ca.pem"))
    );
    let token = router
        .gateway_token_file
        .as_ref()
        .expect("router.toml: auth.gateway_token_file");
    assert_eq!(
        mounted_from(&compose, "router", token).as_deref(),
        Some(Path::new("tokens/router.jwt"))
    );

    for line in compose.lines() {
        assert!(
            !line.contains("./signing"),
            "the signing key is never mounted: {line}"
        );
        assert!(
            !line.contains("./tokens:"),
            "only the router's own token is mounted, never every token: {line}"
        );
    }
}

#[test]
fn compose_wires_otlp_etcd_jaeger_and_only_files_that_exist() {
    let compose = read("compose.yaml");
    let services = compose_services(&compose);
    for service in [
        "router",
        "etcd-1",
        "etcd-2",
        "etcd-3",
        "otel-collector",
        "jaeger",
    ] {
        assert!(
            services.contains(service),
            "compose.yaml has {service}: {services:?}"
        );
    }
    assert!(
        compose.contains("MERIDIAN_OTLP_ENDPOINT: http://otel-collector:4317"),
        "services export to the collector"
    );
    let collector = read("otel-collector.yaml");
    assert!(
        collector.contains("endpoint: jaeger:4317"),
        "the collector forwards spans to Jaeger"
    );
    assert!(
        collector.contains("exporters: [otlp/jaeger]"),
        "the traces pipeline ends at Jaeger"
    );
    assert!(
        compose.contains("\"127.0.0.1:16686:16686\""),
        "the Jaeger UI is published"
    );
    // Every file bind-mounted from deploy/ exists, but what dev-certs.sh
    // makes (and .gitignore keeps out of the repository).
    let ignored = std::fs::read_to_string(deploy_dir().join("../.gitignore")).unwrap();
    for line in compose.lines() {
        let line = line.trim().trim_start_matches("- ");
        if let Some(rest) = line.strip_prefix("./") {
            let source = rest.split(':').next().unwrap();
            let made = ["pki", "auth", "tokens"]
                .iter()
                .find(|dir| Path::new(source).starts_with(dir));
            if let Some(dir) = made {
                assert!(
                    ignored.lines().any(|l| l == format!("/deploy/{dir}")),
                    ".gitignore keeps deploy/{dir} out"
                );
                continue;
            }
            assert!(
                deploy_dir().join(source).exists(),
                "compose.yaml mounts deploy/{source}, which is missing"
            );
        }
    }
    assert!(
        compose.contains("./pki:/etc/meridian/pki:ro"),
        "the gateways and router get the development PKI"
    );
}

#[test]
fn the_image_is_multi_stage_non_root_and_the_cert_script_uses_meridian_certs_dev() {
    let dockerfile = read("Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "multi-stage: {stages} FROM lines");
    let last_from = dockerfile
        .lines()
        .rfind(|l| l.starts_with("FROM "))
        .unwrap();
    assert!(
        last_from.contains("distroless"),
        "the runtime image has no shell: {last_from}"
    );
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(
        !user.contains("root") && !user.trim().ends_with(" 0") && !user.contains(" 0:"),
        "non-root: {user}"
    );
    let entrypoint = dockerfile
        .lines()
        .find(|l| l.starts_with("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    assert!(
        entrypoint.contains("[\""),
        "exec form, no shell: {entrypoint}"
    );
    assert!(
        read("Dockerfile.dockerignore")
            .lines()
            .any(|l| l.trim() == "target"),
        "target/ stays out of the context"
    );

    let script_path = deploy_dir().join("dev-certs.sh");
    let script = read("dev-certs.sh");
    assert!(script.starts_with("#!/bin/sh"), "a POSIX shell script");
    assert!(
        script.contains("certs dev --out"),
        "it runs `meridian certs dev`"
    );
    assert!(
        script.contains("certs server --pki"),
        "it makes the public ports' certificates"
    );
    assert!(
        script.contains("token dev --out") && script.contains("token mint"),
        "it makes the JWKS and tokens"
    );
    let dockerignore = read("Dockerfile.dockerignore");
    for dir in [
        "deploy/pki",
        "deploy/signing",
        "deploy/auth",
        "deploy/tokens",
    ] {
        assert!(
            dockerignore.lines().any(|l| l.trim() == dir),
            "{dir} stays out of the image's build context"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&script_path)
            .unwrap()
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "{} is executable", script_path.display());
    }
}

/// The script does what it says with this build's `meridian`: every file
/// the gateway and router configs name appears where compose mounts it
/// from; the public certificates name the compose services (a real TLS
/// handshake, checked by `meridian health` as a probe would); the tokens
/// verify against the JWKS; and the signing key stays private.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_certs_script_makes_the_files_the_configs_name() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new("sh")
        .arg(deploy_dir().join("dev-certs.sh"))
        .env("MERIDIAN", env!("CARGO_BIN_EXE_meridian"))
        .env("MERIDIAN_DEV_DIR", dir.path())
        .env_remove("MERIDIAN_PKI_DIR")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "dev-certs.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let configs = load_all();
    let compose = read("compose.yaml");
    for (service, file) in named_files(&configs) {
        let source = mounted_from(&compose, &service, &file)
            .unwrap_or_else(|| panic!("{service} mounts {}", file.display()));
        let made = dir.path().join(&source);
        assert!(
            made.is_file(),
            "dev-certs.sh made {} ({service} reads it as {})",
            source.display(),
            file.display()
        );
        // uid 65532 in the containers must read what it is given.
        let mode = std::fs::metadata(&made).unwrap().permissions().mode();
        assert!(
            mode & 0o004 != 0,
            "{} is readable by the containers' user: {mode:o}",
            source.display()
        );
    }
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        mode("signing/signing-key.json"),
        0o600,
        "the signing key stays private"
    );
    assert_eq!(mode("pki/ca-key.pem"), 0o600, "the CA key stays private");
    assert_eq!(
        mode("tokens/admin.jwt"),
        0o600,
        "only the router's token is readable by the containers"
    );

    // The tokens verify against the JWKS the services read, with the roles
    // they are named after.
    let jwks =
        Arc::new(meridian_auth::JwksSource::load(dir.path().join("auth/jwks.json")).unwrap());
    let clock: Arc<dyn meridian_core::Clock> = Arc::new(meridian_gateway::SystemClock);
    let verifier =
        meridian_auth::Verifier::new(jwks, meridian_auth::VerifierSettings::default(), clock);
    for (file, role) in [
        ("router", "sre"),
        ("admin", "admin"),
        ("agent-eu-west", "agent"),
    ] {
        let token = std::fs::read_to_string(dir.path().join(format!("tokens/{file}.jwt"))).unwrap();
        let principal = verifier
            .verify(token.trim())
            .unwrap_or_else(|e| panic!("tokens/{file}.jwt: {e}"));
        assert_eq!(principal.role.to_string(), role, "tokens/{file}.jwt");
    }

    // Each public certificate, served for real: valid for the compose name
    // the router dials and for localhost, not for another service's name.
    let pki = dir.path().join("pki");
    for (name, good, wrong) in [
        (
            "public-gateway-us-east",
            "gateway-us-east",
            "gateway-eu-west",
        ),
        ("public-gateway-apac-south", "gateway-apac-south", "router"),
        ("public-router", "router", "gateway-us-east"),
    ] {
        let cert = std::fs::read(pki.join(format!("{name}.pem"))).unwrap();
        let key = std::fs::read(pki.join(format!("{name}-key.pem"))).unwrap();
        let addr = serve_health(tonic::transport::Identity::from_pem(cert, key)).await;
        let probe = |server_name: &str| {
            std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
                .args([
                    "health",
                    "--target",
                    &format!("https://{addr}"),
                    "--tls-server-name",
                    server_name,
                    "--ca",
                ])
                .arg(pki.join("ca.pem"))
                .env_remove("MERIDIAN_OTLP_ENDPOINT")
                .output()
                .unwrap()
        };
        for ok in [good, "localhost"] {
            let output = probe(ok);
            assert!(
                output.status.success(),
                "{name} is valid for {ok}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&output.stdout).trim(),
                "(process) SERVING"
            );
        }
        let output = probe(wrong);
        assert!(
            !output.status.success(),
            "{name} must not be valid for {wrong}"
        );
    }
}

/// A bare grpc.health.v1 server over TLS with `identity`, on loopback.
async fn serve_health(identity: tonic::transport::Identity) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let server = tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
        .unwrap()
        .add_service(health)
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);
    addr
}
