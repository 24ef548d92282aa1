//! `meridian ticket …`: a thin client of a gateway's `TicketService`.
//! Table output for people, one JSON object for machines; a refusal is one
//! line with the gRPC code and the gateway's reason, and exit code 1.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use meridian_proto::v1::{self, ticket_service_client::TicketServiceClient};
use serde_json::{Value, json};
use tonic::{
    Request,
    metadata::MetadataValue,
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

use crate::rules_cli::OutputFormat;

/// Where the commands connect when `--target` is not given: `meridian up`'s
/// first region.
pub const TARGET_DEFAULT: &str = "http://127.0.0.1:7101";
/// `meridian up`'s router.
pub const ROUTER_DEFAULT: &str = "http://127.0.0.1:7100";

#[derive(Debug, clap::Args)]
pub struct Connection {
    /// The gateway's URL (https needs --ca).
    #[arg(long, env = "MERIDIAN_TARGET", default_value = TARGET_DEFAULT, global = true)]
    target: String,
    /// Act for this region (the meridian-region header); default: the
    /// gateway's own region.
    #[arg(long = "as-region", global = true)]
    as_region: Option<String>,
    /// PEM file of the CA that signed the gateway's certificate.
    #[arg(long, env = "MERIDIAN_CA", global = true)]
    ca: Option<PathBuf>,
    /// The bearer token (JWT) to call with; `meridian up` prints one per
    /// role and writes them under DATA_DIR/tokens.
    #[arg(long, env = "MERIDIAN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Deadline of the call, in seconds.
    #[arg(long, default_value_t = 10, global = true)]
    timeout_secs: u64,
    /// table for people, json for one JSON object on stdout (errors too).
    #[arg(long, value_enum, default_value_t, global = true)]
    output: OutputFormat,
}

#[derive(Debug, clap::Subcommand)]
pub enum TicketCommand {
    /// Create a ticket, owned by the gateway's region.
    Create {
        #[command(flatten)]
        conn: Connection,
        /// One line saying what the ticket is about.
        #[arg(long)]
        subject: String,
        /// Who asked (an account or e-mail address).
        #[arg(long)]
        customer: String,
        /// The customer's message.
        #[arg(long, default_value = "")]
        body: String,
        /// The support tier, as the rules name it; default: standard.
        #[arg(long, default_value = "")]
        tier: String,
        /// A skill the ticket needs; repeat for several.
        #[arg(long = "skill")]
        skills: Vec<String>,
        /// Default: en.
        #[arg(long, default_value = "")]
        language: String,
        /// A region the ticket's data must stay in; repeat for several.
        #[arg(long)]
        residency: Vec<String>,
        /// low, normal, high or urgent.
        #[arg(long, default_value = "normal")]
        priority: String,
        /// Names this creation so that running the command again (after a
        /// timeout, say) answers the same ticket instead of creating another.
        /// 1..=128 printable ASCII characters, kept at least 24 hours.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// Submit a ticket through the router: it goes to the region on shift.
    Submit {
        /// The router's URL (https needs --ca).
        #[arg(long, env = "MERIDIAN_ROUTER", default_value = ROUTER_DEFAULT)]
        router: String,
        /// PEM file of the CA that signed the router's certificate.
        #[arg(long, env = "MERIDIAN_CA")]
        ca: Option<PathBuf>,
        /// The bearer token (JWT) to call with.
        #[arg(long, env = "MERIDIAN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Deadline of the call, in seconds.
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
        /// table for people, json for one JSON object on stdout (errors too).
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
        /// One line saying what the ticket is about.
        #[arg(long)]
        subject: String,
        /// Who asked (an account or e-mail address).
        #[arg(long)]
        customer: String,
        /// The customer's message.
        #[arg(long, default_value = "")]
        body: String,
        /// The support tier, as the rules name it; default: standard.
        #[arg(long, default_value = "")]
        tier: String,
        /// A skill the ticket needs; repeat for several.
        #[arg(long = "skill")]
        skills: Vec<String>,
        /// A region the ticket's data must stay in; repeat for several.
        #[arg(long)]
        residency: Vec<String>,
        /// low, normal, high or urgent.
        #[arg(long, default_value = "normal")]
        priority: String,
        /// Names this creation so that running the command again (after a
        /// timeout, say) answers the same ticket instead of creating another.
        /// 1..=128 printable ASCII characters, kept at least 24 hours.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// Hand a ticket to another region with a structured note. Returns once
    /// the target's acceptance is durable there.
    Handoff {
        #[command(flatten)]
        conn: Connection,
        /// The ticket's id (a UUID).
        id: String,
        /// The region to hand the ticket to.
        #[arg(long)]
        to: String,
        /// What was done last.
        #[arg(long)]
        last_action: String,
        /// What the next region must do.
        #[arg(long)]
        next_action: String,
        /// The ticket's status as you see it; default: its current status.
        #[arg(long)]
        current_status: Option<String>,
        /// By when the next action is due (RFC 3339).
        #[arg(long)]
        deadline: Option<jiff::Timestamp>,
        /// Anything else the next region should know.
        #[arg(long, default_value = "")]
        text: String,
        /// Who writes the note: by default the token's subject. Only an
        /// admin (an import) may name someone else.
        #[arg(long, default_value = "")]
        author: String,
    },
    /// Show a ticket with its notes and conflicts.
    Get {
        #[command(flatten)]
        conn: Connection,
        /// The ticket's id (a UUID).
        id: String,
    },
    /// List tickets, filtered, one page at a time.
    List {
        #[command(flatten)]
        conn: Connection,
        /// Only tickets in this status: new, open, pending, escalated,
        /// solved or closed.
        #[arg(long)]
        status: Option<String>,
        /// Only tickets this region owns.
        #[arg(long)]
        owner: Option<String>,
        /// Only tickets assigned to this agent.
        #[arg(long)]
        assignee: Option<String>,
        /// Only tickets of this tier.
        #[arg(long)]
        tier: Option<String>,
        /// Only tickets with an SLA clock at risk or breached.
        #[arg(long)]
        at_risk: bool,
        /// Tickets per page.
        #[arg(long, default_value_t = 50)]
        page_size: u32,
        /// The next_page_token of a previous page.
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Find tickets whose subject, body, customer or notes hold every word
    /// of QUERY (the last word also as a prefix), in the order and pages of
    /// `ticket list`. An agent searches its own region's tickets.
    Search {
        #[command(flatten)]
        conn: Connection,
        /// The words to find; punctuation only separates words (at most 256
        /// characters and 16 words).
        query: String,
        /// Only tickets this region owns.
        #[arg(long)]
        region: Option<String>,
        /// Only tickets in this status: new, open, pending, escalated,
        /// solved or closed.
        #[arg(long)]
        status: Option<String>,
        /// Tickets per page.
        #[arg(long, default_value_t = 50)]
        page_size: u32,
        /// The next_page_token of a previous page.
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Add a note, a public reply or a customer message. An internal
    /// note may be added in any region; a reply or a customer message
    /// only in the owning region, since it moves the SLA clocks.
    Note {
        #[command(flatten)]
        conn: Connection,
        /// The ticket's id (a UUID).
        id: String,
        /// Who writes the note: by default the token's subject. Only an
        /// admin (an import) or an intake system may name someone else.
        #[arg(long, default_value = "")]
        author: String,
        /// The note's text.
        #[arg(long)]
        body: String,
        /// internal (between agents), public (a reply to the customer:
        /// meets the response clocks) or inbound (the customer's message:
        /// starts the next-response clock).
        #[arg(long, default_value = "internal", value_parser = parse_visibility)]
        visibility: meridian_core::Visibility,
    },
    /// Take a ticket: assign it to yourself (the token's subject, an agent
    /// of the owning region's roster).
    Claim {
        #[command(flatten)]
        conn: Connection,
        /// The ticket's id (a UUID).
        id: String,
    },
    /// Assign a ticket to an agent of the owning region's roster, who must
    /// have its skills and room under their limit.
    Assign {
        #[command(flatten)]
        conn: Connection,
        /// The ticket's id (a UUID).
        id: String,
        /// The agent (their token's subject).
        agent: String,
    },
    /// Leave a ticket unassigned: the shift's queue owner holds it.
    Unassign {
        #[command(flatten)]
        conn: Connection,
        /// The ticket's id (a UUID).
        id: String,
    },
    /// Change owner-scoped fields; only the owning region may.
    Update {
        #[command(flatten)]
        conn: Connection,
        /// The ticket's id (a UUID).
        id: String,
        /// The new status: new, open, pending, escalated, solved or closed.
        #[arg(long)]
        status: Option<String>,
        /// Assign the ticket to this agent.
        #[arg(long, conflicts_with = "unassign")]
        assignee: Option<String>,
        /// Leave the ticket unassigned.
        #[arg(long)]
        unassign: bool,
        /// The new priority: low, normal, high or urgent.
        #[arg(long)]
        priority: Option<String>,
    },
}

pub async fn run(cmd: TicketCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TicketCommand::Create {
            conn,
            subject,
            customer,
            body,
            tier,
            skills,
            language,
            residency,
            priority,
            idempotency_key,
        } => {
            // Fields without a flag yet keep their defaults.
            #[allow(clippy::needless_update)]
            let request = v1::CreateTicketRequest {
                subject,
                body,
                customer,
                tier,
                skills,
                language,
                residency,
                priority: parse_priority(&priority)?.into(),
                idempotency_key: idempotency_key.unwrap_or_default(),
                ..Default::default()
            };
            let mut client = conn.client().await?;
            let response = client
                .create_ticket(conn.request(request)?)
                .await
                .map_err(refusal)?
                .into_inner();
            let ticket = response
                .ticket
                .context("gateway answered without the ticket")?;
            let mut value = ticket_json(&ticket);
            value["replayed"] = json!(response.replayed);
            let mut table = ticket_table(&ticket);
            if response.replayed {
                table.push_str(REPLAYED_LINE);
            }
            conn.print(&value, &table);
        }
        TicketCommand::Submit {
            router,
            ca,
            token,
            timeout_secs,
            output,
            subject,
            customer,
            body,
            tier,
            skills,
            residency,
            priority,
            idempotency_key,
        } => {
            let ticket = v1::CreateTicketRequest {
                subject,
                body,
                customer,
                tier,
                skills,
                residency,
                priority: parse_priority(&priority)?.into(),
                idempotency_key: idempotency_key.unwrap_or_default(),
                ..Default::default()
            };
            let endpoint = endpoint(
                &router,
                ca.as_deref(),
                Duration::from_secs(timeout_secs.max(1)),
            )
            .with_context(|| format!("--router {router:?}"))?;
            let channel = endpoint
                .connect()
                .await
                .with_context(|| format!("cannot reach the router at {router}"))?;
            let mut client =
                meridian_proto::v1::router_service_client::RouterServiceClient::with_interceptor(
                    channel,
                    bearer(token.as_deref())?,
                );
            let response = client
                .submit_ticket(v1::SubmitTicketRequest {
                    ticket: Some(ticket),
                })
                .await
                .map_err(refusal)?
                .into_inner();
            let created = response
                .ticket
                .context("router answered without the ticket")?;
            let attempts: Vec<Value> = response
                .attempts
                .iter()
                .map(|a| json!({ "region": a.region, "created": a.created, "error_code": a.error_code, "error": a.error }))
                .collect();
            let mut value = ticket_json(&created);
            value["routed_to"] = json!(response.region);
            value["rules_version"] = json!(response.rules_version);
            value["attempts"] = Value::Array(attempts);
            let reason = response
                .decision
                .as_ref()
                .map_or("", |d| d.reason().as_str_name())
                .to_ascii_lowercase();
            let reason = reason
                .strip_prefix("route_reason_")
                .unwrap_or(&reason)
                .to_owned();
            value["reason"] = json!(reason);
            value["warning"] = json!(response.warning);
            value["acknowledgement"] = json!(response.acknowledgement);
            value["replayed"] = json!(response.replayed);
            let mut table = format!(
                "routed to   {} (rules {})\n",
                response.region, response.rules_version
            );
            table.push_str(&format!("reason      {reason}\n"));
            if !response.acknowledgement.is_empty() {
                table.push_str(&format!("ack         {}\n", response.acknowledgement));
            }
            if !response.warning.is_empty() {
                table.push_str(&format!("warning     {}\n", response.warning));
            }
            for attempt in response.attempts.iter().filter(|a| !a.created) {
                table.push_str(&format!(
                    "tried       {} first: {} {}\n",
                    attempt.region, attempt.error_code, attempt.error
                ));
            }
            if response.replayed {
                table.push_str(REPLAYED_LINE);
            }
            table.push_str(&ticket_table(&created));
            match output {
                OutputFormat::Json => println!("{value}"),
                OutputFormat::Table => print!("{}", meridian::terminal_safe(&table)),
            }
        }
        TicketCommand::Handoff {
            conn,
            id,
            to,
            last_action,
            next_action,
            current_status,
            deadline,
            text,
            author,
        } => {
            let mut client = conn.client().await?;
            let current_status = match current_status {
                Some(status) => parse_status(&status)?.into(),
                None => {
                    let got = client
                        .get_ticket(conn.request(v1::GetTicketRequest {
                            ticket_id: id.clone(),
                        })?)
                        .await
                        .map_err(refusal)?
                        .into_inner();
                    got.ticket.map_or(0, |t| t.status)
                }
            };
            let note = v1::HandoffNote {
                current_status,
                last_action,
                next_action,
                deadline: deadline.map(meridian_proto::timestamp_to_proto),
                text,
                author,
            };
            let request = v1::HandoffRequest {
                ticket_id: id,
                to_region: to,
                note: Some(note),
            };
            let response = client
                .handoff(conn.request(request)?)
                .await
                .map_err(refusal)?
                .into_inner();
            let ticket = response
                .ticket
                .context("gateway answered without the ticket")?;
            let mut value = ticket_json(&ticket);
            value["offer_seq"] = json!(response.offer_seq);
            value["accept_seq"] = json!(response.accept_seq);
            conn.print(&value, &ticket_table(&ticket));
        }
        TicketCommand::Get { conn, id } => {
            let mut client = conn.client().await?;
            let response = client
                .get_ticket(conn.request(v1::GetTicketRequest { ticket_id: id })?)
                .await
                .map_err(refusal)?;
            let response = response.into_inner();
            let ticket = response
                .ticket
                .context("gateway answered without the ticket")?;
            let mut value = ticket_json(&ticket);
            value["notes"] = Value::Array(response.notes.iter().map(note_json).collect());
            value["conflicts"] =
                Value::Array(response.conflicts.iter().map(conflict_json).collect());
            let mut table = ticket_table(&ticket);
            for note in &response.notes {
                let auto = if note.auto { " (auto)" } else { "" };
                let kind = match v1::Visibility::try_from(note.visibility) {
                    Ok(v1::Visibility::Public) => "reply",
                    Ok(v1::Visibility::Inbound) => "inbound",
                    Ok(v1::Visibility::Internal) | Err(_) => "note",
                };
                table.push_str(&format!(
                    "{kind:<11} {} {} in {}{auto}: {}\n",
                    time_text(note.created_at.as_ref()),
                    note.author,
                    note.region,
                    note.body
                ));
            }
            for conflict in &response.conflicts {
                table.push_str(&format!(
                    "conflict    {}#{} written at epoch {} (current {}): {}\n",
                    conflict.origin_region,
                    conflict.origin_seq,
                    conflict.stale_epoch,
                    conflict.current_epoch,
                    conflict.changes_json
                ));
            }
            conn.print(&value, &table);
        }
        TicketCommand::List {
            conn,
            status,
            owner,
            assignee,
            tier,
            at_risk,
            page_size,
            page_token,
        } => {
            let request = v1::ListTicketsRequest {
                status: status
                    .as_deref()
                    .map(parse_status)
                    .transpose()?
                    .map_or(0, Into::into),
                owner_region: owner.unwrap_or_default(),
                assignee: assignee.unwrap_or_default(),
                tier: tier.unwrap_or_default(),
                page_size,
                page_token,
                sla_at_risk: at_risk,
            };
            let mut client = conn.client().await?;
            let page = client
                .list_tickets(conn.request(request)?)
                .await
                .map_err(refusal)?
                .into_inner();
            print_page(&conn, &page);
        }
        TicketCommand::Search {
            conn,
            query,
            region,
            status,
            page_size,
            page_token,
        } => {
            let request = v1::SearchTicketsRequest {
                query,
                owner_region: region.unwrap_or_default(),
                status: status
                    .as_deref()
                    .map(parse_status)
                    .transpose()?
                    .map_or(0, Into::into),
                page_size,
                page_token,
            };
            let mut client = conn.client().await?;
            let page = client
                .search_tickets(conn.request(request)?)
                .await
                .map_err(refusal)?
                .into_inner();
            print_page(&conn, &page);
        }
        TicketCommand::Note {
            conn,
            id,
            author,
            body,
            visibility,
        } => {
            let mut client = conn.client().await?;
            let request = v1::AddNoteRequest {
                ticket_id: id,
                author,
                body,
                visibility: meridian_proto::convert::visibility_to_proto(visibility).into(),
                note_id: String::new(),
            };
            let response = client
                .add_note(conn.request(request)?)
                .await
                .map_err(refusal)?
                .into_inner();
            let note = response.note.context("gateway answered without the note")?;
            let what = visibility.label();
            let mut table = format!("{what} {} added to ticket {}\n", note.id, note.ticket_id);
            let mut value = note_json(&note);
            if let Some(ticket) = &response.ticket {
                table.push_str(&ticket_table(ticket));
                value["ticket"] = ticket_json(ticket);
            }
            conn.print(&value, &table);
        }
        TicketCommand::Claim { conn, id } => assign(&conn, id, String::new(), false).await?,
        TicketCommand::Assign { conn, id, agent } => assign(&conn, id, agent, false).await?,
        TicketCommand::Unassign { conn, id } => assign(&conn, id, String::new(), true).await?,
        TicketCommand::Update {
            conn,
            id,
            status,
            assignee,
            unassign,
            priority,
        } => {
            let request = v1::UpdateTicketRequest {
                ticket_id: id,
                status: status
                    .as_deref()
                    .map(parse_status)
                    .transpose()?
                    .map(Into::into),
                assignee,
                clear_assignee: unassign,
                priority: priority
                    .as_deref()
                    .map(parse_priority)
                    .transpose()?
                    .map(Into::into),
            };
            let mut client = conn.client().await?;
            let response = client
                .update_ticket(conn.request(request)?)
                .await
                .map_err(refusal)?
                .into_inner();
            let ticket = response
                .ticket
                .context("gateway answered without the ticket")?;
            conn.print(&ticket_json(&ticket), &ticket_table(&ticket));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `AssignTicket`: a claim (no agent), an assignment or an unassignment.
async fn assign(
    conn: &Connection,
    id: String,
    agent: String,
    unassign: bool,
) -> anyhow::Result<()> {
    let mut client = conn.client().await?;
    let response = client
        .assign_ticket(conn.request(v1::AssignTicketRequest {
            ticket_id: id,
            agent,
            unassign,
        })?)
        .await
        .map_err(refusal)?
        .into_inner();
    let ticket = response
        .ticket
        .context("gateway answered without the ticket")?;
    conn.print(&ticket_json(&ticket), &ticket_table(&ticket));
    Ok(())
}

impl Connection {
    /// A channel to the gateway and the interceptor adding the token.
    pub(crate) async fn channel(&self) -> anyhow::Result<(Channel, meridian_auth::BearerToken)> {
        let timeout = Duration::from_secs(self.timeout_secs.max(1));
        let channel = endpoint(&self.target, self.ca.as_deref(), timeout)?
            .connect()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.target))?;
        Ok((channel, bearer(self.token.as_deref())?))
    }

    async fn client(&self) -> anyhow::Result<GatewayClient> {
        let timeout = Duration::from_secs(self.timeout_secs.max(1));
        gateway_client(
            &self.target,
            self.ca.as_deref(),
            self.token.as_deref(),
            timeout,
        )
        .await
    }

    fn request<T>(&self, message: T) -> anyhow::Result<Request<T>> {
        let mut request = Request::new(message);
        if let Some(region) = &self.as_region {
            let value = MetadataValue::try_from(region.as_str())
                .with_context(|| format!("--as-region {region:?} is not a header value"))?;
            request
                .metadata_mut()
                .insert(meridian_gateway::REGION_HEADER, value);
        }
        Ok(request)
    }

    pub(crate) fn print(&self, value: &Value, table: &str) {
        match self.output {
            OutputFormat::Json => println!("{value}"),
            OutputFormat::Table => print!("{}", meridian::terminal_safe(table)),
        }
    }
}

/// A gateway client whose calls carry the bearer token, if one was given.
pub type GatewayClient =
    TicketServiceClient<InterceptedService<Channel, meridian_auth::BearerToken>>;

/// A client of the gateway at `url`, over TLS checked against `ca` when the
/// URL is https, sending `token` (if any) on every call; every call has
/// `timeout`.
pub async fn gateway_client(
    url: &str,
    ca: Option<&std::path::Path>,
    token: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<GatewayClient> {
    let endpoint = endpoint(url, ca, timeout)?;
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach the gateway at {url}"))?;
    Ok(TicketServiceClient::with_interceptor(
        channel,
        bearer(token)?,
    ))
}

/// An endpoint for `url`, with TLS checked against `ca` when it is https.
fn endpoint(
    url: &str,
    ca: Option<&std::path::Path>,
    timeout: Duration,
) -> anyhow::Result<Endpoint> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("{url:?} is not a URL"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout);
    if url.starts_with("https://") {
        let Some(ca) = ca else {
            bail!("{url} is https: pass --ca FILE (the CA's PEM)")
        };
        let pem =
            std::fs::read(ca).with_context(|| format!("cannot read --ca {}", ca.display()))?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .context("TLS settings refused")?;
    }
    Ok(endpoint)
}

/// The `authorization` header for `token`; none without one.
fn bearer(token: Option<&str>) -> anyhow::Result<meridian_auth::BearerToken> {
    meridian_auth::BearerToken::new(token).context("--token")
}

/// A gRPC refusal as one line: the code's canonical name and the reason.
pub(crate) fn refusal(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: {}",
        meridian_gateway::error::code_name(status.code()),
        status.message()
    )
}

fn parse_status(text: &str) -> anyhow::Result<v1::Status> {
    let status: meridian_core::Status = text.parse().map_err(|e| anyhow::anyhow!("--{e}"))?;
    Ok(meridian_proto::convert::status_to_proto(status))
}

fn parse_priority(text: &str) -> anyhow::Result<v1::Priority> {
    let priority: meridian_core::Priority = text.parse().map_err(|e| anyhow::anyhow!("--{e}"))?;
    Ok(meridian_proto::convert::priority_to_proto(priority))
}

fn status_name(raw: i32) -> &'static str {
    match meridian_proto::convert::status_from_proto("", raw)
        .ok()
        .flatten()
    {
        Some(status) => status.as_str(),
        None => "unspecified",
    }
}

fn priority_name(raw: i32) -> &'static str {
    match meridian_proto::convert::priority_from_proto("", raw)
        .ok()
        .flatten()
    {
        Some(priority) => priority.as_str(),
        None => "unspecified",
    }
}

fn time_text(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(|t| meridian_proto::timestamp_from_proto("", t).ok())
        .map_or_else(|| "-".to_owned(), crate::cli_output::instant)
}

fn time_json(at: Option<&prost_types::Timestamp>) -> Value {
    at.and_then(|t| meridian_proto::timestamp_from_proto("", t).ok())
        .map_or(Value::Null, |t| json!(crate::cli_output::instant(t)))
}

fn parse_visibility(raw: &str) -> Result<meridian_core::Visibility, String> {
    raw.parse()
}

fn visibility_name(raw: i32) -> &'static str {
    match v1::Visibility::try_from(raw) {
        Ok(v1::Visibility::Internal) => "internal",
        Ok(v1::Visibility::Public) => "public",
        Ok(v1::Visibility::Inbound) => "inbound",
        Err(_) => "unknown",
    }
}

fn sla_state_name(raw: i32) -> &'static str {
    match v1::SlaState::try_from(raw) {
        Ok(v1::SlaState::Running) => "running",
        Ok(v1::SlaState::Paused) => "paused",
        Ok(v1::SlaState::AtRisk) => "at_risk",
        Ok(v1::SlaState::Breached) => "breached",
        Ok(v1::SlaState::Met) => "met",
        Ok(v1::SlaState::Unspecified) | Err(_) => "unspecified",
    }
}

fn clock_json(clock: Option<&v1::SlaClock>) -> Value {
    clock.map_or(Value::Null, |c| {
        json!({
            "due": time_json(c.due.as_ref()),
            "warn_at": time_json(c.warn_at.as_ref()),
            "state": sla_state_name(c.state),
        })
    })
}

fn clock_text(clock: Option<&v1::SlaClock>) -> String {
    clock.map_or_else(
        || "-".to_owned(),
        |c| {
            format!(
                "{} ({})",
                time_text(c.due.as_ref()),
                sla_state_name(c.state)
            )
        },
    )
}

/// The id as the console and shift summaries show it
/// (`TicketId::short`: the random tail); the id itself if it is not one.
fn short_id(id: &str) -> String {
    id.parse::<meridian_core::TicketId>()
        .map_or_else(|_| id.to_owned(), |id| id.short())
}

fn ticket_json(t: &v1::Ticket) -> Value {
    let owner = t.owner.clone().unwrap_or_default();
    let sla = t.sla.unwrap_or_default();
    json!({
        "id": t.id,
        "short_id": short_id(&t.id),
        "subject": t.subject,
        "body": t.body,
        "customer": t.customer,
        "tier": t.tier,
        "skills": t.skills,
        "language": t.language,
        "residency": t.residency,
        "status": status_name(t.status),
        "assignee": t.assignee,
        "priority": priority_name(t.priority),
        "owner": { "region": owner.owner_region, "epoch": owner.epoch },
        "handoff_to": t.handoff_to,
        "sla": {
            "first_response": clock_json(sla.first_response.as_ref()),
            "next_response": clock_json(sla.next_response.as_ref()),
            "resolution": clock_json(sla.resolution.as_ref()),
            "at_risk": sla.at_risk,
        },
        "created_at": time_json(t.created_at.as_ref()),
        "updated_at": time_json(t.updated_at.as_ref()),
    })
}

fn note_json(n: &v1::Note) -> Value {
    json!({
        "id": n.id,
        "ticket_id": n.ticket_id,
        "region": n.region,
        "author": n.author,
        "body": n.body,
        "created_at": time_json(n.created_at.as_ref()),
        "auto": n.auto,
        "visibility": visibility_name(n.visibility),
    })
}

fn conflict_json(c: &v1::Conflict) -> Value {
    json!({
        "origin_region": c.origin_region,
        "origin_seq": c.origin_seq,
        "stale_epoch": c.stale_epoch,
        "current_epoch": c.current_epoch,
        "changes": serde_json::from_str::<Value>(&c.changes_json).unwrap_or(Value::Null),
        "recorded_at": time_json(c.recorded_at.as_ref()),
    })
}

/// Said when an idempotency key answered a ticket created earlier.
const REPLAYED_LINE: &str =
    "replayed    this idempotency key had already created the ticket; nothing new was created\n";

fn ticket_table(t: &v1::Ticket) -> String {
    let owner = t.owner.clone().unwrap_or_default();
    let sla = t.sla.unwrap_or_default();
    let rows = [
        ("id", t.id.clone()),
        ("short id", short_id(&t.id)),
        ("subject", t.subject.clone()),
        ("customer", t.customer.clone()),
        ("status", status_name(t.status).to_owned()),
        ("priority", priority_name(t.priority).to_owned()),
        (
            "assignee",
            t.assignee.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        ("tier", t.tier.clone()),
        (
            "skills",
            if t.skills.is_empty() {
                "-".to_owned()
            } else {
                t.skills.join(", ")
            },
        ),
        (
            "residency",
            if t.residency.is_empty() {
                "anywhere".to_owned()
            } else {
                t.residency.join(", ")
            },
        ),
        (
            "owner",
            match &t.handoff_to {
                Some(to) => format!(
                    "{} at epoch {} (handing off to {to})",
                    owner.owner_region, owner.epoch
                ),
                None => format!("{} at epoch {}", owner.owner_region, owner.epoch),
            },
        ),
        ("first reply", clock_text(sla.first_response.as_ref())),
        ("next reply", clock_text(sla.next_response.as_ref())),
        ("resolve by", clock_text(sla.resolution.as_ref())),
        ("created", time_text(t.created_at.as_ref())),
        ("updated", time_text(t.updated_at.as_ref())),
    ];
    rows.iter().map(|(k, v)| format!("{k:<11} {v}\n")).collect()
}

/// A page of `ticket list` or `ticket search`, as a table or as JSON.
fn print_page(conn: &Connection, page: &v1::ListTicketsResponse) {
    let value = json!({
        "tickets": page.tickets.iter().map(ticket_json).collect::<Vec<_>>(),
        "next_page_token": page.next_page_token,
    });
    conn.print(&value, &list_table(page));
}

fn list_table(page: &v1::ListTicketsResponse) -> String {
    let mut out = format!(
        "{:<36}  {:<9}  {:<8}  {:<10}  {:<10}  {:<12}  {}\n",
        "ID", "STATUS", "PRIORITY", "OWNER", "TIER", "ASSIGNEE", "SUBJECT"
    );
    for t in &page.tickets {
        let owner = t.owner.as_ref().map_or("-", |o| o.owner_region.as_str());
        let subject: String = t.subject.chars().take(48).collect();
        out.push_str(&format!(
            "{:<36}  {:<9}  {:<8}  {:<10}  {:<10}  {:<12}  {}\n",
            t.id,
            status_name(t.status),
            priority_name(t.priority),
            owner,
            t.tier,
            t.assignee.as_deref().unwrap_or("-"),
            subject
        ));
    }
    if page.tickets.is_empty() {
        out.push_str("(no tickets)\n");
    }
    if !page.next_page_token.is_empty() {
        out.push_str(&format!("more: --page-token {}\n", page.next_page_token));
    }
    out
}
