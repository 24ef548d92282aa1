//! The model store: one region's database as plain memory, with the real
//! store's contract, behind [`ReplicaLog`].
//!
//! The real store (`meridian-store`) runs sqlx on a writer thread, which
//! a deterministic simulation cannot schedule, so replication runs on this
//! model and the real store follows it: every commit here is also made in
//! the region's SQL store ([`crate::sql`]), which must agree. This model keeps what replication and the invariants depend
//! on: each origin's log dense from 1, a cursor per origin that is the
//! log's length, `apply_remote` that skips what it holds, refuses a gap
//! with nothing applied, and publishes every commit; local writes fenced
//! by the core's own decisions (`decide_patch`, `decide_handoff`,
//! `decide_accept`, `Ownership`) on the projection the core's
//! [`replay`] derives from the events held. A [`RegionDb`] lives outside
//! the simulated host, so a crash keeps what was committed; what was in
//! flight (frames, unapplied batches) dies with the host's tasks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use meridian_core::{
    Epoch, EventEnvelope, EventKind, HandoffNote, Hlc, NewTicket, Note, NoteId, Ownership,
    RegionId, ShiftSummary, Ticket, TicketId, TicketPatch, replay,
};
use meridian_replication::{BoxFuture, ReplicaLog};
use tokio::sync::broadcast;

/// How many commits a subscriber may fall behind before it lags (and the
/// shipper pages from the log instead), as in the store.
const COMMITS_QUEUE: usize = 256;

/// Why a local write was refused.
pub type Refusal = String;

/// One region's durable state.
pub struct RegionDb {
    pub region: RegionId,
    pub index: u16,
    /// Every origin's log as this region holds it, this region's own
    /// included; the cursor of an origin is its length.
    pub logs: BTreeMap<RegionId, Vec<EventEnvelope>>,
    hlc: Hlc,
    commits: broadcast::Sender<Arc<EventEnvelope>>,
    /// The same database in the real store ([`crate::sql`]).
    sql: Option<crate::sql::SqlStore>,
    /// Where the real store disagreed with the model, as they happened.
    pub sql_problems: Vec<String>,
}

/// A region's database, shared by its host (through [`ModelLog`]) and the
/// workload.
pub type SharedDb = Arc<Mutex<RegionDb>>;

pub fn lock(db: &SharedDb) -> MutexGuard<'_, RegionDb> {
    db.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RegionDb {
    pub fn new(region: RegionId, index: u16) -> SharedDb {
        let (commits, _) = broadcast::channel(COMMITS_QUEUE);
        let (sql, sql_problems) = match crate::sql::SqlStore::open(&region) {
            Ok(sql) => (Some(sql), Vec::new()),
            Err(e) => (None, vec![format!("the SQL store did not open: {e}")]),
        };
        Arc::new(Mutex::new(Self {
            region,
            index,
            logs: BTreeMap::new(),
            hlc: Hlc::default(),
            commits,
            sql,
            sql_problems,
        }))
    }

    pub fn cursor(&self, origin: &RegionId) -> u64 {
        self.logs.get(origin).map_or(0, |log| log.len() as u64)
    }

    pub fn head(&self) -> u64 {
        self.cursor(&self.region)
    }

    /// The ticket as this region's events project it.
    pub fn ticket(&self, id: TicketId) -> Option<Ticket> {
        replay(&self.ticket_events(id)).map(|replayed| replayed.ticket)
    }

    pub fn ticket_events(&self, id: TicketId) -> Vec<EventEnvelope> {
        self.logs
            .values()
            .flatten()
            .filter(|event| event.ticket_id == id)
            .cloned()
            .collect()
    }

    /// The tickets this region holds an offer of (to `to`, or to anyone):
    /// the only ones a handoff can be pending on.
    pub fn offered(&self, to: Option<&RegionId>) -> BTreeSet<TicketId> {
        self.logs
            .values()
            .flatten()
            .filter(|event| matches!(&event.kind, EventKind::HandoffOffered { to: target, .. } if to.is_none_or(|to| to == target)))
            .map(|event| event.ticket_id)
            .collect()
    }

    /// Whether some ticket has an offer no one has answered yet.
    pub fn handoff_pending(&self) -> bool {
        self.offered(None)
            .into_iter()
            .any(|id| self.ticket(id).is_some_and(|t| t.handoff_to.is_some()))
    }

    /// Every ticket id this region has a creation event of.
    pub fn ticket_ids(&self) -> Vec<TicketId> {
        let mut ids: Vec<TicketId> = self
            .logs
            .values()
            .flatten()
            .filter(|event| matches!(event.kind, EventKind::TicketCreated { .. }))
            .map(|event| event.ticket_id)
            .collect();
        ids.sort();
        ids
    }

    fn apply_remote(
        &mut self,
        origin: &RegionId,
        mut events: Vec<EventEnvelope>,
        now: Timestamp,
    ) -> meridian_store::Result<u64> {
        if let Some(foreign) = events.iter().find(|event| &event.origin_region != origin) {
            return Err(meridian_store::Error::Config(format!(
                "apply_remote({origin}) got an event of {}",
                foreign.origin_region
            )));
        }
        events.sort_by_key(|event| event.origin_seq);
        let cursor = self.cursor(origin);
        let mut next = cursor + 1;
        let mut to_apply = Vec::new();
        for event in events {
            if event.origin_seq < next {
                continue;
            }
            if event.origin_seq > next {
                return Err(meridian_store::Error::Gap {
                    origin: origin.clone(),
                    expected: next,
                    got: event.origin_seq,
                });
            }
            to_apply.push(event);
            next += 1;
        }
        let now_millis = millis(now);
        if let Some(sql) = &self.sql
            && !to_apply.is_empty()
        {
            let expected = next - 1;
            match sql.apply_remote(origin, to_apply.clone(), now) {
                Ok(cursor) if cursor == expected => {}
                Ok(cursor) => self.sql_problems.push(format!(
                    "{}: the SQL store's cursor of {origin} is {cursor}, the model's {expected}",
                    self.region
                )),
                Err(e) => self.sql_problems.push(format!(
                    "{}: the SQL store refused {origin}'s batch the model applied: {e}",
                    self.region
                )),
            }
        }
        for event in to_apply {
            self.hlc.observe(event.hlc_time, now_millis);
            let event = Arc::new(event);
            self.logs
                .entry(origin.clone())
                .or_default()
                .push((*event).clone());
            let _ = self.commits.send(event);
        }
        Ok(next - 1)
    }

    /// Appends a local event and publishes it: the commit of a local write.
    fn append(
        &mut self,
        ticket_id: TicketId,
        epoch: Epoch,
        kind: EventKind,
        now: Timestamp,
    ) -> EventEnvelope {
        let event = EventEnvelope {
            origin_region: self.region.clone(),
            origin_seq: self.head() + 1,
            ticket_id,
            epoch,
            hlc_time: self.hlc.tick(millis(now)),
            traceparent: None,
            actor: None,
            kind,
        };
        if let Some(sql) = &self.sql
            && let Err(e) = sql.write_local(&event, now)
        {
            self.sql_problems.push(format!("{}: {e}", self.region));
        }
        self.logs
            .entry(self.region.clone())
            .or_default()
            .push(event.clone());
        let _ = self.commits.send(Arc::new(event.clone()));
        event
    }

    /// Where the real store's tickets differ from the fold of this region's
    /// log (`view`, from [`region_view`]), and every disagreement seen while
    /// writing, as violations.
    pub fn sql_divergences(
        &self,
        view: &meridian_replication::RegionView,
    ) -> Vec<meridian_replication::Divergence> {
        use meridian_replication::Divergence;
        let mut found: Vec<Divergence> = self
            .sql_problems
            .iter()
            .map(|detail| Divergence::StoreDisagrees {
                store: self.region.clone(),
                ticket: None,
                detail: detail.clone(),
            })
            .collect();
        let Some(sql) = &self.sql else {
            return found;
        };
        let ids: Vec<TicketId> = view.tickets.keys().copied().collect();
        let records = match sql.records(ids, Timestamp::UNIX_EPOCH) {
            Ok(records) => records,
            Err(e) => {
                found.push(Divergence::StoreDisagrees {
                    store: self.region.clone(),
                    ticket: None,
                    detail: format!("reading the SQL store failed: {e}"),
                });
                return found;
            }
        };
        for (id, folded) in &view.tickets {
            let parts = match records.get(id) {
                Some(record) => meridian_replication::differing_parts(folded, record),
                None => vec!["missing".to_owned()],
            };
            if !parts.is_empty() {
                found.push(Divergence::StoreDisagrees {
                    store: self.region.clone(),
                    ticket: Some(*id),
                    detail: format!(
                        "SQL projection differs from the fold in {}",
                        parts.join(", ")
                    ),
                });
            }
        }
        found
    }

    // ------------------------------------------------ local writes (the gateway's)

    pub fn create(
        &mut self,
        id: TicketId,
        new: NewTicket,
        now: Timestamp,
    ) -> Result<EventEnvelope, Refusal> {
        if self.ticket(id).is_some() {
            return Err(format!("ticket {id} already exists"));
        }
        // The gateway refuses a creation outside the ticket's residency.
        if let Some(reason) = meridian_core::residency::refusal(&new.residency, &self.region) {
            return Err(reason);
        }
        let epoch = Epoch::initial(self.index);
        let owner =
            Ownership::new(self.region.clone(), self.index, epoch).map_err(|e| e.to_string())?;
        let ticket = Ticket::create(id, new, owner, now).map_err(|e| e.to_string())?;
        Ok(self.append(
            id,
            epoch,
            EventKind::TicketCreated {
                ticket: Box::new(ticket),
            },
            now,
        ))
    }

    pub fn update(
        &mut self,
        id: TicketId,
        patch: &TicketPatch,
        now: Timestamp,
    ) -> Result<Option<EventEnvelope>, Refusal> {
        let ticket = self
            .ticket(id)
            .ok_or_else(|| format!("ticket {id} not found"))?;
        let changes = ticket
            .decide_patch(&self.region, patch)
            .map_err(|e| e.to_string())?;
        if changes.is_empty() {
            return Ok(None);
        }
        let epoch = changes.epoch;
        Ok(Some(self.append(
            id,
            epoch,
            EventKind::TicketUpdated { changes },
            now,
        )))
    }

    pub fn note(
        &mut self,
        id: TicketId,
        note_id: NoteId,
        body: String,
        now: Timestamp,
    ) -> Result<EventEnvelope, Refusal> {
        let ticket = self
            .ticket(id)
            .ok_or_else(|| format!("ticket {id} not found"))?;
        // Outside its residency a region holds a redacted copy and writes no text.
        if let Some(reason) = meridian_core::residency::refusal(&ticket.residency, &self.region) {
            return Err(reason);
        }
        let note = Note {
            id: note_id,
            ticket_id: id,
            region: self.region.clone(),
            author: "sim".into(),
            body,
            created_at: now,
            auto: false,
            visibility: meridian_core::Visibility::Internal,
        };
        note.validate().map_err(|e| e.to_string())?;
        Ok(self.append(id, ticket.owner.epoch, EventKind::NoteAdded { note }, now))
    }

    pub fn offer(
        &mut self,
        id: TicketId,
        to: &RegionId,
        note_id: NoteId,
        now: Timestamp,
    ) -> Result<EventEnvelope, Refusal> {
        let ticket = self
            .ticket(id)
            .ok_or_else(|| format!("ticket {id} not found"))?;
        let handoff = HandoffNote {
            current_status: ticket.status,
            last_action: "looked at it".into(),
            next_action: "carry on".into(),
            deadline: None,
            text: String::new(),
            author: "sim".into(),
            auto: true,
        };
        let epoch = ticket
            .decide_handoff(&self.region, to, &handoff)
            .map_err(|e| e.to_string())?;
        let note = Note {
            id: note_id,
            ticket_id: id,
            region: self.region.clone(),
            author: "sim".into(),
            body: handoff.render(&self.region, to),
            created_at: now,
            auto: true,
            visibility: meridian_core::Visibility::Internal,
        };
        Ok(self.append(
            id,
            epoch,
            EventKind::HandoffOffered {
                to: to.clone(),
                handoff,
                note,
            },
            now,
        ))
    }

    /// Accepts every offer made to this region that it holds, as the
    /// gateway does once replication brought the offer.
    pub fn accept_pending(&mut self, now: Timestamp) -> Vec<EventEnvelope> {
        let mut accepted = Vec::new();
        for id in self.offered(Some(&self.region.clone())) {
            let Some(ticket) = self.ticket(id) else {
                continue;
            };
            if ticket.handoff_to.as_ref() != Some(&self.region) {
                continue;
            }
            let from = ticket.owner.owner_region.clone();
            let Ok(new_epoch) = ticket.decide_accept(&self.region, self.index, &from) else {
                continue;
            };
            // The offer in `from`'s log that made the handoff pending.
            let offer_seq = self.logs.get(&from).and_then(|log| {
                log.iter()
                    .rev()
                    .find(|event| {
                        event.ticket_id == id
                            && event.epoch == ticket.owner.epoch
                            && matches!(&event.kind, EventKind::HandoffOffered { to, .. } if to == &self.region)
                    })
                    .map(|event| event.origin_seq)
            });
            let Some(offer_seq) = offer_seq else { continue };
            let kind = EventKind::HandoffAccepted {
                from,
                offer_seq,
                previous_epoch: ticket.owner.epoch,
            };
            accepted.push(self.append(id, new_epoch, kind, now));
        }
        accepted
    }

    /// Takes over every ticket `from` owns in this region's projection whose
    /// taker is this region (the first of `successors` its residency
    /// allows), as the gateway's `Failover::take_over` does.
    pub fn take_over(
        &mut self,
        from: &RegionId,
        successors: &[RegionId],
        fencing_token: u64,
        now: Timestamp,
    ) -> Vec<EventEnvelope> {
        let through_seq = self.cursor(from);
        let mut taken = Vec::new();
        for id in self.ticket_ids() {
            let Some(ticket) = self.ticket(id) else {
                continue;
            };
            if &ticket.owner.owner_region != from {
                continue;
            }
            let taker = successors
                .iter()
                .find(|r| meridian_core::residency::may_hold(&ticket.residency, r));
            if taker != Some(&self.region) {
                continue;
            }
            let new_epoch = ticket.owner.epoch.next_for(self.index);
            let kind = EventKind::TakenOver {
                from: from.clone(),
                fencing_token,
                previous_epoch: ticket.owner.epoch,
                through_seq,
            };
            taken.push(self.append(id, new_epoch, kind, now));
        }
        taken
    }

    /// The end of a shift: a summary of what was handed to `next`.
    pub fn shift_summary(
        &mut self,
        shift_start: Timestamp,
        now: Timestamp,
        handed_off: Vec<(TicketId, RegionId)>,
        next: &RegionId,
    ) -> Result<EventEnvelope, Refusal> {
        let summary = ShiftSummary {
            region: self.region.clone(),
            shift_start,
            shift_end: now,
            handed_off,
            kept: Vec::new(),
            sla_at_risk: Vec::new(),
            escalations_open: Vec::new(),
            auto_notes: 0,
            next_region: Some(next.clone()),
            next_queue_owner: None,
        };
        let id = summary.id();
        if self
            .logs
            .values()
            .flatten()
            .any(|event| event.ticket_id == id)
        {
            return Err(format!("shift summary {id} already recorded"));
        }
        Ok(self.append(
            id,
            Epoch::default(),
            EventKind::ShiftSummary { summary },
            now,
        ))
    }
}

fn millis(at: Timestamp) -> u64 {
    u64::try_from(at.as_millisecond()).unwrap_or(0)
}

/// The simulated instant: the simulation's start plus its elapsed time, in
/// whole milliseconds (what the store keeps).
pub fn sim_now(start: Timestamp, elapsed: Duration) -> Timestamp {
    let millis = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
    start
        .checked_add(jiff::SignedDuration::from_millis(millis))
        .unwrap_or(start)
}

/// A host's handle on its region's database: what the real replicator
/// runs on inside the simulation. `now` reads the simulated clock.
pub struct ModelLog {
    region: RegionId,
    db: SharedDb,
    clock: Arc<dyn meridian_core::Clock>,
}

impl ModelLog {
    pub fn new(db: SharedDb, clock: Arc<dyn meridian_core::Clock>) -> Self {
        let region = lock(&db).region.clone();
        Self { region, db, clock }
    }
}

impl ReplicaLog for ModelLog {
    fn local_region(&self) -> &RegionId {
        &self.region
    }

    fn cursor<'a>(&'a self, origin: &'a RegionId) -> BoxFuture<'a, meridian_store::Result<u64>> {
        let cursor = lock(&self.db).cursor(origin);
        Box::pin(async move { Ok(cursor) })
    }

    fn local_head(&self) -> BoxFuture<'_, meridian_store::Result<u64>> {
        let head = lock(&self.db).head();
        Box::pin(async move { Ok(head) })
    }

    fn events_after<'a>(
        &'a self,
        origin: &'a RegionId,
        after_seq: u64,
        limit: u32,
    ) -> BoxFuture<'a, meridian_store::Result<Vec<EventEnvelope>>> {
        let page: Vec<EventEnvelope> = {
            let db = lock(&self.db);
            let log = db.logs.get(origin).map(Vec::as_slice).unwrap_or_default();
            let start = usize::try_from(after_seq)
                .unwrap_or(usize::MAX)
                .min(log.len());
            let limit =
                usize::try_from(limit.min(meridian_store::EVENTS_PAGE_MAX)).unwrap_or(usize::MAX);
            log[start..].iter().take(limit).cloned().collect()
        };
        Box::pin(async move { Ok(page) })
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<EventEnvelope>> {
        lock(&self.db).commits.subscribe()
    }

    fn apply_remote<'a>(
        &'a self,
        origin: &'a RegionId,
        events: Vec<EventEnvelope>,
    ) -> BoxFuture<'a, meridian_store::Result<u64>> {
        let now = self.clock.now();
        let outcome = lock(&self.db).apply_remote(origin, events, now);
        Box::pin(async move { outcome })
    }

    fn wait_applied<'a>(
        &'a self,
        origin: &'a RegionId,
        seq: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, meridian_store::Result<bool>> {
        Box::pin(async move {
            let mut commits = self.subscribe();
            let reached = || lock(&self.db).cursor(origin) >= seq;
            let waited = tokio::time::timeout(timeout, async {
                while !reached() {
                    match commits.recv().await {
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            })
            .await;
            Ok(waited.is_ok() && reached())
        })
    }

    fn may_hold_pinned(&self) -> bool {
        lock(&self.db)
            .logs
            .values()
            .flatten()
            .any(|event| matches!(&event.kind, EventKind::TicketCreated { ticket } if !ticket.residency.is_empty()))
    }

    fn residencies<'a>(
        &'a self,
        ids: &'a [TicketId],
    ) -> BoxFuture<'a, meridian_store::Result<meridian_replication::Residencies>> {
        let db = lock(&self.db);
        let found = ids
            .iter()
            .filter_map(|id| db.ticket(*id).map(|ticket| (*id, ticket.residency)))
            .collect();
        Box::pin(async move { Ok(found) })
    }
}

/// A region's state as the shared checker reads it
/// ([`meridian_replication::RegionView`]): its logs, and each ticket's
/// record as the store keeps it (the projection, the notes by creation time
/// then id, the stale writes as conflicts).
pub fn region_view(
    region: &RegionId,
    logs: &BTreeMap<RegionId, Vec<EventEnvelope>>,
) -> meridian_replication::RegionView {
    let mut by_ticket: BTreeMap<TicketId, Vec<EventEnvelope>> = BTreeMap::new();
    for event in logs.values().flatten() {
        by_ticket
            .entry(event.ticket_id)
            .or_default()
            .push(event.clone());
    }
    let mut tickets = BTreeMap::new();
    for (id, events) in by_ticket {
        let Some(replayed) = replay(&events) else {
            continue;
        };
        let mut notes: Vec<Note> = events
            .iter()
            .filter_map(|event| match &event.kind {
                EventKind::NoteAdded { note } | EventKind::HandoffOffered { note, .. } => {
                    Some(note.clone())
                }
                _ => None,
            })
            .collect();
        notes.sort_by_key(|note| (note.created_at, note.id));
        let conflicts = replayed
            .stale
            .iter()
            .map(|stale| meridian_store::ConflictRecord {
                origin_region: stale.origin_region.clone(),
                origin_seq: stale.origin_seq,
                stale_epoch: stale.changes.epoch,
                current_epoch: replayed.ticket.owner.epoch,
                changes: stale.changes.clone(),
                recorded_at: replayed.ticket.updated_at,
            })
            .collect();
        tickets.insert(
            id,
            meridian_store::TicketRecord {
                ticket: replayed.ticket,
                notes,
                conflicts,
            },
        );
    }
    meridian_replication::RegionView {
        region: region.clone(),
        logs: logs.clone(),
        tickets,
    }
}

/// A stable hash of a log, for the determinism check: FNV-1a over each
/// event's debug form.
pub fn fingerprint(dbs: &[SharedDb]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for db in dbs {
        let db = lock(db);
        for (origin, log) in &db.logs {
            for event in log {
                for byte in format!("{}{origin}{event:?}", db.region).bytes() {
                    hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
    }
    hash
}
