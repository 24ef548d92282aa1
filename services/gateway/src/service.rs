//! `meridian.v1.TicketService`: decode and validate, ask the core, write
//! through the store, encode. Nothing else happens in a handler.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
};

use futures::Stream;
use meridian_core::{
    Clock, Epoch, EventEnvelope, Hlc, IdMinter, Note, NoteId, Ownership, RegionId, SlaDeadlines,
    Ticket, TicketChanges, TicketId,
};
use meridian_proto::{
    ConvertError,
    convert::{self, event_to_proto, note_to_proto, ticket_to_proto},
    timestamp_to_proto,
    v1::{self, ticket_service_server::TicketService, watch_events_request::Scope},
};
use meridian_replication::Replicator;
use meridian_rules_source::ActiveRules;
use meridian_store::{ConflictRecord, Store, TicketFilter, WriteMeta};
use meridian_telemetry::propagation::{current_traceparent, traceparent_of};
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::Instrument;

use crate::{
    error::{from_core, from_store, invalid},
    mesh::MeshLink,
    metrics::{GatewayMetrics, HandoffOutcome},
    spans::{self, Step},
    watch::{Stalled, WatchCaps, WatchStream},
};

/// The request header naming the region the caller acts for (until tokens
/// carry a region claim). Absent means the gateway's own region.
pub const REGION_HEADER: &str = "meridian-region";
/// W3C trace context of the caller's span.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The largest response a gateway sends (a full page of large tickets).
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Page size when a list request says 0.
pub const PAGE_SIZE_DEFAULT: u32 = 50;
pub const PAGE_SIZE_MAX: u32 = 500;
/// Events a watch stream may buffer for a slow client; when they stay
/// unread for the stall timeout the stream is cut off (the client resumes
/// with `after_seq`). See [`crate::watch`].
pub const WATCH_BUFFER: usize = 32;
/// Events read from the log per page while a watch catches up: a stalled
/// reader holds one page at most.
const WATCH_PAGE: u32 = 64;

/// The handlers of one gateway. Cheap to clone.
#[derive(Clone)]
pub struct TicketApi {
    inner: Arc<Inner>,
}

struct Inner {
    region: RegionId,
    region_index: u16,
    store: Store,
    clock: Arc<dyn Clock>,
    /// The rules in force, for SLA policies; `None` means no SLA clocks.
    rules: Option<Arc<ActiveRules>>,
    /// Orders this gateway's events; replicated events will feed it too.
    hlc: Mutex<Hlc>,
    /// Mints this gateway's ids in creation order (listings page by id).
    ids: Mutex<IdMinter>,
    /// Turns true when the gateway starts shutting down: open watch streams
    /// end then, or graceful shutdown would wait on them forever.
    stopping: tokio::sync::watch::Receiver<bool>,
    /// The other regions; `None` for a gateway serving its region alone.
    mesh: Option<Arc<MeshLink>>,
    /// Says whether owner-scoped writes are allowed right now (a region
    /// whose lease may have lapsed fences itself); notes are never gated.
    gate: WriteGate,
    /// Ships this region's log to its peers; `None` without a mesh.
    replicator: Option<Replicator>,
    /// Tiers acknowledged only once another region durably applied the write.
    peer_tiers: Vec<meridian_core::Tier>,
    metrics: GatewayMetrics,
    /// Open watch streams per principal and in total.
    watch_caps: Arc<WatchCaps>,
    /// How long a watch waits on a client that reads nothing.
    watch_stall: std::time::Duration,
    /// The regions of the mesh: residency may name only these.
    regions: Vec<RegionId>,
}

/// See [`TicketApi::downgrade`].
pub(crate) struct WeakTicketApi(std::sync::Weak<Inner>);

impl WeakTicketApi {
    pub(crate) fn upgrade(&self) -> Option<TicketApi> {
        self.0.upgrade().map(|inner| TicketApi { inner })
    }
}

/// Whether this gateway may make owner-scoped writes now: `None` when it
/// may, the reason when it may not. The failover machinery installs one
/// backed by the region's lease; without it, writes are always allowed.
#[derive(Clone, Default)]
pub struct WriteGate(Option<Arc<dyn Fn() -> Option<String> + Send + Sync>>);

impl std::fmt::Debug for WriteGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "WriteGate(installed)"
        } else {
            "WriteGate(open)"
        })
    }
}

impl WriteGate {
    pub fn new(check: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(check)))
    }

    fn check(&self) -> Result<(), Status> {
        match self.0.as_ref().and_then(|check| check()) {
            None => Ok(()),
            Some(reason) => Err(Status::unavailable(format!(
                "owner-scoped writes are fenced: {reason}"
            ))),
        }
    }
}

/// Everything a [`TicketApi`] is made of (see `Inner` for what each is).
pub(crate) struct ApiParts {
    pub region: RegionId,
    pub region_index: u16,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub rules: Option<Arc<ActiveRules>>,
    pub stopping: tokio::sync::watch::Receiver<bool>,
    pub mesh: Option<Arc<MeshLink>>,
    pub gate: WriteGate,
    pub replicator: Option<Replicator>,
    pub peer_tiers: Vec<meridian_core::Tier>,
    pub metrics: GatewayMetrics,
    pub watch_caps: Arc<WatchCaps>,
    pub watch_stall: std::time::Duration,
    /// The regions of the mesh (the config's `regions`).
    pub regions: Vec<RegionId>,
}

/// How long a handoff waits without a mesh setting.
const HANDOFF_WAIT_DEFAULT: std::time::Duration = std::time::Duration::from_secs(10);

impl TicketApi {
    pub(crate) fn new(parts: ApiParts) -> Self {
        let ApiParts {
            region,
            region_index,
            store,
            clock,
            rules,
            stopping,
            mesh,
            gate,
            replicator,
            peer_tiers,
            metrics,
            watch_caps,
            watch_stall,
            regions,
        } = parts;
        let hlc = Mutex::new(Hlc::default());
        let inner = Inner {
            region,
            region_index,
            store,
            clock,
            rules,
            hlc,
            ids: Mutex::default(),
            stopping,
            mesh,
            gate,
            replicator,
            peer_tiers,
            metrics,
            watch_caps,
            watch_stall,
            regions,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// A handle that does not keep the handlers alive (metric callbacks).
    pub(crate) fn downgrade(&self) -> WeakTicketApi {
        WeakTicketApi(Arc::downgrade(&self.inner))
    }

    /// For a tier with `peer` durability, waits until another region has
    /// durably applied this region's log up to `seq` before the write is
    /// acknowledged. The write is committed here either way; a timeout
    /// says so rather than pretending it failed.
    async fn durable(&self, tier: &meridian_core::Tier, seq: u64) -> Result<(), Status> {
        if !self.inner.peer_tiers.contains(tier) {
            return Ok(());
        }
        let Some(replicator) = &self.inner.replicator else {
            return Ok(());
        };
        replicator
            .wait_peer_durable(seq, self.handoff_wait())
            .await
            .map(drop)
            .map_err(|e| {
                tracing::warn!(seq, error = %e, "peer durability not reached");
                Status::deadline_exceeded(format!(
                    "committed in {} as event {seq}, but no other region has applied it yet ({e}); \
                 it will replicate when a peer is reachable",
                    self.inner.region
                ))
            })
    }

    /// Refuses when owner-scoped writes are fenced (see [`WriteGate`]).
    pub(crate) fn check_gate(&self) -> Result<(), Status> {
        self.inner.gate.check()
    }

    /// The rules in force, if the gateway has any.
    pub(crate) fn rules(&self) -> Option<Arc<meridian_rules::Rules>> {
        self.inner.rules.as_ref().map(|r| r.current())
    }

    /// The rules in force and the refusals of the file, when rules are set.
    pub(crate) fn active_rules(&self) -> Option<Arc<ActiveRules>> {
        self.inner.rules.clone()
    }

    /// The rules' overlap window; zero without rules.
    pub(crate) fn overlap(&self) -> jiff::SignedDuration {
        self.rules().map_or(jiff::SignedDuration::ZERO, |r| {
            jiff::SignedDuration::from_mins(i64::from(r.overlap_minutes()))
        })
    }

    pub(crate) fn region_index(&self) -> u16 {
        self.inner.region_index
    }

    /// How long a handoff step waits for the other region.
    pub(crate) fn handoff_wait(&self) -> std::time::Duration {
        self.inner
            .mesh
            .as_ref()
            .map_or(HANDOFF_WAIT_DEFAULT, |m| m.handoff_timeout)
    }

    /// Why this region would refuse a ticket offered to it now, if it would:
    /// with rules, it must be on shift (or in its overlap window) and cover
    /// every skill the ticket needs.
    pub(crate) fn handoff_refusal(&self, ticket: &Ticket) -> Option<String> {
        let rules = self.inner.rules.as_ref()?.current();
        let me = &self.inner.region;
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
        let now = self.inner.clock.now();
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
    pub(crate) async fn handoff(
        &self,
        caller: &RegionId,
        id: TicketId,
        to: RegionId,
        handoff: meridian_core::HandoffNote,
        meta: WriteMeta,
    ) -> Result<v1::HandoffResponse, Status> {
        self.handoff_traced(caller, id, to, handoff, meta, None)
            .await
    }

    pub(crate) async fn handoff_traced(
        &self,
        caller: &RegionId,
        id: TicketId,
        to: RegionId,
        handoff: meridian_core::HandoffNote,
        mut meta: WriteMeta,
        caller_metadata: Option<&MetadataMap>,
    ) -> Result<v1::HandoffResponse, Status> {
        let span = spans::ticket_span(Step::HandoffOffer, &self.inner.region, id, caller_metadata);
        span.record("meridian.handoff.to", to.as_str());
        // The offer's envelope names this span, so the target's apply and
        // answer link to it.
        meta.traceparent = traceparent_of(&span).or(meta.traceparent);
        let started = std::time::Instant::now();
        let result = self
            .handoff_in_span(caller, id, to, handoff, meta)
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
            Err(status) => {
                let outcome = match status.code() {
                    tonic::Code::FailedPrecondition
                        if status.message().contains("refused the handoff") =>
                    {
                        Some(HandoffOutcome::Refused)
                    }
                    tonic::Code::Unavailable if status.message().starts_with("handoff to") => {
                        Some(HandoffOutcome::Unanswered)
                    }
                    // Refused before anything was offered (bad request,
                    // not the owner): not a handoff.
                    tonic::Code::InvalidArgument
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::NotFound => None,
                    _ => Some(HandoffOutcome::Failed),
                };
                let name = outcome.map_or("rejected", HandoffOutcome::as_str);
                spans::record_outcome(&span, name, Some(status.message()));
                outcome
            }
        };
        if let Some(outcome) = outcome {
            self.inner.metrics.handoff(outcome, started.elapsed());
        }
        result
    }

    async fn handoff_in_span(
        &self,
        caller: &RegionId,
        id: TicketId,
        to: RegionId,
        handoff: meridian_core::HandoffNote,
        meta: WriteMeta,
    ) -> Result<v1::HandoffResponse, Status> {
        self.check_gate()?;
        let Some(mesh) = self.inner.mesh.clone() else {
            return Err(Status::failed_precondition(
                "this gateway has no mesh configured; it cannot hand off",
            ));
        };
        if to == self.inner.region {
            return Err(invalid(ConvertError::new(
                "to_region",
                format!("{to} is this gateway's own region; hand off to another"),
            )));
        }
        if !mesh.knows(&to) {
            return Err(invalid(ConvertError::new(
                "to_region",
                format!("{to} is not a peer of {}", self.inner.region),
            )));
        }
        let current = self.load(id).await?.ticket;
        // The ticket's creation, if this region wrote it, goes with the
        // offer: it tells the target the ticket's skills without a read
        // there. Read while the offer commits, so it costs no time.
        let creation = self.own_creation(id);
        let (offer, creation) = match &current.handoff_to {
            // A retry after the target could not be reached: resend the
            // pending offer rather than making a new one.
            Some(pending) if *pending == to && &current.owner.owner_region == caller => {
                let (offer, creation) = tokio::join!(
                    self.inner.store.last_offer(id, &self.inner.region),
                    creation
                );
                let offer = offer.map_err(from_store)?.ok_or_else(|| {
                    Status::internal("the ticket shows a pending offer but its event is missing")
                })?;
                (offer, creation)
            }
            _ => {
                let epoch = current
                    .decide_handoff(caller, &to, &handoff)
                    .map_err(from_core)?;
                tracing::Span::current().record("meridian.epoch", epoch.raw());
                self.inner.metrics.handoff_note(handoff.auto);
                let note = Note {
                    id: self.mint(meta.at, NoteId::mint)?,
                    ticket_id: id,
                    region: self.inner.region.clone(),
                    author: handoff.author.clone(),
                    body: handoff.render(&self.inner.region, &to),
                    created_at: meta.at,
                    auto: handoff.auto,
                };
                let (offered, creation) = tokio::join!(
                    self.inner
                        .store
                        .offer_handoff(id, epoch, to.clone(), handoff, note, meta),
                    creation
                );
                (offered.map_err(from_store)?.1, creation)
            }
        };
        // The offer travels with the call, so the target need not wait for
        // replication to bring it.
        let offer_events = crate::mesh::carried_tail(
            &self.inner.store,
            self.inner.replicator.as_ref(),
            &to,
            creation.as_ref(),
            &offer,
        )
        .await;
        let ask = v1::AcceptHandoffRequest {
            ticket_id: id.to_string(),
            from_region: self.inner.region.to_string(),
            offer_seq: offer.origin_seq,
            previous_epoch: offer.epoch.raw(),
            offer_events,
        };
        let answer = mesh.accept_handoff(&to, ask).await.map_err(|status| {
            tracing::warn!(ticket_id = %id, to = %to, error = %status, "handoff target did not answer; offer stays pending");
            Status::unavailable(format!(
                "handoff to {to} is pending: {to} did not answer ({}: {}); call again to resend the offer",
                crate::error::code_name(status.code()),
                status.message()
            ))
        })?;
        if !answer.accepted {
            let meta = self.meta_with(None);
            self.inner
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
            return Err(Status::failed_precondition(format!(
                "{to} refused the handoff: {}",
                answer.refusal_reason
            )));
        }
        // The acceptance is durable in `to`; it must be applied here too, so
        // the answer and later reads show the new owner. The target carried
        // it back, and replication brings it as well: whichever lands first
        // will do (the store applies it once).
        let store = &self.inner.store;
        let replicated = store.wait_applied(&to, answer.accept_seq, self.handoff_wait());
        let applied_here = match &answer.accept_events {
            Some(batch) => {
                let carried =
                    crate::mesh::apply_carried_acceptance(store, &to, batch, answer.accept_seq);
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
            _ => ticket_to_proto(&self.load(id).await?.ticket),
        };
        Ok(v1::HandoffResponse {
            ticket: Some(ticket),
            offer_seq: offer.origin_seq,
            accept_seq: answer.accept_seq,
        })
    }

    /// This region's `TicketCreated` of a ticket, if this region created it.
    /// Only an aid to the handoff target, so a failed read is no error.
    async fn own_creation(&self, id: TicketId) -> Option<EventEnvelope> {
        match self.inner.store.events_for_ticket(id).await {
            Ok(events) => events.into_iter().find(|e| {
                matches!(e.kind, meridian_core::EventKind::TicketCreated { .. })
                    && e.origin_region == self.inner.region
            }),
            Err(error) => {
                tracing::debug!(ticket_id = %id, error = %error, "cannot read the ticket's creation to carry");
                None
            }
        }
    }

    pub(crate) fn region(&self) -> &RegionId {
        &self.inner.region
    }

    pub(crate) fn metrics(&self) -> &GatewayMetrics {
        &self.inner.metrics
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn now(&self) -> jiff::Timestamp {
        self.inner.clock.now()
    }

    /// The instant, the HLC stamp and trace context for one local write:
    /// the current span's, or with no span context (export off) the
    /// caller's header.
    fn write_meta(&self, metadata: &MetadataMap) -> WriteMeta {
        self.meta_with(current_traceparent().or_else(|| traceparent(metadata)))
    }

    /// A fresh id, after every id this gateway minted before.
    fn mint<T>(
        &self,
        at: jiff::Timestamp,
        mint: fn(&mut IdMinter, jiff::Timestamp, [u8; 10]) -> T,
    ) -> Result<T, Status> {
        let random = random_bytes()?;
        Ok(mint(
            &mut self
                .inner
                .ids
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            at,
            random,
        ))
    }

    /// A fresh note id, for the notes Meridian writes itself.
    pub(crate) fn mint_note_id(&self, at: jiff::Timestamp) -> Result<NoteId, Status> {
        self.mint(at, NoteId::mint)
    }

    /// `traceparent` `None` means the current span's, if it has one.
    pub(crate) fn meta_with(&self, traceparent: Option<String>) -> WriteMeta {
        let traceparent = traceparent.or_else(current_traceparent);
        let at = self.inner.clock.now();
        let millis = u64::try_from(at.as_millisecond()).unwrap_or(0);
        let hlc_time = self
            .inner
            .hlc
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tick(millis);
        WriteMeta {
            hlc_time,
            traceparent,
            at,
        }
    }

    /// The SLA clocks of a new ticket, from its tier's policy, in its
    /// customer's calendar when the rules give one (else the tier's).
    fn sla_for_new(
        &self,
        tier: &meridian_core::Tier,
        customer: &str,
        at: jiff::Timestamp,
    ) -> Result<SlaDeadlines, Status> {
        let Some(rules) = &self.inner.rules else {
            return Ok(SlaDeadlines::default());
        };
        let rules = rules.current();
        if rules.tier(tier.as_str()).is_none() {
            let known: Vec<&str> = rules.tiers().iter().map(|t| t.tier.as_str()).collect();
            return Err(invalid(ConvertError::new(
                "tier",
                format!(
                    "{:?} is not a tier of rules {}; use one of {}",
                    tier.as_str(),
                    rules.version_id(),
                    known.join(", ")
                ),
            )));
        }
        rules
            .sla_clocks_for(tier.as_str(), Some(customer), at)
            .map_err(|e| {
                tracing::error!(tier = %tier, error = %e, "sla clocks cannot be computed");
                Status::failed_precondition(format!(
                    "tier {tier}: SLA deadline cannot be computed: {e}"
                ))
            })
    }

    /// Adds what the rules say about a status move to the decided changes:
    /// a pausing status stops the clocks, leaving one restarts them with
    /// their deadlines pushed back by the time spent paused.
    async fn sla_for_status(
        &self,
        ticket: &Ticket,
        changes: &mut TicketChanges,
        at: jiff::Timestamp,
    ) -> Result<(), Status> {
        let (Some(rules), Some(to)) = (&self.inner.rules, changes.status) else {
            return Ok(());
        };
        if ticket.sla.is_empty() {
            return Ok(());
        }
        let rules = rules.current();
        let tier = ticket.tier.as_str();
        let base = ticket
            .sla
            .after_status(ticket.status, to, rules.sla_pauses(tier, to));
        changes.sla = Some(base);
        if rules.sla_pauses(tier, ticket.status) && !rules.sla_pauses(tier, to) {
            let events = self
                .inner
                .store
                .events_for_ticket(ticket.id)
                .await
                .map_err(from_store)?;
            let history = status_history(ticket, &events);
            let pauses = meridian_rules::pause_spans(&history, at, |s| rules.sla_pauses(tier, s))
                .map_err(|e| Status::internal(format!("sla pauses: {e}")))?;
            let resumed = rules
                .sla_resume_for(
                    tier,
                    Some(&ticket.customer),
                    ticket.created_at,
                    &base,
                    &pauses,
                )
                .map_err(|e| {
                    Status::failed_precondition(format!(
                        "tier {tier}: SLA deadline cannot be computed: {e}"
                    ))
                })?;
            changes.sla = Some(resumed);
        }
        Ok(())
    }

    /// The region the caller acts for: an agent's token region (a
    /// `meridian-region` header naming another is refused), else the
    /// header, else this gateway's region.
    fn caller_region<T>(&self, request: &Request<T>) -> Result<RegionId, Status> {
        let header = match request.metadata().get(REGION_HEADER) {
            None => None,
            Some(value) => {
                let text = value
                    .to_str()
                    .map_err(|_| invalid(ConvertError::new(REGION_HEADER, "is not ASCII")))?;
                Some(convert::region_id(REGION_HEADER, text).map_err(invalid)?)
            }
        };
        let agent =
            meridian_auth::principal(request).and_then(|p| p.agent_region().map(|r| (p, r)));
        match (agent, header) {
            (Some((principal, region)), Some(header)) if &header != region => {
                let reason = format!(
                    "agent {} of {region} may not act for {header} ({REGION_HEADER} header)",
                    principal.subject
                );
                tracing::warn!(subject = %principal.subject, %reason, "call refused: permission denied");
                Err(Status::permission_denied(reason))
            }
            (Some((_, region)), _) => Ok(region.clone()),
            (None, header) => Ok(header.unwrap_or_else(|| self.inner.region.clone())),
        }
    }

    /// For an agent, `PERMISSION_DENIED` unless its region owns ticket
    /// `id` (reads the ticket); other roles pass without a read.
    async fn check_agent_owns(
        &self,
        principal: Option<&meridian_auth::Principal>,
        id: TicketId,
        what: &str,
    ) -> Result<(), Status> {
        let Some(principal) = principal.filter(|p| p.agent_region().is_some()) else {
            return Ok(());
        };
        let record = self.load(id).await?;
        principal.check_owner(
            &record.ticket.owner.owner_region,
            &format!("{what} ticket {id}"),
        )
    }

    async fn load(&self, id: TicketId) -> Result<meridian_store::TicketRecord, Status> {
        self.inner
            .store
            .get_ticket(id)
            .await
            .map_err(from_store)?
            .ok_or_else(|| Status::not_found(format!("ticket {id} not found")))
    }
}

/// When the ticket entered each status, from its events (HLC milliseconds
/// are wall-clock milliseconds of the writing region).
fn status_history(
    ticket: &Ticket,
    events: &[EventEnvelope],
) -> Vec<(jiff::Timestamp, meridian_core::Status)> {
    let mut history = vec![(ticket.created_at, meridian_core::Status::New)];
    for event in events {
        if let Some(status) = event.kind.owner_changes().and_then(|c| c.status) {
            let millis = i64::try_from(event.hlc_time.millis()).unwrap_or(i64::MAX);
            let at = jiff::Timestamp::from_millisecond(millis).unwrap_or(ticket.created_at);
            history.push((at, status));
        }
    }
    history
}

/// A trace context header, kept only if it has the W3C shape; a malformed
/// one is dropped rather than stored and replicated.
fn traceparent(metadata: &MetadataMap) -> Option<String> {
    let value = metadata.get(TRACEPARENT_HEADER)?.to_str().ok()?;
    let parts: Vec<&str> = value.split('-').collect();
    let shaped = parts.len() == 4
        && [2, 32, 16, 2].iter().zip(&parts).all(|(len, part)| {
            part.len() == *len
                && part
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    shaped.then(|| value.to_owned())
}

/// Ten random bytes for a UUIDv7; the core has no entropy of its own.
fn random_bytes() -> Result<[u8; 10], Status> {
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes).map_err(|e| {
        tracing::error!(error = %e, "no entropy for a new id");
        Status::unavailable("cannot mint an id right now")
    })?;
    Ok(bytes)
}

fn conflict_to_proto(conflict: &ConflictRecord) -> v1::Conflict {
    v1::Conflict {
        origin_region: conflict.origin_region.to_string(),
        origin_seq: conflict.origin_seq,
        stale_epoch: conflict.stale_epoch.raw(),
        current_epoch: conflict.current_epoch.raw(),
        changes_json: serde_json::to_string(&conflict.changes)
            .unwrap_or_else(|_| "null".to_owned()),
        recorded_at: Some(timestamp_to_proto(conflict.recorded_at)),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::Event, Status>> + Send>>;

impl TicketApi {
    /// `CreateTicket` in a `ticket.create` span: the id is minted first,
    /// since the span's trace is the ticket's.
    async fn create_ticket_traced(
        &self,
        request: Request<v1::CreateTicketRequest>,
    ) -> Result<Response<v1::CreateTicketResponse>, Status> {
        self.check_gate()?;
        let (metadata, _, message) = request.into_parts();
        let mut meta = self.write_meta(&metadata);
        let new = meridian_core::NewTicket::try_from(message).map_err(invalid)?;
        let id = self.mint(meta.at, TicketId::mint)?;
        let span = spans::ticket_span(Step::Create, &self.inner.region, id, Some(&metadata));
        meta.traceparent = traceparent_of(&span).or(meta.traceparent);
        self.create_in_span(id, new, meta).instrument(span).await
    }

    async fn create_in_span(
        &self,
        id: TicketId,
        new: meridian_core::NewTicket,
        meta: WriteMeta,
    ) -> Result<Response<v1::CreateTicketResponse>, Status> {
        if let Some(unknown) = new
            .residency
            .iter()
            .find(|r| !self.inner.regions.contains(r))
        {
            let reason = format!(
                "unknown region {unknown}; the mesh has {}",
                region_names(&self.inner.regions)
            );
            return Err(invalid(ConvertError::new("residency", reason)));
        }
        // Residency: a pinned ticket is created only inside its set, so its
        // text is never written anywhere else (the router sends it there).
        if let Some(reason) = meridian_core::residency::refusal(&new.residency, &self.inner.region)
        {
            return Err(Status::failed_precondition(format!(
                "residency: {reason}; create the ticket in one of its regions"
            )));
        }
        let owner = Ownership::new(
            self.inner.region.clone(),
            self.inner.region_index,
            Epoch::initial(self.inner.region_index),
        )
        .map_err(from_core)?;
        tracing::Span::current().record("meridian.epoch", owner.epoch.raw());
        let mut ticket = Ticket::create(id, new, owner, meta.at).map_err(from_core)?;
        ticket.sla = self.sla_for_new(&ticket.tier, &ticket.customer, meta.at)?;
        let event = self
            .inner
            .store
            .create_ticket(ticket, meta)
            .await
            .map_err(from_store)?;
        let meridian_core::EventKind::TicketCreated { ticket } = &event.kind else {
            return Err(Status::internal(
                "store answered a create with another event kind",
            ));
        };
        tracing::debug!(ticket_id = %ticket.id, seq = event.origin_seq, "ticket created");
        self.durable(&ticket.tier, event.origin_seq).await?;
        Ok(Response::new(v1::CreateTicketResponse {
            ticket: Some(ticket_to_proto(ticket)),
            origin_seq: event.origin_seq,
        }))
    }
}

impl TicketApi {
    async fn update_in_span(
        &self,
        caller: RegionId,
        id: TicketId,
        patch: meridian_core::TicketPatch,
        meta: WriteMeta,
    ) -> Result<Response<v1::UpdateTicketResponse>, Status> {
        let current = self.load(id).await?;
        // The core decides (owner, legal transition); the store fences the
        // write on the epoch it was decided at, so a concurrent ownership
        // change between the two turns into FAILED_PRECONDITION, not a lost
        // update.
        let mut changes: TicketChanges = current
            .ticket
            .decide_patch(&caller, &patch)
            .map_err(from_core)?;
        self.sla_for_status(&current.ticket, &mut changes, meta.at)
            .await?;
        if changes.is_empty() {
            return Ok(Response::new(v1::UpdateTicketResponse {
                ticket: Some(ticket_to_proto(&current.ticket)),
                origin_seq: 0,
            }));
        }
        let (ticket, event) = self
            .inner
            .store
            .update_ticket(id, changes, meta)
            .await
            .map_err(from_store)?;
        tracing::Span::current().record("meridian.epoch", event.epoch.raw());
        self.durable(&ticket.tier, event.origin_seq).await?;
        Ok(Response::new(v1::UpdateTicketResponse {
            ticket: Some(ticket_to_proto(&ticket)),
            origin_seq: event.origin_seq,
        }))
    }

    async fn note_in_span(
        &self,
        ticket_id: TicketId,
        req: v1::AddNoteRequest,
        meta: WriteMeta,
    ) -> Result<Response<v1::AddNoteResponse>, Status> {
        let note = Note {
            id: self.mint(meta.at, NoteId::mint)?,
            ticket_id,
            region: self.inner.region.clone(),
            author: req.author,
            body: req.body,
            created_at: meta.at,
            auto: false,
        };
        note.validate().map_err(from_core)?;
        // Residency: a note on a pinned ticket is written only inside its
        // set; this region holds a redacted copy and must not hold the text.
        let residencies = self
            .inner
            .store
            .residencies(&[ticket_id])
            .await
            .map_err(from_store)?;
        if let Some(residency) = residencies.get(&ticket_id)
            && let Some(reason) = meridian_core::residency::refusal(residency, &self.inner.region)
        {
            return Err(Status::failed_precondition(format!(
                "residency: {reason}; add the note in one of the ticket's regions"
            )));
        }
        let event = self
            .inner
            .store
            .add_note(note, meta)
            .await
            .map_err(from_store)?;
        let meridian_core::EventKind::NoteAdded { note } = &event.kind else {
            return Err(Status::internal(
                "store answered a note with another event kind",
            ));
        };
        Ok(Response::new(v1::AddNoteResponse {
            note: Some(note_to_proto(note)),
            origin_seq: event.origin_seq,
        }))
    }
}

#[tonic::async_trait]
impl TicketService for TicketApi {
    async fn create_ticket(
        &self,
        request: Request<v1::CreateTicketRequest>,
    ) -> Result<Response<v1::CreateTicketResponse>, Status> {
        self.create_ticket_traced(request).await
    }

    async fn get_ticket(
        &self,
        request: Request<v1::GetTicketRequest>,
    ) -> Result<Response<v1::GetTicketResponse>, Status> {
        let id = convert::ticket_id("ticket_id", &request.get_ref().ticket_id).map_err(invalid)?;
        let record = self.load(id).await?;
        if let Some(principal) = meridian_auth::principal(&request) {
            principal.check_owner(
                &record.ticket.owner.owner_region,
                &format!("read ticket {id}"),
            )?;
        }
        Ok(Response::new(v1::GetTicketResponse {
            ticket: Some(ticket_to_proto(&record.ticket)),
            notes: record.notes.iter().map(note_to_proto).collect(),
            conflicts: record.conflicts.iter().map(conflict_to_proto).collect(),
        }))
    }

    async fn list_tickets(
        &self,
        request: Request<v1::ListTicketsRequest>,
    ) -> Result<Response<v1::ListTicketsResponse>, Status> {
        let agent = meridian_auth::principal(&request)
            .and_then(|p| p.agent_region().map(|r| (p.subject.clone(), r.clone())));
        let mut req = request.into_inner();
        // An agent lists its region's tickets: no owner filter means its
        // region, another region is refused.
        if let Some((subject, region)) = agent {
            if req.owner_region.is_empty() {
                req.owner_region = region.to_string();
            } else if req.owner_region != region.as_str() {
                let reason = format!(
                    "agent {subject} of {region} may not list tickets owned by {}",
                    req.owner_region
                );
                tracing::warn!(%subject, %reason, "call refused: permission denied");
                return Err(Status::permission_denied(reason));
            }
        }
        let limit = match req.page_size {
            0 => PAGE_SIZE_DEFAULT,
            n if n <= PAGE_SIZE_MAX => n,
            n => {
                return Err(invalid(ConvertError::new(
                    "page_size",
                    format!("is {n}; the limit is {PAGE_SIZE_MAX}"),
                )));
            }
        };
        let filter = TicketFilter {
            status: convert::status_from_proto("status", req.status).map_err(invalid)?,
            owner_region: non_empty(&req.owner_region)
                .map(|r| convert::region_id("owner_region", r))
                .transpose()
                .map_err(invalid)?,
            assignee: non_empty(&req.assignee).map(str::to_owned),
            tier: non_empty(&req.tier)
                .map(|t| {
                    meridian_core::Tier::new(t)
                        .map_err(|e| ConvertError::new("tier", e.to_string()))
                })
                .transpose()
                .map_err(invalid)?,
            after: non_empty(&req.page_token)
                .map(|t| convert::ticket_id("page_token", t))
                .transpose()
                .map_err(invalid)?,
            sla_at_risk: req.sla_at_risk,
            limit,
        };
        let page = self
            .inner
            .store
            .list_tickets(&filter)
            .await
            .map_err(from_store)?;
        Ok(Response::new(v1::ListTicketsResponse {
            tickets: page.tickets.iter().map(ticket_to_proto).collect(),
            next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn update_ticket(
        &self,
        request: Request<v1::UpdateTicketRequest>,
    ) -> Result<Response<v1::UpdateTicketResponse>, Status> {
        let caller = self.caller_region(&request)?;
        self.check_gate()?;
        let (id, patch) = convert::update_from_proto(request.get_ref()).map_err(invalid)?;
        self.check_agent_owns(meridian_auth::principal(&request), id, "update")
            .await?;
        let span = spans::ticket_span(
            Step::Update,
            &self.inner.region,
            id,
            Some(request.metadata()),
        );
        let meta = span.in_scope(|| self.write_meta(request.metadata()));
        self.update_in_span(caller, id, patch, meta)
            .instrument(span)
            .await
    }

    async fn add_note(
        &self,
        request: Request<v1::AddNoteRequest>,
    ) -> Result<Response<v1::AddNoteResponse>, Status> {
        let ticket_id =
            convert::ticket_id("ticket_id", &request.get_ref().ticket_id).map_err(invalid)?;
        self.check_agent_owns(
            meridian_auth::principal(&request),
            ticket_id,
            "add a note to",
        )
        .await?;
        let span = spans::ticket_span(
            Step::Note,
            &self.inner.region,
            ticket_id,
            Some(request.metadata()),
        );
        let meta = span.in_scope(|| self.write_meta(request.metadata()));
        self.note_in_span(ticket_id, request.into_inner(), meta)
            .instrument(span)
            .await
    }

    async fn handoff(
        &self,
        request: Request<v1::HandoffRequest>,
    ) -> Result<Response<v1::HandoffResponse>, Status> {
        let caller = self.caller_region(&request)?;
        let meta = self.write_meta(request.metadata());
        let (id, to, handoff) = convert::handoff_from_proto(request.get_ref()).map_err(invalid)?;
        self.check_agent_owns(meridian_auth::principal(&request), id, "hand off")
            .await?;
        let answer = self
            .handoff_traced(&caller, id, to, handoff, meta, Some(request.metadata()))
            .await?;
        Ok(Response::new(answer))
    }
    async fn get_status(
        &self,
        _request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::GetStatusResponse>, Status> {
        let local_head = self.inner.store.local_head().await.map_err(from_store)?;
        let peers = self.inner.replicator.as_ref().map_or_else(Vec::new, |r| {
            r.status()
                .into_iter()
                .map(|p| v1::PeerStatus {
                    region: p.region.to_string(),
                    connected: p.connected,
                    acked_seq: p.acked_seq.unwrap_or(0),
                    applied_seq: p.applied_seq,
                    lag_events: p.lag_events,
                    lag_seconds: p.lag.as_secs_f64(),
                    last_heartbeat_at: p.last_heartbeat_at.map(timestamp_to_proto),
                    last_error: p.last_error.unwrap_or_default(),
                })
                .collect()
        });
        let fenced = self.check_gate().err();
        let queue = self
            .inner
            .store
            .queue_counts(&self.inner.region)
            .await
            .map_err(from_store)?;
        Ok(Response::new(v1::GetStatusResponse {
            region: self.inner.region.to_string(),
            local_head,
            rules_version: self
                .inner
                .rules
                .as_ref()
                .map(|r| r.current().version_id())
                .unwrap_or_default(),
            peers,
            fenced: fenced.is_some(),
            fenced_reason: fenced.map(|s| s.message().to_owned()).unwrap_or_default(),
            queue_by_status: queue.by_status.into_iter().collect(),
            sla_at_risk: queue.sla_at_risk,
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<v1::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let principal = meridian_auth::principal(&request).cloned();
        let remote = request.remote_addr();
        let req = request.into_inner();
        let scope = match req.scope {
            Some(Scope::TicketId(raw)) => {
                WatchScope::Ticket(convert::ticket_id("ticket_id", &raw).map_err(invalid)?)
            }
            Some(Scope::Region(raw)) => WatchScope::Region(
                convert::region_id("region", &raw).map_err(invalid)?,
                req.after_seq,
            ),
            None => {
                return Err(invalid(ConvertError::new(
                    "scope",
                    "set ticket_id or region",
                )));
            }
        };
        match &scope {
            WatchScope::Ticket(id) => {
                self.check_agent_owns(principal.as_ref(), *id, "watch")
                    .await?
            }
            WatchScope::Region(region, _) => {
                if let Some((principal, own)) = principal
                    .as_ref()
                    .and_then(|p| p.agent_region().map(|r| (p, r)))
                    && own != region
                {
                    let reason = format!(
                        "agent {} of {own} may not watch the event log of {region}",
                        principal.subject
                    );
                    tracing::warn!(subject = %principal.subject, %reason, "call refused: permission denied");
                    return Err(Status::permission_denied(reason));
                }
            }
        }
        // Without tokens the client's address stands for the principal.
        let holder = match (&principal, remote) {
            (Some(principal), _) => format!("principal {}", principal.subject),
            (None, Some(addr)) => format!("client {}", addr.ip()),
            (None, None) => "the anonymous client".to_owned(),
        };
        let slot = self.inner.watch_caps.acquire(holder)?;
        let start = match &scope {
            WatchScope::Region(region, after_seq) => (region.to_string(), *after_seq),
            WatchScope::Ticket(_) => (String::new(), 0),
        };
        // Subscribe before reading the backlog, so nothing committed in
        // between is missed; the backlog's high marks drop the overlap.
        let live = self.inner.store.subscribe();
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        let (stall_sender, stalled) = tokio::sync::oneshot::channel();
        let store = self.inner.store.clone();
        let mut stopping = self.inner.stopping.clone();
        let stall = self.inner.watch_stall;
        tokio::spawn(async move {
            let sink = WatchSink {
                sender: &sender,
                stall,
            };
            let ended = tokio::select! {
                ended = watch(store, scope, live, &sink) => ended,
                _ = stopping.wait_for(|stop| *stop) => Err(Ended::Status(Status::unavailable("gateway is shutting down"))),
            };
            let stalled = match ended {
                Ok(()) => None,
                // The status waits behind the queued events, but no longer
                // than a stalled reader may keep the stream.
                Err(Ended::Status(status)) => match sender.send_timeout(Err(status), stall).await {
                    Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                        Some(Stalled { waited: stall })
                    }
                    _ => None,
                },
                Err(Ended::Stalled(stalled)) => Some(stalled),
            };
            if let Some(stalled) = stalled {
                let _ = stall_sender.send(stalled);
            }
        });
        Ok(Response::new(Box::pin(WatchStream::new(
            receiver, stalled, start, slot,
        ))))
    }
}

/// Regions for messages: `us-east, eu-west, apac-south`.
fn region_names(regions: &[RegionId]) -> String {
    regions
        .iter()
        .map(RegionId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses every call whose token names a region the mesh does not have:
/// an agent of `mars` is no agent here. Runs after the token check, which
/// put the principal in the request.
#[derive(Clone)]
pub(crate) struct MeshRegions(pub(crate) Arc<Vec<RegionId>>);

impl tonic::service::Interceptor for MeshRegions {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(principal) = meridian_auth::principal(&request)
            && let Some(region) = &principal.region
            && !self.0.contains(region)
        {
            let reason = format!(
                "the token of {} names region {region}, which is not a region of this mesh ({})",
                principal.subject,
                region_names(&self.0)
            );
            tracing::warn!(subject = %principal.subject, %reason, "call refused: permission denied");
            return Err(Status::permission_denied(reason));
        }
        Ok(request)
    }
}

fn non_empty(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

enum WatchScope {
    Ticket(TicketId),
    Region(RegionId, u64),
}

impl WatchScope {
    fn matches(&self, event: &EventEnvelope) -> bool {
        match self {
            WatchScope::Ticket(id) => event.ticket_id == *id,
            WatchScope::Region(region, _) => event.origin_region == *region,
        }
    }
}

type WatchSender = mpsc::Sender<Result<v1::Event, Status>>;

/// Where a watch's events go, and how long it waits for room.
struct WatchSink<'a> {
    sender: &'a WatchSender,
    stall: std::time::Duration,
}

/// Why a watch ended before its client went away.
enum Ended {
    Status(Status),
    Stalled(Stalled),
}

impl From<Status> for Ended {
    fn from(status: Status) -> Self {
        Ended::Status(status)
    }
}

/// Sends one event unless it was sent already; `Ok(false)` once the client
/// is gone, `Stalled` when it took nothing for the stall timeout.
async fn emit(
    sink: &WatchSink<'_>,
    event: &EventEnvelope,
    sent: &mut HashMap<RegionId, u64>,
) -> Result<bool, Ended> {
    let high = sent.entry(event.origin_region.clone()).or_insert(0);
    if event.origin_seq <= *high {
        return Ok(true);
    }
    *high = event.origin_seq;
    match sink
        .sender
        .send_timeout(Ok(event_to_proto(event)), sink.stall)
        .await
    {
        Ok(()) => Ok(true),
        Err(mpsc::error::SendTimeoutError::Closed(_)) => Ok(false),
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
            Err(Ended::Stalled(Stalled { waited: sink.stall }))
        }
    }
}

/// Sends the stored events of the scope, then live ones, until the client
/// goes away. Returns an error status to end the stream with.
async fn watch(
    store: Store,
    scope: WatchScope,
    mut live: broadcast::Receiver<Arc<EventEnvelope>>,
    sink: &WatchSink<'_>,
) -> Result<(), Ended> {
    // The last origin_seq sent per origin: live events at or below it were
    // already sent from the backlog.
    let mut sent: HashMap<RegionId, u64> = HashMap::new();
    match &scope {
        WatchScope::Ticket(id) => {
            for event in store.events_for_ticket(*id).await.map_err(from_store)? {
                if !emit(sink, &event, &mut sent).await? {
                    return Ok(());
                }
            }
        }
        WatchScope::Region(region, after_seq) => {
            sent.insert(region.clone(), *after_seq);
            let mut after = *after_seq;
            loop {
                let page = store
                    .events_after(region, after, WATCH_PAGE)
                    .await
                    .map_err(from_store)?;
                let Some(last) = page.last() else { break };
                after = last.origin_seq;
                for event in &page {
                    if !emit(sink, event, &mut sent).await? {
                        return Ok(());
                    }
                }
            }
        }
    }
    loop {
        tokio::select! {
            () = sink.sender.closed() => return Ok(()),
            received = live.recv() => match received {
                Ok(event) => {
                    if scope.matches(&event) && !emit(sink, &event, &mut sent).await? {
                        return Ok(());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let after = match &scope {
                        WatchScope::Region(region, _) => sent.get(region).copied().unwrap_or(0),
                        WatchScope::Ticket(_) => 0,
                    };
                    return Err(Ended::Status(Status::resource_exhausted(format!(
                        "watch fell {missed} events behind; resume with after_seq={after}"
                    ))));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Ended::Status(Status::unavailable("gateway is shutting down")));
                }
            }
        }
    }
}
