//! Identifiers: ticket and note ids (UUIDv7, so they sort by creation time)
//! and the validated slugs that name regions, tiers and skills.

use std::{fmt, str::FromStr};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, Result};

macro_rules! uuid_v7_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A UUIDv7 from the creation instant and caller-supplied random
            /// bytes (the core has no entropy source of its own).
            pub fn new_v7(at: Timestamp, random: [u8; 10]) -> Self {
                let millis = u64::try_from(at.as_millisecond()).unwrap_or(0);
                Self(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
            }

            /// The next id from `minter`: after every id it minted before,
            /// even within the same millisecond.
            pub fn mint(minter: &mut IdMinter, at: Timestamp, random: [u8; 10]) -> Self {
                Self(minter.next(at, random))
            }

            pub fn from_uuid(uuid: Uuid) -> Result<Self> {
                if uuid.get_version_num() != 7 {
                    return Err(Error::invalid($field, format!("{uuid} is not a UUIDv7")));
                }
                Ok(Self(uuid))
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// The id's 128 bits; also the ticket's trace id.
            pub fn as_u128(&self) -> u128 {
                self.0.as_u128()
            }

            /// The id as people read it in lists: the last [`SHORT_ID_LEN`]
            /// hex digits. A UUIDv7 *starts* with its timestamp, so ids
            /// minted in one burst (one shift end) share their first
            /// digits; the tail is random bits (or, within one
            /// millisecond, the minter's counter), so it tells them apart.
            /// The console's `shortId` (console.js) computes the same.
            pub fn short(&self) -> String {
                let tail = self.0.as_u128() & ((1u128 << (4 * SHORT_ID_LEN)) - 1);
                format!("{tail:0width$x}", width = SHORT_ID_LEN)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                let uuid = Uuid::parse_str(s.trim())
                    .map_err(|e| Error::invalid($field, format!("{} is not a UUID: {e}", crate::text::echo(s))))?;
                Self::from_uuid(uuid)
            }
        }
    };
}

/// Hex digits in a short id ([`TicketId::short`]): 32 random bits, so two
/// of 10,000 tickets share one with a chance of about 1 in 86.
pub const SHORT_ID_LEN: usize = 8;

uuid_v7_id!(
    /// A ticket's id. Its 128 bits double as the ticket's trace id.
    TicketId,
    "ticket_id"
);
uuid_v7_id!(
    /// A note's id; notes merge as a set keyed by it.
    NoteId,
    "note_id"
);

/// Mints UUIDv7s that strictly increase, even within one millisecond or
/// when the clock steps back (RFC 9562 §6.2, method 2: the random bits act
/// as a counter from the last id). Listings page by id, so one gateway's
/// ids must sort in the order it created them.
#[derive(Debug, Default)]
pub struct IdMinter {
    last: u128,
}

impl IdMinter {
    const RAND_B: u128 = (1 << 62) - 1;
    const RAND_A: u128 = 0xfff << 64;

    fn next(&mut self, at: Timestamp, random: [u8; 10]) -> Uuid {
        let millis = u64::try_from(at.as_millisecond()).unwrap_or(0);
        let fresh = uuid::Builder::from_unix_timestamp_millis(millis, &random)
            .into_uuid()
            .as_u128();
        self.last = if fresh > self.last {
            fresh
        } else {
            Self::successor(self.last)
        };
        Uuid::from_u128(self.last)
    }

    /// The next value after `v` that keeps the version and variant bits:
    /// count up in `rand_b`, carry into `rand_a`, then into the timestamp.
    fn successor(v: u128) -> u128 {
        if v & Self::RAND_B != Self::RAND_B {
            v + 1
        } else if v & Self::RAND_A != Self::RAND_A {
            (v & !Self::RAND_B) + (1 << 64)
        } else {
            (v & !(Self::RAND_B | Self::RAND_A)) + (1 << 80)
        }
    }
}

/// Checks a slug: lowercase ASCII letters, digits and single dashes, starting
/// with a letter, at most `max_len` characters.
fn check_slug(field: &'static str, value: &str, max_len: usize) -> Result<()> {
    let reason = if value.is_empty() {
        Some("must not be empty".to_owned())
    } else if value.len() > max_len {
        Some(format!(
            "{} is longer than {max_len} characters",
            crate::text::echo(value)
        ))
    } else if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some(format!(
            "{} must start with a lowercase letter",
            crate::text::echo(value)
        ))
    } else if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        Some(format!(
            "{} contains {bad:?}; use lowercase letters, digits, '-' and '_'",
            crate::text::echo(value)
        ))
    } else if value.ends_with('-') || value.contains("--") {
        Some(format!(
            "{} must not end with '-' or contain '--'",
            crate::text::echo(value)
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::invalid(field, reason)),
        None => Ok(()),
    }
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self> {
                let value = value.into();
                check_slug($field, &value, $max)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

slug_id!(
    /// A region's id, such as `us-east`.
    RegionId,
    "region",
    32
);
slug_id!(
    /// A service tier, such as `enterprise`; names an SLA policy in the rules.
    Tier,
    "tier",
    32
);
slug_id!(
    /// A skill or topic an agent group covers, such as `billing`.
    Skill,
    "skill",
    48
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_slugs() {
        assert!(RegionId::new("us-east").is_ok());
        assert!(RegionId::new("apac-south-2").is_ok());
        for bad in [
            "",
            "US-East",
            "1east",
            "us east",
            "us-",
            "us--east",
            &"a".repeat(33),
        ] {
            let err = RegionId::new(bad).unwrap_err();
            assert!(err.to_string().starts_with("region: "), "{err}");
        }
    }

    #[test]
    fn minted_ids_increase_within_a_millisecond_and_across_a_step_back() {
        let mut minter = IdMinter::default();
        let at = Timestamp::from_millisecond(5_000).unwrap();
        let mut previous = TicketId::mint(&mut minter, at, [0xff; 10]);
        for random in [[0u8; 10], [0x80; 10], [0xff; 10]] {
            let next = TicketId::mint(&mut minter, at, random);
            assert!(next > previous, "{next} after {previous}");
            previous = next;
        }
        let earlier = TicketId::mint(
            &mut minter,
            Timestamp::from_millisecond(4_000).unwrap(),
            [0; 10],
        );
        assert!(earlier > previous, "a clock step back must not reorder ids");
        assert_eq!(
            TicketId::from_uuid(earlier.as_uuid()).unwrap(),
            earlier,
            "still a valid UUIDv7"
        );
    }

    #[test]
    fn the_counter_carries_without_touching_version_or_variant() {
        let all_random = uuid::Builder::from_unix_timestamp_millis(7, &[0xff; 10])
            .into_uuid()
            .as_u128();
        let next = Uuid::from_u128(IdMinter::successor(all_random));
        assert_eq!(next.get_version_num(), 7);
        assert_eq!(next.get_variant(), uuid::Variant::RFC4122);
        assert!(next.as_u128() > all_random);
    }

    #[test]
    fn a_short_id_is_the_random_tail_not_the_time_prefix() {
        let id: TicketId = "01a24e7d-3c11-7a34-95bb-18f51cc8967b".parse().unwrap();
        assert_eq!(id.short(), "1cc8967b");
        // Leading zeros are kept: always SHORT_ID_LEN digits.
        let id: TicketId = "01a24e7d-3c11-7a34-95bb-18f500000a0b".parse().unwrap();
        assert_eq!(id.short(), "00000a0b");
        assert!(id.to_string().replace('-', "").ends_with(&id.short()));
    }

    #[test]
    fn short_ids_tell_a_burst_of_tickets_apart() {
        // One shift end: many ids minted in the same millisecond, which
        // share their whole time prefix.
        let mut minter = IdMinter::default();
        let at = Timestamp::from_millisecond(1_765_000_000_000).unwrap();
        let ids: Vec<TicketId> = (0..1_000u32)
            .map(|n| {
                let mut random = [0u8; 10];
                let mixed = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                random[2..].copy_from_slice(&mixed.to_be_bytes());
                TicketId::mint(&mut minter, at, random)
            })
            .collect();
        let prefixes: std::collections::HashSet<String> = ids
            .iter()
            .map(|id| id.to_string()[..8].to_owned())
            .collect();
        assert_eq!(prefixes.len(), 1, "the time prefix is shared");
        let shorts: std::collections::HashSet<String> = ids.iter().map(TicketId::short).collect();
        assert_eq!(shorts.len(), ids.len(), "every short id differs");
        // Fresh random tails too (not only the minter's counter).
        let a = TicketId::new_v7(at, [1; 10]);
        let b = TicketId::new_v7(at, [2; 10]);
        assert_eq!(a.to_string()[..8], b.to_string()[..8]);
        assert_ne!(a.short(), b.short());
    }

    #[test]
    fn ticket_ids_are_v7_and_sort_by_time() {
        let early = TicketId::new_v7(Timestamp::from_millisecond(1_000).unwrap(), [9; 10]);
        let late = TicketId::new_v7(Timestamp::from_millisecond(2_000).unwrap(), [0; 10]);
        assert!(early < late);
        assert_eq!(early.to_string().parse::<TicketId>().unwrap(), early);
        let v4 = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
            .parse::<TicketId>()
            .unwrap_err();
        assert!(v4.to_string().contains("not a UUIDv7"), "{v4}");
    }
}
