//! The handoff saga, both sides: the owner's offer (record
//! `HandoffOffered`, call the target, record a refusal or apply the
//! acceptance) and the target's answer (apply what the owner carried,
//! decide, record `HandoffAccepted`), and the log tails each carries to the
//! other. The handlers (`service::Handoff`, `mesh::AcceptHandoff`) and the
//! shift tasks call in here; this module calls out only to the shared
//! context, the peer link, the store and the core. Outcomes are typed
//! ([`ApiError::HandoffRefused`], [`ApiError::HandoffUnanswered`]), so the
//! metrics never read a message. Deep dive: `docs/handoff.md`.
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

use meridian_core::{Epoch, EventEnvelope, EventKind, Note, NoteId, RegionId, Ticket, TicketId};
use meridian_proto::{
    ConvertError,
    convert::{event_to_proto, ticket_to_proto},
    replication::batch_from_proto,
    v1,
};
use meridian_replication::{
    Replicator,
    residency::{Unvouched, for_peer},
};
use meridian_store::{Store, WriteMeta};
use meridian_telemetry::propagation::traceparent_of;
use tonic::metadata::MetadataMap;
use tracing::Instrument;

use crate::{
    context::TicketApi,
    error::{ApiError, code_name, from_core, from_store, invalid},
    metrics::HandoffOutcome,
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

// The owner's side.

/// Why this region would refuse a ticket offered to it now, if it would:
/// with rules, it must be on shift (or in its overlap window) and cover
/// every skill the ticket needs.
pub(crate) fn refusal_by_rules(api: &TicketApi, ticket: &Ticket) -> Option<String> {
    let rules = api.inner.rules.as_ref()?.current();
    let me = &api.inner.region;
    let Some(region) = rules.region(me.as_str()) else {
        return Some(format!(
            "{me} is not a region of rules {}",
            rules.version_id()
        ));
    };
    if let Some(missing) = ticket
        .skills
        .iter()
        .find(|skill| !region.covers(skill.as_str()))
    {
        return Some(format!("{me} does not cover skill {missing}"));
    }
    let now = api.inner.clock.now();
    let on_shift = rules.active_at(now).iter().any(|a| a.region == me.as_str());
    if !on_shift {
        return Some(format!(
            "{me} is not on shift at {now} (rules {})",
            rules.version_id()
        ));
    }
    None
}

/// Offers the ticket to `to` (or finds the offer already pending there),
/// asks `to` to accept, and records a refusal. One `handoff.offer` span
/// in the ticket's trace, linked to `caller_metadata`'s span if given.
pub(crate) async fn offer(
    api: &TicketApi,
    caller: &RegionId,
    id: TicketId,
    to: RegionId,
    handoff: meridian_core::HandoffNote,
    meta: WriteMeta,
) -> Result<v1::HandoffResponse, ApiError> {
    offer_traced(api, caller, id, to, handoff, meta, None).await
}

pub(crate) async fn offer_traced(
    api: &TicketApi,
    caller: &RegionId,
    id: TicketId,
    to: RegionId,
    handoff: meridian_core::HandoffNote,
    mut meta: WriteMeta,
    caller_metadata: Option<&MetadataMap>,
) -> Result<v1::HandoffResponse, ApiError> {
    let span = spans::ticket_span(Step::HandoffOffer, &api.inner.region, id, caller_metadata);
    span.record("meridian.handoff.to", to.as_str());
    // The offer's envelope names this span, so the target's apply and
    // answer link to it.
    meta.traceparent = traceparent_of(&span).or(meta.traceparent);
    let started = std::time::Instant::now();
    let result = offer_in_span(api, caller, id, to, handoff, meta)
        .instrument(span.clone())
        .await;
    let outcome = match &result {
        Ok(answer) => {
            if let Some(owner) = answer.ticket.as_ref().and_then(|t| t.owner.as_ref()) {
                span.record("meridian.epoch", owner.epoch);
            }
            spans::record_outcome(&span, "accepted", None);
            Some(HandoffOutcome::Accepted)
        }
        Err(error) => {
            let outcome = match error {
                ApiError::HandoffRefused { .. } => Some(HandoffOutcome::Refused),
                ApiError::HandoffUnanswered { .. } => Some(HandoffOutcome::Unanswered),
                // Refused before anything was offered (bad request,
                // not the owner): not a handoff.
                error
                    if matches!(
                        error.code(),
                        tonic::Code::InvalidArgument
                            | tonic::Code::FailedPrecondition
                            | tonic::Code::NotFound
                    ) =>
                {
                    None
                }
                _ => Some(HandoffOutcome::Failed),
            };
            let name = outcome.map_or("rejected", HandoffOutcome::as_str);
            spans::record_outcome(&span, name, Some(&error.public_message()));
            outcome
        }
    };
    if let Some(outcome) = outcome {
        api.inner.metrics.handoff(outcome, started.elapsed());
    }
    result
}

async fn offer_in_span(
    api: &TicketApi,
    caller: &RegionId,
    id: TicketId,
    to: RegionId,
    handoff: meridian_core::HandoffNote,
    meta: WriteMeta,
) -> Result<v1::HandoffResponse, ApiError> {
    api.check_gate()?;
    let Some(mesh) = api.inner.mesh.clone() else {
        return Err(ApiError::NoMesh);
    };
    if to == api.inner.region {
        return Err(invalid(ConvertError::new(
            "to_region",
            format!("{to} is this gateway's own region; hand off to another"),
        )));
    }
    if !mesh.knows(&to) {
        return Err(invalid(ConvertError::new(
            "to_region",
            format!("{to} is not a peer of {}", api.inner.region),
        )));
    }
    let current = api.load(id).await?.ticket;
    // The ticket's creation, if this region wrote it, goes with the
    // offer: it tells the target the ticket's skills without a read
    // there. Read while the offer commits, so it costs no time.
    let creation = own_creation(api, id);
    let (offer, creation) = match &current.handoff_to {
        // A retry after the target could not be reached: resend the
        // pending offer rather than making a new one.
        Some(pending) if *pending == to && &current.owner.owner_region == caller => {
            let (offer, creation) =
                tokio::join!(api.inner.store.last_offer(id, &api.inner.region), creation);
            let offer = offer.map_err(from_store)?.ok_or_else(|| {
                ApiError::Internal(
                    "the ticket shows a pending offer but its event is missing".to_owned(),
                )
            })?;
            (offer, creation)
        }
        _ => {
            let epoch = current
                .decide_handoff(caller, &to, &handoff)
                .map_err(from_core)?;
            tracing::Span::current().record("meridian.epoch", epoch.raw());
            api.inner.metrics.handoff_note(handoff.auto);
            let note = Note {
                id: api.mint(meta.at, NoteId::mint)?,
                ticket_id: id,
                region: api.inner.region.clone(),
                author: handoff.author.clone(),
                body: handoff.render(&api.inner.region, &to),
                created_at: meta.at,
                auto: handoff.auto,
                visibility: meridian_core::Visibility::Internal,
            };
            let (offered, creation) = tokio::join!(
                api.inner
                    .store
                    .offer_handoff(id, epoch, to.clone(), handoff, note, meta),
                creation
            );
            (offered.map_err(from_store)?.1, creation)
        }
    };
    // The offer travels with the call, so the target need not wait for
    // replication to bring it.
    let offer_events = carried_tail(
        &api.inner.store,
        api.inner.replicator.as_ref(),
        &to,
        creation.as_ref(),
        &offer,
    )
    .await;
    let actor = offer.actor.clone();
    let ask = v1::AcceptHandoffRequest {
        ticket_id: id.to_string(),
        from_region: api.inner.region.to_string(),
        offer_seq: offer.origin_seq,
        previous_epoch: offer.epoch.raw(),
        offer_events,
        actor_subject: actor
            .as_ref()
            .map(|a| a.subject.clone())
            .unwrap_or_default(),
        actor_role: actor.as_ref().map(|a| a.role.clone()).unwrap_or_default(),
    };
    let answer = mesh.accept_handoff(&to, ask).await.map_err(|error| {
        tracing::warn!(ticket_id = %id, to = %to, error = %error, "handoff target did not answer; offer stays pending");
        ApiError::HandoffUnanswered {
            to: to.clone(),
            code: code_name(error.code()),
            message: error.public_message(),
        }
    })?;
    if !answer.accepted {
        let mut meta = api.meta_with(None);
        meta.actor = actor;
        api.inner
            .store
            .refuse_handoff(
                id,
                offer.epoch,
                to.clone(),
                answer.refusal_reason.clone(),
                meta,
            )
            .await
            .map_err(from_store)?;
        return Err(ApiError::HandoffRefused {
            to,
            reason: answer.refusal_reason,
        });
    }
    // The acceptance is durable in `to`; it must be applied here too, so
    // the answer and later reads show the new owner. The target carried
    // it back, and replication brings it as well: whichever lands first
    // will do (the store applies it once).
    let store = &api.inner.store;
    let replicated = store.wait_applied(&to, answer.accept_seq, api.handoff_wait());
    let applied_here = match &answer.accept_events {
        Some(batch) => {
            let carried = apply_carried_acceptance(store, &to, batch, answer.accept_seq);
            tokio::pin!(replicated, carried);
            tokio::select! {
                arrived = &mut replicated => arrived.map_err(from_store)?,
                applied = &mut carried => applied || replicated.await.map_err(from_store)?,
            }
        }
        None => replicated.await.map_err(from_store)?,
    };
    if !applied_here {
        tracing::warn!(ticket_id = %id, to = %to, "acceptance not replicated here yet; answering from the target's word");
    }
    // The target's record of the ticket is the one this region now
    // holds too (projections converge), and saves a read.
    let ticket = match answer.ticket {
        Some(ticket) if applied_here => ticket,
        _ => ticket_to_proto(&api.load(id).await?.ticket),
    };
    Ok(v1::HandoffResponse {
        ticket: Some(ticket),
        offer_seq: offer.origin_seq,
        accept_seq: answer.accept_seq,
    })
}

/// This region's `TicketCreated` of a ticket, if this region created it.
/// Only an aid to the handoff target, so a failed read is no error.
async fn own_creation(api: &TicketApi, id: TicketId) -> Option<EventEnvelope> {
    match api.inner.store.events_for_ticket(id).await {
        Ok(events) => events.into_iter().find(|e| {
            matches!(e.kind, meridian_core::EventKind::TicketCreated { .. })
                && e.origin_region == api.inner.region
        }),
        Err(error) => {
            tracing::debug!(ticket_id = %id, error = %error, "cannot read the ticket's creation to carry");
            None
        }
    }
}

// The target's side.

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
    /// Who asked for the handoff; the acceptance is recorded as theirs.
    actor: meridian_core::Actor,
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

/// The accepting side of one handoff: this region, asked by the owner.
struct Target<'a> {
    api: &'a TicketApi,
    replicator: Option<&'a Replicator>,
}

/// `AcceptHandoff`: decode the offer, apply what came with it, decide and
/// record the answer. A refusal is an answer, not an error.
pub(crate) async fn accept(
    api: &TicketApi,
    replicator: Option<&Replicator>,
    caller: &meridian_tls::PeerIdentity,
    ticket_id: TicketId,
    request: v1::AcceptHandoffRequest,
) -> Result<v1::AcceptHandoffResponse, ApiError> {
    Target { api, replicator }
        .accept_in_span(caller, ticket_id, request)
        .await
}

impl Target<'_> {
    /// `AcceptHandoff` past its span: decode the offer, apply what came
    /// with it, decide and record the answer.
    async fn accept_in_span(
        &self,
        caller: &meridian_tls::PeerIdentity,
        ticket_id: TicketId,
        request_inner: v1::AcceptHandoffRequest,
    ) -> Result<v1::AcceptHandoffResponse, ApiError> {
        let req = request_inner;
        let from =
            meridian_proto::convert::region_id("from_region", &req.from_region).map_err(invalid)?;
        // A gateway speaks only for its own region.
        meridian_tls::require_region(caller, &from)?;
        let actor = if req.actor_subject.is_empty() || req.actor_role.is_empty() {
            meridian_core::Actor::system("handoff")
        } else {
            meridian_core::Actor::new(req.actor_subject.clone(), req.actor_role.clone())
        };
        let offer = Offer {
            ticket_id,
            from,
            offer_seq: req.offer_seq,
            previous_epoch: Epoch::from_raw(req.previous_epoch),
            actor,
        };
        let carried = req
            .offer_events
            .as_ref()
            .map(|batch| self.carried_offer(batch, &offer))
            .transpose()
            .map_err(invalid)?;
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
                    accept_events: carried_tail(store, self.replicator, &offer.from, None, &event)
                        .await,
                    ticket: Some(ticket_to_proto(&ticket)),
                }
            }
            Outcome::AcceptedBefore(event) => v1::AcceptHandoffResponse {
                accepted: true,
                refusal_reason: String::new(),
                new_epoch: event.epoch.raw(),
                accept_seq: event.origin_seq,
                accept_events: carried_tail(store, self.replicator, &offer.from, None, &event)
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
    ) -> Result<Option<Outcome>, ApiError> {
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
        let meta = self.api.meta_with(None).by(offer.actor.clone());
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
    async fn accept_replicated(&self, offer: &Offer) -> Result<Outcome, ApiError> {
        let store = self.api.store();
        let me = self.api.region();
        let applied = store
            .wait_applied(&offer.from, offer.offer_seq, self.api.handoff_wait())
            .await
            .map_err(from_store)?;
        if !applied {
            return Err(ApiError::OfferNotApplied {
                me: me.clone(),
                from: offer.from.clone(),
                seq: offer.offer_seq,
            });
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
            .map_err(from_core)?;
        let meta = self.api.meta_with(None).by(offer.actor.clone());
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
            return Some(fenced.to_string());
        }
        if let Some(reason) =
            meridian_core::residency::refusal(&ticket.residency, self.api.region())
        {
            return Some(reason);
        }
        refusal_by_rules(self.api, ticket)
    }

    /// Asked again after accepting (the first answer was lost): the same
    /// answer, from the log. `None` while this region does not own the
    /// ticket past the offer's epoch.
    async fn accepted_before(
        &self,
        ticket: &Ticket,
        offer: &Offer,
    ) -> Result<Option<Outcome>, ApiError> {
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
            None => Err(ApiError::AlreadyOwned {
                ticket: ticket.id,
                owner: ticket.owner.owner_region.clone(),
                epoch: ticket.owner.epoch,
            }),
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
                actor: None,
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
                visibility: meridian_core::Visibility::Internal,
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
