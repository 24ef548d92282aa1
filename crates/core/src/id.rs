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
                    .map_err(|e| Error::invalid($field, format!("{s:?} is not a UUID: {e}")))?;
                Self::from_uuid(uuid)
            }
        }
    };
}

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

/// Checks a slug: lowercase ASCII letters, digits and single dashes, starting
/// with a letter, at most `max_len` characters.
fn check_slug(field: &'static str, value: &str, max_len: usize) -> Result<()> {
    let reason = if value.is_empty() {
        Some("must not be empty".to_owned())
    } else if value.len() > max_len {
        Some(format!("{value:?} is longer than {max_len} characters"))
    } else if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some(format!("{value:?} must start with a lowercase letter"))
    } else if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        Some(format!("{value:?} contains {bad:?}; use lowercase letters, digits, '-' and '_'"))
    } else if value.ends_with('-') || value.contains("--") {
        Some(format!("{value:?} must not end with '-' or contain '--'"))
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
                f.write_str(&self.0)
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
        for bad in ["", "US-East", "1east", "us east", "us-", "us--east", &"a".repeat(33)] {
            let err = RegionId::new(bad).unwrap_err();
            assert!(err.to_string().starts_with("region: "), "{err}");
        }
    }

    #[test]
    fn ticket_ids_are_v7_and_sort_by_time() {
        let early = TicketId::new_v7(Timestamp::from_millisecond(1_000).unwrap(), [9; 10]);
        let late = TicketId::new_v7(Timestamp::from_millisecond(2_000).unwrap(), [0; 10]);
        assert!(early < late);
        assert_eq!(early.to_string().parse::<TicketId>().unwrap(), early);
        let v4 = "f47ac10b-58cc-4372-a567-0e02b2c3d479".parse::<TicketId>().unwrap_err();
        assert!(v4.to_string().contains("not a UUIDv7"), "{v4}");
    }
}
