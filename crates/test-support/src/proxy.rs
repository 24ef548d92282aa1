//! A TCP proxy on loopback that a test can cut, freeze, close or slow
//! down, put between two regions: the fault injector of the replication and
//! failover tests, and the long-distance link of the handoff benchmark. TLS
//! passes through it untouched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Chunks one direction of a connection may have read and not yet written:
/// with a delay, the bytes in flight on the link. Beyond it the proxy stops
/// reading, and TCP flow control slows the sender.
const IN_FLIGHT_CHUNKS_MAX: usize = 256;
/// The most bytes one read takes.
const CHUNK_BYTES_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes flow both ways.
    Forward,
    /// Connections are accepted and closed at once (the peer is down).
    Refuse,
    /// Connections stay open, but no byte moves (the peer hangs).
    Freeze,
}

pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Bumped to close every open connection.
    cuts: watch::Sender<u64>,
    bytes: AtomicU64,
    connections: AtomicU64,
    /// One-way delay added to every byte, each direction, in nanoseconds.
    delay_nanos: AtomicU64,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target,
            mode: watch::Sender::new(Mode::Forward),
            cuts: watch::Sender::new(0),
            bytes: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            delay_nanos: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
    }

    /// Adds `delay` to every byte's trip through the proxy, in each
    /// direction (so a round trip takes twice as long more), as a long link
    /// would; bandwidth is not limited. Applies to bytes read from now on,
    /// on open connections too; bytes stay in order. Zero (the start) adds
    /// nothing.
    pub fn set_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.shared.delay_nanos.store(nanos, Ordering::Relaxed);
    }

    /// The one-way delay [`Proxy::set_delay`] set.
    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.shared.delay_nanos.load(Ordering::Relaxed))
    }

    /// Closes both sockets of every open connection.
    pub fn cut(&self) {
        self.shared.cuts.send_modify(|cuts| *cuts += 1);
    }

    /// Bytes forwarded so far, both ways.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Connections accepted and forwarded so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *shared.mode.borrow() == Mode::Refuse {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(shared.target).await else {
            drop(client);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let cut_at = *shared.cuts.borrow();
        tokio::spawn(pipe(client_read, server_write, shared.clone(), cut_at));
        tokio::spawn(pipe(server_read, client_write, shared.clone(), cut_at));
    }
}

/// Copies one direction until either end closes or the connection is cut;
/// then drops both halves it holds (the other pipe drops the other two).
/// A reader stamps each chunk with when it may be delivered and a writer
/// delivers it then, so a delay holds bytes back without slowing the
/// reading of the ones behind them.
async fn pipe(from: OwnedReadHalf, to: OwnedWriteHalf, shared: Arc<Shared>, cut_at: u64) {
    let (chunks, in_flight) = mpsc::channel(IN_FLIGHT_CHUNKS_MAX);
    let reading = read_side(from, chunks, shared.clone(), cut_at);
    let writing = write_side(to, in_flight, shared, cut_at);
    tokio::pin!(reading, writing);
    tokio::select! {
        // End of stream: deliver what is in flight, then close.
        () = &mut reading => writing.await,
        // The other end went away, or the connection was cut.
        () = &mut writing => {}
    }
}

async fn read_side(
    mut from: OwnedReadHalf,
    chunks: mpsc::Sender<(Instant, Vec<u8>)>,
    shared: Arc<Shared>,
    cut_at: u64,
) {
    let mut cuts = shared.cuts.subscribe();
    let mut mode = shared.mode.subscribe();
    let mut buf = vec![0u8; CHUNK_BYTES_MAX];
    loop {
        // While frozen, read nothing, so the sender's buffers fill up.
        tokio::select! {
            _ = cuts.wait_for(|cuts| *cuts != cut_at) => return,
            frozen = mode.wait_for(|mode| *mode != Mode::Freeze) => if frozen.is_err() { return },
        }
        let read = tokio::select! {
            _ = cuts.wait_for(|cuts| *cuts != cut_at) => return,
            read = from.read(&mut buf) => read,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let due = Instant::now() + Duration::from_nanos(shared.delay_nanos.load(Ordering::Relaxed));
        if chunks.send((due, buf[..n].to_vec())).await.is_err() {
            return;
        }
    }
}

async fn write_side(
    mut to: OwnedWriteHalf,
    mut in_flight: mpsc::Receiver<(Instant, Vec<u8>)>,
    shared: Arc<Shared>,
    cut_at: u64,
) {
    let mut cuts = shared.cuts.subscribe();
    let mut mode = shared.mode.subscribe();
    loop {
        let (due, chunk) = tokio::select! {
            _ = cuts.wait_for(|cuts| *cuts != cut_at) => return,
            chunk = in_flight.recv() => match chunk {
                Some(chunk) => chunk,
                None => return,
            },
        };
        if due > Instant::now() {
            tokio::select! {
                _ = cuts.wait_for(|cuts| *cuts != cut_at) => return,
                () = tokio::time::sleep_until(due) => {}
            }
        }
        // What was read just before a freeze waits too.
        tokio::select! {
            _ = cuts.wait_for(|cuts| *cuts != cut_at) => return,
            frozen = mode.wait_for(|mode| *mode != Mode::Freeze) => if frozen.is_err() { return },
        }
        tokio::select! {
            _ = cuts.wait_for(|cuts| *cuts != cut_at) => return,
            written = to.write_all(&chunk) => if written.is_err() { return },
        }
        shared
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// An echo server behind a delaying proxy: bytes come back whole, in
    /// order, and no sooner than two delays (there and back).
    #[tokio::test]
    async fn delay_holds_bytes_back_in_order() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = echo.accept().await.unwrap();
            let (mut read, mut write) = socket.split();
            tokio::io::copy(&mut read, &mut write).await.unwrap();
        });
        let proxy = Proxy::start(target).await;
        let delay = Duration::from_millis(30);
        proxy.set_delay(delay);
        assert_eq!(proxy.delay(), delay);

        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        let sent: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
        let started = Instant::now();
        let (mut read, mut write) = client.split();
        let send = async {
            for piece in sent.chunks(1000) {
                write.write_all(piece).await.unwrap();
            }
        };
        let mut echoed = vec![0u8; sent.len()];
        let (_, received) = tokio::join!(send, read.read_exact(&mut echoed));
        received.unwrap();
        assert!(
            started.elapsed() >= delay * 2,
            "the echo came back after {:?}",
            started.elapsed()
        );
        assert!(echoed == sent, "bytes came back changed or out of order");
    }
}
