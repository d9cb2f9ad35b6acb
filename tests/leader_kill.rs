//! A leader's process is SIGKILLed in the middle of a stream of writes: no acknowledged
//! write is lost, no refused write appears, the killed node catches up when it returns,
//! and neither a graceful stop of all three nodes nor a SIGKILL of all three loses anything.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use firebreak_tests::{put, Api, Outcome, TestCluster, DEADLINE};

const KEYS: usize = 1000;
const KILL_AT: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start("");
    let api = Api::new();
    let addrs = cluster.addrs();
    let leader = api.wait_leader(&addrs, "state").await as usize - 1;

    let mut outcomes = BTreeMap::new();
    let mut alive: Vec<usize> = vec![0, 1, 2];
    for i in 0..KEYS {
        if i == KILL_AT {
            cluster.kill(leader);
            alive.retain(|n| *n != leader);
        }
        let key = format!("key{i:04}");
        // Spread writes over the live nodes: followers forward to the leader.
        let node = alive[i % alive.len()];
        let value = format!("value{i}");
        let outcome = put(&api.http, &addrs[node], &key, &value).await;
        outcomes.insert(key, (outcome, value));
        if outcome != Outcome::Ok {
            // An election is under way; do not spin.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let count = |o| outcomes.values().filter(|(x, _)| *x == o).count();
    eprintln!(
        "ok {} failed {} unknown {}",
        count(Outcome::Ok),
        count(Outcome::Failed),
        count(Outcome::Unknown)
    );
    // Enough acknowledged writes on both sides of the kill for the checks to mean something.
    let acked_after_kill = outcomes
        .iter()
        .filter(|(k, (o, _))| {
            *o == Outcome::Ok && k.as_str() >= format!("key{KILL_AT:04}").as_str()
        })
        .count();
    assert!(
        count(Outcome::Ok) >= KEYS / 2 && acked_after_kill >= 100,
        "too few acknowledged writes ({} in all, {acked_after_kill} after the kill)\n{}",
        count(Outcome::Ok),
        cluster.logs()
    );

    // Every acknowledged key is on the survivors; no refused key is anywhere.
    let survivor = alive[0];
    check(&api, &addrs[survivor], &outcomes, false).await;

    // The killed node returns and catches up.
    cluster.spawn(leader);
    wait_caught_up(&api, &addrs[leader], &addrs[survivor]).await;
    check(&api, &addrs[leader], &outcomes, true).await;

    // SIGKILL all three at once, with no graceful stop before: every node must recover its
    // log, vote, state-machine records and snapshot from crash state, together. (A SIGKILL
    // keeps the OS page cache, so this cannot prove the fsync; the flusher's order does.)
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    api.wait_leader(&addrs, "state").await;
    check(&api, &addrs[1], &outcomes, false).await;

    // Stop everything gracefully, start again, read everything back.
    for i in 0..3 {
        assert_eq!(
            cluster.terminate(i),
            Some(0),
            "graceful stop exits 0\n{}",
            cluster.logs()
        );
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    api.wait_leader(&addrs, "state").await;
    check(&api, &addrs[0], &outcomes, false).await;
}

/// Asserts acknowledged keys present with their value and refused keys absent at `addr`.
async fn check(api: &Api, addr: &str, outcomes: &BTreeMap<String, (Outcome, String)>, stale: bool) {
    for (key, (outcome, expected)) in outcomes {
        let value = read_with_retry(api, addr, key, stale).await;
        match outcome {
            Outcome::Ok => assert_eq!(
                value.as_ref(),
                Some(expected),
                "acknowledged {key} at {addr}"
            ),
            Outcome::Failed => assert_eq!(value, None, "refused {key} appeared at {addr}"),
            Outcome::Unknown => {}
        }
    }
}

async fn read_with_retry(api: &Api, addr: &str, key: &str, stale: bool) -> Option<String> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match api.get(addr, key, stale).await {
            Ok(value) => return value,
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "{addr} could not serve {key}: {err}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Waits until `addr` has applied everything the node at `reference` has committed.
async fn wait_caught_up(api: &Api, addr: &str, reference: &str) {
    let applied = |info: &serde_json::Value| info["groups"][1]["applied_index"].as_u64();
    let target = applied(&api.cluster(reference).await.expect("reference answers")).unwrap_or(0);
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(info) = api.cluster(addr).await {
            if applied(&info).unwrap_or(0) >= target {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{addr} did not catch up to index {target}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
