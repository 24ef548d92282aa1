//! The background task that keeps one etcd lease alive over a
//! `LeaseKeepAlive` stream, moves to the next member when a stream breaks,
//! and flips the handle to `Fenced` at the fence deadline whatever it is
//! waiting on.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{sync::mpsc, sync::watch, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::{
    client::{self, Client, request},
    pb::etcdserverpb::{
        LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest,
        lease_client::LeaseClient,
    },
};
use crate::{
    lease::{self, LeaseShared},
    types::LeaseId,
};

/// The shortest wait for anything, so a tiny ttl cannot spin the task.
const WAIT_MIN: Duration = Duration::from_millis(20);

pub(crate) fn spawn(
    client: Client,
    lease_id: LeaseId,
    shared: Arc<LeaseShared>,
    safety_margin: Duration,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let renew_every = lease::renew_interval(shared.ttl(), safety_margin).max(WAIT_MIN);
    let keeper = Keeper {
        client,
        lease_id,
        shared,
        renew_every,
        stop,
    };
    tokio::spawn(keeper.run())
}

struct Keeper {
    client: Client,
    lease_id: LeaseId,
    shared: Arc<LeaseShared>,
    renew_every: Duration,
    stop: watch::Receiver<bool>,
}

enum Round {
    /// The stream broke; open another on the next member.
    Broken,
    /// The store says the lease is gone.
    Lost,
    /// Renewals were stopped.
    Stopped,
}

impl Keeper {
    async fn run(self) {
        let mut backoff = client::first_backoff();
        loop {
            if self.stopped() {
                return self.without_renewals().await;
            }
            let (index, channel) = self.client.preferred();
            match self.renew_over_stream(channel).await {
                Round::Lost => {
                    tracing::warn!(lease_id = %self.lease_id, "lease no longer exists in etcd");
                    self.shared.mark_lost();
                    return;
                }
                Round::Stopped => return self.without_renewals().await,
                Round::Broken => {
                    self.shared.renewal_failed();
                    tracing::warn!(
                        lease_id = %self.lease_id,
                        endpoint = self.client.endpoint_name(index),
                        state = ?self.shared.refresh(),
                        "lease keep-alive failed, trying the next endpoint"
                    );
                    self.client.failed(index);
                    if self.fenced_wait(self.sleep_or_stop(backoff)).await {
                        return self.without_renewals().await;
                    }
                    backoff = client::next_backoff(backoff);
                }
            }
        }
    }

    /// One keep-alive stream: a renewal every `renew_every`, each answered
    /// within the round-trip deadline, until something breaks.
    async fn renew_over_stream(&self, channel: tonic::transport::Channel) -> Round {
        let deadline = self
            .client
            .rpc_timeout()
            .min(self.renew_every)
            .max(WAIT_MIN);
        let (requests, outgoing) = mpsc::channel::<LeaseKeepAliveRequest>(1);
        // etcd answers the stream's headers only with its first message, so
        // the first renewal must be queued before the stream is opened.
        let mut sent_at = self.shared.now();
        if requests
            .try_send(LeaseKeepAliveRequest {
                id: self.lease_id.0,
            })
            .is_err()
        {
            return Round::Broken;
        }
        let mut lease_client = LeaseClient::new(channel);
        let opening =
            lease_client.lease_keep_alive(client::leader_required(ReceiverStream::new(outgoing)));
        let mut responses: Streaming<LeaseKeepAliveResponse> = match self
            .fenced_wait(tokio::time::timeout(deadline, opening))
            .await
        {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                tracing::debug!(lease_id = %self.lease_id, code = ?status.code(), message = status.message(), "keep-alive stream refused");
                return Round::Broken;
            }
            Err(_) => return Round::Broken,
        };
        loop {
            match self
                .fenced_wait(tokio::time::timeout(deadline, responses.message()))
                .await
            {
                Ok(Ok(Some(answer))) if answer.ttl > 0 => self.shared.renewed(sent_at),
                Ok(Ok(Some(_))) => return Round::Lost,
                Ok(Ok(None)) => return Round::Broken,
                Ok(Err(status)) => {
                    tracing::debug!(lease_id = %self.lease_id, code = ?status.code(), message = status.message(), "keep-alive stream failed");
                    return Round::Broken;
                }
                Err(_) => return Round::Broken,
            }
            if self.fenced_wait(self.sleep_or_stop(self.renew_every)).await {
                return Round::Stopped;
            }
            sent_at = self.shared.now();
            if requests
                .send(LeaseKeepAliveRequest {
                    id: self.lease_id.0,
                })
                .await
                .is_err()
            {
                return Round::Broken;
            }
        }
    }

    /// After renewals stop: the handle still fences on time, and once the
    /// lease should have expired the task asks etcd until it confirms, so
    /// the handle ends `Lost`. Ends early when nobody can look any more.
    async fn without_renewals(self) {
        self.shared.renewal_failed();
        self.fenced_wait(tokio::time::sleep(self.shared.until_expiry()))
            .await;
        loop {
            if self.shared.is_lost() || self.abandoned() {
                return;
            }
            let lease_id = self.lease_id;
            let answer = self
                .client
                .unary("LeaseTimeToLive", |channel, deadline| async move {
                    LeaseClient::new(channel)
                        .lease_time_to_live(request(
                            LeaseTimeToLiveRequest {
                                id: lease_id.0,
                                keys: false,
                            },
                            deadline,
                        ))
                        .await
                })
                .await;
            match answer {
                Ok(answer) if answer.ttl <= 0 => {
                    self.shared.mark_lost();
                    return;
                }
                Ok(_) | Err(_) => {
                    self.shared.refresh();
                    tokio::time::sleep(self.renew_every).await;
                }
            }
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }

    /// The handle is gone and nobody subscribed to its state.
    fn abandoned(&self) -> bool {
        self.stop.has_changed().is_err() && !self.shared.has_subscribers()
    }

    /// Sleeps `wait`; `true` if renewals were stopped meanwhile.
    fn sleep_or_stop(&self, wait: Duration) -> impl Future<Output = bool> + 'static {
        let mut stop = self.stop.clone();
        async move {
            if *stop.borrow() {
                return true;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => false,
                changed = stop.changed() => changed.is_err() || *stop.borrow(),
            }
        }
    }

    /// Runs `work`, refreshing the handle's state when the fence deadline
    /// passes meanwhile, so subscribers see `Fenced` on time.
    async fn fenced_wait<F: Future>(&self, work: F) -> F::Output {
        tokio::pin!(work);
        loop {
            match self.shared.until_fence() {
                Some(left) => {
                    tokio::select! {
                        output = &mut work => return output,
                        () = tokio::time::sleep(left) => { self.shared.refresh(); }
                    }
                }
                None => return work.await,
            }
        }
    }
}
