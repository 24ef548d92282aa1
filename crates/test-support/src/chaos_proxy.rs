//! A fault-injecting TCP proxy for the process-level chaos test
//! (`tests/chaos.rs`): one listens on loopback in front of each region's
//! internal port, per ordered pair of regions, so the test can break one
//! link, or one direction of it, while the real binaries run.
//!
//! Faults, each per direction where a direction makes sense:
//!
//! - **cut**: new connections are accepted and reset at once (the peer is
//!   unreachable) and every open connection is closed;
//! - **sever**: every open connection is closed, new ones pass (a flaky
//!   link, a NAT or load balancer dropping flows);
//! - **delay**: every chunk read in one direction is held for a fixed
//!   delay plus a random jitter up to a bound, in order (a long or
//!   congested link);
//! - **drop**: bytes of one direction are read and discarded, the other
//!   direction flows (a one-way partition: requests arrive, answers never
//!   do). A connection that lost bytes can never be trusted again, so when
//!   the direction is healed it is closed, as TCP would give up on it;
//! - **heal**: everything passes again, with no delay.
//!
//! Unlike [`crate::proxy::Proxy`] (freeze both ways, one fixed delay), every
//! setting here is per direction and the jitter is seeded, so a run's
//! schedule of faults is the same every time even if TCP's chunking is not.
//! TLS passes through untouched.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Chunks one direction of a connection may hold (read, not yet written).
/// Beyond it the proxy stops reading and TCP flow control slows the sender.
const IN_FLIGHT_CHUNKS_MAX: usize = 256;
/// The most bytes one read takes.
const CHUNK_BYTES_MAX: usize = 64 * 1024;
/// How long connecting to the target may take before the client is reset.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One direction of the proxied connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client that dialled the proxy to the target.
    ToTarget,
    /// From the target back to the client.
    FromTarget,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::ToTarget, Direction::FromTarget];

    fn index(self) -> usize {
        match self {
            Direction::ToTarget => 0,
            Direction::FromTarget => 1,
        }
    }
}

/// Whether one direction's bytes get through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Pass,
    /// Read and discarded.
    Drop,
}

/// A running proxy; it stops (and closes its connections) when dropped.
pub struct ChaosProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    target: SocketAddr,
    refusing: AtomicBool,
    /// Bumped to close every open connection.
    severs: watch::Sender<u64>,
    ways: [Way; 2],
    connections: AtomicU64,
    refused: AtomicU64,
    /// xorshift64 state of the jitter.
    rng: Mutex<u64>,
}

struct Way {
    flow: watch::Sender<Flow>,
    delay_micros: AtomicU64,
    jitter_micros: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
}

impl Way {
    fn new() -> Way {
        Way {
            flow: watch::Sender::new(Flow::Pass),
            delay_micros: AtomicU64::new(0),
            jitter_micros: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl ChaosProxy {
    /// A proxy on a free loopback port forwarding to `target`; `seed`
    /// drives its jitter.
    pub async fn start(target: SocketAddr, seed: u64) -> ChaosProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            target,
            refusing: AtomicBool::new(false),
            severs: watch::Sender::new(0),
            ways: [Way::new(), Way::new()],
            connections: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            // xorshift must not start at zero.
            rng: Mutex::new(seed | 1),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        ChaosProxy {
            addr,
            shared,
            accept,
        }
    }

    /// The address connections are forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    /// Resets new connections and closes the open ones until [`heal`](Self::heal).
    pub fn cut(&self) {
        self.shared.refusing.store(true, Ordering::SeqCst);
        self.sever();
    }

    /// Closes every open connection; new ones pass.
    pub fn sever(&self) {
        self.shared.severs.send_modify(|severs| *severs += 1);
    }

    /// Holds every chunk read in `direction` from now on for `fixed` plus
    /// a random part of `jitter`, keeping the bytes in order.
    pub fn delay(&self, direction: Direction, fixed: Duration, jitter: Duration) {
        let way = &self.shared.ways[direction.index()];
        way.delay_micros.store(micros(fixed), Ordering::Relaxed);
        way.jitter_micros.store(micros(jitter), Ordering::Relaxed);
    }

    /// Discards every byte read in `direction` until healed: a one-way
    /// partition.
    pub fn drop_direction(&self, direction: Direction) {
        self.shared.ways[direction.index()]
            .flow
            .send_replace(Flow::Drop);
    }

    /// Everything passes again, undelayed; connections that lost bytes to
    /// a drop are closed.
    pub fn heal(&self) {
        self.shared.refusing.store(false, Ordering::SeqCst);
        for direction in Direction::BOTH {
            let way = &self.shared.ways[direction.index()];
            way.delay_micros.store(0, Ordering::Relaxed);
            way.jitter_micros.store(0, Ordering::Relaxed);
            way.flow.send_replace(Flow::Pass);
        }
    }

    /// Whether the proxy forwards everything as it came (no fault set).
    pub fn is_healed(&self) -> bool {
        !self.shared.refusing.load(Ordering::SeqCst)
            && self.shared.ways.iter().all(|way| {
                *way.flow.borrow() == Flow::Pass
                    && way.delay_micros.load(Ordering::Relaxed) == 0
                    && way.jitter_micros.load(Ordering::Relaxed) == 0
            })
    }

    /// Bytes delivered in `direction` so far.
    pub fn bytes(&self, direction: Direction) -> u64 {
        self.shared.ways[direction.index()]
            .bytes
            .load(Ordering::Relaxed)
    }

    /// Bytes discarded in `direction` so far.
    pub fn dropped(&self, direction: Direction) -> u64 {
        self.shared.ways[direction.index()]
            .dropped
            .load(Ordering::Relaxed)
    }

    /// Connections forwarded so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Connections reset at once while cut.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.sever();
    }
}

impl Shared {
    /// When a chunk read now in `way` may be delivered.
    fn due(&self, way: &Way) -> Instant {
        let fixed = way.delay_micros.load(Ordering::Relaxed);
        let jitter = way.jitter_micros.load(Ordering::Relaxed);
        let extra = if jitter == 0 {
            0
        } else {
            let mut state = self
                .rng
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            *state % (jitter + 1)
        };
        Instant::now() + Duration::from_micros(fixed.saturating_add(extra))
    }
}

/// Resets a connection: no FIN, as an unreachable peer's stack would.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if shared.refusing.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            reset(client);
            continue;
        }
        tokio::spawn(connect(client, shared.clone()));
    }
}

async fn connect(client: TcpStream, shared: Arc<Shared>) {
    let sever_at = *shared.severs.borrow();
    let server =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(shared.target)).await {
            Ok(Ok(server)) => server,
            _ => return reset(client),
        };
    // Cut while connecting: the client must not get through.
    if *shared.severs.borrow() != sever_at {
        reset(server);
        return reset(client);
    }
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    shared.connections.fetch_add(1, Ordering::Relaxed);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Closes both directions of this one connection.
    let closed = watch::Sender::new(false);
    tokio::spawn(pipe(
        client_read,
        server_write,
        Direction::ToTarget,
        shared.clone(),
        sever_at,
        closed.clone(),
    ));
    tokio::spawn(pipe(
        server_read,
        client_write,
        Direction::FromTarget,
        shared,
        sever_at,
        closed,
    ));
}

/// Why a pipe must stop at once: the proxy severed its connections, or
/// the other direction closed this connection.
async fn stopped(
    severs: &mut watch::Receiver<u64>,
    sever_at: u64,
    closed: &mut watch::Receiver<bool>,
) {
    tokio::select! {
        _ = severs.wait_for(|severs| *severs != sever_at) => {}
        _ = closed.wait_for(|closed| *closed) => {}
    }
}

/// Copies one direction until either end closes or the connection is
/// severed, then drops the halves it holds. A reader stamps each chunk with
/// when it may be delivered and a writer delivers it then, so a delay holds
/// bytes back without slowing the reading of the ones behind them.
async fn pipe(
    from: OwnedReadHalf,
    to: OwnedWriteHalf,
    direction: Direction,
    shared: Arc<Shared>,
    sever_at: u64,
    closed: watch::Sender<bool>,
) {
    let (chunks, in_flight) = mpsc::channel(IN_FLIGHT_CHUNKS_MAX);
    let reading = read_side(
        from,
        chunks,
        direction,
        shared.clone(),
        sever_at,
        closed.clone(),
    );
    let writing = write_side(
        to,
        in_flight,
        direction,
        shared,
        sever_at,
        closed.subscribe(),
    );
    tokio::pin!(reading, writing);
    tokio::select! {
        // End of stream: deliver what is in flight, then close this half.
        () = &mut reading => writing.await,
        // The other end went away, or the connection was severed.
        () = &mut writing => {}
    }
}

async fn read_side(
    mut from: OwnedReadHalf,
    chunks: mpsc::Sender<(Instant, Vec<u8>)>,
    direction: Direction,
    shared: Arc<Shared>,
    sever_at: u64,
    closed: watch::Sender<bool>,
) {
    let way = &shared.ways[direction.index()];
    let mut severs = shared.severs.subscribe();
    let mut closing = closed.subscribe();
    let mut buf = vec![0u8; CHUNK_BYTES_MAX];
    let mut lost_bytes = false;
    let mut last_due = Instant::now();
    loop {
        let read = tokio::select! {
            () = stopped(&mut severs, sever_at, &mut closing) => return,
            read = from.read(&mut buf) => read,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if *way.flow.borrow() == Flow::Drop {
            way.dropped.fetch_add(n as u64, Ordering::Relaxed);
            lost_bytes = true;
            continue;
        }
        if lost_bytes {
            // Healed after a drop: the stream has a hole; close the
            // connection rather than deliver what follows it.
            closed.send_replace(true);
            return;
        }
        // Jitter must not reorder bytes.
        last_due = shared.due(way).max(last_due);
        if chunks.send((last_due, buf[..n].to_vec())).await.is_err() {
            return;
        }
    }
}

async fn write_side(
    mut to: OwnedWriteHalf,
    mut in_flight: mpsc::Receiver<(Instant, Vec<u8>)>,
    direction: Direction,
    shared: Arc<Shared>,
    sever_at: u64,
    mut closed: watch::Receiver<bool>,
) {
    let way = &shared.ways[direction.index()];
    let mut severs = shared.severs.subscribe();
    loop {
        let (due, chunk) = tokio::select! {
            () = stopped(&mut severs, sever_at, &mut closed) => return,
            chunk = in_flight.recv() => match chunk {
                Some(chunk) => chunk,
                None => return,
            },
        };
        if due > Instant::now() {
            tokio::select! {
                () = stopped(&mut severs, sever_at, &mut closed) => return,
                () = tokio::time::sleep_until(due) => {}
            }
        }
        tokio::select! {
            () = stopped(&mut severs, sever_at, &mut closed) => return,
            written = to.write_all(&chunk) => if written.is_err() { return },
        }
        way.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// An echo server: what a client sends comes back.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(bytes).await?;
        let mut back = vec![0u8; bytes.len()];
        stream.read_exact(&mut back).await?;
        Ok(back)
    }

    /// Whether the connection is closed (or reset) within a second.
    async fn closes(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn passes_delays_with_jitter_in_order_and_heals() {
        let proxy = ChaosProxy::start(echo_server().await, 7).await;
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(round_trip(&mut client, b"hello").await.unwrap(), b"hello");

        let fixed = Duration::from_millis(20);
        proxy.delay(Direction::ToTarget, fixed, Duration::from_millis(20));
        proxy.delay(Direction::FromTarget, fixed, Duration::from_millis(20));
        assert!(!proxy.is_healed());
        let sent: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let started = Instant::now();
        let (mut read, mut write) = client.split();
        let send = async {
            for piece in sent.chunks(500) {
                write.write_all(piece).await.unwrap();
            }
        };
        let mut echoed = vec![0u8; sent.len()];
        let (_, received) = tokio::join!(send, read.read_exact(&mut echoed));
        received.unwrap();
        assert!(
            started.elapsed() >= fixed * 2,
            "came back after {:?}",
            started.elapsed()
        );
        assert!(
            echoed == sent,
            "bytes came back changed or out of order under jitter"
        );

        proxy.heal();
        assert!(proxy.is_healed());
        let started = Instant::now();
        assert_eq!(round_trip(&mut client, b"quick").await.unwrap(), b"quick");
        assert!(
            started.elapsed() < fixed,
            "a healed link still delays: {:?}",
            started.elapsed()
        );
        assert!(proxy.bytes(Direction::ToTarget) >= sent.len() as u64);
    }

    #[tokio::test]
    async fn cut_resets_new_connections_and_closes_open_ones_until_healed() {
        let proxy = ChaosProxy::start(echo_server().await, 1).await;
        let mut open = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(round_trip(&mut open, b"a").await.unwrap(), b"a");

        proxy.cut();
        assert!(
            closes(&mut open).await,
            "an open connection survived the cut"
        );
        let mut late = TcpStream::connect(proxy.addr).await.unwrap();
        assert!(
            round_trip(&mut late, b"b").await.is_err(),
            "a connection got through a cut link"
        );
        assert!(proxy.refused() >= 1);

        proxy.heal();
        let mut again = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(round_trip(&mut again, b"c").await.unwrap(), b"c");
    }

    #[tokio::test]
    async fn sever_closes_open_connections_but_lets_new_ones_through() {
        let proxy = ChaosProxy::start(echo_server().await, 1).await;
        let mut open = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(round_trip(&mut open, b"a").await.unwrap(), b"a");
        proxy.sever();
        assert!(
            closes(&mut open).await,
            "an open connection survived the sever"
        );
        let mut next = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(round_trip(&mut next, b"b").await.unwrap(), b"b");
        assert_eq!(proxy.connections(), 2);
    }

    /// A one-way partition: requests reach the target, answers never come
    /// back; after healing, the damaged connection is closed and a new one
    /// works.
    #[tokio::test]
    async fn drop_blackholes_one_direction_only() {
        // A target that counts what it receives and says nothing.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let counted = received.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        counted.fetch_add(n as u64, Ordering::Relaxed);
                        let _ = socket.write_all(&buf[..n]).await;
                    }
                });
            }
        });
        let proxy = ChaosProxy::start(target, 3).await;
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(round_trip(&mut client, b"before").await.unwrap(), b"before");

        proxy.drop_direction(Direction::FromTarget);
        client.write_all(b"request").await.unwrap();
        let mut back = [0u8; 7];
        let answer =
            tokio::time::timeout(Duration::from_millis(300), client.read_exact(&mut back)).await;
        assert!(answer.is_err(), "an answer crossed a dropped direction");
        assert_eq!(
            received.load(Ordering::Relaxed),
            6 + 7,
            "the request did arrive"
        );
        assert_eq!(proxy.dropped(Direction::FromTarget), 7);
        assert_eq!(proxy.dropped(Direction::ToTarget), 0);

        proxy.heal();
        // The next bytes back would follow a hole: the connection closes.
        client.write_all(b"x").await.unwrap();
        assert!(
            closes(&mut client).await,
            "a connection that lost bytes was kept"
        );
        let mut fresh = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"after").await.unwrap(), b"after");
    }
}
