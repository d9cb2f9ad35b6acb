use super::*;

fn sites(n: usize) -> Vec<String> {
    ["pangyo", "gasan", "busan", "anyang", "daejeon"][..n]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

const SERVICES: [ServiceKind; 3] = [
    ServiceKind::Messaging,
    ServiceKind::Payments,
    ServiceKind::Login,
];

fn bounds(max_faulted_sites: usize) -> Bounds {
    Bounds {
        start_secs: 6.0,
        heal_by_secs: 47.0,
        min_fault_secs: 2.0,
        max_fault_secs: 8.0,
        max_gap_secs: 4.0,
        max_faulted_sites,
        max_surge_factor: 4,
    }
}

/// The site a step faults (`None` for a surge).
fn site_of(step: &Step) -> Option<&str> {
    (step.fault != FaultKind::Surge).then(|| step.site_and_process().0)
}

/// Every bound of the module doc, for one schedule.
fn check_bounds(steps: &[Step], b: &Bounds, seed: u64) {
    assert!(
        !steps.is_empty() && steps.len() <= MAX_FAULTS,
        "seed {seed}: {} faults",
        steps.len()
    );
    for (i, s) in steps.iter().enumerate() {
        let d = s.duration_secs.expect("every fault heals by itself");
        assert!(s.at_secs >= b.start_secs, "seed {seed}: {s:?} starts early");
        assert!(
            s.end_secs() <= b.heal_by_secs + 1e-9,
            "seed {seed}: {s:?} heals late"
        );
        assert!(
            (b.min_fault_secs..=b.max_fault_secs).contains(&d),
            "seed {seed}: {s:?}"
        );
        assert!(
            i == 0 || s.at_secs >= steps[i - 1].at_secs,
            "seed {seed}: out of order"
        );
        if let Some(f) = s.factor {
            assert!((2..=b.max_surge_factor).contains(&f), "seed {seed}: {s:?}");
        }
        if let Some(p) = s.period_secs {
            assert!(p > 0.0 && p <= d, "seed {seed}: {s:?}");
        }
        // At its start, count what else is running.
        let running: Vec<&Step> = steps[..i]
            .iter()
            .filter(|o| o.end_secs() > s.at_secs)
            .collect();
        let mut faulted: Vec<&str> = running.iter().filter_map(|o| site_of(o)).collect();
        match site_of(s) {
            Some(site) => {
                assert!(
                    !faulted.contains(&site),
                    "seed {seed}: two faults on {site} at {}",
                    s.at_secs
                );
                faulted.push(site);
            }
            None => assert!(
                running.iter().all(|o| o.fault != FaultKind::Surge),
                "seed {seed}: two surges at once"
            ),
        }
        assert!(
            faulted.len() <= b.max_faulted_sites,
            "seed {seed}: {} sites faulted at {} s: {faulted:?}",
            faulted.len(),
            s.at_secs
        );
    }
}

#[test]
fn a_seed_gives_the_same_schedule_every_time_and_seeds_differ() {
    let b = bounds(1);
    let one = schedule(7, &sites(3), &SERVICES, &Fault::ALL, &b);
    let again = schedule(7, &sites(3), &SERVICES, &Fault::ALL, &b);
    assert_eq!(describe(&one), describe(&again));
    let other = schedule(8, &sites(3), &SERVICES, &Fault::ALL, &b);
    assert_ne!(describe(&one), describe(&other));
}

/// The bounds hold for 10,000 seeds, with three sites (one faulted at a time) and with
/// five (two at a time, or four when asked).
#[test]
fn the_schedule_keeps_its_bounds_for_ten_thousand_seeds() {
    for seed in 0..10_000u64 {
        let (n, max) = match seed % 3 {
            0 => (3, 1),
            1 => (5, 2),
            _ => (5, 4),
        };
        let b = bounds(max);
        let faults = if seed % 2 == 0 {
            &Fault::ALL[..]
        } else {
            &[Fault::Kill, Fault::Surge][..]
        };
        let steps = schedule(seed, &sites(n), &SERVICES, faults, &b);
        check_bounds(&steps, &b, seed);
    }
}

/// Only the kinds asked for are drawn.
#[test]
fn only_the_faults_asked_for_are_drawn() {
    for seed in 0..200 {
        for step in schedule(seed, &sites(3), &SERVICES, &[Fault::Pause], &bounds(1)) {
            assert_eq!(step.fault, FaultKind::ProcessPause);
        }
    }
}

/// A drawn schedule is a valid timeline of the playbook it was drawn for (every field a
/// fault needs, targets that exist, inside the workload).
#[test]
fn drawn_schedules_are_valid_timelines() {
    let text = "name: r\ndescription: d\ndriver: netns\ntopology:\n  sites: [pangyo, gasan, busan]\n  services:\n    - { name: messaging, mode: active-active }\n    - { name: payments, mode: active-passive }\n    - { name: login, mode: active-active }\n    - { name: kv }\nworkload: { seed: 1, rate_per_sec: 40, duration_secs: 60, users: 8, mix: { messaging: 5, payments: 3, login: 2, kv: 2 } }\nexpect: { push_delay_secs_max: 10 }\n";
    let playbook = Playbook::parse("r.yaml", text).unwrap();
    let b = Bounds::for_playbook(&playbook, None);
    assert_eq!(
        (b.start_secs, b.heal_by_secs, b.max_faulted_sites),
        (6.0, 47.0, 1)
    );
    for seed in 0..1_000 {
        let steps = schedule(
            seed,
            &playbook.topology.sites,
            &playbook.services(),
            &Fault::ALL,
            &b,
        );
        if let Err(e) = playbook.with_timeline(steps) {
            panic!("seed {seed}: {e}");
        }
    }
}

#[test]
fn fault_lists_parse_and_an_unknown_kind_is_named() {
    assert_eq!(
        Fault::parse_list("kill, surge,kill").unwrap(),
        [Fault::Kill, Fault::Surge]
    );
    let err = Fault::parse_list("kill,fire").unwrap_err();
    assert!(
        err.contains("no fault kind \"fire\"; the kinds are kill, pause, partition"),
        "{err}"
    );
    assert!(Fault::parse_list(" ,").is_err());
}
