//! Human-facing text for the `meridian rules` and `meridian sla` commands:
//! plain functions from results to `String`, so they are snapshot-tested here
//! and the CLI only prints them.

use std::fmt::Write as _;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::calendar::SlaDeadline;
use crate::coverage::{CalendarDayKind, Coverage, CoverageRowKind, HourRange};
use crate::model::Rules;
use crate::route::{Decision, Reason, Warning};
use crate::shifts::{ActiveShift, ShiftPosition};

/// Pads columns to their widest cell, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn utc(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

fn local(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone())
        .strftime("%a %Y-%m-%d %H:%M %Z")
        .to_string()
}

/// `FILE: ok, version V, N regions`.
pub fn check_ok(file: &str, rules: &Rules) -> String {
    let n = rules.regions().len();
    format!(
        "{file}: ok, version {}, {n} region{}",
        rules.version(),
        if n == 1 { "" } else { "s" }
    )
}

/// The regions on shift (and in overlap) at an instant.
pub fn active_table(rules: &Rules, at: Timestamp, active: &[ActiveShift]) -> String {
    let mut out = format!("at {} (rules {})\n", utc(at), rules.version_id());
    if active.is_empty() {
        out.push_str("no region is on shift\n");
    } else {
        let mut rows = vec![vec![
            "REGION".to_owned(),
            "STATE".to_owned(),
            "SHIFT".to_owned(),
            "QUEUE OWNER".to_owned(),
            "LOCAL WINDOW".to_owned(),
            "UTC WINDOW".to_owned(),
        ]];
        for a in active {
            let tz = rules
                .region(&a.region)
                .map_or(TimeZone::UTC, |r| r.time_zone.clone());
            let mut state = a.position.as_str().to_owned();
            if a.handing_off {
                state.push_str(" (handing off)");
            }
            rows.push(vec![
                a.region.clone(),
                state,
                a.shift.clone(),
                a.queue_owner.clone(),
                format!("{} → {}", local(a.start, &tz), local(a.end, &tz)),
                format!("{} → {}", utc(a.start), utc(a.end)),
            ]);
            if (a.effective_start, a.effective_end) != (a.start, a.end) {
                rows.push(vec![
                    String::new(),
                    String::new(),
                    String::new(),
                    "(holiday cuts it to)".to_owned(),
                    format!(
                        "{} → {}",
                        local(a.effective_start, &tz),
                        local(a.effective_end, &tz)
                    ),
                    format!("{} → {}", utc(a.effective_start), utc(a.effective_end)),
                ]);
            }
        }
        out.push_str(&table(&rows));
    }
    if let Some(change) = rules.next_shift_change(at) {
        let verb = match change.kind {
            crate::shifts::ShiftChangeKind::Start => "starts",
            crate::shifts::ShiftChangeKind::End => "ends",
        };
        let _ = writeln!(
            out,
            "next change: {} {verb} shift {:?} at {}",
            change.region,
            change.shift,
            utc(change.at)
        );
    }
    out
}

fn reason_sentence(rules: &Rules, d: &Decision<'_>) -> String {
    let region = d.region.map_or("", |r| r.as_str());
    let kept = d.candidates.iter().filter(|c| c.filtered.is_none()).count();
    let policy = d.out_of_hours_policy.map_or("", |p| p.as_str());
    let fallback = match (d.out_of_hours_policy, d.reason) {
        (Some(crate::model::OutOfHoursKind::OnCall), Reason::OutOfHoursNextOnShift) => {
            " (the on_call policy found no healthy on-call region the ticket may go to, so it fell back to next_on_shift)"
        }
        (Some(crate::model::OutOfHoursKind::Escalation), Reason::OutOfHoursNextOnShift) => {
            " (the escalation path had no healthy region the ticket may go to, so it fell back to next_on_shift)"
        }
        _ => "",
    };
    match d.reason {
        Reason::OnShift => format!(
            "{region} is on shift and scored highest of {kept} eligible region{}",
            plural(kept)
        ),
        Reason::Overlap => {
            let starts = d
                .candidates
                .iter()
                .find(|c| c.chosen)
                .and_then(|c| c.next_shift_at);
            format!(
                "{region} is in the {}-minute overlap before its shift starts{} and scored highest of {kept} eligible region{}",
                rules.overlap_minutes(),
                starts
                    .map(|t| format!(" at {}", utc(t)))
                    .unwrap_or_default(),
                plural(kept)
            )
        }
        Reason::OutOfHoursNextOnShift => format!(
            "no eligible region is on shift; out-of-hours policy {policy}: {region} is the next to start a shift{}{fallback}",
            d.next_shift_at
                .map(|t| format!(", at {}", utc(t)))
                .unwrap_or_default()
        ),
        Reason::OutOfHoursOnCall => {
            format!(
                "no eligible region is on shift; out-of-hours policy on_call sends the ticket to the on-call region {region}"
            )
        }
        Reason::Escalation => format!(
            "no eligible region is on shift; out-of-hours policy escalation follows the escalation path of {} to {region}",
            d.escalated_from.map_or("", |r| r.as_str())
        ),
        Reason::NoEligibleRegion => {
            "no region can take the ticket, not even out of hours; each candidate below says why"
                .to_owned()
        }
    }
}

/// What the ticket's language did to the decision, for `explain`.
fn language_sentence(rules: &Rules, d: &Decision<'_>, language: &str) -> String {
    let speakers: Vec<&str> = d
        .candidates
        .iter()
        .filter(|c| c.speaks_language == Some(true))
        .map(|c| c.region.as_str())
        .collect();
    let kept_speakers: Vec<&str> = d
        .candidates
        .iter()
        .filter(|c| c.speaks_language == Some(true) && c.filtered.is_none())
        .map(|c| c.region.as_str())
        .collect();
    let chosen_speaks = d
        .candidates
        .iter()
        .any(|c| c.chosen && c.speaks_language == Some(true));
    let weight = rules.routing.language_weight;
    if speakers.is_empty() {
        format!("{language}: no region declares it; routed without a language preference")
    } else if chosen_speaks {
        format!(
            "{language}: {} speaks it, preferred (+{weight:.2} to its score); spoken by {}",
            d.region.map_or("", |r| r.as_str()),
            speakers.join(", ")
        )
    } else if kept_speakers.is_empty() {
        format!(
            "{language}: spoken by {}, none of them eligible now; routed without a language preference",
            speakers.join(", ")
        )
    } else {
        format!(
            "{language}: spoken by {} (+{weight:.2} each), outscored by the chosen region",
            kept_speakers.join(", ")
        )
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The decision, its reason and the candidates considered.
pub fn decision_table(rules: &Rules, d: &Decision<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "decision at {} (rules {}+{})",
        utc(d.at),
        d.rules_version,
        d.rules_hash
    );
    match d.region {
        Some(region) => {
            let _ = write!(out, "  route to: {region}");
            if let Some(owner) = d.queue_owner {
                let _ = write!(out, " (queue owner {owner})");
            }
            out.push('\n');
        }
        None => out.push_str("  route to: nowhere\n"),
    }
    let _ = writeln!(
        out,
        "  reason:   {} — {}",
        d.reason.as_str(),
        reason_sentence(rules, d)
    );
    for w in &d.warnings {
        let text = match w {
            Warning::UnknownTier => {
                "the ticket's tier is not in the rules; SLA headroom was not scored"
            }
            Warning::UnknownSkill => "the ticket needs a skill no region covers",
            Warning::UnknownResidency => {
                "a residency entry names neither a region nor a residency rule"
            }
        };
        let _ = writeln!(out, "  warning:  {text}");
    }
    if let Some(language) = &d.language {
        let _ = writeln!(out, "  language: {}", language_sentence(rules, d, language));
    }
    out.push_str("candidates (kept by score, then filtered):\n");
    let mut rows = vec![vec![
        "  REGION".to_owned(),
        "POSITION".to_owned(),
        "VERDICT".to_owned(),
        "SCORE".to_owned(),
        "PREF".to_owned(),
        "LOAD".to_owned(),
        "HEADROOM".to_owned(),
        "TICKETS".to_owned(),
        "SHIFT".to_owned(),
    ]];
    for c in &d.candidates {
        let verdict = match (c.chosen, c.filtered) {
            (true, Some(f)) => format!("chosen (was {})", f.as_str()),
            (true, None) => "chosen".to_owned(),
            (false, None) => "kept".to_owned(),
            (false, Some(f)) => format!("filtered: {}", f.as_str()),
        };
        let (score, pref, load, headroom) = match c.score {
            Some(s) => (
                format!("{:.2}", s.total),
                format!("{:.2}", s.preference),
                format!("{:.2}", s.load),
                format!("{:.2}", s.headroom),
            ),
            None => (
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
            ),
        };
        let shift = match (c.position, c.shift_ends_at, c.next_shift_at) {
            (ShiftPosition::OnShift, Some(end), _) => format!("until {}", utc(end)),
            (_, _, Some(next)) => format!("starts {}", utc(next)),
            _ => "none within 14 days".to_owned(),
        };
        rows.push(vec![
            format!("  {}", c.region),
            c.position.as_str().to_owned(),
            verdict,
            score,
            pref,
            load,
            headroom,
            format!("{}/{}", c.open_tickets, c.capacity),
            shift,
        ]);
    }
    out.push_str(&table(&rows));
    out
}

/// An SLA deadline: the RFC 3339 instant on the first line, then how it was
/// computed.
pub fn deadline_text(d: &SlaDeadline) -> String {
    let mut out = format!("{}\n", d.deadline);
    let _ = write!(
        out,
        "  tier {}, {} = {} minutes in calendar {:?} ({}), from {}",
        d.tier, d.metric, d.minutes, d.calendar, d.time_zone, d.start
    );
    if d.paused_minutes > 0 {
        let _ = write!(out, "; {} minutes of it paused", d.paused_minutes);
    }
    out.push('\n');
    out
}

fn cell(minutes: u8) -> char {
    match minutes {
        60.. => '█',
        0 => '·',
        _ => '▒',
    }
}

fn range_text(r: &HourRange) -> String {
    format!(
        "{} → {} ({} h{})",
        r.start.strftime("%a %Y-%m-%d %H:%M"),
        r.end.strftime("%a %Y-%m-%d %H:%M UTC"),
        r.hours,
        if r.partial { ", partly covered" } else { "" }
    )
}

/// The coverage grid as a terminal table: one block per region, per skill
/// and for any region, a row per day, a column per UTC hour.
pub fn coverage_table(c: &Coverage) -> String {
    let mut out = String::new();
    let last = c
        .from
        .checked_add(jiff::Span::new().days(i64::from(c.days) - 1))
        .unwrap_or(c.from);
    let _ = writeln!(
        out,
        "coverage {} to {} ({} day{}), UTC hours, rules {}",
        c.from,
        last,
        c.days,
        plural(c.days as usize),
        c.rules_version
    );
    out.push_str("█ covered all hour   ▒ part of the hour   · not covered\n");
    let mut kind = None;
    for row in &c.rows {
        if kind != Some(row.kind) {
            kind = Some(row.kind);
            let title = match row.kind {
                CoverageRowKind::Region => "regions",
                CoverageRowKind::Skill => "skills",
                CoverageRowKind::Any => "all regions together",
            };
            let _ = writeln!(out, "\n{title}");
        }
        let _ = writeln!(out, "  {}", row.name);
        let _ = writeln!(out, "    {:<14}  00     06     12     18", "");
        for (day_index, hours) in row.minutes.chunks(24).enumerate() {
            let day = c
                .from
                .checked_add(jiff::Span::new().days(day_index as i64))
                .unwrap_or(c.from);
            let mut line = format!("    {}  ", day.strftime("%a %Y-%m-%d"));
            for (h, m) in hours.iter().enumerate() {
                if h > 0 && h % 6 == 0 {
                    line.push(' ');
                }
                line.push(cell(*m));
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push('\n');
    if c.gaps.is_empty() {
        out.push_str("gaps: none; some region is on shift every hour\n");
    } else {
        let total: u32 = c.gaps.iter().map(|g| g.hours).sum();
        let _ = writeln!(
            out,
            "gaps (hours no region fully covers): {total} h in {} run{}",
            c.gaps.len(),
            plural(c.gaps.len())
        );
        for g in &c.gaps {
            let _ = writeln!(out, "  {}", range_text(g));
        }
    }
    if !c.calendar_days.is_empty() {
        out.push_str("holidays and extra hours in this window:\n");
        for d in &c.calendar_days {
            let dates = if d.last == d.date {
                d.date.strftime("%a %Y-%m-%d").to_string()
            } else {
                format!(
                    "{} to {}",
                    d.date.strftime("%a %Y-%m-%d"),
                    d.last.strftime("%a %Y-%m-%d")
                )
            };
            let what = match d.kind {
                CalendarDayKind::Holiday => "closed",
                CalendarDayKind::Opening => "extra opening",
                CalendarDayKind::Hours => "only open",
            };
            let hours = d
                .hours
                .as_deref()
                .map_or_else(|| "all day".to_owned(), str::to_owned);
            let name = if d.name.is_empty() {
                String::new()
            } else {
                format!(" {:?}", d.name)
            };
            let _ = writeln!(
                out,
                "  {dates}  {}: {what} {hours}{name} ({})",
                d.owner, d.rule
            );
        }
    }
    if c.parity_gaps.is_empty() {
        out.push_str(
            "knowledge-parity gaps: none; every skill is covered whenever anyone is on shift\n",
        );
    } else {
        out.push_str("knowledge-parity gaps (someone is on shift, nobody with the skill):\n");
        for s in &c.parity_gaps {
            let total: u32 = s.ranges.iter().map(|g| g.hours).sum();
            let _ = writeln!(out, "  {}: {total} h", s.skill);
            for g in &s.ranges {
                let _ = writeln!(out, "    {}", range_text(g));
            }
        }
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The coverage grid as an SVG picture: one horizontal band per region,
/// skill and "any region", one cell per UTC hour; gaps in red.
pub fn coverage_svg(c: &Coverage) -> String {
    let hours = c.days as usize * 24;
    // Cells shrink for long ranges so the picture stays about 1000 px wide.
    let cell_w = (1008 / hours.max(1)).clamp(1, 12);
    let label_w = 150;
    let row_h = 18;
    let top = 44;
    let width = label_w + hours * cell_w + 20;
    let height = top + c.rows.len() * (row_h + 4) + 40;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        out,
        r#"<title>coverage {} for {} days, rules {}</title>"#,
        c.from,
        c.days,
        xml_escape(&c.rules_version)
    );
    let _ = writeln!(
        out,
        r##"<rect width="{width}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="10" y="16" font-size="13">Coverage from {} for {} days (UTC hours), rules {}</text>"#,
        c.from,
        c.days,
        xml_escape(&c.rules_version)
    );
    for day in 0..c.days as usize {
        let x = label_w + day * 24 * cell_w;
        let date = c
            .from
            .checked_add(jiff::Span::new().days(day as i64))
            .unwrap_or(c.from);
        let _ = writeln!(
            out,
            r#"<text x="{x}" y="{}">{}</text>"#,
            top - 6,
            date.strftime("%a %m-%d")
        );
    }
    for (i, row) in c.rows.iter().enumerate() {
        let y = top + i * (row_h + 4);
        let label = match row.kind {
            CoverageRowKind::Region => format!("region {}", row.name),
            CoverageRowKind::Skill => format!("skill {}", row.name),
            CoverageRowKind::Any => row.name.clone(),
        };
        let _ = writeln!(
            out,
            r#"<text x="10" y="{}">{}</text>"#,
            y + 13,
            xml_escape(&label)
        );
        for (h, m) in row.minutes.iter().enumerate() {
            let fill = match (*m, row.kind) {
                (60.., _) => "#2e7d32",
                (0, CoverageRowKind::Any) => "#c62828",
                (0, _) => "#e0e0e0",
                (_, CoverageRowKind::Any) => "#ef9a9a",
                _ => "#a5d6a7",
            };
            let _ = writeln!(
                out,
                r#"<rect x="{}" y="{y}" width="{cell_w}" height="{row_h}" fill="{fill}"><title>{} +{h}h: {m} min</title></rect>"#,
                label_w + h * cell_w,
                xml_escape(&row.name)
            );
        }
    }
    let grid_bottom = top + c.rows.len() * (row_h + 4);
    for day in 0..=c.days as usize {
        let x = label_w + day * 24 * cell_w;
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{}" x2="{x}" y2="{grid_bottom}" stroke="#424242" stroke-width="1"/>"##,
            top - 2
        );
    }
    let legend_y = grid_bottom + 20;
    let _ = writeln!(
        out,
        r##"<text x="10" y="{legend_y}">green: covered all hour; light green: part of the hour; grey: not covered; red: no region on shift ({} gap run{})</text>"##,
        c.gaps.len(),
        plural(c.gaps.len())
    );
    out.push_str("</svg>\n");
    out
}
