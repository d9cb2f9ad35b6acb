//! A listener for axum: a TCP socket, a TLS handshake off the accept path, and the
//! verified identity of the other side handed to handlers as [`Remote`]. Every node
//! listener and every reference service serves through it.
//!
//! ```text
//!   accept ─► TCP_NODELAY ─► spawn: TLS handshake (≤ HANDSHAKE_TIMEOUT, at most
//!   MAX_HANDSHAKES at once) ─► channel ─► axum::serve ─► handler(ConnectInfo<Remote>)
//! ```
//!
//! A slow or hostile client stalls only its own handshake task, never the accept loop. A
//! failed handshake (no certificate where one is required, another CA's, an expired one)
//! closes the connection and is counted in the counter the listener was given (exported
//! as `firebreak_tls_handshake_failures_total{listener}`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::Identity;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress at once per listener; beyond it the accept loop waits.
pub const MAX_HANDSHAKES: usize = 1024;
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

impl Connected<IncomingStream<'_, Listener>> for Remote {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Self {
        stream.remote_addr().clone()
    }
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
    /// Starts accepting on `tcp`; with `tls`, every connection completes a handshake first,
    /// and each that fails adds one to `failures`.
    pub fn new(
        tcp: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        failures: Arc<AtomicU64>,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, accepted) = mpsc::channel(MAX_HANDSHAKES);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(accept_loop(tcp, acceptor, tx, failures));
        Ok(Self { accepted, local })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    tx: mpsc::Sender<Accepted>,
    failures: Arc<AtomicU64>,
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
        // Small request/response pairs (votes, heartbeats, acks) must not wait on Nagle's
        // algorithm meeting a delayed ACK: that costs tens of milliseconds per round trip.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::warn!(cause = %err, "failed to set TCP_NODELAY");
        }
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
        let (tx, failures) = (tx.clone(), failures.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match handshake(acceptor, stream, addr).await {
                Ok(accepted) => {
                    let _ = tx.send(accepted).await;
                }
                Err(why) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%addr, cause = %why, "TLS handshake failed");
                }
            }
        });
    }
}

async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
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

impl axum::serve::Listener for Listener {
    type Io = Box<dyn Io>;
    type Addr = Remote;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept loop ends only when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Remote {
            addr: self.local,
            identity: None,
        })
    }
}
