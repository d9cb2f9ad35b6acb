//! The harness of the node's tests: in-process clusters of three real nodes (real HTTP on
//! loopback, real sled stores, real DNS) in one test process. "Killing" a node here is a
//! shutdown; crash tests with SIGKILL are in the root package's tests/, with real child
//! processes.

// Each test binary uses a part of the harness.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use firebreak_model::control::{ControlCommand, ControlResponse};
use firebreak_model::failover::{Actor, ActorKind, Rule};
use firebreak_model::kv::KvCommand;
use firebreak_model::topology::Topology;
use firebreak_model::{NodeId, SiteId};
use firebreak_node::config::{ApiLimits, DnsConfig, HookConfig, Peer, RaftTimings};
use firebreak_node::{NodeConfig, RunningNode};
use tempfile::TempDir;

pub const SITES: [&str; 3] = ["pangyo", "gasan", "busan"];
pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct Cluster {
    pub dir: TempDir,
    pub configs: Vec<NodeConfig>,
    pub nodes: Vec<Option<RunningNode>>,
}

/// `n` free `127.0.0.1` addresses, all distinct: every port is held until the last one is
/// found, so the kernel cannot hand one out twice.
fn free_addrs(n: usize) -> Vec<String> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

impl Cluster {
    pub async fn start(raft: RaftTimings) -> Self {
        Self::start_with(raft, Vec::new()).await
    }

    /// A cluster whose nodes all run `hooks`.
    pub async fn start_with(raft: RaftTimings, hooks: Vec<HookConfig>) -> Self {
        let mut cluster = Self::configure(raft, hooks);
        for i in 0..3 {
            cluster.start_node(i).await;
        }
        cluster
    }

    /// The three nodes' configs, none started yet.
    pub fn configure(raft: RaftTimings, hooks: Vec<HookConfig>) -> Self {
        Self::configure_sites(raft, hooks, &SITES)
    }

    /// The configs of one node at each of `sites`, all voters, none started yet.
    pub fn configure_sites(raft: RaftTimings, hooks: Vec<HookConfig>, sites: &[&str]) -> Self {
        let dir = TempDir::new().unwrap();
        let n = sites.len();
        let addrs = free_addrs(4 * n);
        let peers: Vec<Peer> = sites
            .iter()
            .enumerate()
            .map(|(i, site)| Peer {
                id: NodeId(i as u64 + 1),
                site: SiteId::from(*site),
                addr: addrs[i].clone(),
            })
            .collect();
        let configs: Vec<NodeConfig> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| NodeConfig {
                cluster: "test".into(),
                node_id: p.id,
                site: p.site.clone(),
                listen: addrs[n + i].parse().unwrap(),
                peer_listen: p.addr.parse().unwrap(),
                admin_listen: addrs[2 * n + i].parse().unwrap(),
                // These tests are about Raft and the API's answers; TLS and who may call
                // what are the end-to-end tests' subject (tests/trust_boundary.rs).
                tls: firebreak_node::config::TlsConfig {
                    plaintext_for_debugging: true,
                    ..Default::default()
                },
                data_dir: dir.path().join(&p.site.0),
                peers: peers.clone(),
                join: false,
                raft: raft.clone(),
                api: ApiLimits::default(),
                auth: Default::default(),
                state_voters: None,
                dns: Some(DnsConfig {
                    listen: addrs[3 * n + i].parse().unwrap(),
                    zone: "svc.test.".into(),
                    ttl_secs: 5,
                    responses_per_sec: firebreak_node::config::DEFAULT_RESPONSES_PER_SEC,
                }),
                hooks: hooks.clone(),
            })
            .collect();
        Cluster {
            dir,
            configs,
            nodes: (0..n).map(|_| None).collect(),
        }
    }

    /// Configures (does not start) node `id` of a new `site` that joins the running
    /// cluster (`join: true`), like its first three; returns its index.
    pub fn add_joiner(&mut self, id: u64, site: &str) -> usize {
        let held: Vec<TcpListener> = (0..4)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addr = |i: usize| held[i].local_addr().unwrap();
        let mut config = self.configs[0].clone();
        config.node_id = NodeId(id);
        config.site = SiteId::from(site);
        config.listen = addr(0);
        config.peer_listen = addr(1);
        config.admin_listen = addr(2);
        if let Some(dns) = &mut config.dns {
            dns.listen = addr(3);
        }
        config.data_dir = self.dir.path().join(format!("{site}-{id}"));
        config.join = true;
        config.peers.push(Peer {
            id: NodeId(id),
            site: SiteId::from(site),
            addr: addr(1).to_string(),
        });
        drop(held);
        self.configs.push(config);
        self.nodes.push(None);
        self.configs.len() - 1
    }

    /// Starts node `i`, retrying while the previous instance still holds its sled lock.
    pub async fn start_node(&mut self, i: usize) {
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

    pub async fn stop_node(&mut self, i: usize) {
        self.nodes[i]
            .take()
            .expect("node is running")
            .shutdown()
            .await;
    }

    pub fn node(&self, i: usize) -> &RunningNode {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// The index of the node that leads the state group, once every running node agrees.
    pub async fn state_leader(&self) -> usize {
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

    pub async fn put(&self, i: usize, key: &str, value: &str) {
        let command = KvCommand::Put {
            key: key.into(),
            value: value.into(),
        };
        self.node(i)
            .api
            .state_writer
            .write(command)
            .await
            .unwrap_or_else(|e| panic!("put {key} on node {i}: {e}"));
    }

    pub fn stale_get(&self, i: usize, key: &str) -> Option<String> {
        self.node(i)
            .api
            .state
            .reader
            .read(|kv| kv.get(key).map(|e| e.value.clone()))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Polls `f` until it returns `Some`, or panics naming `what` after the deadline.
pub async fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The operator of these tests.
pub fn ops() -> Actor {
    Actor {
        kind: ActorKind::Manual,
        name: "ops".into(),
    }
}

/// Three sites; messaging active-active (pangyo and gasan by IPv4, busan by IPv6),
/// payments active-passive on pangyo then gasan (busan by host name). Nothing listens
/// on the endpoints: no request is sent to them.
pub fn topology() -> Topology {
    serde_json::from_value(serde_json::json!({
        "sites": [{"name": "pangyo"}, {"name": "gasan"}, {"name": "busan"}],
        "services": [
            {"name": "messaging", "mode": "active-active", "endpoints": {
                "pangyo": "http://10.0.1.1:8001", "gasan": "http://10.0.2.1:8001",
                "busan": "http://[fd00::3]:8001"}},
            {"name": "payments", "mode": "active-passive", "priorities": ["pangyo", "gasan"],
             "endpoints": {"pangyo": "http://10.0.1.1:8002", "gasan": "http://10.0.2.1:8002",
                "busan": "https://pay.busan.example:443"}}
        ]
    }))
    .unwrap()
}

impl Cluster {
    /// The index of the node that leads the control group with a quorum.
    pub async fn control_leader(&self) -> usize {
        poll("a control leader", || {
            self.nodes.iter().position(|n| {
                n.as_ref()
                    .is_some_and(|n| n.api.control.leads_with_quorum())
            })
        })
        .await
    }

    /// Proposes `command` on the control leader (followers forward only leases and
    /// health) and asserts that it took effect.
    ///
    /// A leader change on a busy machine can cut a proposal off (`OutcomeUnknown`,
    /// `NotLeader`); the command is then proposed again on the next leader, for up to
    /// 10 s. The commands tests send this way (topology, evacuate, freeze) give the same
    /// state when applied twice, so a retry of one that did commit changes nothing.
    pub async fn control(&self, command: ControlCommand) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leader = self.control_leader().await;
            let answer = self.node(leader).api.propose_control(command.clone()).await;
            match answer {
                Ok(ControlResponse::Done { .. }) => return,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("{command:?} did not take effect: {other:?}"),
            }
        }
    }

    /// Applies [`topology`].
    pub async fn apply_topology(&self) {
        self.control(ControlCommand::ApplyTopology {
            topology: topology(),
            actor: ops(),
            at_ms: 0,
        })
        .await;
    }

    /// Evacuates `site` for an hour, the dwell time overridden.
    pub async fn evacuate(&self, site: &str) {
        let leader = self.control_leader().await;
        let now = self.node(leader).api.control.reader.read(|c| c.clock_ms);
        self.control(ControlCommand::Evacuate {
            site: SiteId::from(site),
            actor: ops(),
            reason: "fire".into(),
            expires_at_ms: now + 3_600_000,
            overrides: vec![Rule::Dwell],
            at_ms: 0,
        })
        .await;
    }
}
