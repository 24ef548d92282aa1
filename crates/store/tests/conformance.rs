//! The store conformance suite: every case runs against SQLite (a temporary
//! file, always) and against PostgreSQL whenever `DATABASE_URL` is set, each
//! PostgreSQL case in a fresh schema of its own that is dropped afterwards.
//! Test names say the backend: `sqlite::create_then_get`,
//! `postgres::create_then_get`.
//!
//! Without `DATABASE_URL` the PostgreSQL cases print a loud SKIPPED line;
//! with `MERIDIAN_REQUIRE_ALL=1` they fail instead.

// `cfg(test)` marks the helpers as test code for clippy's unwrap/panic lints.
#[cfg(test)]
mod harness {
    use std::{
        future::Future,
        panic::AssertUnwindSafe,
        sync::{Arc, Mutex},
    };

    use futures::FutureExt;
    use meridian_core::RegionId;
    use meridian_store::{Backend, Store, StoreConfig};
    use sqlx::{AnyConnection, Connection, Executor};

    pub fn us() -> RegionId {
        RegionId::new("us-east").unwrap()
    }

    /// What a case gets: an open store on a fresh database, and the means to
    /// reopen it or reach the database behind it.
    pub struct Ctx {
        pub store: Store,
        pub config: StoreConfig,
        opened: Arc<Mutex<Vec<Store>>>,
    }

    impl Ctx {
        pub fn backend(&self) -> Backend {
            self.store.backend()
        }

        /// Opens another store on the same database (another gateway
        /// replica, or the same one after a restart).
        pub async fn open_another(&self) -> Store {
            let store = Store::open(&self.config, &us()).await.unwrap();
            self.opened.lock().unwrap().push(store.clone());
            store
        }

        /// Opens another store on the same database as the region's fenced
        /// active writer (a replica that just took the region lock).
        pub async fn open_fenced(&self) -> Store {
            let clock = std::sync::Arc::new(meridian_store::SystemClock);
            let store = Store::open_fenced(&self.config, &us(), clock)
                .await
                .unwrap();
            self.opened.lock().unwrap().push(store.clone());
            store
        }

        /// Closes the store and opens it again, as a restart would.
        pub async fn reopen(&mut self) {
            self.store.close().await;
            self.store = self.open_another().await;
        }

        /// A plain connection to the store's database (same schema).
        pub async fn raw(&self) -> AnyConnection {
            AnyConnection::connect(&self.config.url).await.unwrap()
        }
    }

    pub enum Backing {
        Sqlite,
        Postgres,
    }

    pub async fn run<F, Fut>(backing: Backing, case: F)
    where
        F: FnOnce(Ctx) -> Fut,
        Fut: Future<Output = ()>,
    {
        sqlx::any::install_default_drivers();
        match backing {
            Backing::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let config = StoreConfig::sqlite_file(&dir.path().join("store.db"));
                run_in(config, case).await;
            }
            Backing::Postgres => {
                let Ok(url) = std::env::var("DATABASE_URL") else {
                    eprintln!("PostgreSQL conformance SKIPPED: DATABASE_URL not set");
                    if std::env::var("MERIDIAN_REQUIRE_ALL").as_deref() == Ok("1") {
                        panic!(
                            "MERIDIAN_REQUIRE_ALL=1 but DATABASE_URL is not set: PostgreSQL conformance cannot run"
                        );
                    }
                    return;
                };
                let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
                let mut admin = AnyConnection::connect(&url).await.unwrap();
                admin
                    .execute(format!("CREATE SCHEMA {schema}").as_str())
                    .await
                    .unwrap();
                let separator = if url.contains('?') { '&' } else { '?' };
                let config = StoreConfig::new(format!(
                    "{url}{separator}options=-c%20search_path%3D{schema}"
                ));
                let outcome = AssertUnwindSafe(run_in(config, case)).catch_unwind().await;
                admin
                    .execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
                    .await
                    .unwrap();
                admin.close().await.unwrap();
                if let Err(panic) = outcome {
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }

    async fn run_in<F, Fut>(config: StoreConfig, case: F)
    where
        F: FnOnce(Ctx) -> Fut,
        Fut: Future<Output = ()>,
    {
        let opened = Arc::new(Mutex::new(Vec::new()));
        let store = Store::open(&config, &us()).await.unwrap();
        opened.lock().unwrap().push(store.clone());
        let outcome = AssertUnwindSafe(case(Ctx {
            store,
            config,
            opened: opened.clone(),
        }))
        .catch_unwind()
        .await;
        let stores = std::mem::take(&mut *opened.lock().unwrap());
        for store in stores {
            store.close().await;
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Fixtures: tickets, notes, write metadata and remote event logs.
#[cfg(test)]
mod fixtures {
    use std::{
        collections::BTreeSet,
        sync::atomic::{AtomicU64, Ordering},
    };

    use jiff::Timestamp;
    use meridian_core::{
        Epoch, EventEnvelope, EventKind, HlcTimestamp, Note, NoteId, Ownership, Priority, RegionId,
        Skill, SlaClock, SlaDeadlines, SlaState, Status, Ticket, TicketChanges, TicketId, Tier,
    };
    use meridian_store::{Store, WriteMeta};

    pub const BASE_MS: i64 = 1_750_000_000_000;
    static NEXT: AtomicU64 = AtomicU64::new(1);

    pub fn ms(millis: i64) -> Timestamp {
        Timestamp::from_millisecond(millis).unwrap()
    }

    /// A fresh number; ids built from it sort in the order they were made.
    fn next() -> u64 {
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    pub fn ticket_id() -> TicketId {
        let n = next();
        let mut random = [0u8; 10];
        random[..8].copy_from_slice(&n.to_be_bytes());
        TicketId::new_v7(ms(BASE_MS + n as i64), random)
    }

    pub fn note_id() -> NoteId {
        let n = next();
        let mut random = [7u8; 10];
        random[..8].copy_from_slice(&n.to_be_bytes());
        NoteId::new_v7(ms(BASE_MS + n as i64), random)
    }

    pub fn region(name: &str) -> RegionId {
        RegionId::new(name).unwrap()
    }

    pub fn us() -> RegionId {
        region("us-east")
    }

    pub fn eu() -> RegionId {
        region("eu-west")
    }

    pub fn apac() -> RegionId {
        region("apac-south")
    }

    pub fn region_index(region: &RegionId) -> u16 {
        match region.as_str() {
            "us-east" => 0,
            "eu-west" => 1,
            "apac-south" => 2,
            other => panic!("no index for {other}"),
        }
    }

    /// A ticket with every field set to something other than its default.
    pub fn ticket(owner: &RegionId) -> Ticket {
        let id = ticket_id();
        let at = ms(BASE_MS + 1_000);
        Ticket {
            id,
            subject: "Printer on fire".into(),
            body: "It is on fire.\nSend help — ünïcode too.".into(),
            customer: "acme".into(),
            tier: Tier::new("standard").unwrap(),
            skills: BTreeSet::from([
                Skill::new("printers").unwrap(),
                Skill::new("billing").unwrap(),
            ]),
            language: "pt-BR".into(),
            residency: BTreeSet::from([us(), eu()]),
            status: Status::Open,
            assignee: Some("ana".into()),
            priority: Priority::High,
            owner: Ownership {
                owner_region: owner.clone(),
                epoch: Epoch::initial(region_index(owner)),
            },
            handoff_to: None,
            sla: SlaDeadlines {
                first_response: Some(SlaClock {
                    due: ms(BASE_MS + 3_600_000),
                    warn_at: ms(BASE_MS + 2_880_000),
                    state: SlaState::Running,
                }),
                next_response: None,
                resolution: Some(SlaClock {
                    due: ms(BASE_MS + 86_400_000),
                    warn_at: ms(BASE_MS + 69_120_000),
                    state: SlaState::Running,
                }),
            },
            created_at: at,
            updated_at: at,
        }
    }

    pub fn note(ticket_id: TicketId, region: &RegionId, body: &str, created_ms: i64) -> Note {
        Note {
            id: note_id(),
            ticket_id,
            region: region.clone(),
            author: "ana".into(),
            body: body.into(),
            created_at: ms(created_ms),
            auto: false,
            visibility: meridian_core::Visibility::Internal,
        }
    }

    pub fn meta(hlc_ms: u64) -> WriteMeta {
        WriteMeta {
            hlc_time: HlcTimestamp::new(hlc_ms, 0),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            at: ms(hlc_ms as i64),
            actor: None,
        }
    }

    pub const HLC0: u64 = BASE_MS as u64 + 10_000;

    pub fn status_change(epoch: Epoch, status: Status) -> TicketChanges {
        TicketChanges {
            epoch,
            status: Some(status),
            ..TicketChanges::default()
        }
    }

    /// Another region's log, as its store would have written it.
    pub struct Origin {
        pub region: RegionId,
        pub seq: u64,
        pub hlc: u64,
    }

    impl Origin {
        pub fn new(region: RegionId) -> Self {
            Self {
                region,
                seq: 0,
                hlc: HLC0,
            }
        }

        pub fn event(
            &mut self,
            ticket_id: TicketId,
            epoch: Epoch,
            kind: EventKind,
        ) -> EventEnvelope {
            self.seq += 1;
            self.hlc += 10;
            EventEnvelope {
                origin_region: self.region.clone(),
                origin_seq: self.seq,
                ticket_id,
                epoch,
                hlc_time: HlcTimestamp::new(self.hlc, 0),
                traceparent: None,
                actor: None,
                kind,
            }
        }

        /// A ticket this origin owns, and the event that created it.
        pub fn create(&mut self) -> (Ticket, EventEnvelope) {
            let ticket = ticket(&self.region);
            let event = self.event(
                ticket.id,
                ticket.owner.epoch,
                EventKind::TicketCreated {
                    ticket: Box::new(ticket.clone()),
                },
            );
            (ticket, event)
        }

        pub fn update(&mut self, ticket_id: TicketId, changes: TicketChanges) -> EventEnvelope {
            self.event(
                ticket_id,
                changes.epoch,
                EventKind::TicketUpdated { changes },
            )
        }

        pub fn note(&mut self, ticket_id: TicketId, epoch: Epoch) -> EventEnvelope {
            let note = note(
                ticket_id,
                &self.region.clone(),
                "from afar",
                BASE_MS + 5_000 + self.seq as i64,
            );
            self.event(ticket_id, epoch, EventKind::NoteAdded { note })
        }
    }

    /// Every event in the store, from the origins the suite uses.
    pub async fn event_count(store: &Store) -> usize {
        let mut total = 0;
        for origin in [us(), eu(), apac()] {
            total += store.events_after(&origin, 0, 10_000).await.unwrap().len();
        }
        total
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::harness::run(crate::harness::Backing::Sqlite, crate::cases::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::harness::run(crate::harness::Backing::Postgres, crate::cases::$case).await;
                }
            )*
        }
    };
}

conformance!(
    create_then_get,
    create_keeps_milliseconds_consistently,
    duplicate_create_writes_nothing,
    create_for_another_owner_is_fenced,
    list_filters_each_field,
    list_pages_without_duplicates_or_gaps,
    update_applies_and_writes_one_event,
    fenced_update_writes_nothing,
    illegal_updates_write_nothing,
    notes_append_and_are_idempotent_by_id,
    concurrent_creates_get_a_dense_sequence,
    two_stores_share_one_dense_sequence,
    a_superseded_writer_cannot_commit,
    region_lock_admits_one_holder,
    events_after_pages_in_order,
    events_for_ticket_orders_by_hlc_then_origin,
    apply_remote_is_idempotent,
    apply_remote_refuses_gaps,
    apply_remote_refuses_foreign_events,
    redacted_copies_are_kept_outside_the_residency_and_refused_inside,
    stale_epoch_update_becomes_a_conflict,
    update_arriving_before_its_ticket_is_applied_later,
    cursor_advances_with_events_across_restarts,
    subscribe_sees_committed_events,
    reopen_keeps_everything,
    failing_command_does_not_fail_its_batch,
    a_run_of_creations_answers_like_one_by_one,
    closed_store_refuses_writes,
    sla_alerts_are_fenced_projected_and_listed,
    sla_due_finds_only_clocks_that_need_a_look,
    replicated_sla_alerts_project_like_updates,
    an_offer_blocks_owner_writes_until_answered,
    acceptance_is_fenced_on_the_pending_offer,
    replicated_handoffs_converge_in_any_order,
    wait_applied_wakes_on_the_apply,
    takeover_moves_only_what_the_failed_region_owned,
    a_takeover_takes_back_the_failed_regions_late_write,
    writes_a_takeover_covers_count_in_any_arrival_order,
    a_write_made_before_a_handoff_counts_when_it_arrives_after,
    runs_of_creations_and_notes_apply_in_bulk_like_one_by_one,
    shift_summaries_are_recorded_once_and_replicate,
    a_message_and_its_clock_change_are_written_together_or_not_at_all,
    a_keyed_create_retried_answers_the_same_ticket,
    a_key_with_another_request_is_refused_and_writes_nothing,
    a_key_commits_with_its_ticket_or_not_at_all,
    keyed_creates_racing_across_replicas_make_one_ticket,
    idempotency_keys_are_pruned_by_age,
    search_finds_every_text_field_and_notes,
    search_pages_like_list,
    search_follows_replication_text_changes_and_early_notes,
    a_pinned_tickets_text_is_indexed_only_inside_its_residency,
);

#[cfg(test)]
mod cases {
    use std::{collections::BTreeSet, time::Duration};

    use meridian_core::{Epoch, EventKind, Priority, Status, TicketChanges, Tier};
    use meridian_store::{Backend, CreateOutcome, Error, TicketFilter};
    use tokio::sync::broadcast::error::TryRecvError;

    use crate::{fixtures::*, harness::Ctx};

    pub use crate::search_cases::*;

    pub async fn create_then_get(ctx: Ctx) {
        let store = &ctx.store;
        assert_eq!(store.local_region(), &us());
        let ticket = ticket(&us());
        let event = store
            .create_ticket(ticket.clone(), meta(HLC0))
            .await
            .unwrap();
        assert_eq!(event.origin_region, us());
        assert_eq!(event.origin_seq, 1);
        assert_eq!(event.ticket_id, ticket.id);
        assert_eq!(event.epoch, ticket.owner.epoch);
        assert_eq!(event.hlc_time, meta(HLC0).hlc_time);
        assert_eq!(event.traceparent, meta(HLC0).traceparent);
        assert_eq!(
            event.kind,
            EventKind::TicketCreated {
                ticket: Box::new(ticket.clone())
            }
        );

        let record = store
            .get_ticket(ticket.id)
            .await
            .unwrap()
            .expect("created ticket is readable");
        assert_eq!(record.ticket, ticket, "every field round-trips");
        assert!(record.notes.is_empty() && record.conflicts.is_empty());
        assert_eq!(
            store.events_for_ticket(ticket.id).await.unwrap(),
            vec![event]
        );
        assert_eq!(store.local_head().await.unwrap(), 1);

        // The optional fields round-trip as absent too.
        let mut bare = crate::fixtures::ticket(&us());
        bare.assignee = None;
        bare.sla = Default::default();
        bare.skills.clear();
        bare.residency.clear();
        bare.body.clear();
        store
            .create_ticket(bare.clone(), meta(HLC0 + 1))
            .await
            .unwrap();
        assert_eq!(
            store.get_ticket(bare.id).await.unwrap().unwrap().ticket,
            bare
        );

        assert_eq!(store.get_ticket(ticket_id()).await.unwrap(), None);
    }

    pub async fn create_keeps_milliseconds_consistently(ctx: Ctx) {
        let store = &ctx.store;
        let mut ticket = ticket(&us());
        ticket.created_at = jiff::Timestamp::new(1_750_000_000, 123_456_789).unwrap();
        ticket.updated_at = ticket.created_at;
        let event = store
            .create_ticket(ticket.clone(), meta(HLC0))
            .await
            .unwrap();
        let stored = store.get_ticket(ticket.id).await.unwrap().unwrap().ticket;
        assert_eq!(stored.created_at, ms(1_750_000_000_123));
        let EventKind::TicketCreated { ticket: in_event } = &event.kind else {
            panic!("{event:?}")
        };
        assert_eq!(**in_event, stored, "the event and the projection agree");
        assert_eq!(
            store.events_for_ticket(ticket.id).await.unwrap(),
            vec![event]
        );
    }

    pub async fn duplicate_create_writes_nothing(ctx: Ctx) {
        let store = &ctx.store;
        let ticket = ticket(&us());
        store
            .create_ticket(ticket.clone(), meta(HLC0))
            .await
            .unwrap();
        let mut again = ticket.clone();
        again.subject = "Something else".into();
        let err = store
            .create_ticket(again, meta(HLC0 + 1))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Duplicate(what) if what == &format!("ticket {}", ticket.id)),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!("ticket {} already exists", ticket.id)
        );
        assert_eq!(
            store.get_ticket(ticket.id).await.unwrap().unwrap().ticket,
            ticket
        );
        assert_eq!(event_count(store).await, 1);
        assert_eq!(store.local_head().await.unwrap(), 1);
        // The sequence number was not consumed.
        let next = store
            .create_ticket(crate::fixtures::ticket(&us()), meta(HLC0 + 2))
            .await
            .unwrap();
        assert_eq!(next.origin_seq, 2);
    }

    pub async fn create_for_another_owner_is_fenced(ctx: Ctx) {
        let store = &ctx.store;
        let foreign = ticket(&eu());
        let err = store
            .create_ticket(foreign.clone(), meta(HLC0))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Fenced { owner, epoch } if owner == &eu() && *epoch == foreign.owner.epoch),
            "{err}"
        );
        assert_eq!(store.get_ticket(foreign.id).await.unwrap(), None);
        assert_eq!(event_count(store).await, 0);
        assert_eq!(store.local_head().await.unwrap(), 0);
    }

    pub async fn list_filters_each_field(ctx: Ctx) {
        let store = &ctx.store;
        let gold = Tier::new("gold").unwrap();
        let mut made = Vec::new();
        for (status, tier, assignee) in [
            (Status::New, "standard", None),
            (Status::Open, "gold", Some("ana")),
            (Status::Open, "standard", Some("bo")),
            (Status::Pending, "gold", Some("ana")),
        ] {
            let mut t = ticket(&us());
            t.status = status;
            t.tier = Tier::new(tier).unwrap();
            t.assignee = assignee.map(str::to_owned);
            store.create_ticket(t.clone(), meta(HLC0)).await.unwrap();
            made.push(t);
        }
        // A ticket owned elsewhere arrives by replication.
        let mut eu_log = Origin::new(eu());
        let mut remote = ticket(&eu());
        remote.assignee = Some("ana".into());
        let created = eu_log.event(
            remote.id,
            remote.owner.epoch,
            EventKind::TicketCreated {
                ticket: Box::new(remote.clone()),
            },
        );
        store.apply_remote(&eu(), vec![created]).await.unwrap();
        made.push(remote);
        let [t1, t2, t3, t4, t5] = made.try_into().unwrap();

        let ids = |page: meridian_store::TicketPage| {
            assert_eq!(page.next_after, None);
            page.tickets.into_iter().map(|t| t.id).collect::<Vec<_>>()
        };
        let all = store.list_tickets(&TicketFilter::default()).await.unwrap();
        assert_eq!(
            all.tickets,
            vec![t1.clone(), t2.clone(), t3.clone(), t4.clone(), t5.clone()]
        );
        let filter = |f: TicketFilter| async move { ids(store.list_tickets(&f).await.unwrap()) };
        assert_eq!(
            filter(TicketFilter {
                status: Some(Status::Open),
                ..Default::default()
            })
            .await,
            vec![t2.id, t3.id, t5.id]
        );
        assert_eq!(
            filter(TicketFilter {
                status: Some(Status::Closed),
                ..Default::default()
            })
            .await,
            vec![]
        );
        assert_eq!(
            filter(TicketFilter {
                owner_region: Some(eu()),
                ..Default::default()
            })
            .await,
            vec![t5.id]
        );
        assert_eq!(
            filter(TicketFilter {
                owner_region: Some(us()),
                ..Default::default()
            })
            .await,
            vec![t1.id, t2.id, t3.id, t4.id]
        );
        assert_eq!(
            filter(TicketFilter {
                assignee: Some("ana".into()),
                ..Default::default()
            })
            .await,
            vec![t2.id, t4.id, t5.id]
        );
        assert_eq!(
            filter(TicketFilter {
                tier: Some(gold),
                ..Default::default()
            })
            .await,
            vec![t2.id, t4.id]
        );
        assert_eq!(
            filter(TicketFilter {
                status: Some(Status::Open),
                assignee: Some("ana".into()),
                ..Default::default()
            })
            .await,
            vec![t2.id, t5.id]
        );
    }

    pub async fn list_pages_without_duplicates_or_gaps(ctx: Ctx) {
        let store = &ctx.store;
        let mut expected = Vec::new();
        for i in 0..23 {
            let mut t = ticket(&us());
            t.status = if i % 3 == 0 {
                Status::Pending
            } else {
                Status::Open
            };
            store
                .create_ticket(t.clone(), meta(HLC0 + i))
                .await
                .unwrap();
            expected.push(t);
        }
        let expected_ids: Vec<_> = expected.iter().map(|t| t.id).collect();

        let walk = |status: Option<Status>, limit: u32| async move {
            let mut seen = Vec::new();
            let mut pages = Vec::new();
            let mut after = None;
            loop {
                let page = store
                    .list_tickets(&TicketFilter {
                        status,
                        after,
                        limit,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                pages.push(page.tickets.len());
                seen.extend(page.tickets.iter().map(|t| t.id));
                match page.next_after {
                    Some(next) => {
                        assert_eq!(Some(next), page.tickets.last().map(|t| t.id));
                        after = Some(next);
                    }
                    None => break,
                }
                assert!(pages.len() < 100, "pagination does not end");
            }
            (seen, pages)
        };
        let (seen, pages) = walk(None, 5).await;
        assert_eq!(seen, expected_ids);
        assert_eq!(pages, vec![5, 5, 5, 5, 3]);
        // When the last page is exactly full, no empty page follows.
        let (seen, pages) = walk(None, 23).await;
        assert_eq!(seen, expected_ids);
        assert_eq!(pages, vec![23]);
        let pending: Vec<_> = expected
            .iter()
            .filter(|t| t.status == Status::Pending)
            .map(|t| t.id)
            .collect();
        let (seen, pages) = walk(Some(Status::Pending), 2).await;
        assert_eq!(seen, pending);
        assert_eq!(pages, vec![2, 2, 2, 2]);
        // Limits are clamped to 1..=500.
        let (seen, pages) = walk(None, 0).await;
        assert_eq!(seen, expected_ids);
        assert_eq!(pages.len(), 23);
        let (seen, _) = walk(None, u32::MAX).await;
        assert_eq!(seen, expected_ids);
    }

    pub async fn update_applies_and_writes_one_event(ctx: Ctx) {
        let store = &ctx.store;
        let ticket = ticket(&us());
        store
            .create_ticket(ticket.clone(), meta(HLC0))
            .await
            .unwrap();
        let changes = TicketChanges {
            epoch: ticket.owner.epoch,
            status: Some(Status::Escalated),
            assignee: Some(Some("bo".into())),
            priority: Some(Priority::Urgent),
            sla: None,
        };
        let (updated, event) = store
            .update_ticket(ticket.id, changes.clone(), meta(HLC0 + 500))
            .await
            .unwrap();
        assert_eq!(updated.status, Status::Escalated);
        assert_eq!(updated.assignee.as_deref(), Some("bo"));
        assert_eq!(updated.priority, Priority::Urgent);
        assert_eq!(updated.updated_at, ms(HLC0 as i64 + 500));
        let mut expected = ticket.clone();
        expected.apply(&changes, ms(HLC0 as i64 + 500));
        assert_eq!(
            updated, expected,
            "the store applies changes as the core does"
        );
        assert_eq!(
            store.get_ticket(ticket.id).await.unwrap().unwrap().ticket,
            updated
        );
        assert_eq!(event.origin_seq, 2);
        assert_eq!(event.epoch, ticket.owner.epoch);
        assert_eq!(event.kind, EventKind::TicketUpdated { changes });
        assert_eq!(store.events_for_ticket(ticket.id).await.unwrap().len(), 2);
        assert_eq!(event_count(store).await, 2);

        // Clearing the assignee is a change of its own; unnamed fields stay.
        let clear = TicketChanges {
            epoch: ticket.owner.epoch,
            assignee: Some(None),
            ..Default::default()
        };
        let (cleared, _) = store
            .update_ticket(ticket.id, clear, meta(HLC0 + 600))
            .await
            .unwrap();
        assert_eq!(cleared.assignee, None);
        assert_eq!(cleared.status, Status::Escalated);
        assert_eq!(cleared.priority, Priority::Urgent);
        // updated_at never goes backwards, even for an older HLC.
        let (older, _) = store
            .update_ticket(
                ticket.id,
                status_change(ticket.owner.epoch, Status::Open),
                meta(HLC0 + 1),
            )
            .await
            .unwrap();
        assert_eq!(older.updated_at, ms(HLC0 as i64 + 600));
        assert_eq!(event_count(store).await, 4);
        assert_eq!(store.local_head().await.unwrap(), 4);
    }

    pub async fn fenced_update_writes_nothing(ctx: Ctx) {
        let store = &ctx.store;
        let ticket = ticket(&us());
        store
            .create_ticket(ticket.clone(), meta(HLC0))
            .await
            .unwrap();
        let stale = Epoch::from_raw(ticket.owner.epoch.raw() + 1024);
        let err = store
            .update_ticket(
                ticket.id,
                status_change(stale, Status::Pending),
                meta(HLC0 + 1),
            )
            .await
            .unwrap_err();
        match &err {
            Error::Fenced { owner, epoch } => {
                assert_eq!(owner, &us());
                assert_eq!(*epoch, ticket.owner.epoch);
            }
            other => panic!("expected Fenced, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            format!("ticket is owned by us-east at epoch {}", ticket.owner.epoch)
        );
        assert!(!err.is_retryable());

        let missing = ticket_id();
        let err = store
            .update_ticket(
                missing,
                status_change(ticket.owner.epoch, Status::Pending),
                meta(HLC0 + 2),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::TicketNotFound(id) if id == missing),
            "{err}"
        );

        assert_eq!(
            store.get_ticket(ticket.id).await.unwrap().unwrap().ticket,
            ticket
        );
        assert_eq!(event_count(store).await, 1);
        assert_eq!(store.local_head().await.unwrap(), 1);
    }

    pub async fn illegal_updates_write_nothing(ctx: Ctx) {
        let store = &ctx.store;
        let mut ticket = ticket(&us());
        ticket.status = Status::Closed;
        store
            .create_ticket(ticket.clone(), meta(HLC0))
            .await
            .unwrap();
        let epoch = ticket.owner.epoch;

        let err = store
            .update_ticket(
                ticket.id,
                status_change(epoch, Status::Open),
                meta(HLC0 + 1),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid(meridian_core::Error::IllegalTransition {
                    from: Status::Closed,
                    to: Status::Open
                })
            ),
            "{err}"
        );
        let err = store
            .update_ticket(
                ticket.id,
                TicketChanges {
                    epoch,
                    ..Default::default()
                },
                meta(HLC0 + 2),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        assert!(err.to_string().starts_with("changes: "), "{err}");
        let bad_assignee = TicketChanges {
            epoch,
            assignee: Some(Some("two\nlines".into())),
            ..Default::default()
        };
        let err = store
            .update_ticket(ticket.id, bad_assignee, meta(HLC0 + 3))
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("assignee: "), "{err}");

        // A ticket another region owns cannot be changed here, even at its
        // current epoch.
        let mut eu_log = Origin::new(eu());
        let (foreign, created) = eu_log.create();
        store.apply_remote(&eu(), vec![created]).await.unwrap();
        let err = store
            .update_ticket(
                foreign.id,
                status_change(foreign.owner.epoch, Status::Pending),
                meta(HLC0 + 4),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Fenced { owner, epoch } if owner == &eu() && *epoch == foreign.owner.epoch),
            "{err}"
        );

        assert_eq!(
            store.get_ticket(ticket.id).await.unwrap().unwrap().ticket,
            ticket
        );
        assert_eq!(
            store.get_ticket(foreign.id).await.unwrap().unwrap().ticket,
            foreign
        );
        assert_eq!(event_count(store).await, 2);
        assert_eq!(store.local_head().await.unwrap(), 1);
    }

    pub async fn notes_append_and_are_idempotent_by_id(ctx: Ctx) {
        let store = &ctx.store;
        let ticket = ticket(&us());
        store
            .create_ticket(ticket.clone(), meta(HLC0))
            .await
            .unwrap();
        let later = note(ticket.id, &us(), "second, by time", BASE_MS + 9_000);
        let mut auto = note(ticket.id, &us(), "first, by time", BASE_MS + 2_000);
        auto.auto = true;
        let event = store.add_note(later.clone(), meta(HLC0 + 1)).await.unwrap();
        assert_eq!(
            event.kind,
            EventKind::NoteAdded {
                note: later.clone()
            }
        );
        assert_eq!(
            event.epoch, ticket.owner.epoch,
            "a note carries the ticket's current epoch"
        );
        assert_eq!(event.origin_seq, 2);
        store.add_note(auto.clone(), meta(HLC0 + 2)).await.unwrap();

        let mut twice = later.clone();
        twice.body = "same id, other body".into();
        let err = store.add_note(twice, meta(HLC0 + 3)).await.unwrap_err();
        assert!(
            matches!(&err, Error::Duplicate(what) if what == &format!("note {}", later.id)),
            "{err}"
        );
        let orphan = note(ticket_id(), &us(), "nobody home", BASE_MS);
        let err = store
            .add_note(orphan.clone(), meta(HLC0 + 4))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::TicketNotFound(id) if id == orphan.ticket_id),
            "{err}"
        );
        let empty = note(ticket.id, &us(), "  ", BASE_MS);
        let err = store.add_note(empty, meta(HLC0 + 5)).await.unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");

        let record = store.get_ticket(ticket.id).await.unwrap().unwrap();
        assert_eq!(record.notes, vec![auto, later]);
        assert_eq!(event_count(store).await, 3);
        assert_eq!(store.local_head().await.unwrap(), 3);
    }

    pub async fn concurrent_creates_get_a_dense_sequence(ctx: Ctx) {
        let store = &ctx.store;
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let ticket = ticket(&us());
                let event = store
                    .create_ticket(ticket.clone(), meta(HLC0 + i))
                    .await
                    .unwrap();
                (ticket, event)
            }));
        }
        let mut seqs = Vec::new();
        let mut acked = Vec::new();
        for task in tasks {
            let (ticket, event) = task.await.unwrap();
            seqs.push(event.origin_seq);
            acked.push(ticket);
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<u64>>(), "dense and unique");
        for ticket in &acked {
            assert_eq!(
                store.get_ticket(ticket.id).await.unwrap().unwrap().ticket,
                *ticket
            );
        }
        assert_eq!(store.local_head().await.unwrap(), 200);
        let log: Vec<u64> = store
            .events_after(&us(), 0, 1_000)
            .await
            .unwrap()
            .iter()
            .map(|e| e.origin_seq)
            .collect();
        assert_eq!(log, (1..=200).collect::<Vec<u64>>());
    }

    pub async fn two_stores_share_one_dense_sequence(ctx: Ctx) {
        // Two gateway replicas of one region on one database.
        let other = ctx.open_another().await;
        let mut tasks = Vec::new();
        for i in 0..60u64 {
            let store = if i % 2 == 0 {
                ctx.store.clone()
            } else {
                other.clone()
            };
            tasks.push(tokio::spawn(async move {
                store
                    .create_ticket(ticket(&us()), meta(HLC0 + i))
                    .await
                    .unwrap()
                    .origin_seq
            }));
        }
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.push(task.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=60).collect::<Vec<u64>>());
        assert_eq!(ctx.store.local_head().await.unwrap(), 60);
        assert_eq!(other.local_head().await.unwrap(), 60);
    }

    pub async fn a_superseded_writer_cannot_commit(ctx: Ctx) {
        // The former active replica, then its successor on the same database.
        let former = ctx.open_fenced().await;
        let held = former.writer_generation().unwrap();
        let first = former
            .create_ticket(ticket(&us()), meta(HLC0))
            .await
            .unwrap();
        assert_eq!(first.origin_seq, 1);
        let successor = ctx.open_fenced().await;
        assert_eq!(successor.writer_generation(), Some(held + 1));

        // A batch of the former writer commits nothing, and says why.
        let mut tasks = Vec::new();
        for i in 0..8u64 {
            let former = former.clone();
            tasks.push(tokio::spawn(async move {
                former
                    .create_ticket(ticket(&us()), meta(HLC0 + 1 + i))
                    .await
            }));
        }
        for task in tasks {
            let err = task.await.unwrap().unwrap_err();
            assert!(
                matches!(&err, Error::Superseded { held: h, current, .. } if *h == held && *current == held + 1),
                "{err}"
            );
            assert!(
                err.to_string()
                    .contains("another replica became the active writer of region us-east"),
                "{err}"
            );
        }
        let noticed = tokio::time::timeout(Duration::from_secs(5), former.superseded())
            .await
            .unwrap();
        assert!(matches!(noticed, Error::Superseded { .. }), "{noticed}");
        // Notes are fenced too.
        let late = former
            .add_note(note(first.ticket_id, &us(), "late", 0), meta(HLC0 + 20))
            .await
            .unwrap_err();
        assert!(matches!(late, Error::Superseded { .. }), "{late}");

        // The successor continues the one dense log from the database.
        let next = successor
            .create_ticket(ticket(&us()), meta(HLC0 + 30))
            .await
            .unwrap();
        assert_eq!(next.origin_seq, 2);
        let log: Vec<u64> = successor
            .events_after(&us(), 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.origin_seq)
            .collect();
        assert_eq!(log, vec![1, 2]);
        // An unfenced store (tools, the shared-sequence mode above) is not
        // affected by generations.
        ctx.store
            .create_ticket(ticket(&us()), meta(HLC0 + 40))
            .await
            .unwrap();
        assert_eq!(successor.local_head().await.unwrap(), 3);
    }

    pub async fn region_lock_admits_one_holder(ctx: Ctx) {
        use meridian_store::RegionLock;
        let first = RegionLock::try_acquire(&ctx.config, &us())
            .await
            .unwrap()
            .expect("the lock is free");
        assert!(
            RegionLock::try_acquire(&ctx.config, &us())
                .await
                .unwrap()
                .is_none(),
            "a second holder"
        );
        // On PostgreSQL another region on the same database has a lock of
        // its own; a SQLite file is one region's, and its lock file too.
        let other_region = RegionLock::try_acquire(&ctx.config, &eu()).await.unwrap();
        assert_eq!(other_region.is_some(), ctx.backend() == Backend::Postgres);
        first.release();
        // The server releases a session's lock once it sees the session end.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if RegionLock::try_acquire(&ctx.config, &us())
                .await
                .unwrap()
                .is_some()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the released lock was not free within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn events_after_pages_in_order(ctx: Ctx) {
        let store = &ctx.store;
        for i in 0..25 {
            store
                .create_ticket(ticket(&us()), meta(HLC0 + i))
                .await
                .unwrap();
        }
        let mut after = 0;
        let mut pages = Vec::new();
        let mut seqs = Vec::new();
        loop {
            let page = store.events_after(&us(), after, 10).await.unwrap();
            if page.is_empty() {
                break;
            }
            pages.push(page.len());
            seqs.extend(page.iter().map(|e| e.origin_seq));
            after = page.last().unwrap().origin_seq;
        }
        assert_eq!(pages, vec![10, 10, 5]);
        assert_eq!(seqs, (1..=25).collect::<Vec<u64>>());
        assert!(store.events_after(&us(), 25, 10).await.unwrap().is_empty());
        assert!(store.events_after(&us(), 3, 0).await.unwrap().is_empty());
        assert!(store.events_after(&eu(), 0, 10).await.unwrap().is_empty());
        let from_20: Vec<u64> = store
            .events_after(&us(), 20, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.origin_seq)
            .collect();
        assert_eq!(from_20, vec![21, 22, 23, 24, 25]);
    }

    pub async fn events_for_ticket_orders_by_hlc_then_origin(ctx: Ctx) {
        let store = &ctx.store;
        let ticket = ticket(&us());
        let created = store
            .create_ticket(ticket.clone(), meta(HLC0 + 100))
            .await
            .unwrap();
        let (_, updated) = store
            .update_ticket(
                ticket.id,
                status_change(ticket.owner.epoch, Status::Pending),
                meta(HLC0 + 300),
            )
            .await
            .unwrap();
        let mut eu_log = Origin::new(eu());
        let mut apac_log = Origin::new(apac());
        let mut eu_note = eu_log.note(ticket.id, ticket.owner.epoch);
        eu_note.hlc_time = meridian_core::HlcTimestamp::new(HLC0 + 200, 0);
        let mut apac_note = apac_log.note(ticket.id, ticket.owner.epoch);
        apac_note.hlc_time = eu_note.hlc_time;
        store
            .apply_remote(&eu(), vec![eu_note.clone()])
            .await
            .unwrap();
        store
            .apply_remote(&apac(), vec![apac_note.clone()])
            .await
            .unwrap();
        assert_eq!(
            store.events_for_ticket(ticket.id).await.unwrap(),
            vec![created, apac_note, eu_note, updated]
        );
        assert_eq!(
            store
                .get_ticket(ticket.id)
                .await
                .unwrap()
                .unwrap()
                .notes
                .len(),
            2
        );
    }

    pub async fn apply_remote_is_idempotent(ctx: Ctx) {
        let store = &ctx.store;
        let mut eu_log = Origin::new(eu());
        let (ticket, created) = eu_log.create();
        let note = eu_log.note(ticket.id, ticket.owner.epoch);
        let update = eu_log.update(
            ticket.id,
            status_change(ticket.owner.epoch, Status::Pending),
        );
        let note2 = eu_log.note(ticket.id, ticket.owner.epoch);
        let update2 = eu_log.update(
            ticket.id,
            TicketChanges {
                epoch: ticket.owner.epoch,
                assignee: Some(Some("chen".into())),
                ..Default::default()
            },
        );
        let log = vec![created, note, update, note2, update2];

        assert_eq!(store.cursor(&eu()).await.unwrap(), 0);
        assert_eq!(
            store.apply_remote(&eu(), log[..3].to_vec()).await.unwrap(),
            3
        );
        assert_eq!(store.cursor(&eu()).await.unwrap(), 3);
        let after_three = store.get_ticket(ticket.id).await.unwrap().unwrap();
        assert_eq!(after_three.ticket.status, Status::Pending);
        assert_eq!(after_three.notes.len(), 1);

        // Overlapping and repeated deliveries change nothing twice.
        assert_eq!(store.apply_remote(&eu(), log.clone()).await.unwrap(), 5);
        let once = store.get_ticket(ticket.id).await.unwrap().unwrap();
        assert_eq!(store.apply_remote(&eu(), log.clone()).await.unwrap(), 5);
        let mut doubled = log.clone();
        doubled.extend(log.clone());
        doubled.reverse();
        assert_eq!(store.apply_remote(&eu(), doubled).await.unwrap(), 5);
        assert_eq!(store.apply_remote(&eu(), Vec::new()).await.unwrap(), 5);
        assert_eq!(store.get_ticket(ticket.id).await.unwrap().unwrap(), once);
        assert_eq!(once.ticket.assignee.as_deref(), Some("chen"));
        assert_eq!(once.notes.len(), 2);
        assert!(once.conflicts.is_empty());
        assert_eq!(
            store.events_after(&eu(), 0, 100).await.unwrap(),
            log,
            "the peer's log is kept verbatim"
        );
        assert_eq!(event_count(store).await, 5);
        assert_eq!(
            store.local_head().await.unwrap(),
            0,
            "applying never consumes local sequence numbers"
        );
    }

    pub async fn apply_remote_refuses_gaps(ctx: Ctx) {
        let store = &ctx.store;
        let mut eu_log = Origin::new(eu());
        let (ticket, created) = eu_log.create();
        let log: Vec<_> = std::iter::once(created)
            .chain((0..5).map(|_| eu_log.note(ticket.id, ticket.owner.epoch)))
            .collect();

        let err = store
            .apply_remote(&eu(), log[1..3].to_vec())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Gap { origin, expected: 1, got: 2 } if origin == &eu()),
            "{err}"
        );
        assert_eq!(store.cursor(&eu()).await.unwrap(), 0);
        assert_eq!(event_count(store).await, 0);
        assert_eq!(store.get_ticket(ticket.id).await.unwrap(), None);

        assert_eq!(
            store.apply_remote(&eu(), log[..3].to_vec()).await.unwrap(),
            3
        );
        // A hole in the middle refuses the whole batch, even its good prefix.
        let err = store
            .apply_remote(&eu(), vec![log[3].clone(), log[5].clone()])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Gap {
                    expected: 5,
                    got: 6,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(store.cursor(&eu()).await.unwrap(), 3);
        assert_eq!(event_count(store).await, 3);
        assert_eq!(
            store
                .get_ticket(ticket.id)
                .await
                .unwrap()
                .unwrap()
                .notes
                .len(),
            2
        );
        // The resend fills it.
        assert_eq!(
            store.apply_remote(&eu(), log[3..].to_vec()).await.unwrap(),
            6
        );
        assert_eq!(
            store
                .get_ticket(ticket.id)
                .await
                .unwrap()
                .unwrap()
                .notes
                .len(),
            5
        );
    }

    pub async fn apply_remote_refuses_foreign_events(ctx: Ctx) {
        let store = &ctx.store;
        let mut eu_log = Origin::new(eu());
        let mut apac_log = Origin::new(apac());
        let (_, eu_created) = eu_log.create();
        let (_, apac_created) = apac_log.create();
        let err = store
            .apply_remote(&eu(), vec![eu_created.clone(), apac_created])
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("origin_region: "), "{err}");
        let mut mislabelled = eu_created.clone();
        mislabelled.ticket_id = ticket_id();
        let err = store
            .apply_remote(&eu(), vec![mislabelled])
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("ticket_id: "), "{err}");
        let mut own = Origin::new(us());
        let (_, own_created) = own.create();
        let err = store
            .apply_remote(&us(), vec![own_created])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        assert_eq!(event_count(store).await, 0);
        assert_eq!(store.cursor(&eu()).await.unwrap(), 0);
        assert_eq!(store.local_head().await.unwrap(), 0);
    }

    /// Residency: this store (us-east) keeps redacted copies of tickets
    /// pinned elsewhere, projected without their text, and refuses a
    /// redacted copy of a ticket it is in the residency of.
    pub async fn redacted_copies_are_kept_outside_the_residency_and_refused_inside(mut ctx: Ctx) {
        use meridian_core::{EventEnvelope, RegionId, residency::redact_event};
        assert!(
            !ctx.store.may_hold_pinned(),
            "a new store holds no pinned ticket"
        );
        let store = &ctx.store;
        let mut eu_log = Origin::new(eu());
        let pin = |event: EventEnvelope, set: &[RegionId]| {
            let mut event = event;
            if let EventKind::TicketCreated { ticket } = &mut event.kind {
                ticket.residency = set.iter().cloned().collect();
            }
            event
        };
        let (elsewhere, created) = eu_log.create();
        let created = redact_event(&pin(created, &[eu()]));
        let note = redact_event(&eu_log.note(elsewhere.id, elsewhere.owner.epoch));
        let (here, here_created) = eu_log.create();
        let here_created = pin(here_created, &[us(), eu()]);
        assert_eq!(
            store
                .apply_remote(&eu(), vec![created, note, here_created.clone()])
                .await
                .unwrap(),
            3
        );
        let copy = store.get_ticket(elsewhere.id).await.unwrap().unwrap();
        assert_eq!(
            (
                copy.ticket.subject.as_str(),
                copy.ticket.body.as_str(),
                copy.ticket.customer.as_str()
            ),
            ("", "", "")
        );
        assert_eq!(
            (copy.ticket.owner.clone(), copy.ticket.tier.clone()),
            (elsewhere.owner.clone(), elsewhere.tier.clone())
        );
        assert_eq!((copy.notes.len(), copy.notes[0].body.as_str()), (1, ""));

        let redacted_note = redact_event(&eu_log.note(here.id, here.owner.epoch));
        let err = store
            .apply_remote(&eu(), vec![redacted_note])
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("is a redacted copy, but us-east is in ticket"),
            "{err}"
        );
        let mut apac_log = Origin::new(apac());
        let (_, pinned_here) = apac_log.create();
        let err = store
            .apply_remote(&apac(), vec![redact_event(&pin(pinned_here, &[us()]))])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("is a redacted copy"), "{err}");
        assert_eq!(store.cursor(&eu()).await.unwrap(), 3);
        assert_eq!(store.cursor(&apac()).await.unwrap(), 0);
        assert_eq!(
            store
                .get_ticket(here.id)
                .await
                .unwrap()
                .unwrap()
                .ticket
                .subject,
            here.subject
        );
        assert_eq!(
            store
                .residencies(&[elsewhere.id, here.id, ticket_id()])
                .await
                .unwrap(),
            [
                (elsewhere.id, [eu()].into()),
                (here.id, [us(), eu()].into())
            ]
            .into()
        );
        assert!(store.may_hold_pinned());
        ctx.reopen().await;
        assert!(ctx.store.may_hold_pinned(), "read again at open");
    }

    pub async fn stale_epoch_update_becomes_a_conflict(ctx: Ctx) {
        let store = &ctx.store;
        // The ticket is us-east's at a later round (it came back to us-east
        // after others owned it).
        let mut ticket = ticket(&us());
        let us_epoch = Epoch::from_raw(2 * meridian_core::EPOCH_STRIDE);
        ticket.owner.epoch = us_epoch;
        store
            .create_ticket(ticket.clone(), meta(HLC0))
            .await
            .unwrap();

        // apac-south still writes at the epoch it owned before: stale.
        let mut apac_log = Origin::new(apac());
        let stale_changes = TicketChanges {
            epoch: Epoch::from_raw(meridian_core::EPOCH_STRIDE + 2),
            status: Some(Status::Solved),
            ..Default::default()
        };
        let stale = apac_log.update(ticket.id, stale_changes.clone());
        // eu-west writes at an epoch this store has not seen become current:
        // not applied either, and kept just the same.
        let mut eu_log = Origin::new(eu());
        let ahead_changes =
            status_change(us_epoch.next_for(region_index(&eu())), Status::Escalated);
        let ahead = eu_log.update(ticket.id, ahead_changes.clone());
        let before = event_count(store).await;
        assert_eq!(
            store
                .apply_remote(&apac(), vec![stale.clone()])
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .apply_remote(&eu(), vec![ahead.clone()])
                .await
                .unwrap(),
            1
        );

        let record = store.get_ticket(ticket.id).await.unwrap().unwrap();
        assert_eq!(record.ticket, ticket, "the projection is untouched");
        assert_eq!(record.conflicts.len(), 2);
        let conflict = &record.conflicts[0];
        assert_eq!(conflict.origin_region, apac());
        assert_eq!(conflict.origin_seq, stale.origin_seq);
        assert_eq!(conflict.stale_epoch, stale_changes.epoch);
        assert_eq!(conflict.current_epoch, us_epoch);
        assert_eq!(conflict.changes, stale_changes);
        assert_eq!(record.conflicts[1].origin_region, eu());
        assert_eq!(record.conflicts[1].changes, ahead_changes);
        // The events themselves are in the log: nothing is dropped.
        assert_eq!(event_count(store).await, before + 2);
        assert_eq!(store.cursor(&apac()).await.unwrap(), 1);

        // The same events again record no second conflict.
        store.apply_remote(&apac(), vec![stale]).await.unwrap();
        assert_eq!(
            store
                .get_ticket(ticket.id)
                .await
                .unwrap()
                .unwrap()
                .conflicts
                .len(),
            2
        );
    }

    pub async fn update_arriving_before_its_ticket_is_applied_later(ctx: Ctx) {
        let store = &ctx.store;
        // Logs of different origins are not ordered with each other: another
        // origin's update (and note) of a ticket may arrive before the
        // ticket's creation does.
        let mut eu_log = Origin::new(eu());
        let (ticket, created) = eu_log.create();
        let offer = eu_log.event(
            ticket.id,
            ticket.owner.epoch,
            EventKind::HandoffOffered {
                to: apac(),
                handoff: handoff_note("bo"),
                note: offer_note(ticket.id, &eu(), &apac()),
            },
        );
        let mut apac_log = Origin::new(apac());
        apac_log.hlc = eu_log.hlc + 100;
        let apac_epoch = ticket.owner.epoch.next_for(region_index(&apac()));
        let accepted = apac_log.event(
            ticket.id,
            apac_epoch,
            EventKind::HandoffAccepted {
                from: eu(),
                offer_seq: offer.origin_seq,
                previous_epoch: ticket.owner.epoch,
            },
        );
        let ok = apac_log.update(ticket.id, status_change(apac_epoch, Status::Pending));
        // apac-south never held eu-west's epoch: a write at it is stale.
        let stale = apac_log.update(ticket.id, status_change(ticket.owner.epoch, Status::Solved));
        let note = apac_log.note(ticket.id, apac_epoch);

        assert_eq!(
            store
                .apply_remote(&apac(), vec![accepted, ok.clone(), stale.clone(), note])
                .await
                .unwrap(),
            4
        );
        assert_eq!(store.get_ticket(ticket.id).await.unwrap(), None);
        store
            .apply_remote(&eu(), vec![created, offer])
            .await
            .unwrap();

        let record = store.get_ticket(ticket.id).await.unwrap().unwrap();
        assert_eq!(
            record.ticket.status,
            Status::Pending,
            "the waiting update was applied"
        );
        assert_eq!(
            (
                record.ticket.owner.owner_region.clone(),
                record.ticket.handoff_to.clone()
            ),
            (apac(), None)
        );
        assert_eq!(
            record.ticket.updated_at,
            ms(ok.hlc_time.millis() as i64),
            "the stale write does not touch it"
        );
        assert_eq!(
            record.notes.len(),
            2,
            "the early note and the offer's note are shown"
        );
        assert_eq!(
            record.conflicts.len(),
            1,
            "the waiting stale update became a conflict"
        );
        assert_eq!(record.conflicts[0].origin_seq, stale.origin_seq);
    }

    pub async fn cursor_advances_with_events_across_restarts(mut ctx: Ctx) {
        let mut eu_log = Origin::new(eu());
        let (ticket, created) = eu_log.create();
        let mut log = vec![created];
        for i in 0..9 {
            log.push(if i % 2 == 0 {
                eu_log.note(ticket.id, ticket.owner.epoch)
            } else {
                eu_log.update(
                    ticket.id,
                    status_change(
                        ticket.owner.epoch,
                        if i % 4 == 1 {
                            Status::Pending
                        } else {
                            Status::Open
                        },
                    ),
                )
            });
        }
        for chunk in log[..7].chunks(3) {
            ctx.store.apply_remote(&eu(), chunk.to_vec()).await.unwrap();
        }
        assert!(
            ctx.store
                .apply_remote(&eu(), log[8..].to_vec())
                .await
                .is_err()
        );
        let before = ctx.store.get_ticket(ticket.id).await.unwrap();

        ctx.reopen().await;
        let store = &ctx.store;
        assert_eq!(store.cursor(&eu()).await.unwrap(), 7);
        let stored = store.events_after(&eu(), 0, 100).await.unwrap();
        assert_eq!(
            stored,
            log[..7].to_vec(),
            "exactly the events the cursor covers"
        );
        assert_eq!(store.get_ticket(ticket.id).await.unwrap(), before);

        assert_eq!(store.apply_remote(&eu(), log.clone()).await.unwrap(), 10);
        ctx.reopen().await;
        assert_eq!(ctx.store.cursor(&eu()).await.unwrap(), 10);
        assert_eq!(ctx.store.events_after(&eu(), 0, 100).await.unwrap(), log);
    }

    pub async fn subscribe_sees_committed_events(ctx: Ctx) {
        let store = &ctx.store;
        let mut events = store.subscribe();
        let ticket = ticket(&us());
        let created = store
            .create_ticket(ticket.clone(), meta(HLC0))
            .await
            .unwrap();
        let (_, updated) = store
            .update_ticket(
                ticket.id,
                status_change(ticket.owner.epoch, Status::Pending),
                meta(HLC0 + 1),
            )
            .await
            .unwrap();
        // Refusals publish nothing.
        store
            .update_ticket(
                ticket.id,
                status_change(Epoch::from_raw(5), Status::Open),
                meta(HLC0 + 2),
            )
            .await
            .unwrap_err();
        store
            .create_ticket(ticket.clone(), meta(HLC0 + 3))
            .await
            .unwrap_err();
        let noted = store
            .add_note(note(ticket.id, &us(), "hello", BASE_MS), meta(HLC0 + 4))
            .await
            .unwrap();
        let mut eu_log = Origin::new(eu());
        let remote = eu_log.note(ticket.id, ticket.owner.epoch);
        store
            .apply_remote(&eu(), vec![remote.clone()])
            .await
            .unwrap();
        // A duplicate delivery publishes nothing either.
        store
            .apply_remote(&eu(), vec![remote.clone()])
            .await
            .unwrap();

        for expected in [created, updated, noted, remote] {
            let got = tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(*got, expected);
        }
        assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
    }

    pub async fn reopen_keeps_everything(mut ctx: Ctx) {
        let ticket = ticket(&us());
        ctx.store
            .create_ticket(ticket.clone(), meta(HLC0))
            .await
            .unwrap();
        ctx.store
            .update_ticket(
                ticket.id,
                status_change(ticket.owner.epoch, Status::Escalated),
                meta(HLC0 + 1),
            )
            .await
            .unwrap();
        ctx.store
            .add_note(note(ticket.id, &us(), "kept", BASE_MS), meta(HLC0 + 2))
            .await
            .unwrap();
        let mut eu_log = Origin::new(eu());
        let (remote_ticket, created) = eu_log.create();
        let stale = eu_log.update(ticket.id, status_change(Epoch::from_raw(1), Status::Solved));
        ctx.store
            .apply_remote(&eu(), vec![created, stale])
            .await
            .unwrap();

        let record = ctx.store.get_ticket(ticket.id).await.unwrap().unwrap();
        let remote_record = ctx
            .store
            .get_ticket(remote_ticket.id)
            .await
            .unwrap()
            .unwrap();
        let local_log = ctx.store.events_after(&us(), 0, 100).await.unwrap();
        let eu_events = ctx.store.events_after(&eu(), 0, 100).await.unwrap();
        assert_eq!(record.conflicts.len(), 1);

        ctx.reopen().await;
        let store = &ctx.store;
        assert_eq!(store.get_ticket(ticket.id).await.unwrap().unwrap(), record);
        assert_eq!(
            store.get_ticket(remote_ticket.id).await.unwrap().unwrap(),
            remote_record
        );
        assert_eq!(store.events_after(&us(), 0, 100).await.unwrap(), local_log);
        assert_eq!(store.events_after(&eu(), 0, 100).await.unwrap(), eu_events);
        assert_eq!(store.local_head().await.unwrap(), 3);
        assert_eq!(store.cursor(&eu()).await.unwrap(), 2);
        // The local log continues where it stopped.
        let next = store
            .create_ticket(crate::fixtures::ticket(&us()), meta(HLC0 + 3))
            .await
            .unwrap();
        assert_eq!(next.origin_seq, 4);
    }

    pub async fn failing_command_does_not_fail_its_batch(ctx: Ctx) {
        let store = &ctx.store;
        let ticket = ticket(&us());
        store
            .create_ticket(ticket.clone(), meta(HLC0))
            .await
            .unwrap();
        let existing = note(ticket.id, &us(), "already here", BASE_MS);
        store
            .add_note(existing.clone(), meta(HLC0 + 1))
            .await
            .unwrap();

        // The database refuses one particular note, after the store's own
        // checks passed: a failure that aborts a transaction.
        let mut raw = ctx.raw().await;
        let poison = match ctx.backend() {
            Backend::Sqlite => {
                "CREATE TRIGGER poison_note BEFORE INSERT ON notes WHEN NEW.body = 'poison' \
                 BEGIN SELECT RAISE(ABORT, 'poisoned note'); END;"
            }
            Backend::Postgres => {
                "CREATE FUNCTION poison_note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.body = 'poison' THEN RAISE EXCEPTION 'poisoned note'; END IF; RETURN NEW; END $$; \
                 CREATE TRIGGER poison_note BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION poison_note();"
            }
        };
        sqlx::raw_sql(poison).execute(&mut raw).await.unwrap();

        let stats_before = store.writer_stats();
        let held = hold_writer(&ctx).await;
        let mut notes = Vec::new();
        for i in 0..30 {
            let body = if i == 15 {
                "poison".to_owned()
            } else {
                format!("note {i}")
            };
            let note = note(ticket.id, &us(), &body, BASE_MS + 10 + i);
            let store = store.clone();
            notes.push((
                body,
                tokio::spawn(async move { store.add_note(note, meta(HLC0 + 10)).await }),
            ));
        }
        let dup = {
            let store = store.clone();
            let existing = existing.clone();
            tokio::spawn(async move { store.add_note(existing, meta(HLC0 + 10)).await })
        };
        let fenced = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .update_ticket(
                        ticket.id,
                        status_change(Epoch::from_raw(2048), Status::Pending),
                        meta(HLC0 + 10),
                    )
                    .await
            })
        };
        let good_update = {
            let store = store.clone();
            let epoch = ticket.owner.epoch;
            tokio::spawn(async move {
                store
                    .update_ticket(
                        ticket.id,
                        status_change(epoch, Status::Pending),
                        meta(HLC0 + 10),
                    )
                    .await
            })
        };
        let created = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_ticket(crate::fixtures::ticket(&us()), meta(HLC0 + 10))
                    .await
            })
        };
        release_writer(held, store, 33).await;

        for (body, task) in notes {
            let result = task.await.unwrap();
            if body == "poison" {
                let err = result.unwrap_err();
                assert!(matches!(err, Error::Database(_)), "{err}");
            } else {
                result.unwrap_or_else(|e| panic!("{body} failed with its neighbour: {e}"));
            }
        }
        assert!(matches!(dup.await.unwrap(), Err(Error::Duplicate(_))));
        assert!(matches!(fenced.await.unwrap(), Err(Error::Fenced { .. })));
        assert_eq!(
            good_update.await.unwrap().unwrap().0.status,
            Status::Pending
        );
        created.await.unwrap().unwrap();

        let record = store.get_ticket(ticket.id).await.unwrap().unwrap();
        assert_eq!(record.notes.len(), 1 + 29);
        assert!(record.notes.iter().all(|n| n.body != "poison"));
        let bodies: BTreeSet<_> = record.notes.iter().map(|n| n.body.clone()).collect();
        assert_eq!(bodies.len(), 30);
        // 2 before, 29 notes, 1 update, 1 create: dense, nothing consumed by
        // the failures.
        assert_eq!(store.local_head().await.unwrap(), 33);
        let seqs: Vec<u64> = store
            .events_after(&us(), 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.origin_seq)
            .collect();
        assert_eq!(seqs, (1..=33).collect::<Vec<u64>>());
        let stats = store.writer_stats();
        assert_eq!(
            stats.batch_retries,
            stats_before.batch_retries + 1,
            "only the poisoned batch was retried"
        );

        // Refusals alone never cost a batch its transaction.
        let stats_before = store.writer_stats();
        let held = hold_writer(&ctx).await;
        let mut tasks = Vec::new();
        for i in 0..10 {
            let store = store.clone();
            let note = note(
                ticket.id,
                &us(),
                &format!("second round {i}"),
                BASE_MS + 100 + i,
            );
            tasks.push(tokio::spawn(async move {
                store.add_note(note, meta(HLC0 + 20)).await.map(|_| ())
            }));
        }
        let refusals = vec![
            {
                let store = store.clone();
                tokio::spawn(
                    async move { store.add_note(existing, meta(HLC0 + 20)).await.map(|_| ()) },
                )
            },
            {
                let store = store.clone();
                let stale = status_change(Epoch::from_raw(2048), Status::Open);
                tokio::spawn(async move {
                    store
                        .update_ticket(ticket.id, stale, meta(HLC0 + 20))
                        .await
                        .map(|_| ())
                })
            },
            {
                let store = store.clone();
                let orphan = note(ticket_id(), &us(), "nobody home", BASE_MS);
                tokio::spawn(
                    async move { store.add_note(orphan, meta(HLC0 + 20)).await.map(|_| ()) },
                )
            },
        ];
        release_writer(held, store, 12).await;
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        for task in refusals {
            let err = task.await.unwrap().unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Duplicate(_) | Error::Fenced { .. } | Error::TicketNotFound(_)
                ),
                "{err}"
            );
        }
        let stats = store.writer_stats();
        assert_eq!(
            stats.batch_retries, stats_before.batch_retries,
            "a refusal must not abort its batch"
        );
        assert_eq!(stats.commands, stats_before.commands + 13);
        assert!(
            stats.transactions <= stats_before.transactions + 2,
            "the queued writes were committed together: {stats:?}"
        );
        assert_eq!(store.local_head().await.unwrap(), 43);
    }

    /// Creations queued together go in one multi-row insert; each still
    /// gets the answer it would get alone: a duplicate of an existing
    /// ticket or of another creation in the same run is refused, a
    /// creation for another owner is fenced, and the rest commit with a
    /// dense sequence and no batch retry.
    pub async fn a_run_of_creations_answers_like_one_by_one(ctx: Ctx) {
        let store = &ctx.store;
        let existing = ticket(&us());
        store
            .create_ticket(existing.clone(), meta(HLC0))
            .await
            .unwrap();
        let twin = ticket(&us());
        let mut twin_again = twin.clone();
        twin_again.subject = "the same id again".into();
        let fresh: Vec<_> = (0..20).map(|_| ticket(&us())).collect();

        let stats_before = store.writer_stats();
        let held = hold_writer(&ctx).await;
        let spawn = |ticket: meridian_core::Ticket| {
            let store = store.clone();
            tokio::spawn(async move { store.create_ticket(ticket, meta(HLC0 + 10)).await })
        };
        let fresh_tasks: Vec<_> = fresh.iter().cloned().map(&spawn).collect();
        let twins = [spawn(twin.clone()), spawn(twin_again.clone())];
        let again = spawn(existing.clone());
        let foreign = spawn(ticket(&eu()));
        release_writer(held, store, 24).await;

        let mut seqs = vec![1];
        for (task, ticket) in fresh_tasks.into_iter().zip(&fresh) {
            let event = task.await.unwrap().unwrap();
            assert_eq!(event.ticket_id, ticket.id);
            assert_eq!(
                store.events_for_ticket(ticket.id).await.unwrap(),
                vec![event.clone()]
            );
            assert_eq!(
                store.get_ticket(ticket.id).await.unwrap().unwrap().ticket,
                *ticket
            );
            seqs.push(event.origin_seq);
        }
        let mut won = None;
        for task in twins {
            match task.await.unwrap() {
                Ok(event) => {
                    assert!(won.is_none(), "both creations of one id succeeded");
                    seqs.push(event.origin_seq);
                    won = Some(event);
                }
                Err(err) => assert!(matches!(err, Error::Duplicate(_)), "{err}"),
            }
        }
        let won = won.expect("one creation of the twin id succeeded");
        let EventKind::TicketCreated { ticket: created } = &won.kind else {
            panic!("a creation's event is a creation");
        };
        assert_eq!(
            store.get_ticket(twin.id).await.unwrap().unwrap().ticket,
            **created,
            "the stored ticket is the one whose creation succeeded"
        );
        let err = again.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Duplicate(_)), "{err}");
        let err = foreign.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Fenced { .. }), "{err}");

        seqs.sort_unstable();
        assert_eq!(seqs, (1..=22).collect::<Vec<u64>>());
        assert_eq!(store.local_head().await.unwrap(), 22);
        assert_eq!(event_count(store).await, 22);
        let stats = store.writer_stats();
        assert_eq!(stats.batch_retries, stats_before.batch_retries);
        assert_eq!(stats.commands, stats_before.commands + 24);
        assert!(
            stats.transactions <= stats_before.transactions + 2,
            "the queued creations were committed together: {stats:?}"
        );
    }

    /// Holds the database's write lock from another connection so the
    /// writes that follow queue up and commit as one batch once released.
    async fn hold_writer(ctx: &Ctx) -> sqlx::AnyConnection {
        let mut raw = ctx.raw().await;
        match ctx.backend() {
            Backend::Sqlite => sqlx::raw_sql("BEGIN IMMEDIATE")
                .execute(&mut raw)
                .await
                .unwrap(),
            Backend::Postgres => sqlx::raw_sql("BEGIN; SELECT last_seq FROM origins FOR UPDATE")
                .execute(&mut raw)
                .await
                .unwrap(),
        };
        raw
    }

    /// Releases the lock once every write waits: `queued` in the queue and
    /// one taken by the writer, blocked on the lock. A writer that woke late
    /// may have taken several into its blocked batch; the queue then
    /// settles below `queued`, and a queue unchanged for half a second is
    /// released too (the batches still number at most two).
    async fn release_writer(
        mut raw: sqlx::AnyConnection,
        store: &meridian_store::Store,
        queued: usize,
    ) {
        // Well short of SQLite's busy timeout, after which the blocked
        // writer would give up.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut last = (store.queued_writes(), tokio::time::Instant::now());
        loop {
            let now_queued = store.queued_writes();
            if now_queued >= queued {
                break;
            }
            if now_queued != last.0 {
                last = (now_queued, tokio::time::Instant::now());
            } else if last.1.elapsed() > Duration::from_millis(500) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {now_queued} writes queued, expected {queued}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sqlx::raw_sql("COMMIT").execute(&mut raw).await.unwrap();
    }

    pub async fn closed_store_refuses_writes(ctx: Ctx) {
        let other_handle = ctx.store.clone();
        ctx.store
            .create_ticket(ticket(&us()), meta(HLC0))
            .await
            .unwrap();
        ctx.store.close().await;
        let err = other_handle
            .create_ticket(ticket(&us()), meta(HLC0 + 1))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Closed), "{err}");
        let err = other_handle
            .apply_remote(&eu(), Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Closed), "{err}");
        assert!(!err.is_retryable());
    }

    pub async fn sla_alerts_are_fenced_projected_and_listed(ctx: Ctx) {
        use meridian_core::{SlaAlert, SlaMetric, SlaState};
        let store = &ctx.store;
        let ticket = ticket(&us());
        store
            .create_ticket(ticket.clone(), meta(HLC0))
            .await
            .unwrap();
        let calm = store
            .create_ticket(super::fixtures::ticket(&us()), meta(HLC0 + 1))
            .await
            .unwrap();
        let at_risk = TicketFilter {
            sla_at_risk: true,
            ..TicketFilter::default()
        };
        assert!(
            store
                .list_tickets(&at_risk)
                .await
                .unwrap()
                .tickets
                .is_empty()
        );

        let warned = ticket
            .sla
            .with_alert(SlaMetric::FirstResponse, SlaAlert::Warning);
        let changes = TicketChanges {
            epoch: ticket.owner.epoch,
            sla: Some(warned),
            ..TicketChanges::default()
        };
        let (updated, event) = store
            .record_sla_alert(
                ticket.id,
                SlaMetric::FirstResponse,
                SlaAlert::Warning,
                changes.clone(),
                meta(HLC0 + 2),
            )
            .await
            .unwrap();
        assert_eq!(updated.sla, warned);
        let due = ticket.sla.first_response.unwrap().due;
        assert_eq!(
            event.kind,
            EventKind::SlaWarning {
                metric: SlaMetric::FirstResponse,
                due,
                changes
            }
        );
        assert_eq!(event.kind.name(), "sla_warning");
        let listed = store.list_tickets(&at_risk).await.unwrap().tickets;
        assert_eq!(
            listed.iter().map(|t| t.id).collect::<Vec<_>>(),
            [ticket.id],
            "only the warned ticket is at risk"
        );
        assert_ne!(calm.ticket_id, ticket.id);

        // An alert at a stale epoch is fenced like any owner-scoped write.
        let stale = TicketChanges {
            epoch: Epoch::from_raw(ticket.owner.epoch.raw() + 1024),
            sla: Some(warned.with_alert(SlaMetric::FirstResponse, SlaAlert::Breached)),
            ..TicketChanges::default()
        };
        let err = store
            .record_sla_alert(
                ticket.id,
                SlaMetric::FirstResponse,
                SlaAlert::Breached,
                stale,
                meta(HLC0 + 3),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Fenced { .. }), "{err}");
        assert_eq!(
            store
                .get_ticket(ticket.id)
                .await
                .unwrap()
                .unwrap()
                .ticket
                .sla,
            warned
        );

        // Meeting the target takes the ticket off the at-risk list.
        let met = TicketChanges {
            epoch: ticket.owner.epoch,
            status: Some(Status::Pending),
            sla: Some(warned.after_status(Status::Pending, false)),
            ..TicketChanges::default()
        };
        let mut met_sla = met.sla.unwrap();
        met_sla.first_response.as_mut().unwrap().state = SlaState::Met;
        let met = TicketChanges {
            sla: Some(met_sla),
            ..met
        };
        store
            .update_ticket(ticket.id, met, meta(HLC0 + 4))
            .await
            .unwrap();
        assert!(
            store
                .list_tickets(&at_risk)
                .await
                .unwrap()
                .tickets
                .is_empty()
        );
        assert_eq!(event_count(store).await, 4);
    }

    pub async fn sla_due_finds_only_clocks_that_need_a_look(ctx: Ctx) {
        use meridian_core::SlaDeadlines;
        let store = &ctx.store;
        let ticket = ticket(&us());
        store
            .create_ticket(ticket.clone(), meta(HLC0))
            .await
            .unwrap();
        let mut no_sla = super::fixtures::ticket(&us());
        no_sla.sla = SlaDeadlines::default();
        store.create_ticket(no_sla, meta(HLC0 + 1)).await.unwrap();
        let warn_at = ticket.sla.first_response.unwrap().warn_at;

        let before = store
            .sla_due(&us(), ms(warn_at.as_millisecond() - 1), 100)
            .await
            .unwrap();
        assert!(before.is_empty(), "nothing is due before the first warning");
        let due = store.sla_due(&us(), warn_at, 100).await.unwrap();
        assert_eq!(due.iter().map(|t| t.id).collect::<Vec<_>>(), [ticket.id]);
        assert!(
            store.sla_due(&eu(), warn_at, 100).await.unwrap().is_empty(),
            "only the owner's tickets"
        );

        // A paused clock needs no look, however late it is.
        let paused = ticket.sla.after_status(Status::Pending, true);
        let changes = TicketChanges {
            epoch: ticket.owner.epoch,
            status: Some(Status::Pending),
            sla: Some(paused),
            ..TicketChanges::default()
        };
        store
            .update_ticket(ticket.id, changes, meta(HLC0 + 2))
            .await
            .unwrap();
        assert!(
            store
                .sla_due(&us(), ms(BASE_MS + 1_000_000_000), 100)
                .await
                .unwrap()
                .is_empty()
        );
    }

    pub async fn replicated_sla_alerts_project_like_updates(ctx: Ctx) {
        use meridian_core::{SlaAlert, SlaMetric};
        let store = &ctx.store;
        let mut eu_log = Origin::new(eu());
        let (ticket, created) = eu_log.create();
        let breached = ticket
            .sla
            .with_alert(SlaMetric::Resolution, SlaAlert::Breached);
        let changes = TicketChanges {
            epoch: ticket.owner.epoch,
            sla: Some(breached),
            ..TicketChanges::default()
        };
        let due = ticket.sla.resolution.unwrap().due;
        let alert = eu_log.event(
            ticket.id,
            ticket.owner.epoch,
            EventKind::SlaBreached {
                metric: SlaMetric::Resolution,
                due,
                changes,
            },
        );
        // The creation and the alert arrive in one batch from eu-west.
        store
            .apply_remote(&eu(), vec![created.clone(), alert.clone()])
            .await
            .unwrap();
        let got = store.get_ticket(ticket.id).await.unwrap().unwrap().ticket;
        assert_eq!(got.sla, breached);
        assert!(got.sla.is_at_risk());
        let kinds: Vec<_> = store
            .events_for_ticket(ticket.id)
            .await
            .unwrap()
            .iter()
            .map(|e| e.kind.name())
            .collect();
        assert_eq!(kinds, ["ticket_created", "sla_breached"]);
    }

    fn handoff_note(author: &str) -> meridian_core::HandoffNote {
        meridian_core::HandoffNote {
            current_status: Status::Open,
            last_action: "restarted the sync job".into(),
            next_action: "confirm the import finished".into(),
            deadline: None,
            text: "customer is in Lisbon".into(),
            author: author.into(),
            auto: false,
        }
    }

    fn offer_note(
        ticket_id: meridian_core::TicketId,
        from: &meridian_core::RegionId,
        to: &meridian_core::RegionId,
    ) -> meridian_core::Note {
        let mut n = note(
            ticket_id,
            from,
            &handoff_note("ana").render(from, to),
            BASE_MS + 5_000,
        );
        n.author = "ana".into();
        n
    }

    pub async fn a_message_and_its_clock_change_are_written_together_or_not_at_all(ctx: Ctx) {
        let store = &ctx.store;
        let ticket = ticket(&us());
        store
            .create_ticket(ticket.clone(), meta(HLC0))
            .await
            .unwrap();
        let epoch = ticket.owner.epoch;
        let mut reply = note(ticket.id, &us(), "We are on it.", BASE_MS + 20_000);
        reply.visibility = meridian_core::Visibility::Public;
        let answered = TicketChanges {
            epoch,
            status: Some(Status::Open),
            sla: Some(ticket.sla.after_reply()),
            ..TicketChanges::default()
        };
        let (updated, events) = store
            .add_message(reply.clone(), Some(answered), meta(HLC0 + 1))
            .await
            .unwrap();
        let updated = updated.expect("a message with changes returns the ticket");
        assert_eq!(updated.status, Status::Open);
        assert_eq!(
            updated.sla.first_response.unwrap().state,
            meridian_core::SlaState::Met
        );
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
        assert_eq!(kinds, ["ticket_updated", "note_added"]);
        assert_eq!(
            events[1].epoch, epoch,
            "the note is written at the epoch the update left"
        );
        let record = store.get_ticket(ticket.id).await.unwrap().unwrap();
        assert_eq!(record.notes, vec![reply.clone()], "visibility round-trips");

        // A message without changes is just its note.
        let mut later = note(ticket.id, &us(), "Any news?", BASE_MS + 30_000);
        later.visibility = meridian_core::Visibility::Inbound;
        let (none, events) = store
            .add_message(later.clone(), None, meta(HLC0 + 2))
            .await
            .unwrap();
        assert!(none.is_none());
        assert_eq!(events.len(), 1);

        // Fenced: a stale epoch writes neither the change nor the note.
        let head = store.local_head().await.unwrap();
        let mut stale = note(ticket.id, &us(), "Late reply", BASE_MS + 40_000);
        stale.visibility = meridian_core::Visibility::Public;
        let err = store
            .add_message(
                stale.clone(),
                Some(status_change(epoch.next_for(0), Status::Pending)),
                meta(HLC0 + 3),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Fenced { .. } | Error::Invalid(_)),
            "{err}"
        );
        assert_eq!(store.local_head().await.unwrap(), head, "no event written");
        let record = store.get_ticket(ticket.id).await.unwrap().unwrap();
        assert_eq!(record.ticket.status, Status::Open);
        assert!(
            !record.notes.iter().any(|n| n.id == stale.id),
            "the note of a refused message is not kept"
        );

        // A duplicate note id is refused before anything is written.
        let err = store
            .add_message(
                later,
                Some(status_change(epoch, Status::Pending)),
                meta(HLC0 + 4),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Duplicate(_)), "{err}");
        assert_eq!(store.local_head().await.unwrap(), head);
        assert_eq!(
            store
                .get_ticket(ticket.id)
                .await
                .unwrap()
                .unwrap()
                .ticket
                .status,
            Status::Open
        );
    }

    pub async fn an_offer_blocks_owner_writes_until_answered(ctx: Ctx) {
        let store = &ctx.store;
        let ticket = ticket(&us());
        store
            .create_ticket(ticket.clone(), meta(HLC0))
            .await
            .unwrap();
        let epoch = ticket.owner.epoch;
        let (offered, event) = store
            .offer_handoff(
                ticket.id,
                epoch,
                eu(),
                handoff_note("ana"),
                offer_note(ticket.id, &us(), &eu()),
                meta(HLC0 + 1),
            )
            .await
            .unwrap();
        assert_eq!(offered.handoff_to, Some(eu()));
        assert_eq!(event.kind.name(), "handoff_offered");
        let record = store.get_ticket(ticket.id).await.unwrap().unwrap();
        assert_eq!(record.notes.len(), 1, "the handoff note is a ticket note");
        assert!(
            record.notes[0]
                .body
                .starts_with("Handoff us-east → eu-west"),
            "{}",
            record.notes[0].body
        );

        let err = store
            .update_ticket(
                ticket.id,
                status_change(epoch, Status::Pending),
                meta(HLC0 + 2),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Invalid(meridian_core::Error::HandoffPending { ref to }) if *to == eu()),
            "{err}"
        );
        let again = store
            .offer_handoff(
                ticket.id,
                epoch,
                apac(),
                handoff_note("ana"),
                offer_note(ticket.id, &us(), &apac()),
                meta(HLC0 + 3),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                again,
                Error::Invalid(meridian_core::Error::HandoffPending { .. })
            ),
            "{again}"
        );
        assert_eq!(
            store
                .last_offer(ticket.id, &us())
                .await
                .unwrap()
                .unwrap()
                .origin_seq,
            event.origin_seq
        );

        // Refused: the owner keeps the ticket and may write again.
        let (kept, _) = store
            .refuse_handoff(
                ticket.id,
                epoch,
                eu(),
                "eu-west is off shift".into(),
                meta(HLC0 + 4),
            )
            .await
            .unwrap();
        assert_eq!(kept.handoff_to, None);
        assert_eq!(kept.owner.owner_region, us());
        store
            .update_ticket(
                ticket.id,
                status_change(epoch, Status::Pending),
                meta(HLC0 + 5),
            )
            .await
            .unwrap();

        // Offered again and accepted in eu-west: its acceptance arrives
        // through replication and moves ownership here too.
        let (_, offer) = store
            .offer_handoff(
                ticket.id,
                epoch,
                eu(),
                handoff_note("ana"),
                offer_note(ticket.id, &us(), &eu()),
                meta(HLC0 + 6),
            )
            .await
            .unwrap();
        let new_epoch = epoch.next_for(region_index(&eu()));
        let mut eu_log = Origin::new(eu());
        let accepted = eu_log.event(
            ticket.id,
            new_epoch,
            EventKind::HandoffAccepted {
                from: us(),
                offer_seq: offer.origin_seq,
                previous_epoch: epoch,
            },
        );
        store.apply_remote(&eu(), vec![accepted]).await.unwrap();
        let moved = store.get_ticket(ticket.id).await.unwrap().unwrap().ticket;
        assert_eq!(
            (
                moved.owner.owner_region.clone(),
                moved.owner.epoch,
                moved.handoff_to.clone()
            ),
            (eu(), new_epoch, None)
        );
        let fenced = store
            .update_ticket(
                ticket.id,
                status_change(epoch, Status::Open),
                meta(HLC0 + 7),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(fenced, Error::Fenced { ref owner, epoch } if *owner == eu() && epoch == new_epoch),
            "{fenced}"
        );
    }

    pub async fn acceptance_is_fenced_on_the_pending_offer(ctx: Ctx) {
        let store = &ctx.store;
        let mut eu_log = Origin::new(eu());
        let (ticket, created) = eu_log.create();
        let offer = eu_log.event(
            ticket.id,
            ticket.owner.epoch,
            EventKind::HandoffOffered {
                to: us(),
                handoff: handoff_note("bo"),
                note: offer_note(ticket.id, &eu(), &us()),
            },
        );
        let new_epoch = ticket.owner.epoch.next_for(region_index(&us()));
        // Nothing offered yet: nothing to accept.
        store.apply_remote(&eu(), vec![created]).await.unwrap();
        let early = store
            .accept_handoff(
                ticket.id,
                eu(),
                2,
                ticket.owner.epoch,
                new_epoch,
                meta(HLC0),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                early,
                Error::Invalid(meridian_core::Error::NoSuchOffer { .. })
            ),
            "{early}"
        );

        store
            .apply_remote(&eu(), vec![offer.clone()])
            .await
            .unwrap();
        assert_eq!(
            store
                .get_ticket(ticket.id)
                .await
                .unwrap()
                .unwrap()
                .ticket
                .handoff_to,
            Some(us())
        );
        let (owned, event) = store
            .accept_handoff(
                ticket.id,
                eu(),
                offer.origin_seq,
                ticket.owner.epoch,
                new_epoch,
                meta(HLC0 + 1),
            )
            .await
            .unwrap();
        assert_eq!(
            (
                owned.owner.owner_region.clone(),
                owned.owner.epoch,
                owned.handoff_to.clone()
            ),
            (us(), new_epoch, None)
        );
        assert_eq!(
            event.epoch, new_epoch,
            "the acceptance is written at the new epoch"
        );
        let twice = store
            .accept_handoff(
                ticket.id,
                eu(),
                offer.origin_seq,
                ticket.owner.epoch,
                new_epoch,
                meta(HLC0 + 2),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                twice,
                Error::Invalid(meridian_core::Error::NoSuchOffer { .. })
            ),
            "{twice}"
        );
        // The new owner writes at its epoch.
        store
            .update_ticket(
                ticket.id,
                status_change(new_epoch, Status::Pending),
                meta(HLC0 + 3),
            )
            .await
            .unwrap();
    }

    pub async fn replicated_handoffs_converge_in_any_order(ctx: Ctx) {
        let store = &ctx.store;
        for acceptance_first in [true, false] {
            let mut eu_log = Origin::new(eu());
            let mut apac_log = Origin::new(apac());
            let (ticket, created) = eu_log.create();
            let offer = eu_log.event(
                ticket.id,
                ticket.owner.epoch,
                EventKind::HandoffOffered {
                    to: apac(),
                    handoff: handoff_note("bo"),
                    note: offer_note(ticket.id, &eu(), &apac()),
                },
            );
            let new_epoch = ticket.owner.epoch.next_for(region_index(&apac()));
            let accepted = apac_log.event(
                ticket.id,
                new_epoch,
                EventKind::HandoffAccepted {
                    from: eu(),
                    offer_seq: offer.origin_seq,
                    previous_epoch: ticket.owner.epoch,
                },
            );
            let eu_cursor = store.cursor(&eu()).await.unwrap();
            let apac_cursor = store.cursor(&apac()).await.unwrap();
            let renumber = |mut e: meridian_core::EventEnvelope, base: u64| {
                e.origin_seq += base;
                e
            };
            let eu_batch = vec![renumber(created, eu_cursor), renumber(offer, eu_cursor)];
            let apac_batch = vec![renumber(accepted, apac_cursor)];
            if acceptance_first {
                store.apply_remote(&apac(), apac_batch).await.unwrap();
                store.apply_remote(&eu(), eu_batch).await.unwrap();
            } else {
                store.apply_remote(&eu(), eu_batch).await.unwrap();
                store.apply_remote(&apac(), apac_batch).await.unwrap();
            }
            let record = store.get_ticket(ticket.id).await.unwrap().unwrap();
            let t = &record.ticket;
            assert_eq!(
                (
                    t.owner.owner_region.clone(),
                    t.owner.epoch,
                    t.handoff_to.clone()
                ),
                (apac(), new_epoch, None),
                "acceptance first: {acceptance_first}"
            );
            assert_eq!(record.notes.len(), 1);
            assert!(
                record.conflicts.is_empty(),
                "handoff steps are not user writes: no conflicts"
            );
        }
    }

    pub async fn wait_applied_wakes_on_the_apply(ctx: Ctx) {
        use std::time::Duration;
        let store = ctx.store.clone();
        let mut eu_log = Origin::new(eu());
        let (_, created) = eu_log.create();
        assert!(
            !store
                .wait_applied(&eu(), 1, Duration::from_millis(50))
                .await
                .unwrap(),
            "times out when nothing comes"
        );
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.wait_applied(&eu(), 1, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.apply_remote(&eu(), vec![created]).await.unwrap();
        assert!(
            waiter.await.unwrap().unwrap(),
            "wakes once the event is applied"
        );
        assert!(
            store.wait_applied(&eu(), 1, Duration::ZERO).await.unwrap(),
            "already applied answers at once"
        );
    }

    pub async fn takeover_moves_only_what_the_failed_region_owned(ctx: Ctx) {
        let store = &ctx.store;
        // eu-west owned two tickets and failed; one had an offer pending.
        let mut eu_log = Origin::new(eu());
        let (owned, created) = eu_log.create();
        let (offered, created2) = eu_log.create();
        let offer = eu_log.event(
            offered.id,
            offered.owner.epoch,
            EventKind::HandoffOffered {
                to: apac(),
                handoff: handoff_note("bo"),
                note: offer_note(offered.id, &eu(), &apac()),
            },
        );
        store
            .apply_remote(&eu(), vec![created, created2, offer])
            .await
            .unwrap();
        let mine = ticket(&us());
        store.create_ticket(mine.clone(), meta(HLC0)).await.unwrap();

        let new_epoch = owned.owner.epoch.next_for(region_index(&us()));
        for id in [owned.id, offered.id] {
            let (taken, event) = store
                .take_over(id, eu(), 42, new_epoch, meta(HLC0 + 1))
                .await
                .unwrap();
            assert_eq!(
                (
                    taken.owner.owner_region.clone(),
                    taken.owner.epoch,
                    taken.handoff_to.clone()
                ),
                (us(), new_epoch, None)
            );
            let expected = EventKind::TakenOver {
                from: eu(),
                fencing_token: 42,
                previous_epoch: owned.owner.epoch,
                through_seq: 3,
            };
            assert_eq!(
                event.kind, expected,
                "records the epoch eu-west held and how much of its log is here"
            );
        }
        // Not eu-west's: refused, nothing written.
        let err = store
            .take_over(mine.id, eu(), 42, new_epoch, meta(HLC0 + 2))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Fenced { .. }), "{err}");
        // eu-west's stale write arriving later is a conflict, not applied.
        let stale = eu_log.update(owned.id, status_change(owned.owner.epoch, Status::Solved));
        store.apply_remote(&eu(), vec![stale]).await.unwrap();
        let record = store.get_ticket(owned.id).await.unwrap().unwrap();
        assert_eq!(record.ticket.status, owned.status);
        assert_eq!(
            record.conflicts.len(),
            1,
            "the failed region's late write is kept as a conflict"
        );
    }

    /// This store is the failed region: it applied its own late write, and
    /// the successor, which had seen its log only up to the write before,
    /// took over. Applying the takeover takes the late write back as a
    /// conflict, as every other replica records it.
    pub async fn a_takeover_takes_back_the_failed_regions_late_write(ctx: Ctx) {
        let store = &ctx.store;
        let mine = ticket(&us());
        let epoch = mine.owner.epoch;
        store.create_ticket(mine.clone(), meta(HLC0)).await.unwrap();
        let (_, seen) = store
            .update_ticket(mine.id, status_change(epoch, Status::Open), meta(HLC0 + 1))
            .await
            .unwrap();
        let (_, late) = store
            .update_ticket(
                mine.id,
                status_change(epoch, Status::Pending),
                meta(HLC0 + 2),
            )
            .await
            .unwrap();

        let mut eu_log = Origin::new(eu());
        let successor_epoch = epoch.next_for(region_index(&eu()));
        let takeover = EventKind::TakenOver {
            from: us(),
            fencing_token: 7,
            previous_epoch: epoch,
            through_seq: seen.origin_seq,
        };
        let taken = eu_log.event(mine.id, successor_epoch, takeover);
        let mut recorded = store.subscribe_conflicts();
        store.apply_remote(&eu(), vec![taken]).await.unwrap();
        let published = recorded
            .try_recv()
            .expect("the new conflict is published after the commit");
        assert_eq!(
            (published.ticket_id, published.conflict.origin_seq),
            (mine.id, late.origin_seq)
        );
        assert!(
            matches!(recorded.try_recv(), Err(TryRecvError::Empty)),
            "once"
        );

        let record = store.get_ticket(mine.id).await.unwrap().unwrap();
        assert_eq!(
            (
                record.ticket.owner.owner_region.clone(),
                record.ticket.owner.epoch
            ),
            (eu(), successor_epoch)
        );
        assert_eq!(
            record.ticket.status,
            Status::Open,
            "the late write is taken back"
        );
        assert_eq!(record.conflicts.len(), 1, "{:?}", record.conflicts);
        let conflict = &record.conflicts[0];
        assert_eq!(
            (conflict.origin_region.clone(), conflict.origin_seq),
            (us(), late.origin_seq)
        );
        assert_eq!(
            (conflict.stale_epoch, conflict.current_epoch),
            (epoch, successor_epoch)
        );
        assert_eq!(conflict.changes.status, Some(Status::Pending));
        // The successor's own writes apply on top.
        let next = eu_log.update(mine.id, status_change(successor_epoch, Status::Escalated));
        store.apply_remote(&eu(), vec![next]).await.unwrap();
        let record = store.get_ticket(mine.id).await.unwrap().unwrap();
        assert_eq!(record.ticket.status, Status::Escalated);
        assert_eq!(record.conflicts.len(), 1);
    }

    /// A third region sees the takeover before the failed region's writes:
    /// the one the successor had applied counts, the late one is a conflict,
    /// exactly as when they arrive in log order.
    pub async fn writes_a_takeover_covers_count_in_any_arrival_order(ctx: Ctx) {
        let store = &ctx.store;
        let mut eu_log = Origin::new(eu());
        let (owned, created) = eu_log.create();
        let epoch = owned.owner.epoch;
        let seen = eu_log.update(
            owned.id,
            TicketChanges {
                assignee: Some(Some("bo".into())),
                priority: Some(meridian_core::Priority::Urgent),
                ..status_change(epoch, Status::Open)
            },
        );
        let late = eu_log.update(owned.id, status_change(epoch, Status::Pending));
        let mut apac_log = Origin::new(apac());
        let successor_epoch = epoch.next_for(region_index(&apac()));
        let takeover = EventKind::TakenOver {
            from: eu(),
            fencing_token: 7,
            previous_epoch: epoch,
            through_seq: seen.origin_seq,
        };
        let taken = apac_log.event(owned.id, successor_epoch, takeover);

        store.apply_remote(&apac(), vec![taken]).await.unwrap();
        store.apply_remote(&eu(), vec![created]).await.unwrap();
        let record = store.get_ticket(owned.id).await.unwrap().unwrap();
        assert_eq!(
            (
                record.ticket.owner.owner_region.clone(),
                record.ticket.owner.epoch
            ),
            (apac(), successor_epoch)
        );
        store.apply_remote(&eu(), vec![seen]).await.unwrap();
        let record = store.get_ticket(owned.id).await.unwrap().unwrap();
        // It counts; the takeover, after it, left the ticket unassigned.
        assert_eq!(
            (
                record.ticket.status,
                record.ticket.priority,
                record.ticket.assignee.as_deref()
            ),
            (Status::Open, meridian_core::Priority::Urgent, None),
            "covered: counts"
        );
        assert!(record.conflicts.is_empty(), "{:?}", record.conflicts);
        store.apply_remote(&eu(), vec![late.clone()]).await.unwrap();
        let record = store.get_ticket(owned.id).await.unwrap().unwrap();
        assert_eq!(
            record.ticket.status,
            Status::Open,
            "after the successor's cursor: stale"
        );
        assert_eq!(
            record
                .conflicts
                .iter()
                .map(|c| c.origin_seq)
                .collect::<Vec<_>>(),
            [late.origin_seq]
        );
    }

    /// eu-west's update made before its offer reaches this store after
    /// apac-south's acceptance: it was the owner's write at the time, so it
    /// counts (not a conflict), under apac-south's later writes.
    pub async fn a_write_made_before_a_handoff_counts_when_it_arrives_after(ctx: Ctx) {
        let store = &ctx.store;
        let mut eu_log = Origin::new(eu());
        let (owned, created) = eu_log.create();
        let epoch = owned.owner.epoch;
        let before = eu_log.update(
            owned.id,
            TicketChanges {
                assignee: Some(Some("bo".into())),
                priority: Some(meridian_core::Priority::Urgent),
                ..status_change(epoch, Status::Open)
            },
        );
        let offer = eu_log.event(
            owned.id,
            epoch,
            EventKind::HandoffOffered {
                to: apac(),
                handoff: handoff_note("bo"),
                note: offer_note(owned.id, &eu(), &apac()),
            },
        );
        let mut apac_log = Origin::new(apac());
        let new_epoch = epoch.next_for(region_index(&apac()));
        let accepted = apac_log.event(
            owned.id,
            new_epoch,
            EventKind::HandoffAccepted {
                from: eu(),
                offer_seq: offer.origin_seq,
                previous_epoch: epoch,
            },
        );
        let after = apac_log.update(owned.id, status_change(new_epoch, Status::Pending));

        store.apply_remote(&eu(), vec![created]).await.unwrap();
        store
            .apply_remote(&apac(), vec![accepted, after])
            .await
            .unwrap();
        store
            .apply_remote(&eu(), vec![before, offer])
            .await
            .unwrap();
        let record = store.get_ticket(owned.id).await.unwrap().unwrap();
        assert!(record.conflicts.is_empty(), "{:?}", record.conflicts);
        assert_eq!(
            (record.ticket.priority, record.ticket.assignee.as_deref()),
            (meridian_core::Priority::Urgent, None),
            "the owner's write before its offer counts; the handoff after it clears the assignee"
        );
        assert_eq!(
            record.ticket.status,
            Status::Pending,
            "the new owner's later write wins"
        );
        assert_eq!(
            (
                record.ticket.owner.owner_region.clone(),
                record.ticket.handoff_to.clone()
            ),
            (apac(), None)
        );
    }

    /// Catch-up applies runs of creations and notes in multi-row
    /// statements; the result must be what one-by-one application gives,
    /// including a creation whose handoff was accepted elsewhere first.
    pub async fn runs_of_creations_and_notes_apply_in_bulk_like_one_by_one(ctx: Ctx) {
        let store = &ctx.store;
        let mut eu_log = Origin::new(eu());
        let (first, c1) = eu_log.create();
        let (second, c2) = eu_log.create();
        let offer = eu_log.event(
            second.id,
            second.owner.epoch,
            EventKind::HandoffOffered {
                to: apac(),
                handoff: handoff_note("bo"),
                note: offer_note(second.id, &eu(), &apac()),
            },
        );
        let n1 = eu_log.note(first.id, first.owner.epoch);
        let n2 = eu_log.note(second.id, second.owner.epoch);
        let (third, c3) = eu_log.create();
        let n3 = eu_log.note(third.id, third.owner.epoch);
        let mut apac_log = Origin::new(apac());
        let apac_epoch = second.owner.epoch.next_for(region_index(&apac()));
        let accepted = apac_log.event(
            second.id,
            apac_epoch,
            EventKind::HandoffAccepted {
                from: eu(),
                offer_seq: offer.origin_seq,
                previous_epoch: second.owner.epoch,
            },
        );
        store.apply_remote(&apac(), vec![accepted]).await.unwrap();

        let batch = vec![c1, c2, offer, n1, n2, c3, n3];
        assert_eq!(store.apply_remote(&eu(), batch.clone()).await.unwrap(), 7);
        assert_eq!(
            store.apply_remote(&eu(), batch).await.unwrap(),
            7,
            "a redelivery changes nothing"
        );
        assert_eq!(event_count(store).await, 8);
        for (ticket, notes) in [(&first, 1), (&third, 1)] {
            let record = store.get_ticket(ticket.id).await.unwrap().unwrap();
            assert_eq!(record.ticket, *ticket);
            assert_eq!(record.notes.len(), notes);
        }
        let record = store.get_ticket(second.id).await.unwrap().unwrap();
        assert_eq!(
            (
                record.ticket.owner.owner_region.clone(),
                record.ticket.owner.epoch
            ),
            (apac(), apac_epoch)
        );
        assert_eq!(
            record.ticket.handoff_to, None,
            "the offer was answered before it arrived"
        );
        assert_eq!(record.notes.len(), 2, "the offer's note and the plain one");
        assert!(record.conflicts.is_empty());
    }

    pub async fn shift_summaries_are_recorded_once_and_replicate(ctx: Ctx) {
        let store = &ctx.store;
        let summary = meridian_core::ShiftSummary {
            region: us(),
            shift_start: ms(BASE_MS),
            shift_end: ms(BASE_MS + 8 * 3_600_000),
            handed_off: vec![(ticket_id(), eu())],
            kept: vec![],
            sla_at_risk: vec![],
            escalations_open: vec![],
            auto_notes: 1,
            next_region: Some(eu()),
            next_queue_owner: Some("emea-oncall".into()),
        };
        let event = store
            .record_shift_summary(summary.clone(), meta(HLC0))
            .await
            .unwrap();
        assert_eq!(event.ticket_id, summary.id());
        let again = store
            .record_shift_summary(summary.clone(), meta(HLC0 + 1))
            .await
            .unwrap_err();
        assert!(matches!(again, Error::Duplicate(_)), "{again}");
        assert_eq!(
            store.shift_summaries(Some(&us()), 10).await.unwrap(),
            std::slice::from_ref(&summary)
        );

        let mut eu_log = Origin::new(eu());
        let theirs = meridian_core::ShiftSummary {
            region: eu(),
            ..summary.clone()
        };
        let event = eu_log.event(
            theirs.id(),
            Epoch::default(),
            EventKind::ShiftSummary {
                summary: theirs.clone(),
            },
        );
        store.apply_remote(&eu(), vec![event]).await.unwrap();
        assert_eq!(store.shift_summaries(None, 10).await.unwrap().len(), 2);
        assert_eq!(
            store.shift_summaries(Some(&eu()), 10).await.unwrap(),
            [theirs]
        );
    }

    // ---- idempotency keys (issue 17) ----

    fn key(name: &str, request: &str) -> meridian_store::IdempotencyKey {
        meridian_store::IdempotencyKey {
            key_digest: format!("key-{name}"),
            request_digest: format!("request-{request}"),
        }
    }

    fn created(outcome: CreateOutcome) -> meridian_core::EventEnvelope {
        match outcome {
            CreateOutcome::Created(event) => event,
            other => panic!("expected a creation, got {other:?}"),
        }
    }

    async fn key_rows(ctx: &Ctx) -> Vec<(String, String, String, i64)> {
        use sqlx::Row;
        let mut raw = ctx.raw().await;
        sqlx::query(
            "SELECT key_digest, request_digest, ticket_id, origin_seq FROM idempotency_keys ORDER BY key_digest",
        )
        .fetch_all(&mut raw)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<String, _>(0),
                r.get::<String, _>(1),
                r.get::<String, _>(2),
                r.get::<i64, _>(3),
            )
        })
        .collect()
    }

    pub async fn a_keyed_create_retried_answers_the_same_ticket(ctx: Ctx) {
        let store = &ctx.store;
        let first = ticket(&us());
        let event = created(
            store
                .create_ticket_idempotent(first.clone(), meta(HLC0), key("k1", "a"))
                .await
                .unwrap(),
        );
        assert_eq!((event.ticket_id, event.origin_seq), (first.id, 1));
        // A retry mints a fresh id and a later instant: the key answers the
        // ticket the first attempt created, as it is now.
        store
            .update_ticket(
                first.id,
                TicketChanges {
                    epoch: first.owner.epoch,
                    status: Some(Status::Open),
                    ..Default::default()
                },
                meta(HLC0 + 1),
            )
            .await
            .unwrap();
        let retry = ticket(&us());
        let outcome = store
            .create_ticket_idempotent(retry.clone(), meta(HLC0 + 2), key("k1", "a"))
            .await
            .unwrap();
        let CreateOutcome::Replayed {
            ticket: replayed,
            origin_region,
            origin_seq,
        } = outcome
        else {
            panic!("expected a replay, got {outcome:?}");
        };
        assert_eq!(replayed.id, first.id);
        assert_eq!(replayed.status, Status::Open, "the ticket as it is now");
        assert_eq!((origin_region, origin_seq), (us(), 1));
        assert!(store.get_ticket(retry.id).await.unwrap().is_none());
        assert_eq!(
            store.idempotent_ticket("key-k1").await.unwrap(),
            Some(first.id)
        );
        assert_eq!(store.idempotent_ticket("key-none").await.unwrap(), None);
        assert_eq!(event_count(store).await, 2, "the create and the update");
        assert_eq!(store.local_head().await.unwrap(), 2);
        // Another key is another creation.
        let other = ticket(&us());
        let event = created(
            store
                .create_ticket_idempotent(other.clone(), meta(HLC0 + 3), key("k2", "a"))
                .await
                .unwrap(),
        );
        assert_eq!((event.ticket_id, event.origin_seq), (other.id, 3));
    }

    pub async fn a_key_with_another_request_is_refused_and_writes_nothing(ctx: Ctx) {
        let store = &ctx.store;
        let first = ticket(&us());
        store
            .create_ticket_idempotent(first.clone(), meta(HLC0), key("k1", "a"))
            .await
            .unwrap();
        let err = store
            .create_ticket_idempotent(ticket(&us()), meta(HLC0 + 1), key("k1", "b"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::IdempotencyConflict { ticket_id } if *ticket_id == first.id),
            "{err}"
        );
        assert!(err.to_string().contains(&first.id.to_string()), "{err}");
        assert_eq!(event_count(store).await, 1);
        assert_eq!(store.local_head().await.unwrap(), 1);
        assert_eq!(
            key_rows(&ctx).await,
            [(
                "key-k1".to_owned(),
                "request-a".to_owned(),
                first.id.to_string(),
                1
            )],
            "the key still names the first request"
        );
    }

    pub async fn a_key_commits_with_its_ticket_or_not_at_all(ctx: Ctx) {
        let store = &ctx.store;
        let taken = ticket(&us());
        store
            .create_ticket(taken.clone(), meta(HLC0))
            .await
            .unwrap();
        // A keyed create refused after its key was looked up (the id is
        // taken) leaves no key behind.
        let err = store
            .create_ticket_idempotent(taken.clone(), meta(HLC0 + 1), key("k1", "a"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Duplicate(_)), "{err}");
        assert!(key_rows(&ctx).await.is_empty(), "no key without its ticket");
        // In a batch beside other writes, the key and the ticket commit
        // together, and survive a restart together.
        let mut tasks = Vec::new();
        for i in 0..8u64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let t = ticket(&us());
                if i == 3 {
                    store
                        .create_ticket_idempotent(t, meta(HLC0 + 10 + i), key("k2", "a"))
                        .await
                        .map(|o| created(o).ticket_id)
                } else {
                    store
                        .create_ticket(t, meta(HLC0 + 10 + i))
                        .await
                        .map(|e| e.ticket_id)
                }
            }));
        }
        let mut keyed_id = None;
        for (i, task) in tasks.into_iter().enumerate() {
            let id = task.await.unwrap().unwrap();
            if i == 3 {
                keyed_id = Some(id);
            }
        }
        let keyed_id = keyed_id.unwrap();
        let mut ctx = ctx;
        ctx.reopen().await;
        let rows = key_rows(&ctx).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].2, keyed_id.to_string());
        let event = ctx
            .store
            .events_for_ticket(keyed_id)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(
            rows[0].3, event.origin_seq as i64,
            "the key names the creation event"
        );
        let again = ctx
            .store
            .create_ticket_idempotent(ticket(&us()), meta(HLC0 + 30), key("k2", "a"))
            .await
            .unwrap();
        assert!(
            matches!(&again, CreateOutcome::Replayed { ticket, .. } if ticket.id == keyed_id),
            "{again:?}"
        );
    }

    pub async fn keyed_creates_racing_across_replicas_make_one_ticket(ctx: Ctx) {
        // Two gateway replicas of one region, each asked the same create
        // many times at once (a client retrying impatiently).
        let other = ctx.open_another().await;
        let mut tasks = Vec::new();
        for i in 0..20u64 {
            let store = if i % 2 == 0 {
                ctx.store.clone()
            } else {
                other.clone()
            };
            tasks.push(tokio::spawn(async move {
                store
                    .create_ticket_idempotent(ticket(&us()), meta(HLC0 + i), key("k1", "a"))
                    .await
                    .unwrap()
            }));
        }
        let mut created_ids = Vec::new();
        let mut replayed_ids = BTreeSet::new();
        for task in tasks {
            match task.await.unwrap() {
                CreateOutcome::Created(event) => created_ids.push(event.ticket_id),
                CreateOutcome::Replayed { ticket, .. } => {
                    replayed_ids.insert(ticket.id);
                }
            }
        }
        assert_eq!(created_ids.len(), 1, "exactly one attempt creates");
        assert_eq!(
            replayed_ids.len(),
            1,
            "every other attempt answers that ticket"
        );
        assert!(replayed_ids.contains(&created_ids[0]));
        assert_eq!(event_count(&ctx.store).await, 1);
        assert_eq!(ctx.store.local_head().await.unwrap(), 1);
    }

    pub async fn idempotency_keys_are_pruned_by_age(ctx: Ctx) {
        let store = &ctx.store;
        let old = ticket(&us());
        store
            .create_ticket_idempotent(old.clone(), meta(HLC0), key("old", "a"))
            .await
            .unwrap();
        store
            .create_ticket_idempotent(ticket(&us()), meta(HLC0 + 5_000), key("new", "a"))
            .await
            .unwrap();
        // Nothing is older than the oldest key.
        assert_eq!(
            store
                .prune_idempotency_keys(ms(HLC0 as i64), 100)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .prune_idempotency_keys(ms(HLC0 as i64 + 1), 100)
                .await
                .unwrap(),
            1
        );
        let rows = key_rows(&ctx).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, "key-new");
        // A pruned key is free again: it creates a new ticket (the ticket it
        // named stays).
        let again = ticket(&us());
        let event = created(
            store
                .create_ticket_idempotent(again.clone(), meta(HLC0 + 6_000), key("old", "a"))
                .await
                .unwrap(),
        );
        assert_eq!(event.ticket_id, again.id);
        assert!(store.get_ticket(old.id).await.unwrap().is_some());
        // The batch limit holds.
        for i in 0..3 {
            store
                .create_ticket_idempotent(
                    ticket(&us()),
                    meta(HLC0 + 7_000 + i),
                    key(&format!("b{i}"), "a"),
                )
                .await
                .unwrap();
        }
        assert_eq!(
            store
                .prune_idempotency_keys(ms(HLC0 as i64 + 10_000), 2)
                .await
                .unwrap(),
            2
        );
        assert_eq!(key_rows(&ctx).await.len(), 3);
    }
}

/// Text search (issue 16): the cases `conformance!` runs on both backends.
#[cfg(test)]
mod search_cases {
    use std::collections::BTreeSet;

    use meridian_core::{EventEnvelope, EventKind, RegionId, Status, Ticket, TicketId, residency};
    use meridian_store::{Backend, Error, SearchQuery, Store, TicketFilter};
    use sqlx::{Connection, Row};

    use crate::{fixtures::*, harness::Ctx};

    fn query(text: &str) -> SearchQuery {
        SearchQuery {
            text: text.into(),
            owner_region: None,
            status: None,
            after: None,
            limit: 100,
        }
    }

    async fn found(store: &Store, text: &str) -> Vec<TicketId> {
        store
            .search_tickets(&query(text))
            .await
            .unwrap_or_else(|e| panic!("search {text:?}: {e}"))
            .tickets
            .iter()
            .map(|t| t.id)
            .collect()
    }

    fn worded(owner: &RegionId, subject: &str, body: &str, customer: &str) -> Ticket {
        let mut t = ticket(owner);
        t.subject = subject.into();
        t.body = body.into();
        t.customer = customer.into();
        t
    }

    /// How many tickets the index itself holds for `term`, read past the
    /// store's API (and its residency condition).
    async fn indexed(ctx: &Ctx, term: &str) -> i64 {
        let sql = match ctx.backend() {
            Backend::Sqlite => "SELECT COUNT(*) FROM ticket_search WHERE ticket_search MATCH $1",
            Backend::Postgres => {
                "SELECT COUNT(*) FROM ticket_search WHERE doc @@ to_tsquery('simple', $1)"
            }
        };
        let mut conn = ctx.raw().await;
        let count: i64 = sqlx::query(sql)
            .bind(term)
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        conn.close().await.unwrap();
        count
    }

    pub async fn search_finds_every_text_field_and_notes(ctx: Ctx) {
        let store = &ctx.store;
        let printer = worded(
            &us(),
            "Printer on fire",
            "The tray smokes.\nSend help",
            "ana@example.com",
        );
        let mut invoice = worded(
            &us(),
            "Invoice twice",
            "Charged twice for März",
            "Bob Müller",
        );
        invoice.status = Status::Pending;
        for (i, t) in [&printer, &invoice].into_iter().enumerate() {
            store
                .create_ticket(t.clone(), meta(HLC0 + i as u64))
                .await
                .unwrap();
        }
        store
            .add_note(
                note(
                    invoice.id,
                    &us(),
                    "Refund promised by Friday",
                    BASE_MS + 9_000,
                ),
                meta(HLC0 + 10),
            )
            .await
            .unwrap();

        for (text, expected) in [
            ("printer", vec![printer.id]),
            ("SMOKES", vec![printer.id]),
            ("ana@example.com", vec![printer.id]),
            ("example", vec![printer.id]),
            // A word's terms are a phrase: in this order, next to each other.
            ("com.example", vec![]),
            ("müller", vec![invoice.id]),
            ("MÄRZ", vec![invoice.id]),
            // Neither backend folds accents.
            ("marz", vec![]),
            ("refund", vec![invoice.id]),
            // Every word, anywhere in the ticket or its notes.
            ("invoice friday", vec![invoice.id]),
            ("printer friday", vec![]),
            // The last term is a prefix; the others are whole words.
            ("refu", vec![invoice.id]),
            ("invoice fri", vec![invoice.id]),
            ("refu invoice", vec![]),
            ("twice", vec![invoice.id]),
            ("zebra", vec![]),
        ] {
            assert_eq!(found(store, text).await, expected, "{text:?}");
        }

        // Either backend's query syntax is only separators.
        for (text, expected) in [
            (r#"printer" OR "invoice"#, vec![]),
            ("printer*", vec![printer.id]),
            ("fire' & !smokes:*", vec![printer.id]),
            ("NEAR(printer fire)", vec![]),
            ("on:*|fire", vec![printer.id]),
            ("printer:*|fire", vec![]),
            ("tray) (smokes", vec![printer.id]),
            ("-fire ^printer", vec![printer.id]),
            ("\\'\"printer\"'", vec![printer.id]),
        ] {
            assert_eq!(found(store, text).await, expected, "{text:?}");
        }
        // Hostile text, made deterministically from both backends' operator
        // characters, words and letters: an answer or a refusal naming
        // `query`, never a database error.
        let pieces = [
            "\"", "*", ":", ":*", "&", "|", "!", "(", ")", "'", "\\", "^", "+", "-", "<->", "{",
            "}", ".", " ", "NEAR", "AND", "OR", "NOT", "printer", "fire", "ü", "x", "0",
        ];
        let mut state: u64 = 0x5EED;
        for _ in 0..200 {
            let mut text = String::new();
            for _ in 0..8 {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                text.push_str(pieces[(state >> 33) as usize % pieces.len()]);
            }
            match store.search_tickets(&query(&text)).await {
                Ok(_) => {}
                Err(Error::Invalid(meridian_core::Error::InvalidField {
                    field: "query", ..
                })) => {}
                Err(other) => panic!("{text:?}: {other}"),
            }
        }
        for text in ["", "   ", "?!", r#""""#, "*:()&|!"] {
            let err = store.search_tickets(&query(text)).await.unwrap_err();
            assert!(
                matches!(
                    &err,
                    Error::Invalid(meridian_core::Error::InvalidField { field: "query", .. })
                ),
                "{text:?}: {err}"
            );
        }

        let filtered = |owner: Option<RegionId>, status: Option<Status>| SearchQuery {
            owner_region: owner,
            status,
            ..query("twice printer fire")
        };
        let ids = |page: meridian_store::TicketPage| -> Vec<TicketId> {
            page.tickets.iter().map(|t| t.id).collect()
        };
        let any = SearchQuery {
            text: "ana".into(),
            ..query("")
        };
        assert_eq!(
            ids(store.search_tickets(&any).await.unwrap()),
            vec![printer.id]
        );
        assert_eq!(
            ids(store.search_tickets(&filtered(None, None)).await.unwrap()),
            Vec::<TicketId>::new(),
            "every word"
        );
        let twice = |owner, status| SearchQuery {
            owner_region: owner,
            status,
            ..query("twice")
        };
        assert_eq!(
            ids(store
                .search_tickets(&twice(Some(us()), Some(Status::Pending)))
                .await
                .unwrap()),
            vec![invoice.id]
        );
        assert!(
            store
                .search_tickets(&twice(Some(eu()), None))
                .await
                .unwrap()
                .tickets
                .is_empty()
        );
        assert!(
            store
                .search_tickets(&twice(None, Some(Status::Open)))
                .await
                .unwrap()
                .tickets
                .is_empty()
        );
        // What a search returns is the ticket as list shows it.
        let listed = store.list_tickets(&TicketFilter::default()).await.unwrap();
        let searched = store.search_tickets(&query("twice")).await.unwrap();
        assert_eq!(
            searched.tickets[0],
            *listed.tickets.iter().find(|t| t.id == invoice.id).unwrap()
        );
    }

    pub async fn search_pages_like_list(ctx: Ctx) {
        let store = &ctx.store;
        let mut matching = Vec::new();
        for i in 0..15u64 {
            let mut t = if i % 4 == 3 {
                worded(&us(), "Unrelated", "nothing here", "acme")
            } else {
                worded(&us(), "Paging test", "a page of words", "acme")
            };
            t.status = if i % 2 == 0 {
                Status::Open
            } else {
                Status::Pending
            };
            store
                .create_ticket(t.clone(), meta(HLC0 + i))
                .await
                .unwrap();
            if i % 4 != 3 {
                matching.push(t);
            }
        }
        assert_eq!(matching.len(), 12);
        let walk = |status: Option<Status>, limit: u32| async move {
            let mut seen = Vec::new();
            let mut pages = Vec::new();
            let mut after = None;
            loop {
                let page = store
                    .search_tickets(&SearchQuery {
                        status,
                        after,
                        limit,
                        ..query("paging")
                    })
                    .await
                    .unwrap();
                pages.push(page.tickets.len());
                seen.extend(page.tickets.iter().map(|t| t.id));
                match page.next_after {
                    Some(next) => {
                        assert_eq!(Some(next), page.tickets.last().map(|t| t.id));
                        after = Some(next);
                    }
                    None => break,
                }
                assert!(pages.len() < 100, "pagination does not end");
            }
            (seen, pages)
        };
        let all: Vec<TicketId> = matching.iter().map(|t| t.id).collect();
        assert_eq!(walk(None, 5).await, (all.clone(), vec![5, 5, 2]));
        // A last page exactly full says no more, as list does.
        assert_eq!(walk(None, 4).await, (all.clone(), vec![4, 4, 4]));
        assert_eq!(walk(None, 500).await, (all.clone(), vec![12]));
        // Limits clamp as list's do.
        assert_eq!(walk(None, 0).await.1, vec![1; 12]);
        let open: Vec<TicketId> = matching
            .iter()
            .filter(|t| t.status == Status::Open)
            .map(|t| t.id)
            .collect();
        assert_eq!(walk(Some(Status::Open), 2).await.0, open);
        // The same order and cursor as list_tickets.
        let listed = store
            .list_tickets(&TicketFilter {
                status: Some(Status::Open),
                limit: 2,
                ..TicketFilter::default()
            })
            .await
            .unwrap();
        let searched = store
            .search_tickets(&SearchQuery {
                status: Some(Status::Open),
                limit: 2,
                ..query("paging")
            })
            .await
            .unwrap();
        assert_eq!(listed, searched);
    }

    pub async fn search_follows_replication_text_changes_and_early_notes(ctx: Ctx) {
        let store = &ctx.store;
        let mut eu_log = Origin::new(eu());
        let mut apac_log = Origin::new(apac());
        let (mut theirs, _) = eu_log.create();
        theirs.subject = "Replicated gearbox".into();
        theirs.residency = BTreeSet::new();
        eu_log.seq -= 1;
        let created = eu_log.event(
            theirs.id,
            theirs.owner.epoch,
            EventKind::TicketCreated {
                ticket: Box::new(theirs.clone()),
            },
        );
        // apac's note ("from afar") arrives before the ticket it belongs to.
        let early = apac_log.note(theirs.id, theirs.owner.epoch);
        store.apply_remote(&apac(), vec![early]).await.unwrap();
        assert!(found(store, "afar").await.is_empty(), "no ticket yet");
        store.apply_remote(&eu(), vec![created]).await.unwrap();
        assert_eq!(found(store, "gearbox").await, vec![theirs.id]);
        assert_eq!(found(store, "gearbox afar").await, vec![theirs.id]);
        let later = eu_log.note(theirs.id, theirs.owner.epoch);
        store.apply_remote(&eu(), vec![later]).await.unwrap();
        assert_eq!(found(store, "afar").await, vec![theirs.id]);

        // Text changed under the store (a refold's full-row rewrite writes
        // every column) is reindexed; a row removed leaves the index.
        let mut conn = ctx.raw().await;
        sqlx::query("UPDATE tickets SET subject = $1 WHERE ticket_id = $2")
            .bind("Renamed flywheel")
            .bind(theirs.id.to_string())
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(found(store, "flywheel afar").await, vec![theirs.id]);
        assert!(found(store, "gearbox").await.is_empty());
        sqlx::query("DELETE FROM notes WHERE ticket_id = $1")
            .bind(theirs.id.to_string())
            .execute(&mut conn)
            .await
            .unwrap();
        assert!(found(store, "afar").await.is_empty());
        assert_eq!(found(store, "flywheel").await, vec![theirs.id]);
        sqlx::query("DELETE FROM tickets WHERE ticket_id = $1")
            .bind(theirs.id.to_string())
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        assert!(found(store, "flywheel").await.is_empty());
        assert_eq!(indexed(&ctx, "flywheel").await, 0);
    }

    /// Residency: this store is us-east. A ticket pinned to eu-west reaches
    /// it as replication ships it (`residency::outgoing`: the redacted
    /// copy), and nothing of its text is indexed or found here, while a
    /// ticket pinned to us-east, written here or replicated in full, is.
    pub async fn a_pinned_tickets_text_is_indexed_only_inside_its_residency(ctx: Ctx) {
        let store = &ctx.store;
        let mut eu_log = Origin::new(eu());
        let shipped = |event: &EventEnvelope, set: &BTreeSet<RegionId>| {
            residency::outgoing(event, Some(set), &us()).expect("eu-west ships it to us-east")
        };
        let pin = |ticket: &mut Ticket, set: &[RegionId], words: [&str; 3]| {
            ticket.residency = set.iter().cloned().collect();
            ticket.subject = words[0].into();
            ticket.body = words[1].into();
            ticket.customer = words[2].into();
        };
        let make = |log: &mut Origin, set: &[RegionId], words: [&str; 3]| {
            let (mut t, _) = log.create();
            log.seq -= 1;
            pin(&mut t, set, words);
            let event = log.event(
                t.id,
                t.owner.epoch,
                EventKind::TicketCreated {
                    ticket: Box::new(t.clone()),
                },
            );
            (t, event)
        };
        let (elsewhere, created) = make(
            &mut eu_log,
            &[eu()],
            ["Zanzibar ledger", "Kestrel account", "quokka@eu.example"],
        );
        let mut note_event = eu_log.note(elsewhere.id, elsewhere.owner.epoch);
        if let EventKind::NoteAdded { note } = &mut note_event.kind {
            note.body = "Pelican settlement".into();
        }
        let (shared, shared_created) = make(
            &mut eu_log,
            &[us(), eu()],
            ["Narwhal invoice", "shared text", "both@example.org"],
        );
        let set = elsewhere.residency.clone();
        let batch = vec![
            shipped(&created, &set),
            shipped(&note_event, &set),
            shipped(&shared_created, &shared.residency),
        ];
        assert!(residency::is_redacted(&batch[0].kind) && residency::is_redacted(&batch[1].kind));
        assert_eq!(store.apply_remote(&eu(), batch).await.unwrap(), 3);

        let mut mine = ticket(&us());
        mine.residency = [us()].into();
        mine.subject = "Wombat outage".into();
        store.create_ticket(mine.clone(), meta(HLC0)).await.unwrap();
        store
            .add_note(
                note(mine.id, &us(), "Platypus escalation", BASE_MS + 9_000),
                meta(HLC0 + 1),
            )
            .await
            .unwrap();

        assert_eq!(found(store, "wombat platypus").await, vec![mine.id]);
        assert_eq!(found(store, "narwhal").await, vec![shared.id]);
        for word in [
            "zanzibar",
            "ledger",
            "kestrel",
            "quokka",
            "pelican",
            "settlement",
        ] {
            assert!(
                found(store, word).await.is_empty(),
                "{word} found outside its residency"
            );
            assert_eq!(
                indexed(&ctx, word).await,
                0,
                "{word} indexed outside its residency"
            );
        }
        assert_eq!(indexed(&ctx, "wombat").await, 1);
        // The copy is here all the same, without its text.
        let copy = store.get_ticket(elsewhere.id).await.unwrap().unwrap();
        assert_eq!((copy.ticket.subject.as_str(), copy.notes.len()), ("", 1));
    }
}
