//! The SLA monitor: looks, on an interval, for this region's tickets whose
//! clocks passed their warning share or their deadline, and records an
//! `SlaWarning` or `SlaBreached` event for each, fenced on the ticket's
//! epoch like any owner-scoped write. Only the owner records alerts, so a
//! ticket handed to another region is watched there.

use std::time::Duration;

use meridian_core::{SlaMetric, TicketChanges};
use tokio::time::MissedTickBehavior;

use crate::context::TicketApi;

/// Tickets looked at per scan; the rest wait for the next tick.
pub const SLA_SCAN_BATCH_MAX: u32 = 256;

/// Runs until the task is dropped.
pub(crate) async fn monitor(api: TicketApi, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = scan(&api).await {
            tracing::warn!(region = %api.region(), error = %error, "sla scan failed, retrying next tick");
        }
    }
}

/// One pass: every alert due now, each in its own fenced write.
pub(crate) async fn scan(api: &TicketApi) -> meridian_store::Result<usize> {
    // A fenced region records no alerts; its successor will.
    if api.check_gate().is_err() {
        return Ok(0);
    }
    let now = api.now();
    let due = api
        .store()
        .sla_due(api.region(), now, SLA_SCAN_BATCH_MAX)
        .await?;
    let mut recorded = 0;
    for mut ticket in due {
        for metric in SlaMetric::ALL {
            let Some(alert) = ticket
                .sla
                .clock(metric)
                .and_then(|clock| clock.alert_at(now))
            else {
                continue;
            };
            let changes = TicketChanges {
                epoch: ticket.owner.epoch,
                sla: Some(ticket.sla.with_alert(metric, alert)),
                ..TicketChanges::default()
            };
            match api
                .store()
                .record_sla_alert(
                    ticket.id,
                    metric,
                    alert,
                    changes,
                    api.meta_with(None).by(meridian_core::Actor::system("sla")),
                )
                .await
            {
                Ok((updated, event)) => {
                    tracing::warn!(ticket_id = %ticket.id, metric = %metric, event = event.kind.name(), seq = event.origin_seq, "sla alert");
                    ticket = updated;
                    recorded += 1;
                }
                // The ticket moved to another region or changed in between:
                // its new owner (or the next scan) decides.
                Err(
                    meridian_store::Error::Fenced { .. } | meridian_store::Error::TicketNotFound(_),
                ) => break,
                Err(error) => return Err(error),
            }
        }
    }
    Ok(recorded)
}
