//! `meridian agent …`: a region's agents through its gateway's
//! `AgentService`: who is on shift, available and holding what, and an
//! agent setting their own presence.

use std::process::ExitCode;

use meridian_proto::v1::{self, agent_service_client::AgentServiceClient};
use serde_json::{Value, json};

use crate::ticket_cli::{Connection, refusal};

#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// The region's roster now: each agent's shift, presence and open
    /// tickets, the unassigned queue and who owns it.
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// Set your presence (the token's subject): available, away or offline.
    /// Only an agent on shift can be available or away; it lapses to
    /// offline when the shift ends.
    Presence {
        #[command(flatten)]
        conn: Connection,
        /// available, away or offline.
        #[arg(value_parser = parse_presence)]
        presence: meridian_core::Presence,
        /// Another agent's (admins only).
        #[arg(long, default_value = "")]
        agent: String,
    },
}

fn parse_presence(text: &str) -> Result<meridian_core::Presence, String> {
    text.parse()
}

pub async fn run(cmd: AgentCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AgentCommand::List { conn } => {
            let (channel, token) = conn.channel().await?;
            let mut client = AgentServiceClient::with_interceptor(channel, token);
            let list = client
                .list_agents(v1::ListAgentsRequest {})
                .await
                .map_err(refusal)?
                .into_inner();
            conn.print(&list_json(&list), &list_table(&list));
        }
        AgentCommand::Presence {
            conn,
            presence,
            agent,
        } => {
            let (channel, token) = conn.channel().await?;
            let mut client = AgentServiceClient::with_interceptor(channel, token);
            let status = client
                .set_presence(v1::SetPresenceRequest {
                    presence: presence_to_proto(presence).into(),
                    agent,
                })
                .await
                .map_err(refusal)?
                .into_inner();
            let table = format!(
                "{} is {}{}\n",
                status.id,
                presence_name(status.presence),
                shift_text(&status)
            );
            conn.print(&agent_json(&status), &table);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn presence_to_proto(presence: meridian_core::Presence) -> v1::Presence {
    match presence {
        meridian_core::Presence::Available => v1::Presence::Available,
        meridian_core::Presence::Away => v1::Presence::Away,
        meridian_core::Presence::Offline => v1::Presence::Offline,
    }
}

fn presence_name(raw: i32) -> &'static str {
    match v1::Presence::try_from(raw) {
        Ok(v1::Presence::Available) => "available",
        Ok(v1::Presence::Away) => "away",
        _ => "offline",
    }
}

fn shift_text(status: &v1::AgentStatus) -> String {
    if status.on_shift.is_empty() {
        " (off shift)".to_owned()
    } else {
        let ends = status
            .shift_ends_at
            .as_ref()
            .and_then(|t| meridian_proto::timestamp_from_proto("shift_ends_at", t).ok())
            .map(|t| format!(" until {}", crate::cli_output::instant(t)))
            .unwrap_or_default();
        format!(" (on the {} shift{ends})", status.on_shift)
    }
}

fn agent_json(status: &v1::AgentStatus) -> Value {
    json!({
        "id": status.id,
        "name": status.name,
        "skills": status.skills,
        "languages": status.languages,
        "max_open": status.max_open,
        "shifts": status.shifts,
        "presence": presence_name(status.presence),
        "on_shift": status.on_shift,
        "open_tickets": status.open_tickets,
    })
}

fn list_json(list: &v1::ListAgentsResponse) -> Value {
    json!({
        "region": list.region,
        "auto_assign": list.auto_assign,
        "queue_owner": list.queue_owner,
        "unassigned_open": list.unassigned_open,
        "agents": list.agents.iter().map(agent_json).collect::<Vec<_>>(),
        "roster_problems": list.roster_problems,
    })
}

fn list_table(list: &v1::ListAgentsResponse) -> String {
    let mut table = format!(
        "{} · auto-assignment {} · queue owner {} · {} unassigned\n",
        list.region,
        list.auto_assign,
        if list.queue_owner.is_empty() {
            "nobody (off shift)"
        } else {
            &list.queue_owner
        },
        list.unassigned_open
    );
    table.push_str(&format!(
        "{:<20} {:<10} {:<10} {:>9}  {}\n",
        "AGENT", "PRESENCE", "SHIFT", "OPEN/MAX", "SKILLS"
    ));
    for agent in &list.agents {
        table.push_str(&format!(
            "{:<20} {:<10} {:<10} {:>9}  {}\n",
            agent.id,
            presence_name(agent.presence),
            if agent.on_shift.is_empty() {
                "-"
            } else {
                &agent.on_shift
            },
            format!("{}/{}", agent.open_tickets, agent.max_open),
            agent.skills.join(", ")
        ));
    }
    for problem in &list.roster_problems {
        table.push_str(&format!("roster refused: {problem}\n"));
    }
    table
}
