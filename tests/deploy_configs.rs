//! The example deployment in `deploy/` cannot rot: every config there loads
//! with the loader of the service it is for, the gateways, the router, the
//! rules and `compose.yaml` agree with each other, and the image and the
//! certificate script keep their promises (non-root, no shell, `meridian
//! certs dev`). No containers run here: there may be no Docker and no
//! network.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
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
            let config = GatewayConfig::parse(&label, &text, |_| None).unwrap_or_else(|e| panic!("{e}"));
            gateways.push((name, config));
        } else if name.starts_with("router") {
            routers.push(RouterConfig::parse(&label, &text, |_| None).unwrap_or_else(|e| panic!("{e}")));
        } else if name.starts_with("rules") {
            rules.push(Rules::parse(&label, &text).unwrap_or_else(|e| panic!("{e}")));
        } else {
            panic!("deploy/{name}: which service reads it? Name it gateway*, router* or rules*, or teach this test");
        }
    }
    assert_eq!(routers.len(), 1, "one router config");
    assert_eq!(rules.len(), 1, "one rules file");
    Configs { gateways, router: routers.remove(0), rules: rules.remove(0) }
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

fn host_port(addr: &str) -> (&str, u16) {
    let addr = addr.strip_prefix("http://").unwrap_or(addr);
    let (host, port) = addr.rsplit_once(':').unwrap_or_else(|| panic!("{addr:?} has no port"));
    (host, port.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}")))
}

#[test]
fn every_deploy_config_loads_and_they_agree_with_each_other_and_compose() {
    let configs = load_all();
    let compose = read("compose.yaml");
    let services = compose_services(&compose);
    let rule_regions: BTreeMap<RegionId, u16> = configs.rules.regions().iter().map(|r| (r.id.clone(), r.index)).collect();
    assert_eq!(configs.gateways.len(), rule_regions.len(), "one gateway config per region of the rules");

    // Each region's gateway: where its peers find it, by region.
    let mut mesh_ports = BTreeMap::new();
    let mut public_ports = BTreeMap::new();
    for (name, gateway) in &configs.gateways {
        let region = gateway.region.clone();
        assert_eq!(name, &format!("gateway.{region}.toml"), "a gateway config is named after its region");
        // The gateway refuses to start when its region order disagrees
        // with the rules' epoch indexes.
        for (id, index) in &rule_regions {
            assert_eq!(gateway.region_index(id), Some(*index), "{name}: regions order vs the rules' index of {id}");
        }
        let rules = gateway.rules.as_ref().unwrap_or_else(|| panic!("{name}: has [rules]"));
        assert_eq!(rules.file, Path::new(CONTAINER_DIR).join("rules.toml"), "{name}");
        let mesh = gateway.mesh.as_ref().unwrap_or_else(|| panic!("{name}: has [mesh]"));
        let peers: BTreeSet<&RegionId> = mesh.peers.keys().collect();
        let others: BTreeSet<&RegionId> = rule_regions.keys().filter(|r| **r != region).collect();
        assert_eq!(peers, others, "{name}: a peer for every other region");
        assert_eq!(mesh.tls.ca, Path::new(CONTAINER_DIR).join("pki/ca.pem"), "{name}");
        assert!(gateway.coordinator.is_some(), "{name}: leases in etcd");
        assert_eq!(gateway.telemetry.metrics_listen.map(|a| a.port()), Some(9464), "{name}: /metrics");
        let service = format!("gateway-{region}");
        assert!(services.contains(&service), "compose.yaml has a {service} service: {services:?}");
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
            assert_eq!((host.to_owned(), port), mesh_ports[peer], "{name}: mesh.peers.{peer}");
        }
    }

    // The router reaches every gateway on its public port, and fails
    // regions over through their mesh ports.
    let router = &configs.router;
    assert_eq!(router.rules_path, Path::new("rules.toml"), "relative to router.toml, beside it in the container");
    assert_eq!(router.metrics_listen.map(|a| a.port()), Some(9464), "router.toml: /metrics");
    assert_eq!(router.gateways.keys().collect::<Vec<_>>(), rule_regions.keys().collect::<Vec<_>>());
    for (region, url) in &router.gateways {
        let (host, port) = host_port(url);
        assert_eq!((host.to_owned(), port), public_ports[region], "router.toml: gateways.{region}");
    }
    let failover = router.failover.as_ref().expect("router.toml: [failover]");
    for (region, addr) in &failover.gateways {
        let (host, port) = host_port(addr);
        assert_eq!((host.to_owned(), port), mesh_ports[region], "router.toml: failover.gateways.{region}");
    }
    assert!(failover.tls.cert.starts_with(Path::new(CONTAINER_DIR).join("pki")), "{:?}", failover.tls);
    assert!(compose.contains(&format!("./router.toml:{CONTAINER_DIR}/router.toml:ro")));
    assert!(compose.contains(&format!("\"127.0.0.1:{0}:{0}\"", router.listen.port())));
}

#[test]
fn compose_wires_otlp_etcd_jaeger_and_only_files_that_exist() {
    let compose = read("compose.yaml");
    let services = compose_services(&compose);
    for service in ["router", "etcd-1", "etcd-2", "etcd-3", "otel-collector", "jaeger"] {
        assert!(services.contains(service), "compose.yaml has {service}: {services:?}");
    }
    assert!(compose.contains("MERIDIAN_OTLP_ENDPOINT: http://otel-collector:4317"), "services export to the collector");
    let collector = read("otel-collector.yaml");
    assert!(collector.contains("endpoint: jaeger:4317"), "the collector forwards spans to Jaeger");
    assert!(collector.contains("exporters: [otlp/jaeger]"), "the traces pipeline ends at Jaeger");
    assert!(compose.contains("\"127.0.0.1:16686:16686\""), "the Jaeger UI is published");
    // Every file bind-mounted from deploy/ exists, but the PKI, which
    // dev-certs.sh makes.
    for line in compose.lines() {
        let line = line.trim().trim_start_matches("- ");
        if let Some(rest) = line.strip_prefix("./") {
            let source = rest.split(':').next().unwrap();
            if source == "pki" {
                continue;
            }
            assert!(deploy_dir().join(source).exists(), "compose.yaml mounts deploy/{source}, which is missing");
        }
    }
    assert!(compose.contains("./pki:/etc/meridian/pki:ro"), "the gateways and router get the development PKI");
}

#[test]
fn the_image_is_multi_stage_non_root_and_the_cert_script_uses_meridian_certs_dev() {
    let dockerfile = read("Dockerfile");
    let stages = dockerfile.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "multi-stage: {stages} FROM lines");
    let last_from = dockerfile.lines().rfind(|l| l.starts_with("FROM ")).unwrap();
    assert!(last_from.contains("distroless"), "the runtime image has no shell: {last_from}");
    let user = dockerfile.lines().rfind(|l| l.starts_with("USER ")).expect("a USER line");
    assert!(!user.contains("root") && !user.trim().ends_with(" 0") && !user.contains(" 0:"), "non-root: {user}");
    let entrypoint = dockerfile.lines().find(|l| l.starts_with("ENTRYPOINT ")).expect("an ENTRYPOINT");
    assert!(entrypoint.contains("[\""), "exec form, no shell: {entrypoint}");
    assert!(read("Dockerfile.dockerignore").lines().any(|l| l.trim() == "target"), "target/ stays out of the context");

    let script_path = deploy_dir().join("dev-certs.sh");
    let script = read("dev-certs.sh");
    assert!(script.starts_with("#!/bin/sh"), "a POSIX shell script");
    assert!(script.contains("certs dev --out"), "it runs `meridian certs dev`");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&script_path).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{} is executable", script_path.display());
    }
}

/// The script does what it says with this build's `meridian`: the files
/// the gateway and router configs name appear in the directory it writes.
#[cfg(unix)]
#[test]
fn dev_certs_script_makes_the_files_the_configs_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let output = std::process::Command::new("sh")
        .arg(deploy_dir().join("dev-certs.sh"))
        .env("MERIDIAN", env!("CARGO_BIN_EXE_meridian"))
        .env("MERIDIAN_PKI_DIR", &pki)
        .output()
        .unwrap();
    assert!(output.status.success(), "dev-certs.sh failed: {}", String::from_utf8_lossy(&output.stderr));
    let configs = load_all();
    let in_container = Path::new(CONTAINER_DIR).join("pki");
    let mut named: Vec<PathBuf> = Vec::new();
    for (_, gateway) in &configs.gateways {
        let tls = &gateway.mesh.as_ref().unwrap().tls;
        named.extend([tls.cert.clone(), tls.key.clone(), tls.ca.clone()]);
    }
    let tls = &configs.router.failover.as_ref().unwrap().tls;
    named.extend([tls.cert.clone(), tls.key.clone(), tls.ca.clone()]);
    for file in named {
        let relative = file.strip_prefix(&in_container).unwrap_or_else(|_| panic!("{} is under the PKI mount", file.display()));
        assert!(pki.join(relative).is_file(), "dev-certs.sh made {}", relative.display());
    }
}
