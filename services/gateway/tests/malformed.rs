//! Oversized and malformed messages against a running three-region mesh,
//! on the public port and on the mutual-TLS mesh port: protobuf bytes
//! that do not decode, a request over the size limit, field values out of
//! range, forged handoff calls and forged replication frames. Each is
//! refused with an error naming what was wrong, and afterwards every
//! region's stored tickets, notes and events are exactly what they were.
//! (Per-field validation of well-formed requests is `api.rs`'s; the
//! replication protocol's gaps and resends are `meridian-replication`'s
//! `protocol.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::{Buf, BufMut};
use common::{Mesh, Options, REGIONS, TRUST_DOMAIN, region};
use meridian_core::{EventEnvelope, RegionId};
use meridian_proto::v1::{self, replication_service_client::ReplicationServiceClient};
use meridian_store::{Store, TicketFilter, TicketRecord};
use meridian_tls::{MeshTls, PeerIdentity, Service, TrustDomain};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};

/// Sends bytes as they are and reads the answer as bytes: a client that
/// can say what no generated client would.
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

async fn raw_call(channel: Channel, path: &'static str, bytes: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        Request::new(bytes),
        PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// Bytes that are no protobuf message: field 1 as a varint whose bytes
/// never end.
fn garbage() -> Vec<u8> {
    vec![
        0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ]
}

/// What a region stores: every origin's log, and every ticket with its
/// notes and conflicts.
type Snapshot = (Vec<Vec<EventEnvelope>>, Vec<TicketRecord>);

async fn snapshot(mesh: &Mesh) -> Vec<Snapshot> {
    let mut all = Vec::new();
    for r in &mesh.regions {
        let store = Store::open(&r.db.config(), &r.name).await.unwrap();
        let mut logs = Vec::new();
        for origin in REGIONS {
            logs.push(
                store
                    .events_after(&region(origin), 0, 10_000)
                    .await
                    .unwrap(),
            );
        }
        let page = store
            .list_tickets(&TicketFilter {
                limit: 500,
                ..TicketFilter::default()
            })
            .await
            .unwrap();
        let mut tickets = Vec::new();
        for ticket in page.tickets {
            tickets.push(store.get_ticket(ticket.id).await.unwrap().unwrap());
        }
        store.close().await;
        all.push((logs, tickets));
    }
    all
}

fn gateway(name: &str) -> PeerIdentity {
    PeerIdentity::new(
        TrustDomain::new(TRUST_DOMAIN).unwrap(),
        region(name),
        Service::Gateway,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_are_refused_and_harm_nothing() {
    let mesh = Mesh::start(Options::default()).await;
    let mut us = mesh.client("us-east").await;
    let create = |subject: &str| v1::CreateTicketRequest {
        subject: subject.into(),
        customer: "acme".into(),
        tier: "premium".into(),
        ..Default::default()
    };
    let ticket = us
        .create_ticket(create("VPN down"))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    us.add_note(v1::AddNoteRequest {
        ticket_id: ticket.id.clone(),
        author: "ana".into(),
        body: "rebooted".into(),
        visibility: 0,
        note_id: String::new(),
    })
    .await
    .unwrap();
    mesh.client("eu-west")
        .await
        .create_ticket(create("Mail slow"))
        .await
        .unwrap();
    mesh.wait_quiet().await;
    let before = snapshot(&mesh).await;
    assert!(
        before
            .iter()
            .all(|(logs, tickets)| tickets.len() == 2
                && logs.iter().map(Vec::len).sum::<usize>() == 3)
    );

    // ---- the public port
    let public = Channel::from_shared(mesh.region("us-east").url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let refused = raw_call(
        public.clone(),
        "/meridian.v1.TicketService/CreateTicket",
        garbage(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::InvalidArgument,
        "the gRPC status for a message that does not parse: {refused:?}"
    );
    assert!(
        refused
            .message()
            .starts_with("failed to decode Protobuf message"),
        "{}",
        refused.message()
    );
    let refused = raw_call(
        public.clone(),
        "/meridian.v1.TicketService/AddNote",
        garbage(),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    let mut huge = create("huge");
    huge.body = "x".repeat(5 * 1024 * 1024);
    let refused = us.create_ticket(huge).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("limits.request_bytes_max"),
        "names the limit: {}",
        refused.message()
    );

    let out_of_range = v1::UpdateTicketRequest {
        ticket_id: ticket.id.clone(),
        status: Some(99),
        ..Default::default()
    };
    let refused = us.update_ticket(out_of_range).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().starts_with("status: "),
        "{}",
        refused.message()
    );
    let refused = us
        .handoff(v1::HandoffRequest {
            ticket_id: ticket.id.clone(),
            to_region: "Not A Region".into(),
            note: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().starts_with("to_region: ") || refused.message().starts_with("note"),
        "{}",
        refused.message()
    );

    // ---- the mesh port, as eu-west's gateway
    let tls = MeshTls::load(mesh.tls_files("eu-west")).unwrap();
    let mesh_addr = mesh.region("us-east").mesh_addr.to_string();
    let channel = tls.connect(&mesh_addr, gateway("us-east")).await.unwrap();
    let refused = raw_call(
        channel.clone(),
        "/meridian.v1.MeshService/AcceptHandoff",
        garbage(),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .starts_with("failed to decode Protobuf message"),
        "{}",
        refused.message()
    );

    let mut client = mesh.mesh_client("eu-west", "us-east").await;
    let oversized = v1::AcceptHandoffRequest {
        ticket_id: ticket.id.clone(),
        from_region: "eu-west".into(),
        offer_seq: 2,
        previous_epoch: 0,
        offer_events: Some(v1::EventBatch {
            events: vec![v1::Event {
                payload_json: "x".repeat(5 * 1024 * 1024),
                ..Default::default()
            }],
        }),
        ..Default::default()
    };
    let refused = client.accept_handoff(oversized).await.unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("limit"), "{}", refused.message());

    // Speaking for another region.
    let forged = v1::AcceptHandoffRequest {
        ticket_id: ticket.id.clone(),
        from_region: "apac-south".into(),
        offer_seq: 1,
        previous_epoch: 0,
        offer_events: None,
        ..Default::default()
    };
    let refused = client.accept_handoff(forged).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("may not speak for region apac-south"),
        "{}",
        refused.message()
    );

    // Carried events that do not end with the offer they claim.
    let eu_log = &before[1].0[1];
    let forged = v1::AcceptHandoffRequest {
        ticket_id: ticket.id.clone(),
        from_region: "eu-west".into(),
        offer_seq: 7,
        previous_epoch: 0,
        offer_events: Some(v1::EventBatch {
            events: vec![meridian_proto::convert::event_to_proto(&eu_log[0])],
        }),
        ..Default::default()
    };
    let refused = client.accept_handoff(forged).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(
        refused.message(),
        "offer_events.events: ends with event 1 of eu-west; it must end with event 7 of eu-west",
        "{refused:?}"
    );

    // ---- replication frames, as eu-west's gateway
    let replicate = |frames: Vec<v1::ReplicationFrame>| {
        let channel = channel.clone();
        async move {
            let (send, requests) = tokio::sync::mpsc::channel(8);
            for frame in frames {
                send.send(frame).await.unwrap();
            }
            let mut stream = ReplicationServiceClient::new(channel)
                .replicate(ReceiverStream::new(requests))
                .await?
                .into_inner();
            // The node answers with its own frames until it ends the stream.
            loop {
                match tokio::time::timeout(Duration::from_secs(10), stream.message())
                    .await
                    .expect("an answer within 10 s")
                {
                    Ok(Some(_)) => {}
                    Ok(None) => return Ok::<(), Status>(()),
                    Err(status) => {
                        drop(send);
                        return Err(status);
                    }
                }
            }
        }
    };
    let eu = region("eu-west");
    let hello = meridian_proto::replication::hello_to_proto(&eu, 2, 1);
    // Events of another origin in eu-west's stream.
    let mut forged: EventEnvelope = before[0].0[0][0].clone();
    forged.origin_region = RegionId::new("apac-south").unwrap();
    let batch = |event: &EventEnvelope| {
        meridian_proto::replication::batch_to_proto(vec![meridian_proto::convert::event_to_proto(
            event,
        )])
    };
    let status = replicate(vec![hello.clone(), batch(&forged)])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        "eu-west broke the replication protocol: sent events of apac-south: each region ships only its own log"
    );
    // A sequence number no log has.
    let mut zero = eu_log[0].clone();
    zero.origin_seq = 0;
    let status = replicate(vec![hello.clone(), batch(&zero)])
        .await
        .unwrap_err();
    assert!(
        status
            .message()
            .contains("batch.events[0].origin_seq: must be at least 1"),
        "{status:?}"
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // A number past the largest a store can hold.
    let mut huge_seq = meridian_proto::convert::event_to_proto(&eu_log[0]);
    huge_seq.origin_seq = u64::MAX;
    let status = replicate(vec![
        hello.clone(),
        meridian_proto::replication::batch_to_proto(vec![huge_seq]),
    ])
    .await
    .unwrap_err();
    assert!(
        status.message().contains("batch.events[0].origin_seq"),
        "{status:?}"
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // The event eu-west really wrote, with its payload changed to another ticket's.
    let mut moved = meridian_proto::convert::event_to_proto(&eu_log[0]);
    moved.ticket_id = ticket.id.clone();
    let status = replicate(vec![
        hello,
        meridian_proto::replication::batch_to_proto(vec![moved]),
    ])
    .await
    .unwrap_err();
    assert!(
        status
            .message()
            .contains("batch.events[0].payload_json.ticket.id"),
        "{status:?}"
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Nothing stored changed anywhere, and the mesh still works.
    mesh.wait_connected("us-east").await;
    assert_eq!(snapshot(&mesh).await, before);
    us.add_note(v1::AddNoteRequest {
        ticket_id: ticket.id.clone(),
        author: "ana".into(),
        body: "still here".into(),
        visibility: 0,
        note_id: String::new(),
    })
    .await
    .unwrap();
    mesh.check_invariants().await;
    mesh.stop().await;
}
