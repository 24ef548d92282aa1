//! Ownership epochs. An epoch encodes its owner (`k * EPOCH_STRIDE +
//! region_index`), so any node can tell who may write at an epoch, and two
//! regions can never mint the same one. Epochs only grow.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, RegionId, Result};

/// How many region indexes one epoch "round" has room for.
pub const EPOCH_STRIDE: u64 = 1024;

/// An ownership epoch.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Epoch(u64);

impl Epoch {
    /// The first epoch owned by the region with this index.
    pub fn initial(region_index: u16) -> Self {
        Self::at_round(0, region_index)
    }

    fn at_round(round: u64, region_index: u16) -> Self {
        assert!(
            u64::from(region_index) < EPOCH_STRIDE,
            "invariant: region index below EPOCH_STRIDE"
        );
        Self(round * EPOCH_STRIDE + u64::from(region_index))
    }

    /// An epoch read back from storage or the wire.
    pub fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    pub fn raw(self) -> u64 {
        self.0
    }

    /// The index of the region that owns this epoch.
    pub fn owner_index(self) -> u16 {
        (self.0 % EPOCH_STRIDE) as u16
    }

    pub fn round(self) -> u64 {
        self.0 / EPOCH_STRIDE
    }

    /// The smallest epoch greater than `self` that `region_index` owns: what a
    /// region mints when it takes a ticket over or accepts a handoff.
    pub fn next_for(self, region_index: u16) -> Self {
        let candidate = Self::at_round(self.round(), region_index);
        if candidate > self {
            candidate
        } else {
            Self::at_round(self.round() + 1, region_index)
        }
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Who owns a ticket: a region and the epoch it owns it at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ownership {
    pub owner_region: RegionId,
    pub epoch: Epoch,
}

/// What to do with an owner-scoped write stamped with some epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteVerdict {
    /// The write was made by the owner at the current epoch: apply it.
    Apply,
    /// The write was made at an older epoch: keep it as a Conflict, do not
    /// apply it. The higher epoch wins.
    Stale { current: Epoch },
    /// The write is from an epoch this node has not seen become current yet
    /// (an ownership change is still in flight): wait for it.
    Ahead { current: Epoch },
}

impl Ownership {
    /// Builds an ownership, checking that the epoch encodes its owner.
    pub fn new(owner_region: RegionId, region_index: u16, epoch: Epoch) -> Result<Self> {
        if epoch.owner_index() != region_index {
            return Err(Error::EpochOwnerMismatch {
                epoch,
                region_index,
            });
        }
        Ok(Self {
            owner_region,
            epoch,
        })
    }

    /// May `region` change owner-scoped fields now? Only the owner may, at
    /// the current epoch.
    pub fn authorize(&self, region: &RegionId) -> Result<Epoch> {
        if &self.owner_region == region {
            Ok(self.epoch)
        } else {
            Err(Error::NotOwner {
                owner: self.owner_region.clone(),
                epoch: self.epoch,
            })
        }
    }

    /// Classifies a replicated owner-scoped write stamped `write_epoch`.
    pub fn judge(&self, write_epoch: Epoch) -> WriteVerdict {
        use std::cmp::Ordering::*;
        match write_epoch.cmp(&self.epoch) {
            Equal => WriteVerdict::Apply,
            Less => WriteVerdict::Stale {
                current: self.epoch,
            },
            Greater => WriteVerdict::Ahead {
                current: self.epoch,
            },
        }
    }

    /// Moves ownership to `to` (with index `to_index`), minting the next
    /// epoch that region owns. Epochs only grow.
    pub fn transfer(&self, to: RegionId, to_index: u16) -> Self {
        Self {
            owner_region: to,
            epoch: self.epoch.next_for(to_index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn region(i: u16) -> RegionId {
        RegionId::new(format!("r{i}")).unwrap()
    }

    proptest! {
        #[test]
        fn next_for_is_greater_owned_and_minimal(raw in 0u64..10_000_000, idx in 0u16..1024) {
            let epoch = Epoch::from_raw(raw);
            let next = epoch.next_for(idx);
            prop_assert!(next > epoch);
            prop_assert_eq!(next.owner_index(), idx);
            prop_assert!(next.raw() - epoch.raw() <= EPOCH_STRIDE, "minted epoch skips a whole round");
        }

        /// Two regions never mint the same epoch, whatever history preceded.
        #[test]
        fn distinct_regions_never_share_an_epoch(raw_a in 0u64..1_000_000, raw_b in 0u64..1_000_000,
                                                 a in 0u16..1024, b in 0u16..1024) {
            prop_assume!(a != b);
            prop_assert_ne!(Epoch::from_raw(raw_a).next_for(a), Epoch::from_raw(raw_b).next_for(b));
        }

        /// A chain of transfers keeps epochs strictly growing and always
        /// encoding the current owner; only that owner is authorized, and
        /// every earlier epoch is judged stale.
        #[test]
        fn transfers_grow_and_fence(owners in proptest::collection::vec(0u16..8, 1..40)) {
            let mut ownership = Ownership::new(region(0), 0, Epoch::initial(0)).unwrap();
            let mut history = vec![ownership.epoch];
            for idx in owners {
                let next = ownership.transfer(region(idx), idx);
                prop_assert!(next.epoch > ownership.epoch);
                prop_assert_eq!(next.epoch.owner_index(), idx);
                ownership = next;
                history.push(ownership.epoch);
            }
            prop_assert_eq!(ownership.authorize(&ownership.owner_region.clone()), Ok(ownership.epoch));
            for i in 0..8u16 {
                if region(i) != ownership.owner_region {
                    let refused = matches!(ownership.authorize(&region(i)), Err(Error::NotOwner { .. }));
                    prop_assert!(refused);
                }
            }
            for old in &history[..history.len() - 1] {
                prop_assert_eq!(ownership.judge(*old), WriteVerdict::Stale { current: ownership.epoch });
            }
            prop_assert_eq!(ownership.judge(ownership.epoch), WriteVerdict::Apply);
        }
    }

    #[test]
    fn ownership_refuses_an_epoch_of_another_region() {
        let err = Ownership::new(region(1), 1, Epoch::initial(2)).unwrap_err();
        assert_eq!(
            err,
            Error::EpochOwnerMismatch {
                epoch: Epoch::initial(2),
                region_index: 1
            }
        );
    }
}
