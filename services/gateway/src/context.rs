//! The region's shared state and the helpers every part of the gateway
//! uses ([`TicketApi`], [`WriteGate`]). It sits below the request handlers
//! (`service`, `mesh`), the handoff saga (`handoff`) and the background
//! tasks, and imports none of them: the gateway's modules depend in one
//! direction (see `lib.rs`).

use std::sync::{Arc, Mutex, PoisonError};

use meridian_core::{
    Clock, EventEnvelope, Hlc, IdMinter, RegionId, SlaDeadlines, Ticket, TicketChanges, TicketId,
};
use meridian_proto::{ConvertError, convert};
use meridian_replication::Replicator;
use meridian_rules_source::{ActiveRoster, ActiveRules};
use meridian_store::{Store, WriteMeta};
use meridian_telemetry::propagation::current_traceparent;
use tonic::{Request, metadata::MetadataMap};

use crate::{
    error::{ApiError, from_store, invalid},
    metrics::GatewayMetrics,
    peers::MeshLink,
    watch::WatchCaps,
};

/// The request header naming the region the caller acts for (until tokens
/// carry a region claim). Absent means the gateway's own region.
pub const REGION_HEADER: &str = "meridian-region";
/// W3C trace context of the caller's span.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// One region's gateway as every part of it sees it: its store, clock,
/// rules, mesh link, write gate and metrics, and the helpers the handlers,
/// the handoff saga and the background tasks share. Cheap to clone.
#[derive(Clone)]
pub struct TicketApi {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) region: RegionId,
    pub(crate) region_index: u16,
    pub(crate) store: Store,
    pub(crate) clock: Arc<dyn Clock>,
    /// The rules in force, for SLA policies; `None` means no SLA clocks.
    pub(crate) rules: Option<Arc<ActiveRules>>,
    /// The region's roster in force; `None`: assignees are plain labels.
    pub(crate) roster: Option<Arc<ActiveRoster>>,
    /// Assignments being decided ([`crate::people`]).
    pub(crate) ledger: Mutex<crate::people::Ledger>,
    /// Orders this gateway's events; replicated events will feed it too.
    pub(crate) hlc: Mutex<Hlc>,
    /// Mints this gateway's ids in creation order (listings page by id).
    pub(crate) ids: Mutex<IdMinter>,
    /// Turns true when the gateway starts shutting down: open watch streams
    /// end then, or graceful shutdown would wait on them forever.
    pub(crate) stopping: tokio::sync::watch::Receiver<bool>,
    /// The other regions; `None` for a gateway serving its region alone.
    pub(crate) mesh: Option<Arc<MeshLink>>,
    /// Says whether owner-scoped writes are allowed right now (a region
    /// whose lease may have lapsed fences itself); notes are never gated.
    pub(crate) gate: WriteGate,
    /// Ships this region's log to its peers; `None` without a mesh.
    pub(crate) replicator: Option<Replicator>,
    /// Tiers acknowledged only once another region durably applied the write.
    pub(crate) peer_tiers: Vec<meridian_core::Tier>,
    pub(crate) metrics: GatewayMetrics,
    /// Open watch streams per principal and in total.
    pub(crate) watch_caps: Arc<WatchCaps>,
    /// How long a watch waits on a client that reads nothing.
    pub(crate) watch_stall: std::time::Duration,
    /// The regions of the mesh: residency may name only these.
    pub(crate) regions: Vec<RegionId>,
    /// Notifications to people (disabled without targets).
    pub(crate) notifier: meridian_notify::Notifier,
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

    fn check(&self) -> Result<(), ApiError> {
        match self.0.as_ref().and_then(|check| check()) {
            None => Ok(()),
            Some(reason) => Err(ApiError::Fenced(reason)),
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
    pub roster: Option<Arc<ActiveRoster>>,
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
    pub notifier: meridian_notify::Notifier,
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
            roster,
            stopping,
            mesh,
            gate,
            replicator,
            peer_tiers,
            metrics,
            watch_caps,
            watch_stall,
            regions,
            notifier,
        } = parts;
        let hlc = Mutex::new(Hlc::default());
        let inner = Inner {
            region,
            region_index,
            store,
            clock,
            rules,
            roster,
            ledger: Mutex::default(),
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
            notifier,
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Where notifications to people go ([`meridian_notify`]).
    pub(crate) fn notifier(&self) -> &meridian_notify::Notifier {
        &self.inner.notifier
    }

    /// A handle that does not keep the handlers alive (metric callbacks).
    pub(crate) fn downgrade(&self) -> WeakTicketApi {
        WeakTicketApi(Arc::downgrade(&self.inner))
    }

    /// For a tier with `peer` durability, waits until another region has
    /// durably applied this region's log up to `seq` before the write is
    /// acknowledged. The write is committed here either way; a timeout
    /// says so rather than pretending it failed.
    pub(crate) async fn durable(
        &self,
        tier: &meridian_core::Tier,
        seq: u64,
    ) -> Result<(), ApiError> {
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
                ApiError::NotPeerDurable {
                    region: self.inner.region.clone(),
                    seq,
                    detail: e.to_string(),
                }
            })
    }

    /// Refuses when owner-scoped writes are fenced (see [`WriteGate`]).
    pub(crate) fn check_gate(&self) -> Result<(), ApiError> {
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

    pub(crate) fn region(&self) -> &RegionId {
        &self.inner.region
    }

    /// Calls to the other regions' gateways; `None` without a mesh.
    pub(crate) fn mesh(&self) -> Option<&Arc<MeshLink>> {
        self.inner.mesh.as_ref()
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
    /// The writes are the caller's: `principal`'s subject and role are
    /// their actor.
    pub(crate) fn write_meta(
        &self,
        metadata: &MetadataMap,
        principal: Option<&meridian_auth::Principal>,
    ) -> WriteMeta {
        self.meta_with(current_traceparent().or_else(|| traceparent(metadata)))
            .by(crate::people::actor_of(principal))
    }

    /// A fresh id, after every id this gateway minted before.
    /// A fresh note id, for the notes Meridian writes itself.
    pub(crate) fn mint_note_id(
        &self,
        at: jiff::Timestamp,
    ) -> Result<meridian_core::NoteId, ApiError> {
        self.mint(at, meridian_core::NoteId::mint)
    }

    pub(crate) fn mint<T>(
        &self,
        at: jiff::Timestamp,
        mint: fn(&mut IdMinter, jiff::Timestamp, [u8; 10]) -> T,
    ) -> Result<T, ApiError> {
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
            actor: None,
        }
    }

    /// The SLA clocks of a new ticket, from its tier's policy, in its
    /// customer's calendar when the rules give one (else the tier's).
    pub(crate) fn sla_for_new(
        &self,
        tier: &meridian_core::Tier,
        customer: &str,
        at: jiff::Timestamp,
    ) -> Result<SlaDeadlines, ApiError> {
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
                ApiError::Sla {
                    tier: tier.to_string(),
                    detail: e.to_string(),
                }
            })
    }

    /// Adds what the rules say about a status move to the decided changes:
    /// a pausing status stops the clocks, leaving one restarts them with
    /// their deadlines pushed back by the time spent paused.
    pub(crate) async fn sla_for_status(
        &self,
        ticket: &Ticket,
        changes: &mut TicketChanges,
        at: jiff::Timestamp,
    ) -> Result<(), ApiError> {
        let (Some(rules), Some(to)) = (&self.inner.rules, changes.status) else {
            return Ok(());
        };
        if ticket.sla.is_empty() {
            return Ok(());
        }
        let rules = rules.current();
        let tier = ticket.tier.as_str();
        let base = ticket.sla.after_status(to, rules.sla_pauses(tier, to));
        changes.sla = Some(base);
        if rules.sla_pauses(tier, ticket.status) && !rules.sla_pauses(tier, to) {
            let events = self
                .inner
                .store
                .events_for_ticket(ticket.id)
                .await
                .map_err(from_store)?;
            let history = status_history(ticket, &events);
            let next_response_since = unanswered_since(&events);
            let pauses = meridian_rules::pause_spans(&history, at, |s| rules.sla_pauses(tier, s))
                .map_err(|e| ApiError::Internal(format!("sla pauses: {e}")))?;
            let resumed = rules
                .sla_resume_for(
                    tier,
                    Some(&ticket.customer),
                    ticket.created_at,
                    next_response_since,
                    &base,
                    &pauses,
                )
                .map_err(|e| ApiError::Sla {
                    tier: tier.to_owned(),
                    detail: e.to_string(),
                })?;
            changes.sla = Some(resumed);
        }
        // A move that leaves every clock as it was records none.
        if changes.sla == Some(ticket.sla) {
            changes.sla = None;
        }
        Ok(())
    }

    /// The clocks after a message, on top of `clocks` (the clocks after
    /// the status move it made, if any): a public reply meets the response
    /// clocks; a customer message after a reply starts a next-response
    /// clock in the ticket's calendar, from the message's instant (stopped
    /// at once if the ticket stays in a status that pauses its clocks).
    pub(crate) fn sla_for_message(
        &self,
        ticket: &Ticket,
        clocks: &SlaDeadlines,
        note: &meridian_core::Note,
        changes: &TicketChanges,
    ) -> Result<SlaDeadlines, ApiError> {
        if ticket.sla.is_empty() {
            return Ok(*clocks);
        }
        match note.visibility {
            meridian_core::Visibility::Internal => Ok(*clocks),
            meridian_core::Visibility::Public => Ok(clocks.after_reply()),
            meridian_core::Visibility::Inbound => {
                let Some(rules) = &self.inner.rules else {
                    return Ok(*clocks);
                };
                if !clocks.inbound_starts_next_response() {
                    return Ok(*clocks);
                }
                let rules = rules.current();
                let tier = ticket.tier.as_str();
                let mut clock = rules
                    .sla_next_response(tier, Some(&ticket.customer), note.created_at)
                    .map_err(|e| ApiError::Sla {
                        tier: tier.to_owned(),
                        detail: e.to_string(),
                    })?;
                if rules.sla_pauses(tier, changes.status.unwrap_or(ticket.status)) {
                    clock.state = meridian_core::SlaState::Paused;
                }
                Ok(clocks.with_next_response(clock))
            }
        }
    }

    /// The region the caller acts for: an agent's token region (a
    /// `meridian-region` header naming another is refused), else the
    /// header, else this gateway's region.
    pub(crate) fn caller_region<T>(&self, request: &Request<T>) -> Result<RegionId, ApiError> {
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
                Err(ApiError::PermissionDenied(reason))
            }
            (Some((_, region)), _) => Ok(region.clone()),
            (None, header) => Ok(header.unwrap_or_else(|| self.inner.region.clone())),
        }
    }

    /// For an agent, `PERMISSION_DENIED` unless its region owns ticket
    /// `id` (reads the ticket); other roles pass without a read.
    pub(crate) async fn check_agent_owns(
        &self,
        principal: Option<&meridian_auth::Principal>,
        id: TicketId,
        what: &str,
    ) -> Result<(), ApiError> {
        let Some(principal) = principal.filter(|p| p.agent_region().is_some()) else {
            return Ok(());
        };
        let record = self.load(id).await?;
        Ok(principal.check_owner(
            &record.ticket.owner.owner_region,
            &format!("{what} ticket {id}"),
        )?)
    }

    pub(crate) async fn load(
        &self,
        id: TicketId,
    ) -> Result<meridian_store::TicketRecord, ApiError> {
        self.inner
            .store
            .get_ticket(id)
            .await
            .map_err(from_store)?
            .ok_or(ApiError::TicketNotFound(id))
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

/// When the oldest customer message after the last public reply arrived:
/// where a paused next-response clock counts from when it resumes.
fn unanswered_since(events: &[EventEnvelope]) -> Option<jiff::Timestamp> {
    let mut since = None;
    for event in events {
        if let meridian_core::EventKind::NoteAdded { note } = &event.kind {
            match note.visibility {
                meridian_core::Visibility::Public => since = None,
                meridian_core::Visibility::Inbound => {
                    since = since.or(Some(note.created_at));
                }
                meridian_core::Visibility::Internal => {}
            }
        }
    }
    since
}

/// A trace context header, kept only if it parses (the one parser,
/// `meridian_core::traceparent`); a malformed one is dropped rather than
/// stored and replicated, where every peer would refuse it.
pub(crate) fn traceparent(metadata: &MetadataMap) -> Option<String> {
    let value = metadata.get(TRACEPARENT_HEADER)?.to_str().ok()?;
    meridian_core::traceparent::Traceparent::parse(value)
        .is_ok()
        .then(|| value.to_owned())
}

/// Ten random bytes for a UUIDv7; the core has no entropy of its own.
fn random_bytes() -> Result<[u8; 10], ApiError> {
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes).map_err(|e| {
        tracing::error!(error = %e, "no entropy for a new id");
        ApiError::NoEntropy
    })?;
    Ok(bytes)
}
