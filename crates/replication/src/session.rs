//! One replication stream with one peer, past both Hellos. The same code
//! runs on the dialling and the accepting side.
//!
//! Four tasks share the stream:
//! - the **shipper** pages this region's own log after the peer's cursor,
//!   then follows the store's commit broadcast, cutting batches by count and
//!   bytes; it rewinds when the peer asks for a resend, and falls back to
//!   paging whenever the broadcast lags;
//! - the **writer** owns the outgoing half: acks and resend requests first,
//!   then heartbeats, then batches. Acks and resends reach it through
//!   `watch` slots (only the latest matters), so the receiving tasks never
//!   wait on the outgoing half: two regions shipping big backlogs to each
//!   other cannot deadlock on each other's flow control;
//! - the **receiver** reads and decodes the peer's frames, notes acks and
//!   heartbeats, passes resends to the shipper and batches to the applier;
//! - the **applier** applies batches (merging queued ones into one store
//!   call), acks the new cursor, and answers a gap with one resend request.
//!
//! Every queue between them is bounded, so a slow peer slows only its own
//! stream, through HTTP/2 flow control; the store's writer never waits on
//! replication (its broadcast drops what a lagging stream has not read, and
//! the shipper pages that from the log instead).

use std::borrow::Borrow;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use meridian_core::{EventEnvelope, RegionId};
use meridian_proto::convert::event_to_proto;
use meridian_proto::replication::{
    ReplicationMessage, ack_to_proto, batch_to_proto, frame_from_proto, heartbeat_to_proto,
    resend_to_proto,
};
use meridian_proto::v1;
use prost::Message;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tonic::{Status, Streaming};

use crate::residency::{Unvouched, for_peer};
use crate::state::Shared;
use crate::{Error, Result};

/// The outgoing half of a stream: frames, or a final status.
pub(crate) type Outbound = mpsc::Sender<Result<v1::ReplicationFrame, Status>>;

/// Frames waiting for the transport.
pub(crate) const OUTBOUND_QUEUE: usize = 4;
/// Batches the shipper may have cut ahead of the writer.
const SHIP_QUEUE: usize = 2;
/// Received batches waiting for the applier.
const APPLY_QUEUE: usize = 2;
/// How many batches' worth of queued events the applier merges into one
/// store call.
const APPLY_MERGE_BATCHES: usize = 4;

/// What the peer said in its Hello.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerHello {
    /// The peer's durable cursor of this region's log.
    pub cursor: u64,
    /// The head of the peer's own log.
    pub head_seq: u64,
}

/// Runs the stream until it breaks, is replaced or replication shuts down,
/// and returns why it ended.
pub(crate) async fn run(
    shared: Arc<Shared>,
    peer: RegionId,
    hello: PeerHello,
    inbound: Streaming<v1::ReplicationFrame>,
    outbound: Outbound,
) -> Error {
    let (_guard, replaced) = shared.begin_session(&peer);
    let local_head = shared.local_head.load(Ordering::Relaxed);
    if hello.cursor > local_head {
        // The peer has applied events of ours this region no longer has: our
        // log was restored from an older backup. New events would reuse
        // those sequence numbers and the peer would take them for duplicates.
        tracing::error!(
            peer = %peer,
            peer_cursor = hello.cursor,
            local_head,
            "peer's cursor of our log is ahead of our log head; our log has lost events it had"
        );
    }
    shared.record_ack(&peer, hello.cursor);
    shared.record_peer_head(&peer, hello.head_seq, false);
    tracing::info!(peer = %peer, peer_cursor = hello.cursor, peer_head = hello.head_seq, local_head, "replication stream open");

    let (ship_tx, ship_rx) = mpsc::channel(SHIP_QUEUE);
    let (rewind_tx, rewind_rx) = watch::channel(0u64);
    let (ack_tx, ack_rx) = watch::channel(0u64);
    let (resend_tx, resend_rx) = watch::channel(0u64);
    let (apply_tx, apply_rx) = mpsc::channel(APPLY_QUEUE);
    let mut tasks = JoinSet::new();
    tasks.spawn(ship(
        shared.clone(),
        peer.clone(),
        hello.cursor + 1,
        ship_tx,
        rewind_rx,
    ));
    tasks.spawn(write(
        shared.clone(),
        peer.clone(),
        outbound.clone(),
        ship_rx,
        ack_rx,
        resend_rx,
    ));
    tasks.spawn(receive(
        shared.clone(),
        peer.clone(),
        inbound,
        apply_tx,
        rewind_tx,
    ));
    tasks.spawn(apply(
        shared.clone(),
        peer.clone(),
        apply_rx,
        ack_tx,
        resend_tx,
    ));

    let mut shutdown = shared.shutdown.subscribe();
    let reason = tokio::select! {
        _ = replaced => Error::Replaced { peer: peer.clone() },
        _ = shutdown.wait_for(|stop| *stop) => Error::Shutdown,
        reason = first_failure(&mut tasks, &peer) => reason,
    };
    tasks.abort_all();
    // Tell the peer why, if the transport still has room; it learns of the
    // end anyway when the stream closes.
    let _ = outbound.try_send(Err(reason.to_status()));
    match &reason {
        Error::Shutdown | Error::Replaced { .. } => {
            tracing::info!(peer = %peer, reason = %reason, "replication stream closed");
        }
        _ => tracing::warn!(peer = %peer, reason = %reason, "replication stream closed"),
    }
    shared.record_error(&peer, &reason.to_string());
    reason
}

/// How a stream task ended: it failed (the stream's reason to end), or a
/// task it talks to went away first.
enum Ended {
    Failed(Error),
    Orphaned,
}

impl From<Error> for Ended {
    fn from(error: Error) -> Self {
        Ended::Failed(error)
    }
}

impl From<meridian_store::Error> for Ended {
    fn from(error: meridian_store::Error) -> Self {
        Ended::Failed(error.into())
    }
}

type TaskResult = std::result::Result<Infallible, Ended>;

/// The reason the first failing task gave. Tasks orphaned by it may be seen
/// to end first (they run on other threads); they are passed over.
async fn first_failure(tasks: &mut JoinSet<TaskResult>, peer: &RegionId) -> Error {
    while let Some(ended) = tasks.join_next().await {
        match ended {
            Ok(Ok(never)) => match never {},
            Ok(Err(Ended::Failed(reason))) => return reason,
            Ok(Err(Ended::Orphaned)) => {}
            Err(join) => {
                return Error::Protocol {
                    peer: peer.clone(),
                    reason: format!("stream task failed: {join}"),
                };
            }
        }
    }
    Error::Closed { peer: peer.clone() }
}

// ---------------------------------------------------------------- shipping

/// What became of a batch the shipper handed on.
enum Handed {
    Queued,
    /// The peer asked for a resend from here first; the batch was dropped.
    Rewound(u64),
}

/// Cuts events into batch frames of at most `events_max` events and about
/// `bytes_max` bytes (a single larger event travels alone). Each frame comes
/// with the last sequence number it carries.
fn cut_batches<E: Borrow<EventEnvelope>>(
    events: &[E],
    events_max: usize,
    bytes_max: usize,
) -> Vec<(v1::ReplicationFrame, u64)> {
    let mut frames = Vec::new();
    let mut current: Vec<v1::Event> = Vec::new();
    let mut bytes = 0usize;
    let mut last_seq = 0u64;
    for event in events {
        let event = event.borrow();
        let encoded = event_to_proto(event);
        let size = encoded.encoded_len() + 4;
        if !current.is_empty() && (current.len() >= events_max || bytes + size > bytes_max) {
            frames.push((batch_to_proto(std::mem::take(&mut current)), last_seq));
            bytes = 0;
        }
        bytes += size;
        last_seq = event.origin_seq;
        current.push(encoded);
    }
    if !current.is_empty() {
        frames.push((batch_to_proto(current), last_seq));
    }
    frames
}

/// Ships this region's log from `next` on: the backlog from the log, then
/// live events, going back to the log whenever live delivery cannot be
/// trusted to be complete (lag, or an event out of sequence).
async fn ship(
    shared: Arc<Shared>,
    peer: RegionId,
    mut next: u64,
    out: mpsc::Sender<v1::ReplicationFrame>,
    mut rewind: watch::Receiver<u64>,
) -> TaskResult {
    let local = shared.local().clone();
    let store = &shared.store;
    let events_max = shared.config.batch_events_max;
    let bytes_max = shared.config.batch_bytes_max;
    let page_max = u32::try_from(events_max.saturating_mul(2)).unwrap_or(u32::MAX);
    // Subscribe before the first page, so that anything committed while the
    // backlog ships is seen live; the overlap is dropped by sequence number.
    let mut live = store.subscribe();

    'resync: loop {
        // The backlog, a page at a time, until the log has nothing after `next`.
        loop {
            if rewind.has_changed().unwrap_or(false) {
                next = *rewind.borrow_and_update();
            }
            let page = store
                .events_after(&local, next.saturating_sub(1), page_max)
                .await?;
            let Some(last) = page.last() else { break };
            shared.note_head(last.origin_seq);
            // Residency: a pinned ticket's text goes only to its regions.
            let page = for_peer(store.as_ref(), &peer, &page, Unvouched::Redact).await?;
            for (frame, last_seq) in cut_batches(&page, events_max, bytes_max) {
                match hand_on(&out, frame, &mut rewind).await? {
                    Handed::Queued => next = last_seq + 1,
                    Handed::Rewound(from) => {
                        next = from;
                        continue 'resync;
                    }
                }
            }
        }

        // Live: wait for the next commit, then take whatever else is ready.
        loop {
            let received = tokio::select! {
                biased;
                changed = rewind.changed() => {
                    changed.map_err(|_| Ended::Orphaned)?;
                    next = *rewind.borrow_and_update();
                    continue 'resync;
                }
                received = live.recv() => received,
            };
            let first = match received {
                Ok(event) => event,
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        missed,
                        next,
                        "replication shipper lagged behind the store; paging from the log"
                    );
                    continue 'resync;
                }
                Err(RecvError::Closed) => return Err(meridian_store::Error::Closed.into()),
            };
            if first.origin_region != local || first.origin_seq < next {
                continue;
            }
            if first.origin_seq > next {
                continue 'resync;
            }
            let mut events = vec![first];
            let mut expected = next + 1;
            let mut resync = false;
            while events.len() < events_max {
                match live.try_recv() {
                    Ok(event) if event.origin_region != local || event.origin_seq < expected => {}
                    Ok(event) if event.origin_seq == expected => {
                        expected += 1;
                        events.push(event);
                    }
                    Ok(_) | Err(TryRecvError::Lagged(_)) => {
                        resync = true;
                        break;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => return Err(meridian_store::Error::Closed.into()),
                }
            }
            shared.note_head(expected - 1);
            let events = for_peer(store.as_ref(), &peer, &events, Unvouched::Redact).await?;
            for (frame, last_seq) in cut_batches(&events, events_max, bytes_max) {
                match hand_on(&out, frame, &mut rewind).await? {
                    Handed::Queued => next = last_seq + 1,
                    Handed::Rewound(from) => {
                        next = from;
                        continue 'resync;
                    }
                }
            }
            if resync {
                continue 'resync;
            }
        }
    }
}

/// Queues a batch for the writer, unless the peer asks for a resend first.
async fn hand_on(
    out: &mpsc::Sender<v1::ReplicationFrame>,
    frame: v1::ReplicationFrame,
    rewind: &mut watch::Receiver<u64>,
) -> std::result::Result<Handed, Ended> {
    tokio::select! {
        biased;
        changed = rewind.changed() => {
            changed.map_err(|_| Ended::Orphaned)?;
            Ok(Handed::Rewound(*rewind.borrow_and_update()))
        }
        sent = out.send(frame) => {
            sent.map_err(|_| Ended::Orphaned)?;
            Ok(Handed::Queued)
        }
    }
}

// ----------------------------------------------------------------- writing

async fn write(
    shared: Arc<Shared>,
    peer: RegionId,
    outbound: Outbound,
    mut batches: mpsc::Receiver<v1::ReplicationFrame>,
    mut ack: watch::Receiver<u64>,
    mut resend: watch::Receiver<u64>,
) -> TaskResult {
    let mut heartbeat = tokio::time::interval(shared.config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            biased;
            changed = resend.changed() => {
                changed.map_err(|_| Ended::Orphaned)?;
                resend_to_proto(*resend.borrow_and_update())
            }
            changed = ack.changed() => {
                changed.map_err(|_| Ended::Orphaned)?;
                ack_to_proto(*ack.borrow_and_update())
            }
            _ = heartbeat.tick() => heartbeat_to_proto(shared.local_head.load(Ordering::Relaxed), shared.clock.now()),
            batch = batches.recv() => batch.ok_or(Ended::Orphaned)?,
        };
        outbound
            .send(Ok(frame))
            .await
            .map_err(|_| Error::Closed { peer: peer.clone() })?;
    }
}

// --------------------------------------------------------------- receiving

async fn receive(
    shared: Arc<Shared>,
    peer: RegionId,
    mut inbound: Streaming<v1::ReplicationFrame>,
    batches: mpsc::Sender<Vec<EventEnvelope>>,
    rewind: watch::Sender<u64>,
) -> TaskResult {
    let silence_max = shared.config.peer_silence_max;
    loop {
        let frame = match tokio::time::timeout(silence_max, inbound.message()).await {
            Err(_) => {
                return Err(Error::PeerSilent {
                    peer,
                    silent_ms: silence_max.as_millis(),
                }
                .into());
            }
            Ok(Err(status)) => return Err(remote(&peer, status).into()),
            Ok(Ok(None)) => return Err(Error::Closed { peer }.into()),
            Ok(Ok(Some(frame))) => frame,
        };
        let message = frame_from_proto(frame).map_err(|e| Error::Protocol {
            peer: peer.clone(),
            reason: e.to_string(),
        })?;
        match message {
            ReplicationMessage::Batch(events) => {
                if let Some(foreign) = events.iter().find(|event| event.origin_region != peer) {
                    return Err(Error::Protocol {
                        peer: peer.clone(),
                        reason: format!(
                            "sent events of {}: each region ships only its own log",
                            foreign.origin_region
                        ),
                    }
                    .into());
                }
                batches.send(events).await.map_err(|_| Ended::Orphaned)?;
            }
            ReplicationMessage::Ack { applied_seq } => shared.record_ack(&peer, applied_seq),
            ReplicationMessage::Resend { from_seq } => {
                tracing::info!(peer = %peer, from_seq, "peer asked for a resend; rewinding");
                rewind.send_replace(from_seq);
            }
            ReplicationMessage::Heartbeat { head_seq, sent_at } => {
                tracing::trace!(peer = %peer, head_seq, sent_at = %sent_at, "heartbeat");
                shared.record_peer_head(&peer, head_seq, true);
            }
            ReplicationMessage::Hello { .. } => {
                return Err(Error::Protocol {
                    peer: peer.clone(),
                    reason: "sent a second hello".into(),
                }
                .into());
            }
        }
    }
}

/// A status the peer (or the transport) ended the stream with.
pub(crate) fn remote(peer: &RegionId, status: Status) -> Error {
    Error::Remote {
        peer: peer.clone(),
        code: status.code(),
        message: status.message().to_owned(),
    }
}

// ----------------------------------------------------------------- applying

async fn apply(
    shared: Arc<Shared>,
    peer: RegionId,
    mut batches: mpsc::Receiver<Vec<EventEnvelope>>,
    ack: watch::Sender<u64>,
    resend: watch::Sender<u64>,
) -> TaskResult {
    let merge_max = shared
        .config
        .batch_events_max
        .saturating_mul(APPLY_MERGE_BATCHES);
    let mut resends = ResendRequests {
        peer: peer.clone(),
        slot: resend,
        pending: None,
        overdue: shared.config.peer_silence_max,
    };
    while let Some(mut events) = batches.recv().await {
        while events.len() < merge_max {
            match batches.try_recv() {
                Ok(more) => events.extend(more),
                Err(_) => break,
            }
        }
        let applied = shared.applied.borrow().get(&peer).copied().unwrap_or(0);
        let spans = crate::trace::apply_spans(shared.store.local_region(), applied, &events);
        let outcome = shared.store.apply_remote(&peer, events).await;
        drop(spans);
        match outcome {
            Ok(cursor) => {
                shared.record_applied(&peer, cursor);
                resends.answered_up_to(cursor);
                ack.send_replace(cursor);
            }
            Err(meridian_store::Error::Gap { expected, got, .. }) => {
                resends.ask(expected, Some(got))
            }
            Err(error) if error.is_retryable() => {
                // Nothing was applied; ask for the same events again once
                // the database has had a moment.
                tracing::warn!(peer = %peer, error = %error, "applying replicated events failed; will ask again");
                tokio::time::sleep(
                    shared
                        .config
                        .heartbeat_interval
                        .min(Duration::from_millis(500)),
                )
                .await;
                let cursor = shared.store.cursor(&peer).await?;
                resends.pending = None;
                resends.ask(cursor + 1, None);
            }
            Err(source) => return Err(Error::Apply { peer, source }.into()),
        }
    }
    Err(Ended::Orphaned)
}

/// The applier's resend requests. One gap shows again in every stale batch
/// already in flight behind it; those are the same gap and are not asked
/// again, unless the answer is overdue.
struct ResendRequests {
    peer: RegionId,
    slot: watch::Sender<u64>,
    /// The sequence number asked for and not yet applied, and when.
    pending: Option<(u64, tokio::time::Instant)>,
    overdue: Duration,
}

impl ResendRequests {
    fn ask(&mut self, from: u64, got: Option<u64>) {
        let now = tokio::time::Instant::now();
        if let Some((asked, at)) = self.pending
            && asked == from
            && now.duration_since(at) < self.overdue
        {
            return;
        }
        tracing::warn!(peer = %self.peer, expected = from, got, "replicated events do not continue the log; asking for a resend");
        self.pending = Some((from, now));
        self.slot.send_replace(from);
    }

    fn answered_up_to(&mut self, cursor: u64) {
        if self.pending.is_some_and(|(asked, _)| cursor >= asked) {
            self.pending = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use meridian_core::{Epoch, EventKind, HlcTimestamp, Note, NoteId, TicketId};

    use super::*;

    fn note_event(seq: u64, body_len: usize) -> EventEnvelope {
        let at = Timestamp::from_millisecond(1_750_000_000_000).unwrap();
        let ticket_id = TicketId::new_v7(at, [1; 10]);
        let region = RegionId::new("us-east").unwrap();
        EventEnvelope {
            origin_region: region.clone(),
            origin_seq: seq,
            ticket_id,
            epoch: Epoch::initial(0),
            hlc_time: HlcTimestamp::new(1_750_000_000_000, 0),
            traceparent: None,
            actor: None,
            kind: EventKind::NoteAdded {
                note: Note {
                    id: NoteId::new_v7(at, [2; 10]),
                    ticket_id,
                    region,
                    author: "ana".into(),
                    body: "x".repeat(body_len),
                    created_at: at,
                    auto: false,
                    visibility: meridian_core::Visibility::Internal,
                },
            },
        }
    }

    fn sizes(frames: &[(v1::ReplicationFrame, u64)]) -> Vec<(usize, u64)> {
        frames
            .iter()
            .map(|(frame, last)| match &frame.frame {
                Some(v1::replication_frame::Frame::Batch(batch)) => (batch.events.len(), *last),
                other => panic!("not a batch: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn batches_are_cut_by_count_and_bytes() {
        let events: Vec<EventEnvelope> = (1..=10).map(|seq| note_event(seq, 100)).collect();
        assert_eq!(
            sizes(&cut_batches(&events, 4, 1 << 20)),
            vec![(4, 4), (4, 8), (2, 10)]
        );
        let one = cut_batches(&events[..1], 4, 1 << 20);
        let one_size = one[0].0.encoded_len();
        // Room for two events of this size per batch, by bytes.
        assert_eq!(
            sizes(&cut_batches(&events, 100, one_size * 2 + 10)),
            vec![(2, 2), (2, 4), (2, 6), (2, 8), (2, 10)]
        );
        // An event larger than the byte cap travels alone rather than not at all.
        let big = vec![note_event(1, 50), note_event(2, 5_000), note_event(3, 50)];
        assert_eq!(
            sizes(&cut_batches(&big, 100, 1_000)),
            vec![(1, 1), (1, 2), (1, 3)]
        );
        assert!(cut_batches::<EventEnvelope>(&[], 4, 1000).is_empty());
    }
}
