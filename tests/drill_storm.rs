//! The reconnect storm end to end: idle push clients through one site's gateway lose it at
//! once; every one comes back through the others and receives the next message, and
//! firebreak's client spreads its reconnects where the naive one arrives in a burst. The
//! checker's ability to fail is proven in `chaos/src/checkers/storm.rs`.

//!
//! It runs three times in a row (`--repeat 3`): `reconnect-storm` once failed one run of
//! two on a routing change before any fault (the route was still settling after the idle
//! clients connected), which only repeated runs show.

use firebreak_tests::DrillRun;

const RUNS: usize = 3;

#[test]
fn idle_clients_all_come_back_and_firebreaks_spread_out_three_runs_of_three() {
    let mut drill = DrillRun::start_args(
        &[
            "tests/playbooks/storm-small.yaml",
            "--repeat",
            &RUNS.to_string(),
        ],
        7441,
        &[],
    );
    let (code, stdout, stderr) = drill.wait_for(firebreak_tests::DRILL_DEADLINE * 3);
    eprintln!("{stdout}");
    assert_eq!(
        code, 0,
        "every run of the storm drill passes\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("storm-small: 3 runs: 3 passed, 0 failed, 0 could not run"),
        "{stdout}"
    );
    for run in 1..=RUNS {
        check_run(&drill, &format!("run-{run}"));
    }
}

/// One run's storm: every client back with the next message, firebreak's spread out and
/// the naive ones in a sharper burst, the report's storm table and chart written.
fn check_run(drill: &DrillRun, dir: &str) {
    let report: serde_json::Value =
        serde_json::from_str(&drill.file(&format!("{dir}/report.json"))).expect("report.json");
    assert_eq!(report["storm"]["through"], "pangyo", "{dir}");
    let storm = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["checker"] == "storm")
        .expect("a storm finding");
    assert_eq!(storm["passed"], true, "{dir}: {storm}");
    let clients = report["storm"]["clients"]
        .as_array()
        .expect("storm figures");
    let kind = |name: &str| {
        clients
            .iter()
            .find(|c| c["kind"] == name)
            .unwrap_or_else(|| panic!("no {name} figures"))
            .clone()
    };
    let (firebreak, naive) = (kind("firebreak"), kind("naive"));
    let share = |c: &serde_json::Value| {
        c["peak_per_100ms"].as_f64().unwrap() / c["clients"].as_f64().unwrap()
    };
    for c in [&firebreak, &naive] {
        assert_eq!(c["clients"], 200, "{dir}");
        assert_eq!(
            c["got_probe"], 200,
            "{dir}: every client got the next message: {c}"
        );
        // Every stream through pangyo when it burned broke and came back (`got_probe`).
        // A client whose first stream through pangyo failed during the ramp had moved to
        // another site before the fire (of 200: 29 firebreak clients once, 44 naive ones
        // another time, here): the storm is most of them, not all.
        let through = c["through_at_fault"].as_u64().unwrap();
        assert!(
            c["disrupted"].as_u64().unwrap() >= through,
            "{dir}: pangyo's loss broke every stream through it: {c}"
        );
        assert!(
            through >= 100,
            "{dir}: most clients were on pangyo when it burned: {c}"
        );
    }
    eprintln!(
        "busiest 100 ms: firebreak {:.2} of its clients, naive {:.2}",
        share(&firebreak),
        share(&naive)
    );
    assert!(
        share(&firebreak) < 0.15,
        "firebreak's clients spread over the 4 s window the servers suggest: {firebreak}"
    );
    assert!(
        share(&naive) > share(&firebreak),
        "the naive clients arrive in a sharper burst: {naive} vs {firebreak}"
    );
    let html = drill.file(&format!("{dir}/report.html"));
    assert!(html.contains("<h2>Reconnect storm</h2>"));
    assert_eq!(
        html.matches("<svg").count(),
        2,
        "messaging's timeline and the storm's"
    );
}
