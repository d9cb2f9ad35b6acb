//! Runtime membership on an in-process cluster (see `common`): a burned site replaced by a
//! new one while it stays dark, the new voter caught up first, the old id tombstoned for
//! good, and the next fire survived.

mod common;

use std::collections::BTreeSet;

use common::{poll, Cluster};
use firebreak_model::NodeId;
use firebreak_node::config::RaftTimings;
use serde_json::{json, Value};

/// Posts a membership request to the control leader's admin listener, with the operator
/// token or without one, as the CLI does: while the node asked answers 503 (leadership
/// moved), the leader of the moment is asked again. The status and JSON answer.
async fn membership(cluster: &Cluster, body: Value, token: Option<&str>) -> (u16, Value) {
    let deadline = std::time::Instant::now() + common::DEADLINE;
    loop {
        let i = cluster.control_leader().await;
        let url = format!("http://{}/v1/membership", cluster.node(i).admin_addr);
        let mut request = reqwest::Client::new().post(url).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let answer = response.json().await.unwrap_or(Value::Null);
        if status != 503 || std::time::Instant::now() > deadline {
            return (status, answer);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A group's voters as its leader sees them (a change commits on the leader first).
async fn voters(cluster: &Cluster, control: bool) -> BTreeSet<NodeId> {
    let metrics = if control {
        let leader = cluster.control_leader().await;
        cluster.node(leader).api.control.metrics()
    } else {
        let leader = cluster.state_leader().await;
        cluster.node(leader).api.state.metrics()
    };
    let voters = metrics.membership_config.membership().voter_ids().collect();
    voters
}

/// The operator token of these tests.
const TOKEN: &str = "s3cret-s3cret-s3cret";

/// Three nodes whose operator `ops` holds [`TOKEN`].
async fn start(raft: RaftTimings) -> Cluster {
    let mut cluster = Cluster::configure(raft, Vec::new());
    let tokens = cluster.path().join("tokens");
    std::fs::write(&tokens, format!("ops {TOKEN}\n")).unwrap();
    for config in &mut cluster.configs {
        config.auth.tokens_file = Some(tokens.clone());
    }
    for i in 0..3 {
        cluster.start_node(i).await;
    }
    cluster
}

/// The control group's learners as its leader sees them.
async fn learners(cluster: &Cluster) -> BTreeSet<NodeId> {
    let leader = cluster.control_leader().await;
    let metrics = cluster.node(leader).api.control.metrics();
    let learners = metrics
        .membership_config
        .membership()
        .learner_ids()
        .collect();
    learners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_of_a_site_joins_as_a_learner_and_leaves_for_good() {
    let mut cluster = start(RaftTimings::default()).await;
    cluster.apply_topology().await;
    let extra = cluster.add_joiner(4, "busan");
    cluster.start_node(extra).await;
    let add = json!({"action": "node_add", "id": 4, "site": "busan",
        "addr": cluster.configs[extra].peer_listen.to_string()});
    let (status, answer) = membership(&cluster, add.clone(), Some(TOKEN)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["catch_up_ms"].is_null(),
        "a learner is not promoted: {answer}"
    );
    assert_eq!(answer["learner"], 4, "{answer}");
    assert_eq!(learners(&cluster).await, [NodeId(4)].into());
    assert_eq!(voters(&cluster, true).await.len(), 3);
    let leader = cluster.state_leader().await;
    cluster.put(leader, "for-the-learner", "v").await;
    poll("the learner applies the state group", || {
        cluster.stale_get(extra, "for-the-learner")
    })
    .await;

    // Busan is one of three voting sites: removing it is refused, and changes nothing.
    let remove_site = json!({"action": "site_remove", "site": "busan", "force": true});
    let (status, answer) = membership(&cluster, remove_site, Some(TOKEN)).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer.to_string().contains("survival-goal"), "{answer}");
    assert_eq!(learners(&cluster).await, [NodeId(4)].into());

    // The learner leaves both groups; its id is never used again.
    let remove = json!({"action": "node_remove", "id": 4});
    let (status, answer) = membership(&cluster, remove, Some(TOKEN)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(learners(&cluster).await.is_empty());
    let leader = cluster.state_leader().await;
    let state = cluster.node(leader).api.state.metrics();
    assert!(state
        .membership_config
        .membership()
        .get_node(&NodeId(4))
        .is_none());
    let (status, answer) = membership(&cluster, add, Some(TOKEN)).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer.to_string().contains("id-reused"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burned_site_is_replaced_and_its_id_never_comes_back() {
    let raft = RaftTimings {
        snapshot_logs_since_last: 50,
        max_in_snapshot_log_to_keep: 0,
        ..RaftTimings::default()
    };
    let mut cluster = start(raft).await;
    cluster.apply_topology().await;
    let leader = cluster.state_leader().await;
    for i in 0..200 {
        cluster.put(leader, &format!("k{i}"), "v").await;
    }
    let anyang = cluster.add_joiner(4, "anyang");
    let replace = json!({"action": "site_replace", "dead": "pangyo", "with": "anyang",
        "id": 4, "addr": cluster.configs[anyang].peer_listen.to_string()});

    // No credential, no change.
    let (status, answer) = membership(&cluster, replace.clone(), None).await;
    assert_eq!(status, 401, "{answer}");
    // Pangyo still renews its lease: replacing it needs --force. On a loaded machine a
    // renewal can lag behind site_down_after (2 s), and the replace would then go ahead
    // and wait 300 s for anyang, which is not started yet: wait for a fresh renewal first.
    let control = cluster.control_leader().await;
    poll(
        "a renewal of pangyo's lease within a lease interval",
        || {
            // The nodes' clocks run in this process, from the wall clock at their start.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            cluster.node(control).api.control.reader.read(|c| {
                let renewed = c.failover.leases.get(&"pangyo".into())?.renewed_at_ms;
                (now.saturating_sub(renewed) <= 500).then_some(())
            })
        },
    )
    .await;
    let (status, answer) = membership(&cluster, replace.clone(), Some(TOKEN)).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer.to_string().contains("healthy-voter"), "{answer}");
    assert_eq!(voters(&cluster, true).await.len(), 3, "nothing changed");

    // Pangyo burns and stays dark. Its disk is lost too: under its id it may not come
    // back, as the leader saw it hold log entries and it has forgotten its votes.
    poll("pangyo's node seen holding log entries", || {
        let api = &cluster.node(1).api;
        let seen = api
            .control
            .reader
            .read(|c| c.membership.seen.contains(&NodeId(1)));
        seen.then_some(())
    })
    .await;
    cluster.stop_node(0).await;
    std::fs::remove_dir_all(&cluster.configs[0].data_dir).unwrap();
    let err = firebreak_node::start(cluster.configs[0].clone())
        .await
        .err()
        .expect("a known id on an empty disk is refused");
    assert!(err.to_string().contains("held log entries before"), "{err}");
    // Anyang starts on an empty disk and is brought in.
    poll("pangyo's lease to lapse", || {
        let api = &cluster.node(1).api;
        let down = api
            .control
            .reader
            .read(|c| !c.failover.site_up(&"pangyo".into(), c.clock_ms));
        down.then_some(())
    })
    .await;
    cluster.start_node(anyang).await;
    // The poll above reads a follower's replica: `site_up` also waits for the rise rounds,
    // so it may turn false while the leader still counts pangyo's last renewal as recent
    // (the healthy-voter rule). An operator repeats the command; so does the test, within
    // site_down_after and a margin.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (status, answer) = loop {
        let (status, answer) = membership(&cluster, replace.clone(), Some(TOKEN)).await;
        let lapsing = status == 409 && answer.to_string().contains("healthy-voter");
        if !lapsing || std::time::Instant::now() > deadline {
            break (status, answer);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(status, 200, "{answer}");
    assert!(answer["catch_up_ms"].as_u64().is_some(), "{answer}");
    let expected: BTreeSet<NodeId> = [2, 3, 4].map(NodeId).into();
    assert_eq!(voters(&cluster, true).await, expected);
    assert_eq!(voters(&cluster, false).await, expected);
    poll("anyang holds every key", || {
        (0..200)
            .all(|i| cluster.stale_get(anyang, &format!("k{i}")).is_some())
            .then_some(())
    })
    .await;

    // The old id is never used again, by a request or by a node on an empty disk.
    let reuse = json!({"action": "node_add", "id": 1, "site": "anyang", "addr": "127.0.0.1:1"});
    let (status, answer) = membership(&cluster, reuse, Some(TOKEN)).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer.to_string().contains("id-reused"), "{answer}");
    let _ = std::fs::remove_dir_all(&cluster.configs[0].data_dir);
    let err = firebreak_node::start(cluster.configs[0].clone())
        .await
        .err()
        .expect("a removed id on an empty disk is refused");
    let message = err.to_string();
    assert!(
        message.contains("was removed from the cluster"),
        "{message}"
    );
    assert!(
        message.contains("firebreak node add --id <new id>"),
        "{message}"
    );

    // The next fire: gasan burns too, and anyang and busan still commit.
    cluster.stop_node(1).await;
    let leader = cluster.state_leader().await;
    cluster.put(leader, "after-second-fire", "v").await;

    // The tombstone survives in anyang's snapshot and its restart.
    poll("anyang applied the tombstone", || {
        let api = &cluster.node(anyang).api;
        api.control
            .reader
            .read(|c| c.membership.tombstones.contains(&NodeId(1)))
            .then_some(())
    })
    .await;
    let api = cluster.node(anyang).api.clone();
    let applied = api.control.info().applied_index;
    api.control.raft.trigger().snapshot().await.unwrap();
    poll("anyang's snapshot covers the tombstone", || {
        (api.control.info().snapshot_index >= applied).then_some(())
    })
    .await;
    drop(api);
    cluster.stop_node(anyang).await;
    cluster.start_node(anyang).await;
    poll("anyang restored its control state", || {
        let api = &cluster.node(anyang).api;
        let snapshot = api.control.info().snapshot_index;
        assert!(snapshot >= applied, "restarted from its snapshot");
        let tombstoned = api
            .control
            .reader
            .read(|c| c.membership.tombstones.contains(&NodeId(1)));
        tombstoned.then_some(())
    })
    .await;
}
