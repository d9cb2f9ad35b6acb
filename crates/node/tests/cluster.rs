//! In-process clusters: three real nodes in one test process (see `common`): Raft, the
//! key API's answers, and catching up.

mod common;

use std::time::{Duration, Instant};

use common::{poll, Cluster, DEADLINE};
use firebreak_model::kv::KvCommand;
use firebreak_node::config::RaftTimings;

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
        .state_writer
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_without_quorum_refuses_writes_instead_of_hanging() {
    let mut cluster = Cluster::start(RaftTimings::default()).await;
    let leader = cluster.state_leader().await;
    for i in (0..3).filter(|i| *i != leader) {
        cluster.stop_node(i).await;
    }
    // Once its last quorum contact is older than an election timeout, the stranded
    // leader answers NoQuorum (nothing written) rather than OutcomeUnknown (a hung write).
    let mut last = None;
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        let err = cluster
            .node(leader)
            .api
            .state_writer
            .write(KvCommand::Put {
                key: "k".into(),
                value: "v".into(),
            })
            .await
            .unwrap_err();
        if matches!(err, firebreak_node::group::GroupError::NoQuorum { .. }) {
            return;
        }
        last = Some(err);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stranded leader never refused with NoQuorum; last error {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_bad_input_with_json_errors_and_watch_resumes_from_a_revision() {
    let cluster = Cluster::start(RaftTimings::default()).await;
    let leader = cluster.state_leader().await;
    let http = reqwest::Client::new();
    let follower_addr = cluster.node((leader + 1) % 3).addr;
    let url = |path: &str| format!("http://{follower_addr}{path}");

    let bad_json = http
        .put(url("/v1/kv"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 400);
    let body: serde_json::Value = bad_json.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "invalid_input");

    let huge = serde_json::json!({ "key": "k", "value": "v".repeat(300 * 1024) });
    let too_large = http.put(url("/v1/kv")).json(&huge).send().await.unwrap();
    assert_eq!(too_large.status(), 413);
    let body: serde_json::Value = too_large.json().await.unwrap();
    assert_eq!(body["error"]["kind"], "invalid_input");

    let empty_key = http
        .put(url("/v1/kv"))
        .json(&serde_json::json!({ "key": "", "value": "v" }))
        .send()
        .await
        .unwrap();
    assert_eq!(empty_key.status(), 400);
    assert!(empty_key.text().await.unwrap().contains("key"));
    // None of that changed anything.
    assert_eq!(
        cluster
            .node(leader)
            .api
            .state
            .reader
            .read(|kv| kv.revision()),
        0
    );

    // Writes through the follower are forwarded; a watch on the follower from revision 1
    // sees them in order, and asking from next_revision sees only what came later.
    for (key, value) in [("w/a", "1"), ("w/b", "2"), ("other", "x")] {
        let response = http
            .put(url("/v1/kv"))
            .json(&serde_json::json!({ "key": key, "value": value }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    let watch: serde_json::Value = http
        .get(url("/v1/watch?prefix=w/&from_revision=1&timeout_ms=5000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys: Vec<&str> = watch["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["w/a", "w/b"]);
    let next = watch["next_revision"].as_u64().unwrap();
    let pending = tokio::spawn({
        let http = http.clone();
        let url = url(&format!(
            "/v1/watch?prefix=w/&from_revision={next}&timeout_ms=10000"
        ));
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    http.put(url("/v1/kv"))
        .json(&serde_json::json!({ "key": "w/c", "value": "3" }))
        .send()
        .await
        .unwrap();
    let later = pending.await.unwrap();
    assert_eq!(later["events"][0]["key"], "w/c");
    assert_eq!(later["events"].as_array().unwrap().len(), 1);
}
