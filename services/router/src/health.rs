//! Region health from gateway heartbeats.
//!
//! A task per gateway calls the standard `grpc.health.v1.Health/Check` for
//! the ticket service on an interval, and records the injected clock's
//! instant of each successful probe. A region is up while its last success
//! is younger than the health timeout. The tokio interval only paces the
//! probes: every decision reads time from the [`Clock`], so tests and the
//! simulation decide health by moving their clock.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use meridian_core::{Clock, RegionId};
use meridian_proto::v1::{GetLoadRequest, region_load_service_client::RegionLoadServiceClient};
use meridian_rules::{RegionHealth, RegionLoad};
use tokio::time::MissedTickBehavior;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// What the router knows of one gateway.
#[derive(Debug, Clone, Copy, Default)]
struct Probed {
    /// The clock's instant of the last successful probe.
    last_ok: Option<Timestamp>,
    /// The region's load as its gateway last reported it, and when (the
    /// clock's instant of that probe).
    load: Option<(Timestamp, RegionLoad)>,
    /// At least one probe (or forward) has finished, well or badly.
    heard: bool,
}

/// The health of every region with a gateway.
#[derive(Debug)]
pub(crate) struct HealthTable {
    timeout: SignedDuration,
    regions: RwLock<HashMap<RegionId, Probed>>,
}

impl HealthTable {
    pub(crate) fn new(regions: &BTreeSet<RegionId>, timeout: Duration) -> Self {
        let timeout = SignedDuration::try_from(timeout).unwrap_or(SignedDuration::MAX);
        let regions = regions
            .iter()
            .map(|r| (r.clone(), Probed::default()))
            .collect();
        Self {
            timeout,
            regions: RwLock::new(regions),
        }
    }

    fn up(&self, probed: &Probed, now: Timestamp) -> bool {
        // A last success "in the future" (the clock moved back) counts as
        // fresh: a clock step must not take every region down.
        probed
            .last_ok
            .is_some_and(|at| now.duration_since(at) < self.timeout)
    }

    /// Every region's health at `now`, as the decision wants it. A region
    /// not yet probed has no entry (the decision reports
    /// `no_health_report`); one probed but not recently successful is down.
    pub(crate) fn snapshot(&self, now: Timestamp) -> HashMap<RegionId, RegionHealth> {
        let regions = self.regions.read().unwrap_or_else(PoisonError::into_inner);
        regions
            .iter()
            .filter(|(_, p)| p.heard)
            .map(|(id, p)| {
                (
                    id.clone(),
                    if self.up(p, now) {
                        RegionHealth::Up
                    } else {
                        RegionHealth::Down
                    },
                )
            })
            .collect()
    }

    /// The load of every region that is up and reported one within the
    /// health timeout: what the decision's load term reads. A region
    /// without a fresh report is scored as empty, as before gateways
    /// reported load.
    pub(crate) fn loads(&self, now: Timestamp) -> HashMap<RegionId, RegionLoad> {
        let regions = self.regions.read().unwrap_or_else(PoisonError::into_inner);
        regions
            .iter()
            .filter(|(_, p)| self.up(p, now))
            .filter_map(|(id, p)| {
                let (at, load) = p.load?;
                (now.duration_since(at) < self.timeout).then(|| (id.clone(), load))
            })
            .collect()
    }

    fn record_load(&self, region: &RegionId, load: Option<(Timestamp, RegionLoad)>) {
        let mut regions = self.regions.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(probed) = regions.get_mut(region) {
            probed.load = load;
        }
    }

    pub(crate) fn is_up(&self, region: &str, now: Timestamp) -> bool {
        let regions = self.regions.read().unwrap_or_else(PoisonError::into_inner);
        // `HashMap<RegionId, _>` cannot be indexed by `&str` (RegionId does
        // not borrow as str), and there are only a handful of regions.
        regions
            .iter()
            .find(|(id, _)| id.as_str() == region)
            .is_some_and(|(_, p)| self.up(p, now))
    }

    fn record(&self, region: &RegionId, ok_at: Option<Timestamp>) {
        let mut regions = self.regions.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(probed) = regions.get_mut(region) {
            probed.heard = true;
            if ok_at.is_some() {
                probed.last_ok = ok_at;
            }
        }
    }

    /// The region's health at `now` and, when down, why: stale (its last
    /// success is older than the timeout) or never heard well since its
    /// last failure.
    pub(crate) fn health_at(&self, region: &RegionId, now: Timestamp) -> (bool, String) {
        let regions = self.regions.read().unwrap_or_else(PoisonError::into_inner);
        let Some(probed) = regions.get(region) else {
            return (false, "not a region of this router".to_owned());
        };
        if self.up(probed, now) {
            return (true, String::new());
        }
        let why = match probed.last_ok {
            Some(at) => format!(
                "stale: last successful probe at {at}, {:.1}s ago on the mesh clock, timeout {:.1}s",
                now.duration_since(at).as_secs_f64(),
                self.timeout.as_secs_f64()
            ),
            None => "no successful probe since the last failure".to_owned(),
        };
        (false, why)
    }

    /// A forward to the region's gateway could not reach it: treat the
    /// region as down until its next successful probe, so the requests in
    /// between do not each spend a timeout on it.
    pub(crate) fn record_unreachable(&self, region: &RegionId) {
        let mut regions = self.regions.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(probed) = regions.get_mut(region) {
            probed.heard = true;
            probed.last_ok = None;
        }
    }
}

/// Probes one gateway every `interval` until the task is aborted.
pub(crate) async fn probe(
    region: RegionId,
    channel: Channel,
    table: Arc<HealthTable>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    deadline: Duration,
) {
    let mut load_client = RegionLoadServiceClient::new(channel.clone());
    let mut client = HealthClient::new(channel);
    let mut load_reported: Option<bool> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Logged on changes only, not on every probe.
    let mut last_ok: Option<bool> = None;
    let mut health = Transitions::default();
    loop {
        ticker.tick().await;
        let request = HealthCheckRequest {
            service: meridian_proto::v1::ticket_service_server::SERVICE_NAME.to_owned(),
        };
        let outcome = match tokio::time::timeout(deadline, client.check(request)).await {
            Ok(Ok(response)) => match response.into_inner().status() {
                ServingStatus::Serving => Ok(()),
                other => Err(format!("gateway reports {}", other.as_str_name())),
            },
            Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
            Err(_) => Err(format!("no answer within {} ms", deadline.as_millis())),
        };
        match outcome {
            Ok(()) => {
                table.record(&region, Some(clock.now()));
                // The load rides on the same probe: a gateway that does not
                // report one (an older version) is scored as empty.
                let load =
                    match tokio::time::timeout(deadline, load_client.get_load(GetLoadRequest {}))
                        .await
                    {
                        Ok(Ok(answer)) => Ok(load_of(&answer.into_inner())),
                        Ok(Err(status)) => {
                            Err(format!("{:?}: {}", status.code(), status.message()))
                        }
                        Err(_) => Err(format!("no answer within {} ms", deadline.as_millis())),
                    };
                match load {
                    Ok(load) => {
                        table.record_load(&region, Some((clock.now(), load)));
                        if load_reported != Some(true) {
                            tracing::info!(region = %region, open_tickets = load.open_tickets, "gateway reports its load");
                        }
                        load_reported = Some(true);
                    }
                    Err(reason) => {
                        table.record_load(&region, None);
                        if load_reported != Some(false) {
                            tracing::warn!(region = %region, reason = %reason, "gateway reports no load; scored as empty");
                        }
                        load_reported = Some(false);
                    }
                }
                if last_ok != Some(true) {
                    tracing::info!(region = %region, "gateway probe succeeded");
                }
                last_ok = Some(true);
            }
            Err(reason) => {
                table.record(&region, None);
                if last_ok != Some(false) {
                    tracing::warn!(region = %region, reason = %reason, "gateway probe failed");
                }
                last_ok = Some(false);
            }
        }
        // Health is judged on the mesh clock, probes run on real time: say
        // when the judgement turns, once per transition.
        let (up, why) = table.health_at(&region, clock.now());
        match health.observe(up) {
            Some(true) => tracing::info!(region = %region, "region health: up again"),
            Some(false) => tracing::warn!(region = %region, reason = %why, "region health: down"),
            None => {}
        }
    }
}

/// Turns a stream of up/down readings into its transitions: the first
/// reading, then each change, once.
#[derive(Debug, Default)]
pub(crate) struct Transitions {
    last: Option<bool>,
}

impl Transitions {
    /// `Some(up)` when the reading differs from the previous one.
    pub(crate) fn observe(&mut self, up: bool) -> Option<bool> {
        if self.last == Some(up) {
            return None;
        }
        // The first reading "up" is the expected state: not worth a line.
        let first = self.last.is_none();
        self.last = Some(up);
        if first && up { None } else { Some(up) }
    }
}

/// What a gateway's load report says, as the decision reads it.
fn load_of(answer: &meridian_proto::v1::GetLoadResponse) -> RegionLoad {
    let small = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    RegionLoad {
        open_tickets: small(answer.open_tickets),
        staffing: answer.has_roster.then(|| meridian_rules::Staffing {
            agents_on_shift: answer.agents_on_shift,
            agents_available: answer.agents_available,
            capacity: small(answer.agent_capacity),
            unassigned: small(answer.unassigned_open),
            oldest_unassigned: answer
                .oldest_unassigned_at
                .as_ref()
                .and_then(|t| meridian_proto::timestamp_from_proto("oldest_unassigned_at", t).ok()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_transitions_are_reported_once_each() {
        let mut t = Transitions::default();
        let seen: Vec<Option<bool>> = [true, true, false, false, false, true, true, false]
            .into_iter()
            .map(|up| t.observe(up))
            .collect();
        assert_eq!(
            seen,
            [
                None,
                None,
                Some(false),
                None,
                None,
                Some(true),
                None,
                Some(false)
            ]
        );
        let mut t = Transitions::default();
        assert_eq!(t.observe(false), Some(false), "down from the start is said");
    }

    #[test]
    fn stale_health_says_how_stale() {
        let east = RegionId::new("us-east").unwrap();
        let table = HealthTable::new(&[east.clone()].into(), Duration::from_secs(5));
        let t0: Timestamp = "2026-06-02T12:00:00Z".parse().unwrap();
        assert!(!table.health_at(&east, t0).0);
        table.record(&east, Some(t0));
        assert_eq!(table.health_at(&east, t0), (true, String::new()));
        let later = t0.checked_add(SignedDuration::from_secs(30)).unwrap();
        let (up, why) = table.health_at(&east, later);
        assert!(!up);
        assert_eq!(
            why,
            "stale: last successful probe at 2026-06-02T12:00:00Z, 30.0s ago on the mesh clock, timeout 5.0s"
        );
    }

    #[test]
    fn a_region_is_up_while_its_last_success_is_younger_than_the_timeout() {
        let east = RegionId::new("us-east").unwrap();
        let west = RegionId::new("eu-west").unwrap();
        let table = HealthTable::new(&[east.clone(), west.clone()].into(), Duration::from_secs(5));
        let t0: Timestamp = "2026-06-02T12:00:00Z".parse().unwrap();
        assert!(
            table.snapshot(t0).is_empty(),
            "nothing heard yet: no health report"
        );

        table.record(&east, Some(t0));
        table.record(&west, None);
        let at = |secs: i64| t0.checked_add(SignedDuration::from_secs(secs)).unwrap();
        let snapshot = table.snapshot(at(4));
        assert_eq!(snapshot[&east], RegionHealth::Up);
        assert_eq!(snapshot[&west], RegionHealth::Down);
        assert!(table.is_up("us-east", at(4)));
        assert_eq!(table.snapshot(at(5))[&east], RegionHealth::Down);
        assert!(!table.is_up("us-east", at(5)));

        // A failed probe does not forget an earlier success; an unreachable
        // forward does.
        table.record(&east, None);
        assert_eq!(table.snapshot(at(1))[&east], RegionHealth::Up);
        table.record_unreachable(&east);
        assert_eq!(table.snapshot(at(1))[&east], RegionHealth::Down);
    }
}
