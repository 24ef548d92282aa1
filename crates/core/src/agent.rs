//! People: who made a change ([`Actor`]), whether an agent takes work
//! ([`Presence`]), and which agent a new ticket goes to ([`choose`]).
//!
//! The roster itself (who works which shift, skills, capacity, time off) is
//! operator-managed and read by `meridian-rules`; this module holds what the
//! store, the events and the gateway share.

use serde::{Deserialize, Serialize};

use jiff::Timestamp;

use crate::Skill;

/// Who made a change: the bearer token's subject and role, recorded on
/// every event a caller's request writes. Meridian's own writes (SLA
/// timers, shift ends, escalation) name the component as the subject with
/// role [`Actor::SYSTEM_ROLE`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    pub subject: String,
    pub role: String,
}

impl Actor {
    /// The role of a write Meridian made itself.
    pub const SYSTEM_ROLE: &'static str = "system";
    /// The subject when a gateway runs without authentication (development).
    pub const ANONYMOUS: &'static str = "anonymous";

    pub fn new(subject: impl Into<String>, role: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            role: role.into(),
        }
    }

    /// A write Meridian made itself, by `component` (`escalation`,
    /// `shift-end`, `mail`, ...).
    pub fn system(component: &str) -> Self {
        Self::new(format!("meridian:{component}"), Self::SYSTEM_ROLE)
    }

    pub fn is_system(&self) -> bool {
        self.role == Self::SYSTEM_ROLE
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.subject, self.role)
    }
}

/// Whether an agent takes work now. Set by the agent; read through the
/// shift: an agent off shift is offline whatever they last set, and a
/// presence set in an earlier shift has lapsed ([`Presence::effective`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Available,
    Away,
    #[default]
    Offline,
}

impl Presence {
    pub const ALL: [Presence; 3] = [Presence::Available, Presence::Away, Presence::Offline];

    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Available => "available",
            Presence::Away => "away",
            Presence::Offline => "offline",
        }
    }

    /// What counts now: the presence the agent set, if they set it during
    /// the shift they are on (`shift_start`, `None` when off shift);
    /// otherwise offline. So a presence lapses when the shift it was set in
    /// ends, on the rules' clock, with no timer to miss.
    pub fn effective(set: Option<(Presence, Timestamp)>, shift_start: Option<Timestamp>) -> Self {
        match (set, shift_start) {
            (Some((presence, set_at)), Some(start)) if set_at >= start => presence,
            _ => Presence::Offline,
        }
    }
}

impl std::fmt::Display for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Presence {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Presence::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown presence {s:?}; use available, away or offline"))
    }
}

/// How a region gives new tickets to its agents (the roster's
/// `[assignment] auto`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoAssign {
    /// New tickets wait, unassigned, for someone to claim them.
    #[default]
    Off,
    /// To the eligible agent holding the fewest open tickets.
    LeastLoaded,
    /// To the next eligible agent after the last one given a ticket.
    RoundRobin,
}

impl AutoAssign {
    pub const ALL: [AutoAssign; 3] = [
        AutoAssign::Off,
        AutoAssign::LeastLoaded,
        AutoAssign::RoundRobin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AutoAssign::Off => "off",
            AutoAssign::LeastLoaded => "least_loaded",
            AutoAssign::RoundRobin => "round_robin",
        }
    }
}

/// An agent as the assignment decision sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub presence: Presence,
    /// On shift now (the rules' clock, the roster's shifts and time off).
    pub on_shift: bool,
    pub skills: &'a [Skill],
    /// Empty: any language.
    pub languages: &'a [String],
    /// Open tickets assigned to them now.
    pub open: u32,
    pub max_open: u32,
}

/// Why an agent may not take a ticket, or `None` if they may. Shared by
/// manual assignment (which needs neither presence nor shift: a lead may
/// assign work for tomorrow) and automatic assignment (which needs both).
pub fn unfit(candidate: &Candidate<'_>, skills: &[Skill], language: &str) -> Option<String> {
    if let Some(missing) = skills.iter().find(|s| !candidate.skills.contains(s)) {
        return Some(format!(
            "{} lacks the skill {missing} the ticket needs",
            candidate.id
        ));
    }
    if !language.is_empty()
        && !candidate.languages.is_empty()
        && !candidate
            .languages
            .iter()
            .any(|l| primary(l) == primary(language))
    {
        return Some(format!(
            "{} does not speak {language} ({})",
            candidate.id,
            candidate.languages.join(", ")
        ));
    }
    if candidate.open >= candidate.max_open {
        return Some(format!(
            "{} holds {} open tickets, their limit",
            candidate.id, candidate.open
        ));
    }
    None
}

/// `pt-BR` → `pt`, lowercase: languages match on their primary subtag.
fn primary(tag: &str) -> String {
    tag.split(['-', '_'])
        .next()
        .unwrap_or(tag)
        .to_ascii_lowercase()
}

/// The agent a new ticket needing `skills` in `language` goes to under
/// `policy`: among available, on-shift agents fit for it ([`unfit`]), the
/// least loaded (ties by id), or the first after `last` in id order. `None`
/// when the policy is off or nobody fits; the ticket then waits unassigned.
pub fn choose<'a>(
    policy: AutoAssign,
    candidates: &[Candidate<'a>],
    skills: &[Skill],
    language: &str,
    last: Option<&str>,
) -> Option<&'a str> {
    let mut fit: Vec<&Candidate<'a>> = candidates
        .iter()
        .filter(|c| {
            c.presence == Presence::Available && c.on_shift && unfit(c, skills, language).is_none()
        })
        .collect();
    match policy {
        AutoAssign::Off => None,
        AutoAssign::LeastLoaded => fit.iter().min_by_key(|c| (c.open, c.id)).map(|c| c.id),
        AutoAssign::RoundRobin => {
            fit.sort_by_key(|c| c.id);
            let after = last.map_or(0, |last| fit.partition_point(|c| c.id <= last));
            fit.get(after).or_else(|| fit.first()).map(|c| c.id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skill(s: &str) -> Skill {
        Skill::new(s).unwrap()
    }

    #[test]
    fn presence_lapses_when_the_shift_it_was_set_in_ends() {
        let start: Timestamp = "2026-12-07T14:00:00Z".parse().unwrap();
        let set_at: Timestamp = "2026-12-07T15:00:00Z".parse().unwrap();
        let set = Some((Presence::Available, set_at));
        assert_eq!(Presence::effective(set, Some(start)), Presence::Available);
        // Off shift: offline whatever was set.
        assert_eq!(Presence::effective(set, None), Presence::Offline);
        // The next shift: set in an earlier one, so lapsed.
        let next: Timestamp = "2026-12-08T14:00:00Z".parse().unwrap();
        assert_eq!(Presence::effective(set, Some(next)), Presence::Offline);
        assert_eq!(Presence::effective(None, Some(start)), Presence::Offline);
    }

    #[test]
    fn least_loaded_spreads_a_burst_evenly_and_never_over_capacity() {
        let skills = [skill("billing"), skill("general")];
        let general = [skill("general")];
        let none: [String; 0] = [];
        let ids: Vec<String> = (0..7).map(|i| format!("agent-{i}")).collect();
        // agent-0 is away, agent-1 off shift, agent-2 lacks billing,
        // agent-3 has room for only 5.
        let mut open = [0u32; 7];
        let max = [500, 500, 500, 5, 500, 500, 500];
        let mut given = [0u32; 7];
        for _ in 0..1_000 {
            let candidates: Vec<Candidate> = (0..7)
                .map(|i| Candidate {
                    id: &ids[i],
                    presence: if i == 0 {
                        Presence::Away
                    } else {
                        Presence::Available
                    },
                    on_shift: i != 1,
                    skills: if i == 2 { &general } else { &skills },
                    languages: &none,
                    open: open[i],
                    max_open: max[i],
                })
                .collect();
            let chosen = choose(
                AutoAssign::LeastLoaded,
                &candidates,
                &[skill("billing")],
                "en",
                None,
            )
            .unwrap();
            let i = ids.iter().position(|id| id == chosen).unwrap();
            open[i] += 1;
            given[i] += 1;
        }
        assert_eq!(&given[..4], &[0, 0, 0, 5]);
        let spread = &given[4..];
        assert_eq!(spread.iter().sum::<u32>(), 995);
        let (lo, hi) = (spread.iter().min().unwrap(), spread.iter().max().unwrap());
        assert!(hi - lo <= 1, "uneven: {given:?}");
    }

    #[test]
    fn round_robin_goes_round_in_id_order_and_skips_the_full() {
        let skills = [skill("general")];
        let none: [String; 0] = [];
        let candidate = |id: &'static str, open: u32| Candidate {
            id,
            presence: Presence::Available,
            on_shift: true,
            skills: &skills,
            languages: &none,
            open,
            max_open: 3,
        };
        let all = [candidate("cy", 0), candidate("ana", 0), candidate("bo", 3)];
        let pick = |last| choose(AutoAssign::RoundRobin, &all, &[], "", last);
        assert_eq!(pick(None), Some("ana"));
        assert_eq!(pick(Some("ana")), Some("cy"), "bo is full");
        assert_eq!(pick(Some("cy")), Some("ana"), "wraps");
        assert_eq!(pick(Some("zed")), Some("ana"), "a last agent since removed");
        assert_eq!(choose(AutoAssign::Off, &all, &[], "", None), None);
    }

    #[test]
    fn unfit_names_the_reason() {
        let skills = [skill("general")];
        let langs = ["pt".to_owned(), "en".to_owned()];
        let c = Candidate {
            id: "ana",
            presence: Presence::Offline,
            on_shift: false,
            skills: &skills,
            languages: &langs,
            open: 2,
            max_open: 2,
        };
        assert_eq!(
            unfit(&c, &[skill("billing")], "en").as_deref(),
            Some("ana lacks the skill billing the ticket needs")
        );
        assert_eq!(
            unfit(&c, &[], "de-AT").as_deref(),
            Some("ana does not speak de-AT (pt, en)")
        );
        assert_eq!(
            unfit(&c, &[], "pt-BR").as_deref(),
            Some("ana holds 2 open tickets, their limit")
        );
    }
}
