//! The routing long-poll's fan-out (`firebreak bench watchers`) at a small size: every
//! watcher sees the evacuation, the site is restored after it, and watchers beyond what
//! the nodes serve are refused with a message that names the limit.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use firebreak_tests::{cli, node_topology, serving, Api, TestCluster, DEADLINE, TEST_TOKEN};
use serde_json::Value;

/// Waits until `api` (of `node_topology`) is served by all three sites.
async fn wait_all_serving(cluster: &TestCluster, api: &Api) {
    let all: BTreeSet<String> = ["pangyo", "gasan", "busan"].map(String::from).into();
    let started = Instant::now();
    loop {
        if let Some(view) = api.routing(&cluster.admin_addrs()[0]).await {
            if serving(&view, "api") == all {
                return;
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "api never served by all three sites"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn bench(cluster: &TestCluster, watchers: u64) -> (i32, String, String) {
    let nodes = cluster.addrs().join(",");
    let admin = cluster.admin_addrs().join(",");
    let watchers = watchers.to_string();
    tokio::task::spawn_blocking(move || {
        let args = [
            "bench",
            "watchers",
            "--service",
            "api",
            "--json",
            "--watchers",
            &watchers,
            "--nodes",
            &nodes,
            "--admin-nodes",
            &admin,
        ];
        cli(&args, &[], Some(TEST_TOKEN))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watcher_sees_a_routing_change_and_too_many_are_refused_by_name() {
    let cluster = TestCluster::start("api:\n  max_watchers: 150\n");
    let api = Api::new();
    api.wait_leader(&cluster.admin_addrs(), "control").await;
    firebreak_tests::apply_topology(&cluster, "topology.yaml", &node_topology(&cluster));
    wait_all_serving(&cluster, &api).await;

    let (code, out, err) = bench(&cluster, 300).await;
    assert_eq!(code, 0, "{out}{err}");
    let result: Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(result["waiting"], 300, "{result}");
    assert_eq!(
        result["saw_change"], 300,
        "every watcher saw the new epoch: {result}"
    );
    assert_eq!(result["failed"], serde_json::json!({}), "{result}");
    let site = result["site"].as_str().unwrap_or_default();
    assert!(["pangyo", "gasan", "busan"].contains(&site), "{result}");
    // The bench restores what it evacuated.
    wait_all_serving(&cluster, &api).await;

    // 600 watchers over three nodes of 150 places each: refused, and the message says why.
    let (code, out, err) = bench(&cluster, 600).await;
    assert_eq!(code, 4, "{out}{err}");
    assert!(err.contains("api.max_watchers"), "{err}");
    wait_all_serving(&cluster, &api).await;
}
