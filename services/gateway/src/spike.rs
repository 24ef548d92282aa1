//! Volume-spike alerts. The task counts this region's new tickets per tier
//! and skill ([`meridian_core::spike`]) and, each time a bucket closes on
//! the gateway's clock, records an `intake_spike` or
//! `intake_spike_cleared` event naming the shift's queue owner and logs it;
//! the notifier task ([`crate::notifications`]) tells people from the
//! recorded event. The rules file's `[spike]`
//! table turns it on and tunes it; without one the task only follows the
//! log.
//!
//! Counting needs no help from the request handlers: the store's commit
//! broadcast delivers each local `ticket_created` as it commits (the cheap
//! path), and the region's log is the truth. A gap in the local sequence
//! (the broadcast lagged, or another replica of this region wrote) is read
//! back from the log on the next tick, so every ticket of the region is
//! counted exactly once whichever replica created it. Ticks read the clock
//! *before* the log, so every ticket created before that instant is
//! counted before its bucket closes.
//!
//! Replicas of one region close the same buckets over the same log and so
//! raise the same alerts; the event's id is derived from the bucket, the
//! store refuses the second copy, so one event and one notification.

use std::time::Duration;

use meridian_core::{EventEnvelope, EventKind, IntakeSpike, RegionId, SpikeChange, SpikeDetector};
use meridian_store::Store;
use tokio::{sync::broadcast::error::RecvError, time::MissedTickBehavior};

use crate::context::TicketApi;

/// The most events read from the log in one page while catching up.
const CATCH_UP_PAGE: u32 = 1000;

/// Runs until the task is dropped.
pub(crate) async fn run(api: TicketApi, interval: Duration) {
    let store = api.store().clone();
    let me = api.region().clone();
    // Subscribe before reading the head, so no commit falls in between.
    let mut commits = store.subscribe();
    let mut counter = loop {
        match store.local_head().await {
            Ok(head) => {
                break Counter {
                    cursor: head,
                    detector: None,
                };
            }
            Err(error) => {
                tracing::warn!(region = %me, error = %error, "spike alerts: cannot read the log head; retrying");
                tokio::time::sleep(interval).await;
            }
        }
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = commits.recv() => match received {
                Ok(event) => counter.live(&me, &event),
                // The next tick reads what was missed from the log.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = ticker.tick() => {
                let now = api.now();
                if let Err(error) = counter.catch_up(&store, &me).await {
                    // Closing buckets now would close them short of tickets.
                    tracing::warn!(region = %me, error = %error, "spike alerts: cannot read the log; buckets stay open");
                    continue;
                }
                counter.follow_rules(&api, &me, now);
                let Some(detector) = counter.detector.as_mut() else { continue };
                for change in detector.advance(now) {
                    record(&api, change).await;
                }
            }
        }
    }
}

/// The detector and how far into the local log it has counted.
struct Counter {
    /// The last local `origin_seq` counted.
    cursor: u64,
    /// `None` while the rules have no `[spike]` table.
    detector: Option<SpikeDetector>,
}

impl Counter {
    /// A commit from the broadcast: counted only if it is the next local
    /// event; after a gap the log is read instead.
    fn live(&mut self, me: &RegionId, event: &EventEnvelope) {
        if &event.origin_region == me && event.origin_seq == self.cursor + 1 {
            self.count(event);
        }
    }

    /// Reads the local log past the cursor.
    async fn catch_up(&mut self, store: &Store, me: &RegionId) -> meridian_store::Result<()> {
        if store.local_head().await? <= self.cursor {
            return Ok(());
        }
        loop {
            let page = store.events_after(me, self.cursor, CATCH_UP_PAGE).await?;
            let Some(last) = page.last().map(|e| e.origin_seq) else {
                return Ok(());
            };
            page.iter().for_each(|event| self.count(event));
            self.cursor = last;
            if page.len() < CATCH_UP_PAGE as usize {
                return Ok(());
            }
        }
    }

    fn count(&mut self, event: &EventEnvelope) {
        self.cursor = event.origin_seq;
        if let (EventKind::TicketCreated { ticket }, Some(detector)) =
            (&event.kind, self.detector.as_mut())
        {
            detector.observe(ticket.created_at, ticket);
        }
    }

    /// Starts, retunes or stops the detector as the rules in force say.
    fn follow_rules(&mut self, api: &TicketApi, me: &RegionId, now: jiff::Timestamp) {
        let config = api.rules().and_then(|rules| rules.spike().cloned());
        let Some(config) = config else {
            if self.detector.take().is_some() {
                tracing::info!(region = %me, "spike alerts off: the rules have no [spike] table");
            }
            return;
        };
        let start = |config| match SpikeDetector::new(me.clone(), config, now) {
            Ok(detector) => Some(detector),
            Err(error) => {
                // The rules parser checks the same settings; only a bug gets here.
                tracing::error!(region = %me, error = %error, "spike alerts: settings refused");
                None
            }
        };
        match &mut self.detector {
            None => {
                tracing::info!(region = %me, bucket = %config.bucket, "spike alerts on");
                self.detector = start(config);
            }
            Some(detector) if detector.config() == &config => {}
            Some(detector) => match detector.reconfigure(config.clone()) {
                Ok(true) => {
                    tracing::info!(region = %me, "spike alert settings changed; baselines kept")
                }
                outcome => {
                    let open: Vec<String> = detector.alerting().map(ToString::to_string).collect();
                    tracing::warn!(region = %me, bucket = %config.bucket, open_alerts = ?open, refused = outcome.is_err(),
                        "spike bucket changed: baselines restart, and open alerts end without a clear event");
                    self.detector = start(config);
                }
            },
        }
    }
}

/// Records a change with the queue owner on duty and logs it.
async fn record(api: &TicketApi, change: SpikeChange) {
    let now = api.now();
    let (raised, mut spike) = match change {
        SpikeChange::Raised(spike) => (true, spike),
        SpikeChange::Cleared(spike) => (false, spike),
    };
    spike.queue_owner = api
        .rules()
        .and_then(|rules| rules.queue_owner_at(spike.region.as_str(), now));
    let text = spike_text(raised, &spike);
    let kind = if raised {
        EventKind::IntakeSpike { spike }
    } else {
        EventKind::IntakeSpikeCleared { spike }
    };
    match api
        .store()
        .record_intake_spike(
            kind,
            api.meta_with(None)
                .by(meridian_core::Actor::system("spike")),
        )
        .await
    {
        Ok(_) if raised => tracing::warn!(region = %api.region(), "{text}"),
        Ok(_) => tracing::info!(region = %api.region(), "{text}"),
        // Another replica of this region recorded it.
        Err(meridian_store::Error::Duplicate(_)) => {}
        // Worth hearing about even when the store is failing.
        Err(error) => {
            tracing::error!(region = %api.region(), error = %error, "{text} (not recorded)")
        }
    }
}

/// A spike alert, or its clearing, in words.
pub(crate) fn spike_text(raised: bool, spike: &IntakeSpike) -> String {
    let owner = spike.queue_owner.as_deref().unwrap_or("nobody on shift");
    let (region, key, start, end) = (
        &spike.region,
        spike.key(),
        spike.bucket_start,
        spike.bucket_end,
    );
    if raised {
        format!(
            "Intake spike in {region}: {} new {key} tickets in {start}–{end} against a baseline of {} ± {} \
             (threshold {}); queue owner: {owner}",
            spike.count, spike.baseline, spike.deviation, spike.threshold
        )
    } else {
        format!(
            "Intake back to normal in {region}: {} new {key} tickets in {start}–{end} (baseline {}, peak {} since {}); \
             queue owner: {owner}",
            spike.count, spike.baseline, spike.peak, spike.since
        )
    }
}
