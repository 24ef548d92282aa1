//! The real store inside the simulation: each region's database is also a
//! `meridian_store::Store` on an in-memory SQLite database, written through
//! the same store code the gateway uses, so the seeds check the SQL fencing
//! (the guarded statements, the refolds, the conflicts) under the faults.
//!
//! The bridge. The store is async: a writer task, and sqlx-sqlite's worker
//! thread per connection, neither of which turmoil can schedule. So each
//! region's store lives on a thread of its own with a current-thread tokio
//! runtime, and the simulation calls it synchronously: it sends the call
//! and blocks on the answer. A store call then takes no simulated time and
//! happens at exactly the point of the run where the model commits, so the
//! seed decides everything and a seed still replays exactly. Nothing the
//! store answers feeds back into the run; a disagreement is a violation.
//!
//! What is mirrored: every local write the model commits is made through
//! the store's own write API (which plans and fences it in SQL and must
//! accept it, producing the same event), and every peer batch the model
//! applies goes through `Store::apply_remote` (which must reach the same
//! cursor). At the end each region's tickets as SQL holds them must equal
//! the fold of that region's log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc;

use futures::future::BoxFuture;
use jiff::Timestamp;
use meridian_core::{EventEnvelope, EventKind, ManualClock, RegionId, TicketId};
use meridian_store::{Store, StoreConfig, TicketRecord, WriteMeta};

type Call = Box<dyn FnOnce(Store) -> BoxFuture<'static, ()> + Send>;

/// One region's SQL store on its own thread.
pub struct SqlStore {
    calls: Option<mpsc::Sender<Call>>,
    thread: Option<std::thread::JoinHandle<()>>,
    clock: Arc<ManualClock>,
}

/// Closes the store and waits for its thread: the next seed aligns tokio's
/// task ids (see `run.rs`), which a closing store must not disturb.
impl Drop for SqlStore {
    fn drop(&mut self) {
        drop(self.calls.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl SqlStore {
    /// Opens an in-memory SQLite store for `region` on a new thread.
    pub fn open(region: &RegionId) -> Result<Self, String> {
        let (calls, queue) = mpsc::channel::<Call>();
        let (opened, open_result) = mpsc::channel::<Result<(), String>>();
        let clock = Arc::new(ManualClock::new(Timestamp::UNIX_EPOCH));
        let store_clock = clock.clone();
        let region = region.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sim-sql-{region}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = opened.send(Err(format!("runtime: {e}")));
                        return;
                    }
                };
                let config = StoreConfig::new("sqlite::memory:");
                let store =
                    match runtime.block_on(Store::open_with_clock(&config, &region, store_clock)) {
                        Ok(store) => store,
                        Err(e) => {
                            let _ = opened.send(Err(format!("open: {e}")));
                            return;
                        }
                    };
                let _ = opened.send(Ok(()));
                // Calls come one at a time; the sender blocks on each.
                while let Ok(call) = queue.recv() {
                    runtime.block_on(call(store.clone()));
                }
                runtime.block_on(store.close());
            })
            .map_err(|e| format!("thread: {e}"))?;
        open_result
            .recv()
            .map_err(|_| "the store thread ended while opening".to_owned())??;
        Ok(Self {
            calls: Some(calls),
            thread: Some(thread),
            clock,
        })
    }

    /// Runs `call` on the store at simulated instant `now` and waits for it.
    fn call<T: Send + 'static>(
        &self,
        now: Timestamp,
        call: impl FnOnce(Store) -> BoxFuture<'static, T> + Send + 'static,
    ) -> Result<T, String> {
        self.clock.set(now);
        let (answer, answered) = mpsc::channel();
        let job: Call = Box::new(move |store| {
            Box::pin(async move {
                let _ = answer.send(call(store).await);
            })
        });
        self.calls
            .as_ref()
            .ok_or_else(|| "the store is closed".to_owned())?
            .send(job)
            .map_err(|_| "the store thread is gone".to_owned())?;
        answered
            .recv()
            .map_err(|_| "the store thread dropped a call".to_owned())
    }

    /// Makes the model's local write through the store's write API, which
    /// must accept it and log the same event.
    pub fn write_local(&self, event: &EventEnvelope, now: Timestamp) -> Result<(), String> {
        let expected = event.clone();
        let written = self.call(now, move |store| {
            Box::pin(async move { write_through(&store, expected, now).await })
        })??;
        if &written != event {
            return Err(format!(
                "the store logged {written:?} for the model's {event:?}"
            ));
        }
        Ok(())
    }

    /// Applies a peer's batch; returns the store's new cursor.
    pub fn apply_remote(
        &self,
        origin: &RegionId,
        events: Vec<EventEnvelope>,
        now: Timestamp,
    ) -> Result<u64, String> {
        let origin = origin.clone();
        self.call(now, move |store| {
            Box::pin(async move { store.apply_remote(&origin, events).await })
        })?
        .map_err(|e| e.to_string())
    }

    /// Every ticket as the store holds it.
    pub fn records(
        &self,
        ids: Vec<TicketId>,
        now: Timestamp,
    ) -> Result<BTreeMap<TicketId, TicketRecord>, String> {
        self.call(now, move |store| {
            Box::pin(async move {
                let mut records = BTreeMap::new();
                for id in ids {
                    if let Some(record) = store.get_ticket(id).await? {
                        records.insert(id, record);
                    }
                }
                Ok::<_, meridian_store::Error>(records)
            })
        })?
        .map_err(|e| e.to_string())
    }
}

/// The store call that makes the local write `event` describes.
async fn write_through(
    store: &Store,
    event: EventEnvelope,
    now: Timestamp,
) -> Result<EventEnvelope, String> {
    let meta = WriteMeta {
        hlc_time: event.hlc_time,
        traceparent: event.traceparent.clone(),
        at: now,
        actor: event.actor.clone(),
    };
    let id = event.ticket_id;
    let written = match event.kind {
        EventKind::TicketCreated { ticket } => store.create_ticket(*ticket, meta).await,
        EventKind::TicketUpdated { changes } => store
            .update_ticket(id, changes, meta)
            .await
            .map(|(_, event)| event),
        EventKind::NoteAdded { note } => store.add_note(note, meta).await,
        EventKind::HandoffOffered { to, handoff, note } => store
            .offer_handoff(id, event.epoch, to, handoff, note, meta)
            .await
            .map(|(_, event)| event),
        EventKind::HandoffAccepted {
            from,
            offer_seq,
            previous_epoch,
        } => store
            .accept_handoff(id, from, offer_seq, previous_epoch, event.epoch, meta)
            .await
            .map(|(_, event)| event),
        EventKind::HandoffRefused { to, reason } => store
            .refuse_handoff(id, event.epoch, to, reason, meta)
            .await
            .map(|(_, event)| event),
        EventKind::TakenOver {
            from,
            fencing_token,
            ..
        } => store
            .take_over(id, from, fencing_token, event.epoch, meta)
            .await
            .map(|(_, event)| event),
        EventKind::ShiftSummary { summary } => store.record_shift_summary(summary, meta).await,
        other => return Err(format!("the simulation does not write {}", other.name())),
    };
    written.map_err(|e| format!("the store refused the model's write to {id}: {e}"))
}
