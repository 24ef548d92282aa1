//! Digests of the logs a store holds, per origin, in fixed-size buckets of
//! `origin_seq`: what anti-entropy compares between regions.
//!
//! Bucket `k` (from 0) of an origin's log covers `origin_seq`
//! `k*B+1 ..= (k+1)*B`; a summary lists every complete bucket up to the
//! store's dense head of that origin, then the partial tail. The digest is
//! 64-bit FNV-1a over each event's `origin_seq` and its canonical encoding
//! (the protobuf `Event` that replication ships, whose payload is the JSON
//! the store decodes its row into), so two stores on different backends
//! that hold the same event compute the same bytes.
//!
//! A log is append-only and dense, so a complete bucket never changes: its
//! digest is computed once and kept in memory, and the tail's running hash
//! is extended with new events only. A summary after the first one costs
//! a read of what arrived since.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use meridian_core::{EventEnvelope, RegionId};
use meridian_proto::convert::event_to_proto;
use prost::Message;

use crate::seam::ReplicaLog;
use crate::{Error, Result};

/// How many events a complete bucket covers, unless configured otherwise.
pub const BUCKET_EVENTS_DEFAULT: u64 = 4096;
/// The most events read from the store (and hashed) in one step.
const HASH_PAGE_EVENTS: u64 = 1024;
/// Pages up to this many events are hashed on the task itself: that takes
/// far less than the half millisecond a task may hold its thread, and a
/// blocking-pool thread would cost more than it saves (and would run
/// outside the deterministic simulation's single-threaded schedule).
const HASH_INLINE_EVENTS_MAX: usize = 64;

/// 64-bit FNV-1a: small, deterministic on every platform, and enough to
/// tell corruption apart (this guards against accidents, not adversaries:
/// peers are authenticated gateways).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fnv64(u64);

impl Fnv64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub fn new() -> Self {
        Fnv64(Self::OFFSET_BASIS)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// Feeds one event: its `origin_seq`, then the length and bytes of its
/// canonical encoding (the length keeps event boundaries unambiguous).
pub(crate) fn hash_event(state: &mut Fnv64, event: &EventEnvelope) {
    let encoded = event_to_proto(event).encode_to_vec();
    state.write(&event.origin_seq.to_le_bytes());
    state.write(&(encoded.len() as u64).to_le_bytes());
    state.write(&encoded);
}

/// Feeds one event's redacted form (residency, `meridian_core::residency`)
/// the way [`hash_event`] feeds the event.
pub(crate) fn hash_text_free(state: &mut Fnv64, event: &EventEnvelope) {
    if meridian_core::residency::carries_text(&event.kind)
        && !meridian_core::residency::is_redacted(&event.kind)
    {
        hash_event(state, &meridian_core::residency::redact_event(event));
    } else {
        hash_event(state, event);
    }
}

/// The digest of the events `first_seq ..= last_seq` of one origin.
///
/// Residency: outside a pinned ticket's regions a store holds redacted
/// copies of its events, so `digest` differs from a full copy's.
/// `text_free` hashes every event's redacted form, which all copies share,
/// and `redacted` says this store holds redacted copies in the bucket: two
/// buckets hold the same events when their digests agree, or when their
/// `text_free` digests agree and one of them holds redacted copies. Text
/// changed behind the store's back in a bucket without redacted copies
/// still shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketDigest {
    pub first_seq: u64,
    pub last_seq: u64,
    pub digest: u64,
    pub text_free: u64,
    pub redacted: bool,
}

impl BucketDigest {
    /// Whether the two buckets (of one range) hold the same events, given
    /// redacted copies (see the type's doc).
    pub fn agrees_with(&self, other: &BucketDigest) -> bool {
        self.digest == other.digest
            || (self.text_free == other.text_free && (self.redacted || other.redacted))
    }
}

/// The running hashes of a bucket.
#[derive(Debug, Clone, Copy)]
struct Running {
    full: Fnv64,
    text_free: Fnv64,
    redacted: bool,
}

impl Running {
    fn new() -> Self {
        Self {
            full: Fnv64::new(),
            text_free: Fnv64::new(),
            redacted: false,
        }
    }

    fn add(&mut self, event: &EventEnvelope) {
        hash_event(&mut self.full, event);
        hash_text_free(&mut self.text_free, event);
        self.redacted |= meridian_core::residency::is_redacted(&event.kind);
    }

    fn bucket(&self, first_seq: u64, last_seq: u64) -> BucketDigest {
        BucketDigest {
            first_seq,
            last_seq,
            digest: self.full.finish(),
            text_free: self.text_free.finish(),
            redacted: self.redacted,
        }
    }
}

/// What a store holds of one origin's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OriginSummary {
    /// The store holds exactly `1 ..= max_seq`.
    pub max_seq: u64,
    /// Complete buckets in order, then the partial tail.
    pub buckets: Vec<BucketDigest>,
}

/// The digests of one store's logs, kept between summaries.
pub(crate) struct LogDigests {
    store: Arc<dyn ReplicaLog>,
    bucket_events: u64,
    /// One entry per origin, each behind its own lock: two summaries of one
    /// origin must not extend its hash at once, but different origins may.
    origins: Mutex<BTreeMap<RegionId, Arc<tokio::sync::Mutex<OriginDigests>>>>,
}

/// The digests of one origin's log as far as it has been hashed.
#[derive(Debug, Clone)]
struct OriginDigests {
    /// The digests of buckets `0 .. complete.len()`.
    complete: Vec<Running>,
    /// The last `origin_seq` hashed; the tail is `complete.len()*B+1 ..= covered`.
    covered: u64,
    /// The running hashes of the tail.
    tail: Running,
}

impl Default for OriginDigests {
    fn default() -> Self {
        Self {
            complete: Vec::new(),
            covered: 0,
            tail: Running::new(),
        }
    }
}

impl LogDigests {
    pub fn new(store: Arc<dyn ReplicaLog>, bucket_events: u64) -> Self {
        Self {
            store,
            bucket_events,
            origins: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn bucket_events(&self) -> u64 {
        self.bucket_events
    }

    /// The store's dense head of `origin`: the local log head for the
    /// store's own region, the applied cursor for any other (the store
    /// applies a log only in order, with its cursor).
    pub async fn head(&self, origin: &RegionId) -> Result<u64> {
        if origin == self.store.local_region() {
            Ok(self.store.local_head().await?)
        } else {
            Ok(self.store.cursor(origin).await?)
        }
    }

    /// The summary of what the store holds of `origin`'s log now.
    pub async fn summarize(&self, origin: &RegionId) -> Result<OriginSummary> {
        let entry = {
            let mut origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
            origins.entry(origin.clone()).or_default().clone()
        };
        let mut state = entry.lock().await;
        // Read the head under the lock, so that heads only grow from one
        // summary to the next and the tail never has to be taken back.
        let max_seq = self.head(origin).await?;
        if max_seq < state.covered {
            // The log is shorter than what was hashed: the database was
            // restored under this process. Nothing hashed can be trusted.
            tracing::warn!(origin = %origin, max_seq, hashed = state.covered, "log shrank under anti-entropy; hashing it again");
            *state = OriginDigests::default();
        }
        self.extend(&mut state, origin, max_seq).await?;
        let size = self.bucket_events;
        let mut buckets: Vec<BucketDigest> = (0u64..)
            .zip(&state.complete)
            .map(|(k, running)| running.bucket(k * size + 1, (k + 1) * size))
            .collect();
        let tail_first = state.complete.len() as u64 * size + 1;
        if state.covered >= tail_first {
            buckets.push(state.tail.bucket(tail_first, state.covered));
        }
        Ok(OriginSummary { max_seq, buckets })
    }

    /// Hashes `origin`'s events after `state.covered` up to `max_seq`, a page
    /// at a time. `state` changes only after a page is hashed whole, so a
    /// summary cancelled halfway (its caller's deadline passed) leaves the
    /// progress made so far for the next one.
    async fn extend(
        &self,
        state: &mut OriginDigests,
        origin: &RegionId,
        max_seq: u64,
    ) -> Result<()> {
        let size = self.bucket_events;
        while state.covered < max_seq {
            let bucket_end = (state.complete.len() as u64 + 1) * size;
            let want = max_seq.min(bucket_end) - state.covered;
            let want = want.min(HASH_PAGE_EVENTS);
            let limit = u32::try_from(want).unwrap_or(u32::MAX);
            let page = self
                .store
                .events_after(origin, state.covered, limit)
                .await?;
            let dense = page.len() as u64 == want
                && page
                    .iter()
                    .zip(state.covered + 1..)
                    .all(|(event, seq)| event.origin_seq == seq);
            if !dense {
                return Err(Error::LogHole {
                    origin: origin.clone(),
                    after_seq: state.covered,
                    max_seq,
                });
            }
            let tail = state.tail;
            let hash_page = move || {
                let mut tail = tail;
                for event in &page {
                    tail.add(event);
                }
                tail
            };
            let tail = if page_len_small(want) {
                hash_page()
            } else {
                // Encoding and hashing a full page takes longer than an
                // async task should hold its thread.
                tokio::task::spawn_blocking(hash_page).await.map_err(|e| {
                    if e.is_panic() {
                        std::panic::resume_unwind(e.into_panic())
                    } else {
                        Error::Shutdown
                    }
                })?
            };
            state.tail = tail;
            state.covered += want;
            if state.covered == bucket_end {
                state.complete.push(state.tail);
                state.tail = Running::new();
            }
        }
        Ok(())
    }
}

fn page_len_small(events: u64) -> bool {
    usize::try_from(events).is_ok_and(|events| events <= HASH_INLINE_EVENTS_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_values() {
        // From the FNV reference test suite.
        let hash = |text: &[u8]| {
            let mut state = Fnv64::new();
            state.write(text);
            state.finish()
        };
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
        // Streaming is the same as hashing at once.
        let mut state = Fnv64::new();
        state.write(b"foo");
        state.write(b"bar");
        assert_eq!(state.finish(), hash(b"foobar"));
    }
}
