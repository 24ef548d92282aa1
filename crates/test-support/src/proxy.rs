//! A TCP proxy on loopback that a test can cut, freeze or close, put
//! between two regions: the fault injector of the replication and failover
//! tests. TLS passes through it untouched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Proxy { addr, shared, accept }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
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
        let Ok((client, _)) = listener.accept().await else { continue };
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
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: Arc<Shared>, cut_at: u64) {
    let mut cuts = shared.cuts.subscribe();
    let mut mode = shared.mode.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // While frozen, read nothing, so the sender's buffers fill up; and
        // what was read just before the freeze waits too.
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
        tokio::select! {
            _ = cuts.wait_for(|cuts| *cuts != cut_at) => return,
            frozen = mode.wait_for(|mode| *mode != Mode::Freeze) => if frozen.is_err() { return },
        }
        tokio::select! {
            _ = cuts.wait_for(|cuts| *cuts != cut_at) => return,
            written = to.write_all(&buf[..n]) => if written.is_err() { return },
        }
        shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}
