//! Volume-spike detection: a gateway's ticket intake per (tier, skill),
//! counted in fixed buckets of time, against a rolling baseline.
//!
//! Each key keeps an exponentially weighted mean and variance of its counts
//! per bucket (West/Finch's incremental form). A closed bucket *raises* an
//! alert when its count is at least `min_count` and above
//! `mean + threshold_sigmas · σ`, and an open alert *clears* on the first
//! bucket at or below `mean + clear_sigmas · σ` (hysteresis: a rate hovering
//! at the threshold does not flap). σ is never taken below `√mean` (the
//! noise of a Poisson count) nor below one ticket, so perfectly steady
//! traffic, whose measured deviation falls to zero, never alerts on one
//! extra ticket.
//!
//! Decisions, and why:
//! - Buckets are aligned to the Unix epoch, so every replica of a region
//!   buckets the same tickets the same way and the alert's id (derived
//!   from its bucket) is the same everywhere.
//! - The first bucket the detector sees is partial (it started mid-way) and
//!   is discarded; a key needs `warmup_buckets` full buckets of history
//!   before it may alert. A cold start therefore never alerts.
//! - A key first seen after the detector has history had zero intake in
//!   every bucket before: its baseline starts at zero, so a burst of a
//!   never-seen tier or skill alerts once the detector is warm.
//! - While an alert is open the baseline is frozen: a surge must not teach
//!   itself to be normal and clear its own alert.
//!
//! Pure: time arrives as arguments, and the same observations and
//! `advance` calls always give the same changes in the same order.

use std::collections::BTreeMap;
use std::fmt;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{Error, RegionId, Result, Skill, Ticket, TicketId, Tier};

/// The shortest bucket allowed.
pub const BUCKET_MIN: SignedDuration = SignedDuration::from_secs(1);
/// The longest bucket allowed: one day.
pub const BUCKET_MAX: SignedDuration = SignedDuration::from_hours(24);
/// The most keys one detector tracks; a key beyond it is not counted. Keys
/// come from tickets' tiers and skills, which the rules bound in practice;
/// this only caps the memory a stream of odd tickets could take.
pub const KEYS_MAX: usize = 4096;
/// A key whose mean and variance are both below this, with no open alert,
/// is forgotten: it is indistinguishable from a key never seen.
const FORGET_BELOW: f64 = 1e-6;

/// A count per bucket to a thousandth of a ticket. Fixed-point so that an
/// event carrying it compares equal after a round trip through JSON; it is
/// written as a plain number (`12.345`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate(u64);

impl Rate {
    /// The largest rate: thousandths that an `f64` still holds exactly.
    const THOUSANDTHS_MAX: u64 = 1 << 53;

    /// Rounds to the nearest thousandth; negative or not-a-number is zero.
    pub fn from_f64(value: f64) -> Rate {
        let thousandths = (value * 1000.0).round();
        if thousandths.is_nan() || thousandths <= 0.0 {
            Rate(0)
        } else if thousandths >= Self::THOUSANDTHS_MAX as f64 {
            Rate(Self::THOUSANDTHS_MAX)
        } else {
            Rate(thousandths as u64)
        }
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    pub fn thousandths(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let value = f64::deserialize(d)?;
        if !value.is_finite() || value < 0.0 {
            return Err(serde::de::Error::custom(format!(
                "a rate is a number of tickets, 0 or more, not {value}"
            )));
        }
        Ok(Rate::from_f64(value))
    }
}

/// What intake is counted by: a tier and one skill of the ticket. A ticket
/// with several skills counts once under each; one with none counts under
/// `skill: None`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SpikeKey {
    pub tier: Tier,
    pub skill: Option<Skill>,
}

impl SpikeKey {
    /// The keys a new ticket counts under.
    pub fn for_ticket(ticket: &Ticket) -> Vec<SpikeKey> {
        if ticket.skills.is_empty() {
            return vec![SpikeKey {
                tier: ticket.tier.clone(),
                skill: None,
            }];
        }
        ticket
            .skills
            .iter()
            .map(|s| SpikeKey {
                tier: ticket.tier.clone(),
                skill: Some(s.clone()),
            })
            .collect()
    }
}

impl fmt::Display for SpikeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.skill {
            Some(skill) => write!(f, "{}/{}", self.tier, skill),
            None => write!(f, "{}/-", self.tier),
        }
    }
}

/// The detector's settings (the rules file's `[spike]` table).
#[derive(Debug, Clone, PartialEq)]
pub struct SpikeConfig {
    /// The length of one bucket.
    pub bucket: SignedDuration,
    /// Weight of the newest bucket in the baseline, in (0, 1].
    pub alpha: f64,
    /// How many deviations above the mean a bucket must be to raise.
    pub threshold_sigmas: f64,
    /// At or below mean + this many deviations, an open alert clears.
    pub clear_sigmas: f64,
    /// Fewest tickets in a bucket that may raise, whatever the baseline.
    pub min_count: u32,
    /// Full buckets of history a key needs before it may raise.
    pub warmup_buckets: u32,
}

impl Default for SpikeConfig {
    fn default() -> Self {
        Self {
            bucket: SignedDuration::from_mins(1),
            alpha: 0.1,
            threshold_sigmas: 4.0,
            clear_sigmas: 2.0,
            min_count: 10,
            warmup_buckets: 10,
        }
    }
}

impl SpikeConfig {
    /// Checks every setting, naming the first that is out of range.
    pub fn check(&self) -> Result<()> {
        if self.bucket < BUCKET_MIN || self.bucket > BUCKET_MAX || self.bucket.subsec_nanos() != 0 {
            return Err(Error::invalid(
                "spike.bucket",
                "must be whole seconds from 1s to 24h",
            ));
        }
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(Error::invalid(
                "spike.alpha",
                format!("is {}; use a number above 0 and at most 1", self.alpha),
            ));
        }
        if !(self.threshold_sigmas.is_finite() && self.threshold_sigmas > 0.0) {
            return Err(Error::invalid(
                "spike.threshold_sigmas",
                format!("is {}; use a positive number", self.threshold_sigmas),
            ));
        }
        if !(self.clear_sigmas.is_finite()
            && self.clear_sigmas >= 0.0
            && self.clear_sigmas < self.threshold_sigmas)
        {
            return Err(Error::invalid(
                "spike.clear_sigmas",
                format!(
                    "is {}; use a number from 0 up to (not including) threshold_sigmas",
                    self.clear_sigmas
                ),
            ));
        }
        if self.min_count == 0 {
            return Err(Error::invalid(
                "spike.min_count",
                "is 0; use 1 or more tickets",
            ));
        }
        if self.warmup_buckets == 0 {
            return Err(Error::invalid(
                "spike.warmup_buckets",
                "is 0; use 1 or more, so a cold start cannot alert",
            ));
        }
        Ok(())
    }
}

/// An intake spike of one region, as raised or cleared: the payload of the
/// `intake_spike` and `intake_spike_cleared` events and of their webhooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeSpike {
    pub region: RegionId,
    pub tier: Tier,
    pub skill: Option<Skill>,
    /// The bucket that raised the alert (or, cleared, the one that ended it).
    pub bucket_start: Timestamp,
    pub bucket_end: Timestamp,
    /// Tickets created in that bucket: the rate, per bucket.
    pub count: u32,
    /// The baseline before that bucket: mean and deviation per bucket.
    pub baseline: Rate,
    pub deviation: Rate,
    /// The line `count` crossed: above it to raise, at or below it to clear.
    pub threshold: Rate,
    /// Start of the bucket that raised the alert.
    pub since: Timestamp,
    /// The most tickets in one bucket while the alert was open.
    pub peak: u32,
    /// Who owned the region's queue when the event was recorded (the
    /// rules' shift `queue_owner`); filled in by the gateway.
    pub queue_owner: Option<String>,
}

impl IntakeSpike {
    pub fn key(&self) -> SpikeKey {
        SpikeKey {
            tier: self.tier.clone(),
            skill: self.skill.clone(),
        }
    }

    /// The id (the envelope's `ticket_id`) of the event that raises this
    /// alert: the same for the same region, key and bucket wherever it is
    /// computed, so a second replica's copy is a duplicate, not a second
    /// alert.
    pub fn raised_id(&self) -> TicketId {
        self.id(b"intake_spike")
    }

    /// The id of the event that clears it.
    pub fn cleared_id(&self) -> TicketId {
        self.id(b"intake_spike_cleared")
    }

    /// A UUIDv7 at the bucket's end whose random bits are FNV-1a over the
    /// event's name, the region and the key (stable across builds and
    /// machines, as [`crate::ShiftSummary::id`]).
    fn id(&self, tag: &[u8]) -> TicketId {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let skill = self.skill.as_ref().map_or("", Skill::as_str);
        for part in [
            tag,
            self.region.as_str().as_bytes(),
            self.tier.as_str().as_bytes(),
            skill.as_bytes(),
        ] {
            // A separator that no slug contains keeps ("ab", "c") and ("a", "bc") apart.
            for byte in part.iter().chain(b"\0") {
                hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        let mut random = [0u8; 10];
        random[..8].copy_from_slice(&hash.to_be_bytes());
        TicketId::new_v7(self.bucket_end, random)
    }
}

/// What closing a bucket changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpikeChange {
    Raised(IntakeSpike),
    Cleared(IntakeSpike),
}

/// One key's baseline.
#[derive(Debug, Clone)]
struct Baseline {
    mean: f64,
    var: f64,
    /// Full buckets in its history (the warm-up counter).
    seen: u64,
    /// Open alert: (start of the bucket that raised it, peak count).
    alert: Option<(Timestamp, u32)>,
}

impl Baseline {
    fn sigma(&self) -> f64 {
        self.var.sqrt().max(self.mean.sqrt()).max(1.0)
    }

    fn fold(&mut self, x: f64, alpha: f64) {
        if self.seen == 0 {
            // Nothing before: the first bucket is the baseline.
            self.mean = x;
            self.var = 0.0;
            return;
        }
        let diff = x - self.mean;
        self.mean += alpha * diff;
        self.var = (1.0 - alpha) * (self.var + alpha * diff * diff);
    }
}

/// Counts intake per key and bucket and decides raises and clears.
#[derive(Debug, Clone)]
pub struct SpikeDetector {
    region: RegionId,
    config: SpikeConfig,
    bucket_ms: i64,
    /// Index (`start / bucket`) of the open bucket.
    open: i64,
    /// The open bucket began before the detector did.
    open_partial: bool,
    /// Counts of the open bucket and of any later ones seen early.
    counts: BTreeMap<i64, BTreeMap<SpikeKey, u32>>,
    keys: BTreeMap<SpikeKey, Baseline>,
    /// Full buckets closed since the detector started.
    closed: u64,
}

impl SpikeDetector {
    /// A detector for `region` starting at `now`; the bucket `now` falls in
    /// is partial and is not counted.
    pub fn new(region: RegionId, config: SpikeConfig, now: Timestamp) -> Result<Self> {
        config.check()?;
        let bucket_ms = config.bucket.as_millis() as i64;
        let open = now.as_millisecond().div_euclid(bucket_ms);
        Ok(Self {
            region,
            config,
            bucket_ms,
            open,
            open_partial: true,
            counts: BTreeMap::new(),
            keys: BTreeMap::new(),
            closed: 0,
        })
    }

    pub fn config(&self) -> &SpikeConfig {
        &self.config
    }

    /// Takes new settings. With the same bucket length the baselines and
    /// open alerts carry over and `true` is returned; another bucket length
    /// makes the old baselines meaningless, so nothing is changed and
    /// `false` tells the caller to start a new detector.
    pub fn reconfigure(&mut self, config: SpikeConfig) -> Result<bool> {
        config.check()?;
        if config.bucket != self.config.bucket {
            return Ok(false);
        }
        self.config = config;
        Ok(true)
    }

    /// The keys with an open alert.
    pub fn alerting(&self) -> impl Iterator<Item = &SpikeKey> {
        self.keys
            .iter()
            .filter(|(_, b)| b.alert.is_some())
            .map(|(k, _)| k)
    }

    /// Counts one new ticket created at `at`. A ticket from a bucket that
    /// is already closed (it committed late) counts in the open one.
    pub fn observe(&mut self, at: Timestamp, ticket: &Ticket) {
        let bucket = at
            .as_millisecond()
            .div_euclid(self.bucket_ms)
            .max(self.open);
        for key in SpikeKey::for_ticket(ticket) {
            if !self.keys.contains_key(&key) && self.keys.len() >= KEYS_MAX {
                continue;
            }
            let count = self
                .counts
                .entry(bucket)
                .or_default()
                .entry(key)
                .or_insert(0);
            *count = count.saturating_add(1);
        }
    }

    /// Closes every bucket that ended at or before `now`, in order, and
    /// returns the alerts raised and cleared.
    pub fn advance(&mut self, now: Timestamp) -> Vec<SpikeChange> {
        let now_bucket = now.as_millisecond().div_euclid(self.bucket_ms);
        let mut changes = Vec::new();
        while self.open < now_bucket {
            if self.keys.is_empty() && !self.open_partial {
                // Nothing remembered: empty buckets change nothing but the
                // count of them, so skip to the next one holding tickets.
                let next = self
                    .counts
                    .keys()
                    .next()
                    .copied()
                    .unwrap_or(now_bucket)
                    .min(now_bucket);
                if next > self.open {
                    self.closed += (next - self.open) as u64;
                    self.open = next;
                    continue;
                }
            }
            self.close(&mut changes);
            self.open += 1;
        }
        changes
    }

    fn close(&mut self, changes: &mut Vec<SpikeChange>) {
        let counts = self.counts.remove(&self.open).unwrap_or_default();
        if std::mem::replace(&mut self.open_partial, false) {
            return;
        }
        let start = self.at(self.open);
        let end = self.at(self.open + 1);
        for key in counts.keys() {
            if !self.keys.contains_key(key) && self.keys.len() < KEYS_MAX {
                let baseline = Baseline {
                    mean: 0.0,
                    var: 0.0,
                    seen: self.closed,
                    alert: None,
                };
                self.keys.insert(key.clone(), baseline);
            }
        }
        let config = &self.config;
        for (key, baseline) in &mut self.keys {
            let count = counts.get(key).copied().unwrap_or(0);
            let x = f64::from(count);
            let sigma = baseline.sigma();
            let report = |threshold: f64, since: Timestamp, peak: u32| IntakeSpike {
                region: self.region.clone(),
                tier: key.tier.clone(),
                skill: key.skill.clone(),
                bucket_start: start,
                bucket_end: end,
                count,
                baseline: Rate::from_f64(baseline.mean),
                deviation: Rate::from_f64(sigma),
                threshold: Rate::from_f64(threshold),
                since,
                peak,
                queue_owner: None,
            };
            match baseline.alert {
                None => {
                    let line = baseline.mean + config.threshold_sigmas * sigma;
                    let warm = baseline.seen >= u64::from(config.warmup_buckets);
                    if warm && count >= config.min_count && x > line {
                        changes.push(SpikeChange::Raised(report(line, start, count)));
                        baseline.alert = Some((start, count));
                    } else {
                        baseline.fold(x, config.alpha);
                    }
                }
                Some((since, peak)) => {
                    let line = baseline.mean + config.clear_sigmas * sigma;
                    if x <= line {
                        changes.push(SpikeChange::Cleared(report(line, since, peak)));
                        baseline.alert = None;
                        baseline.fold(x, config.alpha);
                    } else {
                        baseline.alert = Some((since, peak.max(count)));
                    }
                }
            }
            baseline.seen += 1;
        }
        self.keys
            .retain(|_, b| b.alert.is_some() || b.mean >= FORGET_BELOW || b.var >= FORGET_BELOW);
        self.closed += 1;
    }

    fn at(&self, bucket: i64) -> Timestamp {
        Timestamp::from_millisecond(bucket.saturating_mul(self.bucket_ms)).unwrap_or(Timestamp::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::{collection::SizeRange, prelude::*};

    use super::*;
    use crate::{Epoch, NewTicket, Ownership, Priority};

    const T0: i64 = 1_780_000_020; // seconds; a whole minute

    fn region() -> RegionId {
        RegionId::new("us-east").unwrap()
    }

    fn ticket(tier: &str, skills: &[&str]) -> Ticket {
        let new = NewTicket {
            subject: "s".into(),
            body: String::new(),
            customer: "c".into(),
            tier: Tier::new(tier).unwrap(),
            skills: skills
                .iter()
                .map(|s| Skill::new(*s).unwrap())
                .collect::<BTreeSet<_>>(),
            language: "en".into(),
            residency: BTreeSet::new(),
            priority: Priority::Normal,
        };
        let owner = Ownership {
            owner_region: region(),
            epoch: Epoch::initial(0),
        };
        Ticket::create(TicketId::new_v7(minute(0), [0; 10]), new, owner, minute(0)).unwrap()
    }

    fn minute(m: i64) -> Timestamp {
        Timestamp::from_second(T0 + m * 60).unwrap()
    }

    /// Feeds `counts[i]` tickets into minute `i + 1` (minute 0 is the
    /// partial one the detector starts in) and returns every change.
    fn run(config: SpikeConfig, counts: &[u32]) -> Vec<SpikeChange> {
        let mut detector =
            SpikeDetector::new(region(), config, minute(0) + SignedDuration::from_secs(30))
                .unwrap();
        let t = ticket("premium", &["billing"]);
        let mut changes = Vec::new();
        for (i, &n) in counts.iter().enumerate() {
            let m = i as i64 + 1;
            for k in 0..n {
                detector.observe(minute(m) + SignedDuration::from_millis(i64::from(k)), &t);
            }
            changes.extend(detector.advance(minute(m + 1)));
        }
        changes
    }

    fn kinds(changes: &[SpikeChange]) -> Vec<(&'static str, u32)> {
        changes
            .iter()
            .map(|c| match c {
                SpikeChange::Raised(s) => ("raised", s.count),
                SpikeChange::Cleared(s) => ("cleared", s.count),
            })
            .collect()
    }

    #[test]
    fn a_burst_raises_once_and_clears_when_intake_falls_back() {
        let mut counts = vec![3, 4, 2, 3, 5, 3, 2, 4, 3, 3, 4, 3];
        counts.extend([40, 55, 3, 4, 3]);
        let changes = run(SpikeConfig::default(), &counts);
        assert_eq!(kinds(&changes), vec![("raised", 40), ("cleared", 3)]);
        let (SpikeChange::Raised(raised), SpikeChange::Cleared(cleared)) =
            (&changes[0], &changes[1])
        else {
            panic!("{changes:?}");
        };
        assert_eq!(raised.bucket_start, minute(13));
        assert_eq!(raised.bucket_end, minute(14));
        assert_eq!(raised.since, minute(13));
        assert_eq!(raised.skill.as_ref().map(Skill::as_str), Some("billing"));
        assert!(
            raised.baseline.as_f64() > 2.5 && raised.baseline.as_f64() < 4.0,
            "{raised:?}"
        );
        assert!(raised.threshold.as_f64() < 40.0, "{raised:?}");
        // The baseline stayed frozen through the surge; the clear names it.
        assert_eq!(cleared.since, minute(13));
        assert_eq!(cleared.peak, 55);
        assert_eq!(cleared.baseline, raised.baseline);
        assert_eq!(cleared.bucket_start, minute(15));
        assert_ne!(raised.raised_id(), cleared.cleared_id());
    }

    #[test]
    fn a_cold_start_does_not_alert() {
        // The partial first minute and the warm-up minutes carry the burst.
        let mut detector = SpikeDetector::new(
            region(),
            SpikeConfig::default(),
            minute(0) + SignedDuration::from_secs(59),
        )
        .unwrap();
        let t = ticket("premium", &[]);
        for _ in 0..500 {
            detector.observe(minute(0) + SignedDuration::from_secs(59), &t);
        }
        assert!(detector.advance(minute(1)).is_empty());
        // A burst inside the warm-up becomes part of the baseline instead.
        let counts = [3, 2, 3, 400, 3, 4, 3, 2, 3, 3, 3, 3, 3];
        assert!(run(SpikeConfig::default(), &counts).is_empty());
    }

    #[test]
    fn min_count_holds_back_small_numbers() {
        let mut counts = vec![0; 20];
        counts.push(9);
        assert!(
            run(SpikeConfig::default(), &counts).is_empty(),
            "9 tickets is below min_count 10"
        );
        counts.push(0);
        counts.push(20);
        assert_eq!(
            kinds(&run(SpikeConfig::default(), &counts)),
            vec![("raised", 20)]
        );
    }

    #[test]
    fn a_new_key_after_warm_up_starts_from_zero() {
        let mut detector = SpikeDetector::new(region(), SpikeConfig::default(), minute(0)).unwrap();
        let steady = ticket("premium", &["billing"]);
        for m in 0..15 {
            for _ in 0..3 {
                detector.observe(minute(m), &steady);
            }
            assert!(detector.advance(minute(m + 1)).is_empty());
        }
        let novel = ticket("enterprise", &["networking", "general"]);
        for _ in 0..20 {
            detector.observe(minute(15), &novel);
        }
        let changes = detector.advance(minute(16));
        let keys: Vec<String> = changes
            .iter()
            .map(|c| match c {
                SpikeChange::Raised(s) => s.key().to_string(),
                SpikeChange::Cleared(s) => format!("cleared {}", s.key()),
            })
            .collect();
        assert_eq!(keys, ["enterprise/general", "enterprise/networking"]);
        assert_eq!(detector.alerting().count(), 2);
    }

    #[test]
    fn long_idle_gaps_are_cheap_and_forget_nothing_that_matters() {
        let mut detector = SpikeDetector::new(region(), SpikeConfig::default(), minute(0)).unwrap();
        let t = ticket("premium", &[]);
        for m in 0..12 {
            detector.observe(minute(m), &t);
            detector.advance(minute(m + 1));
        }
        // Ten years later: the old baseline decayed to nothing.
        assert!(detector.advance(minute(10 * 366 * 24 * 60)).is_empty());
        assert!(detector.keys.is_empty());
    }

    #[test]
    fn late_and_early_tickets_land_in_the_open_and_their_own_bucket() {
        let mut detector = SpikeDetector::new(region(), SpikeConfig::default(), minute(5)).unwrap();
        let t = ticket("premium", &[]);
        detector.observe(minute(1), &t); // late: counts in the open bucket (5)
        detector.observe(minute(7), &t); // early: waits for bucket 7
        assert_eq!(
            detector.counts.keys().copied().collect::<Vec<_>>(),
            [T0 / 60 + 5, T0 / 60 + 7]
        );
        detector.advance(minute(8));
        assert!(detector.counts.is_empty());
    }

    #[test]
    fn reconfigure_keeps_baselines_unless_the_bucket_changes() {
        let mut detector = SpikeDetector::new(region(), SpikeConfig::default(), minute(0)).unwrap();
        let stricter = SpikeConfig {
            threshold_sigmas: 6.0,
            ..SpikeConfig::default()
        };
        assert!(detector.reconfigure(stricter.clone()).unwrap());
        assert_eq!(detector.config(), &stricter);
        let hourly = SpikeConfig {
            bucket: SignedDuration::from_hours(1),
            ..SpikeConfig::default()
        };
        assert!(!detector.reconfigure(hourly).unwrap());
        let bad = SpikeConfig {
            clear_sigmas: 6.0,
            ..stricter
        };
        assert_eq!(
            detector
                .reconfigure(bad)
                .unwrap_err()
                .to_string()
                .split(':')
                .next(),
            Some("spike.clear_sigmas")
        );
    }

    #[test]
    fn config_check_names_the_field() {
        let field = |c: SpikeConfig| match c.check() {
            Err(Error::InvalidField { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let d = SpikeConfig::default;
        assert_eq!(
            field(SpikeConfig {
                bucket: SignedDuration::from_millis(1500),
                ..d()
            }),
            "spike.bucket"
        );
        assert_eq!(
            field(SpikeConfig {
                bucket: SignedDuration::from_hours(25),
                ..d()
            }),
            "spike.bucket"
        );
        assert_eq!(field(SpikeConfig { alpha: 0.0, ..d() }), "spike.alpha");
        assert_eq!(
            field(SpikeConfig {
                alpha: f64::NAN,
                ..d()
            }),
            "spike.alpha"
        );
        assert_eq!(
            field(SpikeConfig {
                threshold_sigmas: -1.0,
                ..d()
            }),
            "spike.threshold_sigmas"
        );
        assert_eq!(
            field(SpikeConfig {
                clear_sigmas: 4.0,
                ..d()
            }),
            "spike.clear_sigmas"
        );
        assert_eq!(
            field(SpikeConfig {
                min_count: 0,
                ..d()
            }),
            "spike.min_count"
        );
        assert_eq!(
            field(SpikeConfig {
                warmup_buckets: 0,
                ..d()
            }),
            "spike.warmup_buckets"
        );
        assert!(d().check().is_ok());
    }

    #[test]
    fn rates_round_trip_through_json() {
        for value in [0.0, 0.001, 2.71, 12.345, 1e9] {
            let rate = Rate::from_f64(value);
            let json = serde_json::to_string(&rate).unwrap();
            assert_eq!(serde_json::from_str::<Rate>(&json).unwrap(), rate, "{json}");
        }
        assert_eq!(Rate::from_f64(-2.0), Rate(0));
        assert_eq!(Rate::from_f64(f64::NAN), Rate(0));
        assert!(serde_json::from_str::<Rate>("-1").is_err());
    }

    #[test]
    fn ids_are_stable_and_tell_keys_and_kinds_apart() {
        let changes = run(
            SpikeConfig::default(),
            &[3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 50],
        );
        let SpikeChange::Raised(spike) = &changes[0] else {
            panic!("{changes:?}")
        };
        assert_eq!(spike.raised_id(), spike.clone().raised_id());
        assert_eq!(spike.raised_id().as_uuid().get_version_num(), 7);
        let other = IntakeSpike {
            skill: None,
            ..spike.clone()
        };
        assert_ne!(other.raised_id(), spike.raised_id());
        assert_ne!(spike.cleared_id(), spike.raised_id());
    }

    /// Steady counts around `base`, within `noise` of it.
    fn steady(base: u32, noise: u32, len: impl Into<SizeRange>) -> impl Strategy<Value = Vec<u32>> {
        proptest::collection::vec(0..=2 * noise, len)
            .prop_map(move |v| v.into_iter().map(|d| base - noise + d).collect())
    }

    fn isqrt(n: u32) -> u32 {
        (f64::from(n).sqrt()) as u32
    }

    proptest! {
        /// Counts within √base of the base never cross mean + 4σ, because
        /// σ is at least √mean: steady traffic never alerts, even with a
        /// `min_count` of one.
        #[test]
        fn steady_traffic_never_alerts(
            (base, counts) in (0u32..400).prop_flat_map(|b| (Just(b), steady(b, isqrt(b), 200)))
        ) {
            let _ = base;
            let config = SpikeConfig { min_count: 1, warmup_buckets: 1, ..SpikeConfig::default() };
            prop_assert_eq!(run(config, &counts), vec![]);
        }

        /// A burst of any length well above the baseline raises exactly
        /// once, and clears on the first bucket back to normal.
        #[test]
        fn a_burst_alerts_once_and_clears(
            (base, before, after) in (0u32..200).prop_flat_map(|b| {
                let noise = isqrt(b) / 2;
                (Just(b), steady(b, noise, 12..40), steady(b, noise, 1..20))
            }),
            burst_len in 1usize..5,
            extra in 0u32..500,
        ) {
            let config = SpikeConfig::default();
            let burst = config.min_count + 2 * base + 8 * isqrt(base) + 8 + extra;
            let mut counts = before.clone();
            counts.extend(std::iter::repeat_n(burst, burst_len));
            counts.extend(&after);
            let changes = run(config, &counts);
            prop_assert_eq!(kinds(&changes), vec![("raised", burst), ("cleared", after[0])]);
        }

        /// The same input gives the same changes.
        #[test]
        fn deterministic(counts in proptest::collection::vec(0u32..80, 0..60)) {
            prop_assert_eq!(run(SpikeConfig::default(), &counts), run(SpikeConfig::default(), &counts));
        }
    }
}
