//! The connection to etcd: one lazily connected channel per endpoint, a
//! preferred endpoint that moves on when a call fails, a deadline on every
//! call and a bounded retry budget.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tonic::{
    Code, Request, Status,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

use super::EtcdConfig;
use crate::error::{Error, Result};

#[derive(Clone)]
pub(crate) struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    endpoints: Vec<(String, Channel)>,
    preferred: AtomicUsize,
    rpc_timeout: Duration,
    retry_attempts_max: u32,
    retry_budget: Duration,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Client {
    pub fn new(config: &EtcdConfig) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(Error::invalid(
                "endpoints",
                "no etcd endpoint given; pass at least one, like http://127.0.0.1:2379",
            ));
        }
        if config.rpc_timeout.is_zero() || config.retry_attempts_max == 0 {
            return Err(Error::invalid(
                "rpc_timeout",
                "the rpc timeout and the retry attempts must be greater than zero",
            ));
        }
        let mut endpoints = Vec::with_capacity(config.endpoints.len());
        for address in &config.endpoints {
            let endpoint = Endpoint::from_shared(address.clone())
                .map_err(|err| Error::Endpoint {
                    endpoint: address.clone(),
                    reason: err.to_string(),
                })?
                .connect_timeout(config.connect_timeout)
                .tcp_nodelay(true)
                // Finds a silently dead member (no RST) within about two rpc timeouts.
                .http2_keep_alive_interval(config.rpc_timeout)
                .keep_alive_timeout(config.rpc_timeout)
                .keep_alive_while_idle(true);
            endpoints.push((address.clone(), endpoint.connect_lazy()));
        }
        Ok(Client {
            inner: Arc::new(ClientInner {
                endpoints,
                preferred: AtomicUsize::new(0),
                rpc_timeout: config.rpc_timeout,
                retry_attempts_max: config.retry_attempts_max,
                retry_budget: config.retry_budget,
            }),
        })
    }

    pub fn rpc_timeout(&self) -> Duration {
        self.inner.rpc_timeout
    }

    /// The endpoint calls go to now, by index and channel.
    pub fn preferred(&self) -> (usize, Channel) {
        let index = self.inner.preferred.load(Ordering::Relaxed) % self.inner.endpoints.len();
        (index, self.inner.endpoints[index].1.clone())
    }

    pub fn endpoint_name(&self, index: usize) -> &str {
        self.inner
            .endpoints
            .get(index)
            .map_or("?", |(name, _)| name.as_str())
    }

    /// A call to endpoint `index` failed: prefer the next one, unless another
    /// caller already moved on.
    pub fn failed(&self, index: usize) {
        let next = (index + 1) % self.inner.endpoints.len();
        let _ = self.inner.preferred.compare_exchange(
            index,
            next,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Runs a unary call with a deadline, retrying failures that may be an
    /// unreachable or leaderless member on the next endpoint, within the
    /// retry budget. `call` gets the channel and the deadline to put on the
    /// request. Callers of non-idempotent calls must make them safe to repeat
    /// (the transactions here read back whether their own write landed).
    pub async fn unary<T, F, Fut>(&self, rpc: &'static str, mut call: F) -> Result<T>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let mut backoff = BACKOFF_FIRST;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (index, channel) = self.preferred();
            let status = match tokio::time::timeout(
                self.inner.rpc_timeout,
                call(channel, self.inner.rpc_timeout),
            )
            .await
            {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => Status::deadline_exceeded(format!(
                    "no answer from {} within {} ms",
                    self.endpoint_name(index),
                    self.inner.rpc_timeout.as_millis()
                )),
            };
            let out_of_budget = started.elapsed() + backoff > self.inner.retry_budget;
            if !retryable(&status) || attempts >= self.inner.retry_attempts_max || out_of_budget {
                return Err(Error::Etcd {
                    rpc,
                    attempts,
                    status: Box::new(status),
                });
            }
            tracing::debug!(rpc, endpoint = self.endpoint_name(index), code = ?status.code(), message = status.message(), "etcd call failed, retrying");
            self.failed(index);
            tokio::time::sleep(backoff).await;
            backoff = next_backoff(backoff);
        }
    }
}

pub(crate) fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(BACKOFF_MAX)
}

pub(crate) fn first_backoff() -> Duration {
    BACKOFF_FIRST
}

/// Failures that say "this member cannot serve now" rather than "the request
/// is wrong": no leader, leader changed, unreachable, timed out.
fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::Unknown
    )
}

/// A unary request with its deadline, for the server to honour too.
pub(crate) fn request<T>(message: T, deadline: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(deadline);
    request
}

/// A streaming request that etcd cancels when its member loses the leader,
/// so a partitioned member cannot keep a watch or a keep-alive silently
/// stalled (etcd's own clients set the same metadata).
pub(crate) fn leader_required<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("hasleader", MetadataValue::from_static("true"));
    request
}
