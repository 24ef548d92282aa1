//! `meridian notify …`: what an SRE needs of the notification outbox —
//! the dead letters (notifications that ran out of attempts) and sending
//! one again. It reads the region's database directly, the same URL the
//! gateway uses, so it works while the gateway is down; the gateway's
//! delivery task picks a requeued item up on its next poll.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use meridian_notify::meridian_outbox::{Outbox, RetryPolicy, State};

#[derive(Subcommand)]
pub enum NotifyCommand {
    /// List notifications that ran out of attempts.
    DeadLetters {
        #[command(flatten)]
        db: Database,
        /// The most listed.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// One JSON object a line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Queue a dead letter again, with a fresh attempt budget.
    Retry {
        #[command(flatten)]
        db: Database,
        /// The item's key as `dead-letters` shows it (NOTIFICATION@TARGET).
        key: String,
    },
    /// Counts of pending, delivered and dead notifications.
    Status {
        #[command(flatten)]
        db: Database,
    },
}

#[derive(Args)]
pub struct Database {
    /// The region's database: the gateway's `database.url` (`meridian up`
    /// keeps region R in `sqlite:.meridian/R.db`).
    #[arg(long, env = "MERIDIAN_DATABASE_URL")]
    database_url: String,
}

impl Database {
    pub(crate) fn url(&self) -> &str {
        &self.database_url
    }

    async fn open(&self) -> anyhow::Result<Outbox> {
        Outbox::open(&self.database_url, RetryPolicy::default())
            .await
            .with_context(|| "opening the notification outbox".to_owned())
    }
}

pub async fn run(command: NotifyCommand) -> anyhow::Result<ExitCode> {
    match command {
        NotifyCommand::DeadLetters { db, limit, json } => {
            let outbox = db.open().await?;
            let dead = outbox
                .list(State::Dead, Some(meridian_notify::CHANNEL), limit)
                .await?;
            if json {
                for item in &dead {
                    let line = serde_json::json!({
                        "key": item.key,
                        "attempts": item.attempts,
                        "created_at": item.created_at,
                        "last_error": item.last_error,
                    });
                    println!("{line}");
                }
            } else if dead.is_empty() {
                println!("no dead letters");
            } else {
                println!(
                    "{:<60} {:>8}  {:<25} LAST ERROR",
                    "KEY", "ATTEMPTS", "CREATED"
                );
                for item in &dead {
                    println!(
                        "{:<60} {:>8}  {:<25} {}",
                        item.key,
                        item.attempts,
                        item.created_at.to_string(),
                        item.last_error.as_deref().unwrap_or("")
                    );
                }
            }
            outbox.close().await;
            Ok(ExitCode::SUCCESS)
        }
        NotifyCommand::Retry { db, key } => {
            let outbox = db.open().await?;
            let requeued = outbox
                .requeue(meridian_notify::CHANNEL, &key, jiff::Timestamp::now())
                .await?;
            outbox.close().await;
            if requeued {
                println!("requeued {key}; the gateway sends it on its next poll");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "no dead letter has the key {key:?} (see `meridian notify dead-letters`)"
                );
                Ok(ExitCode::FAILURE)
            }
        }
        NotifyCommand::Status { db } => {
            let outbox = db.open().await?;
            let counts = outbox.counts().await?;
            outbox.close().await;
            println!(
                "pending {}  delivered {}  dead {}",
                counts.pending, counts.delivered, counts.dead
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
