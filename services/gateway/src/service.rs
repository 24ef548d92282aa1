//! `meridian.v1.TicketService`. A handler checks the caller and the write
//! gate, decodes and validates (meridian-proto), asks the core, writes
//! through the store (whose SQL re-checks the fence), waits for its
//! durability tier and encodes; `Handoff` hands over to the saga in
//! [`crate::handoff`]. Errors are [`ApiError`]s, made statuses in `error.rs`.

use std::{collections::HashMap, pin::Pin, sync::Arc};

use futures::Stream;
use meridian_core::{
    Epoch, EventEnvelope, Note, NoteId, Ownership, RegionId, Ticket, TicketChanges, TicketId,
};
use meridian_proto::{
    ConvertError,
    convert::{self, event_to_proto, note_to_proto, ticket_to_proto},
    timestamp_to_proto,
    v1::{self, ticket_service_server::TicketService, watch_events_request::Scope},
};
use meridian_store::{ConflictRecord, CreateOutcome, SearchQuery, Store, TicketFilter, WriteMeta};
use meridian_telemetry::propagation::traceparent_of;
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{
    context::TicketApi,
    error::{ApiError, from_core, from_store, invalid},
    handoff, idempotency, people,
    spans::{self, Step},
    watch::{Stalled, WatchStream},
};

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
    ) -> Result<Response<v1::CreateTicketResponse>, ApiError> {
        self.check_gate()?;
        let (metadata, extensions, message) = request.into_parts();
        let mut meta = self.write_meta(&metadata, extensions.get::<meridian_auth::Principal>());
        let (new, key) = convert::create_from_proto(message).map_err(invalid)?;
        let keyed = match key {
            Some(key) => {
                let scope = idempotency::scope(extensions.get::<meridian_auth::Principal>(), &new);
                Some((idempotency::store_key(&scope, &key, &new)?, key))
            }
            None => None,
        };
        let id = self.mint(meta.at, TicketId::mint)?;
        // A retry of a committed create is traced in that ticket's trace
        // (its id is the trace id), not in one of an id no ticket has.
        let traced = match &keyed {
            Some((store_key, _)) => self
                .inner
                .store
                .idempotent_ticket(&store_key.key_digest)
                .await
                .map_err(from_store)?
                .unwrap_or(id),
            None => id,
        };
        let span = spans::ticket_span(Step::Create, &self.inner.region, traced, Some(&metadata));
        meta.traceparent = traceparent_of(&span).or(meta.traceparent);
        self.create_in_span(id, new, keyed, meta)
            .instrument(span)
            .await
    }

    async fn create_in_span(
        &self,
        id: TicketId,
        new: meridian_core::NewTicket,
        keyed: Option<(
            meridian_store::IdempotencyKey,
            meridian_core::IdempotencyKey,
        )>,
        meta: WriteMeta,
    ) -> Result<Response<v1::CreateTicketResponse>, ApiError> {
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
            return Err(ApiError::Residency {
                reason,
                hint: "create the ticket in one of its regions",
            });
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
        // The roster's policy may give it to an agent at once; the place is
        // held until the creation commits.
        let assigned = self.auto_assignee(&ticket).await?;
        if let Some(reservation) = &assigned {
            ticket.assignee = Some(reservation.agent().to_owned());
        }
        let event = match keyed {
            None => self
                .inner
                .store
                .create_ticket(ticket, meta)
                .await
                .map_err(from_store)?,
            Some((store_key, key)) => {
                let outcome = self
                    .inner
                    .store
                    .create_ticket_idempotent(ticket, meta, store_key)
                    .await
                    .map_err(|e| match e {
                        meridian_store::Error::IdempotencyConflict { ticket_id } => {
                            ApiError::IdempotencyConflict {
                                key: key.to_string(),
                                ticket_id,
                            }
                        }
                        other => from_store(other),
                    })?;
                match outcome {
                    CreateOutcome::Created(event) => event,
                    CreateOutcome::Replayed {
                        ticket,
                        origin_region,
                        origin_seq,
                    } => return self.replayed(ticket, &origin_region, origin_seq).await,
                }
            }
        };
        let meridian_core::EventKind::TicketCreated { ticket } = &event.kind else {
            return Err(ApiError::Internal(
                "store answered a create with another event kind".to_owned(),
            ));
        };
        if let Some(reservation) = assigned {
            reservation.commit();
        }
        tracing::debug!(ticket_id = %ticket.id, seq = event.origin_seq, assignee = ?ticket.assignee, "ticket created");
        self.durable(&ticket.tier, event.origin_seq).await?;
        Ok(Response::new(v1::CreateTicketResponse {
            ticket: Some(ticket_to_proto(ticket)),
            origin_seq: event.origin_seq,
            replayed: false,
        }))
    }

    /// The answer to a create whose key had already created `ticket`: the
    /// ticket as it is now. A first attempt that committed but timed out
    /// waiting for its durability tier waits for it again here, so a
    /// replay promises no less than the first answer would have.
    async fn replayed(
        &self,
        ticket: Ticket,
        origin_region: &RegionId,
        origin_seq: u64,
    ) -> Result<Response<v1::CreateTicketResponse>, ApiError> {
        tracing::info!(ticket_id = %ticket.id, seq = origin_seq, "create replayed by its idempotency key");
        if origin_region == &self.inner.region {
            self.durable(&ticket.tier, origin_seq).await?;
        }
        Ok(Response::new(v1::CreateTicketResponse {
            ticket: Some(ticket_to_proto(&ticket)),
            origin_seq,
            replayed: true,
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
    ) -> Result<Response<v1::UpdateTicketResponse>, ApiError> {
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
        // A new assignee must be an agent of the roster who may take it.
        let reservation = match &changes.assignee {
            Some(Some(agent)) => self.reserve_assignee(&current.ticket, agent).await?,
            _ => None,
        };
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
        if let Some(reservation) = reservation {
            reservation.commit();
        }
        if let Some(previous) = &current.ticket.assignee
            && ticket.assignee.as_ref() != Some(previous)
        {
            self.released(previous);
        }
        tracing::Span::current().record("meridian.epoch", event.epoch.raw());
        self.durable(&ticket.tier, event.origin_seq).await?;
        Ok(Response::new(v1::UpdateTicketResponse {
            ticket: Some(ticket_to_proto(&ticket)),
            origin_seq: event.origin_seq,
        }))
    }

    async fn note_in_span(
        &self,
        caller: RegionId,
        ticket_id: TicketId,
        req: v1::AddNoteRequest,
        meta: WriteMeta,
    ) -> Result<Response<v1::AddNoteResponse>, ApiError> {
        let visibility =
            convert::visibility_from_proto("visibility", req.visibility).map_err(invalid)?;
        let id = if req.note_id.is_empty() {
            self.mint(meta.at, NoteId::mint)?
        } else {
            convert::note_id("note_id", &req.note_id).map_err(invalid)?
        };
        let note = Note {
            id,
            ticket_id,
            region: self.inner.region.clone(),
            author: req.author,
            body: req.body,
            created_at: meta.at,
            auto: false,
            visibility,
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
            return Err(ApiError::Residency {
                reason,
                hint: "add the note in one of the ticket's regions",
            });
        }
        if visibility.is_message() {
            return self.message_in_span(caller, note, meta).await;
        }
        let event = self
            .inner
            .store
            .add_note(note, meta)
            .await
            .map_err(from_store)?;
        let meridian_core::EventKind::NoteAdded { note } = &event.kind else {
            return Err(ApiError::Internal(
                "store answered a note with another event kind".to_owned(),
            ));
        };
        Ok(Response::new(v1::AddNoteResponse {
            note: Some(note_to_proto(note)),
            origin_seq: event.origin_seq,
            ticket: None,
        }))
    }

    /// A public reply or a customer message: owner-scoped, because it moves
    /// the ticket's clocks (and may reopen it), so the core decides it like
    /// an update and the store writes the note and the change together.
    async fn message_in_span(
        &self,
        caller: RegionId,
        note: Note,
        meta: WriteMeta,
    ) -> Result<Response<v1::AddNoteResponse>, ApiError> {
        let current = self.load(note.ticket_id).await?;
        let ticket = &current.ticket;
        let mut changes = ticket
            .decide_message(&caller, note.visibility)
            .map_err(from_core)?;
        self.sla_for_status(ticket, &mut changes, meta.at).await?;
        let clocks = changes.sla.unwrap_or(ticket.sla);
        let clocks = self.sla_for_message(ticket, &clocks, &note, &changes)?;
        changes.sla = (clocks != ticket.sla).then_some(clocks);
        let changes = (!changes.is_empty()).then_some(changes);
        let (updated, events) = self
            .inner
            .store
            .add_message(note, changes, meta)
            .await
            .map_err(from_store)?;
        let Some(event) = events.last() else {
            return Err(ApiError::Internal(
                "store answered a message with no event".to_owned(),
            ));
        };
        let meridian_core::EventKind::NoteAdded { note } = &event.kind else {
            return Err(ApiError::Internal(
                "store answered a message with another event kind".to_owned(),
            ));
        };
        tracing::Span::current().record("meridian.epoch", event.epoch.raw());
        self.durable(&ticket.tier, event.origin_seq).await?;
        Ok(Response::new(v1::AddNoteResponse {
            note: Some(note_to_proto(note)),
            origin_seq: event.origin_seq,
            ticket: Some(ticket_to_proto(updated.as_ref().unwrap_or(ticket))),
        }))
    }
}

#[tonic::async_trait]
impl TicketService for TicketApi {
    async fn create_ticket(
        &self,
        request: Request<v1::CreateTicketRequest>,
    ) -> Result<Response<v1::CreateTicketResponse>, Status> {
        Ok(self.create_ticket_traced(request).await?)
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
        let agent = agent_of(&request);
        let mut req = request.into_inner();
        agent_owner_filter(agent, &mut req.owner_region, "list")?;
        let limit = page_limit(req.page_size)?;
        let filter = TicketFilter {
            status: convert::status_from_proto("status", req.status).map_err(invalid)?,
            owner_region: owner_filter(&req.owner_region)?,
            assignee: non_empty(&req.assignee).map(str::to_owned),
            tier: non_empty(&req.tier)
                .map(|t| {
                    meridian_core::Tier::new(t)
                        .map_err(|e| ConvertError::new("tier", e.to_string()))
                })
                .transpose()
                .map_err(invalid)?,
            after: page_after(&req.page_token)?,
            sla_at_risk: req.sla_at_risk,
            limit,
        };
        let page = self
            .inner
            .store
            .list_tickets(&filter)
            .await
            .map_err(from_store)?;
        Ok(Response::new(page_to_proto(&page)))
    }

    async fn search_tickets(
        &self,
        request: Request<v1::SearchTicketsRequest>,
    ) -> Result<Response<v1::ListTicketsResponse>, Status> {
        let agent = agent_of(&request);
        let mut req = request.into_inner();
        agent_owner_filter(agent, &mut req.owner_region, "search")?;
        let limit = page_limit(req.page_size)?;
        // Parsed here too, so a refusal names its field as every other
        // request field's does; the store parses the same text again.
        meridian_core::SearchText::parse(&req.query).map_err(|e| match e {
            meridian_core::Error::InvalidField { field, reason } => {
                invalid(ConvertError::new(field, reason))
            }
            other => from_core(other),
        })?;
        let query = SearchQuery {
            status: convert::status_from_proto("status", req.status).map_err(invalid)?,
            owner_region: owner_filter(&req.owner_region)?,
            after: page_after(&req.page_token)?,
            text: req.query,
            limit,
        };
        let page = self
            .inner
            .store
            .search_tickets(&query)
            .await
            .map_err(from_store)?;
        Ok(Response::new(page_to_proto(&page)))
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
        let meta = span
            .in_scope(|| self.write_meta(request.metadata(), meridian_auth::principal(&request)));
        Ok(self
            .update_in_span(caller, id, patch, meta)
            .instrument(span)
            .await?)
    }

    async fn assign_ticket(
        &self,
        request: Request<v1::AssignTicketRequest>,
    ) -> Result<Response<v1::UpdateTicketResponse>, Status> {
        let caller = self.caller_region(&request)?;
        self.check_gate()?;
        let principal = meridian_auth::principal(&request);
        let req = request.get_ref();
        let id = convert::ticket_id("ticket_id", &req.ticket_id).map_err(invalid)?;
        let assignee = match (req.unassign, req.agent.as_str(), principal) {
            (true, "", _) => None,
            (true, _, _) => {
                return Err(
                    invalid(ConvertError::new("agent", "must be empty with unassign")).into(),
                );
            }
            // A claim: "assign to me".
            (false, "", Some(principal)) => Some(principal.subject.clone()),
            (false, "", None) => {
                return Err(invalid(ConvertError::new(
                    "agent",
                    "is required without a token (who claims it?)",
                ))
                .into());
            }
            (false, agent, _) => Some(agent.to_owned()),
        };
        self.check_agent_owns(principal, id, "assign").await?;
        let span = spans::ticket_span(
            Step::Update,
            &self.inner.region,
            id,
            Some(request.metadata()),
        );
        let meta = span.in_scope(|| self.write_meta(request.metadata(), principal));
        let patch = meridian_core::TicketPatch {
            status: None,
            assignee: Some(assignee),
            priority: None,
        };
        Ok(self
            .update_in_span(caller, id, patch, meta)
            .instrument(span)
            .await?)
    }

    async fn add_note(
        &self,
        mut request: Request<v1::AddNoteRequest>,
    ) -> Result<Response<v1::AddNoteResponse>, Status> {
        let caller = self.caller_region(&request)?;
        let ticket_id =
            convert::ticket_id("ticket_id", &request.get_ref().ticket_id).map_err(invalid)?;
        // An intake system speaks for customers, never for the team.
        if let Some(principal) = meridian_auth::principal(&request)
            && principal.role == meridian_auth::Role::Intake
            && request.get_ref().visibility() != v1::Visibility::Inbound
        {
            return Err(ApiError::PermissionDenied(format!(
                "{principal} may add only customer messages (visibility inbound), not {:?} notes",
                request.get_ref().visibility().as_str_name()
            ))
            .into());
        }
        self.check_agent_owns(
            meridian_auth::principal(&request),
            ticket_id,
            "add a note to",
        )
        .await?;
        let author = people::note_author(
            meridian_auth::principal(&request),
            &request.get_ref().author,
        )?;
        request.get_mut().author = author;
        let span = spans::ticket_span(
            Step::Note,
            &self.inner.region,
            ticket_id,
            Some(request.metadata()),
        );
        let meta = span
            .in_scope(|| self.write_meta(request.metadata(), meridian_auth::principal(&request)));
        Ok(self
            .note_in_span(caller, ticket_id, request.into_inner(), meta)
            .instrument(span)
            .await?)
    }

    async fn handoff(
        &self,
        mut request: Request<v1::HandoffRequest>,
    ) -> Result<Response<v1::HandoffResponse>, Status> {
        let caller = self.caller_region(&request)?;
        let meta = self.write_meta(request.metadata(), meridian_auth::principal(&request));
        let principal = meridian_auth::principal(&request).cloned();
        if let Some(note) = request.get_mut().note.as_mut() {
            note.author = people::note_author(principal.as_ref(), &note.author)?;
        }
        let (id, to, handoff) = convert::handoff_from_proto(request.get_ref()).map_err(invalid)?;
        self.check_agent_owns(meridian_auth::principal(&request), id, "hand off")
            .await?;
        let answer = handoff::offer_traced(
            self,
            &caller,
            id,
            to,
            handoff,
            meta,
            Some(request.metadata()),
        )
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
            fenced_reason: fenced.map(|e| e.to_string()).unwrap_or_default(),
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
                return Err(invalid(ConvertError::new("scope", "set ticket_id or region")).into());
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
                    return Err(ApiError::PermissionDenied(reason).into());
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
                _ = stopping.wait_for(|stop| *stop) => Err(ApiError::ShuttingDown.into()),
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
            return Err(ApiError::PermissionDenied(reason).into());
        }
        Ok(request)
    }
}

/// The agent making a request, with its region; `None` for other roles
/// and when auth is off.
fn agent_of<T>(request: &Request<T>) -> Option<(String, RegionId)> {
    meridian_auth::principal(request)
        .and_then(|p| p.agent_region().map(|r| (p.subject.clone(), r.clone())))
}

/// An agent lists and searches its region's tickets: no owner filter means
/// its region, another region is refused. `what` names the call.
fn agent_owner_filter(
    agent: Option<(String, RegionId)>,
    owner_region: &mut String,
    what: &str,
) -> Result<(), ApiError> {
    let Some((subject, region)) = agent else {
        return Ok(());
    };
    if owner_region.is_empty() {
        *owner_region = region.to_string();
    } else if owner_region != region.as_str() {
        let reason =
            format!("agent {subject} of {region} may not {what} tickets owned by {owner_region}");
        tracing::warn!(%subject, %reason, "call refused: permission denied");
        return Err(ApiError::PermissionDenied(reason));
    }
    Ok(())
}

/// A page size as asked: 0 means [`PAGE_SIZE_DEFAULT`], over
/// [`PAGE_SIZE_MAX`] is refused naming `page_size`.
fn page_limit(page_size: u32) -> Result<u32, ApiError> {
    match page_size {
        0 => Ok(PAGE_SIZE_DEFAULT),
        n if n <= PAGE_SIZE_MAX => Ok(n),
        n => Err(invalid(ConvertError::new(
            "page_size",
            format!("is {n}; the limit is {PAGE_SIZE_MAX}"),
        ))),
    }
}

fn page_to_proto(page: &meridian_store::TicketPage) -> v1::ListTicketsResponse {
    v1::ListTicketsResponse {
        tickets: page.tickets.iter().map(ticket_to_proto).collect(),
        next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
    }
}

/// A list or search request's `owner_region` filter (empty: any).
fn owner_filter(raw: &str) -> Result<Option<RegionId>, ApiError> {
    non_empty(raw)
        .map(|r| convert::region_id("owner_region", r))
        .transpose()
        .map_err(invalid)
}

/// Where a page starts: after the `page_token`'s ticket (empty: the start).
fn page_after(raw: &str) -> Result<Option<TicketId>, ApiError> {
    non_empty(raw)
        .map(|t| convert::ticket_id("page_token", t))
        .transpose()
        .map_err(invalid)
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

impl From<ApiError> for Ended {
    fn from(error: ApiError) -> Self {
        Ended::Status(error.into())
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
                    return Err(ApiError::Exhausted(format!(
                        "watch fell {missed} events behind; resume with after_seq={after}"
                    ))
                    .into());
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(ApiError::ShuttingDown.into());
                }
            }
        }
    }
}
