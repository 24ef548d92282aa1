//! The writes, each run inside a write transaction the writer task owns.
//!
//! Every write inserts its event and its projection change in the same
//! transaction (the outbox rule). What a write may change is the core's
//! plan ([`meridian_core::plan`]); this module only executes it: the guard
//! becomes the statement's `WHERE` clause ([`crate::exec`]), a miss is
//! explained by [`plan::missed`], a refold is [`meridian_core::replay`].
//! Each operation makes all of its refusal checks before its first write,
//! so a refused command leaves the shared batch transaction exactly as it
//! found it and its neighbours commit.

use std::sync::LazyLock;

use jiff::Timestamp;
use meridian_core::{
    EventEnvelope, EventKind, Note, RegionId, Ticket, TicketId,
    event::kind_name,
    plan::{self, After, Change, Missed, Plan, Source},
};
use sqlx::{AnyConnection, any::AnyRow};

use crate::{
    Backend, CreateOutcome, Error, IDEMPOTENCY_DIGEST_LEN_MAX, IdempotencyKey, WriteMeta,
    codec::{
        self, Bind, EventRow, SqlBuilder, TICKET_COLUMNS, bind_note, bind_ticket, conflicts,
        events, millis, notes, tickets, to_db,
    },
    exec,
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

/// One statement inserting `width` columns of one row, numbered `$1..`:
/// `ON CONFLICT ..` appended by the caller's `tail`.
fn single_row(insert: &str, width: usize, tail: &str) -> String {
    format!(
        "{insert}({}) {tail}",
        placeholders(Backend::Postgres, 1, width)
    )
}

static INSERT_TICKET: LazyLock<String> = LazyLock::new(|| {
    single_row(
        tickets::INSERT,
        tickets::WIDTH,
        "ON CONFLICT (ticket_id) DO NOTHING",
    )
});

static INSERT_NOTE: LazyLock<String> = LazyLock::new(|| {
    single_row(
        notes::INSERT,
        notes::WIDTH,
        "ON CONFLICT (note_id) DO NOTHING",
    )
});

static INSERT_REMOTE_EVENT: LazyLock<String> = LazyLock::new(|| {
    single_row(
        events::INSERT,
        events::WIDTH,
        "ON CONFLICT (origin_region, origin_seq) DO NOTHING",
    )
});

static INSERT_CONFLICT: LazyLock<String> = LazyLock::new(|| {
    single_row(
        conflicts::INSERT,
        conflicts::WIDTH,
        "ON CONFLICT (origin_region, origin_seq) DO NOTHING",
    )
});

/// A full-row rewrite of a ticket's projection (a refold): every column but
/// the key, bound in [`bind_ticket`] order.
static REWRITE_TICKET: LazyLock<String> = LazyLock::new(|| {
    let set: Vec<String> = tickets::COLUMNS
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, column)| format!("{column} = ${}", i + 1))
        .collect();
    format!(
        "UPDATE {} SET {} WHERE {} = $1",
        tickets::NAME,
        set.join(", "),
        tickets::COLUMNS[0]
    )
});

/// The kinds a refold reads: the creation and [`plan::HISTORY_KINDS`].
static REFOLD_KINDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    std::iter::once(kind_name::TICKET_CREATED)
        .chain(plan::HISTORY_KINDS)
        .collect()
});

/// The most replicated creations and notes applied by one multi-row
/// statement: at [`tickets::WIDTH`] parameters a ticket, 128 rows stay far
/// below both backends' parameter limits.
const APPLY_RUN_MAX: usize = 128;

/// The most local events one statement inserts: at [`events::WIDTH`]
/// parameters each, far below SQLite's and PostgreSQL's parameter limits.
const LOCAL_EVENTS_PER_INSERT_MAX: usize = 128;

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
            actor: meta.actor.clone(),
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

    /// Inserts the deferred local events: one statement per
    /// [`LOCAL_EVENTS_PER_INSERT_MAX`] events.
    async fn flush_local_events(&mut self) -> Result<(), Error> {
        let pending = std::mem::take(&mut self.local_events);
        for chunk in pending.chunks(LOCAL_EVENTS_PER_INSERT_MAX) {
            let sql = format!(
                "{}{}",
                events::INSERT,
                values_rows(self.backend, chunk.len(), events::WIDTH)
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
            .bind(sqlx::query(&INSERT_REMOTE_EVENT), recorded_at_ms)
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
        let kind = EventKind::TicketCreated {
            ticket: Box::new(ticket.clone()),
        };
        let (_, event) = self
            .local_write(ticket.id, ticket.owner.epoch, kind, meta)
            .await?;
        Ok(event)
    }

    /// A creation under an idempotency key (issue 17). The key is looked up
    /// first, under the transaction's log-head lock, so no other writer of
    /// the region can commit the same key in between: a key that named the
    /// same request answers that ticket as it is now and writes nothing; a
    /// key that named another request is refused. Otherwise the ticket is
    /// created and the key recorded in this same transaction, so a commit
    /// holds both or neither.
    pub(crate) async fn create_ticket_keyed(
        &mut self,
        ticket: &Ticket,
        meta: &WriteMeta,
        key: &IdempotencyKey,
    ) -> Result<CreateOutcome, Fail> {
        for (field, digest) in [
            ("idempotency key digest", &key.key_digest),
            ("idempotency request digest", &key.request_digest),
        ] {
            if digest.is_empty() || digest.len() > IDEMPOTENCY_DIGEST_LEN_MAX {
                return Err(refused(Error::invalid(
                    "idempotency_key",
                    format!(
                        "{field} must be 1..={IDEMPOTENCY_DIGEST_LEN_MAX} characters, not {}",
                        digest.len()
                    ),
                )));
            }
        }
        if let Some(row) = sqlx::query(
            "SELECT request_digest, ticket_id, origin_region, origin_seq \
             FROM idempotency_keys WHERE key_digest = $1",
        )
        .bind(key.key_digest.as_str())
        .fetch_optional(&mut *self.conn)
        .await?
        {
            let table = "idempotency_keys";
            let ticket_id = codec::parsed::<TicketId>(&row, table, "ticket_id")?;
            if codec::text(&row, table, "request_digest")? != key.request_digest {
                return Err(refused(Error::IdempotencyConflict { ticket_id }));
            }
            let origin_region = codec::parsed::<RegionId>(&row, table, "origin_region")?;
            let origin_seq = codec::uint(&row, table, "origin_seq")?;
            let Some(ticket) = self.ticket_row(ticket_id).await? else {
                return Err(Fail::Abort(Error::Corrupt(format!(
                    "idempotency_keys: the key names ticket {ticket_id}, which is not here"
                ))));
            };
            return Ok(CreateOutcome::Replayed {
                ticket,
                origin_region,
                origin_seq,
            });
        }
        let event = self.create_ticket(ticket, meta).await?;
        sqlx::query(
            "INSERT INTO idempotency_keys \
             (key_digest, request_digest, ticket_id, origin_region, origin_seq, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(key.key_digest.as_str())
        .bind(key.request_digest.as_str())
        .bind(event.ticket_id.to_string())
        .bind(event.origin_region.as_str())
        .bind(to_db(event.origin_seq, "origin_seq")?)
        .bind(millis(meta.at))
        .execute(&mut *self.conn)
        .await?;
        Ok(CreateOutcome::Created(event))
    }

    /// Deletes up to `limit` idempotency keys recorded before `before`.
    pub(crate) async fn prune_idempotency_keys(
        &mut self,
        before: Timestamp,
        limit: u32,
    ) -> Result<u64, Fail> {
        // A bounded batch: a long backlog is cleared over several calls
        // instead of holding the region's write lock for one long delete.
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE key_digest IN \
             (SELECT key_digest FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
        )
        .bind(millis(before))
        .bind(i64::from(limit))
        .execute(&mut *self.conn)
        .await?;
        Ok(done.rows_affected())
    }

    /// Records an agent's presence as they set it (one row per agent).
    pub(crate) async fn set_presence(
        &mut self,
        agent: &str,
        presence: meridian_core::Presence,
        at: Timestamp,
    ) -> Result<(), Fail> {
        sqlx::query(
            "INSERT INTO agent_presence (agent, presence, set_at) VALUES ($1, $2, $3) \
             ON CONFLICT (agent) DO UPDATE SET presence = excluded.presence, set_at = excluded.set_at",
        )
        .bind(agent)
        .bind(presence.as_str())
        .bind(millis(at))
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }

    /// Creates a run of tickets, each answered exactly as
    /// [`WriteTx::create_ticket`] one after the other would answer it (the
    /// same guard, the ticket absent; the same refusals; sequence numbers
    /// in the same order), but with one multi-row insert per
    /// [`APPLY_RUN_MAX`] tickets (after one look for those already here)
    /// instead of a statement each: on SQLite
    /// every statement is a round trip to sqlx's worker thread, on
    /// PostgreSQL one over the socket. The outer error aborts the
    /// transaction; an inner one is that create's refusal.
    pub(crate) async fn create_tickets(
        &mut self,
        creates: &[(&Ticket, &WriteMeta)],
    ) -> Result<Vec<Result<EventEnvelope, Error>>, Error> {
        let mut outcomes: Vec<Option<Result<EventEnvelope, Error>>> =
            creates.iter().map(|_| None).collect();
        // Every refusal check first, as `local_write` makes them.
        let mut pending = Vec::with_capacity(creates.len());
        let mut rows = Vec::with_capacity(creates.len());
        let mut in_run = std::collections::HashSet::with_capacity(creates.len());
        for (i, (ticket, meta)) in creates.iter().enumerate() {
            let kind = EventKind::TicketCreated {
                ticket: Box::new((*ticket).clone()),
            };
            let prepared = self
                .local_event(ticket.id, ticket.owner.epoch, meta, kind)
                .and_then(|(event, row)| {
                    match plan::plan(&event, Source::Local) {
                        Ok(Plan {
                            change: Change::Create(_),
                            ..
                        }) => {}
                        Ok(_) => {
                            return Err(Fail::Abort(Error::Corrupt(format!(
                                "ticket {}: a creation planned something else than an insert",
                                ticket.id
                            ))));
                        }
                        Err(r) => {
                            return Err(refused(exec::refusal_error(
                                r,
                                &format!("ticket {}", ticket.id),
                            )));
                        }
                    }
                    let ticket_row = codec::TicketRow::new(ticket).map_err(refused)?;
                    Ok((event, row, ticket_row))
                });
            match prepared {
                Ok((event, row, ticket_row)) => {
                    // A second creation of one id in the run misses, as it
                    // would after the first had committed.
                    let first = in_run.insert(ticket.id);
                    if first {
                        rows.push((ticket.id, ticket_row));
                    }
                    pending.push((i, event, row, first));
                }
                Err(Fail::Refused(e)) => outcomes[i] = Some(Err(e)),
                Err(Fail::Abort(e)) => return Err(e),
            }
        }

        // Which of the run's tickets are already here: normally none, so
        // this answers no row at all (sqlx-sqlite streams every row of an
        // answer from its worker thread, one message each).
        let mut present = std::collections::HashSet::new();
        let mut ids = rows.iter().map(|(id, _)| id);
        for size in run_chunks(rows.len()) {
            let chunk: Vec<&TicketId> = ids.by_ref().take(size).collect();
            let sql = format!(
                "SELECT ticket_id FROM tickets WHERE ticket_id IN ({})",
                placeholders(self.backend, 1, chunk.len())
            );
            let query = chunk
                .iter()
                .fold(sqlx::query(&sql), |q, id| q.bind(id.to_string()));
            for row in query.fetch_all(&mut *self.conn).await? {
                present.insert(codec::parsed::<TicketId>(&row, "tickets", "ticket_id")?);
            }
        }
        let rows: Vec<codec::TicketRow> = rows
            .into_iter()
            .filter(|(id, _)| !present.contains(id))
            .map(|(_, row)| row)
            .collect();
        let mut rows = rows.into_iter();
        for size in run_chunks(rows.len()) {
            let sql = format!(
                "{}{} ON CONFLICT (ticket_id) DO NOTHING",
                tickets::INSERT,
                values_rows(self.backend, size, tickets::WIDTH)
            );
            let query = rows
                .by_ref()
                .take(size)
                .fold(sqlx::query(&sql), |query, row| row.bind(query));
            let done = query.execute(&mut *self.conn).await?;
            if done.rows_affected() != size as u64 {
                // Nothing else writes tickets inside this transaction (the
                // log head's lock is held); should it happen anyway, the
                // batch is rolled back and each create runs alone.
                return Err(Error::Corrupt(format!(
                    "tickets: {} of {size} absent tickets were inserted",
                    done.rows_affected()
                )));
            }
        }

        for (i, event, row, first) in pending {
            let (_, meta) = creates[i];
            let outcome = if first && !present.contains(&event.ticket_id) {
                self.created(event, row, meta).await
            } else {
                self.explain_miss(&event).await
            };
            match outcome {
                Ok(event) => outcomes[i] = Some(Ok(event)),
                Err(Fail::Refused(e)) => outcomes[i] = Some(Err(e)),
                Err(Fail::Abort(e)) => return Err(e),
            }
        }
        outcomes
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| {
                outcome
                    .ok_or_else(|| Error::Corrupt(format!("create {i} of a run was never settled")))
            })
            .collect()
    }

    /// A creation of a run whose insert matched: its follow-up, then its
    /// event.
    async fn created(
        &mut self,
        event: EventEnvelope,
        row: EventRow,
        meta: &WriteMeta,
    ) -> Result<EventEnvelope, Fail> {
        let plan = plan::plan(&event, Source::Local)
            .map_err(|r| Fail::Abort(exec::refusal_error(r, "ticket")))?;
        self.run_after(&plan).await?;
        self.append_local(event, row, meta)
    }

    /// Why a local write's guarded change matched no row: the core's
    /// explanation from the ticket as it is now, always a refusal.
    async fn explain_miss<T>(&mut self, event: &EventEnvelope) -> Result<T, Fail> {
        let ticket_id = event.ticket_id;
        let current = self.ticket_row(ticket_id).await?;
        Err(match plan::missed(event, Source::Local, current.as_ref()) {
            Missed::Refused(r) => refused(exec::refusal_error(r, &format!("ticket {ticket_id}"))),
            _ => refused(Error::Corrupt(format!(
                "the guard of {} on ticket {ticket_id} missed without a reason",
                event.kind.name()
            ))),
        })
    }

    /// An owner-scoped change: `kind` is an event that carries changes
    /// (`ticket_updated`, `sla_warning`, `sla_breached`).
    pub(crate) async fn update_ticket(
        &mut self,
        ticket_id: TicketId,
        kind: &EventKind,
        meta: &WriteMeta,
    ) -> Result<(Ticket, EventEnvelope), Fail> {
        let epoch = kind.owner_changes().map(|c| c.epoch).unwrap_or_default();
        let (ticket, event) = self
            .local_write(ticket_id, epoch, kind.clone(), meta)
            .await?;
        Ok((self.returned(ticket, ticket_id)?, event))
    }

    /// Runs a local write: the event is planned by the core, its change
    /// made under the planned guard in one statement, and a miss explained
    /// by the core from the ticket as it is. Returns the ticket the
    /// statement returned (for updates).
    async fn local_write(
        &mut self,
        ticket_id: TicketId,
        epoch: meridian_core::Epoch,
        kind: EventKind,
        meta: &WriteMeta,
    ) -> Result<(Option<Ticket>, EventEnvelope), Fail> {
        let (event, row) = self.local_event(ticket_id, epoch, meta, kind)?;
        let what = || format!("ticket {ticket_id}");
        let plan = plan::plan(&event, Source::Local)
            .map_err(|r| refused(exec::refusal_error(r, &what())))?;
        let (matched, ticket) = self.execute(&plan).await.map_err(|e| match e {
            // A value that cannot be stored is a refusal; nothing was written.
            Fail::Abort(Error::Invalid(e)) => refused(Error::Invalid(e)),
            other => other,
        })?;
        if !matched {
            return self.explain_miss(&event).await;
        }
        self.run_after(&plan).await?;
        let event = self.append_local(event, row, meta)?;
        Ok((ticket, event))
    }

    /// The ticket an update returned; an update that matched returns one.
    fn returned(&self, ticket: Option<Ticket>, ticket_id: TicketId) -> Result<Ticket, Fail> {
        ticket.ok_or_else(|| {
            Fail::Abort(Error::Corrupt(format!(
                "ticket {ticket_id}: a matched update returned no row"
            )))
        })
    }

    /// Makes the planned change under its guard: whether a row matched, and
    /// the updated ticket for an update.
    async fn execute(&mut self, plan: &Plan<'_>) -> Result<(bool, Option<Ticket>), Fail> {
        match &plan.change {
            Change::None => Ok((true, None)),
            Change::Create(ticket) => {
                let insert = bind_ticket(sqlx::query(&INSERT_TICKET), ticket)?;
                let done = insert.execute(&mut *self.conn).await?;
                Ok((done.rows_affected() == 1, None))
            }
            Change::Update { set, guard } => {
                let statement = exec::guarded_update(plan.ticket_id, set, guard)?;
                match statement.query().fetch_optional(&mut *self.conn).await? {
                    Some(row) => Ok((true, Some(codec::ticket_from_row(&row)?))),
                    None => Ok((false, None)),
                }
            }
        }
    }

    /// Runs the plan's follow-up: a refold when the log holds what it names.
    async fn run_after(&mut self, plan: &Plan<'_>) -> Result<(), Fail> {
        if self.after_matches(&plan.after, plan.ticket_id).await? {
            self.rebuild(plan.ticket_id).await?;
        }
        Ok(())
    }

    /// [`plan::after_matches`] as a query of the log.
    async fn after_matches(&mut self, after: &After, ticket_id: TicketId) -> Result<bool, Fail> {
        let mut sql = match after {
            After::Nothing => return Ok(false),
            After::RefoldIfHistory => {
                let mut sql = SqlBuilder::new("SELECT 1 FROM events WHERE ticket_id = ");
                sql.bind(Bind::Text(ticket_id.to_string()));
                sql
            }
            After::RefoldIfWrittenAfter {
                from,
                epoch,
                first_stale,
            } => {
                let mut sql = SqlBuilder::new("SELECT 1 FROM events WHERE ticket_id = ");
                sql.bind(Bind::Text(ticket_id.to_string()))
                    .push(" AND origin_region = ")
                    .bind(Bind::Text(from.as_str().to_owned()))
                    .push(" AND epoch = ")
                    .bind(Bind::Int(to_db(epoch.raw(), "epoch")?))
                    .push(" AND origin_seq >= ")
                    .bind(Bind::Int(to_db(*first_stale, "origin_seq")?));
                sql
            }
        };
        let kinds: &[&str] = match after {
            After::RefoldIfHistory => &plan::HISTORY_KINDS,
            _ => &EventKind::CHANGE_KINDS,
        };
        sql.push(" AND ");
        kind_in(&mut sql, kinds);
        sql.push(" LIMIT 1");
        // The query must see every event written so far.
        self.flush_local_events().await?;
        Ok(sql.query().fetch_optional(&mut *self.conn).await?.is_some())
    }

    /// The ticket as it is now, for explaining a miss.
    async fn ticket_row(&mut self, ticket_id: TicketId) -> Result<Option<Ticket>, Fail> {
        let row = sqlx::query(&format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE ticket_id = $1"
        ))
        .bind(ticket_id.to_string())
        .fetch_optional(&mut *self.conn)
        .await?;
        Ok(row.as_ref().map(codec::ticket_from_row).transpose()?)
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
        if bind_note(sqlx::query(&INSERT_NOTE), note)
            .execute(&mut *self.conn)
            .await?
            .rows_affected()
            == 0
        {
            return Err(refused(Error::Duplicate(format!("note {}", note.id))));
        }
        self.append_local(event, event_row, meta)
    }

    /// A public reply or customer message and the owner-scoped changes it
    /// makes, in that order of checks: a duplicate note id is refused before
    /// anything is written, then the changes are fenced like any update
    /// (a refusal writes nothing), then the note goes in at the epoch the
    /// update left. Returns the updated ticket (when there were changes)
    /// and the events written.
    pub(crate) async fn add_message(
        &mut self,
        note: &Note,
        changes: Option<&meridian_core::TicketChanges>,
        meta: &WriteMeta,
    ) -> Result<(Option<Ticket>, Vec<EventEnvelope>), Fail> {
        note.validate().map_err(refused)?;
        let known = sqlx::query("SELECT 1 FROM notes WHERE note_id = $1")
            .bind(note.id.to_string())
            .fetch_optional(&mut *self.conn)
            .await?;
        if known.is_some() {
            return Err(refused(Error::Duplicate(format!("note {}", note.id))));
        }
        let mut events = Vec::with_capacity(2);
        let mut ticket = None;
        if let Some(changes) = changes {
            let kind = EventKind::TicketUpdated {
                changes: changes.clone(),
            };
            let (updated, event) = self.update_ticket(note.ticket_id, &kind, meta).await?;
            ticket = Some(updated);
            events.push(event);
        }
        // Past the update nothing may refuse: its event is already queued.
        let event = self.add_note(note, meta).await.map_err(|e| match e {
            Fail::Refused(e) if !events.is_empty() => Fail::Abort(Error::Corrupt(format!(
                "note {} refused after its ticket's update: {e}",
                note.id
            ))),
            other => other,
        })?;
        events.push(event);
        Ok((ticket, events))
    }

    /// A handoff step written locally (`kind` is an ownership event): the
    /// offer and the refusal by the owner at its epoch, the acceptance by
    /// the target at the new epoch it minted, the takeover by the successor.
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
        if !kind.is_ownership() {
            return Err(refused(Error::invalid(
                "kind",
                format!("{} does not move ownership", kind.name()),
            )));
        }
        let kind = match kind {
            EventKind::TakenOver {
                from,
                fencing_token,
                ..
            } => self.takeover_event(ticket_id, from, *fencing_token).await?,
            other => other.clone(),
        };
        let note = match &kind {
            EventKind::HandoffOffered { note, .. } => Some(note.clone()),
            _ => None,
        };
        let (ticket, event) = self.local_write(ticket_id, epoch, kind, meta).await?;
        if let Some(note) = note
            && bind_note(sqlx::query(&INSERT_NOTE), &note)
                .execute(&mut *self.conn)
                .await?
                .rows_affected()
                == 0
        {
            return Err(Fail::Abort(Error::Duplicate(format!("note {}", note.id))));
        }
        Ok((self.returned(ticket, ticket_id)?, event))
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
        let previous_epoch = match self.ticket_row(ticket_id).await? {
            Some(ticket) => ticket.owner.epoch,
            // The guarded statement misses and explains; nothing is written.
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

    /// Refuses redacted copies of events that this region must hold whole
    /// ([`meridian_core::residency::refuses_copy`] decides; this looks up
    /// the residencies it needs). Senders decide so themselves; this is the
    /// receiving end's guard.
    async fn refuse_redacted_copies_here(
        &mut self,
        origin: &RegionId,
        events: &[EventEnvelope],
    ) -> Result<(), Fail> {
        use meridian_core::residency::{is_redacted, refuses_copy, residency_ticket};
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
            if refuses_copy(&event.kind, None, &here) {
                return Err(refusal(event));
            }
            ask.extend(residency_ticket(&event.kind).map(|id| (id, event)));
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
                for (_, event) in chunk.iter().filter(|(asked, _)| *asked == id) {
                    if refuses_copy(&event.kind, Some(&residency), &here) {
                        return Err(refusal(event));
                    }
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
            "{}{} ON CONFLICT (origin_region, origin_seq) DO NOTHING RETURNING origin_seq",
            events::INSERT,
            values_rows(self.backend, run.len(), events::WIDTH)
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
                "{}{} ON CONFLICT (ticket_id) DO NOTHING",
                tickets::INSERT,
                values_rows(self.backend, tickets.len(), tickets::WIDTH)
            );
            let mut query = sqlx::query(&sql);
            for ticket in &tickets {
                query = bind_ticket(query, ticket)?;
            }
            query.execute(&mut *self.conn).await?;
            // Each creation's plan is `After::RefoldIfHistory`, run for the
            // whole run in one query: changes from other origins that came
            // first wait in the log.
            let mut sql =
                SqlBuilder::new("SELECT DISTINCT ticket_id FROM events WHERE ticket_id IN (");
            for (i, ticket) in tickets.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(Bind::Text(ticket.id.to_string()));
            }
            sql.push(") AND ");
            kind_in(&mut sql, &plan::HISTORY_KINDS);
            for row in sql.query().fetch_all(&mut *self.conn).await? {
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
                "{}{} ON CONFLICT (note_id) DO NOTHING",
                notes::INSERT,
                values_rows(self.backend, notes.len(), notes::WIDTH)
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
    /// Projects a replicated event: the rows it carries, then its plan's
    /// change under its guard; a miss is what [`plan::missed`] says it is
    /// (a refold, or a wait for the creation, or nothing).
    async fn project_remote(&mut self, event: &EventEnvelope) -> Result<(), Fail> {
        match &event.kind {
            EventKind::NoteAdded { note } | EventKind::HandoffOffered { note, .. } => {
                bind_note(sqlx::query(&INSERT_NOTE), note)
                    .execute(&mut *self.conn)
                    .await?;
            }
            EventKind::ShiftSummary { summary } => {
                self.insert_shift_summary(summary).await?;
            }
            _ => {}
        }
        let plan = plan::plan(event, Source::Replica)
            .map_err(|r| Fail::Abort(exec::refusal_error(r, "replicated event")))?;
        let (matched, _) = self.execute(&plan).await?;
        let mut refold = false;
        if !matched {
            let current = self.ticket_row(event.ticket_id).await?;
            match plan::missed(event, Source::Replica, current.as_ref()) {
                Missed::Refold => refold = true,
                Missed::Wait => {
                    tracing::debug!(ticket_id = %event.ticket_id, origin = %event.origin_region, origin_seq = event.origin_seq,
                        "event for a ticket not yet here waits in the log");
                }
                Missed::Ignore | Missed::Refused(_) => {}
            }
        }
        if refold {
            self.rebuild(event.ticket_id).await
        } else {
            self.run_after(&plan).await
        }
    }

    /// Rewrites a ticket's projection and conflicts from its log with
    /// [`meridian_core::replay`]: the slow path for events that arrived in
    /// an order the incremental plans cannot follow.
    async fn rebuild(&mut self, ticket_id: TicketId) -> Result<(), Fail> {
        // The query below must see every event written so far.
        self.flush_local_events().await?;
        let mut sql = SqlBuilder::new(format!(
            "SELECT {} FROM events WHERE ticket_id = ",
            events::LIST
        ));
        sql.bind(Bind::Text(ticket_id.to_string())).push(" AND ");
        kind_in(&mut sql, &REFOLD_KINDS);
        let rows: Vec<AnyRow> = sql.query().fetch_all(&mut *self.conn).await?;
        let events = rows
            .iter()
            .map(codec::event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(replayed) = meridian_core::replay(&events) else {
            return Ok(());
        };
        let ticket = &replayed.ticket;
        bind_ticket(sqlx::query(&REWRITE_TICKET), ticket)?
            .execute(&mut *self.conn)
            .await?;

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
            let record = crate::ConflictRecord {
                origin_region: stale.origin_region.clone(),
                origin_seq: stale.origin_seq,
                stale_epoch: stale.changes.epoch,
                current_epoch: ticket.owner.epoch,
                changes: stale.changes.clone(),
                recorded_at: self.now,
            };
            let inserted = codec::bind_conflict(sqlx::query(&INSERT_CONFLICT), ticket_id, &record)?
                .execute(&mut *self.conn)
                .await?;
            if inserted.rows_affected() == 1 {
                tracing::warn!(%ticket_id, origin = %stale.origin_region, origin_seq = stale.origin_seq,
                    stale_epoch = %stale.changes.epoch, current_epoch = %ticket.owner.epoch,
                    "owner-scoped write at an epoch its writer no longer held kept as a conflict");
                self.conflicts.push(crate::RecordedConflict {
                    ticket_id,
                    conflict: record,
                });
            }
        }
        Ok(())
    }
}

/// Splits `len` rows into statements of [`APPLY_RUN_MAX`] rows and one of
/// the rest: a batch of up to that many rows is one statement. (Splitting
/// into powers of two would bound the statement shapes a connection
/// prepares, but costs up to seven round trips where one will do; a shape
/// not in the connection's statement cache costs a prepare, which on SQLite
/// stays on the worker thread.)
fn run_chunks(mut len: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (len > 0).then(|| {
            let size = APPLY_RUN_MAX.min(len);
            len -= size;
            size
        })
    })
}

/// Appends `kind IN (..)` with one placeholder per kind.
fn kind_in(sql: &mut SqlBuilder, kinds: &[&str]) {
    sql.push("kind IN (");
    for (i, kind) in kinds.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(Bind::Text((*kind).to_owned()));
    }
    sql.push(")");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_full_runs_then_the_rest_and_cover_every_row() {
        assert_eq!(run_chunks(0).count(), 0);
        assert_eq!(run_chunks(1).collect::<Vec<_>>(), vec![1]);
        assert_eq!(run_chunks(127).collect::<Vec<_>>(), vec![127]);
        assert_eq!(run_chunks(300).collect::<Vec<_>>(), vec![128, 128, 44]);
        for len in 0..1000 {
            let chunks: Vec<usize> = run_chunks(len).collect();
            assert_eq!(chunks.iter().sum::<usize>(), len);
            assert!(chunks.iter().all(|c| (1..=APPLY_RUN_MAX).contains(c)));
        }
    }
}
