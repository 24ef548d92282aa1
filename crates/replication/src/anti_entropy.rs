//! Anti-entropy: the periodic backstop behind the replication streams, and
//! the relay that lets a region's events outlive the region.
//!
//! The streams ship each region's own log to each peer directly. An event
//! of region O that reached X but not Y before O was lost for good would
//! therefore never reach Y, although with `peer` durability O acknowledged
//! it. So every `interval` each region asks each peer for a log summary:
//! for every origin the peer's dense head and its digests in fixed-size
//! buckets (`digest.rs`). Then, per origin:
//!
//! - where the peer holds more than this store has applied (and the origin
//!   is not this region), the missing events are fetched from that peer in
//!   pages and applied with `Store::apply_remote`. That call is idempotent,
//!   refuses gaps and moves the origin's cursor in the same transaction, so
//!   repair composes with a live stream applying the same log: whichever
//!   comes second skips what the first applied;
//! - where a bucket over the same range has another digest, the two regions
//!   hold different events under the same numbers. Events are immutable,
//!   so that is corruption: it is logged as an error naming the origin and
//!   the range, counted, and left alone (nothing is overwritten).
//!
//! Which side of a differing bucket is wrong cannot be told from two
//! digests; the origin's own copy is the reference (`check_convergence`).
//!
//! The server side ([`AntiEntropy::service`]) shares the mutual-TLS port of
//! the streams and answers only gateways of the mesh's other regions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use meridian_core::{EventEnvelope, RegionId};
use meridian_proto::convert::{event_to_proto, region_id};
use meridian_proto::replication::batch_from_proto;
use meridian_proto::v1::{
    self, anti_entropy_service_client::AntiEntropyServiceClient,
    anti_entropy_service_server::AntiEntropyServiceServer,
};
use meridian_tls::Service;
use prost::Message;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::digest::{BUCKET_EVENTS_DEFAULT, BucketDigest, LogDigests};
use crate::residency::{Unvouched, for_peer};
use crate::state::Shared;
use crate::{Error, FRAME_BYTES_MAX, Replicator, Result};

pub const ANTI_ENTROPY_INTERVAL_DEFAULT: Duration = Duration::from_secs(30);
pub const ANTI_ENTROPY_CALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// The most events one `FetchLog` answer carries.
pub const FETCH_EVENTS_MAX: u32 = 1_000;
/// About the most bytes of encoded events one `FetchLog` answer carries (a
/// single larger event travels alone).
const FETCH_BYTES_MAX: usize = FRAME_BYTES_MAX / 2;
/// The largest bucket: a summary hashes at most this many events per
/// origin after the first one.
pub const BUCKET_EVENTS_MAX: u64 = 1 << 20;
/// How many differing buckets the stats keep in detail (all are counted).
const DIVERGENCES_KEPT_MAX: usize = 64;

/// How often anti-entropy runs, and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AntiEntropyConfig {
    /// The pause between rounds; the first round starts one interval after
    /// [`AntiEntropy::run`], when the streams have had time to catch up.
    pub interval: Duration,
    /// Events per digest bucket. Every region of a mesh must use the same
    /// size; a peer with another size is repaired but not compared.
    pub bucket_events: u64,
    /// Events asked for per `FetchLog` call (the server may send fewer).
    pub fetch_events_max: u32,
    /// Each call to a peer must be answered within this.
    pub call_timeout: Duration,
}

impl AntiEntropyConfig {
    /// Rounds every `interval`, with the default limits.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            bucket_events: BUCKET_EVENTS_DEFAULT,
            fetch_events_max: FETCH_EVENTS_MAX,
            call_timeout: ANTI_ENTROPY_CALL_TIMEOUT_DEFAULT,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::Config(format!("anti-entropy: {reason}")));
        if self.interval.is_zero() {
            return bad("interval must be above zero".to_owned());
        }
        if self.call_timeout.is_zero() {
            return bad("call_timeout must be above zero".to_owned());
        }
        if !(1..=BUCKET_EVENTS_MAX).contains(&self.bucket_events) {
            return bad(format!(
                "bucket_events must be 1..={BUCKET_EVENTS_MAX}, not {}",
                self.bucket_events
            ));
        }
        if !(1..=FETCH_EVENTS_MAX).contains(&self.fetch_events_max) {
            return bad(format!(
                "fetch_events_max must be 1..={FETCH_EVENTS_MAX}, not {}",
                self.fetch_events_max
            ));
        }
        Ok(())
    }
}

/// What anti-entropy has done since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AntiEntropyStats {
    /// Rounds completed (a round asks every peer once).
    pub rounds: u64,
    /// Events this region lacked and fetched from a peer: how far repair
    /// moved the origins' cursors (a live stream applying the same events
    /// at the same moment may be counted here instead).
    pub repaired_events: u64,
    /// Distinct buckets (peer, origin, first seq) found to differ.
    pub divergent_buckets: u64,
    /// The first of them in detail.
    pub divergences: Vec<DivergentBucket>,
    /// When the last round ended, by the replicator's clock.
    pub last_run_at: Option<Timestamp>,
    /// Why the last round failed with some peer; `None` if it did not.
    pub last_error: Option<String>,
}

/// A range of an origin's log that this region and a peer hold differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DivergentBucket {
    pub peer: RegionId,
    pub origin: RegionId,
    pub first_seq: u64,
    pub last_seq: u64,
    pub local_digest: u64,
    pub peer_digest: u64,
}

/// Anti-entropy for one region: the periodic comparison with every peer
/// ([`AntiEntropy::run`]) and the service peers compare with
/// ([`AntiEntropy::service`]). Cheap to clone; clones share everything,
/// the digests included.
#[derive(Clone)]
pub struct AntiEntropy {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    config: AntiEntropyConfig,
    digests: LogDigests,
    /// The peers with an address, each with a channel that connects on
    /// first use and reconnects after.
    peers: Vec<(RegionId, Channel)>,
    stats: Mutex<StatsState>,
}

#[derive(Default)]
struct StatsState {
    stats: AntiEntropyStats,
    /// (peer, origin, first seq) of every differing bucket reported, so a
    /// lasting difference is logged and counted once.
    reported: BTreeSet<(RegionId, RegionId, u64)>,
}

impl std::fmt::Debug for AntiEntropy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AntiEntropy")
            .field("local", self.inner.shared.local())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl AntiEntropy {
    /// Anti-entropy for `replicator`'s region, store and mesh, asking every
    /// peer with an address. Starts nothing; must be called inside a tokio
    /// runtime (the peers' channels are made here).
    pub fn new(replicator: &Replicator, config: AntiEntropyConfig) -> Result<Self> {
        config.validate()?;
        let shared = replicator.shared.clone();
        let mut peers = Vec::new();
        for peer in shared.config.peer_regions() {
            let Some(addr) = shared.config.peers.get(peer) else {
                tracing::info!(peer = %peer, "no address for peer; anti-entropy will only answer it");
                continue;
            };
            let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| {
                    Error::Config(format!("anti-entropy: address of {peer} ({addr}): {e}"))
                })?
                .connect_timeout(shared.config.connect_timeout)
                .tcp_nodelay(true);
            peers.push((peer.clone(), shared.transport.connect_lazy(peer, endpoint)));
        }
        let digests = LogDigests::new(shared.store.clone(), config.bucket_events);
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                config,
                digests,
                peers,
                stats: Mutex::new(StatsState::default()),
            }),
        })
    }

    pub fn config(&self) -> &AntiEntropyConfig {
        &self.inner.config
    }

    /// The tonic service peers call. Serve it only over mutual TLS
    /// (`MeshTls::incoming`), next to [`Replicator::service`]: it answers
    /// only gateways of the mesh's other regions.
    pub fn service(&self) -> AntiEntropyServer {
        AntiEntropyServiceServer::new(AntiEntropyHandler {
            inner: self.inner.clone(),
        })
        .max_encoding_message_size(FRAME_BYTES_MAX)
    }

    /// What anti-entropy has done so far.
    pub fn stats(&self) -> AntiEntropyStats {
        self.inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stats
            .clone()
    }

    /// Runs a round every interval until `shutdown` completes (a round in
    /// progress is abandoned; whatever it applied stays applied).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let interval = self.inner.config.interval;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(region = %self.inner.shared.local(), interval_ms = interval.as_millis(), peers = self.inner.peers.len(), "anti-entropy running");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticker.tick() => {}
            }
            tokio::select! {
                () = &mut shutdown => break,
                _ = self.round() => {}
            }
        }
        tracing::info!(region = %self.inner.shared.local(), "anti-entropy stopped");
    }

    /// One round: compares with every peer in turn, repairing and reporting
    /// as it goes, and returns the stats after it. A peer that cannot be
    /// reached is skipped (and named in `last_error`).
    pub async fn round(&self) -> AntiEntropyStats {
        let mut errors = Vec::new();
        for (peer, channel) in &self.inner.peers {
            if let Err(error) = self.compare_with(peer, channel.clone()).await {
                tracing::warn!(peer = %peer, error = %error, "anti-entropy with peer failed");
                errors.push(error.to_string());
            }
        }
        let now = self.inner.shared.clock.now();
        let mut state = self
            .inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.stats.rounds += 1;
        state.stats.last_run_at = Some(now);
        state.stats.last_error = if errors.is_empty() {
            None
        } else {
            Some(errors.join("; "))
        };
        state.stats.clone()
    }

    async fn compare_with(&self, peer: &RegionId, channel: Channel) -> Result<()> {
        let inner = &self.inner;
        let local = inner.shared.local();
        let mut client =
            AntiEntropyServiceClient::new(channel).max_decoding_message_size(FRAME_BYTES_MAX);
        let summary = self
            .call(
                peer,
                "LogSummary",
                client.log_summary(self.request(v1::LogSummaryRequest {})),
            )
            .await?;
        let summary = summary_from_proto(peer, summary)?;
        let origins: Vec<&PeerOrigin> = summary
            .origins
            .iter()
            .filter(|theirs| {
                let known = inner.shared.config.index_of(&theirs.origin).is_some();
                if !known {
                    tracing::debug!(peer = %peer, origin = %theirs.origin, "peer holds a log of a region outside this mesh; skipped");
                }
                known
            })
            .collect();

        let mut failed = None;
        for theirs in &origins {
            let ours = inner.digests.head(&theirs.origin).await?;
            if theirs.max_seq <= ours {
                continue;
            }
            if &theirs.origin == local {
                // Said every round on purpose: only restoring the lost
                // events (from the peer) makes this region's log whole.
                tracing::error!(
                    peer = %peer,
                    local_head = ours,
                    peer_max_seq = theirs.max_seq,
                    "peer holds events of this region's own log that this region does not; this log has lost events"
                );
                continue;
            }
            if let Err(error) = self
                .repair(&mut client, peer, &theirs.origin, ours, theirs.max_seq)
                .await
            {
                tracing::warn!(peer = %peer, origin = %theirs.origin, error = %error, "anti-entropy repair failed");
                failed.get_or_insert(error);
            }
        }

        if summary.bucket_events != inner.digests.bucket_events() {
            tracing::warn!(
                peer = %peer,
                peer_bucket_events = summary.bucket_events,
                bucket_events = inner.digests.bucket_events(),
                "peer digests its log in buckets of another size; digests not compared"
            );
        } else {
            for theirs in &origins {
                let ours = inner.digests.summarize(&theirs.origin).await?;
                let ours: BTreeMap<(u64, u64), BucketDigest> = ours
                    .buckets
                    .iter()
                    .map(|b| ((b.first_seq, b.last_seq), *b))
                    .collect();
                for bucket in &theirs.buckets {
                    if let Some(mine) = ours.get(&(bucket.first_seq, bucket.last_seq))
                        && !mine.agrees_with(bucket)
                    {
                        let digest = mine.digest;
                        self.report(DivergentBucket {
                            peer: peer.clone(),
                            origin: theirs.origin.clone(),
                            first_seq: bucket.first_seq,
                            last_seq: bucket.last_seq,
                            local_digest: digest,
                            peer_digest: bucket.digest,
                        });
                    }
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Fetches `origin`'s events after `after` up to `peer_max` from `peer`
    /// and applies them, a page at a time.
    async fn repair(
        &self,
        client: &mut AntiEntropyServiceClient<Channel>,
        peer: &RegionId,
        origin: &RegionId,
        mut after: u64,
        peer_max: u64,
    ) -> Result<()> {
        let inner = &self.inner;
        let store = &inner.shared.store;
        let first = after + 1;
        let mut repaired = 0u64;
        while after < peer_max {
            let limit = u32::try_from(peer_max - after)
                .unwrap_or(u32::MAX)
                .min(inner.config.fetch_events_max);
            let fetch = v1::FetchLogRequest {
                origin: origin.to_string(),
                after_seq: after,
                limit,
            };
            let response = self
                .call(peer, "FetchLog", client.fetch_log(self.request(fetch)))
                .await?;
            let events = fetched_from_proto(peer, origin, after, response.events)?;
            let Some(last) = events.last().map(|event| event.origin_seq) else {
                // It said it held more a moment ago; the next round asks again.
                tracing::warn!(peer = %peer, origin = %origin, after_seq = after, peer_max_seq = peer_max, "peer sent no events where its summary promised some");
                break;
            };
            let before = store.cursor(origin).await?;
            let spans = crate::trace::apply_spans(store.local_region(), before, &events);
            let cursor =
                store
                    .apply_remote(origin, events)
                    .await
                    .map_err(|source| Error::Apply {
                        peer: origin.clone(),
                        source,
                    })?;
            drop(spans);
            let moved = cursor.saturating_sub(before);
            repaired += moved;
            self.inner
                .stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .stats
                .repaired_events += moved;
            if inner.shared.peers.contains_key(origin) {
                inner.shared.record_applied(origin, cursor);
            }
            after = cursor.max(last);
        }
        if repaired > 0 {
            tracing::info!(peer = %peer, origin = %origin, first_seq = first, last_seq = after, events = repaired, "anti-entropy applied missing events");
        }
        Ok(())
    }

    fn report(&self, divergence: DivergentBucket) {
        let mut state = self
            .inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (
            divergence.peer.clone(),
            divergence.origin.clone(),
            divergence.first_seq,
        );
        if !state.reported.insert(key) {
            return;
        }
        tracing::error!(
            peer = %divergence.peer,
            origin = %divergence.origin,
            first_seq = divergence.first_seq,
            last_seq = divergence.last_seq,
            local_digest = %format_args!("{:016x}", divergence.local_digest),
            peer_digest = %format_args!("{:016x}", divergence.peer_digest),
            "log digests differ: this region and the peer hold different events of origin in first_seq..=last_seq"
        );
        state.stats.divergent_buckets += 1;
        if state.stats.divergences.len() < DIVERGENCES_KEPT_MAX {
            state.stats.divergences.push(divergence);
        }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.inner.config.call_timeout);
        request
    }

    async fn call<T>(
        &self,
        peer: &RegionId,
        call: &'static str,
        answer: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T> {
        let timeout = self.inner.config.call_timeout;
        match tokio::time::timeout(timeout, answer).await {
            Err(_) => Err(Error::CallTimeout {
                peer: peer.clone(),
                call,
                timeout_ms: timeout.as_millis(),
            }),
            Ok(Err(status)) => Err(Error::Call {
                peer: peer.clone(),
                call,
                code: status.code(),
                message: status.message().to_owned(),
            }),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }
}

// ------------------------------------------------------------ decoding

/// A peer's log summary, checked.
struct PeerSummary {
    bucket_events: u64,
    origins: Vec<PeerOrigin>,
}

struct PeerOrigin {
    origin: RegionId,
    max_seq: u64,
    buckets: Vec<BucketDigest>,
}

/// Sequence numbers are stored as signed 64-bit integers.
const SEQ_MAX: u64 = i64::MAX as u64;

fn summary_from_proto(peer: &RegionId, summary: v1::LogSummaryResponse) -> Result<PeerSummary> {
    let protocol = |reason: String| Error::Protocol {
        peer: peer.clone(),
        reason,
    };
    if summary.region != peer.as_str() {
        return Err(protocol(format!(
            "its log summary is region {:?}'s",
            summary.region
        )));
    }
    if summary.bucket_events == 0 {
        return Err(protocol(
            "log_summary.bucket_events: must be at least 1".to_owned(),
        ));
    }
    let mut origins: Vec<PeerOrigin> = Vec::with_capacity(summary.origins.len());
    for (i, raw) in summary.origins.into_iter().enumerate() {
        let field = format!("log_summary.origins[{i}]");
        let origin = region_id(&format!("{field}.origin"), &raw.origin)
            .map_err(|e| protocol(e.to_string()))?;
        if origins.iter().any(|known| known.origin == origin) {
            return Err(protocol(format!(
                "{field}.origin: {origin} is listed twice"
            )));
        }
        if raw.max_seq > SEQ_MAX {
            return Err(protocol(format!(
                "{field}.max_seq: {} is larger than {SEQ_MAX}",
                raw.max_seq
            )));
        }
        let mut buckets = Vec::with_capacity(raw.buckets.len());
        for (j, bucket) in raw.buckets.into_iter().enumerate() {
            if bucket.first_seq == 0
                || bucket.first_seq > bucket.last_seq
                || bucket.last_seq > raw.max_seq
            {
                return Err(protocol(format!(
                    "{field}.buckets[{j}]: {}..={} is not a range within 1..={}",
                    bucket.first_seq, bucket.last_seq, raw.max_seq
                )));
            }
            buckets.push(BucketDigest {
                first_seq: bucket.first_seq,
                last_seq: bucket.last_seq,
                digest: bucket.digest,
                text_free: bucket.text_free,
                redacted: bucket.redacted,
            });
        }
        origins.push(PeerOrigin {
            origin,
            max_seq: raw.max_seq,
            buckets,
        });
    }
    Ok(PeerSummary {
        bucket_events: summary.bucket_events,
        origins,
    })
}

/// Events a peer sent for `FetchLog(origin, after)`: checked like a
/// replication batch, and they must continue `origin`'s log at `after + 1`.
fn fetched_from_proto(
    peer: &RegionId,
    origin: &RegionId,
    after: u64,
    events: Vec<v1::Event>,
) -> Result<Vec<EventEnvelope>> {
    let protocol = |reason: String| Error::Protocol {
        peer: peer.clone(),
        reason,
    };
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let events = batch_from_proto("fetch_log", &v1::EventBatch { events })
        .map_err(|e| protocol(e.to_string()))?;
    if let Some(first) = events.first() {
        if &first.origin_region != origin {
            return Err(protocol(format!(
                "sent events of {} when asked for {origin}'s",
                first.origin_region
            )));
        }
        if first.origin_seq != after + 1 {
            return Err(protocol(format!(
                "sent {origin}'s log from {} when asked for it after {after}",
                first.origin_seq
            )));
        }
    }
    Ok(events)
}

// -------------------------------------------------------------- serving

/// The generated tonic server around [`AntiEntropyHandler`].
pub type AntiEntropyServer = AntiEntropyServiceServer<AntiEntropyHandler>;

/// Answers peers' log summaries and fetches, from this region's store:
/// any origin's log, not only this region's own (that is the relay).
#[derive(Clone)]
pub struct AntiEntropyHandler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AntiEntropyHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AntiEntropyHandler")
            .field("local", self.inner.shared.local())
            .finish_non_exhaustive()
    }
}

impl AntiEntropyHandler {
    /// Lets in gateways of the mesh's other regions; refuses anyone else,
    /// with a log line.
    fn admit<T>(&self, request: &Request<T>, call: &str) -> Result<RegionId, Status> {
        // `require` logs its own refusals.
        let identity = meridian_tls::require(request, &[Service::Gateway])?;
        let shared = &self.inner.shared;
        if identity.region() == shared.local()
            || shared.config.index_of(identity.region()).is_none()
        {
            let reason = format!(
                "{identity} is not a gateway of another region of {}'s mesh",
                shared.local()
            );
            tracing::warn!(peer = %identity, call, reason = %reason, "anti-entropy call refused");
            return Err(Status::permission_denied(reason));
        }
        Ok(identity.region().clone())
    }
}

#[tonic::async_trait]
impl v1::anti_entropy_service_server::AntiEntropyService for AntiEntropyHandler {
    async fn log_summary(
        &self,
        request: Request<v1::LogSummaryRequest>,
    ) -> Result<Response<v1::LogSummaryResponse>, Status> {
        self.admit(&request, "LogSummary")?;
        let inner = &self.inner;
        let mut origins = Vec::with_capacity(inner.shared.config.regions.len());
        for origin in &inner.shared.config.regions {
            let summary = inner
                .digests
                .summarize(origin)
                .await
                .map_err(|e| e.to_status())?;
            let buckets = summary
                .buckets
                .iter()
                .map(|b| v1::BucketDigest {
                    first_seq: b.first_seq,
                    last_seq: b.last_seq,
                    digest: b.digest,
                    text_free: b.text_free,
                    redacted: b.redacted,
                })
                .collect();
            origins.push(v1::OriginSummary {
                origin: origin.to_string(),
                max_seq: summary.max_seq,
                buckets,
            });
        }
        Ok(Response::new(v1::LogSummaryResponse {
            region: inner.shared.local().to_string(),
            bucket_events: inner.digests.bucket_events(),
            origins,
        }))
    }

    async fn fetch_log(
        &self,
        request: Request<v1::FetchLogRequest>,
    ) -> Result<Response<v1::FetchLogResponse>, Status> {
        let peer = self.admit(&request, "FetchLog")?;
        let inner = &self.inner;
        let request = request.into_inner();
        let origin = region_id("origin", &request.origin)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if inner.shared.config.index_of(&origin).is_none() {
            return Err(Status::invalid_argument(format!(
                "origin: {origin} is not a region of this mesh"
            )));
        }
        if request.after_seq > SEQ_MAX {
            return Err(Status::invalid_argument(format!(
                "after_seq: {} is larger than {SEQ_MAX}",
                request.after_seq
            )));
        }
        let limit = if request.limit == 0 {
            FETCH_EVENTS_MAX
        } else {
            request.limit.min(FETCH_EVENTS_MAX)
        };
        // The head first: everything up to it is dense, so the answer is
        // a prefix of what the head promises.
        let max_seq = inner
            .digests
            .head(&origin)
            .await
            .map_err(|e| e.to_status())?;
        let page = inner
            .shared
            .store
            .events_after(&origin, request.after_seq, limit)
            .await
            .map_err(|e| Error::from(e).to_status())?;
        // Residency: the peer gets a pinned ticket's text only inside its
        // set, and never a redacted copy there; the answer stops before an
        // event this region cannot serve so, and the peer fetches the rest
        // from a region that can (the origin, or another region of the set).
        let page = for_peer(inner.shared.store.as_ref(), &peer, &page, Unvouched::Stop)
            .await
            .map_err(|e| Error::from(e).to_status())?;
        let mut events = Vec::with_capacity(page.len());
        let mut bytes = 0usize;
        for event in page.iter().take_while(|event| event.origin_seq <= max_seq) {
            let encoded = event_to_proto(event);
            let size = encoded.encoded_len() + 8;
            if !events.is_empty() && bytes + size > FETCH_BYTES_MAX {
                break;
            }
            bytes += size;
            events.push(encoded);
        }
        Ok(Response::new(v1::FetchLogResponse { events, max_seq }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(name: &str) -> RegionId {
        RegionId::new(name).unwrap()
    }

    fn summary(origins: Vec<v1::OriginSummary>) -> v1::LogSummaryResponse {
        v1::LogSummaryResponse {
            region: "eu-west".into(),
            bucket_events: 4,
            origins,
        }
    }

    fn origin(name: &str, max_seq: u64, buckets: &[(u64, u64)]) -> v1::OriginSummary {
        v1::OriginSummary {
            origin: name.into(),
            max_seq,
            buckets: buckets
                .iter()
                .map(|&(first_seq, last_seq)| v1::BucketDigest {
                    first_seq,
                    last_seq,
                    digest: 7,
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn summaries_are_checked_field_by_field() {
        let peer = region("eu-west");
        let good = summary(vec![
            origin("us-east", 6, &[(1, 4), (5, 6)]),
            origin("eu-west", 0, &[]),
        ]);
        let decoded = summary_from_proto(&peer, good).unwrap();
        assert_eq!(decoded.bucket_events, 4);
        assert_eq!(decoded.origins.len(), 2);
        assert_eq!(
            decoded.origins[0].buckets[1],
            BucketDigest {
                first_seq: 5,
                last_seq: 6,
                digest: 7,
                text_free: 0,
                redacted: false
            }
        );

        let refused = |response: v1::LogSummaryResponse| {
            summary_from_proto(&peer, response)
                .err()
                .unwrap()
                .to_string()
        };
        let mut wrong_region = summary(vec![]);
        wrong_region.region = "us-east".into();
        assert!(refused(wrong_region).contains("region \"us-east\"'s"));
        let mut no_size = summary(vec![]);
        no_size.bucket_events = 0;
        assert!(refused(no_size).contains("log_summary.bucket_events"));
        assert!(
            refused(summary(vec![origin("US East", 1, &[])]))
                .contains("log_summary.origins[0].origin")
        );
        assert!(
            refused(summary(vec![
                origin("us-east", 1, &[]),
                origin("us-east", 2, &[])
            ]))
            .contains("listed twice")
        );
        assert!(
            refused(summary(vec![origin("us-east", u64::MAX, &[])]))
                .contains("log_summary.origins[0].max_seq")
        );
        assert!(
            refused(summary(vec![origin("us-east", 4, &[(1, 8)])]))
                .contains("log_summary.origins[0].buckets[0]")
        );
        assert!(refused(summary(vec![origin("us-east", 4, &[(0, 2)])])).contains("buckets[0]"));
        assert!(refused(summary(vec![origin("us-east", 4, &[(3, 2)])])).contains("buckets[0]"));
    }

    #[test]
    fn bad_configs_name_the_setting() {
        let good = AntiEntropyConfig::new(Duration::from_secs(1));
        good.validate().unwrap();
        type Spoil = fn(&mut AntiEntropyConfig);
        let cases: [(&str, Spoil); 5] = [
            ("interval", |c| c.interval = Duration::ZERO),
            ("call_timeout", |c| c.call_timeout = Duration::ZERO),
            ("bucket_events", |c| c.bucket_events = 0),
            ("bucket_events", |c| c.bucket_events = BUCKET_EVENTS_MAX + 1),
            ("fetch_events_max", |c| {
                c.fetch_events_max = FETCH_EVENTS_MAX + 1
            }),
        ];
        for (needle, spoil) in cases {
            let mut config = good.clone();
            spoil(&mut config);
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
