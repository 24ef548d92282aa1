//! What a replicator knows about each peer, shared by its streams, its
//! status call and its durability waits.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use meridian_core::{Clock, RegionId};
use tokio::sync::{oneshot, watch};

use crate::ReplicationConfig;
use crate::seam::{PeerTransport, ReplicaLog};

/// One peer as [`Replicator::status`](crate::Replicator::status) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub region: RegionId,
    /// This region dials the peer (rather than accepting its stream).
    pub dials: bool,
    /// A stream with the peer is open and past its Hello.
    pub connected: bool,
    /// The peer's durable cursor of this region's log: the highest it has
    /// acknowledged (or announced in a Hello). `None` until it said.
    pub acked_seq: Option<u64>,
    /// This region's durable cursor of the peer's log.
    pub applied_seq: u64,
    /// The head of this region's log, as last seen.
    pub local_head: u64,
    /// The head of the peer's log, from its last Hello or heartbeat.
    pub peer_head: Option<u64>,
    /// Events of this region's log the peer has not acknowledged:
    /// `local_head - acked_seq` (all of them while `acked_seq` is `None`).
    pub lag_events: u64,
    /// Age of the oldest event the peer has not acknowledged (by its HLC
    /// time, measured every heartbeat interval); zero when caught up.
    pub lag: Duration,
    /// When the last heartbeat from the peer arrived, by this region's clock.
    pub last_heartbeat_at: Option<Timestamp>,
    /// Streams opened with the peer since this replicator started.
    pub connects: u64,
    /// Why the last stream with the peer ended or could not open.
    pub last_error: Option<String>,
}

/// Everything a replicator's tasks share.
pub(crate) struct Shared {
    pub config: ReplicationConfig,
    pub store: Arc<dyn ReplicaLog>,
    pub transport: Arc<dyn PeerTransport>,
    pub clock: Arc<dyn Clock>,
    pub peers: BTreeMap<RegionId, Mutex<PeerState>>,
    /// Each peer's acknowledged cursor of this region's log (the highest
    /// seen): what `wait_peer_durable` waits on.
    pub acked: watch::Sender<BTreeMap<RegionId, u64>>,
    /// This region's applied cursor of each peer's log.
    pub applied: watch::Sender<BTreeMap<RegionId, u64>>,
    pub local_head: AtomicU64,
    /// Becomes true when `run` is told to stop: every stream ends.
    pub shutdown: watch::Sender<bool>,
    /// Numbers streams, so a stream's end does not clear a newer one's state.
    next_session: AtomicU64,
}

#[derive(Default)]
pub(crate) struct PeerState {
    /// The stream that is current, and how to stop it.
    session: Option<(u64, oneshot::Sender<()>)>,
    peer_head: Option<u64>,
    last_heartbeat_at: Option<Timestamp>,
    /// The oldest unacknowledged event of this region's log and its time.
    oldest_unacked: Option<(u64, Timestamp)>,
    connects: u64,
    last_error: Option<String>,
}

/// A stream's claim on its peer: while it lives, the peer is connected.
pub(crate) struct SessionGuard {
    shared: Arc<Shared>,
    peer: RegionId,
    id: u64,
}

impl Shared {
    pub fn new(
        config: ReplicationConfig,
        store: Arc<dyn ReplicaLog>,
        transport: Arc<dyn PeerTransport>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let peers: BTreeMap<RegionId, Mutex<PeerState>> = config
            .peer_regions()
            .map(|peer| (peer.clone(), Mutex::new(PeerState::default())))
            .collect();
        Self {
            config,
            store,
            transport,
            clock,
            peers,
            acked: watch::Sender::new(BTreeMap::new()),
            applied: watch::Sender::new(BTreeMap::new()),
            local_head: AtomicU64::new(0),
            shutdown: watch::Sender::new(false),
            next_session: AtomicU64::new(1),
        }
    }

    pub fn local(&self) -> &RegionId {
        &self.config.local
    }

    fn peer(&self, peer: &RegionId) -> Option<MutexGuard<'_, PeerState>> {
        self.peers
            .get(peer)
            .map(|state| state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Makes a new stream with `peer` the current one, stopping the one
    /// before it (a reconnect whose old stream has not noticed yet). The
    /// returned receiver fires if a newer stream replaces this one.
    pub fn begin_session(
        self: &Arc<Self>,
        peer: &RegionId,
    ) -> (SessionGuard, oneshot::Receiver<()>) {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (stop, stopped) = oneshot::channel();
        if let Some(mut state) = self.peer(peer) {
            // Dropping the old sender stops the old stream.
            state.session = Some((id, stop));
            state.connects += 1;
        }
        (
            SessionGuard {
                shared: self.clone(),
                peer: peer.clone(),
                id,
            },
            stopped,
        )
    }

    pub fn note_head(&self, seq: u64) {
        self.local_head.fetch_max(seq, Ordering::Relaxed);
    }

    /// The peer acknowledged (or announced in its Hello) `seq` of this
    /// region's log.
    pub fn record_ack(&self, peer: &RegionId, seq: u64) {
        self.acked.send_if_modified(|acked| raise(acked, peer, seq));
        // Caught up: no lag. Otherwise the oldest unacknowledged event is
        // measured again on the next tick; until then the lag shown is the
        // older, larger one.
        if seq >= self.local_head.load(Ordering::Relaxed)
            && let Some(mut state) = self.peer(peer)
        {
            state.oldest_unacked = None;
        }
    }

    pub fn record_applied(&self, peer: &RegionId, seq: u64) {
        self.applied
            .send_if_modified(|applied| raise(applied, peer, seq));
    }

    pub fn record_peer_head(&self, peer: &RegionId, head: u64, heartbeat: bool) {
        if let Some(mut state) = self.peer(peer) {
            state.peer_head = Some(state.peer_head.map_or(head, |known| known.max(head)));
            if heartbeat {
                state.last_heartbeat_at = Some(self.clock.now());
            }
        }
    }

    pub fn record_error(&self, peer: &RegionId, error: &str) {
        if let Some(mut state) = self.peer(peer) {
            state.last_error = Some(error.to_owned());
        }
    }

    pub fn acked_of(&self, peer: &RegionId) -> Option<u64> {
        self.acked.borrow().get(peer).copied()
    }

    /// Which event's age measures `peer`'s lag now: the first one it has not
    /// acknowledged, if that is not the one already measured.
    pub fn unacked_to_measure(&self, peer: &RegionId) -> Option<u64> {
        let head = self.local_head.load(Ordering::Relaxed);
        let acked = self.acked_of(peer).unwrap_or(0);
        let mut state = self.peer(peer)?;
        if acked >= head {
            state.oldest_unacked = None;
            return None;
        }
        match state.oldest_unacked {
            Some((seq, _)) if seq == acked + 1 => None,
            _ => Some(acked + 1),
        }
    }

    pub fn record_oldest_unacked(&self, peer: &RegionId, seq: u64, at: Timestamp) {
        if let Some(mut state) = self.peer(peer)
            && self.acked_of(peer).unwrap_or(0) < seq
        {
            state.oldest_unacked = Some((seq, at));
        }
    }

    pub fn status(&self) -> Vec<PeerStatus> {
        let now = self.clock.now();
        let local_head = self.local_head.load(Ordering::Relaxed);
        let acked = self.acked.borrow().clone();
        let applied = self.applied.borrow().clone();
        self.config
            .peer_regions()
            .filter_map(|region| self.peers.get(region).map(|state| (region, state)))
            .map(|(region, state)| {
                let state = state.lock().unwrap_or_else(PoisonError::into_inner);
                let acked_seq = acked.get(region).copied();
                let lag_events = local_head.saturating_sub(acked_seq.unwrap_or(0));
                let lag = match state.oldest_unacked {
                    Some((_, at)) if lag_events > 0 => {
                        now.duration_since(at).try_into().unwrap_or(Duration::ZERO)
                    }
                    _ => Duration::ZERO,
                };
                PeerStatus {
                    region: region.clone(),
                    dials: self.config.dials(region),
                    connected: state.session.is_some(),
                    acked_seq,
                    applied_seq: applied.get(region).copied().unwrap_or(0),
                    local_head,
                    peer_head: state.peer_head,
                    lag_events,
                    lag,
                    last_heartbeat_at: state.last_heartbeat_at,
                    connects: state.connects,
                    last_error: state.last_error.clone(),
                }
            })
            .collect()
    }
}

/// Raises `peer`'s cursor in `table` to `seq` (cursors never go back);
/// true if the table changed. The first value is recorded even if 0: it
/// tells that the peer's cursor is known.
fn raise(table: &mut BTreeMap<RegionId, u64>, peer: &RegionId, seq: u64) -> bool {
    match table.get_mut(peer) {
        Some(known) if *known >= seq => false,
        Some(known) => {
            *known = seq;
            true
        }
        None => {
            table.insert(peer.clone(), seq);
            true
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Some(mut state) = self.shared.peer(&self.peer)
            && state.session.as_ref().is_some_and(|(id, _)| *id == self.id)
        {
            state.session = None;
        }
    }
}
