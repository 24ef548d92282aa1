//! What an event does to a ticket's projection, and under which guard: the
//! one place where Meridian's ownership rules meet the projection.
//!
//! For every event, [`plan`] returns the [`Change`] to make and the
//! [`Guard`] that the current projection must satisfy for the change to be
//! made (epoch equal or lower, owner, pending handoff, allowed statuses).
//! The store turns the guard into a `WHERE` clause and the change into
//! `SET`/`INSERT` mechanically, so the compare-and-set stays in one SQL
//! statement; when the guard matches no row, the store reads the ticket and
//! asks [`missed`] what that means (a refusal to explain, a refold, or
//! nothing). [`After`] names the checks of the ticket's log that follow an
//! event whatever its change did (a creation that arrived after its
//! history, an ownership move that finds writes made after it).
//!
//! The same functions drive [`crate::replay`], which folds a whole log, and
//! [`Projection`], the in-memory executor that tests and the simulation use
//! to check that incremental application in any arrival order equals the
//! fold (the property test below).

use jiff::Timestamp;

use crate::event::kind_name;
use crate::{
    Epoch, Error, EventEnvelope, EventKind, Ownership, RegionId, Status, Ticket, TicketChanges,
    TicketId,
};

/// Who is writing: this region's own command, or a replica applying a peer's
/// event (which its owner already decided; the replica only keeps epochs
/// growing so that every order converges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Local,
    Replica,
}

/// The condition on the ticket's epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpochGuard {
    Equal(Epoch),
    /// Strictly lower than this epoch: ownership only moves forward.
    Below(Epoch),
}

/// The condition on the pending handoff offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffGuard {
    Any,
    /// No offer pending.
    Absent,
    /// An offer to this region pending.
    To(RegionId),
}

/// What the ticket's current projection must hold for a change to be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub epoch: EpochGuard,
    /// The region that must own the ticket.
    pub owner: Option<RegionId>,
    pub handoff: HandoffGuard,
    /// The statuses the ticket may be in; `None` is any.
    pub statuses: Option<Vec<Status>>,
}

impl Guard {
    fn epoch(epoch: EpochGuard) -> Self {
        Self {
            epoch,
            owner: None,
            handoff: HandoffGuard::Any,
            statuses: None,
        }
    }

    /// Whether `ticket` satisfies the guard: the same test the store's
    /// `WHERE` clause makes.
    pub fn holds(&self, ticket: &Ticket) -> bool {
        let epoch = match self.epoch {
            EpochGuard::Equal(e) => ticket.owner.epoch == e,
            EpochGuard::Below(e) => ticket.owner.epoch < e,
        };
        let owner = self
            .owner
            .as_ref()
            .is_none_or(|o| &ticket.owner.owner_region == o);
        let handoff = match &self.handoff {
            HandoffGuard::Any => true,
            HandoffGuard::Absent => ticket.handoff_to.is_none(),
            HandoffGuard::To(to) => ticket.handoff_to.as_ref() == Some(to),
        };
        let status = self
            .statuses
            .as_ref()
            .is_none_or(|allowed| allowed.contains(&ticket.status));
        epoch && owner && handoff && status
    }
}

/// The fields an update sets; `None` leaves a field alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set<'a> {
    /// Owner-scoped field changes.
    pub fields: Option<&'a TicketChanges>,
    pub owner: Option<Ownership>,
    /// `Some(None)` clears the pending offer.
    pub handoff_to: Option<Option<RegionId>>,
    /// Clears the assignee: an ownership change leaves the ticket to the
    /// new owner's queue, since an assignee is always an agent of the
    /// owning region's roster.
    pub clears_assignee: bool,
    /// `updated_at` becomes at least this (never moves backwards).
    pub touched_at: Timestamp,
}

impl Set<'_> {
    /// Makes the change on an in-memory ticket, as the store's `SET` does.
    pub fn apply_to(&self, ticket: &mut Ticket) {
        if let Some(fields) = self.fields {
            ticket.apply(fields, self.touched_at);
        }
        if let Some(owner) = &self.owner {
            ticket.owner = owner.clone();
        }
        if let Some(handoff_to) = &self.handoff_to {
            ticket.handoff_to.clone_from(handoff_to);
        }
        if self.clears_assignee {
            ticket.assignee = None;
        }
        ticket.updated_at = ticket.updated_at.max(self.touched_at);
    }
}

/// The change an event makes to the projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    /// The event projects nowhere (notes have their own table; regional
    /// records belong to no ticket).
    None,
    /// Insert the ticket unless its id is already there (the guard: absent).
    Create(&'a Ticket),
    /// Set fields where the guard holds.
    Update { set: Set<'a>, guard: Guard },
}

/// A look at the ticket's log after the event, whatever its change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    Nothing,
    /// Refold if the log holds events of [`HISTORY_KINDS`] for the ticket:
    /// they arrived before its creation and wait in the log.
    RefoldIfHistory,
    /// Refold if the log holds changes ([`EventKind::CHANGE_KINDS`]) by
    /// `from` at `epoch` from `first_stale` on: writes this replica applied
    /// that the ownership move has just made stale.
    RefoldIfWrittenAfter {
        from: RegionId,
        epoch: Epoch,
        first_stale: u64,
    },
}

/// What to do with an event: the guarded change, then the follow-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<'a> {
    pub ticket_id: TicketId,
    pub change: Change<'a>,
    pub after: After,
}

/// Why a local write is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotFound(TicketId),
    /// The ticket (or note, or record) is already there.
    Duplicate,
    /// Another region owns the ticket, or owns it at another epoch.
    Fenced {
        owner: RegionId,
        epoch: Epoch,
    },
    Invalid(Error),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Refusal::Invalid(e)
    }
}

/// What a change whose guard matched no row means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missed {
    /// A local write the projection does not allow, with the reason.
    Refused(Refusal),
    /// The event's effect depends on history the projection does not hold:
    /// rebuild the ticket from its log with [`crate::replay`].
    Refold,
    /// The ticket is not here yet: the event waits in the log and is folded
    /// in when the creation arrives.
    Wait,
    /// Superseded by what is here already: the log keeps it, nothing else.
    Ignore,
}

/// The kinds whose events shape a ticket's projection besides its creation:
/// what a refold reads, and what a late creation looks for.
pub const HISTORY_KINDS: [&str; 7] = [
    kind_name::TICKET_UPDATED,
    kind_name::SLA_WARNING,
    kind_name::SLA_BREACHED,
    kind_name::HANDOFF_OFFERED,
    kind_name::HANDOFF_ACCEPTED,
    kind_name::HANDOFF_REFUSED,
    kind_name::TAKEN_OVER,
];

/// The instant a replica records for an event: its HLC's milliseconds.
pub fn event_instant(event: &EventEnvelope) -> Timestamp {
    let millis = i64::try_from(event.hlc_time.millis()).unwrap_or(i64::MAX);
    Timestamp::from_millisecond(millis).unwrap_or(Timestamp::MAX)
}

/// The change `event` makes and the guard it is made under. A local write
/// is checked first (what the event itself must satisfy); a replicated one
/// was decided by its writer and is never refused here.
pub fn plan(event: &EventEnvelope, source: Source) -> Result<Plan<'_>, Refusal> {
    let local = source == Source::Local;
    let writer = &event.origin_region;
    let touched_at = event_instant(event);
    let (change, after) = match &event.kind {
        EventKind::TicketCreated { ticket } => {
            // A region creates only tickets it owns: creating is an
            // owner-scoped write like any other.
            if local && &ticket.owner.owner_region != writer {
                return Err(Refusal::Fenced {
                    owner: ticket.owner.owner_region.clone(),
                    epoch: ticket.owner.epoch,
                });
            }
            let after = if local {
                After::Nothing
            } else {
                After::RefoldIfHistory
            };
            (Change::Create(ticket), after)
        }
        kind @ (EventKind::TicketUpdated { .. }
        | EventKind::SlaWarning { .. }
        | EventKind::SlaBreached { .. }) => {
            let Some(changes) = kind.owner_changes() else {
                return Err(Refusal::Invalid(Error::invalid(
                    "kind",
                    format!("{} carries no owner-scoped change", kind.name()),
                )));
            };
            let mut guard = Guard::epoch(EpochGuard::Equal(changes.epoch));
            if local {
                if changes.is_empty() {
                    return Err(Error::invalid("changes", "names no field to change").into());
                }
                if let Some(Some(assignee)) = &changes.assignee {
                    crate::ticket::check_assignee(assignee)?;
                }
                // Only the owner, with no offer pending, and only from a
                // status that may move to the requested one.
                guard.owner = Some(writer.clone());
                guard.handoff = HandoffGuard::Absent;
                guard.statuses = changes.status.map(|to| {
                    Status::ALL
                        .into_iter()
                        .filter(|from| *from == to || from.can_become(to))
                        .collect()
                });
            }
            let set = Set {
                fields: Some(changes),
                owner: None,
                handoff_to: None,
                clears_assignee: false,
                touched_at,
            };
            (Change::Update { set, guard }, After::Nothing)
        }
        EventKind::HandoffOffered { to, .. } => {
            let mut guard = Guard::epoch(EpochGuard::Equal(event.epoch));
            guard.handoff = HandoffGuard::Absent;
            if local {
                guard.owner = Some(writer.clone());
            }
            let set = Set {
                fields: None,
                owner: None,
                handoff_to: Some(Some(to.clone())),
                clears_assignee: false,
                touched_at,
            };
            (Change::Update { set, guard }, After::Nothing)
        }
        EventKind::HandoffRefused { to, .. } => {
            let mut guard = Guard::epoch(EpochGuard::Equal(event.epoch));
            guard.handoff = HandoffGuard::To(to.clone());
            if local {
                guard.owner = Some(writer.clone());
            }
            let set = Set {
                fields: None,
                owner: None,
                handoff_to: Some(None),
                clears_assignee: false,
                touched_at,
            };
            (Change::Update { set, guard }, After::Nothing)
        }
        EventKind::HandoffAccepted {
            from,
            offer_seq,
            previous_epoch,
        } => {
            let guard = if local {
                // The acceptance takes exactly the offer pending here.
                let mut guard = Guard::epoch(EpochGuard::Equal(*previous_epoch));
                guard.handoff = HandoffGuard::To(writer.clone());
                guard
            } else {
                // Epochs only grow: an acceptance at a greater epoch wins
                // whatever this replica saw before.
                Guard::epoch(EpochGuard::Below(event.epoch))
            };
            let after = After::RefoldIfWrittenAfter {
                from: from.clone(),
                epoch: *previous_epoch,
                first_stale: *offer_seq,
            };
            (
                Change::Update {
                    set: ownership_set(event, touched_at),
                    guard,
                },
                after,
            )
        }
        EventKind::TakenOver {
            from,
            previous_epoch,
            through_seq,
            ..
        } => {
            let mut guard = Guard::epoch(EpochGuard::Below(event.epoch));
            if local {
                // The successor takes only what the failed region owned; an
                // offer it had pending dies with its ownership.
                guard.owner = Some(from.clone());
            }
            let after = After::RefoldIfWrittenAfter {
                from: from.clone(),
                epoch: *previous_epoch,
                first_stale: through_seq.saturating_add(1),
            };
            (
                Change::Update {
                    set: ownership_set(event, touched_at),
                    guard,
                },
                after,
            )
        }
        EventKind::NoteAdded { .. }
        | EventKind::ShiftSummary { .. }
        | EventKind::IntakeSpike { .. }
        | EventKind::IntakeSpikeCleared { .. } => (Change::None, After::Nothing),
    };
    Ok(Plan {
        ticket_id: event.ticket_id,
        change,
        after,
    })
}

fn ownership_set(event: &EventEnvelope, touched_at: Timestamp) -> Set<'static> {
    Set {
        fields: None,
        owner: Some(Ownership {
            owner_region: event.origin_region.clone(),
            epoch: event.epoch,
        }),
        handoff_to: Some(None),
        clears_assignee: true,
        touched_at,
    }
}

/// What it means that the planned change of `event` matched no row, given
/// the ticket as it is now (`None`: not here). For a local write, the
/// reason it is refused; for a replicated one, whether to refold.
pub fn missed(event: &EventEnvelope, source: Source, current: Option<&Ticket>) -> Missed {
    let local = source == Source::Local;
    let Some(ticket) = current else {
        return match (&event.kind, local) {
            (EventKind::TicketCreated { .. }, _) => Missed::Ignore,
            (_, true) => Missed::Refused(Refusal::NotFound(event.ticket_id)),
            (_, false) => Missed::Wait,
        };
    };
    let here = &event.origin_region;
    let fenced = || {
        Missed::Refused(Refusal::Fenced {
            owner: ticket.owner.owner_region.clone(),
            epoch: ticket.owner.epoch,
        })
    };
    if !local {
        return match event.kind.owner_changes() {
            // Another epoch here: the write is stale (a conflict) or was
            // made before an ownership move that arrived first. The fold
            // tells which.
            Some(_) => Missed::Refold,
            // A superseded ownership step still touched the ticket when it
            // was made, and its HLC may be later than the step that
            // superseded it (concurrent takeovers): the fold says when the
            // ticket was last touched (found by the simulation, seed 100).
            None if event.kind.is_ownership() => Missed::Refold,
            None => Missed::Ignore,
        };
    }
    match &event.kind {
        EventKind::TicketCreated { .. } => Missed::Refused(Refusal::Duplicate),
        kind @ (EventKind::TicketUpdated { .. }
        | EventKind::SlaWarning { .. }
        | EventKind::SlaBreached { .. }) => {
            let Some(changes) = kind.owner_changes() else {
                return fenced();
            };
            if ticket.owner.epoch != changes.epoch || &ticket.owner.owner_region != here {
                return fenced();
            }
            if let Some(to) = &ticket.handoff_to {
                return Missed::Refused(Error::HandoffPending { to: to.clone() }.into());
            }
            match changes.status {
                Some(to) if to != ticket.status && !ticket.status.can_become(to) => {
                    Missed::Refused(
                        Error::IllegalTransition {
                            from: ticket.status,
                            to,
                        }
                        .into(),
                    )
                }
                // Nothing else can make the guard miss; should it happen,
                // the caller still learns who owns the ticket.
                _ => fenced(),
            }
        }
        EventKind::HandoffOffered { .. } => match &ticket.handoff_to {
            Some(to) if &ticket.owner.owner_region == here => {
                Missed::Refused(Error::HandoffPending { to: to.clone() }.into())
            }
            _ => fenced(),
        },
        EventKind::HandoffAccepted { from, .. } if ticket.handoff_to.as_ref() != Some(here) => {
            Missed::Refused(
                Error::NoSuchOffer {
                    from: from.clone(),
                    to: here.clone(),
                }
                .into(),
            )
        }
        EventKind::HandoffRefused { to, .. } if ticket.handoff_to.as_ref() != Some(to) => {
            Missed::Refused(
                Error::NoSuchOffer {
                    from: here.clone(),
                    to: to.clone(),
                }
                .into(),
            )
        }
        EventKind::NoteAdded { .. }
        | EventKind::ShiftSummary { .. }
        | EventKind::IntakeSpike { .. }
        | EventKind::IntakeSpikeCleared { .. } => Missed::Ignore,
        _ => fenced(),
    }
}

/// Whether the follow-up `after` finds what it looks for in `log` (the
/// ticket's events held here): the store asks the same with a query.
pub fn after_matches(after: &After, ticket_id: TicketId, log: &[EventEnvelope]) -> bool {
    match after {
        After::Nothing => false,
        After::RefoldIfHistory => log
            .iter()
            .any(|e| e.ticket_id == ticket_id && HISTORY_KINDS.contains(&e.kind.name())),
        After::RefoldIfWrittenAfter {
            from,
            epoch,
            first_stale,
        } => log.iter().any(|e| {
            e.ticket_id == ticket_id
                && &e.origin_region == from
                && e.epoch == *epoch
                && e.origin_seq >= *first_stale
                && e.kind.owner_changes().is_some()
        }),
    }
}

/// One ticket's projection kept in memory by executing plans exactly as the
/// store does (guarded change, [`missed`], [`After`], refold): what the
/// property test compares with [`crate::replay`], and what a model of the
/// store can run.
#[derive(Debug, Clone, Default)]
pub struct Projection {
    pub ticket: Option<Ticket>,
    /// Every event of the ticket held here, in arrival order.
    pub log: Vec<EventEnvelope>,
    /// Stale writes found by the last refold.
    pub stale: Vec<crate::StaleWrite>,
}

impl Projection {
    /// Applies one event as a replica does; a local write's refusal is
    /// returned and leaves everything as it was.
    pub fn apply(&mut self, event: &EventEnvelope, source: Source) -> Result<(), Refusal> {
        let plan = plan(event, source)?;
        let matched = match &plan.change {
            Change::None => true,
            Change::Create(ticket) => match self.ticket {
                Some(_) => false,
                None => {
                    self.ticket = Some((*ticket).clone());
                    true
                }
            },
            Change::Update { set, guard } => match self.ticket.as_mut() {
                Some(ticket) if guard.holds(ticket) => {
                    set.apply_to(ticket);
                    true
                }
                _ => false,
            },
        };
        let mut refold = false;
        if !matched {
            match missed(event, source, self.ticket.as_ref()) {
                Missed::Refused(refusal) => return Err(refusal),
                Missed::Refold => refold = true,
                Missed::Wait | Missed::Ignore => {}
            }
        }
        self.log.push(event.clone());
        if (refold || after_matches(&plan.after, event.ticket_id, &self.log))
            && let Some(replayed) = crate::replay(&self.log)
        {
            self.ticket = Some(replayed.ticket);
            self.stale = replayed.stale;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        HandoffNote, HlcTimestamp, Note, NoteId, Priority, replay, ticket::tests::sample_ticket,
    };
    use proptest::prelude::*;

    const REGIONS: [&str; 3] = ["us-east", "eu-west", "apac-south"];

    fn region(index: usize) -> RegionId {
        RegionId::new(REGIONS[index]).unwrap()
    }

    /// Writes one ticket's history as the regions would, each region's log
    /// dense, from a list of random steps: owner updates, offers, accepted
    /// and refused offers, takeovers at a random cursor of the failed
    /// owner's log, and late writes of a region that was taken over.
    struct Writer {
        ticket: Ticket,
        logs: [Vec<EventEnvelope>; 3],
        clock: u64,
        owner: usize,
        epoch: Epoch,
        /// The seq at which the owner's ownership of `epoch` began.
        owned_from: u64,
        pending: Option<(usize, u64)>,
        /// A region taken over, and the epoch it still believes it holds.
        deposed: Option<(usize, Epoch)>,
    }

    impl Writer {
        fn new() -> Self {
            let ticket = sample_ticket();
            let mut writer = Self {
                epoch: ticket.owner.epoch,
                ticket: ticket.clone(),
                logs: Default::default(),
                clock: 1_000,
                owner: 0,
                owned_from: 1,
                pending: None,
                deposed: None,
            };
            let epoch = writer.epoch;
            writer.push(
                0,
                epoch,
                EventKind::TicketCreated {
                    ticket: Box::new(ticket),
                },
            );
            writer
        }

        fn push(&mut self, origin: usize, epoch: Epoch, kind: EventKind) -> u64 {
            self.clock += 7;
            let seq = self.logs[origin].len() as u64 + 1;
            self.logs[origin].push(EventEnvelope {
                origin_region: region(origin),
                origin_seq: seq,
                ticket_id: self.ticket.id,
                epoch,
                hlc_time: HlcTimestamp::new(self.clock, 0),
                traceparent: None,
                actor: None,
                kind,
            });
            seq
        }

        fn update(&mut self, origin: usize, epoch: Epoch, pick: u8) {
            let changes = TicketChanges {
                epoch,
                status: pick
                    .is_multiple_of(3)
                    .then(|| Status::ALL[usize::from(pick / 3) % 6]),
                assignee: (pick % 3 == 1).then(|| Some(format!("agent-{}", pick % 5))),
                priority: (pick % 3 == 2).then(|| Priority::ALL[usize::from(pick / 3) % 4]),
                sla: None,
            };
            self.push(origin, epoch, EventKind::TicketUpdated { changes });
        }

        fn step(&mut self, action: u8, pick: u8) {
            let other = (self.owner + 1 + usize::from(pick % 2)) % 3;
            match (action % 6, self.pending) {
                (0, None) => self.update(self.owner, self.epoch, pick),
                (1, None) => {
                    let note = Note {
                        id: NoteId::new_v7(Timestamp::UNIX_EPOCH, [pick; 10]),
                        ticket_id: self.ticket.id,
                        region: region(self.owner),
                        author: "ana".into(),
                        body: "handoff".into(),
                        created_at: Timestamp::UNIX_EPOCH,
                        auto: false,
                        visibility: crate::Visibility::Internal,
                    };
                    let handoff = HandoffNote {
                        current_status: Status::Open,
                        last_action: "looked".into(),
                        next_action: "fix".into(),
                        deadline: None,
                        text: String::new(),
                        author: "ana".into(),
                        auto: false,
                    };
                    let to = region(other);
                    let seq = self.push(
                        self.owner,
                        self.epoch,
                        EventKind::HandoffOffered { to, handoff, note },
                    );
                    self.pending = Some((other, seq));
                }
                (2, Some((to, offer_seq))) => {
                    let previous = self.epoch;
                    let epoch = previous.next_for(to as u16);
                    let kind = EventKind::HandoffAccepted {
                        from: region(self.owner),
                        offer_seq,
                        previous_epoch: previous,
                    };
                    self.owned_from = self.push(to, epoch, kind);
                    (self.owner, self.epoch, self.pending) = (to, epoch, None);
                }
                (3, Some((to, _))) => {
                    let kind = EventKind::HandoffRefused {
                        to: region(to),
                        reason: "off shift".into(),
                    };
                    self.push(self.owner, self.epoch, kind);
                    self.pending = None;
                }
                (4, _) => {
                    let head = self.logs[self.owner].len() as u64;
                    let span = head - self.owned_from + 1;
                    let through_seq = self.owned_from + u64::from(pick) % span;
                    let previous = self.epoch;
                    let epoch = previous.next_for(other as u16);
                    let kind = EventKind::TakenOver {
                        from: region(self.owner),
                        fencing_token: u64::from(pick),
                        previous_epoch: previous,
                        through_seq,
                    };
                    self.deposed = Some((self.owner, previous));
                    self.owned_from = self.push(other, epoch, kind);
                    (self.owner, self.epoch, self.pending) = (other, epoch, None);
                }
                (5, _) => {
                    if let Some((deposed, epoch)) = self.deposed {
                        self.update(deposed, epoch, pick);
                    }
                }
                _ => {}
            }
        }
    }

    proptest! {
        /// Replicas apply each origin's log in order, the origins
        /// interleaved any way. Executing the plans event by event (the
        /// guarded change, `missed`, `After`, refolds) ends where `replay`
        /// of the whole log ends: the same ticket, the same conflicts.
        #[test]
        fn incremental_plans_in_any_arrival_order_equal_replay(
            steps in proptest::collection::vec((0u8..6, any::<u8>()), 0..24),
            picks in proptest::collection::vec(any::<u8>(), 80),
        ) {
            let mut writer = Writer::new();
            for (action, pick) in steps {
                writer.step(action, pick);
            }
            let all: Vec<EventEnvelope> = writer.logs.iter().flatten().cloned().collect();
            let expected = replay(&all).unwrap();

            let mut next = [0usize; 3];
            let mut projection = Projection::default();
            let mut picks = picks.into_iter().cycle();
            for _ in 0..all.len() {
                let open: Vec<usize> = (0..3).filter(|o| next[*o] < writer.logs[*o].len()).collect();
                let origin = open[usize::from(picks.next().unwrap_or(0)) % open.len()];
                let event = &writer.logs[origin][next[origin]];
                next[origin] += 1;
                prop_assert_eq!(projection.apply(event, Source::Replica), Ok(()));
            }
            prop_assert_eq!(projection.ticket.as_ref(), Some(&expected.ticket));
            prop_assert_eq!(&projection.stale, &expected.stale);
        }

        /// The guard a local write is planned under holds exactly when the
        /// projection lets the writer make it: on a miss, `missed` always
        /// names a refusal.
        #[test]
        fn a_local_write_that_misses_is_refused_with_a_reason(
            status in proptest::sample::select(Status::ALL.to_vec()),
            to in proptest::sample::select(Status::ALL.to_vec()),
            owner in 0usize..3,
            pending in proptest::option::of(0usize..3),
        ) {
            let mut ticket = sample_ticket();
            ticket.status = status;
            ticket.owner.owner_region = region(owner);
            ticket.handoff_to = pending.map(region);
            let event = EventEnvelope {
                origin_region: region(0),
                origin_seq: 2,
                ticket_id: ticket.id,
                epoch: ticket.owner.epoch,
                hlc_time: HlcTimestamp::new(5_000, 0),
                traceparent: None,
                actor: None,
                kind: EventKind::TicketUpdated { changes: TicketChanges {
                    epoch: ticket.owner.epoch,
                    status: Some(to),
                    ..TicketChanges::default()
                }},
            };
            let plan = plan(&event, Source::Local).unwrap();
            let Change::Update { guard, .. } = &plan.change else {
                panic!("an update plans an update");
            };
            let allowed = owner == 0 && pending.is_none() && (status == to || status.can_become(to));
            prop_assert_eq!(guard.holds(&ticket), allowed);
            if !allowed {
                let refused = matches!(missed(&event, Source::Local, Some(&ticket)), Missed::Refused(_));
                prop_assert!(refused);
            }
        }
    }

    #[test]
    fn a_region_creates_only_tickets_it_owns() {
        let ticket = sample_ticket();
        let event = EventEnvelope {
            origin_region: region(1),
            origin_seq: 1,
            ticket_id: ticket.id,
            epoch: ticket.owner.epoch,
            hlc_time: HlcTimestamp::new(1, 0),
            traceparent: None,
            actor: None,
            kind: EventKind::TicketCreated {
                ticket: Box::new(ticket.clone()),
            },
        };
        assert_eq!(
            plan(&event, Source::Local).map(|_| ()),
            Err(Refusal::Fenced {
                owner: region(0),
                epoch: ticket.owner.epoch
            })
        );
        assert!(plan(&event, Source::Replica).is_ok());
    }
}
