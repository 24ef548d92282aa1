//! `[notify]` of a gateway file: the webhook targets notifications go to,
//! and how hard delivery tries. The older `rules.webhooks` list still
//! works: each URL becomes a `json` target named `webhook-N` that receives
//! shift summaries and volume spikes, as it did.
//!
//! ```toml
//! [notify]
//! attempts_max = 8          # then the notification is a dead letter
//! retry_initial_ms = 1000   # doubling, with jitter, up to retry_max_ms
//! retry_max_ms = 300000
//!
//! [[notify.targets]]
//! name = "support-slack"
//! url = "https://hooks.slack.com/services/T000/B000/XXXX"
//! format = "slack"          # slack | teams | json
//! kinds = ["shift_summary", "sla_breach", "escalation", "stranded"]
//! # ca = "/etc/meridian/hooks-ca.pem"   # trust only this CA
//! ```

use std::{path::PathBuf, time::Duration};

use meridian_notify::{
    DeliverySettings, Format, Kind, Target, meridian_outbox::RetryPolicy, target_kinds,
};
use serde::Deserialize;

use crate::{Error, Result};

/// Where notifications go and how they are retried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifySettings {
    pub targets: Vec<Target>,
    pub retry: RetryPolicy,
    pub delivery: DeliverySettings,
}

impl NotifySettings {
    /// The configured targets and one per legacy `rules.webhooks` URL.
    pub fn all_targets(&self, legacy_webhooks: &[String]) -> Result<Vec<Target>> {
        let mut targets = self.targets.clone();
        for (i, url) in legacy_webhooks.iter().enumerate() {
            targets.push(legacy_target(i, url).map_err(|e| Error::Config(e.to_string()))?);
        }
        Ok(targets)
    }
}

/// What a `rules.webhooks` URL always received, as a target.
pub(crate) fn legacy_target(i: usize, url: &str) -> meridian_notify::Result<Target> {
    Target::new(
        &format!("webhook-{i}"),
        url,
        Format::Json,
        None,
        vec![Kind::ShiftSummary, Kind::VolumeSpike],
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifySection {
    #[serde(default)]
    targets: Vec<TargetSection>,
    attempts_max: Option<u32>,
    retry_initial_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    poll_interval_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetSection {
    name: String,
    url: String,
    format: Option<String>,
    ca: Option<PathBuf>,
    #[serde(default)]
    kinds: Vec<String>,
}

impl NotifySection {
    pub(crate) fn into_settings(self, file: &str) -> Result<NotifySettings> {
        let bad = |what: String| Error::Config(format!("{file}: {what}"));
        let mut targets = Vec::new();
        for (i, t) in self.targets.into_iter().enumerate() {
            let at = format!("notify.targets[{i}]");
            let format = match t.format.as_deref() {
                None => Format::Json,
                Some(text) => Format::parse(text).ok_or_else(|| {
                    bad(format!("{at}.format: {text:?} is not slack, teams or json"))
                })?,
            };
            let kinds = target_kinds(t.kinds.iter().map(String::as_str))
                .map_err(|reason| bad(format!("{at}.kinds: {reason}")))?;
            let target = Target::new(&t.name, &t.url, format, t.ca, kinds)
                .map_err(|e| bad(format!("{at}: {e}")))?;
            if targets.iter().any(|o: &Target| o.name == target.name) {
                return Err(bad(format!(
                    "{at}: a second target named {:?}",
                    target.name
                )));
            }
            targets.push(target);
        }
        let defaults = RetryPolicy::default();
        let ms = |key: &str, value: Option<u64>, default: Duration| match value {
            None => Ok(default),
            Some(0) => Err(bad(format!("notify.{key} must be above zero"))),
            Some(ms) => Ok(Duration::from_millis(ms)),
        };
        let retry = RetryPolicy {
            attempts_max: match self.attempts_max {
                Some(0) => return Err(bad("notify.attempts_max must be at least 1".into())),
                Some(n) => n,
                None => defaults.attempts_max,
            },
            initial: ms("retry_initial_ms", self.retry_initial_ms, defaults.initial)?,
            max: ms("retry_max_ms", self.retry_max_ms, defaults.max)?,
            claim_lease: defaults.claim_lease,
        };
        if retry.max < retry.initial {
            return Err(bad(
                "notify.retry_max_ms must be at least notify.retry_initial_ms".into(),
            ));
        }
        let delivery_defaults = DeliverySettings::default();
        let delivery = DeliverySettings {
            poll_interval: ms(
                "poll_interval_ms",
                self.poll_interval_ms,
                delivery_defaults.poll_interval,
            )?,
            request_timeout: ms(
                "request_timeout_ms",
                self.request_timeout_ms,
                delivery_defaults.request_timeout,
            )?,
            batch_max: delivery_defaults.batch_max,
        };
        Ok(NotifySettings {
            targets,
            retry: RetryPolicy {
                // A claim outlives the longest POST.
                claim_lease: retry.claim_lease.max(delivery.request_timeout * 3),
                ..retry
            },
            delivery,
        })
    }
}
