//! A follower that fell behind must catch up over a link that carries less than one
//! AppendEntries of `raft.max_append_bytes` per heartbeat interval.
//!
//! openraft 0.9 gives every AppendEntries one heartbeat interval. A catch-up payload that
//! cannot cross in that time timed out, its HTTP/1.1 connection was dropped with it, and
//! openraft sent the same payload again, on a new connection in TCP slow start: forever.
//! CI met this at a 10 ms round trip (wan-pangyo-fire): when pangyo, the state leader,
//! burned, the new leader's first AppendEntries to the other follower carried half the log
//! (openraft probes from the middle), never arrived, and no write committed for the rest of
//! the drill.
//!
//! ```text
//!   every node's peers reach it through a link: 5 ms each way, 2 MB/s (200 KB per 100 ms)
//!   follower F stopped; 40 writes of 30 KiB (1.2 MB) committed without it; F restarted
//!   within 10 s: F has the last write
//! ```

mod common;

use std::time::{Duration, Instant};

use common::{poll, Cluster};
use firebreak_node::config::RaftTimings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One way.
const DELAY: Duration = Duration::from_millis(5);
/// Bytes per second each way.
const RATE: f64 = 2_000_000.0;
const WRITES: usize = 40;
const VALUE_BYTES: usize = 30 * 1024;
const CATCH_UP_WITHIN: Duration = Duration::from_secs(10);

/// A TCP proxy in front of one address whose every direction holds each chunk for
/// [`DELAY`] and passes at most [`RATE`] bytes per second. Dropped, it stops.
struct NarrowLink {
    addr: String,
    accept: JoinHandle<()>,
}

impl NarrowLink {
    async fn to(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    let up = tokio::spawn(carry(in_read, out_write));
                    carry(out_read, in_write).await;
                    up.abort();
                });
            }
        });
        Self { addr, accept }
    }
}

impl Drop for NarrowLink {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Carries `from` to `to` late and slowly, until either side closes.
async fn carry(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 || tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    });
    let mut free_at = Instant::now();
    while let Some((arrived, chunk)) = rx.recv().await {
        let on_the_wire = Duration::from_secs_f64(chunk.len() as f64 / RATE);
        free_at = free_at.max(arrived) + on_the_wire;
        tokio::time::sleep_until((free_at + DELAY).into()).await;
        if to.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_catches_up_over_a_link_narrower_than_one_append() {
    let mut cluster = Cluster::configure(RaftTimings::default(), Vec::new());
    let mut links = Vec::new();
    for i in 0..cluster.configs.len() {
        let link = NarrowLink::to(cluster.configs[i].peer_listen.to_string()).await;
        for config in &mut cluster.configs {
            config.peers[i].addr = link.addr.clone();
        }
        links.push(link);
    }
    for i in 0..cluster.configs.len() {
        cluster.start_node(i).await;
    }
    let leader = cluster.state_leader().await;
    cluster.put(leader, "before", "1").await;
    let follower = (leader + 1) % cluster.configs.len();
    poll("the follower has the first write", || {
        cluster.stale_get(follower, "before")
    })
    .await;

    cluster.stop_node(follower).await;
    let value = "v".repeat(VALUE_BYTES);
    for n in 0..WRITES {
        cluster.put(leader, &format!("k{n}"), &value).await;
    }
    cluster.start_node(follower).await;

    let last = format!("k{}", WRITES - 1);
    let began = Instant::now();
    while cluster.stale_get(follower, &last).is_none() {
        assert!(
            began.elapsed() < CATCH_UP_WITHIN,
            "the restarted follower did not catch up within {CATCH_UP_WITHIN:?}: {} of {WRITES} writes of {VALUE_BYTES} bytes reached it over a link of {RATE} bytes/s",
            (0..WRITES)
                .filter(|n| cluster.stale_get(follower, &format!("k{n}")).is_some())
                .count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "the follower caught up {:?} after its restart",
        began.elapsed()
    );
    drop(links);
}
