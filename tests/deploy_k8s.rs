//! The Kubernetes deployment in `k8s/` cannot rot: every overlay renders
//! with `kubectl kustomize`, validates offline against the Kubernetes
//! schemas, and what it deploys is what Meridian's own loaders accept and
//! what the other manifests and regions expect.
//!
//! - Rendering: `kubectl kustomize k8s/overlays/<region>` (Debian's
//!   `kubectl`).
//! - Schemas: `tests/k8s/validate.py --kubernetes 1.32.0` validates every
//!   built-in kind strictly (unknown fields are errors) against the schemas
//!   that PyPI's `kubernetes-validate` bundles, with no network. cert-manager's
//!   `Certificate` is a CRD those schemas lack: it is validated against
//!   `tests/k8s/certificate-cert-manager-v1.schema.json`, a hand-written
//!   subset of cert-manager's v1 CRD covering exactly the fields `k8s/` uses
//!   (types, enums, required fields, no unknown fields), and its meaning (one
//!   SPIFFE URI SAN per certificate, the region and service the pods that
//!   mount its Secret are, one trust domain across regions, both TLS usages)
//!   is checked here in Rust. Any other kind without a schema fails.
//! - Meaning: the rendered `gateway.toml` and `router.toml` load with
//!   `GatewayConfig::parse` and `RouterConfig::parse` with the Deployment's
//!   environment applied (the database URL Secret reference included), the
//!   rules with `Rules::parse`; and the ports, probes, mounts, certificates,
//!   NetworkPolicies, disruption budgets and autoscaler agree with them,
//!   within each region and across regions.
//! - Security: every public port serves TLS from a mounted cert-manager
//!   Secret and requires bearer tokens from the mounted `meridian-jwks`
//!   ConfigMap; the router dials every gateway over https, checks it with a
//!   mounted CA and carries a token from a mounted Secret; the probes speak
//!   TLS (`meridian health`).
//! - Reloading: a mounted ConfigMap or Secret changes by the kubelet swapping
//!   a `..data` symlink; the rules watcher and the TLS reload both notice.
//!
//! Without `kubectl`, or python3 with PyYAML (and `kubernetes-validate` for
//! the schemas), a test says so loudly and returns; under
//! `MERIDIAN_REQUIRE_ALL=1` (`.ci/run`, which installs them) it fails.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use meridian_core::RegionId;
use meridian_gateway::{GatewayConfig, failover::CoordinatorBackend};
use meridian_router::{RouterConfig, failover::CoordinatorChoice};
use meridian_rules::Rules;
use meridian_tls::{PeerIdentity, Service};
use serde_json::Value;

const REGIONS: [&str; 3] = ["us-east", "eu-west", "apac-south"];
/// The Kubernetes version the manifests are validated against (exec probes'
/// timeouts, the preStop sleep action and `unhealthyPodEvictionPolicy` are
/// all in it).
const KUBERNETES_VERSION: &str = "1.32.0";
const NAMESPACE: &str = "meridian";
const REGION_LABEL: &str = "meridian.io/region";
const NAME_LABEL: &str = "app.kubernetes.io/name";
const GATEWAY_POD: &str = "meridian-gateway";
const ROUTER_POD: &str = "meridian-router";
const HOSTNAME_ANNOTATION: &str = "external-dns.alpha.kubernetes.io/hostname";
/// What the Secret reference stands for while the configs are loaded.
const DATABASE_URL_STAND_IN: &str = "postgres://meridian:stand-in@db.internal:5432/meridian";
/// Variables the `meridian` binary reads besides the config overrides
/// (`meridian-telemetry`'s flags).
const TELEMETRY_ENV: [&str; 5] = [
    "MERIDIAN_OTLP_ENDPOINT",
    "MERIDIAN_TRACE_SAMPLE",
    "MERIDIAN_LOG_FORMAT",
    "MERIDIAN_METRICS_LISTEN",
    "MERIDIAN_LOG_JSON",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn require_all() -> bool {
    std::env::var("MERIDIAN_REQUIRE_ALL").as_deref() == Ok("1")
}

/// Says loudly that a test cannot run here; fails under
/// `MERIDIAN_REQUIRE_ALL=1`.
fn skip(test: &str, missing: &str) {
    assert!(!require_all(), "MERIDIAN_REQUIRE_ALL=1 but {missing}");
    eprintln!("\n*** {test} SKIPPED: {missing} ***\n");
}

/// `kubectl kustomize k8s/overlays/<region>`, or `None` without kubectl.
fn render(test: &str, region: &str) -> Option<String> {
    let dir = root().join("k8s/overlays").join(region);
    let output = match Command::new("kubectl").arg("kustomize").arg(&dir).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            skip(test, "kubectl is not installed (apt-get install kubectl)");
            return None;
        }
        Err(e) => panic!("cannot run kubectl: {e}"),
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).unwrap())
}

fn python_has(modules: &str) -> bool {
    let probe = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output();
    matches!(probe, Ok(out) if out.status.success())
}

/// Runs `tests/k8s/validate.py ARGS` with `input` on stdin.
fn validate_py(args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new("python3")
        .arg(root().join("tests/k8s/validate.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The rendered documents as JSON, or `None` without the tools.
fn rendered(test: &str, region: &str) -> Option<Vec<Value>> {
    let yaml = render(test, region)?;
    if !python_has("yaml") {
        skip(
            test,
            "python3 with PyYAML is not installed (pip install kubernetes-validate brings it)",
        );
        return None;
    }
    let output = validate_py(&["--json"], &yaml);
    assert!(
        output.status.success(),
        "validate.py --json: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let Value::Array(docs) = serde_json::from_slice(&output.stdout).unwrap() else {
        panic!("not a list")
    };
    Some(docs)
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

fn u64_at(value: &Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {value}"))
}

fn array_at<'a>(value: &'a Value, pointer: &str) -> &'a Vec<Value> {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no list at {pointer} in {value}"))
}

fn host_port(addr: &str) -> (String, u16) {
    let addr = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let (host, port) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{addr:?} has no port"));
    (
        host.to_owned(),
        port.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}")),
    )
}

/// One region's rendered manifests.
struct Manifests {
    region: RegionId,
    docs: Vec<Value>,
}

/// One rendered overlay, with its configs loaded by Meridian's loaders.
struct Overlay {
    manifests: Manifests,
    gateway: GatewayConfig,
    router: RouterConfig,
    rules_text: String,
    rules: Rules,
}

impl std::ops::Deref for Overlay {
    type Target = Manifests;
    fn deref(&self) -> &Manifests {
        &self.manifests
    }
}

impl Overlay {
    fn load(test: &str, region: &str) -> Option<Overlay> {
        let docs = rendered(test, region)?;
        let manifests = Manifests {
            region: RegionId::new(region).unwrap(),
            docs,
        };
        let region = &manifests.region;
        let config_map = manifests.config_map("meridian-config");
        let gateway_text = str_at(config_map, "/data/gateway.toml");
        let router_text = str_at(config_map, "/data/router.toml");
        // Loaded as the pods load them: with their environment.
        let gateway_env = manifests.container_env("gateway");
        let router_env = manifests.container_env("router");
        let label = |file: &str| format!("k8s/overlays/{region}: meridian-config {file}");
        let gateway = GatewayConfig::parse(&label("gateway.toml"), gateway_text, |name| {
            gateway_env.get(name).cloned()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let router = RouterConfig::parse(&label("router.toml"), router_text, |name| {
            router_env.get(name).cloned()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let rules_text =
            str_at(manifests.config_map("meridian-rules"), "/data/rules.toml").to_owned();
        let rules = Rules::parse(
            &format!("k8s/overlays/{region}: meridian-rules rules.toml"),
            &rules_text,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Some(Overlay {
            manifests,
            gateway,
            router,
            rules_text,
            rules,
        })
    }
}

impl Manifests {
    /// The one document of `kind` named `name`.
    fn get(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<&Value> = self
            .docs
            .iter()
            .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .collect();
        assert_eq!(found.len(), 1, "{}: one {kind} {name}", self.region);
        found[0]
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    /// A generated ConfigMap: `name` itself, or `name-<hash>`.
    fn config_map(&self, name: &str) -> &Value {
        let found: Vec<&Value> = self
            .all("ConfigMap")
            .into_iter()
            .filter(|d| {
                let n = str_at(d, "/metadata/name");
                n == name
                    || n.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('-') && !rest[1..].contains('-'))
            })
            .collect();
        assert_eq!(found.len(), 1, "{}: one ConfigMap {name}", self.region);
        found[0]
    }

    fn pod_spec(&self, deployment: &str) -> &Value {
        &self.get("Deployment", deployment)["spec"]["template"]["spec"]
    }

    fn container(&self, deployment: &str) -> &Value {
        let containers = array_at(self.pod_spec(deployment), "/containers");
        assert_eq!(
            containers.len(),
            1,
            "{}: {deployment} runs one container",
            self.region
        );
        &containers[0]
    }

    /// The container's environment, a Secret reference standing for
    /// the database URL (and checked to be the region's Secret).
    fn container_env(&self, deployment: &str) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for var in self.container(deployment)["env"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = str_at(var, "/name").to_owned();
            if let Some(value) = var["value"].as_str() {
                env.insert(name, value.to_owned());
            } else if let Some(secret) = var.pointer("/valueFrom/secretKeyRef") {
                assert_eq!(
                    name, "MERIDIAN_DATABASE_URL",
                    "{}: {deployment}: only the database URL is a secret",
                    self.region
                );
                assert_eq!(
                    str_at(secret, "/name"),
                    "meridian-database",
                    "{}: {deployment}: the Secret",
                    self.region
                );
                assert_eq!(
                    str_at(secret, "/key"),
                    "DATABASE_URL",
                    "{}: {deployment}: the Secret's key",
                    self.region
                );
                assert!(
                    secret.get("optional").is_none_or(|o| o == false),
                    "a missing Secret must stop the pod"
                );
                env.insert(name, DATABASE_URL_STAND_IN.to_owned());
            } else {
                panic!(
                    "{}: {deployment}: env {name} has neither a value nor a Secret reference",
                    self.region
                );
            }
        }
        env
    }

    /// The directory where the volume of `source_kind` named `source` (a
    /// ConfigMap name prefix or a Secret name) is mounted, whole.
    fn mount_of(&self, deployment: &str, source_kind: &str, source: &str) -> PathBuf {
        let spec = self.pod_spec(deployment);
        let volume = array_at(spec, "/volumes")
            .iter()
            .find(|v| match source_kind {
                "configMap" => v["configMap"]["name"]
                    .as_str()
                    .is_some_and(|n| n == source || n.starts_with(&format!("{source}-"))),
                "secret" => v["secret"]["secretName"] == source,
                _ => unreachable!(),
            })
            .unwrap_or_else(|| {
                panic!(
                    "{}: {deployment} has a {source_kind} volume of {source}",
                    self.region
                )
            });
        let volume_name = str_at(volume, "/name");
        let mounts: Vec<&Value> = array_at(self.container(deployment), "/volumeMounts")
            .iter()
            .filter(|m| m["name"] == volume_name)
            .collect();
        assert_eq!(
            mounts.len(),
            1,
            "{}: {deployment} mounts {volume_name} once",
            self.region
        );
        assert!(
            mounts[0].get("subPath").is_none(),
            "{}: {deployment}: a subPath mount never sees updates",
            self.region
        );
        assert_eq!(
            mounts[0]["readOnly"], true,
            "{}: {deployment}: {volume_name} is read-only",
            self.region
        );
        PathBuf::from(str_at(mounts[0], "/mountPath"))
    }

    fn container_port(&self, deployment: &str, name: &str) -> u16 {
        let port = array_at(self.container(deployment), "/ports")
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{}: {deployment} has a port named {name}", self.region));
        u16::try_from(u64_at(port, "/containerPort")).unwrap()
    }

    /// The Service's one port, as the number the pods listen on.
    fn service_port(&self, service: &str, pod: &str, deployment: &str) -> (u16, u16) {
        let svc = self.get("Service", service);
        assert_eq!(
            svc["spec"]["selector"][NAME_LABEL], pod,
            "{}: Service {service} selects {pod}",
            self.region
        );
        let ports = array_at(svc, "/spec/ports");
        assert_eq!(
            ports.len(),
            1,
            "{}: Service {service} has one port",
            self.region
        );
        let target = match &ports[0]["targetPort"] {
            Value::String(name) => self.container_port(deployment, name),
            Value::Number(n) => u16::try_from(n.as_u64().unwrap()).unwrap(),
            other => panic!("{}: Service {service}: targetPort {other}", self.region),
        };
        (u16::try_from(u64_at(&ports[0], "/port")).unwrap(), target)
    }

    fn hostname(&self, service: &str) -> &str {
        str_at(
            self.get("Service", service),
            &format!(
                "/metadata/annotations/{}",
                HOSTNAME_ANNOTATION.replace('/', "~1")
            ),
        )
    }

    /// The Certificate whose Secret `deployment` mounts at `dir`, and the
    /// SPIFFE id in it.
    fn identity(&self, certificate: &str) -> PeerIdentity {
        let cert = self.get("Certificate", certificate);
        let uris = array_at(cert, "/spec/uris");
        assert_eq!(
            uris.len(),
            1,
            "{}: Certificate {certificate}: exactly one URI SAN, the SPIFFE id",
            self.region
        );
        let usages: BTreeSet<&str> = array_at(cert, "/spec/usages")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            usages.contains("server auth") && usages.contains("client auth"),
            "{}: Certificate {certificate}: mesh services both serve and dial: {usages:?}",
            self.region
        );
        uris[0]
            .as_str()
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("{}: Certificate {certificate}: {e}", self.region))
    }

    /// A public port's Certificate: its DNS names. Server auth only and no
    /// URI, so it can never pass for a mesh identity.
    fn public_names(&self, certificate: &str) -> BTreeSet<String> {
        let cert = self.get("Certificate", certificate);
        let r = self.region.as_str();
        assert!(
            cert["spec"].get("uris").is_none(),
            "{r}: Certificate {certificate}: no SPIFFE URI on a public certificate"
        );
        let usages: BTreeSet<&str> = array_at(cert, "/spec/usages")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            usages.contains("server auth") && !usages.contains("client auth"),
            "{r}: Certificate {certificate}: {usages:?}"
        );
        array_at(cert, "/spec/dnsNames")
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect()
    }
}

#[test]
fn every_overlay_renders_and_validates_offline_against_the_kubernetes_schemas() {
    const TEST: &str = "k8s schema validation";
    for region in REGIONS {
        let Some(yaml) = render(TEST, region) else {
            return;
        };
        if !python_has("kubernetes_validate, jsonschema, yaml") {
            skip(
                TEST,
                "python3 with kubernetes-validate is not installed (pip install kubernetes-validate)",
            );
            return;
        }
        let output = validate_py(&["--kubernetes", KUBERNETES_VERSION], &yaml);
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "k8s/overlays/{region} does not validate against Kubernetes {KUBERNETES_VERSION}:\n{report}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let checked = report.lines().filter(|l| l.starts_with("ok ")).count();
        let documents = yaml.split("\n---\n").count();
        assert_eq!(
            checked, documents,
            "every document of {region} was checked:\n{report}"
        );
        for kind in [
            "Deployment",
            "Service",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "Certificate",
        ] {
            assert!(
                report.contains(&format!("ok {kind}/")),
                "{region}: a {kind} was validated:\n{report}"
            );
        }
        assert!(
            report.contains("ok Certificate/gateway-mesh (cert-manager.io/v1 schema subset)"),
            "{report}"
        );
    }
}

/// A wrong manifest really fails: the validator is not a rubber stamp.
/// `kubectl kustomize` of a kustomization made in a temporary directory
/// that adds `k8s/components/monitoring` to the region's overlay, as a user
/// does; `None` without kubectl.
fn render_with_monitoring(test: &str, region: &str) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    // kustomize takes only relative paths to other kustomizations.
    let up = "../".repeat(dir.path().components().count() - 1);
    let repo = root().strip_prefix("/").unwrap().display().to_string();
    let kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {up}{repo}/k8s/overlays/{region}\n\
         components:\n  - {up}{repo}/k8s/components/monitoring\n"
    );
    std::fs::write(dir.path().join("kustomization.yaml"), kustomization).unwrap();
    let output = match Command::new("kubectl")
        .arg("kustomize")
        .arg(dir.path())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            skip(test, "kubectl is not installed (apt-get install kubectl)");
            return None;
        }
        Err(e) => panic!("cannot run kubectl: {e}"),
    };
    assert!(
        output.status.success(),
        "{region} with the monitoring component: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).unwrap())
}

#[test]
fn the_optional_monitoring_component_validates_and_scrapes_every_pods_metrics_port() {
    const TEST: &str = "k8s monitoring component";
    for region in REGIONS {
        let Some(yaml) = render_with_monitoring(TEST, region) else {
            return;
        };
        if !python_has("kubernetes_validate, jsonschema, yaml") {
            skip(
                TEST,
                "python3 with kubernetes-validate is not installed (pip install kubernetes-validate)",
            );
            return;
        }
        // The PodMonitor is a CRD kubernetes-validate has no schema for: it
        // is checked against a hand-written subset of the operator's CRD
        // (tests/k8s/podmonitor-monitoring-coreos-v1.schema.json), strictly.
        let output = validate_py(&["--kubernetes", KUBERNETES_VERSION], &yaml);
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{region} with monitoring does not validate:\n{report}"
        );
        assert!(
            report.contains("ok PodMonitor/meridian (monitoring.coreos.com/v1 schema subset)"),
            "{report}"
        );
        // What it selects and scrapes is what the pods serve.
        let output = validate_py(&["--json"], &yaml);
        let Value::Array(docs) = serde_json::from_slice(&output.stdout).unwrap() else {
            panic!("not a list")
        };
        let monitors: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "PodMonitor").collect();
        assert_eq!(monitors.len(), 1, "{region}: one PodMonitor");
        let monitor = monitors[0];
        assert_eq!(str_at(monitor, "/metadata/namespace"), NAMESPACE);
        let selector = monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap();
        let endpoints = array_at(monitor, "/spec/podMetricsEndpoints");
        assert_eq!(endpoints.len(), 1);
        assert_eq!(str_at(&endpoints[0], "/path"), "/metrics");
        let port_name = str_at(&endpoints[0], "/port");
        let mut scraped = BTreeSet::new();
        for deployment in docs.iter().filter(|d| d["kind"] == "Deployment") {
            let labels = &deployment["spec"]["template"]["metadata"]["labels"];
            if selector.iter().all(|(k, v)| &labels[k] == v) {
                let name = str_at(deployment, "/metadata/name").to_owned();
                let ports = array_at(deployment, "/spec/template/spec/containers/0/ports");
                let port = ports.iter().find(|p| p["name"] == port_name);
                let port = port
                    .unwrap_or_else(|| panic!("{region}: {name} has no port named {port_name}"));
                assert_eq!(
                    port["containerPort"], 9464,
                    "{region}: {name}'s metrics port"
                );
                scraped.insert(name);
            }
        }
        assert_eq!(
            scraped,
            BTreeSet::from(["gateway".to_owned(), "router".to_owned()]),
            "{region}"
        );
    }
}

/// The image's binary is built without debug info (the exec probes start
/// it every few seconds): the Dockerfile builds the `dist` profile, which
/// has none.
#[test]
fn the_image_binary_has_no_debug_info() {
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("cargo build --profile dist"),
        "deploy/Dockerfile builds the dist profile"
    );
    assert!(
        dockerfile.contains("target/dist/meridian"),
        "and ships that binary"
    );
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let dist = cargo
        .split("[profile.dist]")
        .nth(1)
        .expect("Cargo.toml has [profile.dist]");
    let dist = dist.split("\n[").next().unwrap();
    for line in [
        "inherits = \"release\"",
        "debug = false",
        "strip = \"symbols\"",
    ] {
        assert!(
            dist.lines().any(|l| l.trim() == line),
            "[profile.dist] has {line}: {dist}"
        );
    }
}

#[test]
fn the_validator_refuses_unknown_fields_wrong_types_and_unknown_kinds() {
    const TEST: &str = "k8s validator self-check";
    let Some(yaml) = render(TEST, "us-east") else {
        return;
    };
    if !python_has("kubernetes_validate, jsonschema, yaml") {
        skip(
            TEST,
            "python3 with kubernetes-validate is not installed (pip install kubernetes-validate)",
        );
        return;
    }
    let broken = [
        ("minAvailable: 1", "minAvailabel: 1", "minAvailabel"),
        (
            "secretName: gateway-mesh-tls",
            "secretNam: gateway-mesh-tls",
            "secretNam",
        ),
        (
            "containerPort: 7101",
            "containerPort: grpc",
            "'grpc' is not of type 'integer'",
        ),
        (
            "kind: HorizontalPodAutoscaler",
            "kind: HorizontalPodAutoscalr",
            "no schema",
        ),
    ];
    for (from, to, expect) in broken {
        assert!(yaml.contains(from), "the rendered us-east has {from:?}");
        let output = validate_py(
            &["--kubernetes", KUBERNETES_VERSION],
            &yaml.replacen(from, to, 1),
        );
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success(), "{to:?} was accepted:\n{report}");
        assert!(
            report.contains(expect),
            "{to:?}: the report names {expect:?}:\n{report}"
        );
    }
}

#[test]
fn each_overlay_sets_its_region_everywhere_and_its_manifests_agree_with_its_configs() {
    const TEST: &str = "k8s overlays vs configs";
    for region in REGIONS {
        let Some(overlay) = Overlay::load(TEST, region) else {
            return;
        };
        check_overlay(&overlay);
    }
}

fn check_overlay(o: &Overlay) {
    let r = o.region.as_str();
    // The region, everywhere.
    for doc in &o.docs {
        let what = format!("{r}: {} {}", doc["kind"], doc["metadata"]["name"]);
        assert_eq!(
            doc["metadata"]["labels"][REGION_LABEL], r,
            "{what} is labelled with its region"
        );
        if doc["kind"] != "Namespace" {
            assert_eq!(doc["metadata"]["namespace"], NAMESPACE, "{what}");
        }
        if doc["kind"] == "Deployment" {
            assert_eq!(
                doc["spec"]["template"]["metadata"]["labels"][REGION_LABEL], r,
                "{what}: its pods too"
            );
        }
    }
    assert_eq!(o.gateway.region, o.region, "{r}: gateway.toml's region");
    assert_eq!(
        o.gateway.store.url, DATABASE_URL_STAND_IN,
        "{r}: MERIDIAN_DATABASE_URL overrides [database] url"
    );
    assert!(
        o.gateway.coordinator.is_some(),
        "{r}: the gateway leases its region in etcd"
    );
    for (name, gateway) in [("gateway", true), ("router", false)] {
        let known: BTreeSet<&str> = if gateway {
            meridian_gateway::config::ENV_OVERRIDES
                .iter()
                .map(|(v, _)| *v)
                .collect()
        } else {
            meridian_router::config::ENV_OVERRIDES
                .iter()
                .map(|(v, _)| *v)
                .collect()
        };
        for var in o
            .container_env(name)
            .keys()
            .filter(|v| v.starts_with("MERIDIAN_"))
        {
            assert!(
                known.contains(var.as_str()) || TELEMETRY_ENV.contains(&var.as_str()),
                "{r}: {name} sets {var}, which nothing reads"
            );
        }
    }
    // The rules: the same regions and order as the gateways'.
    for region in o.rules.regions() {
        assert_eq!(
            o.gateway.region_index(&region.id),
            Some(region.index),
            "{r}: regions order vs the rules' index of {}",
            region.id
        );
    }
    assert_eq!(
        o.gateway.regions.len(),
        o.rules.regions().len(),
        "{r}: every region of the rules"
    );

    // The gateway: replicas, args, mounts.
    let gateway = o.get("Deployment", "gateway");
    assert!(
        u64_at(gateway, "/spec/replicas") >= 2,
        "{r}: at least two gateway replicas"
    );
    assert_eq!(
        gateway["spec"]["selector"]["matchLabels"][NAME_LABEL],
        GATEWAY_POD
    );
    let config_dir = o.mount_of("gateway", "configMap", "meridian-config");
    assert_eq!(
        array_at(o.container("gateway"), "/args"),
        &vec![
            Value::from("gateway"),
            Value::from("--config"),
            Value::from(config_dir.join("gateway.toml").to_str().unwrap())
        ],
        "{r}: the gateway runs its config"
    );
    let rules_dir = o.mount_of("gateway", "configMap", "meridian-rules");
    assert_eq!(
        o.gateway.rules.as_ref().unwrap().file,
        rules_dir.join("rules.toml"),
        "{r}: gateway rules file"
    );
    let mesh = o
        .gateway
        .mesh
        .as_ref()
        .unwrap_or_else(|| panic!("{r}: the gateway has a [mesh]"));
    let mesh_secret = str_at(o.get("Certificate", "gateway-mesh"), "/spec/secretName");
    let mesh_tls_dir = o.mount_of("gateway", "secret", mesh_secret);
    assert_eq!(
        [&mesh.tls.cert, &mesh.tls.key, &mesh.tls.ca],
        [
            &mesh_tls_dir.join("tls.crt"),
            &mesh_tls_dir.join("tls.key"),
            &mesh_tls_dir.join("ca.crt")
        ],
        "{r}: the mesh uses the gateway-mesh Certificate's Secret"
    );
    let identity = o.identity("gateway-mesh");
    assert_eq!(
        (identity.region(), identity.service()),
        (&o.region, Service::Gateway),
        "{r}: {identity}"
    );

    // Ports: containers, Services, probes, configs.
    let public = o.gateway.listen.port();
    let mesh_port = mesh.listen.port();
    let gateway_metrics = o
        .gateway
        .telemetry
        .metrics_listen
        .unwrap_or_else(|| panic!("{r}: gateway /metrics"))
        .port();
    assert_eq!(o.container_port("gateway", "grpc"), public, "{r}");
    assert_eq!(o.container_port("gateway", "mesh"), mesh_port, "{r}");
    assert_eq!(
        o.container_port("gateway", "metrics"),
        gateway_metrics,
        "{r}"
    );
    assert_eq!(
        o.service_port("gateway", GATEWAY_POD, "gateway").1,
        public,
        "{r}: Service gateway"
    );
    assert_eq!(
        o.service_port("gateway-mesh", GATEWAY_POD, "gateway").1,
        mesh_port,
        "{r}: Service gateway-mesh"
    );
    let ticket_service = meridian_proto::v1::ticket_service_server::SERVICE_NAME;
    check_probes(o, "gateway", public, ticket_service);

    // The router.
    let router_deployment = o.get("Deployment", "router");
    assert!(
        router_deployment["spec"].get("replicas").is_none(),
        "{r}: the autoscaler owns the router's replicas"
    );
    assert_eq!(
        array_at(o.container("router"), "/args"),
        &vec![
            Value::from("router"),
            Value::from("--config"),
            Value::from(
                o.mount_of("router", "configMap", "meridian-config")
                    .join("router.toml")
                    .to_str()
                    .unwrap()
            )
        ],
        "{r}: the router runs its config"
    );
    assert_eq!(
        o.router.rules_path,
        o.mount_of("router", "configMap", "meridian-rules")
            .join("rules.toml"),
        "{r}: router rules"
    );
    let router_listen = o.router.listen.port();
    assert_eq!(o.container_port("router", "grpc"), router_listen, "{r}");
    let router_metrics = o
        .router
        .metrics_listen
        .unwrap_or_else(|| panic!("{r}: router /metrics"))
        .port();
    assert_eq!(o.container_port("router", "metrics"), router_metrics, "{r}");
    assert_eq!(
        o.service_port("router", ROUTER_POD, "router").1,
        router_listen,
        "{r}: Service router"
    );
    check_probes(
        o,
        "router",
        router_listen,
        meridian_proto::v1::router_service_server::SERVICE_NAME,
    );
    let failover = o
        .router
        .failover
        .as_ref()
        .unwrap_or_else(|| panic!("{r}: the router fails regions over"));
    let router_secret = str_at(o.get("Certificate", "router-mesh"), "/spec/secretName");
    let router_tls_dir = o.mount_of("router", "secret", router_secret);
    assert_eq!(
        [&failover.tls.cert, &failover.tls.key, &failover.tls.ca],
        [
            &router_tls_dir.join("tls.crt"),
            &router_tls_dir.join("tls.key"),
            &router_tls_dir.join("ca.crt")
        ],
        "{r}: failover uses the router-mesh Certificate's Secret"
    );
    let router_identity = o.identity("router-mesh");
    assert_eq!(
        (router_identity.region(), router_identity.service()),
        (&o.region, Service::Router),
        "{r}"
    );
    assert_eq!(
        router_identity.trust_domain(),
        identity.trust_domain(),
        "{r}: one trust domain"
    );
    // The router reaches its own region's gateway inside the cluster.
    let in_cluster =
        |service: &str, port: u16| (format!("{service}.{NAMESPACE}.svc.cluster.local"), port);
    let (service_public, _) = o.service_port("gateway", GATEWAY_POD, "gateway");
    let (service_mesh, _) = o.service_port("gateway-mesh", GATEWAY_POD, "gateway");
    assert_eq!(
        host_port(&o.router.gateways[&o.region]),
        in_cluster("gateway", service_public),
        "{r}: router gateways.{r}"
    );
    assert_eq!(
        host_port(&failover.gateways[&o.region]),
        in_cluster("gateway-mesh", service_mesh),
        "{r}: router failover.gateways.{r}"
    );
    let rule_regions: BTreeSet<&RegionId> = o.rules.regions().iter().map(|x| &x.id).collect();
    assert_eq!(
        o.router.gateways.keys().collect::<BTreeSet<_>>(),
        rule_regions,
        "{r}: the router knows every region"
    );
    assert_eq!(
        failover.gateways.keys().collect::<BTreeSet<_>>(),
        rule_regions,
        "{r}: failover knows every region"
    );
    // One etcd for leases and takeovers.
    let Some(CoordinatorBackend::Etcd {
        endpoints: gateway_etcd,
        ..
    }) = o.gateway.coordinator.as_ref().map(|c| &c.backend)
    else {
        panic!("{r}: the gateway's coordinator is etcd");
    };
    let CoordinatorChoice::Etcd {
        endpoints: router_etcd,
        ..
    } = &failover.coordinator
    else {
        panic!("{r}: etcd")
    };
    assert_eq!(
        gateway_etcd, router_etcd,
        "{r}: gateways and router share the etcd cluster"
    );

    check_public_security(o);

    // The image of deploy/Dockerfile: its user, its entrypoint (the
    // Deployments pass only the subcommand).
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("deploy/Dockerfile has a USER");
    assert!(
        dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/meridian\"]"),
        "the image's entrypoint is the meridian binary"
    );
    // Resources on every container; the built image, not a bare name.
    for deployment in ["gateway", "router"] {
        let security = &o.pod_spec(deployment)["securityContext"];
        assert_eq!(
            format!("USER {}:{}", security["runAsUser"], security["runAsGroup"]),
            user.trim(),
            "{r}: {deployment} runs as the image's user"
        );
        let c = o.container(deployment);
        for pointer in [
            "/resources/requests/cpu",
            "/resources/requests/memory",
            "/resources/limits/memory",
        ] {
            assert!(
                c.pointer(pointer).is_some(),
                "{r}: {deployment} sets {pointer}"
            );
        }
        let image = str_at(c, "/image");
        assert!(
            image.ends_with("/meridian:0.1.0") || image.contains("/meridian:"),
            "{r}: {deployment} image {image}"
        );
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"], true,
            "{r}: {deployment}"
        );
    }

    check_network_policies(
        o,
        public,
        mesh_port,
        gateway_metrics,
        router_listen,
        router_metrics,
    );

    // Disruption budgets and the autoscaler.
    for (name, pod) in [("gateway", GATEWAY_POD), ("router", ROUTER_POD)] {
        let pdb = o.get("PodDisruptionBudget", name);
        assert_eq!(u64_at(pdb, "/spec/minAvailable"), 1, "{r}: PDB {name}");
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"][NAME_LABEL], pod,
            "{r}: PDB {name} selects {pod}"
        );
    }
    // Standbys are never Ready; they must not block drains.
    assert_eq!(
        o.get("PodDisruptionBudget", "gateway")["spec"]["unhealthyPodEvictionPolicy"],
        "AlwaysAllow",
        "{r}"
    );
    let hpas = o.all("HorizontalPodAutoscaler");
    assert_eq!(hpas.len(), 1, "{r}: one autoscaler");
    assert_eq!(str_at(hpas[0], "/spec/scaleTargetRef/kind"), "Deployment");
    assert_eq!(
        str_at(hpas[0], "/spec/scaleTargetRef/name"),
        "router",
        "{r}: only the router is autoscaled; gateways are active/standby"
    );
    assert!(
        u64_at(hpas[0], "/spec/minReplicas") >= 2,
        "{r}: the autoscaler keeps two routers"
    );
}

/// Every public port serves TLS with its Certificate's Secret and takes
/// tokens from the mounted JWKS; the router dials the gateways over https
/// with a mounted CA and carries a token from a mounted Secret.
fn check_public_security(o: &Overlay) {
    let r = o.region.as_str();
    // Off loopback: the loaders themselves refuse these files without
    // [auth] (and [tls]), so a config that loaded is protected; check what
    // it names is really there.
    assert!(
        !o.gateway.listen.ip().is_loopback() && !o.router.listen.ip().is_loopback(),
        "{r}"
    );
    let jwks_map = o.config_map("meridian-jwks");
    assert_eq!(
        str_at(jwks_map, "/metadata/name"),
        "meridian-jwks",
        "{r}: the JWKS keeps its name, so edits reload in place"
    );
    let jwks: Value = serde_json::from_str(str_at(jwks_map, "/data/jwks.json"))
        .unwrap_or_else(|e| panic!("{r}: meridian-jwks jwks.json is not JSON: {e}"));
    assert!(
        jwks["keys"].is_array(),
        "{r}: meridian-jwks holds a JWKS document: {jwks}"
    );
    for (deployment, config_auth, config_tls, certificate) in [
        (
            "gateway",
            o.gateway.auth.as_ref(),
            o.gateway.tls.as_ref().map(|t| (&t.cert, &t.key)),
            "gateway-public",
        ),
        (
            "router",
            o.router.auth.as_ref(),
            o.router.tls.as_ref().map(|t| (&t.cert, &t.key)),
            "router-public",
        ),
    ] {
        let auth = config_auth.unwrap_or_else(|| panic!("{r}: {deployment}.toml has [auth]"));
        let jwks_dir = o.mount_of(deployment, "configMap", "meridian-jwks");
        assert_eq!(
            auth.jwks,
            Some(jwks_dir.join("jwks.json")),
            "{r}: {deployment} reads the mounted meridian-jwks"
        );
        let (cert, key) =
            config_tls.unwrap_or_else(|| panic!("{r}: {deployment}.toml has [tls] cert and key"));
        let secret = str_at(o.get("Certificate", certificate), "/spec/secretName");
        let tls_dir = o.mount_of(deployment, "secret", secret);
        assert_eq!(
            [cert, key],
            [&tls_dir.join("tls.crt"), &tls_dir.join("tls.key")],
            "{r}: {deployment} serves {certificate}"
        );
        let names = o.public_names(certificate);
        let service = format!("{deployment}.{NAMESPACE}.svc.cluster.local");
        assert!(
            names.contains(&service),
            "{r}: {certificate} names {service}: {names:?}"
        );
        assert!(
            names.contains(o.hostname(deployment)),
            "{r}: {certificate} names {}: {names:?}",
            o.hostname(deployment)
        );
    }
    // Every Service port serves TLS (the mesh port mutual TLS): none may
    // claim cleartext HTTP/2, which a mesh or load balancer would speak.
    for service in o.docs.iter().filter(|d| d["kind"] == "Service") {
        for port in array_at(service, "/spec/ports") {
            let name = format!(
                "{r}: Service {} port {}",
                service["metadata"]["name"], port["name"]
            );
            assert_ne!(
                port["appProtocol"], "kubernetes.io/h2c",
                "{name} serves TLS, not h2c"
            );
            assert_eq!(
                port["appProtocol"], "https",
                "{name}: gRPC over TLS is appProtocol https"
            );
        }
    }
    assert!(
        !o.docs.iter().any(|d| d["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))),
        "{r}: the overlay renders no Prometheus-operator kind (clusters without its CRDs still apply it)"
    );
    let gateway_issuer = &o.get("Certificate", "gateway-public")["spec"]["issuerRef"];
    assert_eq!(
        gateway_issuer,
        &o.get("Certificate", "router-public")["spec"]["issuerRef"],
        "{r}: one public CA"
    );
    for (region, url) in &o.router.gateways {
        assert!(
            url.starts_with("https://"),
            "{r}: router gateways.{region} = {url:?} is TLS"
        );
    }
    let public_tls = o.mount_of(
        "router",
        "secret",
        str_at(o.get("Certificate", "router-public"), "/spec/secretName"),
    );
    assert_eq!(
        o.router.gateway_ca.as_ref(),
        Some(&public_tls.join("ca.crt")),
        "{r}: the router checks gateways with the public CA"
    );
    let token_dir = o.mount_of("router", "secret", "meridian-router-token");
    assert_eq!(
        o.router.gateway_token_file.as_ref(),
        Some(&token_dir.join("token")),
        "{r}: the router's own token"
    );
    let gateway_volumes = array_at(o.pod_spec("gateway"), "/volumes");
    assert!(
        !gateway_volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "meridian-router-token"),
        "{r}: the router's token is mounted into the router only"
    );
}

/// Readiness asks for `service` (the gateway: only the active replica
/// serves it), liveness and startup for the process (""), all with
/// `meridian health` over TLS to the public port (the kubelet's own gRPC
/// probes cannot speak TLS), checking the certificate against the public
/// CA under a name it carries.
fn check_probes(o: &Overlay, deployment: &str, port: u16, service: &str) {
    let r = o.region.as_str();
    let c = o.container(deployment);
    let certificate = format!("{deployment}-public");
    let names = o.public_names(&certificate);
    let ca = o
        .mount_of(
            deployment,
            "secret",
            str_at(o.get("Certificate", &certificate), "/spec/secretName"),
        )
        .join("ca.crt");
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        let command: Vec<&str> = array_at(&c[probe], "/exec/command")
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            command[..2],
            ["/usr/local/bin/meridian", "health"],
            "{r}: {deployment} {probe}: {command:?}"
        );
        let flag = |name: &str| {
            command
                .iter()
                .find_map(|a| a.strip_prefix(&format!("--{name}=")))
        };
        assert_eq!(
            flag("target"),
            Some(format!("https://127.0.0.1:{port}").as_str()),
            "{r}: {deployment} {probe} target"
        );
        assert_eq!(
            flag("ca"),
            Some(ca.to_str().unwrap()),
            "{r}: {deployment} {probe} CA"
        );
        let server_name = flag("tls-server-name")
            .unwrap_or_else(|| panic!("{r}: {deployment} {probe}: --tls-server-name"));
        assert!(
            names.contains(server_name),
            "{r}: {deployment} {probe}: {server_name} is not in {certificate}: {names:?}"
        );
        let expected = if probe == "readinessProbe" {
            service
        } else {
            ""
        };
        assert_eq!(
            flag("service").unwrap_or(""),
            expected,
            "{r}: {deployment} {probe} service"
        );
        assert!(
            u64_at(&c[probe], "/timeoutSeconds") >= 2,
            "{r}: {deployment} {probe}: time for a process and a handshake"
        );
        // Every flag is one the command takes (a typo would fail every probe).
        for arg in &command[2..] {
            let name = arg
                .strip_prefix("--")
                .and_then(|a| a.split('=').next())
                .unwrap_or(arg);
            assert!(
                ["target", "ca", "tls-server-name", "service"].contains(&name),
                "{r}: {deployment} {probe}: {arg}"
            );
        }
    }
}

/// Only gateways and the router reach the mesh port; each policy opens
/// only ports the configs listen on; everything else is denied.
fn check_network_policies(
    o: &Overlay,
    public: u16,
    mesh: u16,
    gateway_metrics: u16,
    router_public: u16,
    router_metrics: u16,
) {
    let r = o.region.as_str();
    let deny = o.get("NetworkPolicy", "default-deny-ingress");
    assert_eq!(
        deny["spec"]["podSelector"],
        serde_json::json!({}),
        "{r}: default deny selects every pod"
    );
    assert!(
        deny["spec"].get("ingress").is_none(),
        "{r}: and admits nothing"
    );
    let selects = |policy: &Value, pod: &str| -> bool {
        let selector = &policy["spec"]["podSelector"];
        selector["matchLabels"][NAME_LABEL] == pod
            || selector["matchExpressions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| {
                    e["key"] == NAME_LABEL
                        && e["operator"] == "In"
                        && e["values"].as_array().unwrap().iter().any(|v| v == pod)
                })
    };
    let gateway_ports = BTreeSet::from([public, mesh, gateway_metrics]);
    let router_ports = BTreeSet::from([router_public, router_metrics]);
    let mut mesh_policies = 0;
    for policy in o.all("NetworkPolicy") {
        let name = str_at(policy, "/metadata/name");
        for rule in policy["spec"]["ingress"].as_array().into_iter().flatten() {
            let ports: BTreeSet<u16> = array_at(rule, "/ports")
                .iter()
                .map(|p| u16::try_from(u64_at(p, "/port")).unwrap())
                .collect();
            if selects(policy, GATEWAY_POD) {
                assert!(
                    ports.is_subset(&gateway_ports),
                    "{r}: {name} opens {ports:?} on gateways, which listen on {gateway_ports:?}"
                );
            }
            if selects(policy, ROUTER_POD) {
                assert!(
                    ports.is_subset(&router_ports),
                    "{r}: {name} opens {ports:?} on routers, which listen on {router_ports:?}"
                );
            }
            if ports.contains(&mesh) && selects(policy, GATEWAY_POD) {
                mesh_policies += 1;
                assert_eq!(
                    ports,
                    BTreeSet::from([mesh]),
                    "{r}: {name}: the mesh port alone"
                );
                let from = array_at(rule, "/from");
                let mut pods = BTreeSet::new();
                let mut networks = 0;
                for peer in from {
                    if let Some(pod) = peer.pointer("/podSelector/matchLabels") {
                        assert!(
                            peer.get("namespaceSelector").is_none(),
                            "{r}: {name}: pods of this namespace only"
                        );
                        pods.insert(
                            str_at(pod, &format!("/{}", NAME_LABEL.replace('/', "~1"))).to_owned(),
                        );
                    } else if peer.get("ipBlock").is_some() {
                        networks += 1;
                    } else {
                        panic!("{r}: {name}: the mesh port admits {peer}");
                    }
                }
                assert_eq!(
                    pods,
                    BTreeSet::from([GATEWAY_POD.to_owned(), ROUTER_POD.to_owned()]),
                    "{r}: {name}: gateways and the router"
                );
                assert_eq!(
                    networks,
                    REGIONS.len() - 1,
                    "{r}: {name}: one egress network per other region"
                );
            }
            if ports.contains(&gateway_metrics) || ports.contains(&router_metrics) {
                for peer in array_at(rule, "/from") {
                    assert!(
                        peer.get("namespaceSelector").is_some(),
                        "{r}: {name}: /metrics only from the monitoring namespace"
                    );
                }
            }
        }
    }
    assert_eq!(
        mesh_policies, 1,
        "{r}: exactly one policy opens the gateways' mesh port"
    );
}

#[test]
fn the_regions_find_each_other_and_share_one_trust_domain_rules_and_etcd() {
    const TEST: &str = "k8s overlays vs each other";
    let mut overlays = Vec::new();
    for region in REGIONS {
        let Some(overlay) = Overlay::load(TEST, region) else {
            return;
        };
        overlays.push(overlay);
    }
    // What each region publishes.
    let mut mesh_addr = BTreeMap::new();
    let mut public_addr = BTreeMap::new();
    for o in &overlays {
        let (mesh_port, _) = o.service_port("gateway-mesh", GATEWAY_POD, "gateway");
        let (public_port, _) = o.service_port("gateway", GATEWAY_POD, "gateway");
        assert!(
            o.hostname("gateway-mesh").contains(o.region.as_str()),
            "{}: {}",
            o.region,
            o.hostname("gateway-mesh")
        );
        mesh_addr.insert(
            o.region.clone(),
            (o.hostname("gateway-mesh").to_owned(), mesh_port),
        );
        public_addr.insert(
            o.region.clone(),
            (o.hostname("gateway").to_owned(), public_port),
        );
        assert_eq!(
            o.get("Service", "gateway-mesh")["spec"]["externalTrafficPolicy"],
            "Local",
            "{}: peers' source addresses reach the NetworkPolicy",
            o.region
        );
    }
    let all: BTreeSet<String> = mesh_addr
        .values()
        .chain(public_addr.values())
        .map(|(h, _)| h.clone())
        .collect();
    assert_eq!(
        all.len(),
        2 * REGIONS.len(),
        "every region publishes its own names: {all:?}"
    );
    // What each region dials.
    for o in &overlays {
        let r = &o.region;
        let mesh = o.gateway.mesh.as_ref().unwrap();
        let peers: BTreeSet<&RegionId> = mesh.peers.keys().collect();
        let others: BTreeSet<&RegionId> = mesh_addr.keys().filter(|p| *p != r).collect();
        assert_eq!(peers, others, "{r}: a mesh peer for every other region");
        for (peer, addr) in &mesh.peers {
            assert_eq!(
                host_port(addr),
                mesh_addr[peer],
                "{r}: gateway mesh.peers.{peer}"
            );
        }
        let failover = o.router.failover.as_ref().unwrap();
        for peer in others {
            assert_eq!(
                host_port(&o.router.gateways[peer]),
                public_addr[peer],
                "{r}: router gateways.{peer}"
            );
            let peer_names = overlays
                .iter()
                .find(|p| &p.region == peer)
                .unwrap()
                .public_names("gateway-public");
            assert!(
                peer_names.contains(&public_addr[peer].0),
                "{r}: {peer}'s gateway certificate names what {r}'s router dials"
            );
            assert_eq!(
                host_port(&failover.gateways[peer]),
                mesh_addr[peer],
                "{r}: router failover.gateways.{peer}"
            );
        }
    }
    // One mesh: trust domain, region order, rules, etcd.
    let first = &overlays[0];
    let trust_domain = first.identity("gateway-mesh").trust_domain().clone();
    for o in &overlays {
        for certificate in ["gateway-mesh", "router-mesh"] {
            assert_eq!(
                o.identity(certificate).trust_domain(),
                &trust_domain,
                "{}: {certificate}: one trust domain",
                o.region
            );
        }
        assert_eq!(
            o.get("Certificate", "gateway-public")["spec"]["issuerRef"],
            first.get("Certificate", "gateway-public")["spec"]["issuerRef"],
            "{}: one public CA for every region (routers check other regions' gateways with their own ca.crt)",
            o.region
        );
        assert_eq!(
            o.gateway.regions, first.gateway.regions,
            "{}: the same region order everywhere",
            o.region
        );
        assert_eq!(
            o.rules_text, first.rules_text,
            "{}: the same rules everywhere",
            o.region
        );
        let endpoints = |o: &Overlay| match &o.gateway.coordinator.as_ref().unwrap().backend {
            CoordinatorBackend::Etcd { endpoints, .. } => endpoints.clone(),
            other => panic!("{}: {other:?}", o.region),
        };
        assert_eq!(
            endpoints(o),
            endpoints(first),
            "{}: one etcd cluster for every region",
            o.region
        );
    }
    assert_eq!(
        first
            .gateway
            .regions
            .iter()
            .map(RegionId::as_str)
            .collect::<Vec<_>>(),
        REGIONS,
        "k8s/overlays has one overlay per region, in the epoch order"
    );
}

/// The kubelet's atomic writer: `name` → `..data/name`, `..data` → a
/// timestamped directory, swapped by renaming a new symlink over `..data`.
#[cfg(unix)]
struct KubeletVolume {
    dir: PathBuf,
    generation: u32,
}

#[cfg(unix)]
impl KubeletVolume {
    fn new(dir: &Path, files: &[(&str, &[u8])]) -> Self {
        let mut volume = KubeletVolume {
            dir: dir.to_owned(),
            generation: 0,
        };
        volume.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
        }
        volume
    }

    fn update(&mut self, files: &[(&str, &[u8])]) {
        self.generation += 1;
        let timestamped = format!(
            "..2026_11_25_00_00_{:02}.{}",
            self.generation, self.generation
        );
        std::fs::create_dir(self.dir.join(&timestamped)).unwrap();
        for (name, contents) in files {
            std::fs::write(self.dir.join(&timestamped).join(name), contents).unwrap();
        }
        let next = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&timestamped, &next).unwrap();
        std::fs::rename(&next, self.dir.join("..data")).unwrap();
    }
}

#[cfg(unix)]
fn borrow<'a>(files: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'static str, &'a [u8])> {
    files
        .iter()
        .map(|(name, contents)| (*name, contents.as_slice()))
        .collect()
}

async fn eventually(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..250 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}: not within 5 s");
}

/// An edited `meridian-rules` ConfigMap reaches the router and gateways:
/// the watcher re-reads the mounted path, so it follows the swap.
#[cfg(unix)]
#[tokio::test]
async fn the_rules_watcher_follows_a_configmap_update() {
    let rules = std::fs::read_to_string(root().join("k8s/base/rules.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut volume = KubeletVolume::new(dir.path(), &[("rules.toml", rules.as_bytes())]);
    let source = meridian_rules_source::RulesSource::load(&dir.path().join("rules.toml"))
        .await
        .unwrap();
    let active = source.active.clone();
    let first = active.current().version_id();
    let watcher = tokio::spawn(source.watch(Duration::from_millis(20), |_| {}));

    let edited = rules.replacen("version = \"", "version = \"k8s-edit-", 1);
    assert_ne!(edited, rules);
    volume.update(&[("rules.toml", edited.as_bytes())]);
    eventually("the swapped rules are in force", || {
        active.current().version_id() != first
    })
    .await;
    assert!(
        active
            .current()
            .version_id()
            .to_string()
            .contains("k8s-edit-"),
        "{}",
        active.current().version_id()
    );

    // A bad edit is refused and the rules stay.
    let in_force = active.current().version_id();
    volume.update(&[("rules.toml", b"overlap_minutes = \"soon\"\n")]);
    eventually("the broken rules are refused", || {
        !active.refused().is_empty()
    })
    .await;
    assert_eq!(active.current().version_id(), in_force);
    watcher.abort();
}

/// A certificate cert-manager renews reaches the mesh: the TLS reload
/// re-reads the mounted Secret's paths, so it follows the swap.
#[cfg(unix)]
#[tokio::test]
async fn the_tls_reload_follows_a_secret_update() {
    use meridian_tls::{MeshTls, TlsFiles, TrustDomain, Validity, dev_ca, issue};
    let region = RegionId::new("eu-west").unwrap();
    let identity = PeerIdentity::new(
        TrustDomain::new("meridian.example.net").unwrap(),
        region,
        Service::Gateway,
    );
    let ca = dev_ca(
        identity.trust_domain(),
        Validity::days_from(std::time::SystemTime::now(), 2),
    )
    .unwrap();
    // What cert-manager writes into the Certificate's Secret.
    let issue_secret = || -> Vec<(&'static str, Vec<u8>)> {
        let cert = issue(
            &ca,
            &identity,
            Validity::days_from(std::time::SystemTime::now(), 1),
        )
        .unwrap();
        vec![
            ("tls.crt", cert.cert_pem.into_bytes()),
            ("tls.key", cert.key_pem.into_bytes()),
            ("ca.crt", ca.cert_pem().as_bytes().to_vec()),
        ]
    };
    let dir = tempfile::tempdir().unwrap();
    let mut volume = KubeletVolume::new(dir.path(), &borrow(&issue_secret()));
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        ca: dir.path().join("ca.crt"),
    };
    let tls = MeshTls::load(files).unwrap();
    let serial = tls.serial_hex();
    let _reload = tls.spawn_reload(Duration::from_millis(20));

    volume.update(&borrow(&issue_secret()));
    eventually("the renewed certificate is in use", || {
        tls.serial_hex() != serial
    })
    .await;
    assert_eq!(tls.identity(), identity);
}
