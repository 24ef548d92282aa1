//! Each conflict the store records becomes a `conflict` span in the
//! ticket's trace and a count in `meridian.conflicts`: a stale write is
//! visible where SREs look, not only on the ticket.

use meridian_core::RegionId;
use meridian_store::Store;
use tokio::sync::broadcast::error::RecvError;

use crate::{
    context::TicketApi,
    metrics::GatewayMetrics,
    spans::{Step, record_outcome, ticket_span},
};

/// Follows the gateway's store's conflicts; the gateway aborts it on
/// shutdown.
pub(crate) async fn watch(api: TicketApi) {
    follow(api.store(), api.region(), api.metrics()).await;
}

async fn follow(store: &Store, region: &RegionId, metrics: &GatewayMetrics) {
    let mut recorded = store.subscribe_conflicts();
    loop {
        match recorded.recv().await {
            Ok(recorded) => {
                let conflict = &recorded.conflict;
                let span = ticket_span(Step::Conflict, region, recorded.ticket_id, None);
                span.record("meridian.epoch", conflict.current_epoch.raw());
                let reason = format!(
                    "{} wrote at epoch {} (event {}); the ticket is at epoch {}",
                    conflict.origin_region,
                    conflict.stale_epoch,
                    conflict.origin_seq,
                    conflict.current_epoch
                );
                record_outcome(&span, "conflict", Some(&reason));
                metrics.conflicts(conflict.origin_region.as_str(), 1);
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "the conflict watcher fell behind; those conflicts are counted without spans"
                );
                metrics.conflicts("unknown", missed);
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jiff::Timestamp;
    use meridian_core::{
        Epoch, EventEnvelope, EventKind, HlcTimestamp, NewTicket, Ownership, Priority, Status,
        Ticket, TicketChanges, TicketId, Tier,
    };
    use meridian_store::{StoreConfig, WriteMeta};
    use meridian_telemetry::{Telemetry, TelemetryConfig, testing::OtlpReceiver};
    use tracing::instrument::WithSubscriber;

    use super::*;

    fn region(name: &str) -> RegionId {
        RegionId::new(name).unwrap()
    }

    fn meta(millis: u64) -> WriteMeta {
        WriteMeta {
            hlc_time: HlcTimestamp::new(millis, 0),
            traceparent: None,
            at: Timestamp::from_millisecond(millis as i64).unwrap(),
            actor: None,
        }
    }

    /// us-east's late write, taken back when eu-west's takeover arrives,
    /// is a `conflict` span in the ticket's trace and a count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_recorded_conflict_is_a_span_in_the_tickets_trace_and_a_count() {
        let receiver = OtlpReceiver::start().await.unwrap();
        let config = TelemetryConfig {
            otlp_endpoint: Some(receiver.endpoint()),
            span_batch_delay: Duration::from_millis(50),
            default_log_filter: "warn".to_owned(),
            ..TelemetryConfig::new("meridian-test")
        };
        let (telemetry, dispatch) = Telemetry::build(&config).unwrap();
        let metrics = GatewayMetrics::new(
            &telemetry.metrics().meter("meridian-gateway"),
            &region("us-east"),
        );

        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let us = region("us-east");
        let store = Store::open(&StoreConfig::sqlite_file(&dir.path().join("us.db")), &us)
            .await
            .unwrap();
        let follower = {
            let (store, us) = (store.clone(), us.clone());
            tokio::spawn(
                async move { follow(&store, &us, &metrics).await }.with_subscriber(dispatch),
            )
        };

        let at = Timestamp::from_millisecond(1_750_000_000_000).unwrap();
        let new = NewTicket {
            subject: "VPN down".into(),
            body: String::new(),
            customer: "acme".into(),
            tier: Tier::new("standard").unwrap(),
            skills: Default::default(),
            language: "en".into(),
            residency: Default::default(),
            priority: Priority::Normal,
        };
        let epoch = Epoch::initial(0);
        let ticket = Ticket::create(
            TicketId::new_v7(at, [1; 10]),
            new,
            Ownership::new(us.clone(), 0, epoch).unwrap(),
            at,
        )
        .unwrap();
        let id = ticket.id;
        store
            .create_ticket(ticket, meta(1_750_000_000_001))
            .await
            .unwrap();
        let change = |status| TicketChanges {
            epoch,
            status: Some(status),
            ..TicketChanges::default()
        };
        let (_, seen) = store
            .update_ticket(id, change(Status::Open), meta(1_750_000_000_002))
            .await
            .unwrap();
        store
            .update_ticket(id, change(Status::Pending), meta(1_750_000_000_003))
            .await
            .unwrap();
        let taken = EventEnvelope {
            origin_region: region("eu-west"),
            origin_seq: 1,
            ticket_id: id,
            epoch: epoch.next_for(1),
            hlc_time: HlcTimestamp::new(1_750_000_000_010, 0),
            traceparent: None,
            actor: None,
            kind: EventKind::TakenOver {
                from: us.clone(),
                fencing_token: 3,
                previous_epoch: epoch,
                through_seq: seen.origin_seq,
            },
        };
        store
            .apply_remote(&region("eu-west"), vec![taken])
            .await
            .unwrap();

        let trace_id = meridian_telemetry::ticket::trace_id(id);
        let spans = receiver
            .wait_for_spans("the conflict span", Duration::from_secs(20), |spans| {
                spans
                    .iter()
                    .any(|s| s.name == "conflict" && s.trace_id == trace_id)
            })
            .await
            .unwrap();
        let span = spans.iter().find(|s| s.name == "conflict").unwrap();
        assert_eq!(
            span.attributes.get("meridian.region").map(String::as_str),
            Some("us-east")
        );
        assert_eq!(
            span.attributes.get("meridian.outcome").map(String::as_str),
            Some("conflict")
        );
        assert!(
            span.attributes
                .get("meridian.reason")
                .is_some_and(|r| r.contains("us-east wrote at epoch")),
            "{span:?}"
        );
        let text = telemetry.metrics().render_prometheus().unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("meridian_conflicts"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            line.contains("origin=\"us-east\"") && line.ends_with(" 1"),
            "{line}"
        );

        // The follower holds the store, so it ends by abort, as the
        // gateway's does.
        follower.abort();
        store.close().await;
        telemetry.shutdown().await.unwrap();
    }
}
