//! No process outlives a drill: interrupted with SIGTERM (as Ctrl-C or a CI timeout does),
//! the drill stops every site process it started and exits 10 ("could not run"); killed
//! with SIGKILL, its children die with it (PR_SET_PDEATHSIG).

use std::time::{Duration, Instant};

use firebreak_tests::{alive, DrillRun};

/// Waits until the drill has started all its site processes (a node and three services
/// per site), or panics after a deadline.
fn wait_for_sites(drill: &DrillRun) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let children = drill.children();
        if children.len() >= 12 {
            // Let the workload start, so the interrupt lands mid-drill.
            std::thread::sleep(Duration::from_secs(3));
            return drill.children();
        }
        assert!(
            Instant::now() < deadline,
            "the drill never started its sites"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_gone(pids: &[u32]) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_interrupted_drill_stops_everything_it_started() {
    let mut drill = DrillRun::start("playbooks/pangyo-fire.yaml", 7421);
    let children = wait_for_sites(&drill);
    // SAFETY: kill(2) on the drill we spawned.
    unsafe { libc::kill(drill.child.id() as i32, libc::SIGTERM) };
    let (code, stdout, stderr) = drill.wait();
    assert_eq!(
        code, 10,
        "an interrupted drill exits 10\n{stdout}\n{stderr}"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(
        wait_gone(&children),
        Vec::<u32>::new(),
        "site processes outlived the drill"
    );
    assert!(
        drill.file("history.jsonl").contains("invoke"),
        "the partial history is kept"
    );
}

#[test]
fn a_killed_drill_takes_its_sites_with_it() {
    let mut drill = DrillRun::start("playbooks/power-cycle.yaml", 7431);
    let children = wait_for_sites(&drill);
    drill.child.kill().expect("SIGKILL the drill");
    let _ = drill.child.wait();
    assert_eq!(
        wait_gone(&children),
        Vec::<u32>::new(),
        "site processes outlived a SIGKILLed drill"
    );
}
