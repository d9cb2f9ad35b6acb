//! A failed fsync stops the node ("fsyncgate"): after a failed fsync the kernel may have
//! dropped the pages, so the store must never acknowledge anything again. pangyo's data
//! dir sits on the drop-unsynced filesystem, whose fsync is made to fail with EIO: pangyo's
//! node exits with code 11 and says why, and the other two go on taking writes.
//!
//! Needs root and /dev/fuse; skipped without them, except under CI=true.

use std::time::{Duration, Instant};

use firebreak_chaos::lazyfs::Mount;
use firebreak_tests::{fuse_or_skip, put, Api, Outcome, TestCluster, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_the_node_with_a_clear_error() {
    if !fuse_or_skip() {
        return;
    }
    let mut cluster = TestCluster::configure("");
    let data = cluster.dir.path().join("pangyo");
    let disk = Mount::new(&data, &cluster.dir.path().join("pangyo-durable"), "t-fsync").unwrap();
    for i in 0..3 {
        cluster.spawn(i);
    }
    let api = Api::new();
    let addrs = cluster.addrs();
    // Every node bootstrapped and following: a pangyo still in its bootstrap when its disk
    // fails is a different path to the same exit (see the node's `bootstrap`).
    api.wait_steady(&addrs).await;
    assert_eq!(put(&api.http, &addrs[1], "before", "ok").await, Outcome::Ok);

    disk.fail_fsync(true);
    let deadline = Instant::now() + DEADLINE;
    let mut i = 0;
    let code = loop {
        // Writes reach pangyo's log through replication; its next flush fails.
        let _ = put(&api.http, &addrs[1 + i % 2], &format!("k{i}"), "v").await;
        i += 1;
        if let Some(code) = cluster.exited(0) {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "pangyo's node did not stop: {}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, 11, "a failed fsync exits 11\n{}", cluster.logs());
    let log = std::fs::read_to_string(&cluster.nodes[0].log).unwrap();
    eprintln!(
        "pangyo stopped after {i} writes: {}",
        log.lines().last().unwrap_or_default()
    );
    assert!(
        log.contains("failed to make writes durable") && log.contains("Input/output error"),
        "the log says what failed and why: {log}"
    );
    // The two others still have a quorum.
    let mut acknowledged = false;
    while !acknowledged && Instant::now() < deadline {
        acknowledged = put(&api.http, &addrs[1], "after", "ok").await == Outcome::Ok;
    }
    assert!(acknowledged, "gasan and busan go on without pangyo");
    drop(cluster); // the node processes before the mount under them
    drop(disk);
}
