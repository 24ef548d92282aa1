//! How failed deliveries are retried.

use std::time::Duration;

use crate::{Error, Result};

/// Exponential backoff with jitter and an attempt budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay after the first failure (before jitter).
    pub initial: Duration,
    /// No delay grows beyond this.
    pub max: Duration,
    /// Attempts before an item is a dead letter.
    pub attempts_max: u32,
    /// How long a claimed item stays hidden from other claims: longer than
    /// one delivery attempt may take.
    pub claim_lease: Duration,
}

impl Default for RetryPolicy {
    /// 1 s, 2 s, 4 s … capped at 5 min, 8 attempts (about 9 minutes of
    /// trying before a dead letter).
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            attempts_max: 8,
            claim_lease: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    pub(crate) fn check(&self) -> Result<()> {
        if self.attempts_max == 0 {
            return Err(Error::Config("attempts_max must be at least 1".into()));
        }
        if self.initial.is_zero() || self.max < self.initial {
            return Err(Error::Config(
                "retry delays: initial must be positive and no more than max".into(),
            ));
        }
        if self.claim_lease.is_zero() {
            return Err(Error::Config("claim_lease must be positive".into()));
        }
        Ok(())
    }

    /// The delay after failed attempt number `attempt` (1-based):
    /// `initial · 2^(attempt-1)` capped at `max`, of which the upper half is
    /// random ("equal jitter"), so retries of many items spread out while
    /// each still waits at least half its step.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let shift = attempt.saturating_sub(1).min(32);
        let step = self
            .initial
            .checked_mul(1u32 << shift.min(31))
            .unwrap_or(self.max)
            .min(self.max);
        let half = step / 2;
        let half_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(random % half_ms.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_keep_half() {
        let policy = RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            attempts_max: 5,
            claim_lease: Duration::from_secs(30),
        };
        for random in [0, 1, 499, 500, u64::MAX] {
            for (attempt, step) in [
                (1, 1000),
                (2, 2000),
                (3, 4000),
                (4, 8000),
                (5, 10_000),
                (60, 10_000),
            ] {
                let delay = policy.delay(attempt, random).as_millis() as u64;
                assert!(
                    delay >= step / 2 && delay <= step,
                    "attempt {attempt} random {random}: {delay} ms outside [{}, {step}]",
                    step / 2
                );
            }
        }
        assert_ne!(
            policy.delay(3, 1),
            policy.delay(3, 1500),
            "jitter moves the delay"
        );
    }

    #[test]
    fn bad_policies_are_refused() {
        let ok = RetryPolicy::default();
        assert!(ok.check().is_ok());
        assert!(
            RetryPolicy {
                attempts_max: 0,
                ..ok
            }
            .check()
            .is_err()
        );
        assert!(
            RetryPolicy {
                max: Duration::ZERO,
                ..ok
            }
            .check()
            .is_err()
        );
    }
}
