//! The in-process coordinator, for the single-process mesh (`meridian up`)
//! and tests. Same rules as the etcd one: one store revision raised by every
//! write, leases that expire `ttl` after their last renewal, takeovers that
//! need an expired lease and a live successor, exactly one winner.
//!
//! Time comes only from the injected clock. A background task re-reads it
//! every `tick` to renew, fence and expire; tests that drive a
//! [`meridian_core::ManualClock`] call [`LocalCoordinator::evaluate`] after
//! advancing it, so nothing depends on when that task runs.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    time::Duration,
};

use meridian_core::{Clock, RegionId};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    Coordinator,
    error::{Error, Result},
    lease::{self, Control, Lease, LeaseShared},
    types::{LeaseId, LiveLease, RegionStatus, RegionView, Revision, Takeover},
};

/// Settings of the in-process coordinator.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// How long before a lease's expiry its holder fences itself.
    pub safety_margin: Duration,
    /// How often the background task re-reads the clock (renewals, fencing,
    /// expiry). With an accelerated clock, keep `tick` times the speed-up
    /// well under a lease's renew interval, `(ttl - safety_margin) / 3`.
    pub tick: Duration,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            safety_margin: Duration::from_secs(1),
            tick: Duration::from_millis(50),
        }
    }
}

/// The in-process [`Coordinator`]. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct LocalCoordinator {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    clock: Arc<dyn Clock>,
    config: LocalConfig,
    state: Mutex<State>,
    view: watch::Sender<RegionView>,
    driver: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    revision: u64,
    next_lease_id: i64,
    regions: BTreeMap<RegionId, Entry>,
}

#[derive(Default)]
struct Entry {
    lease: Option<LocalLease>,
    takeover: Option<Takeover>,
    /// (fencing token acknowledged, revision of the acknowledgement)
    acknowledged: Option<(Revision, Revision)>,
}

struct LocalLease {
    id: LeaseId,
    keepalive: bool,
    shared: Arc<LeaseShared>,
}

impl LocalCoordinator {
    /// A coordinator on `clock`. Its background task starts with the first
    /// lease or watch, so this may be called outside a Tokio runtime.
    pub fn new(clock: Arc<dyn Clock>, config: LocalConfig) -> Self {
        let view = RegionView {
            connected: true,
            ..RegionView::default()
        };
        let state = State {
            revision: 1,
            next_lease_id: 1,
            regions: BTreeMap::new(),
        };
        LocalCoordinator {
            inner: Arc::new(Inner {
                clock,
                config,
                state: Mutex::new(state),
                view: watch::channel(view).0,
                driver: Mutex::new(None),
            }),
        }
    }

    /// Re-reads the clock now: renews the leases that are kept alive, fences
    /// the ones overdue and expires the ones past their ttl.
    pub fn evaluate(&self) {
        self.inner.evaluate();
    }

    /// Simulates the region's process dying: its lease stops being renewed
    /// (it is not revoked), so it fences and then expires on its own.
    /// Returns whether the region held a lease.
    pub fn kill(&self, region: &RegionId) -> bool {
        let shared = {
            let mut state = self.inner.lock();
            let Some(lease) = state
                .regions
                .get_mut(region)
                .and_then(|entry| entry.lease.as_mut())
            else {
                return false;
            };
            lease.keepalive = false;
            lease.shared.clone()
        };
        shared.renewal_failed();
        true
    }

    fn ensure_driver(&self) {
        let mut driver = self
            .inner
            .driver
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if driver.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let tick = self.inner.config.tick.max(Duration::from_millis(1));
        *driver = Some(tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                inner.evaluate();
            }
        }));
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn evaluate(&self) {
        let now = self.clock.now();
        let mut state = self.lock();
        let mut expired = false;
        let mut revision = state.revision;
        for entry in state.regions.values_mut() {
            let Some(lease) = &entry.lease else { continue };
            if now >= lease.shared.expires_at() {
                lease.shared.mark_lost();
                entry.lease = None;
                revision += 1;
                expired = true;
                continue;
            }
            let renew_every = lease::renew_interval(lease.shared.ttl(), self.config.safety_margin);
            if lease.keepalive && now >= lease::add(lease.shared.renewed_at(), renew_every) {
                lease.shared.renewed(now);
            } else {
                lease.shared.refresh();
            }
        }
        state.revision = revision;
        if expired {
            self.publish(&state);
        }
    }

    fn publish(&self, state: &State) {
        let mut view = RegionView {
            connected: true,
            ..RegionView::default()
        };
        for (region, entry) in &state.regions {
            view.regions.insert(
                region.clone(),
                entry.status(region.clone(), Revision::new(state.revision)),
            );
        }
        view.stamp(Revision::new(state.revision));
        self.view.send_if_modified(|published| {
            let changed = *published != view;
            *published = view;
            changed
        });
    }

    fn stop_renewing(&self, region: &RegionId, id: LeaseId) {
        let shared = {
            let mut state = self.lock();
            match state
                .regions
                .get_mut(region)
                .and_then(|entry| entry.lease.as_mut())
            {
                Some(lease) if lease.id == id => {
                    lease.keepalive = false;
                    lease.shared.clone()
                }
                _ => return,
            }
        };
        shared.renewal_failed();
    }

    fn release(&self, region: &RegionId, id: LeaseId) {
        let mut state = self.lock();
        let Some(entry) = state.regions.get_mut(region) else {
            return;
        };
        if entry.lease.as_ref().is_some_and(|lease| lease.id == id) {
            if let Some(lease) = entry.lease.take() {
                lease.shared.mark_lost();
            }
            state.revision += 1;
            self.publish(&state);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .driver
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl Entry {
    fn status(&self, region: RegionId, revision: Revision) -> RegionStatus {
        RegionStatus {
            region,
            lease: self.lease.as_ref().map(|lease| LiveLease {
                lease_id: lease.id,
                ttl: lease.shared.ttl(),
            }),
            takeover: self.takeover.clone(),
            acknowledged: self.acknowledged.map(|(token, _)| token),
            revision,
        }
    }
}

/// What a local [`Lease`] handle uses to reach its coordinator.
pub(crate) struct LeaseControl {
    inner: Weak<Inner>,
    region: RegionId,
    id: LeaseId,
}

impl LeaseControl {
    pub fn stop_renewing(&self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.stop_renewing(&self.region, self.id);
        }
    }

    pub fn release(&self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.release(&self.region, self.id);
        }
    }
}

#[tonic::async_trait]
impl Coordinator for LocalCoordinator {
    async fn acquire_lease(&self, region: &RegionId, ttl: Duration) -> Result<Lease> {
        lease::check_margin(ttl, self.inner.config.safety_margin)?;
        self.ensure_driver();
        self.inner.evaluate();
        let now = self.inner.clock.now();
        let mut state = self.inner.lock();
        let id = LeaseId(state.next_lease_id);
        let entry = state.regions.entry(region.clone()).or_default();
        if let Some(held) = &entry.lease {
            return Err(Error::LeaseHeld {
                region: region.clone(),
                lease_id: held.id,
            });
        }
        if let Some(takeover) = &entry.takeover {
            return Err(Error::TakenOver {
                takeover: takeover.clone(),
            });
        }
        let shared = LeaseShared::new(
            self.inner.clock.clone(),
            ttl,
            self.inner.config.safety_margin,
            now,
        );
        entry.lease = Some(LocalLease {
            id,
            keepalive: true,
            shared: shared.clone(),
        });
        state.next_lease_id += 1;
        state.revision += 1;
        self.inner.publish(&state);
        tracing::info!(region = %region, lease_id = %id, ttl_ms = ttl.as_millis(), "lease acquired");
        let control = LeaseControl {
            inner: Arc::downgrade(&self.inner),
            region: region.clone(),
            id,
        };
        Ok(Lease::new(
            region.clone(),
            id,
            shared,
            Control::Local(control),
        ))
    }

    async fn region_status(&self, region: &RegionId) -> Result<RegionStatus> {
        self.inner.evaluate();
        let state = self.inner.lock();
        let revision = Revision::new(state.revision);
        Ok(match state.regions.get(region) {
            Some(entry) => entry.status(region.clone(), revision),
            None => RegionStatus::empty(region.clone(), revision),
        })
    }

    async fn watch_regions(&self) -> Result<watch::Receiver<RegionView>> {
        self.ensure_driver();
        self.inner.evaluate();
        Ok(self.inner.view.subscribe())
    }

    async fn record_takeover(
        &self,
        failed_region: &RegionId,
        successors: &[RegionId],
        expected_revision: Revision,
    ) -> Result<Takeover> {
        let (successor, also) = check_takeover_regions(failed_region, successors)?;
        self.inner.evaluate();
        let now = self.inner.clock.now();
        let mut state = self.inner.lock();
        let not_live = successors
            .iter()
            .find(|region| {
                state
                    .regions
                    .get(*region)
                    .is_none_or(|entry| entry.lease.is_none())
            })
            .cloned();
        let fencing_token = Revision::new(state.revision + 1);
        let entry = state.regions.entry(failed_region.clone()).or_default();
        if let Some(held) = &entry.lease {
            return Err(Error::RegionAlive {
                region: failed_region.clone(),
                lease_id: held.id,
            });
        }
        if let Some(takeover) = &entry.takeover {
            return Err(Error::TakenOver {
                takeover: takeover.clone(),
            });
        }
        if let Some(successor) = not_live {
            return Err(Error::SuccessorNotLive {
                failed_region: failed_region.clone(),
                successor,
            });
        }
        if let Some((_, acknowledged_at)) = entry.acknowledged
            && acknowledged_at > expected_revision
        {
            return Err(Error::StaleObservation {
                region: failed_region.clone(),
                expected_revision,
                acknowledged_at,
            });
        }
        let takeover = Takeover {
            failed_region: failed_region.clone(),
            successor: successor.clone(),
            also: also.to_vec(),
            fencing_token,
            recorded_at: now,
        };
        entry.takeover = Some(takeover.clone());
        state.revision = fencing_token.get();
        self.inner.publish(&state);
        tracing::info!(region = %failed_region, successor = %successor, also = ?also, fencing_token = %fencing_token, "takeover recorded");
        Ok(takeover)
    }

    async fn takeover_of(&self, region: &RegionId) -> Result<Option<Takeover>> {
        let state = self.inner.lock();
        Ok(state
            .regions
            .get(region)
            .and_then(|entry| entry.takeover.clone()))
    }

    async fn acknowledge_takeover(&self, region: &RegionId, fencing_token: Revision) -> Result<()> {
        let mut state = self.inner.lock();
        let revision = Revision::new(state.revision + 1);
        let entry = state.regions.entry(region.clone()).or_default();
        match &entry.takeover {
            Some(takeover) if takeover.fencing_token == fencing_token => {
                entry.takeover = None;
                entry.acknowledged = Some((fencing_token, revision));
                state.revision = revision.get();
                self.inner.publish(&state);
                tracing::info!(region = %region, fencing_token = %fencing_token, "takeover acknowledged");
                Ok(())
            }
            _ if entry
                .acknowledged
                .is_some_and(|(token, _)| token == fencing_token) =>
            {
                Ok(())
            }
            pending => Err(Error::NoSuchTakeover {
                region: region.clone(),
                fencing_token,
                pending: pending.as_ref().map(|takeover| takeover.fencing_token),
            }),
        }
    }
}

/// Checks a takeover's successor list and splits it into the primary and
/// the rest.
pub(crate) fn check_takeover_regions<'a>(
    failed_region: &RegionId,
    successors: &'a [RegionId],
) -> Result<(&'a RegionId, &'a [RegionId])> {
    let Some((successor, also)) = successors.split_first() else {
        return Err(Error::invalid(
            "successors",
            format!("a takeover of {failed_region} names no successor"),
        ));
    };
    if successors.contains(failed_region) {
        return Err(Error::invalid(
            "successor",
            format!("region {failed_region} cannot take over itself"),
        ));
    }
    for (index, region) in successors.iter().enumerate() {
        if successors[..index].contains(region) {
            return Err(Error::invalid(
                "successors",
                format!("region {region} is named twice"),
            ));
        }
    }
    Ok((successor, also))
}
