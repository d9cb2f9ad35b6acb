//! What a listener holds for a client that does not finish: at most its share of the
//! connections, and no connection that keeps it waiting for headers.
//!
//! An adversarial review held 20,000 idle TLS connections on a node until it ran out of
//! file descriptors and its store failed, and 3,000 connections with half-sent headers
//! open for 30 s. These tests hold connections open against a plain listener (TLS adds
//! nothing to either bound) and watch the listener close them.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use firebreak_tls::listener::{bind, Counters, Limits, Listener};
use firebreak_tls::serve::{serve, HEADER_READ_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A listener on loopback that answers `GET /` with `ok`, within `limits`.
async fn start(limits: Limits) -> (SocketAddr, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let listener = Listener::new(
        bind("127.0.0.1:0".parse().unwrap()).unwrap(),
        None,
        limits,
        counters.clone(),
    )
    .unwrap();
    let addr = listener.local_addr();
    let router = Router::new().route("/", get(|| async { "ok" }));
    tokio::spawn(serve(listener, router, std::future::pending()));
    (addr, counters)
}

/// A connection to `addr` from the loopback address `from`.
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Sends one request on `stream` and returns whether `ok` came back.
async fn served(stream: &mut TcpStream) -> bool {
    let request = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = vec![0u8; 512];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&answer[..n]).ends_with("ok"),
        _ => false,
    }
}

/// Whether the listener closed `stream` within `within` (it reads end of file).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn a_listener_holds_its_limits_in_all_and_per_address() {
    let limits = Limits {
        connections: 3,
        per_address: 2,
    };
    let (addr, counters) = start(limits).await;
    let mut first = connect_from("127.0.0.1", addr).await;
    let mut second = connect_from("127.0.0.1", addr).await;
    assert!(served(&mut first).await && served(&mut second).await);
    // A third from the same address is closed as soon as it is accepted.
    let mut third = connect_from("127.0.0.1", addr).await;
    assert!(closed_within(&mut third, Duration::from_secs(5)).await);
    // Another address still gets the slot that is left, and no more.
    let mut other = connect_from("127.0.0.2", addr).await;
    assert!(served(&mut other).await);
    let mut over = connect_from("127.0.0.3", addr).await;
    assert!(closed_within(&mut over, Duration::from_secs(5)).await);
    assert_eq!(counters.refused.load(Ordering::Relaxed), 2);
    assert_eq!(counters.open.load(Ordering::Relaxed), 3);
    // A closed connection gives its slot back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    while counters.open.load(Ordering::Relaxed) > 2 {
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = connect_from("127.0.0.1", addr).await;
    assert!(served(&mut again).await);
}

#[tokio::test]
async fn a_connection_that_sends_no_whole_request_head_is_closed() {
    let limits = Limits {
        connections: 16,
        per_address: 16,
    };
    let (addr, counters) = start(limits).await;
    let patience = HEADER_READ_TIMEOUT + Duration::from_secs(3);
    // Nothing sent at all.
    let mut silent = connect_from("127.0.0.1", addr).await;
    // Headers trickled in and never finished.
    let mut trickled = connect_from("127.0.0.1", addr).await;
    trickled
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n")
        .await
        .unwrap();
    // Served once, then idle between requests.
    let mut idle = connect_from("127.0.0.1", addr).await;
    assert!(served(&mut idle).await);
    let began = Instant::now();
    assert!(
        closed_within(&mut silent, patience).await,
        "a silent connection stayed open"
    );
    assert!(
        closed_within(&mut trickled, patience).await,
        "a trickled head stayed open"
    );
    assert!(
        closed_within(&mut idle, patience).await,
        "an idle connection stayed open"
    );
    assert!(
        began.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_secs(1),
        "closed before the timeout ({:?})",
        began.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while counters.open.load(Ordering::Relaxed) > 0 {
        assert!(Instant::now() < deadline, "the slots never came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn a_listener_gets_its_share_of_the_open_file_limit_and_never_less_than_the_floor() {
    let share = Limits::share_of(65_536, 55);
    assert_eq!(share.connections, (65_536 - 1024) * 55 / 100);
    assert_eq!(share.per_address, share.connections / 2);
    let tiny = Limits::share_of(256, 20);
    assert_eq!(tiny.connections, firebreak_tls::listener::MIN_CONNECTIONS);
}
