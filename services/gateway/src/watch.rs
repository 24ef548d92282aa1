//! Limits on `WatchEvents` streams: how many one principal and the whole
//! gateway may hold open, and what happens to a reader that stops.
//!
//! A stream's events pass through a small bounded queue. When the client
//! takes nothing for the stall timeout while the queue is full, the
//! gateway stops reading the log for it, drops what was queued and ends
//! the stream with `RESOURCE_EXHAUSTED` naming the last event it delivered
//! (`after_seq`), from which the client resumes. A reader that stops
//! therefore costs the queue and HTTP/2's flow-control window, never the
//! log it has not read.

use std::collections::HashMap;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use meridian_proto::v1;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::error::ApiError;

/// Open watch streams one principal (token subject; the client address
/// without tokens) may hold.
pub const WATCH_STREAMS_PER_PRINCIPAL_MAX: usize = 128;
/// Open watch streams of one gateway, all principals together.
pub const WATCH_STREAMS_MAX: usize = 1_024;
/// How long a watch waits for a client that reads nothing before it cuts
/// the stream off.
pub const WATCH_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts open watch streams by principal.
#[derive(Debug)]
pub(crate) struct WatchCaps {
    per_principal_max: usize,
    total_max: usize,
    open: Mutex<(usize, HashMap<String, usize>)>,
}

impl WatchCaps {
    pub(crate) fn new(per_principal_max: usize, total_max: usize) -> Arc<Self> {
        Arc::new(Self {
            per_principal_max,
            total_max,
            open: Mutex::default(),
        })
    }

    /// A slot for one more stream of `principal`, or `RESOURCE_EXHAUSTED`
    /// saying which limit it reached.
    pub(crate) fn acquire(self: &Arc<Self>, principal: String) -> Result<WatchSlot, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, by_principal) = &mut *open;
        let mine = by_principal.get(&principal).copied().unwrap_or(0);
        if mine >= self.per_principal_max {
            return Err(ApiError::Exhausted(format!(
                "{principal} has {mine} watch streams open, the limit per principal; close one first"
            )));
        }
        if *total >= self.total_max {
            return Err(ApiError::Exhausted(format!(
                "this gateway has {total} watch streams open, its limit; retry later"
            )));
        }
        *total += 1;
        by_principal.insert(principal.clone(), mine + 1);
        Ok(WatchSlot {
            caps: self.clone(),
            principal,
        })
    }
}

/// One open stream's place in [`WatchCaps`], given back when dropped.
#[derive(Debug)]
pub(crate) struct WatchSlot {
    caps: Arc<WatchCaps>,
    principal: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self
            .caps
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, by_principal) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(count) = by_principal.get_mut(&self.principal) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                by_principal.remove(&self.principal);
            }
        }
    }
}

/// Why the producer of a watch stopped early for a stalled reader.
#[derive(Debug)]
pub(crate) struct Stalled {
    pub(crate) waited: Duration,
}

/// The response stream of a watch: the queued events, then the end. It
/// remembers the last event it handed to the transport so a cut-off can
/// name the cursor to resume from.
pub(crate) struct WatchStream {
    events: mpsc::Receiver<Result<v1::Event, Status>>,
    stalled: Option<oneshot::Receiver<Stalled>>,
    /// The origin_seq of the last event delivered (or the request's
    /// `after_seq`), and its origin region.
    last: (String, u64),
    ended: bool,
    _slot: WatchSlot,
}

impl WatchStream {
    pub(crate) fn new(
        events: mpsc::Receiver<Result<v1::Event, Status>>,
        stalled: oneshot::Receiver<Stalled>,
        start: (String, u64),
        slot: WatchSlot,
    ) -> Self {
        Self {
            events,
            stalled: Some(stalled),
            last: start,
            ended: false,
            _slot: slot,
        }
    }

    fn cut_off(&mut self, stalled: &Stalled) -> Status {
        // What is still queued is dropped now: the client gets it again
        // when it resumes from the cursor below.
        self.events.close();
        while self.events.try_recv().is_ok() {}
        self.ended = true;
        let (region, seq) = &self.last;
        let origin = if region.is_empty() {
            String::new()
        } else {
            format!(" from {region}")
        };
        ApiError::Exhausted(format!(
            "watch stopped: the client read nothing for {} ms; resume with after_seq={seq} \
             (the last event delivered{origin})",
            stalled.waited.as_millis()
        ))
        .into()
    }
}

impl Stream for WatchStream {
    type Item = Result<v1::Event, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(stalled) = this.stalled.as_mut()
            && let Poll::Ready(result) = Pin::new(stalled).poll(cx)
        {
            this.stalled = None;
            if let Ok(stalled) = result {
                return Poll::Ready(Some(Err(this.cut_off(&stalled))));
            }
        }
        match this.events.poll_recv(cx) {
            Poll::Ready(Some(Ok(event))) => {
                this.last = (event.origin_region.clone(), event.origin_seq);
                Poll::Ready(Some(Ok(event)))
            }
            Poll::Ready(Some(Err(status))) => {
                this.ended = true;
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_principal_and_in_total() {
        let caps = WatchCaps::new(2, 3);
        let a1 = caps.acquire("ana".into()).unwrap();
        let _a2 = caps.acquire("ana".into()).unwrap();
        let refused = caps.acquire("ana".into()).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.to_string().contains("ana has 2 watch streams open"),
            "{refused}"
        );
        let _b1 = caps.acquire("bo".into()).unwrap();
        let full = caps.acquire("cy".into()).unwrap_err();
        assert!(full.to_string().contains("this gateway has 3"), "{full}");
        drop(a1);
        caps.acquire("ana".into()).unwrap();
    }
}
