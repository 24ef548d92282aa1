//! Agents at work (issue 16): the roster in force, presence read through
//! the agent's shift, assignment (claim, assign, unassign, automatic at
//! creation) and the actor every write records.
//!
//! Assignment counts each agent's open tickets from the store, and keeps
//! the assignments it is making in memory until they commit, so two
//! concurrent decisions never both take an agent's last free place. The
//! counts are re-read at most once a second, and only when no decision is
//! in flight; between reads they only over-count (a ticket solved since),
//! which can delay an assignment by a second but never exceed a limit.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError},
    time::{Duration, Instant},
};

use meridian_auth::{Principal, Role};
use meridian_core::{
    Actor, AutoAssign, Presence, Ticket,
    agent::{Candidate, choose, unfit},
};
use meridian_proto::{timestamp_to_proto, v1};
use meridian_rules::{Agent, AgentShift, Roster, Rules};
use meridian_store::Assignments;
use tonic::{Request, Response, Status};

use crate::{
    context::TicketApi,
    error::{ApiError, from_store},
};

/// How long counted assignments are reused by automatic assignment.
const COUNTS_REUSE: Duration = Duration::from_secs(1);

/// The actor of a request's writes: its token's subject and role.
pub(crate) fn actor_of(principal: Option<&Principal>) -> Actor {
    match principal {
        Some(p) => Actor::new(p.subject.clone(), p.role.as_str()),
        None => Actor::new(Actor::ANONYMOUS, Actor::ANONYMOUS),
    }
}

/// The author a note is written under. Callers no longer choose: an agent
/// writes as their token's subject. An intake system speaks for the
/// customer it names, and an admin import may name an author explicitly
/// (the event's actor still records the admin). Without authentication
/// (development) the request's author stands.
pub(crate) fn note_author(principal: Option<&Principal>, asked: &str) -> Result<String, ApiError> {
    let Some(principal) = principal else {
        return Ok(if asked.is_empty() {
            Actor::ANONYMOUS.to_owned()
        } else {
            asked.to_owned()
        });
    };
    match principal.role {
        Role::Intake | Role::Admin if !asked.is_empty() => Ok(asked.to_owned()),
        _ if asked.is_empty() || asked == principal.subject => Ok(principal.subject.clone()),
        _ => Err(ApiError::PermissionDenied(format!(
            "author: {principal} writes as {:?}; only an admin import or an intake system names another author",
            principal.subject
        ))),
    }
}

/// Assignments being made, and the counts they start from.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Open tickets per agent as last counted, plus assignments committed since.
    counts: HashMap<String, u32>,
    /// Assignments decided but not yet committed (or failed).
    in_flight: HashMap<String, u32>,
    counted_at: Option<Instant>,
    /// The agent round robin gave the last ticket to.
    last: Option<String>,
}

impl Ledger {
    fn load(&self, agent: &str) -> u32 {
        self.counts.get(agent).copied().unwrap_or(0)
            + self.in_flight.get(agent).copied().unwrap_or(0)
    }

    fn reserve(&mut self, agent: &str) {
        *self.in_flight.entry(agent.to_owned()).or_default() += 1;
    }

    fn settle(&mut self, agent: &str, committed: bool) {
        if let Some(n) = self.in_flight.get_mut(agent) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(agent);
            }
        }
        if committed {
            *self.counts.entry(agent.to_owned()).or_default() += 1;
        }
    }

    fn needs_count(&self) -> bool {
        self.in_flight.is_empty()
            && self
                .counted_at
                .is_none_or(|at| at.elapsed() >= COUNTS_REUSE)
    }
}

/// An assignment decided and counted against the agent's limit until the
/// write commits ([`Reservation::commit`]) or is dropped (it failed).
pub(crate) struct Reservation {
    api: TicketApi,
    agent: String,
    settled: bool,
}

impl Reservation {
    pub(crate) fn agent(&self) -> &str {
        &self.agent
    }

    pub(crate) fn commit(mut self) {
        self.settle(true);
    }

    fn settle(&mut self, committed: bool) {
        if !self.settled {
            self.settled = true;
            self.api.ledger().settle(&self.agent, committed);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.settle(false);
    }
}

/// One agent as things stand now.
pub(crate) struct AgentNow<'r> {
    pub agent: &'r Agent,
    pub presence: Presence,
    pub shift: Option<AgentShift>,
    /// Open tickets assigned to them here.
    pub open: u32,
}

impl TicketApi {
    pub(crate) fn roster(&self) -> Option<Arc<Roster>> {
        self.inner.roster.as_ref().map(|r| r.current())
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.inner
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The roster and the rules it was checked against, or why there is none.
    fn roster_and_rules(&self) -> Result<(Arc<Roster>, Arc<Rules>), ApiError> {
        match (self.roster(), self.rules()) {
            (Some(roster), Some(rules)) => Ok((roster, rules)),
            _ => Err(ApiError::Roster(format!(
                "{} keeps no roster: name one in the gateway config (rules.roster)",
                self.region()
            ))),
        }
    }

    /// Every agent of the roster with presence, shift and open tickets now,
    /// and the region's assignments.
    pub(crate) async fn agents_now<'r>(
        &self,
        roster: &'r Roster,
        rules: &Rules,
    ) -> Result<(Vec<AgentNow<'r>>, Assignments), ApiError> {
        let at = self.now();
        let (presences, assignments) = tokio::try_join!(
            self.store().presences(),
            self.store().assignments(self.region())
        )
        .map_err(from_store)?;
        let agents = roster
            .agents
            .iter()
            .map(|agent| {
                let shift = roster.on_shift(rules, agent, at);
                AgentNow {
                    agent,
                    presence: Presence::effective(
                        presences.get(&agent.id).copied(),
                        shift.as_ref().map(|s| s.start),
                    ),
                    shift,
                    open: assignments
                        .open_by_agent
                        .get(&agent.id)
                        .copied()
                        .unwrap_or(0),
                }
            })
            .collect();
        Ok((agents, assignments))
    }

    /// Reserves `agent` for `ticket`, owned here, after checking the
    /// roster: a known agent with the ticket's skills and language and room
    /// under their limit. Neither presence nor shift is needed: a lead may
    /// give out tomorrow's work.
    pub(crate) async fn reserve_assignee(
        &self,
        ticket: &Ticket,
        agent_id: &str,
    ) -> Result<Option<Reservation>, ApiError> {
        let Some(roster) = self.roster() else {
            // Without a roster the assignee is a label, as before rosters.
            return Ok(None);
        };
        let Some(agent) = roster.agent(agent_id) else {
            let reason = roster
                .refusal(agent_id)
                .unwrap_or_else(|| format!("{agent_id:?} is not an agent here"));
            return Err(ApiError::Roster(format!(
                "cannot assign ticket {}: {reason}",
                ticket.id
            )));
        };
        let assignments = self
            .store()
            .assignments(self.region())
            .await
            .map_err(from_store)?;
        let counted = assignments
            .open_by_agent
            .get(agent_id)
            .copied()
            .unwrap_or(0);
        // Committed ones are counted; those in flight are not yet.
        let mut ledger = self.ledger();
        ledger.counts.insert(agent_id.to_owned(), counted);
        let open = ledger.load(agent_id);
        let candidate = Candidate {
            id: &agent.id,
            presence: Presence::Available,
            on_shift: true,
            skills: &agent.skills,
            languages: &agent.languages,
            open,
            max_open: agent.max_open,
        };
        let skills: Vec<_> = ticket.skills.iter().cloned().collect();
        if let Some(reason) = unfit(&candidate, &skills, &ticket.language) {
            return Err(ApiError::Roster(format!(
                "cannot assign ticket {}: {reason}",
                ticket.id
            )));
        }
        ledger.reserve(agent_id);
        Ok(Some(Reservation {
            api: self.clone(),
            agent: agent_id.to_owned(),
            settled: false,
        }))
    }

    /// The agent a new ticket goes to under the roster's policy, reserved;
    /// `None` when the policy is off, there is no roster, or nobody fits.
    pub(crate) async fn auto_assignee(
        &self,
        ticket: &Ticket,
    ) -> Result<Option<Reservation>, ApiError> {
        let Some(roster) = self.roster() else {
            return Ok(None);
        };
        if roster.auto_assign == AutoAssign::Off {
            return Ok(None);
        }
        let Some(rules) = self.rules() else {
            return Ok(None);
        };
        let presences = self.store().presences().await.map_err(from_store)?;
        if self.ledger().needs_count() {
            let assignments = self
                .store()
                .assignments(self.region())
                .await
                .map_err(from_store)?;
            let mut ledger = self.ledger();
            // A decision that started meanwhile may have counted on the old
            // figures; keep them until the next quiet moment.
            if ledger.in_flight.is_empty() {
                ledger.counts = assignments.open_by_agent;
                ledger.counted_at = Some(Instant::now());
            }
        }
        let at = self.now();
        let shifts: Vec<Option<AgentShift>> = roster
            .agents
            .iter()
            .map(|a| roster.on_shift(&rules, a, at))
            .collect();
        let mut ledger = self.ledger();
        let candidates: Vec<Candidate<'_>> = roster
            .agents
            .iter()
            .zip(&shifts)
            .map(|(agent, shift)| Candidate {
                id: &agent.id,
                presence: Presence::effective(
                    presences.get(&agent.id).copied(),
                    shift.as_ref().map(|s| s.start),
                ),
                on_shift: shift.is_some(),
                skills: &agent.skills,
                languages: &agent.languages,
                open: ledger.load(&agent.id),
                max_open: agent.max_open,
            })
            .collect();
        let skills: Vec<_> = ticket.skills.iter().cloned().collect();
        let chosen = choose(
            roster.auto_assign,
            &candidates,
            &skills,
            &ticket.language,
            ledger.last.as_deref(),
        )
        .map(str::to_owned);
        let Some(agent) = chosen else {
            return Ok(None);
        };
        ledger.reserve(&agent);
        ledger.last = Some(agent.clone());
        Ok(Some(Reservation {
            api: self.clone(),
            agent,
            settled: false,
        }))
    }

    /// A ticket left its assignee (unassigned, or handed on): one fewer in
    /// their count until the next count.
    pub(crate) fn released(&self, agent: &str) {
        if let Some(n) = self.ledger().counts.get_mut(agent) {
            *n = n.saturating_sub(1);
        }
    }
}

/// `meridian.v1.AgentService`: the roster, presence and load of the
/// gateway's region.
#[derive(Clone)]
pub(crate) struct AgentApi {
    api: TicketApi,
}

impl AgentApi {
    pub(crate) fn new(api: TicketApi) -> Self {
        Self { api }
    }

    async fn list(&self) -> Result<v1::ListAgentsResponse, ApiError> {
        let (roster, rules) = self.api.roster_and_rules()?;
        let (agents, assignments) = self.api.agents_now(&roster, &rules).await?;
        let problems = self
            .api
            .inner
            .roster
            .as_ref()
            .map(|r| r.refused().to_vec())
            .unwrap_or_default();
        Ok(v1::ListAgentsResponse {
            region: self.api.region().to_string(),
            auto_assign: roster.auto_assign.as_str().to_owned(),
            agents: agents.iter().map(agent_to_proto).collect(),
            roster_problems: problems,
            unassigned_open: assignments.unassigned,
            oldest_unassigned_at: assignments.oldest_unassigned.map(timestamp_to_proto),
            queue_owner: rules
                .active_at(self.api.now())
                .into_iter()
                .find(|s| {
                    s.region == self.api.region().as_str()
                        && s.position == meridian_rules::ShiftPosition::OnShift
                })
                .map(|s| s.queue_owner)
                .unwrap_or_default(),
        })
    }

    async fn set_presence(
        &self,
        principal: Option<&Principal>,
        req: v1::SetPresenceRequest,
    ) -> Result<v1::AgentStatus, ApiError> {
        let presence = presence_from_proto(req.presence)?;
        let (roster, rules) = self.api.roster_and_rules()?;
        let agent_id = match (principal, req.agent.as_str()) {
            (Some(p), "") => p.subject.clone(),
            (Some(p), named) if named == p.subject => p.subject.clone(),
            (Some(p), named) if p.role == Role::Admin => named.to_owned(),
            (Some(p), named) => {
                return Err(ApiError::PermissionDenied(format!(
                    "{p} may set only their own presence, not {named:?}'s"
                )));
            }
            (None, "") => {
                return Err(ApiError::Invalid(meridian_proto::ConvertError::new(
                    "agent",
                    "is required without a token (whose presence?)",
                )));
            }
            (None, named) => named.to_owned(),
        };
        let Some(agent) = roster.agent(&agent_id) else {
            let reason = roster
                .refusal(&agent_id)
                .unwrap_or_else(|| format!("{agent_id:?} is not an agent here"));
            return Err(ApiError::PermissionDenied(reason));
        };
        let at = self.api.now();
        let shift = roster.on_shift(&rules, agent, at);
        if presence != Presence::Offline && shift.is_none() {
            return Err(ApiError::Roster(format!(
                "{agent_id} is not on shift now (they work {}); only an agent on shift can be {presence}",
                agent.shifts.join(", ")
            )));
        }
        self.api
            .store()
            .set_presence(&agent_id, presence, at)
            .await
            .map_err(from_store)?;
        tracing::info!(agent = %agent_id, %presence, "presence set");
        let (agents, _) = self.api.agents_now(&roster, &rules).await?;
        agents
            .iter()
            .find(|a| a.agent.id == agent_id)
            .map(agent_to_proto)
            .ok_or_else(|| ApiError::Internal(format!("{agent_id} left the roster meanwhile")))
    }
}

#[tonic::async_trait]
impl v1::agent_service_server::AgentService for AgentApi {
    async fn list_agents(
        &self,
        _request: Request<v1::ListAgentsRequest>,
    ) -> Result<Response<v1::ListAgentsResponse>, Status> {
        Ok(Response::new(self.list().await?))
    }

    async fn set_presence(
        &self,
        request: Request<v1::SetPresenceRequest>,
    ) -> Result<Response<v1::AgentStatus>, Status> {
        let principal = meridian_auth::principal(&request).cloned();
        Ok(Response::new(
            self.set_presence(principal.as_ref(), request.into_inner())
                .await?,
        ))
    }
}

fn presence_from_proto(raw: i32) -> Result<Presence, ApiError> {
    match v1::Presence::try_from(raw) {
        Ok(v1::Presence::Available) => Ok(Presence::Available),
        Ok(v1::Presence::Away) => Ok(Presence::Away),
        Ok(v1::Presence::Offline) => Ok(Presence::Offline),
        _ => Err(ApiError::Invalid(meridian_proto::ConvertError::new(
            "presence",
            "is required: available, away or offline",
        ))),
    }
}

pub(crate) fn presence_to_proto(presence: Presence) -> v1::Presence {
    match presence {
        Presence::Available => v1::Presence::Available,
        Presence::Away => v1::Presence::Away,
        Presence::Offline => v1::Presence::Offline,
    }
}

fn agent_to_proto(now: &AgentNow<'_>) -> v1::AgentStatus {
    let agent = now.agent;
    v1::AgentStatus {
        id: agent.id.clone(),
        name: agent.name.clone(),
        skills: agent.skills.iter().map(ToString::to_string).collect(),
        languages: agent.languages.clone(),
        max_open: agent.max_open,
        shifts: agent.shifts.clone(),
        presence: presence_to_proto(now.presence) as i32,
        on_shift: now
            .shift
            .as_ref()
            .map(|s| s.shift.clone())
            .unwrap_or_default(),
        shift_ends_at: now.shift.as_ref().map(|s| timestamp_to_proto(s.end)),
        open_tickets: now.open,
    }
}
