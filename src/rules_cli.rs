//! `meridian rules …` and `meridian sla …`: the operator's commands for
//! follow-the-sun rules files.
//!
//! This module reads files, parses arguments and prints; every answer comes
//! from `meridian-rules` (pure, no I/O), and every human-facing text from
//! `meridian_rules::render`, where it is snapshot-tested. With
//! `--output json` each command prints exactly one JSON object on stdout,
//! errors included.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use jiff::Timestamp;
use jiff::civil::Date;
use meridian_core::{Priority, RegionId, Skill, Tier};
use meridian_router::what_if;
use meridian_rules::{
    COVERAGE_DAYS_MAX, Metric, Pauses, RegionHealth, RouteRequest, Rules, RulesErrors, render,
};
use serde_json::json;

use crate::cli_output;

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Text for people.
    #[default]
    Table,
    /// Exactly one JSON object.
    Json,
}

#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// Validate a rules file: exit 0, or 1 with `FILE:LINE:COL: message` lines.
    Check {
        /// The rules file (TOML).
        file: PathBuf,
        /// table for people, json for one JSON object on stdout (errors too).
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// The regions on shift (or in their overlap window) at an instant.
    Active {
        /// The rules file (TOML).
        file: PathBuf,
        /// RFC 3339 instant, such as 2026-06-01T14:00:00Z, or now.
        #[arg(long, default_value = "now", value_parser = crate::cli_output::parse_instant)]
        at: Timestamp,
        /// table for people, json for one JSON object on stdout (errors too).
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Where a ticket would be routed at an instant, and why.
    Explain {
        /// The rules file (TOML).
        file: PathBuf,
        /// RFC 3339 instant, such as 2026-06-01T14:00:00Z, or now.
        #[arg(long, default_value = "now", value_parser = crate::cli_output::parse_instant)]
        at: Timestamp,
        /// The ticket's tier (scores SLA headroom).
        #[arg(long)]
        tier: Option<String>,
        /// A skill the ticket needs; repeat for several.
        #[arg(long = "skill")]
        skills: Vec<String>,
        /// A region or residency rule the ticket's data may stay in; repeat
        /// for several.
        #[arg(long)]
        residency: Vec<String>,
        /// Treat this region as down; repeat for several. Others are up.
        #[arg(long)]
        down: Vec<String>,
        /// low, normal, high or urgent.
        #[arg(long, default_value = "normal")]
        priority: String,
        /// The ticket's language tag, such as de or pt-BR (prefers regions
        /// that declare it).
        #[arg(long)]
        language: Option<String>,
        /// table for people, json for one JSON object on stdout (errors too).
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Coverage per region and per skill, hour by hour (UTC), with gaps.
    Simulate {
        /// The rules file (TOML).
        file: PathBuf,
        /// First day (UTC), such as 2026-06-01, or now (today).
        #[arg(long, default_value = "now", value_parser = parse_day)]
        from: Date,
        /// Number of days, 1 to 366.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Also write the grid as an SVG picture to this file.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// table for people, json for one JSON object on stdout (errors too).
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Compare a proposed rules file with the rules in force, as the
    /// console's what-if does, applying nothing: the coverage cells (region,
    /// skill, hour) that change over 7 days from --from.
    WhatIf {
        /// The proposed rules file (TOML).
        proposed: PathBuf,
        /// The rules file in force to compare with; needed here or in the
        /// environment.
        #[arg(long, env = "MERIDIAN_RULES", value_name = "FILE")]
        active: Option<PathBuf>,
        /// First day (UTC) of the comparison, such as 2026-06-01, or now
        /// (today).
        #[arg(long, default_value = "now", value_parser = parse_day)]
        from: Date,
        /// table for people, json for one JSON object on stdout (errors too).
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum SlaCommand {
    /// The SLA deadline of a ticket of some tier, as RFC 3339 with the offset
    /// of the tier's calendar.
    Deadline {
        /// The rules file (TOML).
        file: PathBuf,
        /// The ticket's tier, as the rules name it.
        #[arg(long)]
        tier: String,
        /// first_response, next_response or resolution.
        #[arg(long)]
        metric: Metric,
        /// When the clock started (RFC 3339), or now.
        #[arg(long, value_parser = crate::cli_output::parse_instant)]
        start: Timestamp,
        /// The ticket's customer: its own calendar ([customers.NAME]) wins
        /// over the tier's.
        #[arg(long)]
        customer: Option<String>,
        /// Start of a pause (the ticket was pending); pairs with the
        /// --paused-until at the same position.
        #[arg(long = "paused-from")]
        paused_from: Vec<Timestamp>,
        /// End of a pause.
        #[arg(long = "paused-until")]
        paused_until: Vec<Timestamp>,
        /// table for people, json for one JSON object on stdout (errors too).
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
    },
}

/// Reads and parses a rules file. `Ok(Err(..))` is a file that was read but
/// refused; the caller prints its errors and exits 1.
fn load(file: &Path) -> anyhow::Result<Result<Rules, RulesErrors>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading rules file {}", file.display()))?;
    // iCalendar feeds (holidays_ics) are read beside the rules file.
    let dir = file.parent().unwrap_or(Path::new(".")).to_owned();
    let read = |feed: &str| {
        let path = dir.join(feed);
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    Ok(Rules::parse_with_files(
        &file.display().to_string(),
        &text,
        &read,
    ))
}

/// Prints a refused file's errors (stderr for people, one JSON object on
/// stdout for machines) and returns exit code 1.
fn refused(file: &Path, errors: &RulesErrors, output: OutputFormat) -> anyhow::Result<ExitCode> {
    match output {
        OutputFormat::Table => eprintln!("{errors}"),
        OutputFormat::Json => {
            let list: Vec<_> = errors
                .iter()
                .map(|e| json!({ "line": e.line, "column": e.column, "message": e.message, "text": e.to_string() }))
                .collect();
            print_json(
                &json!({ "file": file.display().to_string(), "ok": false, "errors": list }),
            )?;
        }
    }
    Ok(ExitCode::from(1))
}

/// Writes to stdout. A closed pipe (`meridian rules … | head`) ends the
/// output quietly instead of panicking as `println!` would.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut value = value.clone();
    cli_output::normalize_instants(&mut value);
    emit(&format!("{}\n", serde_json::to_string_pretty(&value)?))
}

/// Loads the rules or returns early with exit code 1 after printing why.
macro_rules! rules_or_exit {
    ($file:expr, $output:expr) => {
        match load(&$file)? {
            Ok(rules) => rules,
            Err(errors) => return refused(&$file, &errors, $output),
        }
    };
}

pub fn run_rules(cmd: RulesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RulesCommand::Check { file, output } => {
            let rules = rules_or_exit!(file, output);
            let name = file.display().to_string();
            let warnings =
                rules.holiday_warnings(Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date());
            match output {
                OutputFormat::Table => {
                    emit(&format!("{}\n", render::check_ok(&name, &rules)))?;
                    for warning in &warnings {
                        eprintln!("{warning}");
                    }
                }
                OutputFormat::Json => print_json(&json!({
                    "file": name,
                    "ok": true,
                    "warnings": warnings,
                    "version": rules.version(),
                    "content_hash": rules.content_hash(),
                    "regions": rules.regions().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
                    "tiers": rules.tiers().iter().map(|t| t.tier.as_str()).collect::<Vec<_>>(),
                }))?,
            }
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::Active { file, at, output } => {
            let rules = rules_or_exit!(file, output);
            let active = rules.active_at(at);
            match output {
                OutputFormat::Table => emit(&render::active_table(&rules, at, &active))?,
                OutputFormat::Json => print_json(&json!({
                    "at": cli_output::instant(at),
                    "rules_version": rules.version_id(),
                    "active": active,
                    "next_change": rules.next_shift_change(at),
                }))?,
            }
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::Explain {
            file,
            at,
            tier,
            skills,
            residency,
            down,
            priority,
            language,
            output,
        } => {
            let rules = rules_or_exit!(file, output);
            let mut request = route_request(&rules, tier, skills, residency, &priority)?;
            if let Some(tag) = language {
                if meridian_rules::primary_subtag(&tag).is_none() {
                    bail!("--language {tag}: not a language tag such as en or pt-BR");
                }
                request.language = Some(tag);
            }
            let mut health: HashMap<RegionId, RegionHealth> = rules
                .regions()
                .iter()
                .map(|r| (r.id.clone(), RegionHealth::Up))
                .collect();
            for name in &down {
                let region = rules.region(name).with_context(|| {
                    format!(
                        "--down {name}: no such region; the rules define {}",
                        region_list(&rules)
                    )
                })?;
                health.insert(region.id.clone(), RegionHealth::Down);
            }
            let decision = rules.decide(at, &health, &HashMap::new(), &request);
            match output {
                OutputFormat::Table => emit(&render::decision_table(&rules, &decision))?,
                OutputFormat::Json => print_json(&serde_json::to_value(&decision)?)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::Simulate {
            file,
            from,
            days,
            svg,
            output,
        } => {
            if days == 0 || days > COVERAGE_DAYS_MAX {
                bail!("--days {days}: give 1 to {COVERAGE_DAYS_MAX} days");
            }
            let rules = rules_or_exit!(file, output);
            let coverage = rules.coverage(from, days);
            if let Some(path) = &svg {
                std::fs::write(path, render::coverage_svg(&coverage))
                    .with_context(|| format!("writing SVG to {}", path.display()))?;
            }
            match output {
                OutputFormat::Table => {
                    emit(&render::coverage_table(&coverage))?;
                    if let Some(path) = &svg {
                        emit(&format!("svg written to {}\n", path.display()))?;
                    }
                }
                OutputFormat::Json => {
                    let mut value = serde_json::to_value(&coverage)?;
                    if let Some(object) = value.as_object_mut() {
                        object.insert(
                            "svg".to_owned(),
                            json!(svg.as_ref().map(|p| p.display().to_string())),
                        );
                    }
                    print_json(&value)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::WhatIf {
            proposed,
            active,
            from,
            output,
        } => {
            // Not clap's `required`: that shows as required even when
            // MERIDIAN_RULES supplies it.
            let active =
                active.context("--active: give the rules file in force (or set MERIDIAN_RULES)")?;
            let active_rules = rules_or_exit!(active, output);
            // Parsed here first so that a refusal names the file as given.
            let _ = rules_or_exit!(proposed, output);
            let text = std::fs::read_to_string(&proposed)
                .with_context(|| format!("reading rules file {}", proposed.display()))?;
            let regions = active_rules
                .regions()
                .iter()
                .map(|r| r.id.clone())
                .collect();
            let answer = what_if::what_if(
                &active_rules,
                &text,
                from,
                &[],
                &regions,
                &Default::default(),
            )
            .map_err(|problems| {
                let lines: Vec<_> = problems.into_iter().map(|p| p.text).collect();
                anyhow::anyhow!("{} is refused: {}", proposed.display(), lines.join("; "))
            })?;
            match output {
                OutputFormat::Table => emit(&what_if_text(&answer))?,
                OutputFormat::Json => print_json(&what_if_json(&answer)?)?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A day given on the command line: YYYY-MM-DD, or `now` (today in UTC).
fn parse_day(text: &str) -> Result<Date, String> {
    if text.trim().eq_ignore_ascii_case("now") {
        return Ok(Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date());
    }
    text.trim()
        .parse::<Date>()
        .map_err(|e| format!("{text:?} is not a day (such as 2026-06-01) or now: {e}"))
}

/// The what-if for people: what changes, hour by hour.
fn what_if_text(answer: &what_if::WhatIf) -> String {
    let mut out = format!(
        "rules in force {}, proposed {}\n",
        answer.active_version, answer.proposed_version
    );
    let grid = &answer.grid;
    out.push_str(&format!(
        "{} coverage cells change over {} days from {} (gaps under the proposal: {} h)\n",
        answer.changed_cells_total, grid.days, grid.from, grid.gap_hours
    ));
    let minutes = |m: Option<u8>| m.map_or_else(|| "-".to_owned(), |m| format!("{m} min"));
    for cell in &answer.changed_cells {
        let kind = serde_json::to_value(cell.kind).ok();
        let kind = kind.as_ref().and_then(|k| k.as_str()).unwrap_or("row");
        out.push_str(&format!(
            "  {}  {kind} {}: {} -> {}\n",
            cli_output::instant(cell.at),
            cell.name,
            minutes(cell.before),
            minutes(cell.after)
        ));
    }
    if answer.changed_cells.len() < answer.changed_cells_total {
        out.push_str(&format!(
            "  ... and {} more\n",
            answer.changed_cells_total - answer.changed_cells.len()
        ));
    }
    out
}

/// The what-if as one JSON object, instants at the CLI's one precision.
fn what_if_json(answer: &what_if::WhatIf) -> anyhow::Result<serde_json::Value> {
    let mut value = serde_json::to_value(answer)?;
    if let Some(cells) = value
        .get_mut("changed_cells")
        .and_then(|c| c.as_array_mut())
    {
        for (cell, changed) in cells.iter_mut().zip(&answer.changed_cells) {
            cell["at"] = json!(cli_output::instant(changed.at));
        }
    }
    Ok(value)
}

pub fn run_sla(cmd: SlaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SlaCommand::Deadline {
            file,
            tier,
            metric,
            start,
            customer,
            paused_from,
            paused_until,
            output,
        } => {
            if paused_from.len() != paused_until.len() {
                bail!(
                    "{} --paused-from but {} --paused-until; give them in pairs, one --paused-until for each --paused-from",
                    paused_from.len(),
                    paused_until.len()
                );
            }
            let rules = rules_or_exit!(file, output);
            let pauses = Pauses::new(paused_from.into_iter().zip(paused_until))?;
            let deadline =
                rules.sla_deadline_for(&tier, customer.as_deref(), metric, start, &pauses)?;
            match output {
                OutputFormat::Table => emit(&render::deadline_text(&deadline))?,
                OutputFormat::Json => print_json(&serde_json::to_value(&deadline)?)?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn region_list(rules: &Rules) -> String {
    rules
        .regions()
        .iter()
        .map(|r| r.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds the ticket attributes for `explain`, refusing names the rules do
/// not define (the decision itself would only warn; a person typing a
/// command wants to hear about the typo).
fn route_request(
    rules: &Rules,
    tier: Option<String>,
    skills: Vec<String>,
    residency: Vec<String>,
    priority: &str,
) -> anyhow::Result<RouteRequest> {
    let tier = match tier {
        None => None,
        Some(name) => {
            if rules.tier(&name).is_none() {
                let known: Vec<_> = rules.tiers().iter().map(|t| t.tier.as_str()).collect();
                bail!(
                    "--tier {name}: no such tier; the rules define {}",
                    known.join(", ")
                );
            }
            Some(Tier::new(name)?)
        }
    };
    let skills = skills
        .into_iter()
        .map(|s| Skill::new(s.clone()).with_context(|| format!("--skill {s}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for name in &residency {
        if rules.residency(name).is_none() {
            let rules_named: Vec<_> = rules
                .residency_rules()
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            bail!(
                "--residency {name}: not a region or residency rule; regions: {}; residency rules: {}",
                region_list(rules),
                if rules_named.is_empty() {
                    "none".to_owned()
                } else {
                    rules_named.join(", ")
                }
            );
        }
    }
    let priority: Priority = priority
        .parse()
        .with_context(|| format!("--priority {priority}"))?;
    Ok(RouteRequest {
        tier,
        skills,
        residency,
        priority,
        language: None,
    })
}
