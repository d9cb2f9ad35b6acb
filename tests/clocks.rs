//! Failover does not trust wall clocks. A node's clock stepped an hour either way (an NTP
//! step, a bad RTC after a reboot) changes no routing, and a new control leader whose clock
//! is an hour behind the old one's still fails over a lost site in the usual time. The
//! clocks are stepped through the debug builds' `FIREBREAK_DEBUG_CLOCK_STEP_FILE`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use firebreak_tests::{node_topology, serving, Api, TestCluster, DEADLINE};

const HOUR_MS: i64 = 3_600_000;

/// Waits until both services of `node_topology` are served by exactly `sites`, as the
/// node at `addr` sees it; returns how long it took.
async fn wait_served_by(cluster: &TestCluster, api: &Api, addr: &str, sites: &[&str]) -> Duration {
    let want: BTreeSet<String> = sites.iter().map(|s| s.to_string()).collect();
    let started = Instant::now();
    loop {
        if let Some(view) = api.routing(addr).await {
            if serving(&view, "api") == want && serving(&view, "ledger").is_subset(&want) {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < DEADLINE,
            "timed out waiting for {want:?} to serve, as {addr} sees it\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A cluster with `node_topology` applied and all three sites serving; returns the index
/// of the control leader.
async fn serving_cluster(cluster: &TestCluster, api: &Api) -> usize {
    let addrs = cluster.admin_addrs();
    api.wait_leader(&addrs, "control").await;
    firebreak_tests::apply_topology(cluster, "topology.yaml", &node_topology(cluster));
    wait_served_by(cluster, api, &addrs[0], &["pangyo", "gasan", "busan"]).await;
    api.wait_leader(&addrs, "control").await as usize - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_step_on_the_leader_changes_no_routing_and_failover_still_works() {
    let mut cluster = TestCluster::start("");
    let api = Api::new();
    let leader = serving_cluster(&cluster, &api).await;
    let addr = cluster.admin_addrs()[leader].clone();
    let before = api.routing(&addr).await.expect("routing answers");
    for step in [HOUR_MS, -HOUR_MS] {
        cluster.step_clock(leader, step);
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = api.routing(&addr).await.expect("routing answers");
            assert_eq!(
                now["revision"],
                before["revision"],
                "the leader's clock stepped {step} ms and routing changed:\n{now}\n{}",
                cluster.logs()
            );
        }
    }
    // The clock still reads an hour behind: a site lost now leaves as fast as ever.
    let victim = (leader + 1) % 3;
    let survivors: Vec<&str> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| cluster.nodes[i].site)
        .collect();
    cluster.kill(victim);
    let took = wait_served_by(&cluster, &api, &addr, &survivors).await;
    eprintln!("with the leader's clock an hour behind, a lost site left after {took:?}");
    assert!(took <= Duration::from_secs(4), "failover took {took:?}");
}

/// The followers restart with clocks an hour behind the leader's, so whichever takes over
/// when the leader's site burns sees every lease stamped an hour in its future.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_an_hour_behind_still_fails_over_the_old_leaders_site() {
    let mut cluster = TestCluster::start("");
    let api = Api::new();
    let leader = serving_cluster(&cluster, &api).await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &followers {
        cluster.kill(i);
        cluster.step_clock(i, -HOUR_MS);
        cluster.spawn(i);
    }
    let addrs = cluster.admin_addrs();
    for &i in &followers {
        let started = Instant::now();
        while api.leader(&addrs[i], "control").await.is_none() {
            assert!(
                started.elapsed() < DEADLINE,
                "node {i} never saw a leader again"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    wait_served_by(
        &cluster,
        &api,
        &addrs[followers[0]],
        &["pangyo", "gasan", "busan"],
    )
    .await;
    // Let the restarted nodes renew for a while, so their sites are up by every measure.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let survivors: Vec<&str> = followers.iter().map(|&i| cluster.nodes[i].site).collect();
    let killed = Instant::now();
    cluster.kill(leader);
    wait_served_by(&cluster, &api, &addrs[followers[0]], &survivors).await;
    let took = killed.elapsed();
    eprintln!("a new leader an hour behind failed the old leader's site over after {took:?}");
    assert!(
        took <= Duration::from_secs(6),
        "failover took {took:?}\n{}",
        cluster.logs()
    );
}
