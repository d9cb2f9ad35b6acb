//! In-process clusters: three real nodes (real HTTP on loopback, real sled stores) in one
//! test process. "Killing" a node here is a shutdown; crash tests with SIGKILL are in the
//! root package's tests/, with real child processes.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use firebreak_model::kv::KvCommand;
use firebreak_model::{NodeId, SiteId};
use firebreak_node::config::{ApiLimits, Peer, RaftTimings};
use firebreak_node::{NodeConfig, RunningNode};
use tempfile::TempDir;

const SITES: [&str; 3] = ["pangyo", "gasan", "busan"];
const DEADLINE: Duration = Duration::from_secs(20);

struct Cluster {
    dir: TempDir,
    configs: Vec<NodeConfig>,
    nodes: Vec<Option<RunningNode>>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    async fn start(raft: RaftTimings) -> Self {
        let dir = TempDir::new().unwrap();
        let peers: Vec<Peer> = SITES
            .iter()
            .enumerate()
            .map(|(i, site)| Peer {
                id: NodeId(i as u64 + 1),
                site: SiteId::from(*site),
                addr: format!("127.0.0.1:{}", free_port()),
            })
            .collect();
        let configs: Vec<NodeConfig> = peers
            .iter()
            .map(|p| NodeConfig {
                cluster: "test".into(),
                node_id: p.id,
                site: p.site.clone(),
                listen: p.addr.parse().unwrap(),
                data_dir: dir.path().join(&p.site.0),
                peers: peers.clone(),
                raft: raft.clone(),
                api: ApiLimits::default(),
            })
            .collect();
        let mut cluster = Cluster {
            dir,
            configs,
            nodes: vec![None, None, None],
        };
        for i in 0..3 {
            cluster.start_node(i).await;
        }
        cluster
    }

    /// Starts node `i`, retrying while the previous instance still holds its sled lock.
    async fn start_node(&mut self, i: usize) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match firebreak_node::start(self.configs[i].clone()).await {
                Ok(node) => {
                    self.nodes[i] = Some(node);
                    return;
                }
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("node {i} did not start: {err}"),
            }
        }
    }

    async fn stop_node(&mut self, i: usize) {
        self.nodes[i]
            .take()
            .expect("node is running")
            .shutdown()
            .await;
    }

    fn node(&self, i: usize) -> &RunningNode {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// The index of the node that leads the state group, once every running node agrees.
    async fn state_leader(&self) -> usize {
        poll("a state leader every running node agrees on", || {
            let leaders: Vec<Option<NodeId>> = self
                .nodes
                .iter()
                .flatten()
                .map(|n| n.api.state.info().leader)
                .collect();
            match leaders.first() {
                Some(Some(l)) if leaders.iter().all(|x| *x == Some(*l)) => self
                    .nodes
                    .iter()
                    .position(|n| n.as_ref().is_some_and(|n| n.api.config.node_id == *l)),
                _ => None,
            }
        })
        .await
    }

    async fn put(&self, i: usize, key: &str, value: &str) {
        let command = KvCommand::Put {
            key: key.into(),
            value: value.into(),
        };
        self.node(i)
            .api
            .state
            .write(command)
            .await
            .unwrap_or_else(|e| panic!("put {key} on node {i}: {e}"));
    }

    fn stale_get(&self, i: usize, key: &str) -> Option<String> {
        self.node(i)
            .api
            .state
            .reader
            .read(|kv| kv.get(key).map(|e| e.value.clone()))
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Polls `f` until it returns `Some`, or panics naming `what` after the deadline.
async fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elects_one_leader_and_replicates_to_all() {
    let cluster = Cluster::start(RaftTimings::default()).await;
    let leader = cluster.state_leader().await;
    cluster.put(leader, "greeting", "hello").await;
    for i in 0..3 {
        poll("replication to every node", || {
            cluster.stale_get(i, "greeting").filter(|v| v == "hello")
        })
        .await;
    }
    // A follower refuses to commit on its own and names the leader.
    let follower = (leader + 1) % 3;
    let err = cluster
        .node(follower)
        .api
        .state
        .write(KvCommand::Delete {
            key: "greeting".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            firebreak_node::group::GroupError::NotLeader { leader: Some(_) }
        ),
        "{err:?}"
    );
    // Members register their sites in the control group.
    poll("three registered sites", || {
        (cluster.node(0).api.control.reader.read(|c| c.sites.len()) == 3).then_some(())
    })
    .await;
    assert!(cluster.path().join("pangyo/identity.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_leader_commits_after_the_leader_stops() {
    let mut cluster = Cluster::start(RaftTimings::default()).await;
    let old = cluster.state_leader().await;
    cluster.put(old, "before", "1").await;
    cluster.stop_node(old).await;
    let new = cluster.state_leader().await;
    assert_ne!(new, old);
    cluster.put(new, "after", "2").await;
    let other = (0..3).find(|i| *i != old && *i != new).unwrap();
    poll("the survivor sees both writes", || {
        (cluster.stale_get(other, "before").is_some()
            && cluster.stale_get(other, "after").is_some())
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_follower_catches_up_from_the_log() {
    let mut cluster = Cluster::start(RaftTimings::default()).await;
    let leader = cluster.state_leader().await;
    let follower = (leader + 1) % 3;
    cluster.stop_node(follower).await;
    for i in 0..50 {
        cluster.put(leader, &format!("k{i}"), "v").await;
    }
    cluster.start_node(follower).await;
    poll("the restarted follower has every key", || {
        (0..50)
            .all(|i| cluster.stale_get(follower, &format!("k{i}")).is_some())
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_through_a_snapshot() {
    let raft = RaftTimings {
        snapshot_logs_since_last: 20,
        max_in_snapshot_log_to_keep: 0,
        ..RaftTimings::default()
    };
    let mut cluster = Cluster::start(raft).await;
    let leader = cluster.state_leader().await;
    let follower = (leader + 1) % 3;
    cluster.put(leader, "early", "1").await;
    poll("the follower has the early key", || {
        cluster.stale_get(follower, "early")
    })
    .await;
    let follower_last = cluster
        .node(follower)
        .api
        .state
        .info()
        .last_log_index
        .unwrap();
    cluster.stop_node(follower).await;
    for i in 0..120 {
        cluster.put(leader, &format!("k{i}"), "v").await;
    }
    // The leader must have purged the entries the follower lacks, or this proves nothing.
    poll("the leader to purge past the follower's log", || {
        let purged = cluster.node(leader).api.state.info().purged_index?;
        (purged > follower_last + 1).then_some(())
    })
    .await;
    cluster.start_node(follower).await;
    poll("the follower to install a snapshot and catch up", || {
        let info = cluster.node(follower).api.state.info();
        let caught_up = (0..120).all(|i| cluster.stale_get(follower, &format!("k{i}")).is_some());
        (info.snapshot_index.is_some() && caught_up).then_some(())
    })
    .await;
    assert_eq!(cluster.stale_get(follower, "early").as_deref(), Some("1"));
}
