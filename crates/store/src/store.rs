//! The store handle: opening, the write calls that queue for the writer, and
//! the reads, which go straight to the pool.

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
};

use jiff::Timestamp;
use meridian_core::{
    Clock, Epoch, EventEnvelope, EventKind, HandoffNote, Note, RegionId, SlaAlert, SlaMetric,
    Ticket, TicketChanges, TicketId,
};
use sqlx::{
    AnyConnection, AnyPool, Executor,
    any::{AnyPoolOptions, AnyRow},
    pool::PoolConnectionMetadata,
};
use tokio::{
    sync::{broadcast, mpsc, oneshot},
    task::JoinHandle,
};

use crate::{
    Assignments, Backend, CreateOutcome, Error, IdempotencyKey, QueueCounts, Result, StoreConfig,
    Synchronous, TicketFilter, TicketPage, TicketRecord,
    codec::{
        self, Bind, CONFLICT_COLUMNS, EVENT_COLUMNS, NOTE_COLUMNS, SqlBuilder, TICKET_COLUMNS,
        millis, to_db, truncate_ms, truncate_ticket_times,
    },
    schema,
    writer::{Job, Reply, StatsCounters, Writer, WriterStats},
};

/// Extra data every local write carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteMeta {
    pub hlc_time: meridian_core::HlcTimestamp,
    /// W3C trace context of the span making the write.
    pub traceparent: Option<String>,
    /// The wall time of the write; stored as the event's `recorded_at`.
    pub at: Timestamp,
    /// Who asked for the write; recorded on each of its events.
    pub actor: Option<meridian_core::Actor>,
}

impl WriteMeta {
    /// The same write, made by `actor`.
    pub fn by(mut self, actor: meridian_core::Actor) -> Self {
        self.actor = Some(actor);
        self
    }
}

/// How many events a live subscriber may fall behind before it lags
/// (and must catch up from the log with `events_after`).
pub const SUBSCRIBE_CAPACITY: usize = 4096;
/// How long a SQLite connection waits for a lock before reporting busy.
pub const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;
/// The most tickets one `list_tickets` page returns.
pub const LIST_LIMIT_MAX: u32 = 500;
/// The most events one `events_after` page returns.
pub const EVENTS_PAGE_MAX: u32 = 10_000;

/// Meridian's durable storage for one region. Cheap to clone; all clones
/// share one pool and one writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    backend: Backend,
    local_region: RegionId,
    /// `None` once the store is closed: new writes are refused.
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    events: broadcast::Sender<Arc<EventEnvelope>>,
    conflicts: broadcast::Sender<Arc<crate::RecordedConflict>>,
    stats: Arc<StatsCounters>,
    generation: Option<u64>,
    superseded: tokio::sync::watch::Sender<Option<(u64, u64)>>,
    /// Whether any ticket here may be pinned to regions (see
    /// [`Store::may_hold_pinned`]): read at open, set before any write of
    /// a pinned ticket is queued, never cleared.
    pinned: std::sync::atomic::AtomicBool,
}

/// The wall clock. The store's only reading of it is for rows it records
/// without a caller-supplied instant (applied remote events, conflicts,
/// migrations); services use it as their production clock. Tests and the
/// simulation pass their own clock to `open_with_clock`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .field("local_region", &self.inner.local_region)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects, brings the schema up to date and starts the writer.
    pub async fn open(config: &StoreConfig, local_region: &RegionId) -> Result<Store> {
        Self::open_with_clock(config, local_region, Arc::new(SystemClock)).await
    }

    /// [`Store::open`] with an injected clock.
    pub async fn open_with_clock(
        config: &StoreConfig,
        local_region: &RegionId,
        clock: Arc<dyn Clock>,
    ) -> Result<Store> {
        Self::open_inner(config, local_region, clock, false).await
    }

    /// Opens the store as the region's one active writer: claims the next
    /// writer generation of the region's log, and fences every write
    /// transaction on it. Once another store claims a newer generation,
    /// every write of this one is refused with [`Error::Superseded`] and
    /// nothing it writes commits; [`Store::superseded`] then resolves.
    ///
    /// The caller holds the region's [`crate::RegionLock`]: the lock decides
    /// who is active, the generation makes sure that a former active which
    /// lost the lock without noticing (stalled, partitioned) cannot commit
    /// beside its successor. Sequence heads and cursors are read from the
    /// database in every transaction, so nothing of a former active's
    /// memory needs to be carried over.
    pub async fn open_fenced(
        config: &StoreConfig,
        local_region: &RegionId,
        clock: Arc<dyn Clock>,
    ) -> Result<Store> {
        Self::open_inner(config, local_region, clock, true).await
    }

    async fn open_inner(
        config: &StoreConfig,
        local_region: &RegionId,
        clock: Arc<dyn Clock>,
        fenced: bool,
    ) -> Result<Store> {
        let backend = config.validate()?;
        sqlx::any::install_default_drivers();

        let synchronous = config.sqlite_synchronous;
        let mut options = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .after_connect(
                move |conn: &mut AnyConnection, _meta: PoolConnectionMetadata| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            // Per-connection settings, so they are set on every
                            // connection the pool opens. WAL lets reads proceed
                            // while the writer commits.
                            conn.execute(sqlite_pragmas(synchronous)).await?;
                        }
                        Ok(())
                    })
                },
            );
        if backend == Backend::Sqlite && config.is_sqlite_memory() {
            // An in-memory database dies with its last connection, and
            // several connections to it would contend on shared-cache table
            // locks: keep exactly one, forever.
            options = options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = options.connect(&config.url).await?;

        schema::migrate(&pool, backend, millis(clock.now())).await?;
        sqlx::query(
            "INSERT INTO origins (region, last_seq) VALUES ($1, 0) ON CONFLICT (region) DO NOTHING",
        )
        .bind(local_region.as_str())
        .execute(&pool)
        .await?;
        // Claiming waits for the row lock every write transaction takes
        // first, so a transaction of the former writer either committed
        // before this or will see the new generation and refuse.
        let generation = if fenced {
            let row = sqlx::query(
                "UPDATE origins SET writer_generation = writer_generation + 1 WHERE region = $1 \
                 RETURNING writer_generation",
            )
            .bind(local_region.as_str())
            .fetch_one(&pool)
            .await?;
            let generation = codec::uint(&row, "origins", "writer_generation")?;
            tracing::info!(region = %local_region, generation, "claimed the region's writer generation");
            Some(generation)
        } else {
            None
        };
        let (superseded, _) = tokio::sync::watch::channel(None);
        // Residency's fast path: most meshes pin no ticket at all.
        let pinned = sqlx::query("SELECT 1 FROM tickets WHERE residency <> '[]' LIMIT 1")
            .fetch_optional(&pool)
            .await?
            .is_some();

        let (events, _) = broadcast::channel(SUBSCRIBE_CAPACITY);
        let (conflicts, _) = broadcast::channel(SUBSCRIBE_CAPACITY);
        let (queue, receiver) = mpsc::channel(config.queue_capacity);
        let stats = Arc::new(StatsCounters::default());
        let writer = Writer {
            pool: pool.clone(),
            backend,
            local_region: local_region.clone(),
            clock,
            events: events.clone(),
            conflicts: conflicts.clone(),
            batch_max: config.batch_max,
            stats: stats.clone(),
            generation,
            superseded: superseded.clone(),
        };
        let writer = tokio::spawn(writer.run(receiver));
        tracing::info!(backend = %backend, region = %local_region, "store opened");
        Ok(Store {
            inner: Arc::new(Inner {
                pool,
                backend,
                local_region: local_region.clone(),
                queue: Mutex::new(Some(queue)),
                writer: Mutex::new(Some(writer)),
                events,
                conflicts,
                stats,
                generation,
                superseded,
                pinned: std::sync::atomic::AtomicBool::new(pinned),
            }),
        })
    }

    /// The writer generation this store claimed ([`Store::open_fenced`]);
    /// `None` for an unfenced store.
    pub fn writer_generation(&self) -> Option<u64> {
        self.inner.generation
    }

    /// Resolves once this fenced store has found that another replica
    /// claimed the region ([`Error::Superseded`]); never for an unfenced
    /// store. From then on it refuses every write.
    pub async fn superseded(&self) -> Error {
        let mut watch = self.inner.superseded.subscribe();
        let seen = watch
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|seen| *seen);
        match seen {
            Some((held, current)) => Error::Superseded {
                region: self.inner.local_region.clone(),
                held,
                current,
            },
            // The sender lives in `Inner`, as long as this handle: not
            // reached while `self` exists, and never resolves falsely.
            None => std::future::pending().await,
        }
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    pub fn local_region(&self) -> &RegionId {
        &self.inner.local_region
    }

    /// Refuses new writes, lets the writer commit and answer everything
    /// already queued, then closes the pool. Later calls return
    /// [`Error::Closed`] (writes) or a pool-closed database error (reads).
    pub async fn close(&self) {
        drop(
            self.inner
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer
            && let Err(e) = writer.await
        {
            tracing::warn!(error = %e, "store writer ended abnormally");
        }
        self.inner.pool.close().await;
    }

    /// Queues a write and waits for its committed answer.
    async fn submit<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T> {
        let queue = self
            .inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(queue) = queue else {
            return Err(Error::Closed);
        };
        let (sender, answer) = oneshot::channel();
        queue
            .send(job(Reply::new(sender)))
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    // ---- local writes ----

    /// Creates a ticket owned by this region: event `TicketCreated` at the
    /// ticket's epoch. Instants are kept to the millisecond.
    pub async fn create_ticket(
        &self,
        mut ticket: Ticket,
        meta: WriteMeta,
    ) -> Result<EventEnvelope> {
        truncate_ticket_times(&mut ticket);
        if !ticket.residency.is_empty() {
            self.inner
                .pinned
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.submit(|reply| Job::CreateTicket {
            ticket,
            meta,
            reply,
        })
        .await
    }

    /// [`Store::create_ticket`] under an idempotency key: a key this store
    /// already holds for the same request answers
    /// [`CreateOutcome::Replayed`] and writes nothing; for another request it
    /// is refused with [`Error::IdempotencyConflict`]. The key is recorded
    /// in the creation's own transaction.
    pub async fn create_ticket_idempotent(
        &self,
        mut ticket: Ticket,
        meta: WriteMeta,
        key: IdempotencyKey,
    ) -> Result<CreateOutcome> {
        truncate_ticket_times(&mut ticket);
        if !ticket.residency.is_empty() {
            self.inner
                .pinned
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.submit(|reply| Job::CreateTicketKeyed {
            ticket,
            meta,
            key,
            reply,
        })
        .await
    }

    /// Deletes up to `limit` idempotency keys recorded before `before`;
    /// returns how many it deleted. Callers keep keys at least as long as
    /// a retry may come (the gateway: 24 hours).
    pub async fn prune_idempotency_keys(&self, before: Timestamp, limit: u32) -> Result<u64> {
        self.submit(|reply| Job::PruneIdempotencyKeys {
            before,
            limit,
            reply,
        })
        .await
    }

    /// Records the presence `agent` set at `at`. Region-local: it is not
    /// an event (peers read it on the load path), and what counts is read
    /// through the agent's shift ([`meridian_core::Presence::effective`]).
    pub async fn set_presence(
        &self,
        agent: &str,
        presence: meridian_core::Presence,
        at: Timestamp,
    ) -> Result<()> {
        self.submit(|reply| Job::SetPresence {
            agent: agent.to_owned(),
            presence,
            at,
            reply,
        })
        .await
    }

    /// Applies owner-scoped changes, fenced on `changes.epoch`: refused with
    /// [`Error::Fenced`] unless this region owns the ticket at that epoch,
    /// with [`Error::Invalid`] for an illegal status move or empty changes.
    /// Returns the updated projection.
    pub async fn update_ticket(
        &self,
        ticket_id: TicketId,
        changes: TicketChanges,
        meta: WriteMeta,
    ) -> Result<(Ticket, EventEnvelope)> {
        let kind = EventKind::TicketUpdated { changes };
        self.submit(|reply| Job::UpdateTicket {
            ticket_id,
            kind,
            meta,
            reply,
        })
        .await
    }

    /// Records that an SLA clock passed its warning share or its deadline:
    /// event `sla_warning` or `sla_breached`, fenced exactly like
    /// [`Store::update_ticket`] on `changes.epoch`, with `changes.sla` the
    /// clocks after the alert.
    pub async fn record_sla_alert(
        &self,
        ticket_id: TicketId,
        metric: SlaMetric,
        alert: SlaAlert,
        mut changes: TicketChanges,
        meta: WriteMeta,
    ) -> Result<(Ticket, EventEnvelope)> {
        if let Some(sla) = changes.sla.as_mut() {
            codec::truncate_sla(sla);
        }
        let Some(due) = changes
            .sla
            .as_ref()
            .and_then(|sla| sla.clock(metric))
            .map(|clock| clock.due)
        else {
            return Err(Error::invalid(
                "changes.sla",
                format!("carries no {metric} clock"),
            ));
        };
        let kind = match alert {
            SlaAlert::Warning => EventKind::SlaWarning {
                metric,
                due,
                changes,
            },
            SlaAlert::Breached => EventKind::SlaBreached {
                metric,
                due,
                changes,
            },
        };
        self.submit(|reply| Job::UpdateTicket {
            ticket_id,
            kind,
            meta,
            reply,
        })
        .await
    }

    /// Adds a note (event `NoteAdded` at the ticket's current epoch). A
    /// second note with the same id is [`Error::Duplicate`].
    pub async fn add_note(&self, mut note: Note, meta: WriteMeta) -> Result<EventEnvelope> {
        note.created_at = truncate_ms(note.created_at);
        self.submit(|reply| Job::AddNote { note, meta, reply })
            .await
    }

    /// Adds a public reply or a customer message together with the
    /// owner-scoped `changes` it makes (its clocks, a reopening), in one
    /// transaction: both are written or neither. `changes` is fenced like
    /// [`Store::update_ticket`]. Returns the updated ticket (when there were
    /// changes) and the events, the note's last.
    pub async fn add_message(
        &self,
        mut note: Note,
        mut changes: Option<TicketChanges>,
        meta: WriteMeta,
    ) -> Result<(Option<Ticket>, Vec<EventEnvelope>)> {
        note.created_at = truncate_ms(note.created_at);
        if let Some(sla) = changes.as_mut().and_then(|c| c.sla.as_mut()) {
            codec::truncate_sla(sla);
        }
        self.submit(|reply| Job::AddMessage {
            note,
            changes,
            meta,
            reply,
        })
        .await
    }

    // ---- handoff ----

    /// The owner offers the ticket to `to`, at `epoch`, with its handoff
    /// note (stored as a ticket note too). Fenced: refused unless this
    /// region owns the ticket at `epoch` with no offer pending.
    pub async fn offer_handoff(
        &self,
        ticket_id: TicketId,
        epoch: Epoch,
        to: RegionId,
        handoff: HandoffNote,
        mut note: Note,
        meta: WriteMeta,
    ) -> Result<(Ticket, EventEnvelope)> {
        note.created_at = truncate_ms(note.created_at);
        let kind = EventKind::HandoffOffered { to, handoff, note };
        self.submit(|reply| Job::Ownership {
            ticket_id,
            epoch,
            kind,
            meta,
            reply,
        })
        .await
    }

    /// This region accepts the pending offer `from` made as `offer_seq` of
    /// its log at `previous_epoch`, and owns the ticket at `new_epoch` (which
    /// must encode this region). Fenced on the offer being pending here.
    pub async fn accept_handoff(
        &self,
        ticket_id: TicketId,
        from: RegionId,
        offer_seq: u64,
        previous_epoch: Epoch,
        new_epoch: Epoch,
        meta: WriteMeta,
    ) -> Result<(Ticket, EventEnvelope)> {
        let kind = EventKind::HandoffAccepted {
            from,
            offer_seq,
            previous_epoch,
        };
        self.submit(|reply| Job::Ownership {
            ticket_id,
            epoch: new_epoch,
            kind,
            meta,
            reply,
        })
        .await
    }

    /// The owner records that `to` refused its offer made at `epoch`, and
    /// keeps the ticket.
    pub async fn refuse_handoff(
        &self,
        ticket_id: TicketId,
        epoch: Epoch,
        to: RegionId,
        reason: String,
        meta: WriteMeta,
    ) -> Result<(Ticket, EventEnvelope)> {
        let kind = EventKind::HandoffRefused { to, reason };
        self.submit(|reply| Job::Ownership {
            ticket_id,
            epoch,
            kind,
            meta,
            reply,
        })
        .await
    }

    /// The successor takes a ticket the failed region `from` owned: event
    /// `taken_over` at `new_epoch` (which must encode this region), fenced
    /// on `from` still owning it below that epoch. The event records the
    /// epoch `from` held and how much of `from`'s log this store had
    /// applied, read in the same transaction.
    pub async fn take_over(
        &self,
        ticket_id: TicketId,
        from: RegionId,
        fencing_token: u64,
        new_epoch: Epoch,
        meta: WriteMeta,
    ) -> Result<(Ticket, EventEnvelope)> {
        let kind = EventKind::TakenOver {
            from,
            fencing_token,
            previous_epoch: Epoch::default(),
            through_seq: 0,
        };
        self.submit(|reply| Job::Ownership {
            ticket_id,
            epoch: new_epoch,
            kind,
            meta,
            reply,
        })
        .await
    }

    /// Records the summary of a shift of this region.
    pub async fn record_shift_summary(
        &self,
        summary: meridian_core::ShiftSummary,
        meta: WriteMeta,
    ) -> Result<EventEnvelope> {
        self.submit(|reply| Job::ShiftSummary {
            summary,
            meta,
            reply,
        })
        .await
    }

    /// Records an intake-spike alert of this region, raised
    /// ([`EventKind::IntakeSpike`]) or cleared
    /// ([`EventKind::IntakeSpikeCleared`]); the same alert twice is
    /// [`Error::Duplicate`].
    pub async fn record_intake_spike(
        &self,
        kind: EventKind,
        meta: WriteMeta,
    ) -> Result<EventEnvelope> {
        self.submit(|reply| Job::IntakeSpike { kind, meta, reply })
            .await
    }

    /// Shift summaries, newest shift end first, of one region or all.
    pub async fn shift_summaries(
        &self,
        region: Option<&RegionId>,
        limit: u32,
    ) -> Result<Vec<meridian_core::ShiftSummary>> {
        let limit = i64::from(limit.clamp(1, LIST_LIMIT_MAX));
        let rows = match region {
            Some(region) => {
                sqlx::query("SELECT summary FROM shift_summaries WHERE region = $1 ORDER BY shift_end DESC LIMIT $2")
                    .bind(region.as_str())
                    .bind(limit)
                    .fetch_all(&self.inner.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT summary FROM shift_summaries ORDER BY shift_end DESC LIMIT $1")
                    .bind(limit)
                    .fetch_all(&self.inner.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|row| codec::json_column(row, "shift_summaries", "summary"))
            .collect()
    }

    /// The latest handoff offer written in `origin`'s log for a ticket.
    pub async fn last_offer(
        &self,
        ticket_id: TicketId,
        origin: &RegionId,
    ) -> Result<Option<EventEnvelope>> {
        let row = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE ticket_id = $1 AND origin_region = $2 AND kind = $3 \
             ORDER BY origin_seq DESC LIMIT 1"
        ))
        .bind(ticket_id.to_string())
        .bind(origin.as_str())
        .bind(meridian_core::event::kind_name::HANDOFF_OFFERED)
        .fetch_optional(&self.inner.pool)
        .await?;
        row.as_ref().map(codec::event_from_row).transpose()
    }

    // ---- replication ----

    /// Applies a peer's events, idempotently, in one transaction with the
    /// cursor for `origin`. Returns the new cursor.
    pub async fn apply_remote(&self, origin: &RegionId, events: Vec<EventEnvelope>) -> Result<u64> {
        if events.iter().any(|e| matches!(&e.kind, EventKind::TicketCreated { ticket } if !ticket.residency.is_empty())) {
            self.inner.pinned.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let origin = origin.clone();
        self.submit(|reply| Job::ApplyRemote {
            origin,
            events,
            reply,
        })
        .await
    }

    /// The last origin_seq of `origin` applied here; 0 when none.
    pub async fn cursor(&self, origin: &RegionId) -> Result<u64> {
        let row = sqlx::query("SELECT applied_seq FROM cursors WHERE origin_region = $1")
            .bind(origin.as_str())
            .fetch_optional(&self.inner.pool)
            .await?;
        row.map_or(Ok(0), |row| codec::uint(&row, "cursors", "applied_seq"))
    }

    /// Waits until this store has applied `origin`'s log up to `seq`
    /// (durably: the cursor commits with the events). False on timeout.
    /// Woken by the commit broadcast, so it costs no polling.
    pub async fn wait_applied(
        &self,
        origin: &RegionId,
        seq: u64,
        timeout: std::time::Duration,
    ) -> Result<bool> {
        // Subscribe before reading the cursor, so an apply in between is seen.
        let mut committed = self.inner.events.subscribe();
        if self.cursor(origin).await? >= seq {
            return Ok(true);
        }
        let waited = tokio::time::timeout(timeout, async {
            loop {
                match committed.recv().await {
                    Ok(event) if &event.origin_region == origin && event.origin_seq >= seq => {
                        return Ok(true);
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if self.cursor(origin).await? >= seq {
                            return Ok(true);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(Error::Closed),
                }
            }
        })
        .await;
        waited.unwrap_or(Ok(false))
    }

    /// Every region this store holds events of, its own included when it
    /// wrote any. For audits and the convergence check.
    pub async fn origins(&self) -> Result<Vec<RegionId>> {
        let rows = sqlx::query("SELECT DISTINCT origin_region FROM events ORDER BY origin_region")
            .fetch_all(&self.inner.pool)
            .await?;
        decode_all(&rows, |row| codec::parsed(row, "events", "origin_region"))
    }

    /// The last origin_seq written locally; 0 when none.
    pub async fn local_head(&self) -> Result<u64> {
        let row = sqlx::query("SELECT last_seq FROM origins WHERE region = $1")
            .bind(self.inner.local_region.as_str())
            .fetch_optional(&self.inner.pool)
            .await?;
        row.map_or(Ok(0), |row| codec::uint(&row, "origins", "last_seq"))
    }

    // ---- reads ----

    /// A ticket with its notes (by creation time, then id) and conflicts (in
    /// the order they were recorded).
    pub async fn get_ticket(&self, id: TicketId) -> Result<Option<TicketRecord>> {
        let mut conn = self.inner.pool.acquire().await?;
        let id_text = id.to_string();
        let row = sqlx::query(&format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE ticket_id = $1"
        ))
        .bind(id_text.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let ticket = codec::ticket_from_row(&row)?;
        let notes = sqlx::query(&format!(
            "SELECT {NOTE_COLUMNS} FROM notes WHERE ticket_id = $1 ORDER BY created_at, note_id"
        ))
        .bind(id_text.as_str())
        .fetch_all(&mut *conn)
        .await?;
        let conflicts = sqlx::query(&format!(
            "SELECT {CONFLICT_COLUMNS} FROM conflicts WHERE ticket_id = $1 ORDER BY id"
        ))
        .bind(id_text.as_str())
        .fetch_all(&mut *conn)
        .await?;
        Ok(Some(TicketRecord {
            ticket,
            notes: decode_all(&notes, codec::note_from_row)?,
            conflicts: decode_all(&conflicts, codec::conflict_from_row)?,
        }))
    }

    /// A page of tickets matching every given filter, in ticket id order
    /// (UUIDv7, so creation order). Pass `next_after` back as `after` for
    /// the next page.
    pub async fn list_tickets(&self, filter: &TicketFilter) -> Result<TicketPage> {
        let mut sql = SqlBuilder::new(format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE 1 = 1"));
        if let Some(status) = filter.status {
            sql.push(" AND status = ")
                .bind(Bind::Text(status.as_str().to_owned()));
        }
        if let Some(owner) = &filter.owner_region {
            sql.push(" AND owner_region = ")
                .bind(Bind::Text(owner.as_str().to_owned()));
        }
        if let Some(assignee) = &filter.assignee {
            sql.push(" AND assignee = ")
                .bind(Bind::Text(assignee.clone()));
        }
        if let Some(tier) = &filter.tier {
            sql.push(" AND tier = ")
                .bind(Bind::Text(tier.as_str().to_owned()));
        }
        if filter.sla_at_risk {
            sql.push(" AND sla_at_risk = ").bind(Bind::Int(1));
        }
        self.ticket_page(sql, filter.after, filter.limit).await
    }

    /// The page of `sql` (a `SELECT` of [`TICKET_COLUMNS`] from `tickets`
    /// ending in a `WHERE` clause) after `after`, in ticket id order: the
    /// paging `list_tickets` and `search_tickets` share.
    pub(crate) async fn ticket_page(
        &self,
        mut sql: SqlBuilder,
        after: Option<TicketId>,
        limit: u32,
    ) -> Result<TicketPage> {
        let limit = limit.clamp(1, LIST_LIMIT_MAX);
        if let Some(after) = after {
            sql.push(" AND ticket_id > ")
                .bind(Bind::Text(after.to_string()));
        }
        // One row more than asked tells whether another page exists.
        sql.push(" ORDER BY ticket_id LIMIT ")
            .bind(Bind::Int(i64::from(limit) + 1));
        let rows = sql.query().fetch_all(&self.inner.pool).await?;
        let mut tickets = decode_all(&rows, codec::ticket_from_row)?;
        let more = tickets.len() > limit as usize;
        tickets.truncate(limit as usize);
        let next_after = if more {
            tickets.last().map(|t| t.id)
        } else {
            None
        };
        Ok(TicketPage {
            tickets,
            next_after,
        })
    }

    /// How many tickets `owner` holds, by status, and how many of its open
    /// ones are at SLA risk: two aggregate queries for the console.
    pub async fn queue_counts(&self, owner: &RegionId) -> Result<QueueCounts> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS tickets FROM tickets WHERE owner_region = $1 GROUP BY status",
        )
        .bind(owner.as_str())
        .fetch_all(&self.inner.pool)
        .await?;
        let mut counts = QueueCounts::default();
        for row in &rows {
            let status = codec::text(row, "tickets", "status")?;
            counts
                .by_status
                .insert(status, codec::uint(row, "tickets", "tickets")?);
        }
        let row = sqlx::query(
            "SELECT COUNT(*) AS tickets FROM tickets WHERE owner_region = $1 AND sla_at_risk = 1 \
             AND status <> 'solved' AND status <> 'closed'",
        )
        .bind(owner.as_str())
        .fetch_one(&self.inner.pool)
        .await?;
        counts.sla_at_risk = codec::uint(&row, "tickets", "tickets")?;
        Ok(counts)
    }

    /// Every agent's presence as they last set it, with when.
    pub async fn presences(
        &self,
    ) -> Result<std::collections::HashMap<String, (meridian_core::Presence, Timestamp)>> {
        const T: &str = "agent_presence";
        let rows = sqlx::query("SELECT agent, presence, set_at FROM agent_presence")
            .fetch_all(&self.inner.pool)
            .await?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            let presence = codec::text(row, T, "presence")?
                .parse::<meridian_core::Presence>()
                .map_err(|e| Error::corrupt(T, "presence", e))?;
            found.insert(
                codec::text(row, T, "agent")?,
                (presence, codec::timestamp(row, T, "set_at")?),
            );
        }
        Ok(found)
    }

    /// The work `owner` holds, as agents and queue owners see it: open
    /// tickets (neither solved nor closed) per assignee, and the unassigned
    /// ones' count and oldest creation.
    pub async fn assignments(&self, owner: &RegionId) -> Result<Assignments> {
        const T: &str = "tickets";
        let rows = sqlx::query(
            "SELECT assignee, COUNT(*) AS tickets, MIN(created_at) AS oldest FROM tickets \
             WHERE owner_region = $1 AND status <> 'solved' AND status <> 'closed' \
             GROUP BY assignee",
        )
        .bind(owner.as_str())
        .fetch_all(&self.inner.pool)
        .await?;
        let mut found = Assignments::default();
        for row in &rows {
            let tickets = u32::try_from(codec::uint(row, T, "tickets")?).unwrap_or(u32::MAX);
            match codec::opt_text(row, T, "assignee")? {
                Some(agent) => {
                    found.open_by_agent.insert(agent, tickets);
                }
                None => {
                    found.unassigned = tickets;
                    found.oldest_unassigned = Some(codec::timestamp(row, T, "oldest")?);
                }
            }
        }
        Ok(found)
    }

    /// Tickets owned by `owner` whose SLA clocks need a look at `now` (a
    /// warning or a deadline has passed), earliest first, at most `limit`.
    pub async fn sla_due(
        &self,
        owner: &RegionId,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Ticket>> {
        let rows = sqlx::query(&format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE owner_region = $1 AND sla_check_at <= $2 \
             ORDER BY sla_check_at LIMIT $3"
        ))
        .bind(owner.as_str())
        .bind(millis(now))
        .bind(i64::from(limit.clamp(1, LIST_LIMIT_MAX)))
        .fetch_all(&self.inner.pool)
        .await?;
        decode_all(&rows, codec::ticket_from_row)
    }

    /// Events of `origin` after `after_seq`, in origin_seq order, at most
    /// `limit` (capped at [`EVENTS_PAGE_MAX`]).
    pub async fn events_after(
        &self,
        origin: &RegionId,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<EventEnvelope>> {
        let limit = limit.min(EVENTS_PAGE_MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE origin_region = $1 AND origin_seq > $2 \
             ORDER BY origin_seq LIMIT $3"
        ))
        .bind(origin.as_str())
        .bind(to_db(after_seq, "after_seq")?)
        .bind(i64::from(limit))
        .fetch_all(&self.inner.pool)
        .await?;
        decode_all(&rows, codec::event_from_row)
    }

    /// Whether any ticket in this store may be pinned to regions. `false`
    /// means none is, and none was being written when this was read: every
    /// ticket here may go anywhere, so a region's own log (whose tickets
    /// are all here) ships without looking residencies up.
    pub fn may_hold_pinned(&self) -> bool {
        self.inner.pinned.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The residency of each of these tickets this store has (an empty set:
    /// anywhere); tickets not here are absent from the answer. What the
    /// senders of events ask before they ship a ticket's text elsewhere
    /// (`meridian_core::residency`).
    pub async fn residencies(
        &self,
        ids: &[TicketId],
    ) -> Result<std::collections::HashMap<TicketId, std::collections::BTreeSet<RegionId>>> {
        /// Ids per query: far under every backend's limit on parameters.
        const IDS_PER_QUERY: usize = 500;
        let mut found = std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let sql = format!(
                "SELECT ticket_id, residency FROM tickets WHERE ticket_id IN ({})",
                crate::ops::placeholders(self.backend(), 1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all(&self.inner.pool).await? {
                let id = codec::parsed::<TicketId>(&row, "tickets", "ticket_id")?;
                found.insert(id, codec::json_column(&row, "tickets", "residency")?);
            }
        }
        Ok(found)
    }

    /// The ticket an idempotency key's digest names here, if any: a read
    /// outside the writer, so only a hint (the writer's lookup decides).
    /// The gateway uses it to trace a replay in the ticket's own trace.
    pub async fn idempotent_ticket(&self, key_digest: &str) -> Result<Option<TicketId>> {
        let row = sqlx::query("SELECT ticket_id FROM idempotency_keys WHERE key_digest = $1")
            .bind(key_digest)
            .fetch_optional(&self.inner.pool)
            .await?;
        row.map(|row| codec::parsed::<TicketId>(&row, "idempotency_keys", "ticket_id"))
            .transpose()
    }

    /// Every event of a ticket, from every origin, in HLC order (ties broken
    /// by origin, then origin_seq).
    pub async fn events_for_ticket(&self, id: TicketId) -> Result<Vec<EventEnvelope>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE ticket_id = $1 ORDER BY hlc_time, origin_region, origin_seq"
        ))
        .bind(id.to_string())
        .fetch_all(&self.inner.pool)
        .await?;
        decode_all(&rows, codec::event_from_row)
    }

    /// Events committed by this store from now on, local and applied remote,
    /// in commit order. A receiver that falls more than
    /// [`SUBSCRIBE_CAPACITY`] events behind gets `Lagged` and should resume
    /// from the log with [`Store::events_after`].
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventEnvelope>> {
        self.inner.events.subscribe()
    }

    /// Conflicts recorded by this store from now on, after their commit:
    /// for the gateway's conflict spans and counts. Lagging receivers miss
    /// some (the conflicts themselves stay on their tickets).
    pub fn subscribe_conflicts(&self) -> broadcast::Receiver<Arc<crate::RecordedConflict>> {
        self.inner.conflicts.subscribe()
    }

    /// Writes queued for the writer right now, not counting the batch it is
    /// committing: the depth of the group-commit queue.
    pub fn queued_writes(&self) -> usize {
        let queue = self
            .inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        queue
            .as_ref()
            .map_or(0, |queue| queue.max_capacity() - queue.capacity())
    }

    /// Group-commit counters of this store's writer since it opened.
    pub fn writer_stats(&self) -> WriterStats {
        self.inner.stats.snapshot()
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }
}

/// The settings every SQLite connection gets. Static strings: the
/// `after_connect` callback must not borrow anything of its own.
fn sqlite_pragmas(synchronous: Synchronous) -> &'static str {
    // Keep the busy timeout in step with SQLITE_BUSY_TIMEOUT_MS.
    const _: () = assert!(
        SQLITE_BUSY_TIMEOUT_MS == 5_000,
        "invariant: pragma strings match SQLITE_BUSY_TIMEOUT_MS"
    );
    match synchronous {
        Synchronous::Normal => {
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;"
        }
        Synchronous::Full => {
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;"
        }
        Synchronous::Extra => {
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = EXTRA; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;"
        }
    }
}

fn decode_all<T>(rows: &[AnyRow], decode: impl Fn(&AnyRow) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(decode).collect()
}

#[cfg(test)]
mod intake_spike_tests {
    use meridian_core::{HlcTimestamp, IntakeSpike, Rate, Tier};

    use super::*;

    fn spike(region: &str) -> IntakeSpike {
        IntakeSpike {
            region: RegionId::new(region).unwrap(),
            tier: Tier::new("premium").unwrap(),
            skill: None,
            bucket_start: "2026-06-01T14:16:00Z".parse().unwrap(),
            bucket_end: "2026-06-01T14:17:00Z".parse().unwrap(),
            count: 40,
            baseline: Rate::from_f64(3.2),
            deviation: Rate::from_f64(1.8),
            threshold: Rate::from_f64(10.4),
            since: "2026-06-01T14:16:00Z".parse().unwrap(),
            peak: 40,
            queue_owner: Some("us-east-day-lead".into()),
        }
    }

    fn meta() -> WriteMeta {
        WriteMeta {
            hlc_time: HlcTimestamp::new(1_780_000_000_000, 0),
            traceparent: None,
            at: Timestamp::UNIX_EPOCH,
            actor: None,
        }
    }

    /// Spike events are logged under their own id, once; replicated ones
    /// are checked against that id and project nowhere.
    #[tokio::test]
    async fn intake_spikes_are_logged_once_and_replicate() {
        let dir = tempfile::tempdir().unwrap();
        let us = RegionId::new("us-east").unwrap();
        let store = Store::open(&StoreConfig::sqlite_file(&dir.path().join("s.db")), &us)
            .await
            .unwrap();

        let raised = EventKind::IntakeSpike {
            spike: spike("us-east"),
        };
        let event = store
            .record_intake_spike(raised.clone(), meta())
            .await
            .unwrap();
        assert_eq!(event.ticket_id, spike("us-east").raised_id());
        assert_eq!(event.epoch, Epoch::default());
        let again = store
            .record_intake_spike(raised.clone(), meta())
            .await
            .unwrap_err();
        assert!(matches!(again, Error::Duplicate(_)), "{again}");
        let cleared = EventKind::IntakeSpikeCleared {
            spike: spike("us-east"),
        };
        assert_eq!(
            store
                .record_intake_spike(cleared, meta())
                .await
                .unwrap()
                .ticket_id,
            spike("us-east").cleared_id()
        );
        let foreign = store
            .record_intake_spike(
                EventKind::IntakeSpike {
                    spike: spike("eu-west"),
                },
                meta(),
            )
            .await;
        assert!(foreign.unwrap_err().to_string().contains("spike.region"));
        let not_a_spike = EventKind::TicketUpdated {
            changes: TicketChanges::default(),
        };
        assert!(
            store
                .record_intake_spike(not_a_spike, meta())
                .await
                .is_err()
        );
        assert_eq!(store.events_after(&us, 0, 10).await.unwrap().len(), 2);

        let eu = RegionId::new("eu-west").unwrap();
        let theirs = spike("eu-west");
        let remote = |ticket_id| EventEnvelope {
            origin_region: eu.clone(),
            origin_seq: 1,
            ticket_id,
            epoch: Epoch::default(),
            hlc_time: HlcTimestamp::new(1_780_000_000_001, 0),
            traceparent: None,
            actor: None,
            kind: EventKind::IntakeSpike {
                spike: theirs.clone(),
            },
        };
        let mislabelled = store
            .apply_remote(&eu, vec![remote(theirs.cleared_id())])
            .await
            .unwrap_err();
        assert!(
            mislabelled.to_string().contains("ticket_id"),
            "{mislabelled}"
        );
        assert_eq!(
            store
                .apply_remote(&eu, vec![remote(theirs.raised_id())])
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .events_for_ticket(theirs.raised_id())
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            store
                .get_ticket(theirs.raised_id())
                .await
                .unwrap()
                .is_none(),
            "no projection"
        );
        store.close().await;
    }
}
