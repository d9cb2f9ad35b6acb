//! Membership in drills: the fire that lasts for days (playbooks/pangyo-forever.yaml:
//! pangyo burns and never comes back, an operator replaces it with a new site on an empty
//! disk, gasan burns too, and the cluster survives the second fire), five sites of which
//! two burn at once (playbooks/five-sites.yaml), and two nodes per site, the control
//! leader's dying (playbooks/node-loss.yaml; with one node per site the same drill fails:
//! its site leaves routing). Without the replacement the second
//! fire takes both Raft groups' majority, which the quorum checker catches (its unit tests
//! in chaos/src/checkers/quorum.rs; the drill without the step: docs/membership.md).

use std::sync::Mutex;

use firebreak_tests::DrillRun;

/// One drill at a time: both measure failover on the same two cores.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn a_replaced_site_lets_the_cluster_survive_the_next_fire() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut drill = DrillRun::start("playbooks/pangyo-forever.yaml", 7561);
    let (code, stdout, stderr) = drill.wait();
    eprintln!("{stdout}");
    assert_eq!(code, 0, "the drill must pass\n{stdout}\n{stderr}");
    let quorum = drill.finding("quorum");
    assert_eq!(quorum["passed"], true, "{quorum}");
    let report = drill.report();
    for service in report["services"].as_array().unwrap() {
        assert_eq!(service["lost"], 0, "{service}");
        assert!(service["failover_secs"].as_f64().is_some(), "{service}");
    }
    // The membership over time ends with pangyo's node 1 out and anyang's node 4 in.
    let rows = report["membership"].as_array().unwrap();
    for group in ["control", "state"] {
        let last = rows.iter().rev().find(|r| r["group"] == group).unwrap();
        assert_eq!(
            last["voters"],
            serde_json::json!([2, 3, 4]),
            "{group}: {last}"
        );
    }
}

#[test]
fn five_sites_survive_two_burning_at_once() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut drill = DrillRun::start("playbooks/five-sites.yaml", 7571);
    let (code, stdout, stderr) = drill.wait();
    eprintln!("{stdout}");
    assert_eq!(code, 0, "the drill must pass\n{stdout}\n{stderr}");
    assert_eq!(drill.finding("quorum")["passed"], true);
    for service in drill.report()["services"].as_array().unwrap() {
        assert_eq!(service["lost"], 0, "{service}");
        let failover = service["failover_secs"].as_f64().expect("recovered");
        assert!(failover <= 6.0, "{service}");
    }
}

#[test]
fn a_sites_second_node_keeps_it_routed_when_the_leader_node_dies() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut drill = DrillRun::start("playbooks/node-loss.yaml", 7581);
    let (code, stdout, stderr) = drill.wait();
    eprintln!("{stdout}");
    assert_eq!(code, 0, "the drill must pass\n{stdout}\n{stderr}");
    let led = "/node (it led the control group";
    assert!(
        stdout.contains(led) || stderr.contains(led),
        "{stdout}\n{stderr}"
    );
    assert_eq!(
        drill.finding("flapping")["passed"],
        true,
        "no routing change"
    );
    assert_eq!(drill.finding("serving-at-end")["passed"], true);
    let rows = drill.report()["membership"].clone();
    assert_eq!(rows[0]["learners"], serde_json::json!([4, 5, 6]), "{rows}");
}
