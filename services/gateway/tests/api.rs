//! The gateway, black box: started through `run` on a loopback socket, over
//! SQLite always and PostgreSQL whenever `DATABASE_URL` is set, spoken to
//! with the generated gRPC client.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{net::SocketAddr, time::Duration};

use meridian_core::RegionId;
use meridian_gateway::{GatewayConfig, REGION_HEADER, TlsFiles, error::OWNER_REGION_KEY};
use meridian_proto::v1::{
    self, ticket_service_client::TicketServiceClient, watch_events_request::Scope,
};
use meridian_test_support::{Backing, TestDatabase};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_stream::StreamExt;
use tonic::{Code, Request, transport::Channel};

struct Gateway {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<meridian_gateway::Result<()>>,
    db: TestDatabase,
}

impl Gateway {
    async fn start(backing: Backing, tune: impl FnOnce(&mut GatewayConfig)) -> Option<Gateway> {
        let db = TestDatabase::new(backing).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let regions = ["us-east", "eu-west", "apac-south"]
            .map(|r| RegionId::new(r).unwrap())
            .to_vec();
        let mut config = GatewayConfig::new(regions[0].clone(), regions, addr, db.config());
        tune(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(meridian_gateway::run(config, listener, async {
            let _ = stopped.await;
        }));
        Some(Gateway {
            addr,
            stop: Some(stop),
            task,
            db,
        })
    }

    async fn client(&self) -> TicketServiceClient<Channel> {
        let url = format!("http://{}", self.addr);
        for _ in 0..100 {
            if let Ok(client) = TicketServiceClient::connect(url.clone()).await {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("gateway at {url} never accepted a connection");
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
        self.db.drop_now().await;
    }
}

fn create_request(subject: &str) -> v1::CreateTicketRequest {
    v1::CreateTicketRequest {
        subject: subject.into(),
        body: "it broke".into(),
        customer: "acme".into(),
        tier: "premium".into(),
        skills: vec!["networking".into()],
        language: "en".into(),
        residency: vec![],
        priority: v1::Priority::High.into(),
        idempotency_key: String::new(),
    }
}

fn as_region<T>(message: T, region: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(REGION_HEADER, region.parse().unwrap());
    request
}

async fn count(client: &mut TicketServiceClient<Channel>) -> usize {
    let page = client
        .list_tickets(v1::ListTicketsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    page.tickets.len()
}

/// Runs a test body against every available backend.
macro_rules! on_every_backend {
    ($name:ident, |$gw:ident| $body:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for backing in Backing::available() {
                let Some($gw) = Gateway::start(backing, |_| {}).await else { continue };
                $body
                $gw.stop().await;
            }
        }
    };
}

on_every_backend!(create_get_and_list, |gw| {
    let mut client = gw.client().await;
    let created = client
        .create_ticket(create_request("VPN down"))
        .await
        .unwrap()
        .into_inner();
    let ticket = created.ticket.unwrap();
    assert_eq!(ticket.status, v1::Status::New as i32);
    assert_eq!(ticket.owner.as_ref().unwrap().owner_region, "us-east");
    assert_eq!(
        ticket.owner.as_ref().unwrap().epoch,
        0,
        "us-east has index 0, so its first epoch is 0"
    );
    assert_eq!(created.origin_seq, 1);

    let got = client
        .get_ticket(v1::GetTicketRequest {
            ticket_id: ticket.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.ticket.unwrap(), ticket, "{:?}", gw.db.backing);

    client
        .create_ticket(create_request("Mail slow"))
        .await
        .unwrap();
    let listed = client
        .list_tickets(v1::ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let subjects: Vec<_> = listed.tickets.iter().map(|t| t.subject.as_str()).collect();
    assert_eq!(subjects, ["VPN down", "Mail slow"], "creation order");
    assert!(listed.next_page_token.is_empty());
});

on_every_backend!(get_status_counts_the_queue_by_status, |gw| {
    let mut client = gw.client().await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            client
                .create_ticket(create_request(&format!("q{i}")))
                .await
                .unwrap()
                .into_inner()
                .ticket
                .unwrap()
                .id,
        );
    }
    for (id, status) in [
        (&ids[0], v1::Status::Open),
        (&ids[1], v1::Status::Open),
        (&ids[2], v1::Status::Solved),
    ] {
        let update = v1::UpdateTicketRequest {
            ticket_id: id.clone(),
            status: Some(status.into()),
            ..Default::default()
        };
        client.update_ticket(update).await.unwrap();
    }
    let status = client
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let queue: Vec<(&str, u64)> = status
        .queue_by_status
        .iter()
        .map(|(s, n)| (s.as_str(), *n))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(
        queue,
        [("new", 1), ("open", 2), ("solved", 1)],
        "{:?}",
        gw.db.backing
    );
    assert_eq!(
        status.sla_at_risk, 0,
        "fresh tickets are far from their SLA targets"
    );
});

on_every_backend!(list_filters_and_pages, |gw| {
    let mut client = gw.client().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let t = client
            .create_ticket(create_request(&format!("t{i}")))
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap();
        ids.push(t.id);
    }
    let update = v1::UpdateTicketRequest {
        ticket_id: ids[2].clone(),
        status: Some(v1::Status::Open.into()),
        assignee: Some("ana".into()),
        ..Default::default()
    };
    client.update_ticket(update).await.unwrap();

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_tickets(v1::ListTicketsRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.tickets.len() <= 3);
        seen.extend(page.tickets.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids, "pages cover every ticket once, in order");

    let open = client
        .list_tickets(v1::ListTicketsRequest {
            status: v1::Status::Open.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        open.tickets.iter().map(|t| &t.id).collect::<Vec<_>>(),
        [&ids[2]]
    );
    let ana = client
        .list_tickets(v1::ListTicketsRequest {
            assignee: "ana".into(),
            owner_region: "us-east".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ana.tickets.len(), 1);
    let elsewhere = client
        .list_tickets(v1::ListTicketsRequest {
            owner_region: "eu-west".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(elsewhere.tickets.is_empty());
    let basic = client
        .list_tickets(v1::ListTicketsRequest {
            tier: "basic".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(basic.tickets.is_empty());
});

on_every_backend!(search_finds_text_and_notes_in_list_order_and_pages, |gw| {
    let mut client = gw.client().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut request = create_request(&format!("Printer jam {i}"));
        request.customer = format!("buyer{i}@example.com");
        let ticket = client
            .create_ticket(request)
            .await
            .unwrap()
            .into_inner()
            .ticket
            .unwrap();
        ids.push(ticket.id);
    }
    client
        .create_ticket(create_request("VPN down"))
        .await
        .unwrap();
    client
        .add_note(v1::AddNoteRequest {
            ticket_id: ids[3].clone(),
            author: "ana".into(),
            body: "Toner replaced, waiting on the courier".into(),
            visibility: 0,
            note_id: String::new(),
        })
        .await
        .unwrap();
    let search = |query: &str| v1::SearchTicketsRequest {
        query: query.into(),
        ..Default::default()
    };
    let found = |page: v1::ListTicketsResponse| -> Vec<String> {
        page.tickets.into_iter().map(|t| t.id).collect()
    };

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .search_tickets(v1::SearchTicketsRequest {
                page_size: 2,
                page_token: token.clone(),
                ..search("printer")
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.tickets.len() <= 2);
        seen.extend(page.tickets.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids, "pages cover every match once, in list order");
    for (query, expected) in [
        ("courier", vec![ids[3].clone()]),
        ("jam cour", vec![ids[3].clone()]),
        ("buyer2@example.com", vec![ids[2].clone()]),
        (r#"printer" OR "vpn"#, vec![]),
    ] {
        let page = client.search_tickets(search(query)).await.unwrap();
        assert_eq!(found(page.into_inner()), expected, "{query:?}");
    }
    let elsewhere = client
        .search_tickets(v1::SearchTicketsRequest {
            owner_region: "eu-west".into(),
            ..search("printer")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(elsewhere.tickets.is_empty());
    let open = client
        .search_tickets(v1::SearchTicketsRequest {
            status: v1::Status::Open.into(),
            ..search("printer")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(open.tickets.is_empty(), "every ticket is new");

    for (request, field) in [
        (search(""), "query: holds no letter or digit"),
        (search("?! -- ()"), "query: holds no letter or digit"),
        (search(&"w ".repeat(17)), "query: holds 17 words"),
        (
            v1::SearchTicketsRequest {
                page_size: 501,
                ..search("printer")
            },
            "page_size: is 501; the limit is 500",
        ),
        (
            v1::SearchTicketsRequest {
                page_token: "nonsense".into(),
                ..search("printer")
            },
            "page_token",
        ),
        (
            v1::SearchTicketsRequest {
                owner_region: "Nowhere".into(),
                ..search("printer")
            },
            "owner_region",
        ),
    ] {
        let status = client.search_tickets(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{field}: {status:?}");
    }
});

on_every_backend!(non_owner_update_is_refused_and_changes_nothing, |gw| {
    let mut client = gw.client().await;
    let ticket = client
        .create_ticket(create_request("VPN down"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let update = v1::UpdateTicketRequest {
        ticket_id: ticket.id.clone(),
        status: Some(v1::Status::Solved.into()),
        ..Default::default()
    };
    let refused = client
        .update_ticket(as_region(update.clone(), "eu-west"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(refused.message(), "ticket is owned by us-east at epoch 0");
    assert_eq!(refused.metadata().get(OWNER_REGION_KEY).unwrap(), "us-east");

    let after = client
        .get_ticket(v1::GetTicketRequest {
            ticket_id: ticket.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after.ticket.unwrap(),
        ticket,
        "a refused write changes nothing"
    );

    // The owner may; notes may come from anywhere.
    let updated = client
        .update_ticket(as_region(update, "us-east"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.ticket.unwrap().status, v1::Status::Solved as i32);
    let note = v1::AddNoteRequest {
        ticket_id: ticket.id.clone(),
        author: "eu agent".into(),
        body: "saw it too".into(),
        visibility: 0,
        note_id: String::new(),
    };
    client.add_note(as_region(note, "eu-west")).await.unwrap();
    let got = client
        .get_ticket(v1::GetTicketRequest {
            ticket_id: ticket.id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.notes.len(), 1);
    assert_eq!(got.notes[0].body, "saw it too");
});

on_every_backend!(bad_requests_name_the_field_and_store_nothing, |gw| {
    let mut client = gw.client().await;
    let ticket = client
        .create_ticket(create_request("keep me"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();

    let mut cases: Vec<(v1::CreateTicketRequest, &str)> = Vec::new();
    let mut r = create_request("x");
    r.subject.clear();
    cases.push((r, "subject: must not be empty"));
    let mut r = create_request("x");
    r.subject = "a\u{7}b".into();
    cases.push((r, "subject: contains control character U+0007"));
    let mut r = create_request("x");
    r.priority = 99;
    cases.push((r, "priority"));
    let mut r = create_request("x");
    r.skills.push("Not A Slug".into());
    cases.push((r, "skills[1]"));
    let mut r = create_request("x");
    r.residency.push("".into());
    cases.push((r, "residency[0]"));
    let mut r = create_request("x");
    r.customer = "c".repeat(201);
    cases.push((r, "customer"));
    for (request, field) in cases {
        let err = client.create_ticket(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }

    let err = client
        .get_ticket(v1::GetTicketRequest {
            ticket_id: "not-a-uuid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("ticket_id: "),
        "{}",
        err.message()
    );
    let missing = "0190f0b8-7e1a-7000-8000-000000000000";
    let err = client
        .get_ticket(v1::GetTicketRequest {
            ticket_id: missing.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let err = client
        .list_tickets(v1::ListTicketsRequest {
            page_size: 501,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with("page_size: "),
        "{}",
        err.message()
    );

    let update = v1::UpdateTicketRequest {
        ticket_id: ticket.id.clone(),
        ..Default::default()
    };
    let err = client.update_ticket(update).await.unwrap_err();
    assert_eq!(err.message(), "update: names no field to change");
    // new -> closed is not a legal move: a precondition of the ticket's
    // state, not a malformed request.
    let update = v1::UpdateTicketRequest {
        ticket_id: ticket.id.clone(),
        status: Some(v1::Status::Closed.into()),
        ..Default::default()
    };
    let err = client.update_ticket(update).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "status: cannot go from new to closed");

    let err = client
        .update_ticket(as_region(v1::UpdateTicketRequest::default(), "Bad Region"))
        .await
        .unwrap_err();
    assert!(
        err.message().starts_with("meridian-region: "),
        "{}",
        err.message()
    );

    let note = v1::AddNoteRequest {
        ticket_id: ticket.id.clone(),
        author: "a".repeat(201),
        body: "b".into(),
        visibility: 0,
        note_id: String::new(),
    };
    assert!(
        client
            .add_note(note)
            .await
            .unwrap_err()
            .message()
            .starts_with("author: ")
    );

    // A message over the size limit is refused before it is decoded.
    let mut huge = create_request("huge");
    huge.body = "x".repeat(300 * 1024);
    let err = client.create_ticket(huge).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("262144 bytes (limits.request_bytes_max)"),
        "{}",
        err.message()
    );

    assert_eq!(
        count(&mut client).await,
        1,
        "no refused request stored anything"
    );
    let kept = client
        .get_ticket(v1::GetTicketRequest {
            ticket_id: ticket.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.ticket.unwrap(), ticket);
    assert!(kept.notes.is_empty());
});

on_every_backend!(watch_streams_backlog_then_live_events, |gw| {
    let mut client = gw.client().await;
    let first = client
        .create_ticket(create_request("one"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let watch = v1::WatchEventsRequest {
        scope: Some(Scope::Region("us-east".into())),
        after_seq: 0,
    };
    let mut region_events = client.watch_events(watch).await.unwrap().into_inner();
    let watch = v1::WatchEventsRequest {
        scope: Some(Scope::TicketId(first.id.clone())),
        after_seq: 0,
    };
    let mut ticket_events = client.watch_events(watch).await.unwrap().into_inner();

    let backlog = region_events.next().await.unwrap().unwrap();
    assert_eq!(
        (backlog.origin_seq, backlog.kind.as_str()),
        (1, "ticket_created")
    );
    assert_eq!(
        ticket_events.next().await.unwrap().unwrap().kind,
        "ticket_created"
    );

    client.create_ticket(create_request("two")).await.unwrap();
    let note = v1::AddNoteRequest {
        ticket_id: first.id.clone(),
        author: "bo".into(),
        body: "looking".into(),
        visibility: 0,
        note_id: String::new(),
    };
    client.add_note(note).await.unwrap();

    let live: Vec<_> = (&mut region_events)
        .take(2)
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert_eq!(
        live.iter()
            .map(|e| (e.origin_seq, e.kind.as_str()))
            .collect::<Vec<_>>(),
        [(2, "ticket_created"), (3, "note_added")]
    );
    let only_ours = ticket_events.next().await.unwrap().unwrap();
    assert_eq!(
        (only_ours.origin_seq, only_ours.kind.as_str()),
        (3, "note_added"),
        "the other ticket's event is filtered out"
    );

    let resumed = v1::WatchEventsRequest {
        scope: Some(Scope::Region("us-east".into())),
        after_seq: 2,
    };
    let mut resumed = client.watch_events(resumed).await.unwrap().into_inner();
    assert_eq!(
        resumed.next().await.unwrap().unwrap().origin_seq,
        3,
        "after_seq resumes where asked"
    );

    let err = client
        .watch_events(v1::WatchEventsRequest::default())
        .await
        .unwrap_err();
    assert!(err.message().starts_with("scope: "), "{}", err.message());
});

#[tokio::test]
async fn health_reports_serving() {
    let gw = Gateway::start(Backing::Sqlite, |_| {}).await.unwrap();
    let _ = gw.client().await;
    let channel = Channel::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let check = tonic_health::pb::HealthCheckRequest {
        service: "meridian.v1.TicketService".into(),
    };
    let status = health.check(check).await.unwrap().into_inner().status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    gw.stop().await;
}

#[tokio::test]
async fn clients_are_served_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.path().join("gateway.pem");
    let key = dir.path().join("gateway-key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let tls = TlsFiles { cert, key };
    let gw = Gateway::start(Backing::Sqlite, |c| c.tls = Some(tls.clone()))
        .await
        .unwrap();

    let endpoint = Channel::from_shared(format!("https://localhost:{}", gw.addr.port()))
        .unwrap()
        .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(certified.cert.pem()),
        ))
        .unwrap();
    let mut client = None;
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            client = Some(TicketServiceClient::new(channel));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = client.expect("TLS client connects");
    let created = client
        .create_ticket(create_request("over tls"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.ticket.unwrap().subject, "over tls");

    // A plaintext client gets no answer from a TLS port.
    let plain = TicketServiceClient::connect(format!("http://{}", gw.addr)).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut plain) => plain
            .list_tickets(v1::ListTicketsRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "plaintext must not be served on a TLS port");
    gw.stop().await;
}

#[tokio::test]
async fn a_bad_tls_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let tls = TlsFiles {
        cert: cert.clone(),
        key: dir.path().join("missing.pem"),
    };
    let gw = Gateway::start(Backing::Sqlite, |c| c.tls = Some(tls))
        .await
        .unwrap();
    let err = gw.task.await.unwrap().unwrap_err().to_string();
    assert!(
        err.starts_with("tls: tls.cert ") && err.contains("not a PEM certificate"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_watch_streams() {
    let mut gw = Gateway::start(Backing::Sqlite, |_| {}).await.unwrap();
    let mut client = gw.client().await;
    let watch = v1::WatchEventsRequest {
        scope: Some(Scope::Region("us-east".into())),
        after_seq: 0,
    };
    let mut events = client.watch_events(watch).await.unwrap().into_inner();
    let _ = gw.stop.take().unwrap().send(());
    let stopped = tokio::time::timeout(Duration::from_secs(10), &mut gw.task).await;
    assert!(
        stopped.is_ok(),
        "graceful shutdown must not wait for a watch stream to end by itself"
    );
    let ended = events.next().await;
    assert!(
        matches!(&ended, Some(Err(status)) if status.code() == Code::Unavailable),
        "{ended:?}"
    );
}
