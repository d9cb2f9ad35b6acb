//! A write that openraft truncated on the leader that took it, and that a later leader
//! still commits: the client must hear "outcome unknown" (504), never "not applied" (503),
//! so that it does not send the write again, and the write applies once.
//!
//! ```text
//!   five voters A B C D E, A leads
//!   1. A takes the write, and it reaches C only          (A → B, D, E cut)
//!   2. B is elected by B, D, E; its first entry reaches A only, and A truncates the write:
//!      openraft answers the write ForwardToLeader(B)
//!   3. C, which still holds the write, is elected by C, D, E and commits it
//! ```
//!
//! The steps are placed by cutting Raft RPCs inside this process
//! (`firebreak_node::sabotage::cut_rpcs`), so this file holds one test: the cuts are the
//! process's.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{poll, Cluster};
use firebreak_node::config::RaftTimings;
use firebreak_node::sabotage::{cut_rpcs, RpcCut};
use openraft::ServerState;

const SITES: [&str; 5] = ["pangyo", "gasan", "busan", "daejeon", "gwangju"];
const EVERY_RPC: [&str; 4] = ["append", "vote", "snapshot", "leader"];

/// Every `rpcs` that the node at index `from` sends to the nodes at indexes `to`.
fn cuts(cluster: &Cluster, from: usize, to: &[usize], rpcs: &[&'static str]) -> Vec<RpcCut> {
    let id = |i: usize| cluster.configs[i].node_id.0;
    to.iter()
        .flat_map(|t| {
            rpcs.iter().map(move |rpc| RpcCut {
                group: "state",
                from: id(from),
                to: id(*t),
                rpc,
            })
        })
        .collect()
}

fn last_log_index(cluster: &Cluster, i: usize) -> u64 {
    let metrics = cluster.node(i).api.state.raft.metrics().borrow().clone();
    metrics.last_log_index.unwrap_or(0)
}

fn leads(cluster: &Cluster, i: usize) -> bool {
    cluster.node(i).api.state.raft.metrics().borrow().state == ServerState::Leader
}

/// The key's version (how many puts applied) on node `i`.
fn version(cluster: &Cluster, i: usize, key: &str) -> Option<u64> {
    let reader = &cluster.node(i).api.state.reader;
    reader.read(|kv| kv.get(key).map(|e| e.version))
}

/// PUT `key` through the client API at `addr`: the status and the error's kind, if any.
async fn put(addr: SocketAddr, key: &'static str) -> (u16, String) {
    let url = format!("http://{addr}/v1/kv");
    let response = reqwest::Client::new()
        .put(url)
        .json(&serde_json::json!({ "key": key, "value": "once" }))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("the node answers");
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (
        status,
        body["error"]["kind"].as_str().unwrap_or("").to_string(),
    )
}

/// Every RPC that each of `silent` sends to any other node.
fn silence(cluster: &Cluster, silent: &[usize]) -> Vec<RpcCut> {
    silent
        .iter()
        .flat_map(|s| {
            let rest: Vec<usize> = (0..SITES.len()).filter(|i| i != s).collect();
            cuts(cluster, *s, &rest, &EVERY_RPC)
        })
        .collect()
}

/// Five voters that all hold the leader's log; the leader's index and its last index.
async fn five_voters_in_step() -> (Cluster, usize, u64) {
    let mut cluster = Cluster::configure_sites(RaftTimings::default(), Vec::new(), &SITES);
    for config in &mut cluster.configs {
        // The write must still wait when its entry is truncated, whatever the machine's pace.
        config.api.write_timeout_ms = 30_000;
    }
    for i in 0..SITES.len() {
        cluster.start_node(i).await;
    }
    let a = cluster.state_leader().await;
    cluster.put(a, "before", "1").await;
    let before = last_log_index(&cluster, a);
    poll("every voter holds the leader's log", || {
        (0..SITES.len())
            .all(|i| last_log_index(&cluster, i) == before)
            .then_some(())
    })
    .await;
    (cluster, a, before)
}

/// How many times `key` was put, once every voter has applied the same.
async fn applied_everywhere(cluster: &Cluster, key: &str) -> u64 {
    poll("every voter has applied the write", || {
        let versions: Vec<Option<u64>> =
            (0..SITES.len()).map(|i| version(cluster, i, key)).collect();
        versions
            .iter()
            .all(|v| v.is_some() && *v == versions[0])
            .then(|| versions[0].unwrap())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_truncated_under_one_leader_and_committed_by_the_next_is_not_answered_as_not_applied(
) {
    let (cluster, a, before) = five_voters_in_step().await;
    let others: Vec<usize> = (0..SITES.len()).filter(|i| *i != a).collect();
    let (b, c, d, e) = (others[0], others[1], others[2], others[3]);

    // 1. The write reaches A and C only: two of five, so it cannot commit yet.
    cut_rpcs(cuts(&cluster, a, &[b, d, e], &EVERY_RPC));
    let answer = tokio::spawn(put(cluster.node(a).addr, "once"));
    poll("the write in A's and C's logs", || {
        let at_a = last_log_index(&cluster, a);
        (at_a > before && last_log_index(&cluster, c) == at_a).then_some(())
    })
    .await;

    // 2. Only B may campaign; its entries reach A and no one else.
    let mut step2 = silence(&cluster, &[a, c, d, e]);
    step2.extend(cuts(&cluster, b, &[c, d, e], &["append", "snapshot"]));
    cut_rpcs(step2);
    poll("B leads", || leads(&cluster, b).then_some(())).await;
    let (status, kind) = tokio::time::timeout(Duration::from_secs(60), answer)
        .await
        .expect("A answers the write once B's entry truncates it")
        .expect("the client task ran");

    // 3. Only C may campaign, and D and E follow it: C commits the write it holds.
    cut_rpcs(silence(&cluster, &[a, b, d, e]));
    poll("C leads and has applied the write", || {
        (leads(&cluster, c) && version(&cluster, c, "once").is_some()).then_some(())
    })
    .await;
    cut_rpcs(Vec::new());

    // A client sends again what it was told did not apply, and only that.
    if status == 503 {
        let again = put(cluster.node(c).addr, "once").await;
        assert_eq!(again.0, 200, "the retry was refused: {again:?}");
    }
    let applied = applied_everywhere(&cluster, "once").await;
    assert_eq!(
        applied, 1,
        "the write applied {applied} times: the first answer was {status} {kind:?}, which a \
         client takes for \"not applied\", yet the write committed"
    );
    assert_eq!(
        (status, kind.as_str()),
        (504, "outcome_unknown"),
        "a write that may still commit must be answered outcome_unknown"
    );
}
