//! The etcd [`Coordinator`], over etcd's v3 gRPC API.
//!
//! Transactions (all on the keys of [`KeyLayout`]; `ver` is a key's version,
//! 0 when absent; `mod` its mod revision, 0 when absent):
//! - acquire: `ver(lease) == 0 && ver(takeover) == 0` → put `lease` attached
//!   to a fresh etcd lease; else read both to say why.
//! - takeover: `ver(lease) == 0 && ver(takeover) == 0 &&
//!   mod(acknowledged) < expected + 1 && ver(each successor's lease) > 0` →
//!   put `takeover` (the ordered successor list in it); the revision of that
//!   put is the fencing token. Two concurrent takeovers cannot both see
//!   `ver(takeover) == 0`.
//! - acknowledge: `mod(takeover) == token` → delete `takeover`, put
//!   `acknowledged`.
//!
//! A transaction whose answer was lost may have been applied; before
//! reporting a failed compare the coordinator checks whether the write that
//! is there is its own (a nonce in the takeover, the lease id on the lease,
//! the token in the acknowledgement), so a retry never turns a win into a
//! loss.

mod client;
mod keepalive;
mod watch;

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use meridian_core::{Clock, RegionId};
use tokio::{sync::watch as tokio_watch, task::JoinHandle};

use self::client::{Client, request};
use crate::{
    Coordinator,
    error::{Error, Result},
    keys::{self, AcknowledgedRecord, KeyKind, KeyLayout, LeaseRecord, TakeoverRecord},
    lease::{self, Control, Lease, LeaseShared},
    local::check_takeover_regions,
    types::{LeaseId, LiveLease, RegionStatus, RegionView, Revision, Takeover},
};

#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub(crate) mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

use pb::{
    etcdserverpb::{
        Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest,
        RangeRequest, RequestOp, TxnRequest, TxnResponse, compare, kv_client::KvClient,
        lease_client::LeaseClient, request_op, response_op,
    },
    mvccpb::KeyValue,
};

/// How to reach etcd and how hard to try.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs of the cluster's members, like `http://10.0.0.1:2379`.
    /// Calls go to one member and move to the next when it fails.
    pub endpoints: Vec<String>,
    /// Where Meridian's keys live.
    pub key_prefix: String,
    /// How long before a lease's earliest possible expiry its holder fences
    /// itself. Must be shorter than the granted ttl.
    pub safety_margin: Duration,
    /// The deadline of every call (and of each keep-alive round trip).
    pub rpc_timeout: Duration,
    pub connect_timeout: Duration,
    /// At most this many attempts per operation...
    pub retry_attempts_max: u32,
    /// ...and no new attempt once this much time has passed.
    pub retry_budget: Duration,
}

impl EtcdConfig {
    /// Defaults for everything but the endpoints.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            key_prefix: KeyLayout::DEFAULT_PREFIX.to_owned(),
            safety_margin: Duration::from_secs(1),
            rpc_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            retry_attempts_max: 5,
            retry_budget: Duration::from_secs(5),
        }
    }
}

/// The etcd-backed [`Coordinator`]. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct EtcdCoordinator {
    client: Client,
    layout: KeyLayout,
    safety_margin: Duration,
    clock: Arc<MonotonicClock>,
}

impl EtcdCoordinator {
    /// Prepares connections to `config.endpoints`. Connects lazily: nothing
    /// is sent until the first call, so this succeeds while etcd is down.
    /// Must run inside a Tokio runtime.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        let layout = KeyLayout::new(config.key_prefix.clone())?;
        let client = Client::new(&config)?;
        Ok(EtcdCoordinator {
            client,
            layout,
            safety_margin: config.safety_margin,
            clock: Arc::new(MonotonicClock::new()),
        })
    }

    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    async fn txn(&self, txn: TxnRequest) -> Result<TxnResponse> {
        self.client
            .unary("Txn", |channel, deadline| {
                let txn = txn.clone();
                async move { KvClient::new(channel).txn(request(txn, deadline)).await }
            })
            .await
    }

    async fn range_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let range = RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: keys::prefix_range_end(prefix.as_bytes()),
            ..RangeRequest::default()
        };
        let response = self
            .client
            .unary("Range", |channel, deadline| {
                let range = range.clone();
                async move { KvClient::new(channel).range(request(range, deadline)).await }
            })
            .await?;
        let revision = response
            .header
            .map(|header| Revision::from_etcd(header.revision))
            .unwrap_or_default();
        Ok((response.kvs, revision))
    }

    async fn revoke(&self, lease_id: LeaseId) -> Result<()> {
        revoke(&self.client, lease_id).await
    }
}

#[tonic::async_trait]
impl Coordinator for EtcdCoordinator {
    async fn acquire_lease(&self, region: &RegionId, ttl: Duration) -> Result<Lease> {
        lease::check_margin(ttl, self.safety_margin)?;
        // etcd leases have whole seconds; round up so the holder never gets less.
        let ttl_s = i64::try_from(ttl.as_millis().div_ceil(1000))
            .unwrap_or(i64::MAX)
            .max(1);
        let sent_at = self.clock.now();
        let grant = self
            .client
            .unary("LeaseGrant", |channel, deadline| async move {
                LeaseClient::new(channel)
                    .lease_grant(request(LeaseGrantRequest { ttl: ttl_s, id: 0 }, deadline))
                    .await
            })
            .await?;
        if !grant.error.is_empty() || grant.ttl <= 0 {
            return Err(Error::Protocol {
                rpc: "LeaseGrant",
                reason: format!("ttl {} s, error {:?}", grant.ttl, grant.error),
            });
        }
        let lease_id = LeaseId(grant.id);
        let granted = Duration::from_secs(grant.ttl.unsigned_abs());
        if let Err(err) = lease::check_margin(granted, self.safety_margin) {
            let _ = self.revoke(lease_id).await;
            return Err(err);
        }
        let lease_key = self.layout.lease_key(region);
        let takeover_key = self.layout.takeover_key(region);
        let record = LeaseRecord {
            region: region.clone(),
            ttl_ms: u64::try_from(granted.as_millis()).unwrap_or(u64::MAX),
        };
        let response = self
            .txn(TxnRequest {
                compare: vec![
                    version_equals(&lease_key, 0),
                    version_equals(&takeover_key, 0),
                ],
                success: vec![put(&lease_key, keys::encode(&record), grant.id)],
                failure: vec![range_one(&lease_key), range_one(&takeover_key)],
            })
            .await;
        let response = match response {
            Ok(response) => response,
            Err(err) => {
                let _ = self.revoke(lease_id).await;
                return Err(err);
            }
        };
        if !response.succeeded {
            let found = range_results(&response);
            let held = found.first().and_then(Option::as_ref);
            // A retried transaction may have put our own lease there already.
            let ours = held.is_some_and(|kv| kv.lease == grant.id);
            if !ours {
                let _ = self.revoke(lease_id).await;
                if let Some(kv) = held {
                    return Err(Error::LeaseHeld {
                        region: region.clone(),
                        lease_id: LeaseId(kv.lease),
                    });
                }
                if let Some(kv) = found.get(1).and_then(Option::as_ref) {
                    return Err(Error::TakenOver {
                        takeover: decode_takeover(kv)?,
                    });
                }
                return Err(Error::Protocol {
                    rpc: "Txn",
                    reason: "acquire compare failed but both keys are absent".into(),
                });
            }
        }
        let shared = LeaseShared::new(self.clock.clone(), granted, self.safety_margin, sent_at);
        let (stop, stopped) = tokio_watch::channel(false);
        let task = keepalive::spawn(
            self.client.clone(),
            lease_id,
            shared.clone(),
            self.safety_margin,
            stopped,
        );
        tracing::info!(region = %region, lease_id = %lease_id, ttl_s = grant.ttl, "lease acquired");
        let control = LeaseControl {
            client: self.client.clone(),
            stop,
            task,
        };
        Ok(Lease::new(
            region.clone(),
            lease_id,
            shared,
            Control::Etcd(control),
        ))
    }

    async fn region_status(&self, region: &RegionId) -> Result<RegionStatus> {
        let (kvs, revision) = self
            .range_prefix(&self.layout.region_prefix(region))
            .await?;
        let mut status = RegionStatus::empty(region.clone(), revision);
        for kv in &kvs {
            if let Some((_, kind)) = self.layout.parse(&kv.key) {
                apply(&mut status, kind, Some(kv))?;
            }
        }
        Ok(status)
    }

    async fn watch_regions(&self) -> Result<tokio_watch::Receiver<RegionView>> {
        watch::start(self.client.clone(), self.layout.clone()).await
    }

    async fn record_takeover(
        &self,
        failed_region: &RegionId,
        successors: &[RegionId],
        expected_revision: Revision,
    ) -> Result<Takeover> {
        let (successor, also) = check_takeover_regions(failed_region, successors)?;
        let lease_key = self.layout.lease_key(failed_region);
        let takeover_key = self.layout.takeover_key(failed_region);
        let successor_keys: Vec<String> = successors
            .iter()
            .map(|region| self.layout.lease_key(region))
            .collect();
        let acknowledged_key = self.layout.acknowledged_key(failed_region);
        let record = TakeoverRecord {
            failed_region: failed_region.clone(),
            successor: successor.clone(),
            also: also.to_vec(),
            recorded_at: Timestamp::now(),
            nonce: uuid::Uuid::now_v7().to_string(),
        };
        let mut compares = vec![
            version_equals(&lease_key, 0),
            version_equals(&takeover_key, 0),
            compare_of(
                &acknowledged_key,
                compare::CompareResult::Less,
                compare::TargetUnion::ModRevision(expected_revision.to_etcd().saturating_add(1)),
            ),
        ];
        compares.extend(successor_keys.iter().map(|key| {
            compare_of(
                key,
                compare::CompareResult::Greater,
                compare::TargetUnion::Version(0),
            )
        }));
        let mut reads = vec![
            range_one(&lease_key),
            range_one(&takeover_key),
            range_one(&acknowledged_key),
        ];
        reads.extend(successor_keys.iter().map(|key| range_one(key)));
        let response = self
            .txn(TxnRequest {
                compare: compares,
                success: vec![put(&takeover_key, keys::encode(&record), 0)],
                failure: reads,
            })
            .await?;
        if response.succeeded {
            let fencing_token = header_revision(&response)?;
            tracing::info!(region = %failed_region, successor = %successor, also = ?also, fencing_token = %fencing_token, "takeover recorded");
            return Ok(record.into_takeover(fencing_token));
        }
        let found = range_results(&response);
        let pending = match found.get(1).and_then(Option::as_ref) {
            Some(kv) => {
                let existing: TakeoverRecord = keys::decode(&kv.key, &kv.value)?;
                let fencing_token = Revision::from_etcd(kv.mod_revision);
                if existing.nonce == record.nonce {
                    // Our own write, applied by an attempt whose answer was lost.
                    return Ok(existing.into_takeover(fencing_token));
                }
                Some(existing.into_takeover(fencing_token))
            }
            None => None,
        };
        if let Some(kv) = found.first().and_then(Option::as_ref) {
            return Err(Error::RegionAlive {
                region: failed_region.clone(),
                lease_id: LeaseId(kv.lease),
            });
        }
        if let Some(takeover) = pending {
            return Err(Error::TakenOver { takeover });
        }
        for (index, region) in successors.iter().enumerate() {
            if found.get(3 + index).and_then(Option::as_ref).is_none() {
                return Err(Error::SuccessorNotLive {
                    failed_region: failed_region.clone(),
                    successor: region.clone(),
                });
            }
        }
        if let Some(kv) = found.get(2).and_then(Option::as_ref)
            && kv.mod_revision > expected_revision.to_etcd()
        {
            return Err(Error::StaleObservation {
                region: failed_region.clone(),
                expected_revision,
                acknowledged_at: Revision::from_etcd(kv.mod_revision),
            });
        }
        Err(Error::Protocol {
            rpc: "Txn",
            reason: "takeover compare failed but every condition holds".into(),
        })
    }

    async fn takeover_of(&self, region: &RegionId) -> Result<Option<Takeover>> {
        Ok(self.region_status(region).await?.takeover)
    }

    async fn acknowledge_takeover(&self, region: &RegionId, fencing_token: Revision) -> Result<()> {
        let status = self.region_status(region).await?;
        let Some(takeover) = status
            .takeover
            .clone()
            .filter(|takeover| takeover.fencing_token == fencing_token)
        else {
            if status.acknowledged == Some(fencing_token) {
                return Ok(());
            }
            return Err(Error::NoSuchTakeover {
                region: region.clone(),
                fencing_token,
                pending: status.takeover.map(|takeover| takeover.fencing_token),
            });
        };
        let takeover_key = self.layout.takeover_key(region);
        let acknowledged_key = self.layout.acknowledged_key(region);
        let record = AcknowledgedRecord {
            fencing_token,
            successor: takeover.successor.clone(),
            acknowledged_at: Timestamp::now(),
        };
        let response = self
            .txn(TxnRequest {
                compare: vec![compare_of(
                    &takeover_key,
                    compare::CompareResult::Equal,
                    compare::TargetUnion::ModRevision(fencing_token.to_etcd()),
                )],
                success: vec![
                    delete_one(&takeover_key),
                    put(&acknowledged_key, keys::encode(&record), 0),
                ],
                failure: vec![range_one(&takeover_key), range_one(&acknowledged_key)],
            })
            .await?;
        if response.succeeded {
            tracing::info!(region = %region, fencing_token = %fencing_token, "takeover acknowledged");
            return Ok(());
        }
        let found = range_results(&response);
        if let Some(kv) = found.get(1).and_then(Option::as_ref) {
            let acknowledged: AcknowledgedRecord = keys::decode(&kv.key, &kv.value)?;
            if acknowledged.fencing_token == fencing_token {
                return Ok(());
            }
        }
        Err(Error::NoSuchTakeover {
            region: region.clone(),
            fencing_token,
            pending: found
                .first()
                .and_then(Option::as_ref)
                .map(|kv| Revision::from_etcd(kv.mod_revision)),
        })
    }
}

/// What an etcd [`Lease`] handle uses to stop or revoke its lease.
pub(crate) struct LeaseControl {
    client: Client,
    /// `true` (or dropped) stops the keep-alives.
    stop: tokio_watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl LeaseControl {
    pub fn stop_renewing(&self) {
        self.stop.send_replace(true);
    }

    pub async fn release(&self, lease_id: LeaseId) -> Result<()> {
        self.task.abort();
        revoke(&self.client, lease_id).await
    }
}

async fn revoke(client: &Client, lease_id: LeaseId) -> Result<()> {
    let revoked = client
        .unary("LeaseRevoke", |channel, deadline| async move {
            LeaseClient::new(channel)
                .lease_revoke(request(LeaseRevokeRequest { id: lease_id.0 }, deadline))
                .await
        })
        .await;
    match revoked {
        Ok(_) => Ok(()),
        // Already gone is what revoking wants.
        Err(Error::Etcd { status, .. }) if status.code() == tonic::Code::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

/// Folds one of a region's keys (or its absence) into its status.
pub(crate) fn apply(status: &mut RegionStatus, kind: KeyKind, kv: Option<&KeyValue>) -> Result<()> {
    match (kind, kv) {
        (KeyKind::Lease, Some(kv)) => {
            // The key's existence is what makes the lease live; the record
            // only adds the ttl.
            let ttl_ms = keys::decode::<LeaseRecord>(&kv.key, &kv.value)
                .map(|record| record.ttl_ms)
                .unwrap_or(0);
            status.lease = Some(LiveLease {
                lease_id: LeaseId(kv.lease),
                ttl: Duration::from_millis(ttl_ms),
            });
        }
        (KeyKind::Lease, None) => status.lease = None,
        (KeyKind::Takeover, Some(kv)) => status.takeover = Some(decode_takeover(kv)?),
        (KeyKind::Takeover, None) => status.takeover = None,
        (KeyKind::Acknowledged, Some(kv)) => {
            let record: AcknowledgedRecord = keys::decode(&kv.key, &kv.value)?;
            status.acknowledged = Some(record.fencing_token);
        }
        (KeyKind::Acknowledged, None) => status.acknowledged = None,
    }
    Ok(())
}

fn decode_takeover(kv: &KeyValue) -> Result<Takeover> {
    let record: TakeoverRecord = keys::decode(&kv.key, &kv.value)?;
    Ok(record.into_takeover(Revision::from_etcd(kv.mod_revision)))
}

fn header_revision(response: &TxnResponse) -> Result<Revision> {
    match &response.header {
        Some(header) if header.revision > 0 => Ok(Revision::from_etcd(header.revision)),
        _ => Err(Error::Protocol {
            rpc: "Txn",
            reason: "no revision in the response header".into(),
        }),
    }
}

fn compare_of(key: &str, result: compare::CompareResult, target: compare::TargetUnion) -> Compare {
    let target_kind = match target {
        compare::TargetUnion::Version(_) => compare::CompareTarget::Version,
        compare::TargetUnion::CreateRevision(_) => compare::CompareTarget::Create,
        compare::TargetUnion::ModRevision(_) => compare::CompareTarget::Mod,
        compare::TargetUnion::Value(_) => compare::CompareTarget::Value,
        compare::TargetUnion::Lease(_) => compare::CompareTarget::Lease,
    };
    Compare {
        result: result as i32,
        target: target_kind as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(target),
        range_end: Vec::new(),
    }
}

fn version_equals(key: &str, version: i64) -> Compare {
    compare_of(
        key,
        compare::CompareResult::Equal,
        compare::TargetUnion::Version(version),
    )
}

fn put(key: &str, value: Vec<u8>, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease,
            ..PutRequest::default()
        })),
    }
}

fn delete_one(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..DeleteRangeRequest::default()
            },
        )),
    }
}

fn range_one(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..RangeRequest::default()
        })),
    }
}

/// The key each range operation of a transaction's branch found, in order.
fn range_results(response: &TxnResponse) -> Vec<Option<&KeyValue>> {
    response
        .responses
        .iter()
        .map(|op| match &op.response {
            Some(response_op::Response::ResponseRange(range)) => range.kvs.first(),
            _ => None,
        })
        .collect()
}

/// Monotonic time expressed as timestamps: the wall clock read once, plus
/// the monotonic time elapsed since. Lease deadlines computed on it are
/// immune to wall-clock steps, and follow Tokio's clock (so a paused test
/// runtime pauses them too).
pub(crate) struct MonotonicClock {
    anchor_wall: Timestamp,
    anchor: tokio::time::Instant,
}

impl MonotonicClock {
    fn new() -> Self {
        MonotonicClock {
            anchor_wall: Timestamp::now(),
            anchor: tokio::time::Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Timestamp {
        lease::add(self.anchor_wall, self.anchor.elapsed())
    }
}
