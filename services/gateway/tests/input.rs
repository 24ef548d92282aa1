//! Input a careless or hostile client sends to a gateway's public port,
//! black box over loopback: control characters in every free-text field,
//! bytes that are not UTF-8, a huge id echoed back, and a residency region
//! the mesh does not have. Each is `INVALID_ARGUMENT` naming the field, and
//! nothing is stored.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::{Buf, BufMut};
use meridian_core::RegionId;
use meridian_gateway::GatewayConfig;
use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};
use meridian_test_support::{Backing, TestDatabase};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};

/// Bytes as they are, both ways: a client that sends what no generated
/// client would.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

fn create(subject: &str) -> v1::CreateTicketRequest {
    v1::CreateTicketRequest {
        subject: subject.into(),
        body: "line one\n\tline two".into(),
        customer: "acme".into(),
        tier: "standard".into(),
        ..Default::default()
    }
}

fn refused<T: std::fmt::Debug>(result: Result<tonic::Response<T>, Status>, field: &str) -> String {
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "expected {field}, got {:?}",
        status.message()
    );
    status.message().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let db = TestDatabase::new(Backing::Sqlite).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let regions: Vec<RegionId> = ["us-east", "eu-west"]
        .iter()
        .map(|r| RegionId::new(*r).unwrap())
        .collect();
    let config = GatewayConfig::new(regions[0].clone(), regions, addr, db.config());
    let (stop, stopped) = oneshot::channel::<()>();
    let gateway = tokio::spawn(meridian_gateway::run(config, listener, async {
        let _ = stopped.await;
    }));
    let mut client = None;
    for _ in 0..100 {
        if let Ok(connected) = TicketServiceClient::connect(format!("http://{addr}")).await {
            client = Some(connected);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = client.unwrap();
    // Newline and tab are allowed in a body; this one is stored.
    let ticket = client
        .create_ticket(create("keep me"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();

    // ---- control characters, in every free-text field
    for bad in ["\u{1b}[2J\u{1b}[31m", "nul\0", "bel\u{7}", "cr\rover"] {
        let mut r = create("x");
        r.subject = format!("s {bad}");
        refused(client.create_ticket(r).await, "subject");
        let mut r = create("x");
        r.body = format!("b {bad}");
        refused(client.create_ticket(r).await, "body");
        let mut r = create("x");
        r.customer = format!("c {bad}");
        refused(client.create_ticket(r).await, "customer");
        let update = v1::UpdateTicketRequest {
            ticket_id: ticket.id.clone(),
            assignee: Some(format!("a {bad}")),
            ..Default::default()
        };
        refused(client.update_ticket(update).await, "assignee");
        let note = |author: &str, body: &str| v1::AddNoteRequest {
            ticket_id: ticket.id.clone(),
            author: author.into(),
            body: body.into(),
            visibility: 0,
            note_id: String::new(),
        };
        let message = refused(
            client.add_note(note("ana", &format!("n {bad}"))).await,
            "body",
        );
        assert!(message.contains("control character U+"), "{message}");
        refused(
            client.add_note(note(&format!("ana {bad}"), "fine")).await,
            "author",
        );
        let handoff_note = v1::HandoffNote {
            current_status: v1::Status::Open as i32,
            last_action: "called them".into(),
            next_action: "call back".into(),
            deadline: None,
            text: "all good\n\twith a tab".into(),
            author: "ana".into(),
        };
        let with_note = |note: v1::HandoffNote| v1::HandoffRequest {
            ticket_id: ticket.id.clone(),
            to_region: "eu-west".into(),
            note: Some(note),
        };
        for (field, edit) in [
            (
                "note.text",
                (|n: &mut v1::HandoffNote, bad: &str| n.text = format!("t {bad}"))
                    as fn(&mut _, &str),
            ),
            ("note.last_action", |n, bad| {
                n.last_action = format!("l {bad}")
            }),
            ("note.next_action", |n, bad| {
                n.next_action = format!("n {bad}")
            }),
            ("note.author", |n, bad| n.author = format!("a {bad}")),
        ] {
            let mut note = handoff_note.clone();
            edit(&mut note, bad);
            refused(client.handoff(with_note(note)).await, field);
        }
    }
    // Single-line fields refuse a newline too.
    let mut r = create("x");
    r.subject = "two\nlines".into();
    refused(client.create_ticket(r).await, "subject");
    let note = v1::AddNoteRequest {
        ticket_id: ticket.id.clone(),
        author: "two\nlines".into(),
        body: "b".into(),
        visibility: 0,
        note_id: String::new(),
    };
    refused(client.add_note(note).await, "author");

    // ---- a string that is not UTF-8: field 1 (subject) of CreateTicket
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let bytes = vec![0x0a, 0x02, 0xff, 0xfe];
    let path = PathAndQuery::from_static("/meridian.v1.TicketService/CreateTicket");
    let status = grpc
        .unary(Request::new(bytes), path, RawCodec)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("CreateTicketRequest.subject"),
        "names the field: {}",
        status.message()
    );

    // ---- the echo of bad input is bounded
    let huge_id = "x".repeat(250_000);
    let status = client
        .get_ticket(v1::GetTicketRequest { ticket_id: huge_id })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("ticket_id: "),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("(250000 characters)"),
        "{}",
        status.message()
    );
    assert!(
        status.message().len() < 200,
        "grpc-message of {} bytes",
        status.message().len()
    );

    // ---- residency may name only the mesh's regions
    let mut r = create("pinned to mars");
    r.residency = vec!["mars".into()];
    let message = refused(client.create_ticket(r).await, "residency");
    assert!(message.contains("unknown region mars"), "{message}");
    assert!(message.contains("us-east, eu-west"), "{message}");

    // Nothing refused was stored.
    let page = client
        .list_tickets(v1::ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.tickets.len(), 1);
    let kept = client
        .get_ticket(v1::GetTicketRequest {
            ticket_id: ticket.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(kept.notes.is_empty());

    stop.send(()).unwrap();
    gateway.await.unwrap().unwrap();
    db.drop_now().await;
}
