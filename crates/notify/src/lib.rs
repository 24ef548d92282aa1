//! Notifications that reach people: one service that turns Meridian's
//! moments (a shift summary, an SLA warning or breach, an escalation, a
//! stranded ticket, a volume spike, a takeover and a return, a refused
//! rules file) into Slack, Teams or plain-JSON webhook POSTs over HTTPS.
//!
//! A [`Notification`] carries a key that is stable for the moment it
//! describes (derived from the event that caused it). [`Notifier::notify`]
//! writes one outbox item per target that receives it, keyed by the
//! notification's key and the target's name, into the region's durable
//! outbox ([`meridian_outbox`]); enqueueing the same key again is a no-op.
//! The delivery task ([`Notifier::deliver`]) claims due items, POSTs them
//! with the key in an `Idempotency-Key` header and in the body, retries
//! failures with backoff, and leaves dead letters for an SRE to see and
//! requeue. A crash anywhere in between re-sends at most what was not yet
//! marked delivered, under the same key, so a receiver that deduplicates by
//! key sees each notification once.
//!
//! Boundary: no decisions about *when* to notify live here (the gateway's
//! notifier task and the escalation code decide); this crate renders,
//! stores and delivers.

#![forbid(unsafe_code)]

mod deliver;
mod error;
mod render;
mod target;

use std::{fmt, sync::Arc};

use jiff::Timestamp;
use meridian_core::{Clock, RegionId, TicketId};
use meridian_outbox::{Outbox, RetryPolicy};
use serde::{Deserialize, Serialize};

pub use deliver::{DeliveryMetrics, DeliverySettings};
pub use error::{Error, Result};
pub use meridian_outbox;
pub use target::{Format, Target, parse_kinds as target_kinds};

/// The outbox channel webhook notifications use (email uses its own).
pub const CHANNEL: &str = "webhook";

/// What a notification is about; targets subscribe to kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    ShiftSummary,
    SlaWarning,
    SlaBreach,
    Escalation,
    Stranded,
    VolumeSpike,
    Takeover,
    Return,
    RulesRefused,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::ShiftSummary,
        Kind::SlaWarning,
        Kind::SlaBreach,
        Kind::Escalation,
        Kind::Stranded,
        Kind::VolumeSpike,
        Kind::Takeover,
        Kind::Return,
        Kind::RulesRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ShiftSummary => "shift_summary",
            Kind::SlaWarning => "sla_warning",
            Kind::SlaBreach => "sla_breach",
            Kind::Escalation => "escalation",
            Kind::Stranded => "stranded",
            Kind::VolumeSpike => "volume_spike",
            Kind::Takeover => "takeover",
            Kind::Return => "return",
            Kind::RulesRefused => "rules_refused",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ticket as a person reads it in a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketLine {
    pub id: TicketId,
    pub subject: String,
    /// The SLA state in words: "first response due 09:30 UTC (at risk)".
    pub sla: String,
    /// What should happen next: "eu-west answers the customer".
    pub next_step: String,
}

/// Something to tell people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable for the moment it describes (e.g. `sla_breach:us-east:412`
    /// from the event's origin and sequence): the same key twice is one
    /// notification.
    pub key: String,
    pub kind: Kind,
    pub region: RegionId,
    /// One line: what happened.
    pub title: String,
    /// A few lines a person reads without opening anything.
    pub text: String,
    pub tickets: Vec<TicketLine>,
    /// A named target only (an escalation path's on-call); `None` sends to
    /// every target subscribed to the kind.
    pub target: Option<String>,
    pub at: Timestamp,
    /// Machine-readable detail for `json` targets, merged into their body
    /// (an object such as `{"summary": …}`); `Null` for none.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// A ticket's short id: the last 8 hex digits of its UUID, the random
/// tail (a UUIDv7 starts with its timestamp, so its head is shared by
/// tickets made in the same millisecond). Matches the console's `shortId`.
pub fn short_id(id: TicketId) -> String {
    id.short()
}

/// The handle producers hold: cheap to clone; [`Notifier::disabled`] when
/// no target is configured.
#[derive(Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    outbox: Outbox,
    /// The outbox's time: real time, even under `meridian up --speed`,
    /// since retries wait for receivers that recover in real time.
    clock: Arc<dyn Clock>,
    targets: Vec<Target>,
    /// Tells the delivery task something was queued.
    wake: tokio::sync::Notify,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let targets: Vec<&str> = self.targets().iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("Notifier")
            .field("targets", &targets)
            .finish()
    }
}

impl Notifier {
    /// Opens the region's outbox on the store's database and notifies
    /// `targets`. With no targets the notifier is disabled and opens
    /// nothing.
    pub async fn open(
        store_url: &str,
        targets: Vec<Target>,
        retry: RetryPolicy,
    ) -> Result<Notifier> {
        if targets.is_empty() {
            return Ok(Notifier::disabled());
        }
        target::check_unique(&targets)?;
        // A bad URL or CA file stops the start, not the first delivery.
        deliver::check_targets(&targets)?;
        let outbox = Outbox::open(store_url, retry).await?;
        Ok(Notifier::with_outbox(outbox, targets, Arc::new(WallClock)))
    }

    /// A notifier over an outbox the caller opened, on `clock`.
    pub fn with_outbox(outbox: Outbox, targets: Vec<Target>, clock: Arc<dyn Clock>) -> Notifier {
        Notifier {
            inner: Some(Arc::new(Inner {
                outbox,
                clock,
                targets,
                wake: tokio::sync::Notify::new(),
            })),
        }
    }

    /// No targets: every [`Notifier::notify`] is a no-op.
    pub fn disabled() -> Notifier {
        Notifier { inner: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    pub fn targets(&self) -> &[Target] {
        self.inner.as_ref().map_or(&[], |inner| &inner.targets)
    }

    /// The outbox, for the delivery task, the CLI's dead letters and the
    /// event-log notifier's cursor.
    pub fn outbox(&self) -> Option<&Outbox> {
        self.inner.as_ref().map(|inner| &inner.outbox)
    }

    /// Queues `n` for every target that receives it. Returns whether
    /// anything new was queued: `false` for a key already queued (a replay)
    /// or when no target receives it. Errors only when the outbox cannot be
    /// written; the caller may retry with the same key.
    pub async fn notify(&self, n: Notification) -> Result<bool> {
        let Some(inner) = &self.inner else {
            return Ok(false);
        };
        // A named target (an on-call) that is not configured must not
        // swallow the page: every target taking the kind gets it instead.
        let named = n
            .target
            .as_ref()
            .filter(|name| inner.targets.iter().any(|t| t.name == **name));
        if let (Some(name), None) = (&n.target, named) {
            tracing::warn!(key = %n.key, target = %name, kind = %n.kind, "notification names a target that is not configured; sent to every target of its kind instead");
        }
        let mut queued = false;
        for target in &inner.targets {
            let receives = match named {
                Some(name) => *name == target.name,
                None => target.receives(n.kind),
            };
            if !receives {
                continue;
            }
            let payload = render::payload(target, &n)?;
            let key = item_key(&n.key, &target.name);
            // Due now on the outbox's clock; `n.at` is the mesh's time.
            let now = inner.clock.now();
            queued |= inner.outbox.enqueue(CHANNEL, &key, &payload, now).await?;
        }
        if queued {
            inner.wake.notify_one();
        }
        Ok(queued)
    }
}

impl Notifier {
    pub(crate) fn clock(&self) -> Option<Arc<dyn Clock>> {
        self.inner.as_ref().map(|inner| inner.clock.clone())
    }

    /// Wakes the delivery task (a requeue, more due items).
    pub fn wake(&self) {
        if let Some(inner) = &self.inner {
            inner.wake.notify_one();
        }
    }

    async fn woken(&self) {
        match &self.inner {
            Some(inner) => inner.wake.notified().await,
            None => std::future::pending().await,
        }
    }
}

/// The wall clock.
struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// One outbox item per notification and target.
pub fn item_key(notification_key: &str, target: &str) -> String {
    format!("{notification_key}@{target}")
}
