//! The router as a client sees it: real gateways and the router on loopback,
//! started through their `run` functions, with the router's clock injected.

// Test helpers outside `#[test]` functions: a failure should stop the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use jiff::SignedDuration;
use meridian_proto::v1::{self, FilterReason, RouteReason};
use support::*;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_ticket_is_created_at_the_region_on_shift() {
    let mut mesh = Mesh::start(NOON).await;
    let mut router = mesh.router().await;

    let submitted = router
        .submit_ticket(v1::SubmitTicketRequest {
            ticket: Some(create_request("invoice wrong")),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        submitted.rules_version.starts_with("t1+"),
        "{}",
        submitted.rules_version
    );
    assert_eq!(submitted.region, "east");
    let decision = submitted.decision.unwrap();
    assert_eq!(decision.reason(), RouteReason::OnShift);
    assert_eq!(decision.queue_owner, "east-day-lead");
    assert_eq!(submitted.attempts.len(), 1);
    assert!(submitted.attempts[0].created);
    let ticket = submitted.ticket.unwrap();
    let stored = mesh.gateway("east").client().await;
    let got = stored
        .clone()
        .get_ticket(v1::GetTicketRequest {
            ticket_id: ticket.id.clone(),
        })
        .await
        .unwrap();
    let got = got.into_inner().ticket.unwrap();
    assert_eq!(got.subject, "invoice wrong");
    assert_eq!(got.owner.unwrap().owner_region, "east");

    // Ten hours later only south is on shift, and the next ticket goes there.
    mesh.clock.set(ts(NIGHT));
    // The move made every probe ten hours old; wait for fresh ones.
    mesh.wait_until_all_healthy().await;
    let submitted = router
        .submit_ticket(v1::SubmitTicketRequest {
            ticket: Some(create_request("late invoice")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.region, "south");
    assert_eq!(submitted.decision.unwrap().queue_owner, "south-night-lead");
    assert_eq!(submitted.warning, "", "on shift: nothing to warn of");
    assert_eq!(
        submitted.acknowledgement,
        "A person will answer now: our team in south is on shift."
    );
    let id = submitted.ticket.unwrap().id;
    let mut south = mesh.gateway("south").client().await;
    let got = south
        .get_ticket(v1::GetTicketRequest { ticket_id: id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.ticket.unwrap().owner.unwrap().owner_region, "south");

    // A residency that allows only west, off shift at night: the out-of-hours
    // policy still places the ticket (never a silent drop), and says so.
    let mut pinned = create_request("pinned");
    pinned.residency = vec!["west".into()];
    let submitted = router
        .submit_ticket(v1::SubmitTicketRequest {
            ticket: Some(pinned),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.region, "west");
    let decision = submitted.decision.unwrap();
    assert_eq!(decision.reason(), RouteReason::OutOfHoursNextOnShift);
    assert_eq!(
        decision.out_of_hours_policy(),
        v1::OutOfHoursPolicy::NextOnShift
    );
    // Landing off shift is never silent: the submitter learns when west
    // opens, and that the hour's first response falls due long before.
    assert_eq!(
        submitted.warning,
        "west is off shift until 2026-06-03T08:00:00Z; the first response is due \
         2026-06-02T23:00:00Z and will breach before it opens unless someone answers"
    );
    assert_eq!(
        submitted.acknowledgement,
        "A person will answer when our next shift opens, Wednesday 3 June 08:00 UTC.",
        "the customer is told when, not left waiting in silence"
    );

    // A named residency rule routes like its regions, and the gateway gets
    // the regions: it knows no rule names, and refused "west-only" as a
    // region outside the ticket's residency before.
    let mut named = create_request("named residency");
    named.residency = vec!["west-only".into()];
    let submitted = router
        .submit_ticket(v1::SubmitTicketRequest {
            ticket: Some(named),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.region, "west");
    assert_eq!(submitted.ticket.unwrap().residency, ["west"]);

    // A residency entry that is neither a region nor a rule is bad input,
    // named as such, not a routing failure.
    let mut nowhere = create_request("nowhere");
    nowhere.residency = vec!["mars".into()];
    let err = router
        .submit_ticket(v1::SubmitTicketRequest {
            ticket: Some(nowhere),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .starts_with("ticket.residency: \"mars\" is neither a region nor a residency rule"),
        "{}",
        err.message()
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_falls_back_to_the_next_candidate_when_the_chosen_gateway_is_down() {
    let mut mesh = Mesh::start(NOON).await;
    let mut router = mesh.router().await;
    // The clock stands still, so east's last good probe stays fresh: the
    // router still believes east is up and chooses it first.
    mesh.gateway("east").stop().await;
    assert_eq!(
        route(&mut router, attributes())
            .await
            .decision
            .unwrap()
            .region,
        "east"
    );

    let submitted = router
        .submit_ticket(v1::SubmitTicketRequest {
            ticket: Some(create_request("fallback")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.region, "west");
    assert_eq!(submitted.attempts.len(), 2, "{:?}", submitted.attempts);
    let failed = &submitted.attempts[0];
    assert_eq!((failed.region.as_str(), failed.created), ("east", false));
    assert_eq!(failed.error_code, "Unavailable", "{failed:?}");
    assert!(!failed.error.is_empty());
    assert_eq!(
        (
            submitted.attempts[1].region.as_str(),
            submitted.attempts[1].created
        ),
        ("west", true)
    );
    // The decision the ticket was created under shows east as down.
    let decision = submitted.decision.unwrap();
    assert_eq!(decision.region, "west");
    assert_eq!(candidate(&decision, "east").filtered(), FilterReason::Down);

    let id = submitted.ticket.unwrap().id;
    let mut west = mesh.gateway("west").client().await;
    let got = west
        .get_ticket(v1::GetTicketRequest { ticket_id: id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.ticket.unwrap().subject, "fallback");

    // The failed forward marked east down until a probe succeeds again, so
    // the next decisions skip it without waiting for the health timeout.
    assert_eq!(
        route(&mut router, attributes())
            .await
            .decision
            .unwrap()
            .region,
        "west"
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_rules_file_keeps_the_old_version_until_a_fixed_one_arrives() {
    let mesh = Mesh::start(NOON).await;
    let mut router = mesh.router().await;
    let v1_version = route(&mut router, attributes()).await.rules_version;
    assert!(v1_version.starts_with("t1+"), "{v1_version}");

    // Version t2 with a time zone that does not exist, in west.
    let broken = rules_text("t2").replace("time_zone = \"UTC\"\nskills = [\"billing\", \"general\"]\ncapacity = 100\npreference = 50", "time_zone = \"Mars/Olympus\"\nskills = [\"billing\", \"general\"]\ncapacity = 100\npreference = 50");
    assert_ne!(
        broken,
        rules_text("t2"),
        "the test must really break the file"
    );
    replace_file(&mesh.rules_path, &broken);
    let file = mesh.rules_path.display().to_string();
    let refused = eventually("the broken file is refused", || {
        let mut router = router.clone();
        async move { Some(active(&mut router).await.rules_refused).filter(|r| !r.is_empty()) }
    })
    .await;
    let line = broken
        .lines()
        .position(|l| l.contains("Mars/Olympus"))
        .unwrap()
        + 1;
    assert!(
        refused[0].starts_with(&format!("{file}:{line}:13: ")),
        "{refused:?}"
    );
    assert!(refused[0].contains("Mars/Olympus"), "{refused:?}");
    // Still the old rules, everywhere, and still deciding.
    let routed = route(&mut router, attributes()).await;
    assert_eq!(routed.rules_version, v1_version);
    assert_eq!(routed.decision.unwrap().region, "east");
    let explained = explain(&mut router, attributes()).await;
    assert_eq!(explained.rules_version, v1_version);
    assert_eq!(explained.rules_refused, refused);

    // The fixed file is picked up, and the refusal is forgotten.
    replace_file(&mesh.rules_path, &rules_text("t2"));
    eventually("the fixed file is in force", || {
        let mut router = router.clone();
        async move {
            route(&mut router, attributes())
                .await
                .rules_version
                .starts_with("t2+")
                .then_some(())
        }
    })
    .await;
    let now = active(&mut router).await;
    assert!(
        now.rules_version.starts_with("t2+"),
        "{}",
        now.rules_version
    );
    assert!(now.rules_refused.is_empty(), "{:?}", now.rules_refused);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_gateway_turns_unhealthy_after_the_timeout_and_route_skips_it() {
    let mut mesh = Mesh::start(NOON).await;
    let mut router = mesh.router().await;
    assert_eq!(
        route(&mut router, attributes())
            .await
            .decision
            .unwrap()
            .region,
        "east"
    );

    mesh.gateway("east").stop().await;
    // Probes now fail, but east's last good probe is younger than the
    // timeout on the router's clock: one lost heartbeat is not an outage.
    tokio::time::sleep(PROBE_INTERVAL * 4).await;
    let decision = route(&mut router, attributes()).await.decision.unwrap();
    assert_eq!(decision.region, "east");
    assert_eq!(
        candidate(&decision, "east").filtered(),
        FilterReason::Unspecified
    );

    // Past the timeout, east is down and Route skips it; the live gateways'
    // next probes bring them back up at the new instant.
    mesh.clock.advance(
        SignedDuration::try_from(HEALTH_TIMEOUT).unwrap() + SignedDuration::from_millis(500),
    );
    let decision = eventually("route skips the stopped gateway", || {
        let mut router = router.clone();
        async move {
            let decision = route(&mut router, attributes()).await.decision.unwrap();
            (decision.region == "west" && decision.reason() == RouteReason::OnShift)
                .then_some(decision)
        }
    })
    .await;
    assert_eq!(candidate(&decision, "east").filtered(), FilterReason::Down);
    assert!(!candidate(&decision, "east").chosen);
    let shifts = active(&mut router).await.regions;
    let healthy = |region: &str| shifts.iter().find(|s| s.region == region).unwrap().healthy;
    assert!(!healthy("east"));
    assert!(healthy("west"));
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_naming_the_field() {
    let mesh = Mesh::start(NOON).await;
    let mut router = mesh.router().await;

    refused(
        router.route(v1::RouteRequest { ticket: None }).await,
        "ticket",
    );
    let bad_attributes = [
        (
            v1::TicketAttributes {
                skills: vec!["billing".into(), "Bad Skill".into()],
                ..attributes()
            },
            "ticket.skills[1]",
        ),
        (
            v1::TicketAttributes {
                tier: "Gold!".into(),
                ..attributes()
            },
            "ticket.tier",
        ),
        (
            v1::TicketAttributes {
                priority: 42,
                ..attributes()
            },
            "ticket.priority",
        ),
        (
            v1::TicketAttributes {
                residency: vec!["West Only".into()],
                ..attributes()
            },
            "ticket.residency[0]",
        ),
    ];
    for (ticket, field) in bad_attributes {
        refused(
            router
                .route(v1::RouteRequest {
                    ticket: Some(ticket.clone()),
                })
                .await,
            field,
        );
        let explain = v1::ExplainRequest {
            ticket: Some(ticket),
            ..Default::default()
        };
        refused(router.explain(explain).await, field);
    }

    refused(
        router
            .submit_ticket(v1::SubmitTicketRequest { ticket: None })
            .await,
        "ticket",
    );
    let mut no_subject = create_request("x");
    no_subject.subject.clear();
    refused(
        router
            .submit_ticket(v1::SubmitTicketRequest {
                ticket: Some(no_subject),
            })
            .await,
        "ticket.subject",
    );
    let mut bad_skill = create_request("x");
    bad_skill.skills = vec!["BILLING".into()];
    refused(
        router
            .submit_ticket(v1::SubmitTicketRequest {
                ticket: Some(bad_skill),
            })
            .await,
        "ticket.skills[0]",
    );

    let bad_instant = prost_types_timestamp(i64::MAX);
    refused(
        router
            .active_regions(v1::ActiveRegionsRequest {
                at: Some(bad_instant),
            })
            .await,
        "at",
    );
    let unknown = v1::ExplainRequest {
        ticket: Some(attributes()),
        at: None,
        assume_down: vec!["west".into(), "mars".into()],
    };
    refused(router.explain(unknown).await, "assume_down[1]");
    let malformed = v1::ExplainRequest {
        ticket: Some(attributes()),
        at: None,
        assume_down: vec!["".into()],
    };
    refused(router.explain(malformed).await, "assume_down[0]");

    // Nothing was created anywhere by the refused submissions.
    let mut east = mesh.gateways[0].client().await;
    assert_eq!(mesh.gateways[0].region, "east");
    let listed = east
        .list_tickets(v1::ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tickets.is_empty(), "{:?}", listed.tickets);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_regions_explain_and_standard_services() {
    let mesh = Mesh::start(NOON).await;
    let mut router = mesh.router().await;

    let now = active(&mut router).await;
    assert!(now.rules_version.starts_with("t1+"));
    assert_eq!(now.at.unwrap().seconds, ts(NOON).as_second());
    let names: Vec<_> = now.regions.iter().map(|s| s.region.as_str()).collect();
    assert_eq!(names, ["east", "west"]);
    let east = &now.regions[0];
    assert_eq!(
        (east.shift.as_str(), east.queue_owner.as_str()),
        ("day", "east-day-lead")
    );
    assert_eq!(
        east.start.unwrap().seconds,
        ts("2026-06-02T08:00:00Z").as_second()
    );
    assert_eq!(
        east.end.unwrap().seconds,
        ts("2026-06-02T16:00:00Z").as_second()
    );
    assert!(east.healthy);

    // At an instant given in the request: 19:45, west ends in 15 minutes
    // (handing off) and south is in its overlap window.
    let evening = router
        .active_regions(v1::ActiveRegionsRequest {
            at: Some(proto_ts("2026-06-02T19:45:00Z")),
        })
        .await
        .unwrap()
        .into_inner();
    let west = evening.regions.iter().find(|s| s.region == "west").unwrap();
    assert!(west.handing_off);
    let south = evening
        .regions
        .iter()
        .find(|s| s.region == "south")
        .unwrap();
    assert_eq!(south.position(), v1::ShiftPosition::Overlap);

    // Explain: what if east were down?
    let what_if = router
        .explain(v1::ExplainRequest {
            ticket: Some(attributes()),
            at: None,
            assume_down: vec!["east".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(what_if.rules_version.starts_with("t1+"));
    let decision = what_if.decision.unwrap();
    assert_eq!(decision.region, "west");
    assert_eq!(candidate(&decision, "east").filtered(), FilterReason::Down);
    assert!(what_if.text.contains("route to: west"), "{}", what_if.text);
    assert!(what_if.text.contains("on_shift"), "{}", what_if.text);

    // Standard health and reflection, so generic tools work.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", mesh.router_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "meridian.v1.RouterService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let ask = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([ask]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let mut services: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    services.sort_unstable();
    // Only what the router's port serves: no TicketService, MeshService,
    // ReplicationService or AntiEntropyService (those answer UNIMPLEMENTED).
    assert_eq!(
        services,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "meridian.v1.RouterService",
        ]
    );
    mesh.stop().await;
}

fn prost_types_timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn proto_ts(s: &str) -> prost_types::Timestamp {
    meridian_proto::timestamp_to_proto(ts(s))
}

/// The call was refused with INVALID_ARGUMENT naming `field`.
fn refused<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>, field: &str) {
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "expected {field}, got {:?}",
        status.message()
    );
}

#[tokio::test]
async fn router_refuses_to_start_on_a_bad_rules_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(
        &path,
        rules_text("t1").replace("overlap_minutes = 30", "overlap_minutes = \"half an hour\""),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config =
        meridian_router::RouterConfig::new(listener.local_addr().unwrap(), &path, []).unwrap();
    let err = meridian_router::run(config, listener, std::future::pending())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("rules: {}:3:19: ", path.display())),
        "{text}"
    );

    let missing = dir.path().join("missing.toml");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config =
        meridian_router::RouterConfig::new(listener.local_addr().unwrap(), &missing, []).unwrap();
    let err = meridian_router::run(config, listener, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("missing.toml: cannot read"),
        "{err}"
    );
}

/// Load-aware routing: each gateway reports its open tickets on the
/// router's health probe, and the decision's load term, `Explain` and
/// `Route` use the figures. east (preference 60) wins an empty mesh; with
/// 90 of its 100 tickets' room taken, west (preference 50, empty) wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_report_their_load_and_the_busier_region_loses_the_decision() {
    let mut mesh = Mesh::start("2026-06-01T10:00:00Z").await;
    let mut router = mesh.router().await;
    assert_eq!(
        route(&mut router, attributes())
            .await
            .decision
            .unwrap()
            .region,
        "east",
        "an empty mesh goes by preference"
    );
    let mut east = mesh.gateway("east").client().await;
    for i in 0..90 {
        east.create_ticket(create_request(&format!("invoice {i}")))
            .await
            .unwrap();
    }
    // Solved tickets are not load.
    let done = east
        .create_ticket(create_request("already answered"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    for status in [v1::Status::Open, v1::Status::Solved] {
        east.update_ticket(v1::UpdateTicketRequest {
            ticket_id: done.id.clone(),
            status: Some(status.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let explained = eventually("east's load reaches the router", || {
        let mut router = router.clone();
        async move {
            let explained = explain(&mut router, attributes()).await;
            let decision = explained.decision.clone().unwrap();
            (candidate(&decision, "east").open_tickets == 90).then_some(explained)
        }
    })
    .await;
    let decision = explained.decision.unwrap();
    assert_eq!(decision.region, "west", "{}", explained.text);
    assert_eq!(candidate(&decision, "west").open_tickets, 0);
    let east_score = candidate(&decision, "east").score.unwrap();
    assert!(
        (east_score.load - 0.10).abs() < 1e-9,
        "east's free capacity is 10 of 100: {east_score:?}"
    );
    assert!(explained.text.contains("90/100"), "{}", explained.text);
    assert_eq!(
        route(&mut router, attributes())
            .await
            .decision
            .unwrap()
            .region,
        "west"
    );
    mesh.stop().await;
}
