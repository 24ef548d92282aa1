//! The single writer task and its group commit.
//!
//! Every write of a store goes through one task over a bounded queue. The
//! task takes whatever is queued (up to `batch_max`), runs it all in one
//! transaction, commits, and only then answers each caller: an answer means
//! committed. One fsync then covers many writes, and SQLite never sees two
//! writers fight over its lock.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use meridian_core::{Clock, Epoch, EventEnvelope, EventKind, Note, RegionId, Ticket, TicketId};
use sqlx::AnyPool;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::{
    Backend, CreateOutcome, Error, IdempotencyKey, Result, WriteMeta,
    ops::{Fail, WriteTx},
    schema::begin_write,
};

/// A caller waiting for its write, and the outcome the batch decided for it
/// (sent only once the batch's fate is known).
pub(crate) struct Reply<T> {
    sender: oneshot::Sender<Result<T>>,
    outcome: Option<Result<T>>,
}

impl<T> Reply<T> {
    pub(crate) fn new(sender: oneshot::Sender<Result<T>>) -> Self {
        Self {
            sender,
            outcome: None,
        }
    }

    /// Records the command's outcome. Refusals are outcomes too: they wrote
    /// nothing, so the batch goes on. Other failures abort the transaction.
    fn settle(
        &mut self,
        result: Result<(T, Vec<EventEnvelope>), Fail>,
    ) -> Result<Vec<EventEnvelope>> {
        match result {
            Ok((value, events)) => {
                self.outcome = Some(Ok(value));
                Ok(events)
            }
            Err(Fail::Refused(e)) => {
                self.outcome = Some(Err(e));
                Ok(Vec::new())
            }
            Err(Fail::Abort(e)) => Err(e),
        }
    }

    fn send(self, result: Result<T>) {
        // The caller may have stopped waiting; the write stands regardless.
        let _ = self.sender.send(result);
    }

    fn answer(self) {
        let Reply { sender, outcome } = self;
        // Every command in a committed transaction has settled; a missing
        // outcome could only mean the command never ran, which is what a
        // closed writer means to its caller.
        let _ = sender.send(outcome.unwrap_or(Err(Error::Closed)));
    }
}

/// One queued write.
pub(crate) enum Job {
    CreateTicket {
        ticket: Ticket,
        meta: WriteMeta,
        reply: Reply<EventEnvelope>,
    },
    /// A creation under an idempotency key. It never joins a run of plain
    /// creations: its key is looked up and written one statement at a time.
    CreateTicketKeyed {
        ticket: Ticket,
        meta: WriteMeta,
        key: IdempotencyKey,
        reply: Reply<CreateOutcome>,
    },
    PruneIdempotencyKeys {
        before: jiff::Timestamp,
        limit: u32,
        reply: Reply<u64>,
    },
    SetPresence {
        agent: String,
        presence: meridian_core::Presence,
        at: jiff::Timestamp,
        reply: Reply<()>,
    },
    UpdateTicket {
        ticket_id: TicketId,
        kind: EventKind,
        meta: WriteMeta,
        reply: Reply<(Ticket, EventEnvelope)>,
    },
    AddNote {
        note: Note,
        meta: WriteMeta,
        reply: Reply<EventEnvelope>,
    },
    /// A public reply or customer message with the owner-scoped changes
    /// (clocks, reopening) it makes, written together or not at all.
    AddMessage {
        note: Note,
        changes: Option<meridian_core::TicketChanges>,
        meta: WriteMeta,
        reply: Reply<(Option<Ticket>, Vec<EventEnvelope>)>,
    },
    Ownership {
        ticket_id: TicketId,
        epoch: Epoch,
        kind: EventKind,
        meta: WriteMeta,
        reply: Reply<(Ticket, EventEnvelope)>,
    },
    ApplyRemote {
        origin: RegionId,
        events: Vec<EventEnvelope>,
        reply: Reply<u64>,
    },
    ShiftSummary {
        summary: meridian_core::ShiftSummary,
        meta: WriteMeta,
        reply: Reply<EventEnvelope>,
    },
    IntakeSpike {
        kind: EventKind,
        meta: WriteMeta,
        reply: Reply<EventEnvelope>,
    },
}

impl Job {
    /// Runs the command in `tx`, returning the events it committed (if the
    /// transaction commits).
    async fn run(&mut self, tx: &mut WriteTx<'_>) -> Result<Vec<EventEnvelope>> {
        match self {
            Job::CreateTicket {
                ticket,
                meta,
                reply,
            } => {
                let result = tx.create_ticket(ticket, meta).await;
                reply.settle(result.map(|event| (event.clone(), vec![event])))
            }
            Job::CreateTicketKeyed {
                ticket,
                meta,
                key,
                reply,
            } => {
                let result = tx.create_ticket_keyed(ticket, meta, key).await;
                reply.settle(result.map(|outcome| {
                    let events = match &outcome {
                        CreateOutcome::Created(event) => vec![event.clone()],
                        CreateOutcome::Replayed { .. } => Vec::new(),
                    };
                    (outcome, events)
                }))
            }
            Job::PruneIdempotencyKeys {
                before,
                limit,
                reply,
            } => {
                let result = tx.prune_idempotency_keys(*before, *limit).await;
                reply.settle(result.map(|deleted| (deleted, Vec::new())))
            }
            Job::SetPresence {
                agent,
                presence,
                at,
                reply,
            } => {
                let result = tx.set_presence(agent, *presence, *at).await;
                reply.settle(result.map(|()| ((), Vec::new())))
            }
            Job::UpdateTicket {
                ticket_id,
                kind,
                meta,
                reply,
            } => {
                let result = tx.update_ticket(*ticket_id, kind, meta).await;
                reply.settle(result.map(|(ticket, event)| ((ticket, event.clone()), vec![event])))
            }
            Job::AddNote { note, meta, reply } => {
                let result = tx.add_note(note, meta).await;
                reply.settle(result.map(|event| (event.clone(), vec![event])))
            }
            Job::AddMessage {
                note,
                changes,
                meta,
                reply,
            } => {
                let result = tx.add_message(note, changes.as_ref(), meta).await;
                reply.settle(result.map(|(ticket, events)| ((ticket, events.clone()), events)))
            }
            Job::Ownership {
                ticket_id,
                epoch,
                kind,
                meta,
                reply,
            } => {
                let result = tx.ownership_change(*ticket_id, *epoch, kind, meta).await;
                reply.settle(result.map(|(ticket, event)| ((ticket, event.clone()), vec![event])))
            }
            Job::ApplyRemote {
                origin,
                events,
                reply,
            } => reply.settle(tx.apply_remote(origin, events).await),
            Job::ShiftSummary {
                summary,
                meta,
                reply,
            } => {
                let result = tx.shift_summary(summary, meta).await;
                reply.settle(result.map(|event| (event.clone(), vec![event])))
            }
            Job::IntakeSpike { kind, meta, reply } => {
                let result = tx.intake_spike(kind, meta).await;
                reply.settle(result.map(|event| (event.clone(), vec![event])))
            }
        }
    }

    /// Runs consecutive `CreateTicket` jobs in `tx` together
    /// ([`WriteTx::create_tickets`]): the same outcomes as running each in
    /// turn, in a few multi-row statements.
    async fn run_creates(jobs: &mut [Job], tx: &mut WriteTx<'_>) -> Result<Vec<EventEnvelope>> {
        let creates: Vec<(&Ticket, &WriteMeta)> = jobs
            .iter()
            .filter_map(|job| match job {
                Job::CreateTicket { ticket, meta, .. } => Some((ticket, meta)),
                _ => None,
            })
            .collect();
        if creates.len() != jobs.len() {
            return Err(Error::Corrupt(
                "a run of creations holds another write".to_owned(),
            ));
        }
        let outcomes = tx.create_tickets(&creates).await?;
        let mut events = Vec::with_capacity(outcomes.len());
        for (job, outcome) in jobs.iter_mut().zip(outcomes) {
            if let Job::CreateTicket { reply, .. } = job {
                let result = outcome
                    .map(|event| (event.clone(), vec![event]))
                    .map_err(Fail::Refused);
                events.extend(reply.settle(result)?);
            }
        }
        Ok(events)
    }

    /// Forgets the outcome of a run whose transaction was rolled back.
    fn reset(&mut self) {
        match self {
            Job::CreateTicket { reply, .. }
            | Job::AddNote { reply, .. }
            | Job::ShiftSummary { reply, .. } => reply.outcome = None,
            Job::UpdateTicket { reply, .. } | Job::Ownership { reply, .. } => reply.outcome = None,
            Job::IntakeSpike { reply, .. } => reply.outcome = None,
            Job::AddMessage { reply, .. } => reply.outcome = None,
            Job::CreateTicketKeyed { reply, .. } => reply.outcome = None,
            Job::PruneIdempotencyKeys { reply, .. } => reply.outcome = None,
            Job::SetPresence { reply, .. } => reply.outcome = None,
            Job::ApplyRemote { reply, .. } => reply.outcome = None,
        }
    }

    fn answer(self) {
        match self {
            Job::CreateTicket { reply, .. }
            | Job::AddNote { reply, .. }
            | Job::ShiftSummary { reply, .. } => reply.answer(),
            Job::UpdateTicket { reply, .. } | Job::Ownership { reply, .. } => reply.answer(),
            Job::IntakeSpike { reply, .. } => reply.answer(),
            Job::AddMessage { reply, .. } => reply.answer(),
            Job::CreateTicketKeyed { reply, .. } => reply.answer(),
            Job::PruneIdempotencyKeys { reply, .. } => reply.answer(),
            Job::SetPresence { reply, .. } => reply.answer(),
            Job::ApplyRemote { reply, .. } => reply.answer(),
        }
    }

    fn fail(self, error: Error) {
        match self {
            Job::CreateTicket { reply, .. }
            | Job::AddNote { reply, .. }
            | Job::ShiftSummary { reply, .. } => reply.send(Err(error)),
            Job::UpdateTicket { reply, .. } | Job::Ownership { reply, .. } => {
                reply.send(Err(error))
            }
            Job::IntakeSpike { reply, .. } => reply.send(Err(error)),
            Job::AddMessage { reply, .. } => reply.send(Err(error)),
            Job::CreateTicketKeyed { reply, .. } => reply.send(Err(error)),
            Job::PruneIdempotencyKeys { reply, .. } => reply.send(Err(error)),
            Job::SetPresence { reply, .. } => reply.send(Err(error)),
            Job::ApplyRemote { reply, .. } => reply.send(Err(error)),
        }
    }
}

/// Counters of the writer's group commit, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Write transactions committed.
    pub transactions: u64,
    /// Commands answered from committed transactions (refusals included).
    pub commands: u64,
    /// Batches whose shared transaction failed, so that each of their
    /// commands was retried in a transaction of its own.
    pub batch_retries: u64,
}

#[derive(Debug, Default)]
pub(crate) struct StatsCounters {
    transactions: AtomicU64,
    commands: AtomicU64,
    batch_retries: AtomicU64,
}

impl StatsCounters {
    pub(crate) fn snapshot(&self) -> WriterStats {
        WriterStats {
            transactions: self.transactions.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
            batch_retries: self.batch_retries.load(Ordering::Relaxed),
        }
    }

    fn committed(&self, commands: usize) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.commands.fetch_add(commands as u64, Ordering::Relaxed);
    }
}

/// What one transaction committed, to publish.
struct Committed {
    events: Vec<EventEnvelope>,
    conflicts: Vec<crate::RecordedConflict>,
}

pub(crate) struct Writer {
    pub pool: AnyPool,
    pub backend: Backend,
    pub local_region: RegionId,
    pub clock: Arc<dyn Clock>,
    pub events: broadcast::Sender<Arc<EventEnvelope>>,
    pub conflicts: broadcast::Sender<Arc<crate::RecordedConflict>>,
    pub batch_max: usize,
    pub stats: Arc<StatsCounters>,
    /// The writer generation this store claimed, when it opened as the
    /// region's fenced active writer; `None` writes unfenced.
    pub generation: Option<u64>,
    /// Set once a transaction found the generation superseded: `(held,
    /// current)`. From then on every write is refused without touching
    /// the database.
    pub superseded: tokio::sync::watch::Sender<Option<(u64, u64)>>,
}

impl Writer {
    /// Serves the queue until every sender is gone, then returns: that is
    /// how `Store::close` drains it.
    pub(crate) async fn run(self, mut queue: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(self.batch_max);
        while queue.recv_many(&mut batch, self.batch_max).await > 0 {
            let superseded = *self.superseded.borrow();
            match superseded {
                Some((held, current)) => {
                    for job in batch.drain(..) {
                        job.fail(Error::Superseded {
                            region: self.local_region.clone(),
                            held,
                            current,
                        });
                    }
                }
                None => self.commit_batch(std::mem::take(&mut batch)).await,
            }
        }
        tracing::debug!(region = %self.local_region, "store writer stopped");
    }

    async fn commit_batch(&self, mut batch: Vec<Job>) {
        if batch.len() > 1 {
            match self.transact(&mut batch).await {
                Ok(committed) => {
                    self.stats.committed(batch.len());
                    self.publish(committed);
                    batch.into_iter().for_each(Job::answer);
                    return;
                }
                Err(error) if self.note_superseded(&error) => {
                    batch
                        .into_iter()
                        .for_each(|job| job.fail(self.superseded_error()));
                    return;
                }
                Err(error) => {
                    // One command's failure must not fail its neighbours:
                    // give each its own transaction.
                    tracing::warn!(error = %error, batch_len = batch.len(), "batch transaction failed, retrying its writes one by one");
                    self.stats.batch_retries.fetch_add(1, Ordering::Relaxed);
                    batch.iter_mut().for_each(Job::reset);
                }
            }
        }
        for mut job in batch {
            match self.transact(std::slice::from_mut(&mut job)).await {
                Ok(committed) => {
                    self.stats.committed(1);
                    self.publish(committed);
                    job.answer();
                }
                Err(error) => {
                    self.note_superseded(&error);
                    job.fail(error)
                }
            }
        }
    }

    /// Remembers that this writer was superseded, if `error` says so: the
    /// store then refuses every later write and tells its owner.
    fn note_superseded(&self, error: &Error) -> bool {
        let Error::Superseded { held, current, .. } = error else {
            return false;
        };
        if self.superseded.borrow().is_none() {
            tracing::error!(region = %self.local_region, held, current, "another replica took over the region; this store stops writing");
            self.superseded.send_replace(Some((*held, *current)));
        }
        true
    }

    fn superseded_error(&self) -> Error {
        let (held, current) = self.superseded.borrow().unwrap_or_default();
        Error::Superseded {
            region: self.local_region.clone(),
            held,
            current,
        }
    }

    /// Runs `jobs` in one transaction and commits it.
    async fn transact(&self, jobs: &mut [Job]) -> Result<Committed> {
        let mut tx = begin_write(&self.pool, self.backend).await?;
        let result = async {
            let mut write = WriteTx::start(
                &mut tx,
                self.backend,
                &self.local_region,
                self.clock.now(),
                self.generation,
            )
            .await?;
            let mut events = Vec::new();
            let mut rest = &mut jobs[..];
            while !rest.is_empty() {
                // Consecutive creations (all of intake) go in one run.
                let creates = rest
                    .iter()
                    .take_while(|job| matches!(job, Job::CreateTicket { .. }))
                    .count();
                let (now, tail) = std::mem::take(&mut rest).split_at_mut(creates.max(1));
                rest = tail;
                match now {
                    [job] => events.extend(job.run(&mut write).await?),
                    run => events.extend(Job::run_creates(run, &mut write).await?),
                }
            }
            let conflicts = write.finish().await?;
            Ok::<_, Error>(Committed { events, conflicts })
        }
        .await;
        match result {
            Ok(committed) => {
                tx.commit().await?;
                Ok(committed)
            }
            Err(error) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback failed; the connection is discarded");
                }
                Err(error)
            }
        }
    }

    fn publish(&self, committed: Committed) {
        // No subscriber is not an error: watch streams come and go.
        for event in committed.events {
            let _ = self.events.send(Arc::new(event));
        }
        for conflict in committed.conflicts {
            let _ = self.conflicts.send(Arc::new(conflict));
        }
    }
}
