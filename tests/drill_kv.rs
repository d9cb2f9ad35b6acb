//! The kv API is linearizable under a node's death, and the linearizability checker can
//! fire: the same drill against nodes that answer linearizable reads from their own
//! replica (a debug-only sabotage) is judged FAILED, naming the stale read.

use firebreak_tests::DrillRun;

const PLAYBOOK: &str = "tests/playbooks/kv-small.yaml";

#[test]
fn the_kv_api_is_linearizable_while_a_node_dies() {
    let mut drill = DrillRun::start(PLAYBOOK, 7491);
    let (code, stdout, stderr) = drill.wait();
    eprintln!("{stdout}");
    assert_eq!(code, 0, "kv-small passes\n{stdout}\n{stderr}");
    let kv = drill.finding("kv");
    assert_eq!(kv["passed"], true, "{kv}");
    assert_eq!(kv["counts"]["keys"], 3, "{kv}");
    assert!(kv["counts"]["operations"].as_u64().unwrap() > 300, "{kv}");
}

#[test]
fn stale_reads_fail_the_drill() {
    let mut drill =
        DrillRun::start_with_env(PLAYBOOK, 7501, &[("FIREBREAK_SABOTAGE_STALE_READS", "1")]);
    let (code, stdout, stderr) = drill.wait();
    eprintln!("{stdout}");
    assert_eq!(code, 9, "violated expectations exit 9\n{stdout}\n{stderr}");
    let kv = drill.finding("kv");
    assert_eq!(kv["passed"], false, "{kv}");
    assert!(
        kv["counts"]["non_linearizable_keys"].as_u64().unwrap() > 0,
        "{kv}"
    );
    assert!(kv.to_string().contains("the read that saw"), "{kv}");
}
