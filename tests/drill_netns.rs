//! The netns drills CI runs (root, Linux): `site-isolation` (a site cut off while its
//! processes run: the majority fails it over, nothing acknowledged is lost, one leader per
//! term, the site serves again after healing) and `flapping-network` (no failover storm:
//! the dwell rule holds, nothing lost); `wan-latency` and `wan-pangyo-fire` (real distances,
//! the delay in user space where the kernel has no netem); and cleanup: an interrupted netns drill leaves no
//! namespace, and `firebreak drill heal` removes what a SIGKILLed one left.
//!
//! Without root they are skipped with a message, except under CI=true, where they fail.

use std::time::{Duration, Instant};

use firebreak_tests::{alive, DrillRun};

/// One drill at a time: each drill's steady state assumes the two cores are its own.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var("CI").is_err(),
            "CI runs as root; the netns drills need it"
        );
        eprintln!("skipped: the netns drills need root");
    }
    root
}

fn namespaces() -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into()
}

/// The run id the drill printed (`network namespaces fb-<run>-*`).
fn run_id(drill: &DrillRun) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let err = std::fs::read_to_string(drill.out.path().join("stderr")).unwrap_or_default();
        if let Some(rest) = err.split("network namespaces fb-").nth(1) {
            return rest.split('-').next().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the drill never printed its run id: {err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn site_isolation_fails_over_without_split_brain() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let mut drill = DrillRun::start("playbooks/site-isolation.yaml", 7301);
    let run = run_id(&drill);
    let (code, stdout, stderr) = drill.wait();
    eprintln!("{stdout}");
    assert_eq!(code, 0, "site-isolation must pass\n{stdout}\n{stderr}");
    let report = drill.report();
    for service in report["services"].as_array().unwrap() {
        assert_eq!(service["lost"], 0, "{}", service["service"]);
        assert!(service["failover_secs"].as_f64().unwrap() <= 8.0);
    }
    for (checker, what) in [
        ("election-safety", "one leader per term"),
        ("serving-at-end", "pangyo serves again"),
    ] {
        assert_eq!(drill.finding(checker)["passed"], true, "{what}");
    }
    assert!(
        stderr.contains("partition pangyo <-> gasan, busan"),
        "{stderr}"
    );
    assert!(
        !namespaces().contains(&run),
        "the drill removed its namespaces"
    );
}

#[test]
fn flapping_network_causes_no_failover_storm() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    let mut drill = DrillRun::start("playbooks/flapping-network.yaml", 7311);
    let (code, stdout, stderr) = drill.wait();
    eprintln!("{stdout}");
    assert_eq!(code, 0, "flapping-network must pass\n{stdout}\n{stderr}");
    let dwell = drill.finding("dwell");
    assert_eq!(dwell["passed"], true, "dwell held: {dwell}");
    let flapping = drill.finding("flapping");
    assert_eq!(flapping["passed"], true, "{flapping}");
    assert!(
        flapping["counts"]["routing_changes"].as_u64().unwrap() > 0,
        "the flaps were seen"
    );
    assert!(stderr.matches("gasan link down").count() >= 5, "{stderr}");
}

/// wan-latency (30 to 80 ms one way, with jitter) and wan-pangyo-fire (the fire at a
/// 10 ms round trip), with the delay in user space where the kernel has no netem.
#[test]
fn drills_at_wan_distances_pass() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    for (playbook, port) in [
        ("playbooks/wan-latency.yaml", 7341),
        ("playbooks/wan-pangyo-fire.yaml", 7351),
    ] {
        let mut drill = DrillRun::start(playbook, port);
        let (code, stdout, stderr) = drill.wait();
        eprintln!("{stdout}");
        assert_eq!(code, 0, "{playbook} must pass\n{stdout}\n{stderr}");
        for service in drill.report()["services"].as_array().unwrap() {
            assert_eq!(service["lost"], 0, "{playbook}: {}", service["service"]);
        }
        assert!(
            stderr.contains("latency pangyo"),
            "{playbook}: the delay was injected\n{stderr}"
        );
    }
}

#[test]
fn no_namespace_outlives_a_netns_drill() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !root_or_skip() {
        return;
    }
    // Interrupted: the drill removes everything itself.
    let mut drill = DrillRun::start("playbooks/site-isolation.yaml", 7321);
    let run = run_id(&drill);
    std::thread::sleep(Duration::from_secs(5));
    let children = drill.children();
    // SAFETY: kill(2) on the drill we spawned.
    unsafe { libc::kill(drill.child.id() as i32, libc::SIGTERM) };
    let (code, _, stderr) = drill.wait();
    assert_eq!(code, 10, "{stderr}");
    assert!(
        !namespaces().contains(&run),
        "interrupted drill left {run}: {}",
        namespaces()
    );
    assert!(
        children.iter().all(|p| !alive(*p)),
        "site processes outlived the drill"
    );

    // SIGKILLed: its children die with it, its namespaces stay until `drill heal`.
    let mut drill = DrillRun::start("playbooks/site-isolation.yaml", 7331);
    let run = run_id(&drill);
    std::thread::sleep(Duration::from_secs(3));
    drill.child.kill().unwrap();
    let _ = drill.child.wait();
    assert!(
        namespaces().contains(&run),
        "a SIGKILLed drill cannot clean up"
    );
    let heal = std::process::Command::new(firebreak_tests::binary())
        .args(["drill", "heal"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&heal.stdout);
    assert!(heal.status.success(), "{said}");
    assert!(said.contains(&format!("removed fb-{run}-")), "{said}");
    assert!(
        !namespaces().contains(&run),
        "heal removed {run}: {}",
        namespaces()
    );
}
