//! The fire at load, at CI size: its own test binary, so that no other drill shares the
//! two cores while it measures a 2 s failover (test binaries run one after another).

use firebreak_tests::DrillRun;

/// The same fire at load (CI size: 100 operations/s on a debug build; the full size,
/// 55% of the measured capacity, is playbooks/pangyo-fire-load.yaml): every service
/// answers again within 2 s, and nothing acknowledged is lost.
#[test]
fn pangyo_fire_at_load_fails_over_within_two_seconds() {
    let mut drill = DrillRun::start("tests/playbooks/pangyo-fire-load-small.yaml", 7451);
    let (code, stdout, stderr) = drill.wait();
    eprintln!("{stdout}");
    assert_eq!(code, 0, "the drill must pass\n{stdout}\n{stderr}");
    let report = drill.report();
    for service in report["services"].as_array().unwrap() {
        let name = &service["service"];
        assert!(
            service["operations"].as_u64().unwrap() > 500,
            "{name}: too few operations for a drill at load"
        );
        let failover = service["failover_secs"].as_f64().expect("recovered");
        assert!(failover <= 2.0, "{name}: failover {failover} s");
        assert_eq!(service["lost"], 0, "{name}");
    }
}
