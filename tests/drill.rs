//! The README's main job, end to end: `firebreak drill playbooks/pangyo-fire.yaml` brings up
//! three sites as real processes, burns pangyo under messaging, payments and login traffic,
//! restores it, and passes: every service failed over within its limit, nothing
//! acknowledged lost or duplicated, and the report files are all there.
//!
//! It runs three times in a row (`--repeat 3`, each run with its own seed): a verdict
//! that passes once and fails the next time is not one an engineer can act on.

use firebreak_tests::DrillRun;

const RUNS: usize = 3;

#[test]
fn pangyo_fire_passes_three_runs_of_three() {
    let mut drill = DrillRun::start_args(
        &["playbooks/pangyo-fire.yaml", "--repeat", &RUNS.to_string()],
        7401,
        &[],
    );
    let (code, stdout, stderr) = drill.wait_for(firebreak_tests::DRILL_DEADLINE * 3);
    eprintln!("{stdout}");
    assert_eq!(code, 0, "every run must pass\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("pangyo-fire: 3 runs: 3 passed, 0 failed, 0 could not run"),
        "{stdout}"
    );
    for run in 1..=RUNS {
        let seed = 20221015 + run as u64 - 1;
        assert!(
            stdout.contains(&format!("run {run}/{RUNS} (seed {seed}): PASSED")),
            "{stdout}"
        );
        check_run(&drill, run, seed);
    }
}

/// One run's report: failover within the playbook's limits, nothing lost, the fire really
/// happened and was healed, and the history and HTML report written.
fn check_run(drill: &DrillRun, run: usize, seed: u64) {
    let dir = format!("run-{run}");
    let report: serde_json::Value =
        serde_json::from_str(&drill.file(&format!("{dir}/report.json"))).expect("report.json");
    assert_eq!(report["passed"], true, "{dir}");
    assert_eq!(report["seed"], seed, "{dir}");
    assert_eq!(
        report["repeat"],
        format!("firebreak drill playbooks/pangyo-fire.yaml --seed {seed}")
    );
    for service in report["services"].as_array().unwrap() {
        let name = &service["service"];
        assert!(
            service["operations"].as_u64().unwrap() > 100,
            "{dir} {name}: too few operations"
        );
        let failover = service["failover_secs"].as_f64().expect("recovered");
        assert!(failover <= 6.0, "{dir} {name}: failover {failover} s");
        assert_eq!(service["lost"], 0, "{dir} {name}");
        assert_eq!(service["duplicated"], 0, "{dir} {name}");
    }
    let faults: Vec<&str> = report["faults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fault"].as_str().unwrap())
        .collect();
    assert!(
        faults.contains(&"site-loss") && faults.contains(&"site-restore"),
        "{dir}: {faults:?}"
    );
    let history = drill.file(&format!("{dir}/history.jsonl"));
    assert!(history.lines().count() > 1000, "{dir}: history too short");
    assert!(
        history.contains(r#""type":"deliver""#),
        "{dir}: push deliveries recorded"
    );
    let html = drill.file(&format!("{dir}/report.html"));
    assert_eq!(html.matches("<svg").count(), 3, "one timeline per service");
    assert!(
        !html.contains("<script"),
        "the HTML report is self-contained"
    );
}
