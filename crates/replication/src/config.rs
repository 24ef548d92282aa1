//! What a [`Replicator`](crate::Replicator) needs to know about the mesh, and
//! its limits.

use std::collections::BTreeMap;
use std::time::Duration;

use meridian_core::RegionId;

use crate::{Error, Result};

/// The largest frame either side accepts, in bytes. A batch is cut well
/// below it (`batch_bytes_max`); one event may be up to
/// [`meridian_proto::replication::PAYLOAD_BYTES_MAX`] of payload.
pub const FRAME_BYTES_MAX: usize = 8 * 1024 * 1024;

pub const BATCH_EVENTS_MAX_DEFAULT: usize = 1_000;
pub const BATCH_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
pub const HEARTBEAT_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
pub const PEER_SILENCE_MAX_DEFAULT: Duration = Duration::from_secs(5);
pub const RECONNECT_BACKOFF_MIN_DEFAULT: Duration = Duration::from_millis(50);
pub const RECONNECT_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(5);
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// The mesh as this region sees it, and the replication limits.
///
/// `regions` is the mesh's region list in index order (the order epochs
/// encode); of each pair of regions, the one listed first dials and the
/// other accepts, so every pair has exactly one stream.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// This region.
    pub local: RegionId,
    /// Every region of the mesh, this one included, in index order.
    pub regions: Vec<RegionId>,
    /// `host:port` of each peer's internal (mutual-TLS) listener. Needed
    /// for the peers this region dials (those listed after it); others
    /// may be listed and are ignored.
    pub peers: BTreeMap<RegionId, String>,
    /// The most events in one batch.
    pub batch_events_max: usize,
    /// The most bytes of encoded events in one batch (a single larger event
    /// travels alone).
    pub batch_bytes_max: usize,
    /// How often each side sends a heartbeat (its log head and clock); also
    /// how often lag is measured.
    pub heartbeat_interval: Duration,
    /// A stream on which nothing arrived for this long is closed (and, on
    /// the dialling side, dialled again).
    pub peer_silence_max: Duration,
    /// The first pause before dialling again after a stream ended; doubles
    /// on every failure up to `reconnect_backoff_max`.
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
    /// TCP and TLS together, and then the peer's Hello, each within this.
    pub connect_timeout: Duration,
}

impl ReplicationConfig {
    /// A configuration with the default limits.
    pub fn new(local: RegionId, regions: Vec<RegionId>, peers: BTreeMap<RegionId, String>) -> Self {
        Self {
            local,
            regions,
            peers,
            batch_events_max: BATCH_EVENTS_MAX_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            heartbeat_interval: HEARTBEAT_INTERVAL_DEFAULT,
            peer_silence_max: PEER_SILENCE_MAX_DEFAULT,
            reconnect_backoff_min: RECONNECT_BACKOFF_MIN_DEFAULT,
            reconnect_backoff_max: RECONNECT_BACKOFF_MAX_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
        }
    }

    /// The index of `region` in the mesh's list.
    pub fn index_of(&self, region: &RegionId) -> Option<usize> {
        self.regions.iter().position(|r| r == region)
    }

    /// Every region but this one, in index order.
    pub fn peer_regions(&self) -> impl Iterator<Item = &RegionId> {
        self.regions.iter().filter(move |r| **r != self.local)
    }

    /// Whether this region dials `peer` (it is listed first) rather than
    /// accepting its stream.
    pub fn dials(&self, peer: &RegionId) -> bool {
        match (self.index_of(&self.local), self.index_of(peer)) {
            (Some(local), Some(peer)) => local < peer,
            _ => false,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::Config(reason));
        if self.index_of(&self.local).is_none() {
            return bad(format!("regions must include this region ({})", self.local));
        }
        for (i, region) in self.regions.iter().enumerate() {
            if self.regions[..i].contains(region) {
                return bad(format!("regions lists {region} twice"));
            }
        }
        for peer in self.peer_regions() {
            if self.dials(peer) && !self.peers.contains_key(peer) {
                return bad(format!(
                    "peers has no address for {peer}, which this region dials"
                ));
            }
        }
        if self.batch_events_max == 0
            || self.batch_events_max > meridian_proto::replication::BATCH_EVENTS_MAX
        {
            return bad(format!(
                "batch_events_max must be 1..={}, not {}",
                meridian_proto::replication::BATCH_EVENTS_MAX,
                self.batch_events_max
            ));
        }
        if self.batch_bytes_max == 0 || self.batch_bytes_max > FRAME_BYTES_MAX / 2 {
            return bad(format!(
                "batch_bytes_max must be 1..={}, not {}",
                FRAME_BYTES_MAX / 2,
                self.batch_bytes_max
            ));
        }
        for (name, value) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("reconnect_backoff_min", self.reconnect_backoff_min),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                return bad(format!("{name} must be above zero"));
            }
        }
        if self.peer_silence_max <= self.heartbeat_interval * 2 {
            return bad(format!(
                "peer_silence_max ({} ms) must be more than twice heartbeat_interval ({} ms)",
                self.peer_silence_max.as_millis(),
                self.heartbeat_interval.as_millis()
            ));
        }
        if self.reconnect_backoff_max < self.reconnect_backoff_min {
            return bad("reconnect_backoff_max must not be below reconnect_backoff_min".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(name: &str) -> RegionId {
        RegionId::new(name).unwrap()
    }

    fn mesh() -> ReplicationConfig {
        let regions = vec![region("us-east"), region("eu-west"), region("apac-south")];
        let peers = BTreeMap::from([
            (region("eu-west"), "127.0.0.1:1".into()),
            (region("apac-south"), "127.0.0.1:2".into()),
        ]);
        ReplicationConfig::new(region("us-east"), regions, peers)
    }

    #[test]
    fn the_region_listed_first_dials() {
        let config = mesh();
        assert!(config.dials(&region("eu-west")));
        assert!(config.dials(&region("apac-south")));
        let eu = ReplicationConfig {
            local: region("eu-west"),
            ..config.clone()
        };
        assert!(!eu.dials(&region("us-east")));
        assert!(eu.dials(&region("apac-south")));
        assert_eq!(
            eu.peer_regions().cloned().collect::<Vec<_>>(),
            vec![region("us-east"), region("apac-south")]
        );
        config.validate().unwrap();
    }

    #[test]
    fn bad_configs_name_the_setting() {
        type Spoil = fn(&mut ReplicationConfig);
        let cases: [(&str, Spoil); 6] = [
            ("must include this region", |c| c.local = region("sa-east")),
            ("twice", |c| c.regions.push(region("eu-west"))),
            ("no address for apac-south", |c| {
                c.peers.remove(&region("apac-south"));
            }),
            ("batch_events_max", |c| c.batch_events_max = 0),
            ("batch_bytes_max", |c| c.batch_bytes_max = FRAME_BYTES_MAX),
            ("peer_silence_max", |c| {
                c.peer_silence_max = c.heartbeat_interval
            }),
        ];
        for (needle, spoil) in cases {
            let mut config = mesh();
            spoil(&mut config);
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
