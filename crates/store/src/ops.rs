//! The writes, each run inside a write transaction the writer task owns.
//!
//! Every write inserts its event and its projection change in the same
//! transaction (the outbox rule). Each operation makes all of its refusal
//! checks before its first write, so a refused command leaves the shared
//! batch transaction exactly as it found it and its neighbours commit.

use jiff::Timestamp;
use meridian_core::{
    EventEnvelope, EventKind, Note, RegionId, Status, Ticket, TicketChanges, TicketId,
};
use sqlx::{AnyConnection, any::AnyRow};

use crate::{
    Backend, Error, WriteMeta,
    codec::{
        self, Bind, EVENT_COLUMNS, EventRow, SqlBuilder, TICKET_COLUMNS, bind_note, bind_ticket,
        changes_json, millis, to_db,
    },
};

/// How one command in a batch ended without success.
pub(crate) enum Fail {
    /// Refused before writing anything: report it, keep the batch.
    Refused(Error),
    /// Failed, possibly after writing: the transaction must be rolled back.
    Abort(Error),
}

impl From<sqlx::Error> for Fail {
    fn from(e: sqlx::Error) -> Self {
        Fail::Abort(Error::Database(e))
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Abort(e)
    }
}

fn refused(e: impl Into<Error>) -> Fail {
    Fail::Refused(e.into())
}

const INSERT_TICKET_HEAD: &str = "INSERT INTO tickets (ticket_id, subject, body, customer, tier, skills, language, \
     residency, status, assignee, priority, owner_region, owner_epoch, handoff_to, sla, sla_check_at, sla_at_risk, \
     created_at, updated_at) VALUES ";

const INSERT_TICKET: &str = "INSERT INTO tickets (ticket_id, subject, body, customer, tier, skills, language, \
     residency, status, assignee, priority, owner_region, owner_epoch, handoff_to, sla, sla_check_at, sla_at_risk, \
     created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
     ON CONFLICT (ticket_id) DO NOTHING";

const INSERT_NOTE_HEAD: &str =
    "INSERT INTO notes (note_id, ticket_id, region, author, body, created_at, auto) VALUES ";

const INSERT_NOTE: &str = "INSERT INTO notes (note_id, ticket_id, region, author, body, created_at, auto) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (note_id) DO NOTHING";

/// The most replicated creations and notes applied by one multi-row
/// statement: 19 parameters a ticket keeps 128 rows far below both
/// backends' parameter limits.
const APPLY_RUN_MAX: usize = 128;

const INSERT_EVENT_HEAD: &str = "INSERT INTO events (origin_region, origin_seq, ticket_id, epoch, hlc_time, \
     traceparent, kind, payload, recorded_at) VALUES ";

const INSERT_REMOTE_EVENT: &str = "INSERT INTO events (origin_region, origin_seq, ticket_id, epoch, hlc_time, \
     traceparent, kind, payload, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (origin_region, origin_seq) DO NOTHING";

/// The most local events one statement inserts: 9 parameters each stays far
/// below both SQLite's and PostgreSQL's parameter limits.
const LOCAL_EVENTS_PER_INSERT_MAX: usize = 128;

/// The ownership columns of a ticket.
struct OwnerRow {
    status: Status,
    owner: RegionId,
    epoch: meridian_core::Epoch,
    handoff_to: Option<RegionId>,
}

/// One write transaction: the connection, and the head of the local log,
/// read (and on PostgreSQL locked) when the transaction began.
pub(crate) struct WriteTx<'c> {
    conn: &'c mut AnyConnection,
    backend: Backend,
    local_region: &'c RegionId,
    /// When this transaction started, for rows recorded without a caller's
    /// instant (applied remote events, conflicts).
    now_ms: i64,
    now: Timestamp,
    first_seq: u64,
    last_seq: u64,
    /// Local events waiting to be inserted together when the transaction
    /// finishes: one multi-row statement instead of a round trip per write.
    /// Local events never collide (their sequence numbers are fresh), so
    /// deferring them cannot turn a refusal into a failure.
    local_events: Vec<(EventRow, i64)>,
    /// Conflicts this transaction recorded, published after it commits.
    conflicts: Vec<crate::RecordedConflict>,
}

impl<'c> WriteTx<'c> {
    /// Reads the local log head. On PostgreSQL the row stays locked until
    /// commit, so gateway replicas sharing one database allocate one dense
    /// sequence; every batch takes this lock first, so locks are always
    /// taken in the same order.
    ///
    /// `generation` is the writer generation this store claimed when it
    /// opened as the region's active writer ([`crate::Store::open_fenced`]).
    /// It is read under the same lock, and a store whose generation is no
    /// longer the region's is refused with [`Error::Superseded`] before it
    /// writes anything: another replica took the region over, and claiming
    /// the generation waits for this lock, so no transaction of the stale
    /// writer can commit after the successor's claim.
    pub(crate) async fn start(
        conn: &'c mut AnyConnection,
        backend: Backend,
        local_region: &'c RegionId,
        now: Timestamp,
        generation: Option<u64>,
    ) -> Result<Self, Error> {
        let sql = format!(
            "SELECT last_seq, writer_generation FROM origins WHERE region = $1{}",
            for_update(backend)
        );
        let row = sqlx::query(&sql)
            .bind(local_region.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        let Some(row) = row else {
            return Err(Error::Corrupt(format!(
                "origins: no row for the local region {local_region}"
            )));
        };
        let last_seq = codec::uint(&row, "origins", "last_seq")?;
        if let Some(held) = generation {
            let current = codec::uint(&row, "origins", "writer_generation")?;
            if current != held {
                return Err(Error::Superseded {
                    region: local_region.clone(),
                    held,
                    current,
                });
            }
        }
        Ok(Self {
            conn,
            backend,
            local_region,
            now_ms: millis(now),
            now,
            first_seq: last_seq,
            last_seq,
            local_events: Vec::new(),
            conflicts: Vec::new(),
        })
    }

    /// Writes the new log head, if this transaction allocated any; returns
    /// the conflicts it recorded.
    pub(crate) async fn finish(mut self) -> Result<Vec<crate::RecordedConflict>, Error> {
        self.flush_local_events().await?;
        if self.last_seq != self.first_seq {
            sqlx::query("UPDATE origins SET last_seq = $2 WHERE region = $1")
                .bind(self.local_region.as_str())
                .bind(to_db(self.last_seq, "origin_seq")?)
                .execute(&mut *self.conn)
                .await?;
        }
        Ok(self.conflicts)
    }

    fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// Builds a local event before any write, so that a value that cannot be
    /// stored is a refusal rather than a half-done command.
    fn local_event(
        &self,
        ticket_id: TicketId,
        epoch: meridian_core::Epoch,
        meta: &WriteMeta,
        kind: EventKind,
    ) -> Result<(EventEnvelope, EventRow), Fail> {
        let event = EventEnvelope {
            origin_region: self.local_region.clone(),
            origin_seq: 0,
            ticket_id,
            epoch,
            hlc_time: meta.hlc_time,
            traceparent: meta.traceparent.clone(),
            kind,
        };
        let row = EventRow::new(&event).map_err(refused)?;
        Ok((event, row))
    }

    /// Allocates the next local origin_seq and queues the event for the
    /// transaction's log insert.
    fn append_local(
        &mut self,
        mut event: EventEnvelope,
        mut row: EventRow,
        meta: &WriteMeta,
    ) -> Result<EventEnvelope, Fail> {
        let seq = self.next_seq();
        event.origin_seq = seq;
        row.origin_seq = to_db(seq, "origin_seq")?;
        self.local_events.push((row, millis(meta.at)));
        Ok(event)
    }

    /// Inserts the deferred local events. Chunks are powers of two, so a
    /// connection prepares at most a handful of distinct statements.
    async fn flush_local_events(&mut self) -> Result<(), Error> {
        let pending = std::mem::take(&mut self.local_events);
        let mut rest = pending.as_slice();
        while !rest.is_empty() {
            let size = LOCAL_EVENTS_PER_INSERT_MAX.min(1 << rest.len().ilog2());
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            let sql = format!(
                "{INSERT_EVENT_HEAD}{}",
                values_rows(self.backend, chunk.len(), 9)
            );
            let mut query = sqlx::query(&sql);
            for (row, recorded_at_ms) in chunk {
                query = row.bind(query, *recorded_at_ms);
            }
            query.execute(&mut *self.conn).await?;
        }
        Ok(())
    }

    /// Appends a replicated event to the log; an event already there is left
    /// alone and `false` is returned.
    async fn insert_remote_event(
        &mut self,
        row: &EventRow,
        recorded_at_ms: i64,
    ) -> Result<bool, Fail> {
        let done = row
            .bind(sqlx::query(INSERT_REMOTE_EVENT), recorded_at_ms)
            .execute(&mut *self.conn)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- local writes ----

    pub(crate) async fn create_ticket(
        &mut self,
        ticket: &Ticket,
        meta: &WriteMeta,
    ) -> Result<EventEnvelope, Fail> {
        // A region creates only tickets it owns: creating is an owner-scoped
        // write like any other.
        if &ticket.owner.owner_region != self.local_region {
            return Err(refused(Error::Fenced {
                owner: ticket.owner.owner_region.clone(),
                epoch: ticket.owner.epoch,
            }));
        }
        let kind = EventKind::TicketCreated {
            ticket: Box::new(ticket.clone()),
        };
        let (event, row) = self.local_event(ticket.id, ticket.owner.epoch, meta, kind)?;
        let insert = bind_ticket(sqlx::query(INSERT_TICKET), ticket).map_err(refused)?;
        if insert.execute(&mut *self.conn).await?.rows_affected() == 0 {
            return Err(refused(Error::Duplicate(format!("ticket {}", ticket.id))));
        }
        self.append_local(event, row, meta)
    }

    /// An owner-scoped change: `kind` is an event that carries changes
    /// (`ticket_updated`, `sla_warning`, `sla_breached`).
    pub(crate) async fn update_ticket(
        &mut self,
        ticket_id: TicketId,
        kind: &EventKind,
        meta: &WriteMeta,
    ) -> Result<(Ticket, EventEnvelope), Fail> {
        let Some(changes) = kind.owner_changes() else {
            return Err(refused(Error::invalid(
                "kind",
                format!("{} carries no owner-scoped change", kind.name()),
            )));
        };
        if changes.is_empty() {
            return Err(refused(Error::invalid(
                "changes",
                "names no field to change",
            )));
        }
        if let Some(Some(assignee)) = &changes.assignee {
            meridian_core::ticket::check_assignee(assignee).map_err(refused)?;
        }
        let (event, row) = self.local_event(ticket_id, changes.epoch, meta, kind.clone())?;
        // Fencing is in the statement itself: it matches only at the caller's
        // epoch, only if this region owns the ticket, and only from a status
        // that may move to the requested one.
        let update = update_statement(
            ticket_id,
            changes,
            meta.hlc_time.millis(),
            Some(self.local_region),
        )
        .map_err(refused)?;
        let Some(updated) = update.query().fetch_optional(&mut *self.conn).await? else {
            return Err(refused(self.why_not_updated(ticket_id, changes).await?));
        };
        let ticket = codec::ticket_from_row(&updated)?;
        let event = self.append_local(event, row, meta)?;
        Ok((ticket, event))
    }

    /// Explains an owner-scoped update that matched no row.
    async fn why_not_updated(
        &mut self,
        ticket_id: TicketId,
        changes: &TicketChanges,
    ) -> Result<Error, Fail> {
        let Some(OwnerRow {
            status,
            owner,
            epoch,
            handoff_to,
        }) = self.owner_row(ticket_id).await?
        else {
            return Ok(Error::TicketNotFound(ticket_id));
        };
        if epoch != changes.epoch || &owner != self.local_region {
            return Ok(Error::Fenced { owner, epoch });
        }
        if let Some(to) = handoff_to {
            return Ok(Error::Invalid(meridian_core::Error::HandoffPending { to }));
        }
        if let Some(to) = changes.status
            && to != status
            && !status.can_become(to)
        {
            return Ok(Error::Invalid(meridian_core::Error::IllegalTransition {
                from: status,
                to,
            }));
        }
        // Nothing else can make the statement miss; should it happen, the
        // caller still learns who owns the ticket.
        Ok(Error::Fenced { owner, epoch })
    }

    pub(crate) async fn add_note(
        &mut self,
        note: &Note,
        meta: &WriteMeta,
    ) -> Result<EventEnvelope, Fail> {
        note.validate().map_err(refused)?;
        let row = sqlx::query("SELECT owner_epoch FROM tickets WHERE ticket_id = $1")
            .bind(note.ticket_id.to_string())
            .fetch_optional(&mut *self.conn)
            .await?;
        let Some(row) = row else {
            return Err(refused(Error::TicketNotFound(note.ticket_id)));
        };
        let epoch = codec::epoch(&row, "tickets", "owner_epoch")?;
        let kind = EventKind::NoteAdded { note: note.clone() };
        let (event, event_row) = self.local_event(note.ticket_id, epoch, meta, kind)?;
        if bind_note(sqlx::query(INSERT_NOTE), note)
            .execute(&mut *self.conn)
            .await?
            .rows_affected()
            == 0
        {
            return Err(refused(Error::Duplicate(format!("note {}", note.id))));
        }
        self.append_local(event, event_row, meta)
    }

    /// A handoff step written locally (`kind` is an ownership event): the
    /// offer and the refusal by the owner at its epoch, the acceptance by
    /// the target at the new epoch it minted. Each is fenced in its
    /// statement; a miss says who owns the ticket or what is pending.
    pub(crate) async fn ownership_change(
        &mut self,
        ticket_id: TicketId,
        epoch: meridian_core::Epoch,
        kind: &EventKind,
        meta: &WriteMeta,
    ) -> Result<(Ticket, EventEnvelope), Fail> {
        if let EventKind::HandoffOffered { handoff, note, .. } = kind {
            handoff.validate().map_err(refused)?;
            note.validate().map_err(refused)?;
            if note.ticket_id != ticket_id {
                return Err(refused(Error::invalid(
                    "note.ticket_id",
                    "names another ticket",
                )));
            }
        }
        let kind = &match kind {
            EventKind::TakenOver {
                from,
                fencing_token,
                ..
            } => self.takeover_event(ticket_id, from, *fencing_token).await?,
            other => other.clone(),
        };
        let (event, row) = self.local_event(ticket_id, epoch, meta, kind.clone())?;
        let statement = ownership_statement(
            ticket_id,
            epoch,
            kind,
            meta.hlc_time.millis(),
            self.local_region,
            true,
        )
        .map_err(refused)?;
        let Some(updated) = statement.query().fetch_optional(&mut *self.conn).await? else {
            return Err(refused(self.why_not_moved(ticket_id, kind).await?));
        };
        if let EventKind::HandoffOffered { note, .. } = kind
            && bind_note(sqlx::query(INSERT_NOTE), note)
                .execute(&mut *self.conn)
                .await?
                .rows_affected()
                == 0
        {
            return Err(Fail::Abort(Error::Duplicate(format!("note {}", note.id))));
        }
        let ticket = codec::ticket_from_row(&updated)?;
        let event = self.append_local(event, row, meta)?;
        Ok((ticket, event))
    }

    /// The `taken_over` event for `from`'s ticket: the epoch `from` holds
    /// here and this store's cursor of `from`'s log, which together say
    /// which of `from`'s writes the successor's ownership builds on.
    async fn takeover_event(
        &mut self,
        ticket_id: TicketId,
        from: &RegionId,
        fencing_token: u64,
    ) -> Result<EventKind, Fail> {
        let previous_epoch = match self.owner_row(ticket_id).await? {
            Some(row) => row.epoch,
            // The fenced statement misses and explains; nothing is written.
            None => meridian_core::Epoch::default(),
        };
        let row = sqlx::query("SELECT applied_seq FROM cursors WHERE origin_region = $1")
            .bind(from.as_str())
            .fetch_optional(&mut *self.conn)
            .await?;
        let through_seq = match row {
            Some(row) => codec::uint(&row, "cursors", "applied_seq")?,
            None => 0,
        };
        Ok(EventKind::TakenOver {
            from: from.clone(),
            fencing_token,
            previous_epoch,
            through_seq,
        })
    }

    /// Who owns a ticket, for explaining a fenced write that matched no row.
    async fn owner_row(&mut self, ticket_id: TicketId) -> Result<Option<OwnerRow>, Fail> {
        let row = sqlx::query("SELECT status, owner_region, owner_epoch, handoff_to FROM tickets WHERE ticket_id = $1")
            .bind(ticket_id.to_string())
            .fetch_optional(&mut *self.conn)
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(OwnerRow {
            status: codec::parsed::<Status>(&row, "tickets", "status")?,
            owner: codec::parsed::<RegionId>(&row, "tickets", "owner_region")?,
            epoch: codec::epoch(&row, "tickets", "owner_epoch")?,
            handoff_to: codec::opt_text(&row, "tickets", "handoff_to")?
                .map(|r| {
                    r.parse::<RegionId>()
                        .map_err(|e| Error::corrupt("tickets", "handoff_to", e))
                })
                .transpose()?,
        }))
    }

    /// Explains a handoff step that matched no row.
    async fn why_not_moved(
        &mut self,
        ticket_id: TicketId,
        kind: &EventKind,
    ) -> Result<Error, Fail> {
        let Some(OwnerRow {
            owner,
            epoch,
            handoff_to: pending,
            ..
        }) = self.owner_row(ticket_id).await?
        else {
            return Ok(Error::TicketNotFound(ticket_id));
        };
        Ok(match (kind, pending) {
            (EventKind::HandoffOffered { .. }, Some(to)) if &owner == self.local_region => {
                Error::Invalid(meridian_core::Error::HandoffPending { to })
            }
            (EventKind::HandoffAccepted { from, .. }, pending)
                if pending.as_ref() != Some(self.local_region) =>
            {
                Error::Invalid(meridian_core::Error::NoSuchOffer {
                    from: from.clone(),
                    to: self.local_region.clone(),
                })
            }
            (EventKind::HandoffRefused { to, .. }, pending) if pending.as_ref() != Some(to) => {
                Error::Invalid(meridian_core::Error::NoSuchOffer {
                    from: self.local_region.clone(),
                    to: to.clone(),
                })
            }
            _ => Error::Fenced { owner, epoch },
        })
    }

    /// Records a shift summary: an event whose ticket id is the summary's
    /// own, and its row. The same summary twice is a duplicate.
    pub(crate) async fn shift_summary(
        &mut self,
        summary: &meridian_core::ShiftSummary,
        meta: &WriteMeta,
    ) -> Result<EventEnvelope, Fail> {
        if &summary.region != self.local_region {
            return Err(refused(Error::invalid(
                "summary.region",
                format!("{} is not this store's region", summary.region),
            )));
        }
        let id = summary.id();
        let kind = EventKind::ShiftSummary {
            summary: summary.clone(),
        };
        let (event, row) = self.local_event(id, meridian_core::Epoch::default(), meta, kind)?;
        if !self.insert_shift_summary(summary).await? {
            return Err(refused(Error::Duplicate(format!("shift summary {id}"))));
        }
        self.append_local(event, row, meta)
    }

    async fn insert_shift_summary(
        &mut self,
        summary: &meridian_core::ShiftSummary,
    ) -> Result<bool, Fail> {
        let done = sqlx::query(
            "INSERT INTO shift_summaries (summary_id, region, shift_end, summary) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (summary_id) DO NOTHING",
        )
        .bind(summary.id().to_string())
        .bind(summary.region.as_str())
        .bind(millis(summary.shift_end))
        .bind(serde_json::to_string(summary).map_err(|e| refused(Error::invalid("summary", e.to_string())))?)
        .execute(&mut *self.conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records an intake-spike alert or its clearing (`kind` is
    /// `intake_spike` or `intake_spike_cleared`): an event whose ticket id is
    /// the alert's own and that projects nowhere (the log is its record).
    /// The same alert twice, as when two replicas of this region close the
    /// same bucket, is a duplicate.
    pub(crate) async fn intake_spike(
        &mut self,
        kind: &EventKind,
        meta: &WriteMeta,
    ) -> Result<EventEnvelope, Fail> {
        let (spike, id) = match kind {
            EventKind::IntakeSpike { spike } => (spike, spike.raised_id()),
            EventKind::IntakeSpikeCleared { spike } => (spike, spike.cleared_id()),
            other => {
                return Err(refused(Error::invalid(
                    "kind",
                    format!("{} is not an intake spike", other.name()),
                )));
            }
        };
        if &spike.region != self.local_region {
            return Err(refused(Error::invalid(
                "spike.region",
                format!("{} is not this store's region", spike.region),
            )));
        }
        let (event, row) =
            self.local_event(id, meridian_core::Epoch::default(), meta, kind.clone())?;
        let queued = self
            .local_events
            .iter()
            .any(|(queued, _)| queued.ticket_id == row.ticket_id);
        let logged = sqlx::query("SELECT 1 FROM events WHERE ticket_id = $1 LIMIT 1")
            .bind(row.ticket_id.as_str())
            .fetch_optional(&mut *self.conn)
            .await?;
        if queued || logged.is_some() {
            return Err(refused(Error::Duplicate(format!("{} {id}", kind.name()))));
        }
        self.append_local(event, row, meta)
    }

    // ---- replication apply ----

    /// Applies a peer's events after this store's cursor for that origin,
    /// together with the cursor. Returns the new cursor and the events that
    /// were new here.
    pub(crate) async fn apply_remote(
        &mut self,
        origin: &RegionId,
        events: &[EventEnvelope],
    ) -> Result<(u64, Vec<EventEnvelope>), Fail> {
        if origin == self.local_region {
            return Err(refused(Error::invalid(
                "origin_region",
                format!(
                    "{origin} is this store's own region; its log is written locally, not applied"
                ),
            )));
        }
        let mut incoming = Vec::with_capacity(events.len());
        for event in events {
            if &event.origin_region != origin {
                return Err(refused(Error::invalid(
                    "origin_region",
                    format!(
                        "event {} of {} arrived in a batch from {origin}",
                        event.origin_seq, event.origin_region
                    ),
                )));
            }
            let carried = match &event.kind {
                EventKind::TicketCreated { ticket } => Some(ticket.id),
                EventKind::NoteAdded { note } => Some(note.ticket_id),
                EventKind::HandoffOffered { note, .. } => Some(note.ticket_id),
                EventKind::ShiftSummary { summary } => Some(summary.id()),
                EventKind::IntakeSpike { spike } => Some(spike.raised_id()),
                EventKind::IntakeSpikeCleared { spike } => Some(spike.cleared_id()),
                _ => None,
            };
            if let Some(carried) = carried
                && carried != event.ticket_id
            {
                return Err(refused(Error::invalid(
                    "ticket_id",
                    format!(
                        "event {} of {origin} is about {} but carries ticket {carried}",
                        event.origin_seq, event.ticket_id
                    ),
                )));
            }
            // Epochs inside the payload must fit their columns too; checked
            // now so that a malformed event is refused, not half-applied.
            match (&event.kind, event.kind.owner_changes()) {
                (EventKind::TicketCreated { ticket }, _) => {
                    to_db(ticket.owner.epoch.raw(), "owner.epoch").map(drop)
                }
                (_, Some(changes)) => to_db(changes.epoch.raw(), "changes.epoch").map(drop),
                (_, None) => Ok(()),
            }
            .map_err(refused)?;
            incoming.push((event, EventRow::new(event).map_err(refused)?));
        }
        self.refuse_redacted_copies_here(origin, events).await?;
        incoming.sort_by_key(|(event, _)| event.origin_seq);

        // Make sure the cursor row exists so it can be locked. This write
        // precedes the gap check, which is harmless: a cursor at 0 means
        // exactly what no cursor means.
        sqlx::query(
            "INSERT INTO cursors (origin_region, applied_seq, updated_at) VALUES ($1, 0, $2) \
             ON CONFLICT (origin_region) DO NOTHING",
        )
        .bind(origin.as_str())
        .bind(self.now_ms)
        .execute(&mut *self.conn)
        .await?;
        let sql = format!(
            "SELECT applied_seq FROM cursors WHERE origin_region = $1{}",
            for_update(self.backend)
        );
        let row = sqlx::query(&sql)
            .bind(origin.as_str())
            .fetch_one(&mut *self.conn)
            .await?;
        let cursor = codec::uint(&row, "cursors", "applied_seq")?;

        // Duplicates at or below the cursor are skipped; the rest must
        // continue the log exactly, or nothing is applied.
        let mut next = cursor + 1;
        let mut to_apply = Vec::new();
        for (event, row) in incoming {
            if event.origin_seq < next {
                continue;
            }
            if event.origin_seq > next {
                return Err(refused(Error::Gap {
                    origin: origin.clone(),
                    expected: next,
                    got: event.origin_seq,
                }));
            }
            to_apply.push((event, row));
            next += 1;
        }
        if to_apply.is_empty() {
            return Ok((cursor, Vec::new()));
        }

        let mut applied = Vec::with_capacity(to_apply.len());
        let mut rest = to_apply.as_slice();
        while let Some(((event, row), tail)) = rest.split_first() {
            // Catch-up is mostly creations and notes: runs of them go in a
            // few multi-row statements instead of two round trips each.
            let run = rest
                .iter()
                .take(APPLY_RUN_MAX)
                .take_while(|(event, _)| inserts_only(&event.kind))
                .count();
            if run > 1 {
                let (bulk, tail) = rest.split_at(run);
                self.apply_inserts(bulk, &mut applied).await?;
                rest = tail;
                continue;
            }
            rest = tail;
            if self.insert_remote_event(row, self.now_ms).await? {
                self.project_remote(event).await?;
                applied.push((*event).clone());
            } else {
                // The cursor and the log commit together, so this means the
                // two disagree; the log is right, and the event is not
                // projected twice.
                tracing::warn!(origin = %origin, origin_seq = event.origin_seq, "event above the cursor was already in the log");
            }
        }
        let new_cursor = next - 1;
        sqlx::query(
            "UPDATE cursors SET applied_seq = $2, updated_at = $3 WHERE origin_region = $1",
        )
        .bind(origin.as_str())
        .bind(to_db(new_cursor, "origin_seq")?)
        .bind(self.now_ms)
        .execute(&mut *self.conn)
        .await?;
        Ok((new_cursor, applied))
    }

    /// Refuses redacted copies (`meridian_core::residency`) of events of a
    /// ticket this region is in the residency of: here the full event must
    /// be stored, and a sender that has only the copy must not send it.
    /// Senders decide so themselves; this is the receiving end's guard.
    /// A note of a ticket not here yet cannot be checked and is let in.
    async fn refuse_redacted_copies_here(
        &mut self,
        origin: &RegionId,
        events: &[EventEnvelope],
    ) -> Result<(), Fail> {
        use meridian_core::residency::{is_redacted, may_hold, residency_ticket};
        let here = self.local_region.clone();
        let refusal = |event: &EventEnvelope| {
            refused(Error::invalid(
                "payload_json",
                format!(
                    "event {} of {origin} is a redacted copy, but {here} is in ticket {}'s residency and keeps the full event",
                    event.origin_seq, event.ticket_id
                ),
            ))
        };
        let mut ask = Vec::new();
        for event in events.iter().filter(|event| is_redacted(&event.kind)) {
            match &event.kind {
                EventKind::TicketCreated { ticket } if may_hold(&ticket.residency, &here) => {
                    return Err(refusal(event));
                }
                kind => ask.extend(residency_ticket(kind).map(|id| (id, event))),
            }
        }
        for chunk in ask.chunks(500) {
            let sql = format!(
                "SELECT ticket_id, residency FROM tickets WHERE ticket_id IN ({})",
                placeholders(self.backend, 1, chunk.len())
            );
            let query = chunk
                .iter()
                .fold(sqlx::query(&sql), |q, (id, _)| q.bind(id.to_string()));
            for row in query.fetch_all(&mut *self.conn).await? {
                let id = codec::parsed::<TicketId>(&row, "tickets", "ticket_id")?;
                let residency: std::collections::BTreeSet<RegionId> =
                    codec::json_column(&row, "tickets", "residency")?;
                if may_hold(&residency, &here)
                    && let Some((_, event)) = chunk.iter().find(|(asked, _)| *asked == id)
                {
                    return Err(refusal(event));
                }
            }
        }
        Ok(())
    }

    /// Applies a run of creations and notes: their events, tickets and
    /// notes each in one statement, then the fold for any created ticket
    /// whose history arrived before it.
    async fn apply_inserts(
        &mut self,
        run: &[(&EventEnvelope, EventRow)],
        applied: &mut Vec<EventEnvelope>,
    ) -> Result<(), Fail> {
        let sql = format!(
            "INSERT INTO events (origin_region, origin_seq, ticket_id, epoch, hlc_time, traceparent, kind, payload, \
             recorded_at) VALUES {} ON CONFLICT (origin_region, origin_seq) DO NOTHING RETURNING origin_seq",
            values_rows(self.backend, run.len(), 9)
        );
        let mut query = sqlx::query(&sql);
        for (_, row) in run {
            query = row.bind(query, self.now_ms);
        }
        let inserted = query.fetch_all(&mut *self.conn).await?;
        let mut new_seqs = Vec::with_capacity(inserted.len());
        for row in &inserted {
            new_seqs.push(codec::uint(row, "events", "origin_seq")?);
        }
        if new_seqs.len() != run.len() {
            tracing::warn!(origin = %run[0].0.origin_region, expected = run.len(), new = new_seqs.len(),
                "events above the cursor were already in the log");
        }
        new_seqs.sort_unstable();
        let fresh: Vec<&EventEnvelope> = run
            .iter()
            .map(|(event, _)| *event)
            .filter(|e| new_seqs.binary_search(&e.origin_seq).is_ok())
            .collect();

        let tickets: Vec<&Ticket> = fresh
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::TicketCreated { ticket } => Some(&**ticket),
                _ => None,
            })
            .collect();
        if !tickets.is_empty() {
            let sql = format!(
                "{INSERT_TICKET_HEAD}{} ON CONFLICT (ticket_id) DO NOTHING",
                values_rows(self.backend, tickets.len(), 19)
            );
            let mut query = sqlx::query(&sql);
            for ticket in &tickets {
                query = bind_ticket(query, ticket)?;
            }
            query.execute(&mut *self.conn).await?;
            // Changes from other origins that came first wait in the log.
            let sql = format!(
                "SELECT DISTINCT ticket_id FROM events WHERE ticket_id IN ({}) AND kind IN ({})",
                placeholders(self.backend, 1, tickets.len()),
                placeholders(self.backend, tickets.len() + 1, 7),
            );
            let mut query = sqlx::query(&sql);
            for ticket in &tickets {
                query = query.bind(ticket.id.to_string());
            }
            for kind in EventKind::CHANGE_KINDS
                .into_iter()
                .chain(EventKind::OWNERSHIP_KINDS)
            {
                query = query.bind(kind);
            }
            for row in query.fetch_all(&mut *self.conn).await? {
                let id = codec::parsed::<TicketId>(&row, "events", "ticket_id")?;
                self.rebuild(id).await?;
            }
        }

        let notes: Vec<&Note> = fresh
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::NoteAdded { note } => Some(note),
                _ => None,
            })
            .collect();
        if !notes.is_empty() {
            let sql = format!(
                "{INSERT_NOTE_HEAD}{} ON CONFLICT (note_id) DO NOTHING",
                values_rows(self.backend, notes.len(), 7)
            );
            let mut query = sqlx::query(&sql);
            for note in &notes {
                query = bind_note(query, note);
            }
            query.execute(&mut *self.conn).await?;
        }
        applied.extend(fresh.into_iter().cloned());
        Ok(())
    }

    async fn project_remote(&mut self, event: &EventEnvelope) -> Result<(), Fail> {
        match &event.kind {
            EventKind::TicketCreated { ticket } => {
                let insert = bind_ticket(sqlx::query(INSERT_TICKET), ticket)?;
                // Changes from other origins may have arrived first and wait
                // in the log; the fold puts them in place.
                if insert.execute(&mut *self.conn).await?.rows_affected() == 1
                    && self.has_history(ticket.id).await?
                {
                    self.rebuild(ticket.id).await?;
                }
            }
            EventKind::NoteAdded { note } => {
                bind_note(sqlx::query(INSERT_NOTE), note)
                    .execute(&mut *self.conn)
                    .await?;
            }
            EventKind::ShiftSummary { summary } => {
                self.insert_shift_summary(summary).await?;
            }
            kind if kind.is_ownership() => {
                let statement = ownership_statement(
                    event.ticket_id,
                    event.epoch,
                    kind,
                    event.hlc_time.millis(),
                    &event.origin_region,
                    false,
                )?;
                // No row: superseded by a later epoch already here, or the
                // ticket has not arrived yet (folded in when it does).
                statement.query().fetch_optional(&mut *self.conn).await?;
                if self.moved_past_writes_here(event).await? {
                    self.rebuild(event.ticket_id).await?;
                }
                if let EventKind::HandoffOffered { note, .. } = kind {
                    bind_note(sqlx::query(INSERT_NOTE), note)
                        .execute(&mut *self.conn)
                        .await?;
                }
            }
            kind => {
                if let Some(changes) = kind.owner_changes() {
                    self.apply_remote_update(event, changes).await?;
                }
            }
        }
        Ok(())
    }

    /// Applies a replicated owner-scoped change if it was made at the
    /// ticket's current epoch; otherwise keeps it as a conflict and leaves
    /// the projection alone. A change to a ticket not here yet stays in the
    /// log and is applied when the ticket's creation arrives (the two may
    /// come from different origins, in either order).
    async fn apply_remote_update(
        &mut self,
        event: &EventEnvelope,
        changes: &TicketChanges,
    ) -> Result<(), Fail> {
        let update = update_statement(event.ticket_id, changes, event.hlc_time.millis(), None)?;
        if update
            .query()
            .fetch_optional(&mut *self.conn)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let exists = sqlx::query("SELECT 1 FROM tickets WHERE ticket_id = $1")
            .bind(event.ticket_id.to_string())
            .fetch_optional(&mut *self.conn)
            .await?;
        if exists.is_none() {
            tracing::debug!(ticket_id = %event.ticket_id, origin = %event.origin_region, origin_seq = event.origin_seq,
                "update for a ticket not yet here waits in the log");
            return Ok(());
        }
        // Another epoch here: the write is either stale (a conflict) or was
        // made before an ownership move that arrived first. The fold tells.
        self.rebuild(event.ticket_id).await
    }

    /// Whether the ticket's log holds owner-scoped changes or ownership
    /// steps (notes need no fold: they have their own table).
    async fn has_history(&mut self, ticket_id: TicketId) -> Result<bool, Fail> {
        self.flush_local_events().await?;
        let query = sqlx::query("SELECT 1 FROM events WHERE ticket_id = $1 AND kind IN ($2, $3, $4, $5, $6, $7, $8) LIMIT 1")
            .bind(ticket_id.to_string());
        let query = EventKind::CHANGE_KINDS
            .into_iter()
            .chain(EventKind::OWNERSHIP_KINDS)
            .fold(query, |q, kind| q.bind(kind));
        Ok(query.fetch_optional(&mut *self.conn).await?.is_some())
    }

    /// Whether an ownership move out of an epoch finds writes of the old
    /// holder at that epoch made after it gave the epoch up: this store
    /// applied them (the failed region's own late writes, say), and the
    /// fold must now take them back as conflicts.
    async fn moved_past_writes_here(&mut self, event: &EventEnvelope) -> Result<bool, Fail> {
        let (from, epoch, first_stale) = match &event.kind {
            EventKind::HandoffAccepted {
                from,
                offer_seq,
                previous_epoch,
            } => (from, previous_epoch, *offer_seq),
            EventKind::TakenOver {
                from,
                previous_epoch,
                through_seq,
                ..
            } => (from, previous_epoch, through_seq.saturating_add(1)),
            _ => return Ok(false),
        };
        self.flush_local_events().await?;
        let row = sqlx::query(
            "SELECT 1 FROM events WHERE ticket_id = $1 AND origin_region = $2 AND epoch = $3 AND origin_seq >= $4 \
             AND kind IN ($5, $6, $7) LIMIT 1",
        )
        .bind(event.ticket_id.to_string())
        .bind(from.as_str())
        .bind(to_db(epoch.raw(), "epoch")?)
        .bind(to_db(first_stale, "origin_seq")?);
        let row = EventKind::CHANGE_KINDS
            .into_iter()
            .fold(row, |q, kind| q.bind(kind));
        Ok(row.fetch_optional(&mut *self.conn).await?.is_some())
    }

    /// Rewrites a ticket's projection and conflicts from its log with
    /// [`meridian_core::replay`]: the slow path for events that arrived in
    /// an order the incremental statements cannot follow.
    async fn rebuild(&mut self, ticket_id: TicketId) -> Result<(), Fail> {
        // The query below must see every event written so far.
        self.flush_local_events().await?;
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE ticket_id = $1 AND kind IN ($2, $3, $4, $5, $6, $7, $8, $9)"
        );
        let mut query = sqlx::query(&sql)
            .bind(ticket_id.to_string())
            .bind("ticket_created");
        for kind in EventKind::CHANGE_KINDS
            .into_iter()
            .chain(EventKind::OWNERSHIP_KINDS)
        {
            query = query.bind(kind);
        }
        let rows: Vec<AnyRow> = query.fetch_all(&mut *self.conn).await?;
        let events = rows
            .iter()
            .map(codec::event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(replayed) = meridian_core::replay(&events) else {
            return Ok(());
        };
        let ticket = &replayed.ticket;

        let (sla_json, check_at, at_risk) = codec::sla_columns(&ticket.sla)?;
        let mut sql = SqlBuilder::new("UPDATE tickets SET status = ");
        sql.bind(Bind::Text(ticket.status.as_str().to_owned()))
            .push(", assignee = ")
            .bind(Bind::OptText(ticket.assignee.clone()))
            .push(", priority = ")
            .bind(Bind::Text(ticket.priority.as_str().to_owned()))
            .push(", sla = ")
            .bind(Bind::Text(sla_json))
            .push(", sla_check_at = ");
        match check_at {
            Some(at) => sql.bind(Bind::Int(at)),
            None => sql.push("NULL"),
        };
        sql.push(", sla_at_risk = ")
            .bind(Bind::Int(at_risk))
            .push(", owner_region = ")
            .bind(Bind::Text(ticket.owner.owner_region.as_str().to_owned()))
            .push(", owner_epoch = ")
            .bind(Bind::Int(to_db(ticket.owner.epoch.raw(), "epoch")?))
            .push(", handoff_to = ")
            .bind(Bind::OptText(
                ticket.handoff_to.as_ref().map(|r| r.as_str().to_owned()),
            ))
            .push(", updated_at = ")
            .bind(Bind::Int(millis(ticket.updated_at)))
            .push(" WHERE ticket_id = ")
            .bind(Bind::Text(ticket_id.to_string()));
        sql.query().execute(&mut *self.conn).await?;

        // The conflicts are exactly the fold's stale writes; one recorded
        // before keeps its first recording time.
        let recorded =
            sqlx::query("SELECT origin_region, origin_seq FROM conflicts WHERE ticket_id = $1")
                .bind(ticket_id.to_string())
                .fetch_all(&mut *self.conn)
                .await?;
        for row in &recorded {
            let origin = codec::parsed::<RegionId>(row, "conflicts", "origin_region")?;
            let seq = codec::uint(row, "conflicts", "origin_seq")?;
            if !replayed
                .stale
                .iter()
                .any(|w| w.origin_region == origin && w.origin_seq == seq)
            {
                sqlx::query("DELETE FROM conflicts WHERE origin_region = $1 AND origin_seq = $2")
                    .bind(origin.as_str())
                    .bind(to_db(seq, "origin_seq")?)
                    .execute(&mut *self.conn)
                    .await?;
            }
        }
        for stale in &replayed.stale {
            let inserted = sqlx::query(
                "INSERT INTO conflicts (ticket_id, origin_region, origin_seq, stale_epoch, current_epoch, changes, recorded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (origin_region, origin_seq) DO NOTHING",
            )
            .bind(ticket_id.to_string())
            .bind(stale.origin_region.as_str())
            .bind(to_db(stale.origin_seq, "origin_seq")?)
            .bind(to_db(stale.changes.epoch.raw(), "epoch")?)
            .bind(to_db(ticket.owner.epoch.raw(), "epoch")?)
            .bind(changes_json(&stale.changes)?)
            .bind(self.now_ms)
            .execute(&mut *self.conn)
            .await?;
            if inserted.rows_affected() == 1 {
                tracing::warn!(%ticket_id, origin = %stale.origin_region, origin_seq = stale.origin_seq,
                    stale_epoch = %stale.changes.epoch, current_epoch = %ticket.owner.epoch,
                    "owner-scoped write at an epoch its writer no longer held kept as a conflict");
                self.conflicts.push(crate::RecordedConflict {
                    ticket_id,
                    conflict: crate::ConflictRecord {
                        origin_region: stale.origin_region.clone(),
                        origin_seq: stale.origin_seq,
                        stale_epoch: stale.changes.epoch,
                        current_epoch: ticket.owner.epoch,
                        changes: stale.changes.clone(),
                        recorded_at: self.now,
                    },
                });
            }
        }
        Ok(())
    }
}

/// `($1, .., $cols), ($cols+1, ..), ..` for a multi-row `VALUES`; `(?, ..)`
/// on SQLite, whose lookup of a numbered parameter scans every parameter
/// before it, which makes binding a long statement quadratic (it was a
/// third of catch-up's time). Values are always bound in order.
fn values_rows(backend: Backend, rows: usize, cols: usize) -> String {
    let mut sql = String::with_capacity(rows * cols * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&placeholders(backend, row * cols + 1, cols));
        sql.push(')');
    }
    sql
}

/// `count` comma-separated placeholders, numbered from `first` where the
/// backend numbers them.
pub(crate) fn placeholders(backend: Backend, first: usize, count: usize) -> String {
    let mut sql = String::with_capacity(count * 5);
    for n in first..first + count {
        if n > first {
            sql.push_str(", ");
        }
        match backend {
            Backend::Sqlite => sql.push('?'),
            Backend::Postgres => {
                sql.push('$');
                sql.push_str(&n.to_string());
            }
        }
    }
    sql
}

/// Whether applying a replicated event only inserts rows (its projection
/// is idempotent and reads nothing), so a run of them can go in bulk.
fn inserts_only(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::TicketCreated { .. } | EventKind::NoteAdded { .. }
    )
}

fn for_update(backend: Backend) -> &'static str {
    match backend {
        // SQLite has no row locks; `BEGIN IMMEDIATE` already holds the
        // database's write lock.
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE",
    }
}

/// The projection change of a handoff step, fenced in the statement.
/// `region` is the writer: this store's region for a local step, the
/// event's origin for a replicated one. Local steps check everything the
/// writer must hold; replicated steps only keep epochs growing, so replicas
/// converge whatever order the steps of different origins arrive in.
fn ownership_statement(
    ticket_id: TicketId,
    epoch: meridian_core::Epoch,
    kind: &EventKind,
    at_millis: u64,
    region: &RegionId,
    local: bool,
) -> Result<SqlBuilder, Error> {
    let at = to_db(at_millis, "hlc_time")?;
    let epoch = to_db(epoch.raw(), "epoch")?;
    let mut sql = SqlBuilder::new("UPDATE tickets SET ");
    match kind {
        EventKind::HandoffOffered { to, .. } => {
            sql.push("handoff_to = ")
                .bind(Bind::Text(to.as_str().to_owned()));
        }
        EventKind::HandoffAccepted { .. } => {
            sql.push("owner_region = ")
                .bind(Bind::Text(region.as_str().to_owned()))
                .push(", owner_epoch = ")
                .bind(Bind::Int(epoch))
                .push(", handoff_to = NULL");
        }
        EventKind::HandoffRefused { .. } => {
            sql.push("handoff_to = NULL");
        }
        EventKind::TakenOver { .. } => {
            sql.push("owner_region = ")
                .bind(Bind::Text(region.as_str().to_owned()))
                .push(", owner_epoch = ")
                .bind(Bind::Int(epoch))
                .push(", handoff_to = NULL");
        }
        other => {
            return Err(Error::invalid(
                "kind",
                format!("{} does not move ownership", other.name()),
            ));
        }
    }
    sql.push(", updated_at = CASE WHEN updated_at > ")
        .bind(Bind::Int(at))
        .push(" THEN updated_at ELSE ")
        .bind(Bind::Int(at))
        .push(" END WHERE ticket_id = ")
        .bind(Bind::Text(ticket_id.to_string()));
    match (kind, local) {
        (EventKind::HandoffOffered { .. }, _) => {
            sql.push(" AND owner_epoch = ")
                .bind(Bind::Int(epoch))
                .push(" AND handoff_to IS NULL");
            if local {
                sql.push(" AND owner_region = ")
                    .bind(Bind::Text(region.as_str().to_owned()));
            }
        }
        (EventKind::HandoffAccepted { previous_epoch, .. }, true) => {
            sql.push(" AND owner_epoch = ")
                .bind(Bind::Int(to_db(previous_epoch.raw(), "previous_epoch")?))
                .push(" AND handoff_to = ")
                .bind(Bind::Text(region.as_str().to_owned()));
        }
        (EventKind::TakenOver { from, .. }, true) => {
            // The successor takes only what the failed region owned, and
            // only below the epoch it mints: an offer the failed region had
            // pending dies with its ownership.
            sql.push(" AND owner_region = ")
                .bind(Bind::Text(from.as_str().to_owned()))
                .push(" AND owner_epoch < ")
                .bind(Bind::Int(epoch));
        }
        (EventKind::HandoffAccepted { .. } | EventKind::TakenOver { .. }, false) => {
            // Epochs only grow: an acceptance at a greater epoch wins
            // whatever this replica saw before.
            sql.push(" AND owner_epoch < ").bind(Bind::Int(epoch));
        }
        (EventKind::HandoffRefused { to, .. }, _) => {
            sql.push(" AND owner_epoch = ")
                .bind(Bind::Int(epoch))
                .push(" AND handoff_to = ")
                .bind(Bind::Text(to.as_str().to_owned()));
            if local {
                sql.push(" AND owner_region = ")
                    .bind(Bind::Text(region.as_str().to_owned()));
            }
        }
        _ => {}
    }
    sql.push(" RETURNING ").push(TICKET_COLUMNS);
    Ok(sql)
}

/// `UPDATE tickets SET <changed fields> WHERE ticket_id = .. AND owner_epoch
/// = .. RETURNING <ticket>`. With `owner`, the statement also requires that
/// region to own the ticket and the status move to be legal (local writes);
/// replicated writes were decided by their owner and need only the epoch.
/// `updated_at` advances to the event's HLC milliseconds, never backwards,
/// so every replica derives the same projection from the event alone.
fn update_statement(
    ticket_id: TicketId,
    changes: &TicketChanges,
    at_millis: u64,
    owner: Option<&RegionId>,
) -> Result<SqlBuilder, Error> {
    let at = to_db(at_millis, "hlc_time")?;
    let mut sql = SqlBuilder::new("UPDATE tickets SET ");
    if let Some(status) = changes.status {
        sql.push("status = ")
            .bind(Bind::Text(status.as_str().to_owned()))
            .push(", ");
    }
    if let Some(assignee) = &changes.assignee {
        sql.push("assignee = ")
            .bind(Bind::OptText(assignee.clone()))
            .push(", ");
    }
    if let Some(priority) = changes.priority {
        sql.push("priority = ")
            .bind(Bind::Text(priority.as_str().to_owned()))
            .push(", ");
    }
    if let Some(sla) = &changes.sla {
        let (sla_json, check_at, at_risk) = codec::sla_columns(sla)?;
        sql.push("sla = ")
            .bind(Bind::Text(sla_json))
            .push(", sla_check_at = ");
        match check_at {
            Some(at) => sql.bind(Bind::Int(at)),
            None => sql.push("NULL"),
        };
        sql.push(", sla_at_risk = ")
            .bind(Bind::Int(at_risk))
            .push(", ");
    }
    sql.push("updated_at = CASE WHEN updated_at > ")
        .bind(Bind::Int(at))
        .push(" THEN updated_at ELSE ")
        .bind(Bind::Int(at))
        .push(" END WHERE ticket_id = ")
        .bind(Bind::Text(ticket_id.to_string()))
        .push(" AND owner_epoch = ")
        .bind(Bind::Int(to_db(changes.epoch.raw(), "epoch")?));
    if let Some(owner) = owner {
        sql.push(" AND owner_region = ")
            .bind(Bind::Text(owner.as_str().to_owned()));
        sql.push(" AND handoff_to IS NULL");
        if let Some(to) = changes.status {
            sql.push(" AND status IN (");
            let from = Status::ALL
                .into_iter()
                .filter(|from| *from == to || from.can_become(to));
            for (i, from) in from.enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(Bind::Text(from.as_str().to_owned()));
            }
            sql.push(")");
        }
    }
    sql.push(" RETURNING ").push(TICKET_COLUMNS);
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_core::Epoch;

    #[test]
    fn local_update_fences_on_epoch_owner_and_status() {
        let id: TicketId = "01900000-0000-7000-8000-000000000000".parse().unwrap();
        let changes = TicketChanges {
            epoch: Epoch::from_raw(2048),
            status: Some(Status::Closed),
            assignee: Some(None),
            priority: None,
            sla: None,
        };
        let us = RegionId::new("us-east").unwrap();
        let sql = update_statement(id, &changes, 5, Some(&us)).unwrap().sql;
        assert!(
            sql.starts_with(
                "UPDATE tickets SET status = $1, assignee = $2, updated_at = CASE WHEN updated_at > $3 THEN updated_at \
             ELSE $4 END WHERE ticket_id = $5 AND owner_epoch = $6 AND owner_region = $7 AND handoff_to IS NULL \
             AND status IN ($8, $9)"
            ),
            "{sql}"
        );
        let remote = update_statement(id, &changes, 5, None).unwrap().sql;
        assert!(
            remote.contains("AND owner_epoch = $6 RETURNING"),
            "{remote}"
        );
    }
}
