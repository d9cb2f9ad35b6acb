//! The store survives a real power loss of every node at once, not just SIGKILL: every
//! node's data dir sits on the drop-unsynced filesystem, 32 writers put 100 B, 4 KiB and
//! 16 KiB values (at sled's default segment size these made tens of blob files, which
//! sled itself never syncs; the store's 16 MiB segments now keep pages out of them), then
//! all three nodes are SIGKILLed and lose everything unsynced, and come back: every
//! acknowledged key reads back with its value, and no refused key appears.
//!
//! Needs root and /dev/fuse; skipped without them, except under CI=true.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firebreak_chaos::lazyfs::Mount;
use firebreak_tests::{fuse_or_skip, put, Api, Outcome, TestCluster, DEADLINE, SITES};

const WRITERS: usize = 32;
const PUTS_PER_WRITER: usize = 40;
const SIZES: [usize; 3] = [100, 4096, 16_384];
/// Tries of a refused put (nothing written) before it counts as refused.
const RETRIES: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_a_blackout() {
    if !fuse_or_skip() {
        return;
    }
    let mut cluster = TestCluster::configure("");
    let mut disks: Vec<Mount> = SITES
        .iter()
        .map(|site| {
            let dir = cluster.dir.path();
            let durable = dir.join(format!("{site}-durable"));
            Mount::new(&dir.join(site), &durable, &format!("t-blackout-{site}")).unwrap()
        })
        .collect();
    for i in 0..3 {
        cluster.spawn(i);
    }
    let api = Arc::new(Api::new());
    let addrs = cluster.addrs();
    api.wait_leader(&addrs, "state").await;

    let outcomes = write_concurrently(&api, &addrs).await;
    let acked = outcomes.values().filter(|(o, _)| *o == Outcome::Ok).count();
    assert!(
        acked >= WRITERS * PUTS_PER_WRITER / 2,
        "too few acknowledged: {acked}\n{}",
        cluster.logs()
    );
    let blobs = std::fs::read_dir(cluster.dir.path().join("pangyo/state/sled/blobs"))
        .map(|d| d.count())
        .unwrap_or(0);

    for i in 0..3 {
        cluster.kill(i);
    }
    let lost: Vec<_> = disks.iter_mut().map(|d| d.power_loss().unwrap()).collect();
    eprintln!(
        "{acked} acknowledged, {blobs} blob files at pangyo; the power loss discarded {lost:?}"
    );
    for i in 0..3 {
        cluster.spawn(i);
    }
    api.wait_leader(&addrs, "state").await;
    for (key, (outcome, expected)) in &outcomes {
        let value = read_with_retry(&api, &addrs[0], key, &cluster).await;
        match outcome {
            Outcome::Ok => assert!(
                value.as_ref() == Some(expected),
                "acknowledged {key} is {:?} after the blackout\n{}",
                value.map(|v| v.len()),
                cluster.logs()
            ),
            Outcome::Failed => assert_eq!(value, None, "refused {key} appeared"),
            Outcome::Unknown => {}
        }
    }
    drop(cluster); // the node processes before the mounts under them
    drop(disks);
}

type Outcomes = BTreeMap<String, (Outcome, String)>;

async fn write_concurrently(api: &Arc<Api>, addrs: &[String]) -> Outcomes {
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let (api, addr) = (api.clone(), addrs[w % addrs.len()].clone());
        writers.spawn(async move {
            let mut mine = Vec::new();
            for i in 0..PUTS_PER_WRITER {
                let key = format!("w{w:02}-{i:03}");
                let fill = char::from(b'a' + (i % 26) as u8);
                let value: String =
                    std::iter::repeat_n(fill, SIZES[(w + i) % SIZES.len()]).collect();
                // A refused put wrote nothing (an election under way): try it again.
                let mut outcome = put(&api.http, &addr, &key, &value).await;
                for _ in 0..RETRIES {
                    if outcome != Outcome::Failed {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    outcome = put(&api.http, &addr, &key, &value).await;
                }
                mine.push((key, (outcome, value)));
            }
            mine
        });
    }
    let mut outcomes = Outcomes::new();
    while let Some(done) = writers.join_next().await {
        outcomes.extend(done.expect("writer task"));
    }
    outcomes
}

async fn read_with_retry(
    api: &Api,
    addr: &str,
    key: &str,
    cluster: &TestCluster,
) -> Option<String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match api.get(addr, key, false).await {
            Ok(value) => return value,
            Err(e) if Instant::now() > deadline => {
                panic!("{key} unreadable at {addr}: {e}\n{}", cluster.logs())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
