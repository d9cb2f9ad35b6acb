//! A partial partition must not stop writes: the state leader A loses three of its four
//! followers but still reaches the fifth, E, which reaches everyone. WAN links fail like
//! this. B, C and D hear no leader, and with A and E they are a majority that can elect one;
//! E still hears A, and one voter that hears a leader must not hold every election back.
//!
//! ```text
//!   A ─╳─ B, C, D        (every Raft RPC and election-gate probe, both ways)
//!   A ─── E ─── B, C, D
//!   within 3 s: a leader other than A commits a write
//! ```
//!
//! An adversarial review measured this with five voters in network namespaces: no write
//! was acknowledged for the whole 20 s of the cut (etcd with pre-vote: 2.2 s). The cuts are
//! placed inside this process (`firebreak_node::sabotage::cut_rpcs`), so this file holds
//! one test.

mod common;

use std::time::{Duration, Instant};

use common::{poll, Cluster};
use firebreak_model::kv::KvCommand;
use firebreak_node::config::RaftTimings;
use firebreak_node::sabotage::{cut_rpcs, RpcCut};
use openraft::ServerState;

const SITES: [&str; 5] = ["pangyo", "gasan", "busan", "daejeon", "gwangju"];
const EVERY_RPC: [&str; 4] = ["append", "vote", "snapshot", "leader"];
/// The issue's bound: etcd with pre-vote took 2.2 s.
const WRITE_WITHIN: Duration = Duration::from_secs(3);

/// Every Raft RPC and gate probe between the node at index `a` and those at `others`,
/// both ways.
fn cut_between(cluster: &Cluster, a: usize, others: &[usize]) -> Vec<RpcCut> {
    let id = |i: usize| cluster.configs[i].node_id.0;
    let mut cuts = Vec::new();
    for other in others {
        for rpc in EVERY_RPC {
            for (from, to) in [(a, *other), (*other, a)] {
                cuts.push(RpcCut {
                    group: "state",
                    from: id(from),
                    to: id(to),
                    rpc,
                });
            }
        }
    }
    cuts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_from_three_of_five_voters_is_replaced_and_writes_go_on() {
    let mut cluster = Cluster::configure_sites(RaftTimings::default(), Vec::new(), &SITES);
    for i in 0..SITES.len() {
        cluster.start_node(i).await;
    }
    let a = cluster.state_leader().await;
    cluster.put(a, "before", "1").await;
    let others: Vec<usize> = (0..SITES.len()).filter(|i| *i != a).collect();
    let (cut_off, bridge) = (&others[..3], others[3]);

    cut_rpcs(cut_between(&cluster, a, cut_off));
    let cut_at = Instant::now();
    let leader = poll("a leader other than A", || {
        others.iter().copied().find(|i| {
            cluster.node(*i).api.state.raft.metrics().borrow().state == ServerState::Leader
        })
    })
    .await;
    let command = KvCommand::Put {
        key: "after".into(),
        value: "1".into(),
    };
    let written = tokio::time::timeout(
        WRITE_WITHIN.saturating_sub(cut_at.elapsed()),
        cluster.node(leader).api.state_writer.write(command),
    )
    .await;
    let took = cut_at.elapsed();
    cut_rpcs(Vec::new());
    assert!(
        matches!(written, Ok(Ok(_))),
        "no write acknowledged within {WRITE_WITHIN:?} of the cut ({took:?}; A is node {a}, E is node {bridge}): {written:?}"
    );
    eprintln!("first write after the cut acknowledged in {took:?}");
}
