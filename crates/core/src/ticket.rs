//! The ticket, its status machine and the owner-scoped changes to it.

use std::{collections::BTreeSet, fmt, str::FromStr};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::text::{TextKind, check_free_text};
use crate::{
    Epoch, Error, HandoffNote, Ownership, RegionId, Result, Skill, SlaDeadlines, TicketChanges,
    TicketId, Tier, Visibility,
};

/// Limits on ticket fields. Requests beyond them are refused, naming the field.
pub mod limits {
    pub const SUBJECT_CHARS_MAX: usize = 250;
    pub const BODY_BYTES_MAX: usize = 64 * 1024;
    pub const CUSTOMER_CHARS_MAX: usize = 200;
    pub const ASSIGNEE_CHARS_MAX: usize = 200;
    pub const LANGUAGE_CHARS_MAX: usize = 35;
    pub const SKILLS_MAX: usize = 32;
    pub const RESIDENCY_REGIONS_MAX: usize = 16;
}

/// Where a ticket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    New,
    Open,
    Pending,
    Escalated,
    Solved,
    Closed,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::New,
        Status::Open,
        Status::Pending,
        Status::Escalated,
        Status::Solved,
        Status::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Open => "open",
            Status::Pending => "pending",
            Status::Escalated => "escalated",
            Status::Solved => "solved",
            Status::Closed => "closed",
        }
    }

    /// The statuses this one may move to. `new` is only ever a starting point;
    /// `solved` may be reopened; `closed` is final.
    pub fn successors(self) -> &'static [Status] {
        use Status::*;
        match self {
            New => &[Open, Pending, Escalated, Solved],
            Open => &[Pending, Escalated, Solved],
            Pending => &[Open, Escalated, Solved],
            Escalated => &[Open, Pending, Solved],
            Solved => &[Open, Closed],
            Closed => &[],
        }
    }

    pub fn can_become(self, to: Status) -> bool {
        self.successors().contains(&to)
    }

    /// Open tickets are the ones a region must keep owning and hand off.
    pub fn is_open(self) -> bool {
        !matches!(self, Status::Solved | Status::Closed)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "status",
                    format!(
                        "{} is not one of new, open, pending, escalated, solved, closed",
                        crate::text::echo(s)
                    ),
                )
            })
    }
}

/// How urgent a ticket is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Urgent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "priority",
                    format!(
                        "{} is not one of low, normal, high, urgent",
                        crate::text::echo(s)
                    ),
                )
            })
    }
}

/// A ticket as every region projects it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: TicketId,
    pub subject: String,
    pub body: String,
    pub customer: String,
    pub tier: Tier,
    pub skills: BTreeSet<Skill>,
    pub language: String,
    /// The regions the ticket's data must stay in; empty means anywhere.
    pub residency: BTreeSet<RegionId>,
    pub status: Status,
    pub assignee: Option<String>,
    pub priority: Priority,
    pub owner: Ownership,
    /// The region this ticket is being handed to: set by the owner's offer,
    /// cleared by the target's acceptance (which moves `owner`) or by a
    /// refusal. While set, the owner makes no owner-scoped change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff_to: Option<RegionId>,
    pub sla: SlaDeadlines,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// What a client supplies to create a ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTicket {
    pub subject: String,
    pub body: String,
    pub customer: String,
    pub tier: Tier,
    pub skills: BTreeSet<Skill>,
    pub language: String,
    pub residency: BTreeSet<RegionId>,
    pub priority: Priority,
}

/// An owner-scoped change requested by a client: `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketPatch {
    pub status: Option<Status>,
    /// `Some(None)` clears the assignee.
    pub assignee: Option<Option<String>>,
    pub priority: Option<Priority>,
}

fn check_text(
    field: &'static str,
    value: &str,
    required: bool,
    max_chars: usize,
    kind: TextKind,
) -> Result<()> {
    if required && value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(Error::invalid(
            field,
            format!("is {chars} characters; the limit is {max_chars}"),
        ));
    }
    check_free_text(field, value, kind)
}

/// Checks an assignee name.
pub fn check_assignee(assignee: &str) -> Result<()> {
    check_text(
        "assignee",
        assignee,
        true,
        limits::ASSIGNEE_CHARS_MAX,
        TextKind::Line,
    )
}

impl NewTicket {
    /// Checks every field, naming the first one that is wrong.
    pub fn validate(&self) -> Result<()> {
        check_text(
            "subject",
            &self.subject,
            true,
            limits::SUBJECT_CHARS_MAX,
            TextKind::Line,
        )?;
        if self.body.len() > limits::BODY_BYTES_MAX {
            return Err(Error::invalid(
                "body",
                format!(
                    "is {} bytes; the limit is {}",
                    self.body.len(),
                    limits::BODY_BYTES_MAX
                ),
            ));
        }
        check_text(
            "body",
            &self.body,
            false,
            limits::BODY_BYTES_MAX,
            TextKind::Body,
        )?;
        check_text(
            "customer",
            &self.customer,
            true,
            limits::CUSTOMER_CHARS_MAX,
            TextKind::Line,
        )?;
        check_text(
            "language",
            &self.language,
            false,
            limits::LANGUAGE_CHARS_MAX,
            TextKind::Line,
        )?;
        if !self
            .language
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(Error::invalid(
                "language",
                format!(
                    "{:?} is not a language tag such as en or pt-BR",
                    self.language
                ),
            ));
        }
        if self.skills.len() > limits::SKILLS_MAX {
            return Err(Error::invalid(
                "skills",
                format!(
                    "has {} entries; the limit is {}",
                    self.skills.len(),
                    limits::SKILLS_MAX
                ),
            ));
        }
        if self.residency.len() > limits::RESIDENCY_REGIONS_MAX {
            return Err(Error::invalid(
                "residency",
                format!(
                    "has {} regions; the limit is {}",
                    self.residency.len(),
                    limits::RESIDENCY_REGIONS_MAX
                ),
            ));
        }
        Ok(())
    }
}

impl TicketPatch {
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.assignee.is_none() && self.priority.is_none()
    }

    pub fn validate(&self) -> Result<()> {
        if self.is_empty() {
            return Err(Error::invalid("update", "names no field to change"));
        }
        if let Some(Some(assignee)) = &self.assignee {
            check_assignee(assignee)?;
        }
        Ok(())
    }
}

impl Ticket {
    /// A new ticket owned by `owner`, in status `new`.
    pub fn create(id: TicketId, new: NewTicket, owner: Ownership, now: Timestamp) -> Result<Self> {
        new.validate()?;
        Ok(Self {
            id,
            subject: new.subject,
            body: new.body,
            customer: new.customer,
            tier: new.tier,
            skills: new.skills,
            language: new.language,
            residency: new.residency,
            status: Status::New,
            assignee: None,
            priority: new.priority,
            owner,
            handoff_to: None,
            sla: SlaDeadlines::default(),
            created_at: now,
            updated_at: now,
        })
    }

    /// What a client supplied to create this ticket: for checking a
    /// replicated creation the way a local one was checked.
    pub fn as_new(&self) -> NewTicket {
        NewTicket {
            subject: self.subject.clone(),
            body: self.body.clone(),
            customer: self.customer.clone(),
            tier: self.tier.clone(),
            skills: self.skills.clone(),
            language: self.language.clone(),
            residency: self.residency.clone(),
            priority: self.priority,
        }
    }

    /// An empty owner-scoped change at the epoch `region` writes at:
    /// refused unless it owns the ticket with no handoff pending.
    fn owner_change(&self, region: &RegionId) -> Result<TicketChanges> {
        let epoch = self.owner.authorize(region)?;
        if let Some(to) = &self.handoff_to {
            return Err(Error::HandoffPending { to: to.clone() });
        }
        Ok(TicketChanges {
            epoch,
            ..TicketChanges::default()
        })
    }

    /// Decides an owner-scoped change requested in `region`: refused unless
    /// that region owns the ticket, and unless every status move is legal.
    /// Returns only the fields that actually change, stamped with the epoch
    /// the write is made at (the store fences on it).
    pub fn decide_patch(&self, region: &RegionId, patch: &TicketPatch) -> Result<TicketChanges> {
        patch.validate()?;
        let mut changes = self.owner_change(region)?;
        if let Some(to) = patch.status
            && to != self.status
        {
            if !self.status.can_become(to) {
                return Err(Error::IllegalTransition {
                    from: self.status,
                    to,
                });
            }
            changes.status = Some(to);
            // The calendar-free SLA moves (met, reopened); a status that
            // pauses the clock is the caller's to add, from the rules.
            let clocks = self.sla.after_status(to, false);
            if clocks != self.sla {
                changes.sla = Some(clocks);
            }
        }
        if let Some(assignee) = &patch.assignee
            && assignee != &self.assignee
        {
            changes.assignee = Some(assignee.clone());
        }
        if let Some(priority) = patch.priority
            && priority != self.priority
        {
            changes.priority = Some(priority);
        }
        Ok(changes)
    }

    /// The status a message moves the ticket to: a public reply opens a
    /// `new` ticket; a customer message reopens a `pending` or `solved`
    /// one (the customer is waiting again). `closed` is final: it takes no
    /// more messages (a customer who writes again starts a new ticket).
    /// Internal notes move nothing.
    pub fn message_status(&self, visibility: Visibility) -> Result<Option<Status>> {
        if visibility.is_message() && self.status == Status::Closed {
            return Err(Error::IllegalTransition {
                from: Status::Closed,
                to: Status::Open,
            });
        }
        Ok(match (visibility, self.status) {
            (Visibility::Public, Status::New)
            | (Visibility::Inbound, Status::Pending | Status::Solved) => Some(Status::Open),
            _ => None,
        })
    }

    /// Decides the owner-scoped part of a public reply or a customer
    /// message written in `region`: refused unless that region owns the
    /// ticket with no handoff pending, like any update, since it moves the
    /// ticket's clocks. Returns the status move ([`Ticket::message_status`])
    /// and its calendar-free clock moves; the caller adds what needs the
    /// calendar (resuming, a next-response clock) and the reply's effect.
    pub fn decide_message(
        &self,
        region: &RegionId,
        visibility: Visibility,
    ) -> Result<TicketChanges> {
        let mut changes = self.owner_change(region)?;
        if let Some(to) = self.message_status(visibility)? {
            changes.status = Some(to);
            let clocks = self.sla.after_status(to, false);
            if clocks != self.sla {
                changes.sla = Some(clocks);
            }
        }
        Ok(changes)
    }

    /// Applies changes already decided (locally or by the owner elsewhere).
    pub fn apply(&mut self, changes: &TicketChanges, at: Timestamp) {
        if let Some(status) = changes.status {
            self.status = status;
        }
        if let Some(assignee) = &changes.assignee {
            self.assignee.clone_from(assignee);
        }
        if let Some(priority) = changes.priority {
            self.priority = priority;
        }
        if let Some(sla) = changes.sla {
            self.sla = sla;
        }
        self.updated_at = self.updated_at.max(at);
    }
}

impl Ticket {
    /// Decides a handoff offer made in `region` to `to`: only the owner may
    /// offer, one offer at a time, never to itself, never outside the
    /// ticket's residency, and never without a valid note. Returns the
    /// epoch the offer is made at (the store fences on it).
    pub fn decide_handoff(
        &self,
        region: &RegionId,
        to: &RegionId,
        note: &HandoffNote,
    ) -> Result<Epoch> {
        let epoch = self.owner.authorize(region)?;
        if let Some(pending) = &self.handoff_to {
            return Err(Error::HandoffPending {
                to: pending.clone(),
            });
        }
        if to == region {
            return Err(Error::invalid(
                "to_region",
                format!("{to} already owns the ticket"),
            ));
        }
        if let Some(reason) = crate::residency::refusal(&self.residency, to) {
            return Err(Error::invalid("to_region", reason));
        }
        if self.status == Status::Closed {
            return Err(Error::invalid(
                "ticket_id",
                "a closed ticket is not handed off",
            ));
        }
        note.validate()?;
        // The offer carries the note rendered as a ticket note, which every
        // peer checks like any note: one too long to store there would stop
        // replication of this region's log at the offer.
        let rendered = note.render(region, to).len();
        if rendered > crate::note::NOTE_BODY_BYTES_MAX {
            return Err(Error::invalid(
                "note.text",
                format!(
                    "the handoff note is {rendered} bytes with its status and actions; the limit is {} bytes: shorten the text",
                    crate::note::NOTE_BODY_BYTES_MAX
                ),
            ));
        }
        Ok(epoch)
    }

    /// Decides `me` (with epoch index `my_index`) accepting the pending
    /// offer from `from`: returns the new epoch, which `me` owns and which
    /// is greater than every epoch before it.
    pub fn decide_accept(&self, me: &RegionId, my_index: u16, from: &RegionId) -> Result<Epoch> {
        if self.handoff_to.as_ref() != Some(me) || &self.owner.owner_region != from {
            return Err(Error::NoSuchOffer {
                from: from.clone(),
                to: me.clone(),
            });
        }
        Ok(self.owner.epoch.next_for(my_index))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn region(name: &str) -> RegionId {
        RegionId::new(name).unwrap()
    }

    pub(crate) fn sample_ticket() -> Ticket {
        let id = TicketId::new_v7(Timestamp::UNIX_EPOCH, [1; 10]);
        let owner = Ownership::new(region("us-east"), 0, Epoch::initial(0)).unwrap();
        let new = NewTicket {
            subject: "Printer on fire".into(),
            body: "It is on fire.".into(),
            customer: "acme".into(),
            tier: Tier::new("standard").unwrap(),
            skills: BTreeSet::new(),
            language: "en".into(),
            residency: BTreeSet::new(),
            priority: Priority::High,
        };
        Ticket::create(id, new, owner, Timestamp::UNIX_EPOCH).unwrap()
    }

    fn status() -> impl Strategy<Value = Status> {
        proptest::sample::select(Status::ALL.to_vec())
    }

    proptest! {
        /// Any sequence of requested moves leaves the ticket in a state reached
        /// only through legal transitions; illegal ones are refused and change
        /// nothing; `closed` is final.
        #[test]
        fn only_legal_transitions(moves in proptest::collection::vec(status(), 0..60)) {
            let mut ticket = sample_ticket();
            let us = region("us-east");
            for to in moves {
                let before = ticket.status;
                let patch = TicketPatch { status: Some(to), ..TicketPatch::default() };
                match ticket.decide_patch(&us, &patch) {
                    Ok(changes) => {
                        if to == before {
                            prop_assert_eq!(changes.status, None);
                        } else {
                            prop_assert!(before.can_become(to));
                            prop_assert_eq!(changes.status, Some(to));
                        }
                        ticket.apply(&changes, Timestamp::UNIX_EPOCH);
                        prop_assert_eq!(ticket.status, to);
                    }
                    Err(e) => {
                        prop_assert_eq!(e, Error::IllegalTransition { from: before, to });
                        prop_assert!(!before.can_become(to));
                        prop_assert_eq!(ticket.status, before);
                    }
                }
                if before == Status::Closed {
                    prop_assert_eq!(ticket.status, Status::Closed);
                }
            }
        }

        /// A non-owner is refused whatever it asks for, and learns the owner.
        #[test]
        fn non_owner_is_refused(to in status(), prio in proptest::sample::select(Priority::ALL.to_vec())) {
            let ticket = sample_ticket();
            let patch = TicketPatch { status: Some(to), priority: Some(prio), assignee: None };
            let err = ticket.decide_patch(&region("eu-west"), &patch).unwrap_err();
            prop_assert_eq!(err, Error::NotOwner { owner: region("us-east"), epoch: ticket.owner.epoch });
        }
    }

    fn handoff_note() -> HandoffNote {
        HandoffNote {
            current_status: Status::Open,
            last_action: "rebooted the edge router".into(),
            next_action: "confirm with the customer".into(),
            deadline: None,
            text: String::new(),
            author: "ana".into(),
            auto: false,
        }
    }

    proptest! {
        /// A chain of handoffs among eight regions: only the owner offers,
        /// an offer blocks owner-scoped writes until answered, only the
        /// target accepts, and every acceptance mints a greater epoch that
        /// encodes the new owner.
        #[test]
        fn handoff_chains_fence_and_grow(targets in proptest::collection::vec(0u16..8, 1..30)) {
            let mut ticket = sample_ticket();
            for target in targets {
                let owner = ticket.owner.clone();
                let owner_index = owner.epoch.owner_index();
                let to = region(&format!("r{target}"));
                let from = if owner_index == 0 { region("us-east") } else { owner.owner_region.clone() };
                prop_assert_eq!(&from, &owner.owner_region);
                if to == from {
                    prop_assert!(ticket.decide_handoff(&from, &to, &handoff_note()).is_err());
                    continue;
                }
                let stranger = region("stranger");
                let refused = matches!(ticket.decide_handoff(&stranger, &to, &handoff_note()), Err(Error::NotOwner { .. }));
                prop_assert!(refused);
                let epoch = ticket.decide_handoff(&from, &to, &handoff_note()).unwrap();
                prop_assert_eq!(epoch, owner.epoch);
                ticket.handoff_to = Some(to.clone());
                let patch = TicketPatch { priority: Some(Priority::Low), ..TicketPatch::default() };
                prop_assert_eq!(ticket.decide_patch(&from, &patch).unwrap_err(), Error::HandoffPending { to: to.clone() });
                let wrong = matches!(ticket.decide_accept(&stranger, 9, &from), Err(Error::NoSuchOffer { .. }));
                prop_assert!(wrong);
                let next = ticket.decide_accept(&to, target + 1, &from).unwrap();
                prop_assert!(next > owner.epoch);
                prop_assert_eq!(next.owner_index(), target + 1);
                ticket.owner = Ownership { owner_region: to, epoch: next };
                ticket.handoff_to = None;
            }
        }
    }

    #[test]
    fn handoff_respects_residency_and_needs_a_note() {
        let mut ticket = sample_ticket();
        ticket.residency = [region("us-east"), region("us-west")].into();
        let us = region("us-east");
        let err = ticket
            .decide_handoff(&us, &region("eu-west"), &handoff_note())
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("to_region: eu-west is outside the ticket's residency"),
            "{err}"
        );
        assert!(
            ticket
                .decide_handoff(&us, &region("us-west"), &handoff_note())
                .is_ok()
        );
        let mut note = handoff_note();
        note.next_action = " ".into();
        assert_eq!(
            ticket
                .decide_handoff(&us, &region("us-west"), &note)
                .unwrap_err()
                .to_string(),
            "note.next_action: must not be empty"
        );
    }

    /// Found by the `request_validation` fuzz target's check that a decided
    /// handoff writes a note peers accept (its seed `handoff-longest-text`):
    /// a text within its own limit rendered longer than any peer stores.
    #[test]
    fn a_handoff_note_must_fit_a_note_once_rendered() {
        let ticket = sample_ticket();
        let (us, to) = (region("us-east"), region("us-west"));
        let mut note = handoff_note();
        note.text = "x".repeat(crate::note::NOTE_BODY_BYTES_MAX);
        assert!(
            note.validate().is_ok(),
            "the text alone is within its limit"
        );
        let err = ticket.decide_handoff(&us, &to, &note).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("note.text: the handoff note is "),
            "{err}"
        );
        let header = note.render(&us, &to).len() - note.text.len();
        note.text
            .truncate(crate::note::NOTE_BODY_BYTES_MAX - header);
        assert_eq!(
            note.render(&us, &to).len(),
            crate::note::NOTE_BODY_BYTES_MAX
        );
        assert!(ticket.decide_handoff(&us, &to, &note).is_ok());
    }

    /// What the shift end does with an agent's note of any length: shorten
    /// it, at a character boundary and marked, until the handoff travels.
    #[test]
    fn fit_to_note_shortens_only_what_would_not_travel() {
        let ticket = sample_ticket();
        let (us, to) = (region("us-east"), region("us-west"));
        let mut note = handoff_note();
        note.text = "short".into();
        assert_eq!(
            note.clone().fit_to_note(&us, &to).text,
            "short",
            "a note that fits is left alone"
        );
        // Multi-byte characters right at the cut.
        note.text = "é".repeat(crate::note::NOTE_BODY_BYTES_MAX / 2);
        let fitted = note.fit_to_note(&us, &to);
        assert!(fitted.text.ends_with('…'));
        assert!(fitted.render(&us, &to).len() <= crate::note::NOTE_BODY_BYTES_MAX);
        assert!(fitted.validate().is_ok());
        assert!(ticket.decide_handoff(&us, &to, &fitted).is_ok());
    }

    #[test]
    fn nothing_returns_to_new_and_closed_is_final() {
        for s in Status::ALL {
            assert!(!s.can_become(Status::New), "{s} must not return to new");
        }
        assert!(Status::Closed.successors().is_empty());
    }

    #[test]
    fn validation_names_the_field() {
        let mut t = sample_ticket();
        let mut new = NewTicket {
            subject: " ".into(),
            body: String::new(),
            customer: "c".into(),
            tier: t.tier.clone(),
            skills: BTreeSet::new(),
            language: "en".into(),
            residency: BTreeSet::new(),
            priority: Priority::Low,
        };
        assert_eq!(
            new.validate().unwrap_err().to_string(),
            "subject: must not be empty"
        );
        new.subject = "x".repeat(251);
        assert!(
            new.validate()
                .unwrap_err()
                .to_string()
                .starts_with("subject: is 251 characters")
        );
        new.subject = "ok".into();
        new.body = "b".repeat(limits::BODY_BYTES_MAX + 1);
        assert!(
            new.validate()
                .unwrap_err()
                .to_string()
                .starts_with("body: ")
        );
        new.body.clear();
        new.language = "en_US!".into();
        assert!(
            new.validate()
                .unwrap_err()
                .to_string()
                .starts_with("language: ")
        );
        t.status = Status::Solved;
        let patch = TicketPatch::default();
        assert_eq!(
            t.decide_patch(&region("us-east"), &patch)
                .unwrap_err()
                .to_string(),
            "update: names no field to change"
        );
    }
}
