//! A region's roster: its agents (the subjects of their tokens), their
//! skills, languages and capacity, the named shifts they work, their time
//! off, and how the region gives new tickets out. Operator-managed like the
//! rules: a reviewed TOML file, refused whole with `FILE:LINE:COL` for each
//! problem, checked against the rules it runs with (its region, shift names
//! and skills must exist there).
//!
//! ```toml
//! region = "us-east"
//!
//! [assignment]
//! auto = "least_loaded"          # off (default), least_loaded, round_robin
//!
//! [[agents]]
//! id = "ana"                      # the `sub` of the agent's token
//! name = "Ana Souza"
//! skills = ["billing", "general"]
//! languages = ["en", "pt"]        # empty: any
//! max_open = 12                   # open tickets they may hold
//! shifts = ["day", "weekend"]     # the region's shift names
//! time_off = ["2026-12-24", "2026-12-28/2027-01-02"]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use jiff::Timestamp;
use jiff::civil::Date;
use meridian_core::{AutoAssign, RegionId, Skill};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{Collector, RulesErrors};
use crate::model::{Region, Rules};
use crate::suggest::closest;

/// The most agents one roster holds.
pub const AGENTS_MAX: usize = 5_000;
/// The most open tickets one agent may be given.
pub const MAX_OPEN_LIMIT: u32 = 10_000;
/// The longest agent id (a token's `sub`) or display name.
pub const AGENT_ID_CHARS_MAX: usize = 200;

/// A region's agents and its assignment policy.
#[derive(Debug, Clone, Serialize)]
pub struct Roster {
    pub region: RegionId,
    pub auto_assign: AutoAssign,
    /// In file order.
    pub agents: Vec<Agent>,
    #[serde(skip)]
    by_id: HashMap<String, usize>,
}

/// One agent of a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Agent {
    /// The subject (`sub`) of the agent's bearer token.
    pub id: String,
    pub name: String,
    pub skills: Vec<Skill>,
    /// Languages they answer in (BCP 47 tags); empty means any.
    pub languages: Vec<String>,
    pub max_open: u32,
    /// Names of the region's shifts they work.
    pub shifts: Vec<String>,
    /// Days off in the region's time zone, each `(first, last)` inclusive.
    pub time_off: Vec<(Date, Date)>,
}

/// The stretch of shift an agent is working at an instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentShift {
    pub shift: String,
    /// When this stretch of on-shift time began and ends (holidays cut).
    pub start: Timestamp,
    pub end: Timestamp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoster {
    region: Spanned<String>,
    #[serde(default)]
    assignment: Option<RawAssignment>,
    #[serde(default)]
    agents: Vec<Spanned<RawAgent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssignment {
    #[serde(default)]
    auto: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    id: Spanned<String>,
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    skills: Vec<Spanned<String>>,
    #[serde(default)]
    languages: Vec<Spanned<String>>,
    max_open: Spanned<i64>,
    shifts: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    time_off: Vec<Spanned<String>>,
}

impl Roster {
    /// Reads a roster for the rules it runs with. `file_name` only labels
    /// errors. Every problem is reported; a roster with any is refused.
    pub fn parse(file_name: &str, text: &str, rules: &Rules) -> Result<Roster, RulesErrors> {
        let mut errors = Collector::new(file_name, text);
        let raw: RawRoster = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let message = e.message().lines().next().unwrap_or("invalid TOML").trim();
                errors.at(e.span().unwrap_or(0..0), message.to_owned());
                return Err(errors.finish());
            }
        };
        let region_span = raw.region.span();
        let region_name = raw.region.into_inner();
        let Some(region) = rules.region(&region_name) else {
            let ids = rules.regions.iter().map(|r| r.id.as_str());
            let hint = closest(&region_name, ids)
                .map(|c| format!("; did you mean {c:?}?"))
                .unwrap_or_default();
            errors.at(
                region_span,
                format!("region {region_name:?} is not in the rules{hint}"),
            );
            return Err(errors.finish());
        };
        let auto_assign = match raw.assignment.and_then(|a| a.auto) {
            None => AutoAssign::Off,
            Some(auto) => match AutoAssign::ALL
                .into_iter()
                .find(|a| a.as_str() == auto.get_ref())
            {
                Some(policy) => policy,
                None => {
                    errors.at(
                        auto.span(),
                        format!(
                            "assignment.auto is {:?}; use off, least_loaded or round_robin",
                            auto.get_ref()
                        ),
                    );
                    AutoAssign::Off
                }
            },
        };
        if raw.agents.len() > AGENTS_MAX {
            errors.at(
                0..0,
                format!(
                    "{} agents; a roster holds at most {AGENTS_MAX}",
                    raw.agents.len()
                ),
            );
        }
        let mut agents = Vec::with_capacity(raw.agents.len());
        let mut first_seen: BTreeMap<String, usize> = BTreeMap::new();
        for raw_agent in raw.agents {
            let raw_agent = raw_agent.into_inner();
            let id_span = raw_agent.id.span();
            let agent = agent(&mut errors, region, raw_agent);
            if let Some(line) = first_seen.get(&agent.id) {
                errors.at(
                    id_span,
                    format!("agent {:?} is already listed on line {line}", agent.id),
                );
                continue;
            }
            first_seen.insert(agent.id.clone(), errors.line_of(&id_span));
            agents.push(agent);
        }
        if !errors.is_empty() {
            return Err(errors.finish());
        }
        let by_id = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        Ok(Roster {
            region: region.id.clone(),
            auto_assign,
            agents,
            by_id,
        })
    }

    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.by_id.get(id).map(|&i| &self.agents[i])
    }

    /// Why `subject` may not act as an agent here, or `None` if it may.
    pub fn refusal(&self, subject: &str) -> Option<String> {
        if self.agent(subject).is_some() {
            return None;
        }
        let hint = closest(subject, self.agents.iter().map(|a| a.id.as_str()))
            .map(|c| format!("; did you mean {c:?}?"))
            .unwrap_or_default();
        Some(format!(
            "{subject:?} is not an agent of {}'s roster{hint}",
            self.region
        ))
    }

    /// The shift `agent` is working at `at`: the region is on one of the
    /// agent's shifts and the local day is not one of their days off.
    /// `None` when they are off.
    pub fn on_shift(&self, rules: &Rules, agent: &Agent, at: Timestamp) -> Option<AgentShift> {
        let region = rules.region(self.region.as_str())?;
        let (shift, start, end) = region.shift_at(at)?;
        if !agent.shifts.iter().any(|s| s == shift) {
            return None;
        }
        let today = region.time_zone.to_datetime(at).date();
        if agent
            .time_off
            .iter()
            .any(|(first, last)| (*first..=*last).contains(&today))
        {
            return None;
        }
        Some(AgentShift {
            shift: shift.to_owned(),
            start,
            end,
        })
    }
}

fn agent(errors: &mut Collector<'_>, region: &Region, raw: RawAgent) -> Agent {
    let id = raw.id.get_ref().clone();
    check_name(errors, raw.id.span(), "id", &id);
    let name = match raw.name {
        Some(name) => {
            check_name(errors, name.span(), "name", name.get_ref());
            name.into_inner()
        }
        None => id.clone(),
    };
    let mut skills = Vec::new();
    for skill in raw.skills {
        match Skill::new(skill.get_ref().as_str()) {
            Ok(s) if region.skills.contains(&s) => skills.push(s),
            Ok(s) => {
                let offered: Vec<&str> = region.skills.iter().map(Skill::as_str).collect();
                errors.at(
                    skill.span(),
                    format!(
                        "skill {s} is not one {} covers ({})",
                        region.id,
                        offered.join(", ")
                    ),
                );
            }
            Err(e) => errors.at(skill.span(), e.to_string()),
        }
    }
    let mut languages = Vec::new();
    for language in raw.languages {
        let tag = language.get_ref();
        let ok = !tag.is_empty()
            && tag.len() <= 35
            && tag.split('-').all(|part| {
                (1..=8).contains(&part.len()) && part.chars().all(|c| c.is_ascii_alphanumeric())
            });
        if ok {
            languages.push(tag.clone());
        } else {
            errors.at(
                language.span(),
                format!("{tag:?} is not a language tag such as en or pt-BR"),
            );
        }
    }
    let max_open = match u32::try_from(*raw.max_open.get_ref()) {
        Ok(n) if (1..=MAX_OPEN_LIMIT).contains(&n) => n,
        _ => {
            errors.at(
                raw.max_open.span(),
                format!(
                    "max_open is {}; it must be from 1 to {MAX_OPEN_LIMIT}",
                    raw.max_open.get_ref()
                ),
            );
            1
        }
    };
    let shifts_span = raw.shifts.span();
    let raw_shifts = raw.shifts.into_inner();
    if raw_shifts.is_empty() {
        errors.at(
            shifts_span,
            format!(
                "agent {id:?} works no shift; name at least one of {}'s",
                region.id
            ),
        );
    }
    let names: Vec<&str> = region.shift_names().collect();
    let mut shifts = Vec::new();
    for shift in raw_shifts {
        if names.contains(&shift.get_ref().as_str()) {
            shifts.push(shift.into_inner());
        } else {
            let hint = closest(shift.get_ref(), names.iter().copied())
                .map(|c| format!("; did you mean {c:?}?"))
                .unwrap_or_default();
            errors.at(
                shift.span(),
                format!(
                    "{} has no shift named {:?} (it has {}){hint}",
                    region.id,
                    shift.get_ref(),
                    names.join(", ")
                ),
            );
        }
    }
    let mut time_off = Vec::new();
    for off in raw.time_off {
        match days_off(off.get_ref()) {
            Ok(range) => time_off.push(range),
            Err(reason) => errors.at(off.span(), reason),
        }
    }
    Agent {
        id,
        name,
        skills,
        languages,
        max_open,
        shifts,
        time_off,
    }
}

fn check_name(errors: &mut Collector<'_>, span: Range<usize>, field: &str, value: &str) {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        errors.at(span, format!("{field} must not be empty"));
    } else if trimmed != value {
        errors.at(span, format!("{field} {value:?} has spaces at either end"));
    } else if value.chars().count() > AGENT_ID_CHARS_MAX {
        errors.at(
            span,
            format!("{field} is longer than {AGENT_ID_CHARS_MAX} characters"),
        );
    } else if let Some(bad) = value.chars().find(|c| c.is_control()) {
        errors.at(
            span,
            format!("{field} contains the control character {bad:?}"),
        );
    }
}

/// `2026-12-24` or `2026-12-28/2027-01-02` (ISO 8601 interval, both days
/// included).
fn days_off(text: &str) -> Result<(Date, Date), String> {
    let date = |part: &str| {
        part.trim()
            .parse::<Date>()
            .map_err(|_| format!("time_off {text:?}: {part:?} is not a date such as 2026-12-24"))
    };
    match text.split_once('/') {
        None => {
            let day = date(text)?;
            Ok((day, day))
        }
        Some((first, last)) => {
            let (first, last) = (date(first)?, date(last)?);
            if last < first {
                return Err(format!("time_off {text:?} ends before it starts"));
            }
            Ok((first, last))
        }
    }
}

impl Region {
    /// Names of the region's weekly shifts, then of its one-off openings.
    pub fn shift_names(&self) -> impl Iterator<Item = &str> {
        self.shifts
            .iter()
            .chain(self.opening_shifts.iter())
            .map(|s| s.name.as_str())
    }

    /// The shift the region is on at `at`, with the stretch's real start
    /// and end. `None` off shift.
    pub fn shift_at(&self, at: Timestamp) -> Option<(&str, Timestamp, Timestamp)> {
        let open = self.schedule.open_at(at)?;
        let shift = self.shift_of(open.label)?;
        Some((shift.name.as_str(), open.start, open.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
version = "t"
[[regions]]
id = "us-east"
index = 0
time_zone = "America/New_York"
skills = ["billing", "general"]
capacity = 100
preference = 50
[[regions.shifts]]
name = "day"
days = ["mon-fri"]
start = "08:00"
end = "17:00"
queue_owner = "lead"
[[regions.shifts]]
name = "late"
days = ["mon-fri"]
start = "17:00"
end = "21:00"
queue_owner = "late-lead"
[tiers.standard]
calendar = "24x7"
first_response_minutes = 60
next_response_minutes = 60
resolution_minutes = 600
"#;

    fn rules() -> Rules {
        Rules::parse("rules.toml", RULES).unwrap()
    }

    fn refused(text: &str) -> Vec<String> {
        Roster::parse("roster.toml", text, &rules())
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const GOOD: &str = r#"region = "us-east"
[assignment]
auto = "least_loaded"
[[agents]]
id = "ana"
name = "Ana Souza"
skills = ["billing", "general"]
languages = ["en", "pt"]
max_open = 3
shifts = ["day"]
time_off = ["2026-12-24", "2026-12-28/2027-01-02"]
[[agents]]
id = "bo"
max_open = 5
shifts = ["day", "late"]
"#;

    #[test]
    fn a_roster_reads_with_its_defaults() {
        let roster = Roster::parse("roster.toml", GOOD, &rules()).unwrap();
        assert_eq!(roster.auto_assign, AutoAssign::LeastLoaded);
        let ana = roster.agent("ana").unwrap();
        assert_eq!(ana.name, "Ana Souza");
        assert_eq!(ana.time_off.len(), 2);
        let bo = roster.agent("bo").unwrap();
        assert_eq!(bo.name, "bo", "the name defaults to the id");
        assert!(bo.skills.is_empty() && bo.languages.is_empty());
        assert_eq!(roster.refusal("bo"), None);
        assert_eq!(
            roster.refusal("and").as_deref(),
            Some("\"and\" is not an agent of us-east's roster; did you mean \"ana\"?")
        );
    }

    #[test]
    fn every_problem_is_named_at_its_line_and_column() {
        let text = r#"region = "us-east"
[assignment]
auto = "random"
[[agents]]
id = "ana"
skills = ["billing", "plumbing"]
languages = ["en", "not a tag"]
max_open = 0
shifts = ["dya"]
time_off = ["2026-13-01", "2027-01-02/2026-12-28"]
[[agents]]
id = "ana"
max_open = 1
shifts = []
"#;
        assert_eq!(
            refused(text),
            [
                "roster.toml:3:8: assignment.auto is \"random\"; use off, least_loaded or round_robin",
                "roster.toml:6:22: skill plumbing is not one us-east covers (billing, general)",
                "roster.toml:7:20: \"not a tag\" is not a language tag such as en or pt-BR",
                "roster.toml:8:12: max_open is 0; it must be from 1 to 10000",
                "roster.toml:9:11: us-east has no shift named \"dya\" (it has day, late); did you mean \"day\"?",
                "roster.toml:10:13: time_off \"2026-13-01\": \"2026-13-01\" is not a date such as 2026-12-24",
                "roster.toml:10:27: time_off \"2027-01-02/2026-12-28\" ends before it starts",
                "roster.toml:12:6: agent \"ana\" is already listed on line 5",
                "roster.toml:14:10: agent \"ana\" works no shift; name at least one of us-east's",
            ]
        );
    }

    #[test]
    fn an_unknown_region_or_field_or_bad_toml_is_refused() {
        assert_eq!(
            refused("region = \"us-eats\"\n"),
            ["roster.toml:1:10: region \"us-eats\" is not in the rules; did you mean \"us-east\"?"]
        );
        let unknown = refused(
            "region = \"us-east\"\n[[agents]]\nid = \"a\"\nmax_open = 1\nshifts = [\"day\"]\nskils = []\n",
        );
        assert_eq!(unknown.len(), 1);
        assert!(
            unknown[0].starts_with("roster.toml:6:1: unknown field `skils`"),
            "{unknown:?}"
        );
        let bad = refused("region = \n");
        assert!(bad[0].starts_with("roster.toml:1:"), "{bad:?}");
    }

    #[test]
    fn an_agent_is_on_the_shifts_they_work_and_not_on_days_off() {
        let rules = rules();
        let roster = Roster::parse("roster.toml", GOOD, &rules).unwrap();
        let (ana, bo) = (roster.agent("ana").unwrap(), roster.agent("bo").unwrap());
        // Monday 2026-12-07, 10:00 in New York: the day shift.
        let day: Timestamp = "2026-12-07T15:00:00Z".parse().unwrap();
        let on = roster.on_shift(&rules, ana, day).unwrap();
        assert_eq!(on.shift, "day");
        assert_eq!(
            on.start,
            "2026-12-07T13:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(on.end, "2026-12-07T22:00:00Z".parse::<Timestamp>().unwrap());
        // 18:00 in New York: the late shift, which bo works and ana does not.
        let late: Timestamp = "2026-12-07T23:00:00Z".parse().unwrap();
        assert_eq!(roster.on_shift(&rules, ana, late), None);
        assert_eq!(roster.on_shift(&rules, bo, late).unwrap().shift, "late");
        // Ana's day off (Christmas Eve, a Thursday) and her range.
        let eve: Timestamp = "2026-12-24T15:00:00Z".parse().unwrap();
        assert_eq!(roster.on_shift(&rules, ana, eve), None);
        assert!(roster.on_shift(&rules, bo, eve).is_some());
        let range: Timestamp = "2026-12-30T15:00:00Z".parse().unwrap();
        assert_eq!(roster.on_shift(&rules, ana, range), None);
        // Saturday: nobody.
        let weekend: Timestamp = "2026-12-12T15:00:00Z".parse().unwrap();
        assert_eq!(roster.on_shift(&rules, bo, weekend), None);
    }
}
