//! Fencing at the instances, end to end: payments moves off a live primary while busan's
//! gateway forwards by the old route for 4 s (a stale view, by a debug-only sabotage).
//! With fencing the old primary commits nothing after the new one did, and the drill
//! passes; with fencing off as well, the fenced-writes checker fails it, naming the writes.

use firebreak_tests::DrillRun;

const PLAYBOOK: &str = "tests/playbooks/sabotage-fencing.yaml";
const STALE_GATEWAY: (&str, &str) = ("FIREBREAK_SABOTAGE_STALE_ROUTE", "busan:4000");

#[test]
fn a_stale_gateway_cannot_make_the_old_primary_commit() {
    let mut drill = DrillRun::start_with_env(PLAYBOOK, 7521, &[STALE_GATEWAY]);
    let (code, stdout, stderr) = drill.wait();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let fenced = drill.finding("fenced-writes");
    assert_eq!(fenced["passed"], true, "{fenced}");
    assert!(
        fenced["counts"]["writes_with_epoch"].as_u64().unwrap() > 100,
        "{fenced}"
    );
}

#[test]
fn without_fencing_the_checker_catches_the_old_primary() {
    let off = ("FIREBREAK_SABOTAGE_FENCING", "off");
    let mut drill = DrillRun::start_with_env(PLAYBOOK, 7531, &[STALE_GATEWAY, off]);
    let (code, stdout, stderr) = drill.wait();
    assert_eq!(code, 9, "violated expectations exit 9\n{stdout}\n{stderr}");
    let fenced = drill.finding("fenced-writes");
    assert_eq!(fenced["passed"], false, "{fenced}");
    assert!(
        fenced["counts"]["stale_writes"].as_u64().unwrap() > 0,
        "{fenced}"
    );
    assert!(
        fenced
            .to_string()
            .contains("a primary that had lost its role committed"),
        "{fenced}"
    );
}
