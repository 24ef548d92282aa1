//! Clients we did not write: a Python `grpcio` client that knows only what
//! the gateway's server reflection tells it lists the services and creates
//! a ticket. Needs python3 with grpcio and grpcio-reflection (`.ci/run`
//! installs them); without them the test says so loudly, and fails under
//! `MERIDIAN_REQUIRE_ALL=1`.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, process::Command, time::Duration};

use meridian_core::RegionId;
use meridian_gateway::GatewayConfig;
use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};
use meridian_test_support::{Backing, TestDatabase, require_all};
use tokio::net::TcpListener;

fn python_has_grpc() -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import grpc, grpc_reflection"])
        .output();
    matches!(probe, Ok(out) if out.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_uses_server_reflection() {
    if !python_has_grpc() {
        assert!(
            !require_all(),
            "MERIDIAN_REQUIRE_ALL=1 but python3 lacks grpcio/grpcio-reflection"
        );
        eprintln!(
            "reflection test SKIPPED: python3 with grpcio and grpcio-reflection not found (pip install grpcio grpcio-reflection)"
        );
        return;
    }
    let db = TestDatabase::new(Backing::Sqlite).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let region = RegionId::new("eu-west").unwrap();
    let config = GatewayConfig::new(region.clone(), vec![region], addr, db.config());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(meridian_gateway::run(config, listener, async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/reflection_client.py");
    let target = addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(script).arg(target).output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        output.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let found: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    let services = found["services"].as_array().unwrap();
    // Exactly what this port serves: the mesh's services (MeshService,
    // ReplicationService, AntiEntropyService) and the router's are not here.
    assert_eq!(
        services,
        &[
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "meridian.v1.AgentService",
            "meridian.v1.RegionLoadService",
            "meridian.v1.TicketService",
        ]
    );
    let methods = found["methods"].as_array().unwrap();
    for expected in [
        "CreateTicket",
        "GetTicket",
        "ListTickets",
        "SearchTickets",
        "UpdateTicket",
        "AddNote",
        "Handoff",
        "WatchEvents",
    ] {
        assert!(
            methods.iter().any(|m| m == expected),
            "{expected} missing from {methods:?}"
        );
    }
    assert_eq!(found["owner_region"], "eu-west");

    // The ticket the reflection-only client created is really stored.
    let mut client = TicketServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let id = found["ticket_id"].as_str().unwrap().to_owned();
    let got = client
        .get_ticket(v1::GetTicketRequest { ticket_id: id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.ticket.unwrap().subject, "From Python");

    stop.send(()).unwrap();
    gateway.await.unwrap().unwrap();
}
