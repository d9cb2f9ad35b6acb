//! Serving an axum router on a [`Listener`]: HTTP/1.1 with bounds a client cannot get
//! around, and a shutdown that ends.
//!
//! ```text
//!   Listener (≤ its Limits, TLS handshake ≤ 10 s)
//!     ─► HTTP/1.1: a request's headers within HEADER_READ_TIMEOUT of the connection
//!        waiting for them (a new connection, or a kept-alive one between requests)
//!     ─► router, with ConnectInfo<Remote>
//!   stop ─► no new connections; open ones finish the request in hand, for at most
//!           SHUTDOWN_GRACE, then are closed
//! ```
//!
//! axum's own `serve` sets no header timeout: an adversarial review held 3,000 connections
//! open for 30 s with half-sent headers, and idle connections for good. A long poll or an
//! event stream is a response in progress, not a wait for headers, so it is not cut.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::Service;

use crate::listener::{Listener, Remote};

/// Longest a connection may wait for a request's headers: from the moment it is ready
/// for one (accepted, or done with the previous request) until the last header line.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a stopping server waits for requests in hand before it closes their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `stop` completes (see the module docs).
pub async fn serve(mut listener: Listener, router: Router, stop: impl Future<Output = ()>) {
    let (closing, closed) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            () = &mut stop => break,
            next = listener.next() => next,
        };
        let Some((io, remote)) = next else { break };
        while connections.try_join_next().is_some() {}
        connections.spawn(connection(io, remote, router.clone(), closed.clone()));
    }
    drop(listener);
    let _ = closing.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::debug!(
            open = connections.len(),
            "closing the connections still open after the grace"
        );
    }
    connections.abort_all();
}

/// One connection, served until it ends or the server stops.
async fn connection(
    io: Box<dyn crate::listener::Io>,
    remote: Remote,
    router: Router,
    mut closed: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(remote.clone()));
        let mut router = router.clone();
        async move { Ok::<_, Infallible>(router.call(request).await.unwrap_or_else(|e| match e {})) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                tracing::trace!(cause = %err, "connection ended");
            }
            return;
        }
        _ = closed.wait_for(|c| *c) => conn.as_mut().graceful_shutdown(),
    }
    if let Err(err) = conn.await {
        tracing::trace!(cause = %err, "connection ended");
    }
}
