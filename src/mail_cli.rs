//! `meridian mail …`: what an SRE needs of a region's mail (docs/mail.md):
//! the messages kept aside because they cannot become tickets, and the
//! outgoing mails by state. Like `meridian notify`, it reads the region's
//! database directly, so it works while the gateway is down.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use meridian_notify::meridian_outbox::{Outbox, RetryPolicy, State};

use crate::notify_cli::Database;

/// The outbox channel the gateway's mail sender reads.
const MAIL_CHANNEL: &str = "mail";

#[derive(Subcommand)]
pub enum MailCommand {
    /// List the mails kept aside (malformed, too large, refused), newest first.
    Quarantine {
        #[command(flatten)]
        db: Database,
        /// The most listed.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON object a line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Outgoing mails (acknowledgements, replies): pending, sent, dead.
    Outbox {
        #[command(flatten)]
        db: Database,
        /// The most listed per state.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

pub async fn run(command: MailCommand) -> anyhow::Result<ExitCode> {
    match command {
        MailCommand::Quarantine { db, limit, json } => {
            let ledger = meridian_mail::ledger::Ledger::open(db.url())
                .await
                .context("opening the mail ledger")?;
            let kept = ledger.quarantine(limit).await?;
            if json {
                for entry in &kept {
                    let line = serde_json::json!({
                        "mailbox": entry.mailbox,
                        "uid_validity": entry.uid_validity,
                        "uid": entry.uid,
                        "reason": entry.reason,
                        "kept_in": entry.kept_in,
                        "recorded_at": jiff::Timestamp::from_millisecond(entry.recorded_at_ms).ok(),
                    });
                    println!("{line}");
                }
            } else if kept.is_empty() {
                println!("no mail kept aside");
            } else {
                println!("{:<25} {:>8}  {:<30} REASON", "RECORDED", "UID", "KEPT IN");
                for entry in &kept {
                    let at = jiff::Timestamp::from_millisecond(entry.recorded_at_ms)
                        .map_or_else(|_| entry.recorded_at_ms.to_string(), |t| t.to_string());
                    println!(
                        "{at:<25} {:>8}  {:<30} {}",
                        entry.uid, entry.kept_in, entry.reason
                    );
                }
            }
            ledger.close().await;
            Ok(ExitCode::SUCCESS)
        }
        MailCommand::Outbox { db, limit } => {
            let outbox = Outbox::open(db.url(), RetryPolicy::default())
                .await
                .context("opening the mail outbox")?;
            for state in [State::Pending, State::Dead, State::Delivered] {
                let items = outbox.list(state, Some(MAIL_CHANNEL), limit).await?;
                println!("{} ({} shown)", state.as_str(), items.len());
                for item in &items {
                    let error = item.last_error.as_deref().unwrap_or("");
                    println!(
                        "  {:<60} attempts {:>2}  {}",
                        item.key, item.attempts, error
                    );
                }
            }
            outbox.close().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}
