//! End to end: a gateway whose `[auth]` names an OIDC issuer (a real HTTPS
//! issuer on loopback, with discovery) takes RS256 tokens minted by PyJWT,
//! maps their `groups` to roles, refuses a role that may not call a
//! method, and — when the issuer goes away — keeps accepting tokens with
//! the last good keys while its health and metrics say so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../crates/auth/tests/support/mod.rs"]
mod support;

use std::time::{Duration, SystemTime};

use meridian_auth::{Algorithm, AuthChoice, AuthTable, KEYS_HEALTH_SERVICE};
use meridian_core::RegionId;
use meridian_gateway::{GatewayConfig, TlsFiles};
use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};
use meridian_telemetry::{Telemetry, TelemetryConfig};
use meridian_test_support::{Backing, TestDatabase};
use meridian_tls::{DevPkiPlan, Service, TrustDomain, Validity, write_dev_pki};
use serde_json::json;
use support::{TestIssuer, now, pyjwt};
use tonic::{
    Code, Request,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn region(name: &str) -> RegionId {
    RegionId::new(name).unwrap()
}

fn with<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

async fn keys_health(channel: Channel) -> i32 {
    let mut health = HealthClient::new(channel);
    health
        .check(HealthCheckRequest {
            service: KEYS_HEALTH_SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_an_oidc_issuer_takes_its_rs256_tokens_and_maps_groups_to_roles() {
    let issuer = TestIssuer::start(json!({"keys": []}), Some("max-age=1")).await;
    let claims = |sub: &str, groups: serde_json::Value| {
        json!({"sub": sub, "iss": issuer.url, "aud": "meridian", "groups": groups, "iat": now(), "exp": now() + 3600,
               "region": "us-east"})
    };
    let tokens = [
        (
            "rsa-1",
            "RS256",
            claims("sam@example.com", json!(["Everyone", "Meridian SRE"])),
        ),
        (
            "rsa-1",
            "RS256",
            claims("ana@example.com", json!(["Support US"])),
        ),
    ];
    let Some(minted) = pyjwt(&[("rsa-1", "RSA")], &tokens) else {
        return;
    };
    issuer.set_jwks(minted.jwks_of(&["rsa-1"]));
    let (sre, agent) = (&minted.tokens[0], &minted.tokens[1]);

    // `[auth]` as an operator writes it for an IdP.
    let toml = format!(
        r#"
        issuer = "{url}"
        audience = "meridian"
        algorithms = ["RS256", "ES256"]
        ca = "{ca}"
        [claims]
        role = "groups"
        roles = {{ "Meridian SRE" = "sre", "Support US" = "agent" }}
        "#,
        url = issuer.url,
        ca = issuer.ca.display()
    );
    let table: AuthTable = toml::from_str(&toml).unwrap();
    let AuthChoice::Enabled(settings) = table.into_choice("gateway.toml", &[]).unwrap() else {
        panic!("disabled")
    };
    assert_eq!(settings.algorithms(), [Algorithm::RS256, Algorithm::ES256]);

    let pki = tempfile::tempdir().unwrap();
    let regions: Vec<RegionId> = ["us-east", "eu-west"].iter().map(|r| region(r)).collect();
    let plan = DevPkiPlan {
        trust_domain: TrustDomain::new("meridian.test").unwrap(),
        regions: regions.clone(),
        services: Service::ALL.to_vec(),
        ca_validity: Validity::days_from(SystemTime::now(), 30),
        cert_validity: Validity::days_from(SystemTime::now(), 30),
        replace_ca: false,
    };
    write_dev_pki(pki.path(), &plan).unwrap();
    let db = TestDatabase::new(Backing::Sqlite).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = GatewayConfig::new(regions[0].clone(), regions, addr, db.config());
    let files = meridian_tls::TlsFiles::dev(pki.path(), &region("us-east"), Service::Gateway);
    config.tls = Some(TlsFiles {
        cert: files.cert,
        key: files.key,
    });
    config.auth = Some(settings);
    let (telemetry, _dispatch) = Telemetry::build(&TelemetryConfig::new("meridian-test")).unwrap();
    config.metrics = Some(telemetry.metrics().clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(meridian_gateway::run(config, listener, async {
        let _ = stopped.await;
    }));

    let pem = std::fs::read(pki.path().join("ca.pem")).unwrap();
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
        .unwrap();
    let mut channel = None;
    for _ in 0..200 {
        if let Ok(c) = endpoint.connect().await {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channel = channel.expect("the gateway never accepted a TLS connection");
    let mut client = TicketServiceClient::new(channel.clone());

    // The first call may come before the gateway's first fetch: the kid is
    // then unknown, and the layer fetches the keys before answering.
    let status = client
        .get_status(with(sre, v1::GetStatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.region, "us-east");
    let refused = client
        .get_status(with(agent, v1::GetStatusRequest {}))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("role agent may not call /meridian.v1.TicketService/GetStatus"),
        "{refused:?}"
    );
    let create = v1::CreateTicketRequest {
        subject: "VPN down".into(),
        body: "since 9:00".into(),
        customer: "acme".into(),
        tier: "premium".into(),
        skills: vec!["networking".into()],
        language: "en".into(),
        residency: vec![],
        priority: v1::Priority::High.into(),
        idempotency_key: String::new(),
    };
    let created = client
        .create_ticket(with(agent, create))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        created.ticket.unwrap().owner.unwrap().owner_region,
        "us-east",
        "the agent group's token writes its region's tickets"
    );
    assert_eq!(
        keys_health(channel.clone()).await,
        ServingStatus::Serving as i32
    );

    // The issuer goes away: tokens still verify with the last good keys;
    // health and metrics say the keys are stale.
    issuer.stop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while keys_health(channel.clone()).await != ServingStatus::NotServing as i32 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the keys' health never turned NOT_SERVING"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        client
            .get_status(with(sre, v1::GetStatusRequest {}))
            .await
            .is_ok(),
        "the last good keys stay in force"
    );
    let text = telemetry.metrics().render_prometheus().unwrap();
    let failures = text
        .lines()
        .find(|l| l.starts_with("meridian_auth_keys_refresh_failures_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(failures.is_some_and(|f| f >= 1.0), "{text}");
    let age = text
        .lines()
        .find(|l| l.starts_with("meridian_auth_keys_age_seconds{"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(age.is_some_and(|a| a > 0.0), "{text}");

    let _ = stop.send(());
    task.await.unwrap().unwrap();
    db.drop_now().await;
}
