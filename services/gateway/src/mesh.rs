//! The gateway's side of the mesh: the internal `MeshService` other
//! regions' gateways call over mutual TLS, and the client that calls theirs.
//!
//! Handoff A→B, as the design has it: A records `HandoffOffered` (fenced on
//! its epoch; A stops owner-scoped writes), then calls B's
//! `AcceptHandoff`, carrying the part of its log B has not acknowledged,
//! through the offer. B applies those events itself, idempotently (the
//! replication stream brings the same ones, and the store keeps each
//! `(origin_region, origin_seq)` once), and queues its `HandoffAccepted`
//! right behind them, so one group commit often covers both (waiting for
//! replication's apply always cost a commit of its own first; it still
//! does when replication reaches B's writer first). B decides before it writes (with rules, B must be on
//! shift and cover the ticket's skills); the acceptance itself is fenced in
//! the store on the offer being pending at its epoch, so if it cannot be
//! written in that one step (the carried events do not continue B's copy
//! of A's log, or the offer was not applied first), nothing of it is
//! written and B falls back to waiting for replication, as it does when A
//! carried nothing. B answers only once its acceptance is durable, and
//! carries it back the same way, so A shows the new owner without waiting
//! for replication either. A refusal comes back as an answer; A records
//! `HandoffRefused` and keeps the ticket.
//!
//! `TakeOver` is the one call the router makes here (with a router
//! certificate); a returning region's own gateway may make it too, for its
//! own region only. The work is in [`crate::failover`].

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use meridian_core::{Epoch, EventEnvelope, EventKind, RegionId, Ticket, TicketId};
use meridian_proto::{
    ConvertError,
    convert::{event_to_proto, ticket_to_proto},
    replication::batch_from_proto,
    v1::{self, mesh_service_client::MeshServiceClient, mesh_service_server::MeshService},
};
use meridian_replication::{
    Replicator,
    residency::{Unvouched, for_peer},
};
use meridian_store::Store;
use meridian_tls::{GatewayChannels, MeshTls, Service};
use tonic::{Request, Response, Status, transport::Channel};
use tracing::Instrument;

use crate::{
    error::from_store,
    failover::Failover,
    service::TicketApi,
    spans::{self, Step},
};

/// The most events of its own log a region carries in one handoff call: the
/// offer (or acceptance) and what the other side had not acknowledged
/// before it. A longer tail means replication is far behind; the other
/// side then waits for it rather than taking a large batch through a call
/// with a deadline.
pub(crate) const CARRIED_EVENTS_MAX: usize = 64;
/// The most payload bytes one handoff call carries (payloads are nearly all
/// of an event's size); well under the 4 MiB a mesh call may decode.
const CARRIED_PAYLOAD_BYTES_MAX: usize = 256 * 1024;

/// The part of this region's log that `peer` may lack, ending with `last`
/// (an event of this region's log the caller holds): everything after the
/// peer's acknowledged cursor. Acks follow durable applies, so the peer
/// has everything before; what it has beyond its ack it skips. `earlier`,
/// an older event of this log the peer may want to look at (the ticket's
/// creation), goes first if the tail does not hold it. `None` when the tail
/// is longer than one call carries or cannot be read; the peer then waits
/// for replication, so nothing is lost but time.
pub(crate) async fn carried_tail(
    store: &Store,
    replicator: Option<&Replicator>,
    peer: &RegionId,
    earlier: Option<&EventEnvelope>,
    last: &EventEnvelope,
) -> Option<v1::EventBatch> {
    let acked = replicator
        .and_then(|r| r.acked().borrow().get(peer).copied())
        .unwrap_or(0);
    let before = last.origin_seq.saturating_sub(acked).saturating_sub(1);
    // Room for `earlier` and `last` besides the tail before `last`.
    if before.saturating_add(2) > CARRIED_EVENTS_MAX as u64 {
        tracing::debug!(peer = %peer, acked, last = last.origin_seq, "peer is too far behind to carry the log tail");
        return None;
    }
    let mut tail: Vec<EventEnvelope> = Vec::new();
    if let Some(earlier) = earlier
        && earlier.origin_region == last.origin_region
        && earlier.origin_seq <= acked
    {
        tail.push(earlier.clone());
    }
    if before > 0 {
        let limit = u32::try_from(before).unwrap_or(u32::MAX);
        match store.events_after(store.local_region(), acked, limit).await {
            Ok(page) => tail.extend(page.into_iter().filter(|e| e.origin_seq < last.origin_seq)),
            Err(error) => {
                tracing::warn!(peer = %peer, error = %error, "cannot read the log tail to carry; the peer waits for replication");
                return None;
            }
        }
    }
    tail.push(last.clone());
    // Residency: the tail may hold other tickets' text, which goes to the
    // peer only if it is in their residency (the ticket handed off always
    // is: handoffs never leave the set).
    let events: Vec<v1::Event> = match for_peer(store, peer, &tail, Unvouched::Redact).await {
        Ok(shipped) => shipped.iter().map(|event| event_to_proto(event)).collect(),
        Err(error) => {
            tracing::warn!(peer = %peer, error = %error, "cannot read residencies to carry the log tail; the peer waits for replication");
            return None;
        }
    };
    let payload_bytes: usize = events.iter().map(|e| e.payload_json.len()).sum();
    (payload_bytes <= CARRIED_PAYLOAD_BYTES_MAX).then_some(v1::EventBatch { events })
}

/// Decodes events another region carried in a handoff call: its own log,
/// within the carry limits, ending with the event at `last_seq`.
fn carried_events(
    field: &str,
    batch: &v1::EventBatch,
    origin: &RegionId,
    last_seq: u64,
) -> Result<Vec<EventEnvelope>, ConvertError> {
    if batch.events.len() > CARRIED_EVENTS_MAX {
        return Err(ConvertError::new(
            format!("{field}.events"),
            format!(
                "has {} events; the limit is {CARRIED_EVENTS_MAX}",
                batch.events.len()
            ),
        ));
    }
    let events = batch_from_proto(field, batch)?;
    match events.last() {
        Some(last) if &last.origin_region == origin && last.origin_seq == last_seq => Ok(events),
        Some(last) => Err(ConvertError::new(
            format!("{field}.events"),
            format!(
                "ends with event {} of {}; it must end with event {last_seq} of {origin}",
                last.origin_seq, last.origin_region
            ),
        )),
        // batch_from_proto refuses an empty batch.
        None => Err(ConvertError::new(
            format!("{field}.events"),
            "must not be empty",
        )),
    }
}

/// The owner applies the acceptance the target carried back (see
/// [`carried_tail`]). True once this region has applied the target's log
/// through `accept_seq`; false when the events cannot be applied here, and
/// the caller waits for replication instead.
pub(crate) async fn apply_carried_acceptance(
    store: &Store,
    to: &RegionId,
    batch: &v1::EventBatch,
    accept_seq: u64,
) -> bool {
    let events = match carried_events("accept_events", batch, to, accept_seq) {
        Ok(events) => events,
        Err(error) => {
            tracing::warn!(to = %to, error = %error, "ignoring the acceptance the target carried; waiting for replication");
            return false;
        }
    };
    let spans = meridian_replication::trace::apply_spans(store.local_region(), 0, &events);
    let applied = store.apply_remote(to, events).await;
    drop(spans);
    match applied {
        Ok(cursor) => cursor >= accept_seq,
        Err(meridian_store::Error::Gap { expected, got, .. }) => {
            tracing::debug!(to = %to, expected, got, "carried acceptance does not continue the log here; waiting for replication");
            false
        }
        Err(error) => {
            tracing::warn!(to = %to, error = %error, "cannot apply the carried acceptance; waiting for replication");
            false
        }
    }
}

/// Calls to other regions' gateways.
pub struct MeshLink {
    channels: GatewayChannels,
    pub(crate) handoff_timeout: Duration,
}

impl MeshLink {
    pub fn new(tls: MeshTls, peers: BTreeMap<RegionId, String>, handoff_timeout: Duration) -> Self {
        Self {
            channels: GatewayChannels::new(tls, peers),
            handoff_timeout,
        }
    }

    pub(crate) fn knows(&self, region: &RegionId) -> bool {
        self.channels.knows(region)
    }

    /// A channel to `region`'s gateway, which must prove it is that
    /// region's gateway. Channels connect lazily and are reused.
    fn channel(&self, region: &RegionId) -> Result<Channel, Status> {
        self.channels.channel(region).map_err(|e| {
            tracing::error!(peer = %region, error = %e, "cannot set up a channel to the peer");
            Status::unavailable(format!("cannot reach {region}: {e}"))
        })
    }

    pub(crate) async fn accept_handoff(
        &self,
        to: &RegionId,
        request: v1::AcceptHandoffRequest,
    ) -> Result<v1::AcceptHandoffResponse, Status> {
        let mut client = MeshServiceClient::new(self.channel(to)?);
        let mut request = Request::new(request);
        request.set_timeout(self.handoff_timeout);
        // The target's answer span links to the offer span (the current one).
        meridian_telemetry::propagation::inject_current_metadata(request.metadata_mut());
        Ok(client.accept_handoff(request).await?.into_inner())
    }

    /// Asks `successor` to finish the takeover of this region and say where
    /// it ends in its log (a returning region).
    pub(crate) async fn take_over(
        &self,
        successor: &RegionId,
        request: v1::TakeOverRequest,
        timeout: Duration,
    ) -> Result<v1::TakeOverResponse, Status> {
        let mut client = MeshServiceClient::new(self.channel(successor)?);
        let mut request = Request::new(request);
        request.set_timeout(timeout);
        meridian_telemetry::propagation::inject_current_metadata(request.metadata_mut());
        Ok(client.take_over(request).await?.into_inner())
    }
}

/// The internal service: what other gateways (and, for takeovers, the
/// router) may ask of this one.
#[derive(Clone)]
pub struct MeshApi {
    api: TicketApi,
    failover: Option<Arc<Failover>>,
    replicator: Option<Replicator>,
}

impl MeshApi {
    pub fn new(api: TicketApi) -> Self {
        Self {
            api,
            failover: None,
            replicator: None,
        }
    }

    /// Serves `TakeOver` with this region's lease and takeovers.
    pub(crate) fn with_failover(
        mut self,
        failover: Option<Arc<Failover>>,
        replicator: Option<Replicator>,
    ) -> Self {
        self.failover = failover;
        self.replicator = replicator;
        self
    }
}

fn refused(reason: impl Into<String>) -> v1::AcceptHandoffResponse {
    v1::AcceptHandoffResponse {
        accepted: false,
        refusal_reason: reason.into(),
        ..Default::default()
    }
}

/// One `AcceptHandoff` request, decoded.
struct Offer {
    ticket_id: TicketId,
    from: RegionId,
    offer_seq: u64,
    previous_epoch: Epoch,
}

/// What the target made of an offer.
enum Outcome {
    /// Accepted now: the ticket as recorded with the acceptance, and the
    /// acceptance event.
    Accepted(Box<Ticket>, EventEnvelope),
    /// Accepted by an earlier call whose answer was lost: that acceptance.
    AcceptedBefore(EventEnvelope),
    Refused(String),
}

#[tonic::async_trait]
impl MeshService for MeshApi {
    async fn accept_handoff(
        &self,
        request: Request<v1::AcceptHandoffRequest>,
    ) -> Result<Response<v1::AcceptHandoffResponse>, Status> {
        let caller = meridian_tls::require(&request, &[Service::Gateway])?;
        let ticket_id =
            meridian_proto::convert::ticket_id("ticket_id", &request.get_ref().ticket_id)
                .map_err(crate::error::invalid)?;
        // The answer's span, in the ticket's trace, linked to the offer span.
        let span = spans::ticket_span(
            Step::HandoffAccept,
            self.api.region(),
            ticket_id,
            Some(request.metadata()),
        );
        span.record("meridian.handoff.to", self.api.region().as_str());
        let answer = self
            .accept_in_span(&caller, ticket_id, request.into_inner())
            .instrument(span.clone())
            .await;
        match &answer {
            Ok(answer) if answer.accepted => {
                span.record("meridian.epoch", answer.new_epoch);
                spans::record_outcome(&span, "accepted", None);
            }
            Ok(answer) => spans::record_outcome(&span, "refused", Some(&answer.refusal_reason)),
            Err(status) => spans::record_outcome(&span, "failed", Some(status.message())),
        }
        answer.map(Response::new)
    }

    async fn take_over(
        &self,
        request: Request<v1::TakeOverRequest>,
    ) -> Result<Response<v1::TakeOverResponse>, Status> {
        // The router decides takeovers; the failed region's own gateway,
        // returning, may ask to finish its takeover and learn where it ends.
        let caller = meridian_tls::require(&request, &[Service::Router, Service::Gateway])?;
        let req = request.into_inner();
        let failed = meridian_proto::convert::region_id("failed_region", &req.failed_region)
            .map_err(crate::error::invalid)?;
        if caller.service() == Service::Gateway {
            meridian_tls::require_region(&caller, &failed)?;
        }
        if req.fencing_token == 0 {
            return Err(Status::invalid_argument(
                "fencing_token: is required (the takeover's coordinator revision)",
            ));
        }
        // Unimplemented rather than a precondition: the router takes a
        // failed precondition as "nothing left to do", and a gateway
        // without a coordinator must be fixed, not skipped.
        let Some(failover) = &self.failover else {
            return Err(Status::unimplemented(format!(
                "{} has no [coordinator] configured; it cannot take regions over",
                self.api.region()
            )));
        };
        let token = meridian_coord::Revision::new(req.fencing_token);
        tracing::info!(from = %failed, fencing_token = %token, caller = %caller, "takeover asked");
        let answer = failover
            .take_over(&self.api, self.replicator.as_ref(), &failed, token)
            .await?;
        Ok(Response::new(answer))
    }
}

impl MeshApi {
    /// `AcceptHandoff` past its span: decode the offer, apply what came
    /// with it, decide and record the answer.
    async fn accept_in_span(
        &self,
        caller: &meridian_tls::PeerIdentity,
        ticket_id: TicketId,
        request_inner: v1::AcceptHandoffRequest,
    ) -> Result<v1::AcceptHandoffResponse, Status> {
        let req = request_inner;
        let from = meridian_proto::convert::region_id("from_region", &req.from_region)
            .map_err(crate::error::invalid)?;
        // A gateway speaks only for its own region.
        meridian_tls::require_region(caller, &from)?;
        let offer = Offer {
            ticket_id,
            from,
            offer_seq: req.offer_seq,
            previous_epoch: Epoch::from_raw(req.previous_epoch),
        };
        let carried = req
            .offer_events
            .as_ref()
            .map(|batch| self.carried_offer(batch, &offer))
            .transpose()
            .map_err(crate::error::invalid)?;
        let in_one_step = match carried {
            Some(events) => self.accept_carried(&offer, events).await?,
            None => None,
        };
        let outcome = match in_one_step {
            Some(outcome) => outcome,
            None => self.accept_replicated(&offer).await?,
        };
        let store = self.api.store();
        let answer = match outcome {
            Outcome::Refused(reason) => {
                tracing::info!(ticket_id = %offer.ticket_id, from = %offer.from, reason = %reason, "handoff refused");
                refused(reason)
            }
            Outcome::Accepted(ticket, event) => {
                tracing::info!(ticket_id = %offer.ticket_id, from = %offer.from, epoch = %event.epoch, seq = event.origin_seq, "handoff accepted");
                v1::AcceptHandoffResponse {
                    accepted: true,
                    refusal_reason: String::new(),
                    new_epoch: event.epoch.raw(),
                    accept_seq: event.origin_seq,
                    accept_events: carried_tail(
                        store,
                        self.replicator.as_ref(),
                        &offer.from,
                        None,
                        &event,
                    )
                    .await,
                    ticket: Some(ticket_to_proto(&ticket)),
                }
            }
            Outcome::AcceptedBefore(event) => v1::AcceptHandoffResponse {
                accepted: true,
                refusal_reason: String::new(),
                new_epoch: event.epoch.raw(),
                accept_seq: event.origin_seq,
                accept_events: carried_tail(
                    store,
                    self.replicator.as_ref(),
                    &offer.from,
                    None,
                    &event,
                )
                .await,
                ticket: None,
            },
        };
        Ok(answer)
    }

    /// Decodes and checks the events the owner carried: its log, ending with
    /// the offer this call is about, made to this region at the previous
    /// epoch.
    fn carried_offer(
        &self,
        batch: &v1::EventBatch,
        offer: &Offer,
    ) -> Result<Vec<EventEnvelope>, ConvertError> {
        let events = carried_events("offer_events", batch, &offer.from, offer.offer_seq)?;
        let me = self.api.region();
        match events.last() {
            Some(last)
                if last.ticket_id == offer.ticket_id
                    && last.epoch == offer.previous_epoch
                    && matches!(&last.kind, EventKind::HandoffOffered { to, .. } if to == me) =>
            {
                Ok(events)
            }
            _ => Err(ConvertError::new(
                "offer_events.events",
                format!(
                    "must end with the offer of ticket {} to {me} at epoch {}",
                    offer.ticket_id, offer.previous_epoch
                ),
            )),
        }
    }

    /// Accepts with the owner's log in hand: applies it and writes the
    /// acceptance right behind it. `None` when that one step did not
    /// succeed and the offer must come by replication instead.
    async fn accept_carried(
        &self,
        offer: &Offer,
        events: Vec<EventEnvelope>,
    ) -> Result<Option<Outcome>, Status> {
        let store = self.api.store();
        // The refusal rules look at the ticket's skills, which are fixed at
        // creation: the creation among the carried events serves, and
        // spares a read before the writes are queued (the sooner they are
        // queued, the likelier they share a commit with replication's
        // apply of the same offer). Without it, this region's copy serves.
        let created = events.iter().find_map(|event| match &event.kind {
            EventKind::TicketCreated { ticket } if ticket.id == offer.ticket_id => Some(&**ticket),
            _ => None,
        });
        let local = match created {
            Some(_) => None,
            None => store
                .get_ticket(offer.ticket_id)
                .await
                .map_err(from_store)?
                .map(|record| record.ticket),
        };
        if let Some(ticket) = &local
            && let Some(before) = self.accepted_before(ticket, offer).await?
        {
            return Ok(Some(before));
        }
        let Some(subject) = created.or(local.as_ref()) else {
            return Ok(None);
        };
        if let Some(reason) = self.refusal(subject) {
            // An ask repeated after an acceptance whose answer was lost gets
            // that acceptance, not a refusal: with the creation carried,
            // this region's copy is read only now.
            if local.is_none()
                && let Some(record) = store
                    .get_ticket(offer.ticket_id)
                    .await
                    .map_err(from_store)?
                && let Some(before) = self.accepted_before(&record.ticket, offer).await?
            {
                return Ok(Some(before));
            }
            return Ok(Some(Outcome::Refused(reason)));
        }
        // The offer is at the previous epoch, so this is the epoch
        // `Ticket::decide_accept` gives once it is applied; the store's
        // fence (offer pending here at that epoch) checks the rest.
        let new_epoch = offer.previous_epoch.next_for(self.api.region_index());
        let meta = self.api.meta_with(None);
        // `join!` queues the apply before the acceptance, so the writer
        // runs them in that order, in one transaction when it takes both
        // together. If the acceptance runs without the offer applied (the
        // carried events leave a gap here, say), its fenced statement
        // matches no row and nothing of it is written.
        let apply_spans =
            meridian_replication::trace::apply_spans(store.local_region(), 0, &events);
        let (applied, accepted) = tokio::join!(
            store.apply_remote(&offer.from, events),
            store.accept_handoff(
                offer.ticket_id,
                offer.from.clone(),
                offer.offer_seq,
                offer.previous_epoch,
                new_epoch,
                meta
            ),
        );
        drop(apply_spans);
        match accepted {
            Ok((ticket, event)) => Ok(Some(Outcome::Accepted(Box::new(ticket), event))),
            Err(error) => {
                tracing::debug!(
                    ticket_id = %offer.ticket_id,
                    from = %offer.from,
                    error = %error,
                    apply_error = ?applied.err(),
                    "carried offer not accepted in one step; waiting for replication"
                );
                Ok(None)
            }
        }
    }

    /// Accepts once replication has brought the owner's log up to the offer.
    async fn accept_replicated(&self, offer: &Offer) -> Result<Outcome, Status> {
        let store = self.api.store();
        let me = self.api.region();
        let applied = store
            .wait_applied(&offer.from, offer.offer_seq, self.api.handoff_wait())
            .await
            .map_err(from_store)?;
        if !applied {
            return Err(Status::unavailable(format!(
                "{me} has not yet applied {}'s log up to the offer (seq {}); retry",
                offer.from, offer.offer_seq
            )));
        }
        let Some(record) = store
            .get_ticket(offer.ticket_id)
            .await
            .map_err(from_store)?
        else {
            return Ok(Outcome::Refused(format!(
                "ticket {} is unknown in {me}",
                offer.ticket_id
            )));
        };
        let ticket = record.ticket;
        if let Some(before) = self.accepted_before(&ticket, offer).await? {
            return Ok(before);
        }
        if let Some(reason) = self.refusal(&ticket) {
            return Ok(Outcome::Refused(reason));
        }
        let new_epoch = ticket
            .decide_accept(me, self.api.region_index(), &offer.from)
            .map_err(crate::error::from_core)?;
        let meta = self.api.meta_with(None);
        let (ticket, event) = store
            .accept_handoff(
                offer.ticket_id,
                offer.from.clone(),
                offer.offer_seq,
                offer.previous_epoch,
                new_epoch,
                meta,
            )
            .await
            .map_err(from_store)?;
        Ok(Outcome::Accepted(Box::new(ticket), event))
    }

    /// Why this region refuses the ticket now, if it does: fenced, outside
    /// the ticket's residency (the owner never offers so; a guard), or the
    /// rules say no.
    fn refusal(&self, ticket: &Ticket) -> Option<String> {
        if let Err(fenced) = self.api.check_gate() {
            return Some(fenced.message().to_owned());
        }
        if let Some(reason) =
            meridian_core::residency::refusal(&ticket.residency, self.api.region())
        {
            return Some(reason);
        }
        self.api.handoff_refusal(ticket)
    }

    /// Asked again after accepting (the first answer was lost): the same
    /// answer, from the log. `None` while this region does not own the
    /// ticket past the offer's epoch.
    async fn accepted_before(
        &self,
        ticket: &Ticket,
        offer: &Offer,
    ) -> Result<Option<Outcome>, Status> {
        if &ticket.owner.owner_region != self.api.region()
            || ticket.owner.epoch <= offer.previous_epoch
        {
            return Ok(None);
        }
        let events = self
            .api
            .store()
            .events_for_ticket(ticket.id)
            .await
            .map_err(from_store)?;
        let accepted = events.into_iter().rev().find(|e| {
            matches!(&e.kind, EventKind::HandoffAccepted { from: f, offer_seq: s, .. }
                if *f == offer.from && *s == offer.offer_seq)
                && &e.origin_region == self.api.region()
        });
        match accepted {
            Some(event) => Ok(Some(Outcome::AcceptedBefore(event))),
            None => Err(Status::failed_precondition(format!(
                "ticket {} is already owned by {} at epoch {}",
                ticket.id, ticket.owner.owner_region, ticket.owner.epoch
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use jiff::Timestamp;
    use meridian_core::{
        HlcTimestamp, NewTicket, Note, NoteId, Ownership, Priority, Tier, residency::is_redacted,
    };
    use meridian_store::{StoreConfig, WriteMeta};

    use super::*;

    fn region(name: &str) -> RegionId {
        RegionId::new(name).unwrap()
    }

    /// The tail carried in a handoff call holds other tickets' events too:
    /// a ticket pinned away from the peer goes redacted, the rest whole.
    #[tokio::test]
    async fn the_carried_tail_is_redacted_for_the_peer() {
        let dir = tempfile::tempdir().unwrap();
        let us = region("us-east");
        let store = Store::open(&StoreConfig::sqlite_file(&dir.path().join("us.db")), &us)
            .await
            .unwrap();
        let at = Timestamp::from_millisecond(1_780_000_000_000).unwrap();
        let mut hlc = 0;
        let mut meta = || {
            hlc += 1;
            WriteMeta {
                hlc_time: HlcTimestamp::new(1_780_000_000_000, hlc),
                traceparent: None,
                at,
            }
        };
        let mut events = Vec::new();
        for (seed, subject, residency) in [
            (1u8, "secret subject", vec![us.clone()]),
            (2, "open subject", vec![]),
        ] {
            let new = NewTicket {
                subject: subject.into(),
                body: "body text".into(),
                customer: "acme".into(),
                tier: Tier::new("premium").unwrap(),
                skills: BTreeSet::new(),
                language: "en".into(),
                residency: residency.into_iter().collect(),
                priority: Priority::Normal,
            };
            let owner = Ownership::new(us.clone(), 0, Epoch::initial(0)).unwrap();
            let ticket = Ticket::create(TicketId::new_v7(at, [seed; 10]), new, owner, at).unwrap();
            let id = ticket.id;
            events.push(store.create_ticket(ticket, meta()).await.unwrap());
            let note = Note {
                id: NoteId::new_v7(at, [seed + 10; 10]),
                ticket_id: id,
                region: us.clone(),
                author: "ana".into(),
                body: format!("note on {subject}"),
                created_at: at,
                auto: false,
            };
            events.push(store.add_note(note, meta()).await.unwrap());
        }
        let last = events.last().unwrap();
        let batch = carried_tail(&store, None, &region("eu-west"), None, last)
            .await
            .unwrap();
        let carried = batch_from_proto("tail", &batch).unwrap();
        assert_eq!(
            carried.iter().map(|e| e.origin_seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        let redacted: Vec<bool> = carried.iter().map(|e| is_redacted(&e.kind)).collect();
        assert_eq!(redacted, [true, true, false, false]);
        assert!(!format!("{carried:?}").contains("secret"));
        // To a region of its residency, all of it.
        let batch = carried_tail(&store, None, &us, None, last).await.unwrap();
        assert_eq!(batch_from_proto("tail", &batch).unwrap(), events);
        store.close().await;
    }
}
