//! Where the coordinator keeps its state in etcd, and how records are
//! encoded. Values are JSON so an operator can read them with `etcdctl get`.
//!
//! Per region, under the prefix (default `/meridian/regions`):
//! - `<prefix>/<region>/lease`: attached to the region's etcd lease, so it
//!   exists exactly while the lease is live; value [`LeaseRecord`].
//! - `<prefix>/<region>/takeover`: exists while a takeover of the region
//!   awaits acknowledgement; its mod revision is the fencing token; value
//!   [`TakeoverRecord`].
//! - `<prefix>/<region>/acknowledged`: rewritten on every acknowledgement,
//!   never deleted, so its mod revision tells whether the region came back
//!   after a given revision; value [`AcknowledgedRecord`].

use jiff::Timestamp;
use meridian_core::RegionId;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    error::{Error, Result},
    types::{Revision, Takeover},
};

/// The key layout under a configurable prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
}

/// Which of a region's keys a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Lease,
    Takeover,
    Acknowledged,
}

impl KeyLayout {
    pub const DEFAULT_PREFIX: &'static str = "/meridian/regions";

    /// A layout under `prefix` (a trailing `/` is ignored). The prefix must
    /// be non-empty so that Meridian never ranges over a whole cluster.
    pub fn new(prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        let trimmed = prefix.trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(Error::invalid(
                "key_prefix",
                format!("{prefix:?} is empty; use something like \"/meridian/regions\""),
            ));
        }
        Ok(KeyLayout {
            prefix: trimmed.to_owned(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn lease_key(&self, region: &RegionId) -> String {
        format!("{}/{region}/lease", self.prefix)
    }

    pub fn takeover_key(&self, region: &RegionId) -> String {
        format!("{}/{region}/takeover", self.prefix)
    }

    pub fn acknowledged_key(&self, region: &RegionId) -> String {
        format!("{}/{region}/acknowledged", self.prefix)
    }

    /// The prefix of one region's keys.
    pub(crate) fn region_prefix(&self, region: &RegionId) -> String {
        format!("{}/{region}/", self.prefix)
    }

    /// The prefix of every region's keys.
    pub(crate) fn all_regions_prefix(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// Splits a key under the prefix into its region and kind; `None` for
    /// keys that are not the coordinator's.
    pub(crate) fn parse(&self, key: &[u8]) -> Option<(RegionId, KeyKind)> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        let (region, kind) = rest.split_once('/')?;
        let kind = match kind {
            "lease" => KeyKind::Lease,
            "takeover" => KeyKind::Takeover,
            "acknowledged" => KeyKind::Acknowledged,
            _ => return None,
        };
        Some((RegionId::new(region).ok()?, kind))
    }
}

impl Default for KeyLayout {
    fn default() -> Self {
        KeyLayout {
            prefix: Self::DEFAULT_PREFIX.to_owned(),
        }
    }
}

/// The end of the etcd range holding every key that starts with `prefix`.
pub(crate) fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // Only for a prefix of all 0xff bytes: "every key from here on".
    vec![0]
}

/// The value of a region's lease key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeaseRecord {
    pub region: RegionId,
    pub ttl_ms: u64,
}

/// The value of a region's takeover key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TakeoverRecord {
    pub failed_region: RegionId,
    pub successor: RegionId,
    /// The successors after the primary. Absent in records written before
    /// it existed (read as none); left out when empty, so a single-successor
    /// record is byte for byte what older routers wrote. Older readers
    /// ignore the field and see only the primary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<RegionId>,
    pub recorded_at: Timestamp,
    /// Unique per call, so a retried transaction can tell its own write
    /// from a competitor's.
    pub nonce: String,
}

impl TakeoverRecord {
    pub fn into_takeover(self, fencing_token: Revision) -> Takeover {
        Takeover {
            failed_region: self.failed_region,
            successor: self.successor,
            also: self.also,
            fencing_token,
            recorded_at: self.recorded_at,
        }
    }
}

/// The value of a region's acknowledged key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AcknowledgedRecord {
    pub fencing_token: Revision,
    pub successor: RegionId,
    pub acknowledged_at: Timestamp,
}

pub(crate) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Serializing these plain structs to JSON cannot fail; an empty value
    // would be rejected on decode rather than silently accepted.
    serde_json::to_vec(record).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|err| Error::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(name: &str) -> RegionId {
        RegionId::new(name).unwrap()
    }

    #[test]
    fn keys_round_trip_through_parse() {
        let layout = KeyLayout::new("/meridian/regions/").unwrap();
        let us = region("us-east");
        assert_eq!(layout.lease_key(&us), "/meridian/regions/us-east/lease");
        assert_eq!(
            layout.parse(layout.lease_key(&us).as_bytes()),
            Some((us.clone(), KeyKind::Lease))
        );
        assert_eq!(
            layout.parse(layout.takeover_key(&us).as_bytes()),
            Some((us.clone(), KeyKind::Takeover))
        );
        assert_eq!(
            layout.parse(layout.acknowledged_key(&us).as_bytes()),
            Some((us.clone(), KeyKind::Acknowledged))
        );
        assert_eq!(layout.parse(b"/meridian/regions/us-east/other"), None);
        assert_eq!(layout.parse(b"/meridian/regionsX/us-east/lease"), None);
        assert_eq!(layout.parse(b"/meridian/regions/US/lease"), None);
        assert!(KeyLayout::new("/").is_err());
    }

    fn record(also: &[&str]) -> TakeoverRecord {
        TakeoverRecord {
            failed_region: region("us-east"),
            successor: region("eu-west"),
            also: also.iter().map(|name| region(name)).collect(),
            recorded_at: Timestamp::from_second(1_800_000_000).unwrap(),
            nonce: "n-1".to_owned(),
        }
    }

    #[test]
    fn a_takeover_record_round_trips_with_its_successor_list() {
        let key = b"/meridian/regions/us-east/takeover";
        let written = record(&["apac-south", "sa-east"]);
        let decoded: TakeoverRecord = decode(key, &encode(&written)).unwrap();
        assert_eq!(decoded, written);
        let takeover = decoded.into_takeover(Revision::new(42));
        let order: Vec<&str> = takeover.successors().map(RegionId::as_str).collect();
        assert_eq!(order, ["eu-west", "apac-south", "sa-east"]);
        assert!(takeover.names(&region("sa-east")) && !takeover.names(&region("us-east")));
        // Each ticket's taker is the first listed region its residency allows.
        assert_eq!(takeover.taker(|_| true), Some(&region("eu-west")));
        assert_eq!(
            takeover.taker(|r| r.as_str() != "eu-west"),
            Some(&region("apac-south"))
        );
        assert_eq!(
            takeover.taker(|r| r.as_str() == "sa-east"),
            Some(&region("sa-east"))
        );
        assert_eq!(takeover.taker(|r| r.as_str() == "us-east"), None);
    }

    #[test]
    fn records_of_the_older_format_still_read_and_single_successor_records_are_unchanged() {
        let key = b"/meridian/regions/us-east/takeover";
        // What routers wrote before successor lists existed.
        let old = br#"{"failed_region":"us-east","successor":"eu-west","recorded_at":"2027-01-15T08:00:00Z","nonce":"n-1"}"#;
        assert_eq!(decode::<TakeoverRecord>(key, old).unwrap(), record(&[]));
        // A one-successor record is written exactly as before.
        assert_eq!(encode(&record(&[])), old.to_vec());
        // And an older reader (no `also`) reads a new record's primary.
        #[derive(Deserialize)]
        struct OlderReader {
            successor: RegionId,
        }
        let older: OlderReader = decode(key, &encode(&record(&["apac-south"]))).unwrap();
        assert_eq!(older.successor, region("eu-west"));
        let err = decode::<TakeoverRecord>(
            key,
            br#"{"failed_region":"us-east","successor":"eu-west","also":["US"]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("record \"/meridian/regions/us-east/takeover\" is malformed"),
            "{err}"
        );
    }

    #[test]
    fn prefix_range_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_range_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_range_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_range_end(b"\xff"), vec![0]);
    }
}
