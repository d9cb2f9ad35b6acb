//! A listener for axum: a TCP socket, a bound on the connections it holds, a TLS handshake
//! off the accept path, and the verified identity of the other side handed to handlers as
//! [`Remote`]. Every node listener and every reference service serves through it, with
//! [`crate::serve::serve`].
//!
//! ```text
//!   accept ─► over Limits (in all, or from this address)? ─► close at once, count refused
//!          ─► TCP_NODELAY ─► spawn: TLS handshake (≤ HANDSHAKE_TIMEOUT) ─► channel ─► serve
//! ```
//!
//! A slow or hostile client stalls only its own handshake task, never the accept loop, and
//! holds at most its share of the connections: a listener never opens more than its
//! [`Limits`], so an outsider holding idle connections cannot take the file descriptors the
//! stores and Raft need (an adversarial review ran a node out of them with 20,000 idle TLS
//! connections; its store's next flush failed and the node stopped for good). A connection
//! over the limit is closed as soon as it is accepted, so the kernel's queue keeps moving.
//! A failed handshake (no certificate where one is required, another CA's, an expired
//! one) closes the connection; both are counted ([`Counters`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::Identity;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress at once per listener; beyond it the accept loop waits.
pub const MAX_HANDSHAKES: usize = 1024;
/// File descriptors a process keeps out of its listeners' reach: its stores' files (sled
/// opens one per blob it flushes), Raft and forwarding connections to its peers, hooks,
/// DNS sockets, logs.
pub const RESERVED_FDS: u64 = 1024;
/// The fewest connections a listener is given, however low the open-file limit.
pub const MIN_CONNECTIONS: usize = 64;

/// How many connections a listener holds at once: in all, and from one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub connections: usize,
    /// Half the listener's by default: one address (an attacker, or a proxy without
    /// PROXY protocol that all clients come through) cannot take every slot alone.
    pub per_address: usize,
}

impl Limits {
    /// `percent` of the file descriptors a process may open beyond [`RESERVED_FDS`],
    /// given its open-file limit.
    pub fn share_of(open_files: u64, percent: u64) -> Self {
        let budget = open_files.saturating_sub(RESERVED_FDS) * percent / 100;
        let connections = usize::try_from(budget)
            .unwrap_or(usize::MAX)
            .max(MIN_CONNECTIONS);
        Self {
            connections,
            per_address: (connections / 2).max(1),
        }
    }
}

/// Raises this process's open-file limit to its hard limit, and returns the limit it has
/// then (the soft limit as it was, if it cannot be raised; 1,024 if it cannot be read).
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and has no other precondition.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given; raising the soft limit up to the
        // hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    limit.rlim_cur
}

/// What a listener counts; the node exports them per listener.
#[derive(Debug, Default)]
pub struct Counters {
    /// Handshakes that failed.
    pub handshake_failures: AtomicU64,
    /// Connections closed at once because the listener held its [`Limits`].
    pub refused: AtomicU64,
    /// Connections open now (handshaking or served).
    pub open: AtomicU64,
}
/// Pending connections the kernel queues for accept (capped by `net.core.somaxconn`).
/// tokio's default is 1,024: clients of a lost site reconnecting through a gateway at once
/// overflow that, and a dropped SYN costs a client a second before the kernel tries again.
pub const BACKLOG: u32 = 4096;

/// Who is on the other side of a connection.
#[derive(Debug, Clone)]
pub struct Remote {
    pub addr: SocketAddr,
    /// The identity its verified client certificate names, if it presented one.
    pub identity: Option<Identity>,
}

/// A connection, TLS or plain.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

type Accepted = (Box<dyn Io>, Remote);

/// A bound listener whose connections have finished their handshake.
pub struct Listener {
    accepted: mpsc::Receiver<Accepted>,
    local: SocketAddr,
}

/// The slots of one listener: in all, and per address.
struct Slots {
    limits: Limits,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    counters: Arc<Counters>,
}

/// One connection's slot, given back when the connection is dropped.
struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
}

impl Slots {
    /// A slot for a connection from `ip`, or `None` if the listener holds its limits.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut per_address = self.per_address.lock().expect("never poisoned");
        let open = self.counters.open.load(Ordering::Relaxed) as usize;
        let from_ip = per_address.get(&ip).copied().unwrap_or(0);
        if open >= self.limits.connections || from_ip >= self.limits.per_address {
            return None;
        }
        per_address.insert(ip, from_ip + 1);
        self.counters.open.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_address = self.slots.per_address.lock().expect("never poisoned");
        if let Some(n) = per_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_address.remove(&self.ip);
            }
        }
        self.slots.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection that holds its slot for as long as it is open.
struct Held<T> {
    io: T,
    _slot: Slot,
}

impl<T: AsyncRead + Unpin> AsyncRead for Held<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Held<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Binds `addr` with [`BACKLOG`] (and SO_REUSEADDR, as tokio's `bind` sets).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

impl Listener {
    /// Starts accepting on `tcp`, holding at most `limits` connections; with `tls`, every
    /// connection completes a handshake first. `counters` counts failed handshakes,
    /// refused connections and open ones.
    pub fn new(
        tcp: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: Limits,
        counters: Arc<Counters>,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, accepted) = mpsc::channel(MAX_HANDSHAKES);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let slots = Arc::new(Slots {
            limits,
            per_address: Mutex::default(),
            counters,
        });
        tokio::spawn(accept_loop(tcp, acceptor, tx, slots));
        Ok(Self { accepted, local })
    }

    /// The next connection that finished its handshake; `None` once the accept loop ended.
    pub(crate) async fn next(&mut self) -> Option<Accepted> {
        self.accepted.recv().await
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    tx: mpsc::Sender<Accepted>,
    slots: Arc<Slots>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, addr) = tokio::select! {
            () = tx.closed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(cause = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = slots.take(addr.ip()) else {
            slots.counters.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        // Small request/response pairs (votes, heartbeats, acks) must not wait on Nagle's
        // algorithm meeting a delayed ACK: that costs tens of milliseconds per round trip.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::warn!(cause = %err, "failed to set TCP_NODELAY");
        }
        let stream = Held {
            io: stream,
            _slot: slot,
        };
        let Some(acceptor) = acceptor.clone() else {
            let remote = Remote {
                addr,
                identity: None,
            };
            if tx.send((Box::new(stream), remote)).await.is_err() {
                return;
            }
            continue;
        };
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (tx, counters) = (tx.clone(), slots.counters.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match handshake(acceptor, stream, addr).await {
                Ok(accepted) => {
                    let _ = tx.send(accepted).await;
                }
                Err(why) => {
                    counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%addr, cause = %why, "TLS handshake failed");
                }
            }
        });
    }
}

async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: Held<TcpStream>,
    addr: SocketAddr,
) -> std::result::Result<Accepted, String> {
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| format!("no handshake within {HANDSHAKE_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(Identity::from_cert);
    Ok((Box::new(tls), Remote { addr, identity }))
}
