//! The checkers can fail a drill: the same fire against a deliberately broken setup (the
//! state group's only voter in pangyo, which burns with its disks and comes back empty)
//! is judged FAILED, with the losses named: messages, transfers, the total, sessions.
//! A node refuses to come back empty under an id the cluster saw hold log entries, so the
//! drill turns that check off (a debug-only sabotage) to let the loss happen; without it,
//! pangyo's node refuses to start, naming the commands to join as a new node.

use firebreak_tests::DrillRun;

#[test]
fn a_setup_that_loses_writes_fails_the_drill() {
    let mut drill = DrillRun::start_with_env(
        "tests/playbooks/sabotage-one-voter.yaml",
        7411,
        &[("FIREBREAK_SABOTAGE_ID_CHECK_OFF", "1")],
    );
    let (code, stdout, stderr) = drill.wait();
    eprintln!("{stdout}");
    assert_eq!(code, 9, "violated expectations exit 9\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("drill sabotage-one-voter: FAILED"),
        "{stdout}"
    );
    let finding = |name: &str| drill.finding(name);
    for checker in ["messaging", "payments", "login"] {
        assert_eq!(
            finding(checker)["passed"],
            false,
            "{checker} must catch the loss"
        );
    }
    assert!(finding("messaging")["counts"]["lost"].as_u64().unwrap() > 0);
    assert!(finding("payments")["counts"]["lost"].as_u64().unwrap() > 0);
    let payments = finding("payments").to_string();
    assert!(
        payments.contains("created or destroyed"),
        "the drifted total is named: {payments}"
    );
    assert!(finding("login")["counts"]["invalid"].as_u64().unwrap() > 0);
}

/// Push streams that repeat or swap messages (the server's fault, which the client hides
/// by dropping what it has seen) fail the drill: the checker judges the raw record.
#[test]
fn a_server_that_pushes_twice_fails_the_drill() {
    let messaging = sabotaged_push("twice", 7461);
    assert!(
        messaging["counts"]["duplicated"].as_u64().unwrap() > 0,
        "{messaging}"
    );
}

#[test]
fn a_server_that_pushes_out_of_order_fails_the_drill() {
    let messaging = sabotaged_push("reorder", 7471);
    assert!(
        messaging["counts"]["reordered"].as_u64().unwrap() > 0,
        "{messaging}"
    );
}

/// Runs sabotage-push with the push sabotage `how`; returns the messaging finding.
fn sabotaged_push(how: &str, port: u16) -> serde_json::Value {
    let mut drill = DrillRun::start_with_env(
        "tests/playbooks/sabotage-push.yaml",
        port,
        &[("FIREBREAK_SABOTAGE_PUSH", how)],
    );
    let (code, stdout, stderr) = drill.wait();
    assert_eq!(code, 9, "violated expectations exit 9\n{stdout}\n{stderr}");
    let messaging = drill.finding("messaging");
    assert_eq!(messaging["passed"], false, "{messaging}");
    messaging
}
