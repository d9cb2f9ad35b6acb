//! The reconnect storm end to end: idle push clients through one site's gateway lose it at
//! once; every one comes back through the others and receives the next message, and
//! firebreak's client spreads its reconnects where the naive one arrives in a burst. The
//! checker's ability to fail is proven in `chaos/src/checkers/storm.rs`.

use firebreak_tests::DrillRun;

#[test]
fn idle_clients_all_come_back_and_firebreaks_spread_out() {
    let mut drill = DrillRun::start("tests/playbooks/storm-small.yaml", 7441);
    let (code, stdout, stderr) = drill.wait();
    eprintln!("{stdout}");
    assert_eq!(code, 0, "the storm drill passes\n{stdout}\n{stderr}");
    assert!(stdout.contains("reconnect storm: 400 idle push clients through pangyo"));
    assert_eq!(drill.finding("storm")["passed"], true);
    let report = drill.report();
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
        assert_eq!(c["clients"], 200);
        assert_eq!(
            c["got_probe"], 200,
            "every client got the next message: {c}"
        );
        assert!(
            c["disrupted"].as_u64().unwrap() >= 180,
            "pangyo's loss broke (nearly) every stream: {c}"
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
    let html = drill.file("report.html");
    assert!(html.contains("<h2>Reconnect storm</h2>"));
    assert_eq!(
        html.matches("<svg").count(),
        2,
        "messaging's timeline and the storm's"
    );
}
