//! Hybrid logical clock: wall-clock milliseconds plus a logical counter, so
//! events from different regions order consistently with causality even when
//! their wall clocks disagree a little.

use serde::{Deserialize, Serialize};

/// A hybrid logical timestamp packed as `millis << 16 | counter`, so that it
/// sorts and stores as one integer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct HlcTimestamp(pub u64);

const COUNTER_BITS: u32 = 16;
const COUNTER_MAX: u64 = (1 << COUNTER_BITS) - 1;

impl HlcTimestamp {
    pub fn new(millis: u64, counter: u16) -> Self {
        Self((millis << COUNTER_BITS) | u64::from(counter))
    }

    pub fn millis(self) -> u64 {
        self.0 >> COUNTER_BITS
    }

    pub fn counter(self) -> u16 {
        (self.0 & COUNTER_MAX) as u16
    }
}

impl std::fmt::Display for HlcTimestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.millis(), self.counter())
    }
}

/// The state of one node's hybrid logical clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hlc {
    last: HlcTimestamp,
}

impl Hlc {
    pub fn last(&self) -> HlcTimestamp {
        self.last
    }

    /// The timestamp for a local event at wall time `now_millis`. Always
    /// greater than every timestamp this clock issued or observed before.
    pub fn tick(&mut self, now_millis: u64) -> HlcTimestamp {
        self.last = Self::after(self.last, now_millis);
        self.last
    }

    /// Folds in a timestamp received from another node, so that the next
    /// local tick is ordered after it.
    pub fn observe(&mut self, remote: HlcTimestamp, now_millis: u64) -> HlcTimestamp {
        let floor = self.last.max(remote);
        self.last = Self::after(floor, now_millis);
        self.last
    }

    fn after(floor: HlcTimestamp, now_millis: u64) -> HlcTimestamp {
        if now_millis > floor.millis() {
            HlcTimestamp::new(now_millis, 0)
        } else if u64::from(floor.counter()) < COUNTER_MAX {
            HlcTimestamp(floor.0 + 1)
        } else {
            // The counter is exhausted within one millisecond: borrow the next
            // millisecond rather than wrap, so order is never violated.
            HlcTimestamp::new(floor.millis() + 1, 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ticks_strictly_increase(steps in proptest::collection::vec((0u64..5_000, any::<bool>(), 0u64..6_000), 1..200)) {
            let mut hlc = Hlc::default();
            let mut previous = HlcTimestamp::default();
            for (now, is_remote, remote_millis) in steps {
                let next = if is_remote {
                    let remote = HlcTimestamp::new(remote_millis, 3);
                    let t = hlc.observe(remote, now);
                    prop_assert!(t > remote, "observed timestamp must order after the remote one");
                    t
                } else {
                    hlc.tick(now)
                };
                prop_assert!(next > previous, "hlc went backwards: {previous} then {next}");
                prop_assert!(next.millis() >= now.min(next.millis()));
                previous = next;
            }
        }
    }

    #[test]
    fn counter_overflow_borrows_the_next_millisecond() {
        let mut hlc = Hlc {
            last: HlcTimestamp::new(10, u16::MAX),
        };
        assert_eq!(hlc.tick(10), HlcTimestamp::new(11, 0));
    }
}
