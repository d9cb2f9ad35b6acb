//! The checkers can fail a drill: the same fire against a deliberately broken setup (the
//! state group's only voter in pangyo, which burns with its disks and comes back empty)
//! is judged FAILED, with the losses named: messages, transfers, the total, sessions.

use firebreak_tests::DrillRun;

#[test]
fn a_setup_that_loses_writes_fails_the_drill() {
    let mut drill = DrillRun::start("tests/playbooks/sabotage-one-voter.yaml", 7411);
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
