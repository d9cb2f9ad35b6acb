//! Power-loss drills (root, /dev/fuse): each site's data dir on the drop-unsynced
//! filesystem, so a power loss throws away whatever was not fsynced.
//!
//! - `power-loss` (the state leader's site) and `blackout` (all three sites at once) pass:
//!   nothing acknowledged is lost, the total holds, sessions validate, and the report says
//!   what each power loss discarded.
//! - The sabotage switch (`FIREBREAK_SABOTAGE_SKIP_FSYNC`, debug builds only) makes the
//!   store skip every fsync: `blackout` then loses acknowledged writes and every data
//!   checker fails, and `power-loss` fails too (the site comes back with nothing; the
//!   other two sites still hold every acknowledged write, so a single site's loss cannot
//!   lose one, and there the drill fails on availability and routing instead).
//!
//! Without root or /dev/fuse they are skipped with a message, except under CI=true, where
//! they fail.

use firebreak_tests::{fuse_or_skip, DrillRun};
use serde_json::Value;

/// One drill at a time: each drill's steady state assumes the two cores are its own.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(playbook: &str, port: u16, env: &[(&str, &str)]) -> (i32, String, DrillRun) {
    let mut drill = DrillRun::start_with_env(playbook, port, env);
    let (code, stdout, stderr) = drill.wait();
    eprintln!("{stdout}\n{stderr}");
    (code, stdout, drill)
}

/// Bytes each power loss of the report discarded, in order.
fn discarded(drill: &DrillRun) -> Vec<u64> {
    drill.report()["power_losses"]
        .as_array()
        .expect("power_losses in report.json")
        .iter()
        .map(|row: &Value| row["bytes"].as_u64().expect("bytes"))
        .collect()
}

#[test]
fn the_leaders_site_loses_power_and_nothing_acknowledged_is_lost() {
    if !fuse_or_skip() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (code, stdout, drill) = run("playbooks/power-loss.yaml", 7511, &[]);
    assert_eq!(code, 0, "power-loss passes\n{stdout}");
    assert_eq!(discarded(&drill).len(), 1, "one power loss, reported");
    assert!(stdout.contains("power loss at pangyo"), "{stdout}");
    for checker in ["messaging", "payments", "login"] {
        assert_eq!(drill.finding(checker)["passed"], true, "{checker}");
    }
}

#[test]
fn a_blackout_of_every_site_loses_nothing_acknowledged() {
    if !fuse_or_skip() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (code, stdout, drill) = run("playbooks/blackout.yaml", 7521, &[]);
    assert_eq!(code, 0, "blackout passes\n{stdout}");
    assert_eq!(discarded(&drill).len(), 3, "three sites lost power");
    let acknowledged = drill.finding("payments")["counts"]["acknowledged"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        acknowledged > 100,
        "the drill did real work: {acknowledged} transfers"
    );
}

#[test]
fn without_fsync_a_blackout_loses_acknowledged_writes_and_the_drill_says_so() {
    if !fuse_or_skip() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sabotage = [("FIREBREAK_SABOTAGE_SKIP_FSYNC", "1")];
    let (code, stdout, drill) = run("playbooks/blackout.yaml", 7531, &sabotage);
    assert_eq!(code, 9, "the sabotaged store fails the drill\n{stdout}");
    assert!(
        discarded(&drill).iter().sum::<u64>() > 1_000_000,
        "with no fsync, megabytes are lost: {:?}",
        discarded(&drill)
    );
    // Every node comes back with an empty (or unopenable) store: acknowledged messages,
    // transfers and sessions are gone, and the checkers name them lost or unverifiable.
    for checker in ["messaging", "payments", "login"] {
        assert_eq!(
            drill.finding(checker)["passed"],
            false,
            "{checker} must catch the loss: {}",
            drill.finding(checker)
        );
    }
}

#[test]
fn without_fsync_the_power_loss_drill_fails() {
    if !fuse_or_skip() {
        return;
    }
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sabotage = [("FIREBREAK_SABOTAGE_SKIP_FSYNC", "1")];
    let (code, stdout, drill) = run("playbooks/power-loss.yaml", 7541, &sabotage);
    assert_eq!(code, 9, "the sabotaged store fails the drill\n{stdout}");
    assert!(
        discarded(&drill)[0] > 1_000_000,
        "with no fsync, the site loses megabytes: {:?}",
        discarded(&drill)
    );
}
