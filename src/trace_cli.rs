//! `meridian trace TICKET`: where a ticket has been, who held it, and where
//! it waited, without reading logs from every region.
//!
//! The command asks the gateway at `--target` and every `--peer` gateway
//! for the ticket (`GetTicket`: the ticket, its notes, its conflicts), for
//! every event of the ticket from any origin (`WatchEvents` scoped to the
//! ticket) and for its replication status (`GetStatus`). From what they
//! answer, [`build_journey`] (pure: no I/O, no clock) derives the journey:
//! the regions that held the ticket with from/to instants and durations,
//! each offer, acceptance, refusal and takeover with its note, conflicts,
//! and which region has not yet applied which event. It prints as a tree
//! (each holding region, its steps under it) or, with `--output json`, as
//! one JSON object, with the ticket's trace id (its id's 128 bits) and a
//! link from the `--trace-url` template.
//!
//! What the API does not say: when a region *applied* another region's
//! event. Events carry only their origin's hybrid-logical time. So the
//! replication waits shown are the ones the API can prove: each handoff's
//! offer-to-acceptance time (the target applies the offerer's log up to the
//! offer before it accepts, so that wait is inside it), events a region
//! has not applied yet, and each region's lag to its peers now. Per-region
//! apply times are the `apply` spans of the ticket's trace.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use crate::ticket_cli::GatewayClient;
use anyhow::{Context, bail};
use jiff::Timestamp;
use meridian_core::TicketId;
use meridian_proto::v1;
use meridian_router::journey::{
    Journey, RegionCopy, Step, StepDetail, Unreached, build_journey, trace_id_hex,
};

use crate::{rules_cli::OutputFormat, ticket_cli::TARGET_DEFAULT};

/// The most events read from one gateway: a bound on memory and time for a
/// ticket with a pathological history.
const EVENTS_PER_REGION_MAX: usize = 10_000;
/// How long the first event of a region that has the ticket may take: its
/// backlog is one store query, which can be slower than the idle gap.
const FIRST_EVENT_WAIT_MIN: Duration = Duration::from_secs(2);
/// The placeholder `--trace-url` must contain.
const TRACE_ID_PLACEHOLDER: &str = "{trace_id}";

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// The ticket's id.
    ticket: String,
    /// A gateway to ask first, usually the ticket's owner (https needs --ca).
    #[arg(long, env = "MERIDIAN_TARGET", default_value = TARGET_DEFAULT)]
    target: String,
    /// Another region's gateway to ask too; repeat (or separate with
    /// commas) for each. Each gateway says which region it serves.
    #[arg(long = "peer", env = "MERIDIAN_PEERS", value_delimiter = ',')]
    peers: Vec<String>,
    /// PEM file of the CA that signed the gateways' certificates.
    #[arg(long, env = "MERIDIAN_CA")]
    ca: Option<PathBuf>,
    /// The bearer token (JWT) to call with: an sre's reads every region.
    #[arg(long, env = "MERIDIAN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A link to the trace in a tracing UI, with `{trace_id}` (and
    /// optionally `{ticket_id}`) in it, e.g.
    /// http://localhost:16686/trace/{trace_id} for Jaeger.
    #[arg(long, env = "MERIDIAN_TRACE_URL")]
    trace_url: Option<String>,
    /// Deadline of each call, and of reading one gateway's events, in seconds.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    /// WatchEvents sends the stored events and then keeps the stream open
    /// for live ones, with nothing in between to mark the end of the
    /// backlog: the backlog is taken as over after this many milliseconds
    /// without an event.
    #[arg(long, default_value_t = 500)]
    idle_ms: u64,
    /// Measure the current holder's time up to this instant (RFC 3339)
    /// rather than this machine's clock: for a mesh on a simulated clock
    /// (`meridian up --start/--speed`).
    #[arg(long, value_parser = crate::cli_output::parse_instant)]
    now: Option<Timestamp>,
    /// table for people, json for one JSON object on stdout (errors too).
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
}

pub async fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let ticket_id = meridian_proto::convert::ticket_id("TICKET", args.ticket.trim())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let link = args
        .trace_url
        .as_deref()
        .map(|template| trace_link(template, ticket_id))
        .transpose()?;
    anyhow::ensure!(args.timeout_secs > 0, "--timeout-secs must be at least 1");
    anyhow::ensure!(args.idle_ms > 0, "--idle-ms must be at least 1");
    let reading = Reading {
        ticket_id,
        ca: args.ca.clone(),
        token: args.token.clone(),
        timeout: Duration::from_secs(args.timeout_secs),
        idle: Duration::from_millis(args.idle_ms),
    };

    let mut urls = vec![args.target.clone()];
    for peer in args
        .peers
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
    {
        if !urls.iter().any(|u| u == peer) {
            urls.push(peer.to_owned());
        }
    }
    // Every gateway at once: a slow or dead region costs one timeout, not one each.
    let answers = futures::future::join_all(urls.iter().map(|url| reading.read(url))).await;

    let mut copies = Vec::new();
    let mut unreached = Vec::new();
    for (url, answer) in urls.iter().zip(answers) {
        match answer {
            Ok(copy) => copies.push(copy),
            Err(error) => unreached.push(Unreached {
                url: url.clone(),
                error: format!("{error:#}"),
            }),
        }
    }
    if copies.is_empty() {
        let first = unreached
            .first()
            .map_or_else(String::new, |u| u.error.clone());
        bail!("{first}");
    }
    if copies
        .iter()
        .all(|c| c.ticket.is_none() && c.events.is_empty())
    {
        let asked: Vec<&str> = copies.iter().map(|c| c.region.as_str()).collect();
        bail!(
            "NOT_FOUND: ticket {ticket_id} is unknown in {}",
            asked.join(", ")
        );
    }
    let mut journey = build_journey(ticket_id, &copies, args.now.unwrap_or_else(Timestamp::now));
    journey.trace_url = link;
    journey.unreached = unreached;
    match args.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string(&journey).context("cannot encode the journey")?
        ),
        OutputFormat::Table => print!("{}", meridian::terminal_safe(&render(&journey))),
    }
    Ok(ExitCode::SUCCESS)
}

/// Fills the `--trace-url` template.
pub fn trace_link(template: &str, ticket_id: TicketId) -> anyhow::Result<String> {
    anyhow::ensure!(
        template.contains(TRACE_ID_PLACEHOLDER),
        "--trace-url {template:?} has no {TRACE_ID_PLACEHOLDER} to fill (e.g. http://localhost:16686/trace/{{trace_id}})"
    );
    Ok(template
        .replace(TRACE_ID_PLACEHOLDER, &trace_id_hex(ticket_id))
        .replace("{ticket_id}", &ticket_id.to_string()))
}

/// How the command reads one gateway.
struct Reading {
    ticket_id: TicketId,
    ca: Option<PathBuf>,
    token: Option<String>,
    timeout: Duration,
    idle: Duration,
}

impl Reading {
    async fn read(&self, url: &str) -> anyhow::Result<RegionCopy> {
        let mut client = self.client(url).await?;
        let status = client
            .get_status(v1::GetStatusRequest {})
            .await
            .map_err(|s| refusal(url, s))?
            .into_inner();
        let got = match client
            .get_ticket(v1::GetTicketRequest {
                ticket_id: self.ticket_id.to_string(),
            })
            .await
        {
            Ok(answer) => Some(answer.into_inner()),
            // A region that has not applied the creation yet (or never
            // will, under residency) still shows what it has.
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => return Err(refusal(url, s)),
        };
        let first_wait = if got.is_some() {
            self.idle.max(FIRST_EVENT_WAIT_MIN)
        } else {
            self.idle
        };
        let (events, events_truncated) = self.events(&mut client, url, first_wait).await?;
        let (ticket, conflicts) = match got {
            Some(got) => (got.ticket, got.conflicts),
            None => (None, Vec::new()),
        };
        Ok(RegionCopy {
            region: status.region,
            url: url.to_owned(),
            ticket,
            conflicts,
            events,
            events_truncated,
            peers: status.peers,
        })
    }

    /// The ticket's stored events at this gateway. The stream never says
    /// where its backlog ends (the gateway sends the stored events, then
    /// keeps the stream open for live ones), so the backlog is taken as
    /// over after `idle` without an event, or at the overall deadline.
    async fn events(
        &self,
        client: &mut GatewayClient,
        url: &str,
        first_wait: Duration,
    ) -> anyhow::Result<(Vec<v1::Event>, bool)> {
        let request = v1::WatchEventsRequest {
            scope: Some(v1::watch_events_request::Scope::TicketId(
                self.ticket_id.to_string(),
            )),
            after_seq: 0,
        };
        let mut stream = client
            .watch_events(request)
            .await
            .map_err(|s| refusal(url, s))?
            .into_inner();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut events = Vec::new();
        loop {
            let wait = if events.is_empty() {
                first_wait
            } else {
                self.idle
            };
            let until = (tokio::time::Instant::now() + wait).min(deadline);
            match tokio::time::timeout_at(until, stream.message()).await {
                Err(_idle) => return Ok((events, false)),
                Ok(Ok(Some(event))) => {
                    events.push(event);
                    if events.len() >= EVENTS_PER_REGION_MAX {
                        return Ok((events, true));
                    }
                }
                Ok(Ok(None)) => return Ok((events, false)),
                Ok(Err(s)) => return Err(refusal(url, s)),
            }
        }
    }

    async fn client(&self, url: &str) -> anyhow::Result<GatewayClient> {
        crate::ticket_cli::gateway_client(
            url,
            self.ca.as_deref(),
            self.token.as_deref(),
            self.timeout,
        )
        .await
    }
}

/// A gRPC refusal as one line: which gateway, the code's name, the reason.
fn refusal(url: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "{url}: {}: {}",
        meridian_gateway::error::code_name(status.code()),
        status.message()
    )
}

/// A duration as people read it: `350ms`, `2.1s`, `5m 03s`, `2h 05m`, `3d 4h`.
pub fn human_duration(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    let text = match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}.{}s", ms / 1_000, (ms % 1_000) / 100),
        60_000..3_600_000 => format!("{}m {:02}s", ms / 60_000, (ms % 60_000) / 1_000),
        3_600_000..86_400_000 => format!("{}h {:02}m", ms / 3_600_000, (ms % 3_600_000) / 60_000),
        _ => format!("{}d {}h", ms / 86_400_000, (ms % 86_400_000) / 3_600_000),
    };
    format!("{sign}{text}")
}

/// An instant to the millisecond, in UTC.
fn instant_text(at: Timestamp) -> String {
    crate::cli_output::instant(at)
}

/// One line for a step, without its instant.
fn step_line(step: &Step) -> String {
    let here = format!("{}#{}", step.origin_region, step.origin_seq);
    let what = match &step.detail {
        StepDetail::Created { subject } => format!(
            "created in {} at epoch {}: {subject:?}",
            step.origin_region, step.epoch
        ),
        StepDetail::Updated { changes } => format!("updated: {}", changes.join(", ")),
        StepDetail::Note {
            author,
            body,
            auto,
            visibility,
        } => {
            let auto = if *auto { " (auto)" } else { "" };
            let what = visibility.label();
            format!("{what} by {author}{auto}: {body}")
        }
        StepDetail::Sla { metric, due } => format!(
            "{} {metric} (due {})",
            step.kind.replace('_', " "),
            instant_text(*due)
        ),
        StepDetail::HandoffOffered { to, .. } => {
            format!("handoff offered to {to} at epoch {}", step.epoch)
        }
        StepDetail::HandoffAccepted {
            from,
            offer_seq,
            after_offer_ms,
        } => {
            let wait = after_offer_ms.map_or_else(String::new, |ms| {
                format!(", {} after the offer", human_duration(ms))
            });
            format!(
                "handoff from {from} accepted by {} at epoch {} (offer {from}#{offer_seq}){wait}",
                step.origin_region, step.epoch
            )
        }
        StepDetail::HandoffRefused { to, reason } => format!("handoff to {to} refused: {reason}"),
        StepDetail::TakenOver {
            from,
            fencing_token,
            through_seq,
        } => format!(
            "taken over from {from} by {} at epoch {} (fencing token {fencing_token}, {from}'s log through #{through_seq})",
            step.origin_region, step.epoch
        ),
        StepDetail::Other => step.kind.replace('_', " "),
        StepDetail::Undecoded { reason } => format!("{} (cannot read: {reason})", step.kind),
    };
    format!("{here:<14} {what}")
}

/// The journey as text: a header, then each holding region with the steps
/// that happened while it held the ticket, then conflicts and regions.
pub fn render(journey: &Journey) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let subject = journey
        .subject
        .as_deref()
        .map_or_else(String::new, |s| format!(" {s:?}"));
    let status = journey
        .status
        .as_deref()
        .map_or_else(String::new, |s| format!(" ({s})"));
    line(format!("ticket   {}{subject}{status}", journey.ticket_id));
    line(format!("trace    {}", journey.trace_id));
    if let Some(url) = &journey.trace_url {
        line(format!("link     {url}"));
    }
    if let Some(owner) = &journey.owner {
        line(format!(
            "owner    {} at epoch {}",
            owner.region, owner.epoch
        ));
    }
    let visited: Vec<&str> = journey.stays.iter().map(|s| s.region.as_str()).collect();
    line(format!(
        "visited  {}",
        if visited.is_empty() {
            "-".to_owned()
        } else {
            visited.join(" → ")
        }
    ));
    line(String::new());

    // Each step sits under the last stay that began at or before it; steps
    // before the first stay (clock skew, a missing creation) under the first.
    let mut under: Vec<Vec<&Step>> = vec![Vec::new(); journey.stays.len().max(1)];
    for step in &journey.steps {
        let index = journey
            .stays
            .iter()
            .rposition(|s| s.since <= step.at)
            .unwrap_or(0);
        if let Some(list) = under.get_mut(index) {
            list.push(step);
        }
    }
    for (index, steps) in under.iter().enumerate() {
        if let Some(stay) = journey.stays.get(index) {
            let how = match (&*stay.came_by, &stay.from_region) {
                ("handoff", Some(from)) => format!("handed over by {from}"),
                ("takeover", Some(from)) => format!("took over from {from}"),
                (how, _) => how.to_owned(),
            };
            let until = match (stay.until, stay.closed) {
                (Some(until), true) => format!("{} (closed)", instant_text(until)),
                (Some(until), false) => instant_text(until),
                (None, _) => "now".to_owned(),
            };
            line(format!(
                "{}  held {}  {} → {}  epoch {}, {how}",
                stay.region,
                human_duration(stay.held_ms),
                instant_text(stay.since),
                until,
                stay.epoch
            ));
        } else {
            line("(no owner seen)".to_owned());
        }
        for (i, step) in steps.iter().enumerate() {
            let last = i + 1 == steps.len();
            let (branch, stem) = if last {
                ("└─", "   ")
            } else {
                ("├─", "│  ")
            };
            line(format!(
                "{branch} {}  {}",
                instant_text(step.at),
                step_line(step)
            ));
            let indent = format!("{stem}{:26}", "");
            if let Some(actor) = &step.actor {
                line(format!("{indent}by {actor}"));
            }
            if let StepDetail::HandoffOffered { note, .. } = &step.detail {
                let auto = if note.auto { " (auto)" } else { "" };
                line(format!(
                    "{indent}note by {}{auto}: status {}",
                    note.author, note.current_status
                ));
                line(format!("{indent}  last action: {}", note.last_action));
                line(format!("{indent}  next action: {}", note.next_action));
                if let Some(deadline) = note.deadline {
                    line(format!("{indent}  deadline:    {}", instant_text(deadline)));
                }
                if !note.text.is_empty() {
                    line(format!("{indent}  text:        {}", note.text));
                }
            }
            if !step.missing_in.is_empty() {
                line(format!(
                    "{indent}waiting in replication: not yet applied in {}",
                    step.missing_in.join(", ")
                ));
            }
        }
        line(String::new());
    }

    if journey.conflicts.is_empty() {
        line("conflicts: none".to_owned());
    } else {
        line("conflicts".to_owned());
        for c in &journey.conflicts {
            line(format!(
                "  {}#{} written at epoch {} (current {}): {}  [in {}]",
                c.origin_region,
                c.origin_seq,
                c.stale_epoch,
                c.current_epoch,
                c.changes,
                c.seen_in.join(", ")
            ));
        }
    }
    line(String::new());
    line("regions".to_owned());
    for r in &journey.regions {
        let view = match (&r.sees_owner, r.behind) {
            (Some(o), false) => format!("sees owner {} at epoch {}", o.region, o.epoch),
            (Some(o), true) => format!(
                "still sees owner {} at epoch {} (replication behind)",
                o.region, o.epoch
            ),
            (None, _) => "has no copy of the ticket yet".to_owned(),
        };
        let truncated = if r.events_truncated { "+" } else { "" };
        line(format!(
            "  {:<12} {}{truncated} events, {view}",
            r.region, r.events
        ));
        let lags: Vec<String> = r
            .lag
            .iter()
            .map(|p| {
                let down = if p.connected { "" } else { ", not connected" };
                format!(
                    "{} {} events/{:.1}s{down}",
                    p.peer, p.lag_events, p.lag_seconds
                )
            })
            .collect();
        if !lags.is_empty() {
            line(format!("  {:<12} lag now: {}", "", lags.join("; ")));
        }
    }
    for region in &journey.not_asked {
        line(format!(
            "  {region:<12} not asked (add --peer URL of its gateway)"
        ));
    }
    for u in &journey.unreached {
        line(format!("  unreachable  {}", u.error));
    }
    line(String::new());
    line(
        "note: events carry their origin's time only; the API does not say when each region applied them. \
         Replication waits shown: offer-to-acceptance times, events not applied yet, lag now; \
         per-region apply times are the apply spans in the trace."
            .to_owned(),
    );
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use meridian_core::{
        Epoch, EventEnvelope, EventKind, HandoffNote, HlcTimestamp, Note, NoteId, RegionId, Status,
        TicketChanges,
    };
    use meridian_router::journey::Holder;

    use super::*;

    const T0_MS: u64 = 1_780_394_400_000; // 2026-06-02T10:00:00Z

    fn region(name: &str) -> RegionId {
        RegionId::new(name).unwrap()
    }

    fn ticket_id() -> TicketId {
        TicketId::from_uuid(uuid::Uuid::parse_str("0196f0c4-8a2b-7cde-8f01-23456789abcd").unwrap())
            .unwrap()
    }

    fn event(origin: &str, seq: u64, epoch: Epoch, at_ms: u64, kind: EventKind) -> v1::Event {
        meridian_proto::convert::event_to_proto(&EventEnvelope {
            origin_region: region(origin),
            origin_seq: seq,
            ticket_id: ticket_id(),
            epoch,
            hlc_time: HlcTimestamp::new(T0_MS + at_ms, 0),
            traceparent: None,
            actor: None,
            kind,
        })
    }

    fn created(origin: &str, at_ms: u64) -> v1::Event {
        let new = meridian_core::NewTicket {
            subject: "VPN down".into(),
            body: String::new(),
            customer: "acme".into(),
            tier: meridian_core::Tier::new("standard").unwrap(),
            skills: Default::default(),
            language: "en".into(),
            residency: Default::default(),
            priority: meridian_core::Priority::Normal,
        };
        let owner = meridian_core::Ownership::new(region(origin), 0, Epoch::initial(0)).unwrap();
        let ticket = meridian_core::Ticket::create(ticket_id(), new, owner, at(at_ms)).unwrap();
        event(
            origin,
            1,
            Epoch::initial(0),
            at_ms,
            EventKind::TicketCreated {
                ticket: Box::new(ticket),
            },
        )
    }

    fn offer(origin: &str, seq: u64, epoch: Epoch, at_ms: u64, to: &str, next: &str) -> v1::Event {
        let handoff = HandoffNote {
            current_status: Status::Open,
            last_action: "restarted the VPN concentrator".into(),
            next_action: next.into(),
            deadline: None,
            text: String::new(),
            author: "alice".into(),
            auto: false,
        };
        let note = Note {
            id: NoteId::from_uuid(uuid::Uuid::now_v7()).unwrap(),
            ticket_id: ticket_id(),
            region: region(origin),
            author: "alice".into(),
            body: "handoff".into(),
            created_at: Timestamp::from_millisecond((T0_MS + at_ms) as i64).unwrap(),
            auto: false,
            visibility: meridian_core::Visibility::Internal,
        };
        event(
            origin,
            seq,
            epoch,
            at_ms,
            EventKind::HandoffOffered {
                to: region(to),
                handoff,
                note,
            },
        )
    }

    fn copy(name: &str, events: Vec<v1::Event>, owner: Option<(&str, u64)>) -> RegionCopy {
        RegionCopy {
            region: name.into(),
            url: format!("http://{name}"),
            ticket: owner.map(|(o, epoch)| v1::Ticket {
                id: ticket_id().to_string(),
                subject: "VPN down".into(),
                status: v1::Status::Open.into(),
                owner: Some(v1::Ownership {
                    owner_region: o.into(),
                    epoch,
                }),
                ..Default::default()
            }),
            events,
            ..Default::default()
        }
    }

    /// us-east creates, hands to eu-west (accepted 300 ms later), eu-west's
    /// offer to apac-south is refused; apac-south has not applied the refusal.
    fn history() -> (Vec<RegionCopy>, Epoch) {
        let e0 = Epoch::initial(0);
        let e1 = e0.next_for(1);
        let updated = event(
            "us-east",
            2,
            e0,
            1_000,
            EventKind::TicketUpdated {
                changes: TicketChanges {
                    epoch: e0,
                    status: Some(Status::Open),
                    ..Default::default()
                },
            },
        );
        let offered = offer(
            "us-east",
            3,
            e0,
            60_000,
            "eu-west",
            "call the customer at 09:00",
        );
        let accepted = event(
            "eu-west",
            1,
            e1,
            60_300,
            EventKind::HandoffAccepted {
                from: region("us-east"),
                offer_seq: 3,
                previous_epoch: e0,
            },
        );
        let offered_on = offer("eu-west", 2, e1, 120_000, "apac-south", "escalate");
        let refused = event(
            "eu-west",
            3,
            e1,
            120_100,
            EventKind::HandoffRefused {
                to: region("apac-south"),
                reason: "apac-south is not on shift".into(),
            },
        );
        let all = vec![
            created("us-east", 0),
            updated,
            offered,
            accepted,
            offered_on,
            refused,
        ];
        let apac: Vec<v1::Event> = all[..5].to_vec();
        let e1_raw = e1.raw();
        (
            vec![
                copy("us-east", all.clone(), Some(("eu-west", e1_raw))),
                copy("eu-west", all, Some(("eu-west", e1_raw))),
                copy("apac-south", apac, Some(("eu-west", e1_raw))),
            ],
            e1,
        )
    }

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millisecond((T0_MS + ms) as i64).unwrap()
    }

    #[test]
    fn stays_follow_the_minting_events_with_durations() {
        let (copies, e1) = history();
        let journey = build_journey(ticket_id(), &copies, at(180_300));
        let stays: Vec<(&str, &str, Option<Timestamp>, i64)> = journey
            .stays
            .iter()
            .map(|s| (s.region.as_str(), s.came_by.as_str(), s.until, s.held_ms))
            .collect();
        assert_eq!(
            stays,
            [
                ("us-east", "created", Some(at(60_300)), 60_300),
                ("eu-west", "handoff", None, 120_000)
            ]
        );
        assert_eq!(journey.stays[1].from_region.as_deref(), Some("us-east"));
        assert_eq!(
            journey.owner,
            Some(Holder {
                region: "eu-west".into(),
                epoch: e1.raw()
            })
        );
        assert_eq!(journey.trace_id, "0196f0c48a2b7cde8f0123456789abcd");
    }

    #[test]
    fn handoff_steps_carry_their_note_wait_and_refusal() {
        let (copies, _) = history();
        let journey = build_journey(ticket_id(), &copies, at(200_000));
        let kinds: Vec<&str> = journey.steps.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "ticket_created",
                "ticket_updated",
                "handoff_offered",
                "handoff_accepted",
                "handoff_offered",
                "handoff_refused"
            ]
        );
        let StepDetail::HandoffOffered { to, note } = &journey.steps[2].detail else {
            panic!("{:?}", journey.steps[2])
        };
        assert_eq!(
            (to.as_str(), note.next_action.as_str()),
            ("eu-west", "call the customer at 09:00")
        );
        assert_eq!(
            journey.steps[3].detail,
            StepDetail::HandoffAccepted {
                from: "us-east".into(),
                offer_seq: 3,
                after_offer_ms: Some(300)
            }
        );
        assert_eq!(
            journey.steps[5].detail,
            StepDetail::HandoffRefused {
                to: "apac-south".into(),
                reason: "apac-south is not on shift".into()
            }
        );
        // Only the refusal has not reached apac-south.
        let waiting: Vec<(&str, &[String])> = journey
            .steps
            .iter()
            .filter(|s| !s.missing_in.is_empty())
            .map(|s| (s.kind.as_str(), s.missing_in.as_slice()))
            .collect();
        assert_eq!(
            waiting,
            [("handoff_refused", &["apac-south".to_owned()][..])]
        );
    }

    #[test]
    fn a_region_that_missed_the_acceptance_is_behind_and_a_close_ends_the_stay() {
        let (mut copies, e1) = history();
        // apac-south has only the creation and still sees us-east.
        copies[2].events.truncate(1);
        copies[2].ticket.as_mut().unwrap().owner = Some(v1::Ownership {
            owner_region: "us-east".into(),
            epoch: 0,
        });
        let closed = event(
            "eu-west",
            4,
            e1,
            150_000,
            EventKind::TicketUpdated {
                changes: TicketChanges {
                    epoch: e1,
                    status: Some(Status::Closed),
                    ..Default::default()
                },
            },
        );
        copies[1].events.push(closed);
        let journey = build_journey(ticket_id(), &copies, at(999_999));
        let apac = journey
            .regions
            .iter()
            .find(|r| r.region == "apac-south")
            .unwrap();
        assert!(apac.behind && apac.events == 1, "{apac:?}");
        let last = journey.stays.last().unwrap();
        assert_eq!(
            (last.until, last.closed, last.held_ms),
            (Some(at(150_000)), true, 89_700)
        );
    }

    #[test]
    fn conflicts_merge_across_regions_and_unknown_peers_are_listed() {
        let (mut copies, _) = history();
        let conflict = v1::Conflict {
            origin_region: "us-east".into(),
            origin_seq: 9,
            stale_epoch: 0,
            current_epoch: 65_537,
            changes_json: r#"{"status":"pending"}"#.into(),
            recorded_at: None,
        };
        copies[0].conflicts.push(conflict.clone());
        copies[1].conflicts.push(conflict);
        copies[0].peers.push(v1::PeerStatus {
            region: "sa-east".into(),
            connected: true,
            ..Default::default()
        });
        let journey = build_journey(ticket_id(), &copies, at(200_000));
        assert_eq!(journey.conflicts.len(), 1);
        assert_eq!(journey.conflicts[0].seen_in, ["us-east", "eu-west"]);
        assert_eq!(journey.not_asked, ["sa-east"]);
    }

    #[test]
    fn an_undecodable_event_is_shown_not_dropped() {
        let (mut copies, _) = history();
        let mut odd = created("us-east", 500);
        odd.origin_seq = 7;
        odd.kind = "no_such_kind".into();
        copies[0].events.push(odd);
        let journey = build_journey(ticket_id(), &copies, at(200_000));
        let step = journey
            .steps
            .iter()
            .find(|s| s.kind == "no_such_kind")
            .unwrap();
        assert!(
            matches!(step.detail, StepDetail::Undecoded { .. }),
            "{step:?}"
        );
    }

    #[test]
    fn render_shows_each_region_its_handoffs_and_waits() {
        let (copies, _) = history();
        let mut journey = build_journey(ticket_id(), &copies, at(180_300));
        journey.trace_url =
            Some(trace_link("http://localhost:16686/trace/{trace_id}", ticket_id()).unwrap());
        let text = render(&journey);
        let expected = r#"ticket   0196f0c4-8a2b-7cde-8f01-23456789abcd "VPN down" (open)
trace    0196f0c48a2b7cde8f0123456789abcd
link     http://localhost:16686/trace/0196f0c48a2b7cde8f0123456789abcd
owner    eu-west at epoch 1
visited  us-east → eu-west

us-east  held 1m 00s  2026-06-02T10:00:00.000Z → 2026-06-02T10:01:00.300Z  epoch 0, created
├─ 2026-06-02T10:00:00.000Z  us-east#1      created in us-east at epoch 0: "VPN down"
├─ 2026-06-02T10:00:01.000Z  us-east#2      updated: status open
└─ 2026-06-02T10:01:00.000Z  us-east#3      handoff offered to eu-west at epoch 0
                             note by alice: status open
                               last action: restarted the VPN concentrator
                               next action: call the customer at 09:00

eu-west  held 2m 00s  2026-06-02T10:01:00.300Z → now  epoch 1, handed over by us-east
├─ 2026-06-02T10:01:00.300Z  eu-west#1      handoff from us-east accepted by eu-west at epoch 1 (offer us-east#3), 300ms after the offer
├─ 2026-06-02T10:02:00.000Z  eu-west#2      handoff offered to apac-south at epoch 1
│                            note by alice: status open
│                              last action: restarted the VPN concentrator
│                              next action: escalate
└─ 2026-06-02T10:02:00.100Z  eu-west#3      handoff to apac-south refused: apac-south is not on shift
                             waiting in replication: not yet applied in apac-south

conflicts: none

regions
  us-east      6 events, sees owner eu-west at epoch 1
  eu-west      6 events, sees owner eu-west at epoch 1
  apac-south   5 events, sees owner eu-west at epoch 1

note: events carry their origin's time only; the API does not say when each region applied them. Replication waits shown: offer-to-acceptance times, events not applied yet, lag now; per-region apply times are the apply spans in the trace.
"#;
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn trace_links_need_the_placeholder_and_durations_read_well() {
        let error = trace_link("http://jaeger/trace/", ticket_id())
            .unwrap_err()
            .to_string();
        assert!(error.contains("{trace_id}"), "{error}");
        let link = trace_link("http://tempo/{trace_id}?ticket={ticket_id}", ticket_id()).unwrap();
        assert_eq!(
            link,
            "http://tempo/0196f0c48a2b7cde8f0123456789abcd?ticket=0196f0c4-8a2b-7cde-8f01-23456789abcd"
        );
        let shown: Vec<String> = [350, 2_149, 183_000, 7_500_000, 273_600_000, -1_500]
            .map(human_duration)
            .into();
        assert_eq!(
            shown,
            ["350ms", "2.1s", "3m 03s", "2h 05m", "3d 4h", "-1.5s"]
        );
    }
}
