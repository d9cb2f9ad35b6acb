//! An outsider with no credential cannot take a node down by holding connections.
//!
//! An adversarial review opened about 20,000 idle TLS connections to one node's client and
//! admin listeners. The node ran out of file descriptors, its control store's next flush
//! failed with `Too many open files`, and it stopped for good (exit 11, which the shipped
//! unit does not restart). Here the nodes run with an open-file limit of 2,048 and the
//! test holds more idle connections than that against gasan's three listeners, all from
//! one address. Each listener holds at most its share of the descriptors (and one address
//! at most half of that), so gasan keeps its stores, its Raft group and its lease, and a
//! client from another address still gets in.
//!
//! ```text
//!   127.0.0.1 ─ 1,200 idle ─► gasan client   (holds ≤ 563, ≤ 281 from one address)
//!             ─   600 idle ─► gasan admin    (≤ 204)
//!             ─   600 idle ─► gasan peer     (≤ 256)
//!   meanwhile: writes through pangyo commit and gasan applies them; 127.0.0.2 is served
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use firebreak_tests::{eventually, put, tls, Api, Outcome, TestCluster, TEST_TOKEN};
use tokio::net::{TcpSocket, TcpStream};

/// The nodes' open-file limit: the attack holds more connections than this.
const OPEN_FILES: u64 = 2_048;
/// Idle connections held against gasan's client, admin and peer listeners.
const HELD: [usize; 3] = [1_200, 600, 600];
const GASAN: usize = 1;

/// A client of the nodes' listeners whose connections come from `local`.
fn client_from(local: IpAddr) -> Api {
    let http = tls()
        .apply(reqwest::Client::builder())
        .local_address(local)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    Api { http }
}

/// Raises the test process's own open-file limit to its hard limit, which must leave room
/// for every connection the attack holds.
fn room_for_the_attack() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write the struct they are given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    let needed = HELD.iter().sum::<usize>() as u64 + 512;
    assert!(
        limit.rlim_cur >= needed,
        "this test holds {needed} connections, and this process may open {} files: raise the hard limit (ulimit -Hn)",
        limit.rlim_cur
    );
}

/// Opens `count` TCP connections to `addr` from 127.0.0.1 and keeps them idle. A
/// connection the listener closes at once still counts: it was refused, not held.
async fn hold(addr: &str, count: usize) -> Vec<TcpStream> {
    let addr: SocketAddr = addr.parse().expect("a node address");
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = TcpSocket::new_v4().expect("socket");
        if let Ok(stream) = socket.connect(addr).await {
            held.push(stream);
        }
    }
    held
}

/// The value of the sample `name` in a Prometheus text page.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_open_file_limit_take_no_node_down() {
    room_for_the_attack();
    let mut cluster = TestCluster::configure("");
    cluster.open_files = Some(OPEN_FILES);
    for i in 0..3 {
        cluster.spawn(i);
    }
    cluster.wait_listening();
    let api = Api::new();
    let addrs = cluster.addrs();
    api.wait_steady(&addrs).await;
    let node = &cluster.nodes[GASAN];
    let gasan = (node.addr.clone(), node.admin_addr.clone());
    let targets = [&node.addr, &node.admin_addr, &node.peer_addr].map(|a| a.clone());
    let mut held = Vec::new();
    for (addr, count) in targets.iter().zip(HELD) {
        held.push(hold(addr, count).await);
    }

    // Writes go on, through pangyo, and gasan applies every one: its stores and its Raft
    // group are untouched.
    let writer = api.http.clone();
    for i in 0..20 {
        let outcome = put(&writer, &addrs[0], &format!("siege-{i}"), "held").await;
        assert_eq!(outcome, Outcome::Ok, "write {i} during the siege");
    }
    let other = client_from("127.0.0.2".parse().unwrap());
    eventually(
        Duration::from_secs(10),
        "gasan applies the last write",
        || async {
            match other.get(&gasan.0, "siege-19", true).await? {
                Some(_) => Ok(()),
                None => Err("not applied yet".into()),
            }
        },
    )
    .await;
    let metrics = other
        .http
        .get(firebreak_tests::url(&gasan.1, "/metrics"))
        .bearer_auth(TEST_TOKEN)
        .send()
        .await
        .expect("gasan's admin listener serves another address")
        .text()
        .await
        .unwrap();
    let refused = sample(
        &metrics,
        "firebreak_connections_refused_total{listener=\"client\"}",
    );
    let open = sample(&metrics, "firebreak_connections_open{listener=\"client\"}");
    let counts: Vec<usize> = held.iter().map(Vec::len).collect();
    eprintln!("connected {counts:?}; gasan's client listener refused {refused}, holds {open}");
    assert!(
        refused > 0.0,
        "the client listener refused none:\n{metrics}"
    );
    assert!(
        open <= 563.0,
        "the client listener holds {open} connections"
    );
    drop(held);
    assert_eq!(
        cluster.exited(GASAN),
        None,
        "gasan stopped\n{}",
        cluster.logs()
    );
}
