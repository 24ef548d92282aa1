//! The lease handle a gateway holds, and the fencing arithmetic both
//! implementations share.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use jiff::{SignedDuration, Timestamp};
use meridian_core::{Clock, RegionId};
use tokio::sync::watch;

use crate::{error::Result, etcd, local, types::LeaseId};

/// Where a lease stands, as its holder must act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// The last renewal succeeded: owner-scoped writes are allowed until
    /// `fence_at`; the store will not expire the lease before `expires_at`.
    Held {
        fence_at: Timestamp,
        expires_at: Timestamp,
    },
    /// Renewals are failing (or were stopped) but the fence deadline has not
    /// passed: writes are still allowed until `fence_at`.
    Renewing {
        fence_at: Timestamp,
        expires_at: Timestamp,
    },
    /// No successful renewal for `ttl - safety_margin`: the holder must refuse
    /// owner-scoped writes. The lease may still be live in the store; a
    /// renewal that gets through returns the lease to `Held`.
    Fenced { expires_at: Timestamp },
    /// The store no longer has the lease (expired, revoked or released).
    /// Final: acquire a new lease, after reading the region's takeover.
    Lost,
}

impl LeaseState {
    /// Whether owner-scoped writes are allowed in this state.
    pub fn may_write(&self) -> bool {
        matches!(self, LeaseState::Held { .. } | LeaseState::Renewing { .. })
    }
}

/// A region's lease, renewed in the background while this handle lives.
///
/// Dropping the handle stops the renewals without revoking the lease (what a
/// crashed process does): the lease then expires after its ttl. Call
/// [`Lease::release`] to give it up at once.
///
/// Timestamps in [`LeaseState`] come from the coordinator's clock: the
/// injected [`Clock`] for the local coordinator, and monotonic time (anchored
/// to the wall clock once, at connect) for etcd, so a wall-clock step can
/// neither extend nor shorten a lease.
pub struct Lease {
    region: RegionId,
    id: LeaseId,
    shared: Arc<LeaseShared>,
    control: Control,
}

pub(crate) enum Control {
    Local(local::LeaseControl),
    Etcd(etcd::LeaseControl),
}

impl Lease {
    pub(crate) fn new(
        region: RegionId,
        id: LeaseId,
        shared: Arc<LeaseShared>,
        control: Control,
    ) -> Self {
        Lease {
            region,
            id,
            shared,
            control,
        }
    }

    pub fn region(&self) -> &RegionId {
        &self.region
    }

    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// The granted time-to-live (etcd may grant more than was asked).
    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// How long before the earliest possible expiry the holder fences itself.
    pub fn safety_margin(&self) -> Duration {
        self.shared.safety_margin
    }

    /// The state now, evaluated against the clock (not only the last value
    /// the background task published).
    pub fn state(&self) -> LeaseState {
        self.shared.refresh()
    }

    /// Whether owner-scoped writes are allowed right now. Check it before
    /// every owner-scoped write; it reads the clock, so it is exact even when
    /// the background task has not yet run.
    pub fn may_write(&self) -> bool {
        self.shared.refresh().may_write()
    }

    /// Every state change, as it is published.
    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.shared.state.subscribe()
    }

    /// Stops the renewals without revoking: the lease expires on its own, as
    /// it would for a crashed or partitioned region. The handle keeps
    /// reporting `Renewing`, `Fenced` and finally `Lost`.
    pub fn stop_renewing(&self) {
        match &self.control {
            Control::Local(control) => control.stop_renewing(),
            Control::Etcd(control) => control.stop_renewing(),
        }
    }

    /// Gives the lease up at once (revokes it), so the region shows as down
    /// without waiting for the ttl.
    pub async fn release(self) -> Result<()> {
        let outcome = match &self.control {
            Control::Local(control) => {
                control.release();
                Ok(())
            }
            Control::Etcd(control) => control.release(self.id).await,
        };
        self.shared.mark_lost();
        outcome
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        match &self.control {
            Control::Local(control) => control.stop_renewing(),
            // Dropping the control's stop sender tells the task.
            Control::Etcd(_) => {}
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("region", &self.region)
            .field("id", &self.id)
            .field("ttl", &self.shared.ttl)
            .field("state", &self.shared.refresh())
            .finish()
    }
}

/// The fencing arithmetic of one lease, shared by its handle and whatever
/// renews it.
pub(crate) struct LeaseShared {
    clock: Arc<dyn Clock>,
    ttl: Duration,
    safety_margin: Duration,
    book: Mutex<Book>,
    state: watch::Sender<LeaseState>,
}

struct Book {
    /// When the last successful renewal (or the grant) was *sent*: the store
    /// received it later, so its expiry is no earlier than this plus ttl.
    renewed_at: Timestamp,
    failing: bool,
    lost: bool,
}

impl LeaseShared {
    pub fn new(
        clock: Arc<dyn Clock>,
        ttl: Duration,
        safety_margin: Duration,
        renewed_at: Timestamp,
    ) -> Arc<Self> {
        let book = Book {
            renewed_at,
            failing: false,
            lost: false,
        };
        let initial = state_of(&book, ttl, safety_margin, clock.now());
        Arc::new(LeaseShared {
            clock,
            ttl,
            safety_margin,
            book: Mutex::new(book),
            state: watch::channel(initial).0,
        })
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn expires_at(&self) -> Timestamp {
        add(self.book().renewed_at, self.ttl)
    }

    pub fn renewed_at(&self) -> Timestamp {
        self.book().renewed_at
    }

    pub fn is_lost(&self) -> bool {
        self.book().lost
    }

    /// How long until the fence deadline; `None` once fenced or lost.
    pub fn until_fence(&self) -> Option<Duration> {
        let book = self.book();
        if book.lost {
            return None;
        }
        let fence_at = fence_at(book.renewed_at, self.ttl, self.safety_margin);
        let left = duration_between(self.clock.now(), fence_at);
        (!left.is_zero()).then_some(left)
    }

    /// How long until the estimated expiry.
    pub fn until_expiry(&self) -> Duration {
        duration_between(self.clock.now(), self.expires_at())
    }

    /// A renewal sent at `sent_at` succeeded.
    pub fn renewed(&self, sent_at: Timestamp) {
        {
            let mut book = self.book();
            if book.lost {
                return;
            }
            book.renewed_at = book.renewed_at.max(sent_at);
            book.failing = false;
        }
        self.refresh();
    }

    /// A renewal failed or renewals stopped.
    pub fn renewal_failed(&self) {
        self.book().failing = true;
        self.refresh();
    }

    pub fn mark_lost(&self) {
        self.book().lost = true;
        self.refresh();
    }

    /// Whether anyone still listens to the state.
    pub fn has_subscribers(&self) -> bool {
        !self.state.is_closed()
    }

    /// Evaluates the state now and publishes it if it changed.
    pub fn refresh(&self) -> LeaseState {
        let current = {
            let book = self.book();
            state_of(&book, self.ttl, self.safety_margin, self.clock.now())
        };
        self.state.send_if_modified(|published| {
            let changed = *published != current;
            *published = current;
            changed
        });
        current
    }
}

fn state_of(book: &Book, ttl: Duration, safety_margin: Duration, now: Timestamp) -> LeaseState {
    let fence_at = fence_at(book.renewed_at, ttl, safety_margin);
    let expires_at = add(book.renewed_at, ttl);
    if book.lost {
        LeaseState::Lost
    } else if now >= fence_at {
        LeaseState::Fenced { expires_at }
    } else if book.failing {
        LeaseState::Renewing {
            fence_at,
            expires_at,
        }
    } else {
        LeaseState::Held {
            fence_at,
            expires_at,
        }
    }
}

fn fence_at(renewed_at: Timestamp, ttl: Duration, safety_margin: Duration) -> Timestamp {
    add(renewed_at, ttl.saturating_sub(safety_margin))
}

/// How often a lease is renewed: three tries fit before the fence deadline,
/// so one lost or slow renewal never fences a healthy holder.
pub(crate) fn renew_interval(ttl: Duration, safety_margin: Duration) -> Duration {
    ttl.saturating_sub(safety_margin) / 3
}

/// Checks that a safety margin leaves room to renew.
pub(crate) fn check_margin(ttl: Duration, safety_margin: Duration) -> Result<()> {
    if ttl.is_zero() {
        return Err(crate::Error::invalid("ttl", "must be greater than zero"));
    }
    if safety_margin >= ttl {
        return Err(crate::Error::invalid(
            "safety_margin",
            format!(
                "{} ms is not shorter than the lease ttl of {} ms; the holder would be fenced from the start",
                safety_margin.as_millis(),
                ttl.as_millis()
            ),
        ));
    }
    Ok(())
}

pub(crate) fn add(at: Timestamp, by: Duration) -> Timestamp {
    let by = SignedDuration::try_from(by).unwrap_or(SignedDuration::MAX);
    at.saturating_add(by).unwrap_or(Timestamp::MAX)
}

/// `to - from`, or zero when `to` is not later.
pub(crate) fn duration_between(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use meridian_core::ManualClock;

    use super::*;

    #[test]
    fn fences_at_ttl_minus_margin_and_unfences_on_renewal() {
        let start = Timestamp::from_second(1_000).unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let shared = LeaseShared::new(
            clock.clone(),
            Duration::from_secs(10),
            Duration::from_secs(2),
            start,
        );
        assert!(matches!(shared.refresh(), LeaseState::Held { .. }));
        clock.advance(SignedDuration::from_millis(7_999));
        assert!(shared.refresh().may_write());
        shared.renewal_failed();
        assert!(matches!(shared.refresh(), LeaseState::Renewing { .. }));
        clock.advance(SignedDuration::from_millis(1));
        assert_eq!(
            shared.refresh(),
            LeaseState::Fenced {
                expires_at: add(start, Duration::from_secs(10))
            }
        );
        // A renewal sent before the fence that arrives late still counts from its send time.
        shared.renewed(add(start, Duration::from_secs(1)));
        assert!(matches!(shared.refresh(), LeaseState::Held { .. }));
        shared.mark_lost();
        shared.renewed(clock.now());
        assert_eq!(shared.refresh(), LeaseState::Lost);
    }

    #[test]
    fn margin_must_leave_room() {
        assert!(check_margin(Duration::from_secs(1), Duration::from_secs(1)).is_err());
        assert!(check_margin(Duration::ZERO, Duration::ZERO).is_err());
        assert!(check_margin(Duration::from_secs(2), Duration::from_millis(500)).is_ok());
        assert_eq!(
            renew_interval(Duration::from_secs(2), Duration::from_millis(500)),
            Duration::from_millis(500)
        );
    }
}
