//! Volume-spike alerts on a manual clock, with the example rules' `[spike]`
//! table (1-minute buckets, 10 of warm-up, 4σ to raise, 2σ to clear, at
//! least 10 tickets): steady intake on two keys for a quarter of an hour
//! raises nothing; a burst of one key raises exactly one `intake_spike`,
//! posted to the webhook naming the shift's queue owner; intake back to
//! normal records one `intake_spike_cleared`, and nothing else follows.

// Fixtures and helpers outside #[test] functions: a failure stops the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, sync::Arc, time::Duration};

use jiff::{SignedDuration, Timestamp};
use meridian_core::{EventKind, IntakeSpike, ManualClock, RegionId};
use meridian_gateway::{GatewayConfig, RulesSettings};
use meridian_proto::v1::{
    self, ticket_service_client::TicketServiceClient, watch_events_request::Scope,
};
use meridian_store::Store;
use meridian_test_support::{Backing, TestDatabase};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::StreamExt;
use tonic::{Streaming, transport::Channel};

/// Monday 14:00 UTC (10:00 in New York): us-east's day shift. The gateway
/// starts half-way into a minute, which the detector does not count.
const MINUTE_ZERO: &str = "2026-06-01T14:00:00Z";

struct Harness {
    clock: Arc<ManualClock>,
    client: TicketServiceClient<Channel>,
    hooks: mpsc::Receiver<String>,
    stop: tokio::sync::oneshot::Sender<()>,
    gateway: tokio::task::JoinHandle<meridian_gateway::Result<()>>,
    db: TestDatabase,
}

impl Harness {
    async fn start() -> Harness {
        let (url, hooks) = meridian_test_support::webhook::receiver("/hooks/spike").await;
        let db = TestDatabase::new(Backing::Sqlite).await.unwrap();
        let clock = Arc::new(ManualClock::new(at(0) + SignedDuration::from_secs(30)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let regions = ["us-east", "eu-west", "apac-south"]
            .map(|r| RegionId::new(r).unwrap())
            .to_vec();
        let mut config = GatewayConfig::new(regions[0].clone(), regions, addr, db.config());
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rules.example.toml");
        let mut settings = RulesSettings::new(rules);
        settings.shift_check_interval = Duration::from_millis(20);
        settings.webhooks = vec![url];
        config.rules = Some(settings);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let gateway = tokio::spawn(meridian_gateway::run_with_clock(
            config,
            listener,
            async {
                let _ = stopped.await;
            },
            clock.clone(),
        ));
        let mut client = None;
        for _ in 0..100 {
            if let Ok(c) = TicketServiceClient::connect(format!("http://{addr}")).await {
                client = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the spike task take the rules and open its first bucket.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Harness {
            clock,
            client: client.expect("gateway accepts connections"),
            hooks,
            stop,
            gateway,
            db,
        }
    }

    /// `n` new tickets of `tier` needing `skill`, five seconds into `minute`.
    async fn create(&mut self, minute: i64, tier: &str, skill: &str, n: u32) {
        self.clock.set(at(minute) + SignedDuration::from_secs(5));
        for i in 0..n {
            let request = v1::CreateTicketRequest {
                subject: format!("Order {minute}-{i} failed"),
                customer: "acme".into(),
                tier: tier.into(),
                skills: vec![skill.into()],
                ..Default::default()
            };
            self.client.create_ticket(request).await.unwrap();
        }
    }

    /// Steady intake over `minutes`: 1–7 premium billing tickets and one
    /// enterprise networking ticket a minute.
    async fn steady(&mut self, minutes: std::ops::RangeInclusive<i64>) {
        for m in minutes {
            self.create(m, "premium", "billing", steady_billing(m))
                .await;
            self.create(m, "enterprise", "networking", 1).await;
        }
    }

    /// Moves the clock into `minute`, closing the buckets before it.
    fn enter(&self, minute: i64) {
        self.clock.set(at(minute) + SignedDuration::from_secs(1));
    }

    async fn next_hook(&mut self) -> serde_json::Value {
        let body = tokio::time::timeout(Duration::from_secs(10), self.hooks.recv())
            .await
            .expect("a webhook post within 10 s")
            .unwrap();
        serde_json::from_str(&body).unwrap()
    }

    /// Waits a few of the task's ticks and says whether anything was posted.
    async fn quiet(&mut self) -> Option<String> {
        tokio::time::timeout(Duration::from_millis(400), self.hooks.recv())
            .await
            .ok()
            .flatten()
    }
}

/// Noisy but steady: mean 4, from 1 to 7.
fn steady_billing(minute: i64) -> u32 {
    [2, 6, 3, 1, 7, 5, 4][minute as usize % 7]
}

fn at(minute: i64) -> Timestamp {
    MINUTE_ZERO.parse::<Timestamp>().unwrap() + SignedDuration::from_mins(minute)
}

/// The next event of one of the spike kinds on a region's log stream.
async fn next_spike_event(events: &mut Streaming<v1::Event>) -> v1::Event {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        if event.kind.starts_with("intake_spike") {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_raises_one_alert_to_the_queue_owner_and_clears_when_intake_falls_back() {
    let mut h = Harness::start().await;
    let watch = v1::WatchEventsRequest {
        scope: Some(Scope::Region("us-east".into())),
        after_seq: 0,
    };
    let mut events = h.client.watch_events(watch).await.unwrap().into_inner();

    // A quarter of an hour of steady intake: warm, and no alert.
    h.steady(1..=15).await;
    h.enter(16);
    assert_eq!(h.quiet().await, None, "steady intake raised an alert");

    // The burst: 40 premium billing tickets in minute 16, enterprise steady.
    h.create(16, "premium", "billing", 40).await;
    h.create(16, "enterprise", "networking", 1).await;
    h.enter(17);
    let posted = h.next_hook().await;
    assert_eq!(posted["event"], "intake_spike", "{posted}");
    assert_eq!(posted["type"], "volume_spike", "{posted}");
    let spike: IntakeSpike = serde_json::from_value(posted["spike"].clone()).unwrap();
    assert_eq!(spike.region.as_str(), "us-east");
    assert_eq!(
        (
            spike.tier.as_str(),
            spike.skill.as_ref().map(|s| s.as_str())
        ),
        ("premium", Some("billing"))
    );
    assert_eq!(spike.count, 40);
    assert_eq!((spike.bucket_start, spike.bucket_end), (at(16), at(17)));
    assert!(
        spike.baseline.as_f64() > 2.5 && spike.baseline.as_f64() < 5.5,
        "{spike:?}"
    );
    assert!(spike.threshold.as_f64() < 40.0, "{spike:?}");
    assert_eq!(
        spike.queue_owner.as_deref(),
        Some("us-east-day-lead"),
        "the shift's queue owner is named"
    );
    let text = posted["text"].as_str().unwrap();
    assert!(
        text.contains("us-east-day-lead") && text.contains("premium/billing"),
        "{text}"
    );
    let recorded = next_spike_event(&mut events).await;
    assert_eq!(recorded.kind, "intake_spike");
    assert_eq!(
        recorded.ticket_id,
        spike.raised_id().to_string(),
        "the event carries the alert's own id"
    );

    // Back to normal in minute 17: the alert clears once that bucket closes.
    h.steady(17..=17).await;
    h.enter(18);
    let posted = h.next_hook().await;
    assert_eq!(posted["event"], "intake_spike_cleared", "{posted}");
    let cleared: IntakeSpike = serde_json::from_value(posted["spike"].clone()).unwrap();
    let expected = ("premium", steady_billing(17), at(16), 40);
    assert_eq!(
        (
            cleared.tier.as_str(),
            cleared.count,
            cleared.since,
            cleared.peak
        ),
        expected
    );
    assert_eq!(
        cleared.baseline, spike.baseline,
        "the baseline stayed frozen through the burst"
    );
    assert_eq!(
        next_spike_event(&mut events).await.kind,
        "intake_spike_cleared"
    );

    // More normal minutes: nothing more.
    h.steady(18..=20).await;
    h.enter(21);
    assert_eq!(h.quiet().await, None, "only one alert and one clear");
    h.stop.send(()).unwrap();
    h.gateway.await.unwrap().unwrap();

    // The log holds exactly one of each, under their derived ids.
    let store = Store::open(&h.db.config(), &RegionId::new("us-east").unwrap())
        .await
        .unwrap();
    let log = store
        .events_after(&RegionId::new("us-east").unwrap(), 0, 10_000)
        .await
        .unwrap();
    let spikes: Vec<_> = log
        .iter()
        .filter(|e| !e.kind.is_owner_scoped() && e.kind.name().starts_with("intake"))
        .collect();
    assert_eq!(spikes.len(), 2, "{spikes:#?}");
    assert!(
        matches!(&spikes[0].kind, EventKind::IntakeSpike { spike: s } if *s == spike && spikes[0].ticket_id == s.raised_id())
    );
    assert!(
        matches!(&spikes[1].kind, EventKind::IntakeSpikeCleared { spike: s } if *s == cleared && spikes[1].ticket_id == s.cleared_id())
    );
    let created = log
        .iter()
        .filter(|e| matches!(e.kind, EventKind::TicketCreated { .. }))
        .count();
    let steady: u32 = (1..=20)
        .filter(|m| *m != 16)
        .map(|m| steady_billing(m) + 1)
        .sum();
    assert_eq!(created, steady as usize + 41, "every ticket created");
    store.close().await;
}
