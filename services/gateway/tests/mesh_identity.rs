//! The real gateway's mesh port (mutual TLS) refuses callers whose SPIFFE
//! id is valid and signed by the mesh's CA but is the wrong one for the
//! call: a router calling the gateway-only `AcceptHandoff`, a gateway
//! calling the router's internal `TakeOver` for another region, and a
//! gateway of a region the mesh does not have. Handshake-level refusals
//! (wrong CA, expired, no certificate, other trust domain, a certificate
//! whose URI SAN is no Meridian identity) are in `crates/tls/tests/mtls.rs`
//! and `tests/mesh.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Test code: a failure should stop the test loudly.

mod common;

use std::time::SystemTime;

use common::{Mesh, Options, TRUST_DOMAIN, region};
use meridian_proto::v1::{self, mesh_service_client::MeshServiceClient};
use meridian_tls::{DevCa, MeshTls, PeerIdentity, Service, TlsFiles, TrustDomain, Validity, issue};
use tonic::{Code, transport::Channel};

/// A mesh client of us-east's gateway presenting a certificate of the
/// mesh's own CA for `identity`.
async fn client_as(
    mesh: &Mesh,
    dir: &tempfile::TempDir,
    identity: &PeerIdentity,
) -> MeshServiceClient<Channel> {
    let pki = mesh.pki_dir();
    let ca = DevCa::from_pem(
        &std::fs::read_to_string(pki.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(pki.join("ca-key.pem")).unwrap(),
    )
    .unwrap();
    let cert = issue(&ca, identity, Validity::days_from(SystemTime::now(), 1)).unwrap();
    let name = format!("{}-{}", identity.region(), identity.service());
    let files = TlsFiles {
        cert: dir.path().join(format!("{name}.pem")),
        key: dir.path().join(format!("{name}-key.pem")),
        ca: pki.join("ca.pem"),
    };
    std::fs::write(&files.cert, &cert.cert_pem).unwrap();
    std::fs::write(&files.key, &cert.key_pem).unwrap();
    let tls = MeshTls::load(files).unwrap();
    mesh.mesh_client_with(
        &tls,
        "us-east",
        &mesh.region("us-east").mesh_addr.to_string(),
    )
    .await
}

fn id(region_name: &str, service: Service) -> PeerIdentity {
    PeerIdentity::new(
        TrustDomain::new(TRUST_DOMAIN).unwrap(),
        region(region_name),
        service,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_port_refuses_the_wrong_identity_for_each_call() {
    let mesh = Mesh::start(Options::default()).await;
    let dir = tempfile::tempdir().unwrap();

    // A router identity calling the gateway-only AcceptHandoff.
    let mut as_router = client_as(&mesh, &dir, &id("us-east", Service::Router)).await;
    let denied = as_router
        .accept_handoff(v1::AcceptHandoffRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("spiffe://meridian.test/region/us-east/router is a router; this service accepts only gateway"),
        "{denied:?}"
    );
    // The router may call TakeOver: past the identity check, this gateway
    // (no coordinator) answers that it cannot take regions over.
    let ask = |failed: &str| v1::TakeOverRequest {
        failed_region: failed.into(),
        fencing_token: 7,
    };
    let allowed = as_router.take_over(ask("eu-west")).await.unwrap_err();
    assert_eq!(
        allowed.code(),
        Code::Unimplemented,
        "the router got past the identity check: {allowed:?}"
    );

    // A gateway identity calling the router's internal TakeOver for a region
    // other than its own.
    let mut as_eu = client_as(&mesh, &dir, &id("eu-west", Service::Gateway)).await;
    let denied = as_eu.take_over(ask("apac-south")).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains(
            "spiffe://meridian.test/region/eu-west/gateway may not speak for region apac-south"
        ),
        "{denied:?}"
    );

    // A gateway of a region the mesh does not have, signed by the mesh's CA.
    let mut as_mars = client_as(&mesh, &dir, &id("mars", Service::Gateway)).await;
    let denied = as_mars.take_over(ask("us-east")).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied
            .message()
            .contains("region/mars/gateway may not speak for region us-east"),
        "{denied:?}"
    );
    let offer = v1::AcceptHandoffRequest {
        ticket_id: "0190f5c2-0000-7000-8000-000000000000".into(),
        from_region: "eu-west".into(),
        offer_seq: 1,
        previous_epoch: 1,
        offer_events: None,
        ..Default::default()
    };
    let denied = as_mars.accept_handoff(offer).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    mesh.stop().await;
}
