//! How fast a region decides who gets a new ticket, in process.
//!
//! A roster of 50 agents on the example rules' us-east at a Monday
//! afternoon, with loads that change as tickets are given out:
//! 1. the decision alone (`meridian_core::agent::choose`, least loaded and
//!    round robin) over candidates already built;
//! 2. what the gateway does per creation: each agent's shift from the
//!    rules and roster (`Roster::on_shift`), then the decision.
//!
//! The baseline is the least a decision can cost: the smallest of 50
//! loads (`min_by_key` over a slice). Medians over rounds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A benchmark: fail loudly.

use std::hint::black_box;
use std::time::Instant;

use jiff::Timestamp;
use meridian_core::{
    AutoAssign, Presence, Skill,
    agent::{Candidate, choose},
};
use meridian_rules::{Roster, Rules};

use crate::{
    Sizes,
    progress::Progress,
    report::{Row, ScenarioReport},
};

const AGENTS: usize = 50;

fn roster_text() -> String {
    let mut text = String::from("region = \"us-east\"\n[assignment]\nauto = \"least_loaded\"\n");
    for i in 0..AGENTS {
        text.push_str(&format!(
            "[[agents]]\nid = \"agent-{i:02}\"\nskills = [\"billing\", \"general\"]\nmax_open = 10000\nshifts = [\"day\", \"late\"]\n"
        ));
    }
    text
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// Decisions per second of `decide` over `n` decisions, each given the
/// loads it updates.
fn rate(n: usize, loads: &mut [u32], mut decide: impl FnMut(&[u32]) -> usize) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        let i = decide(loads);
        loads[i] += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

pub async fn run(sizes: &Sizes, progress: &Progress) -> anyhow::Result<ScenarioReport> {
    let (rounds, decisions) = if sizes.smoke {
        (1, 2_000)
    } else {
        (sizes.rounds as usize + 2, 200_000)
    };
    let mut report = ScenarioReport::new(
        "assign",
        format!(
            "{AGENTS} available agents on shift; {decisions} decisions x {rounds} rounds, 1 thread"
        ),
    );
    progress.say("in process");
    let rules = Rules::parse("rules.example.toml", crate::route::RULES)?;
    let roster = Roster::parse("roster.toml", &roster_text(), &rules)?;
    let at: Timestamp = crate::route::BENCH_INSTANT.parse()?;
    let ids: Vec<&str> = roster.agents.iter().map(|a| a.id.as_str()).collect();
    let skills = [Skill::new("billing")?];
    let no_languages: Vec<String> = Vec::new();
    let position = |chosen: &str| ids.iter().position(|id| *id == chosen).unwrap();

    let (mut bare, mut least, mut round, mut full) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let mut loads = vec![0u32; AGENTS];
        bare.push(rate(decisions, &mut loads, |loads| {
            black_box(loads)
                .iter()
                .enumerate()
                .min_by_key(|(_, n)| **n)
                .map_or(0, |(i, _)| i)
        }));
        for (policy, out) in [
            (AutoAssign::LeastLoaded, &mut least),
            (AutoAssign::RoundRobin, &mut round),
        ] {
            let mut loads = vec![0u32; AGENTS];
            let mut last: Option<usize> = None;
            out.push(rate(decisions, &mut loads, |loads| {
                let candidates: Vec<Candidate> = roster
                    .agents
                    .iter()
                    .zip(loads)
                    .map(|(agent, open)| Candidate {
                        id: &agent.id,
                        presence: Presence::Available,
                        on_shift: true,
                        skills: &agent.skills,
                        languages: &no_languages,
                        open: *open,
                        max_open: agent.max_open,
                    })
                    .collect();
                let chosen = choose(policy, &candidates, &skills, "en", last.map(|i| ids[i]));
                let i = position(chosen.unwrap());
                last = Some(i);
                i
            }));
        }
        let mut loads = vec![0u32; AGENTS];
        full.push(rate(decisions / 10, &mut loads, |loads| {
            let candidates: Vec<Candidate> = roster
                .agents
                .iter()
                .zip(loads)
                .map(|(agent, open)| Candidate {
                    id: &agent.id,
                    presence: Presence::Available,
                    on_shift: roster.on_shift(&rules, agent, black_box(at)).is_some(),
                    skills: &agent.skills,
                    languages: &no_languages,
                    open: *open,
                    max_open: agent.max_open,
                })
                .collect();
            position(choose(AutoAssign::LeastLoaded, &candidates, &skills, "en", None).unwrap())
        }));
    }
    let baseline = report
        .row(Row::new("bare min_by_key over 50 loads", median(bare), "decisions/s").baseline());
    report.row(Row::new("least_loaded decision", median(least), "decisions/s").against(&baseline));
    report.row(Row::new("round_robin decision", median(round), "decisions/s").against(&baseline));
    let full = median(full);
    report.row(
        Row::new(
            "least_loaded with each agent's shift from the rules",
            full,
            "decisions/s",
        )
        .against(&baseline),
    );
    report.target(
        "assignment decisions/s in process (with shifts)",
        10_000.0,
        full,
        "decisions/s",
        true,
    );
    Ok(report)
}
