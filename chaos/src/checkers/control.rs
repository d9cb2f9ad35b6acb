//! Control plane: no process dies unless the drill kills it (a crash or an out-of-memory
//! kill under load), at most one leader per term in each Raft group (Raft's election
//! safety), no routing change before the first fault (a healthy cluster must not flap;
//! in a drill without faults, none at all), no more routing changes than the playbook
//! allows (a flapping link must not cause a failover storm), and the sites the playbook
//! names serve every active-active service again by the end.
//!
//! The observer polls every node for the leader it knows per group and term, and the
//! routing table; a node that names a different leader for a term than another node did
//! means two leaders were elected in one term: split brain.

use std::collections::{BTreeMap, BTreeSet};

use super::{secs, Finding};
use crate::history::{workload_start_ms, Event};
use crate::playbook::{Mode, Playbook};

pub const PROPERTY: &str =
    "no process dies unasked; at most one leader per term; routing changes only after a fault and never inside the dwell time; named sites serve again by the end";

/// Checks the control-plane property over a history.
pub fn check(playbook: &Playbook, events: &[Event]) -> Finding {
    let mut finding = Finding::new("control", PROPERTY);
    let mut leaders: BTreeMap<(&str, u64), BTreeSet<u64>> = BTreeMap::new();
    for event in events {
        if let Event::Leader {
            group,
            term,
            leader,
            ..
        } = event
        {
            if *leader != 0 {
                leaders.entry((group, *term)).or_default().insert(*leader);
            }
        }
    }
    finding.count("terms_seen", leaders.len() as u64);
    check_elections(&mut finding, playbook, events);
    for ((group, term), nodes) in &leaders {
        if nodes.len() > 1 {
            finding.violation(format!(
                "{group} group: nodes {nodes:?} were each called leader of term {term}"
            ));
        }
    }
    for event in events {
        if let Event::ProcessExit {
            at_ms,
            process,
            status,
        } = event
        {
            finding.count("crashes", 1);
            finding.violation(format!(
                "{process} died at {} without the drill killing it ({status})",
                secs(*at_ms)
            ));
        }
    }
    let start = workload_start_ms(events);
    let first_fault = playbook
        .first_fault_secs()
        .map_or(u64::MAX, |s| start + (s * 1000.0) as u64);
    let last = check_routing(&mut finding, playbook, events, start, first_fault);
    for spec in &playbook.topology.services {
        if spec.mode != Mode::ActiveActive {
            continue;
        }
        let serving = last
            .get(spec.name.name())
            .map(|(_, s)| s.as_slice())
            .unwrap_or_default();
        for site in &playbook.expect.serving_at_end {
            if !serving.contains(site) {
                finding.violation(format!(
                    "{}: {site} does not serve it at the end (serving: {serving:?})",
                    spec.name
                ));
            }
        }
    }
    finding
}

/// Elections once the workload runs, per group: new terms with a leader, after the term
/// the workload started in.
fn check_elections(finding: &mut Finding, playbook: &Playbook, events: &[Event]) {
    let Some(max) = playbook.expect.max_elections else {
        return;
    };
    let start = workload_start_ms(events);
    let mut terms: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    let mut at_start: BTreeMap<&str, u64> = BTreeMap::new();
    for event in events {
        if let Event::Leader {
            at_ms, group, term, ..
        } = event
        {
            if *at_ms < start {
                at_start.insert(group, *term);
            } else {
                terms.entry(group).or_default().insert(*term);
            }
        }
    }
    for (group, seen) in terms {
        let first = at_start.get(group).copied().unwrap_or(0);
        let elections = seen.iter().filter(|t| **t > first).count() as u64;
        if elections > max {
            finding.violation(format!(
                "{group} group: {elections} elections while the workload ran, at most {max} expected"
            ));
        }
    }
}

/// Routing changes: none before the first fault; per service, no two closer than the
/// dwell time (by the leader's `changed_at_ms`; a jump of several epochs between two polls
/// means changes closer than the poll interval) and no more than `max_routing_changes`.
/// Returns each service's last route.
fn check_routing<'e>(
    finding: &mut Finding,
    playbook: &Playbook,
    events: &'e [Event],
    start: u64,
    first_fault: u64,
) -> BTreeMap<&'e str, (u64, &'e Vec<String>)> {
    let dwell = playbook.topology.dwell_ms;
    let mut last: BTreeMap<&str, (u64, &Vec<String>)> = BTreeMap::new();
    let mut changed_at: BTreeMap<&str, u64> = BTreeMap::new();
    let mut per_service: BTreeMap<&str, u64> = BTreeMap::new();
    for event in events {
        let Event::Route {
            at_ms,
            service,
            serving,
            epoch,
            changed_at_ms,
        } = event
        else {
            continue;
        };
        if let Some((previous, _)) = last.get(service.as_str()) {
            if epoch > previous {
                let jump = epoch - previous;
                finding.count("routing_changes", jump);
                *per_service.entry(service).or_default() += jump;
                if *at_ms < first_fault && *at_ms >= start {
                    finding.violation(format!(
                        "{service}: routing changed to {serving:?} at {} with no fault yet",
                        secs(at_ms - start)
                    ));
                }
                let gap = changed_at
                    .get(service.as_str())
                    .map(|t| changed_at_ms.saturating_sub(*t));
                if jump > 1 || gap.is_some_and(|g| g < dwell) {
                    finding.violation(format!(
                        "{service}: routing changed again {} after the last change (epoch {epoch}), inside the dwell time of {}",
                        gap.map_or("within one poll".into(), secs),
                        secs(dwell)
                    ));
                }
            }
        }
        changed_at.insert(service, *changed_at_ms);
        last.insert(service, (*epoch, serving));
    }
    if let Some(max) = playbook.expect.max_routing_changes {
        for (service, changes) in per_service.iter().filter(|(_, c)| **c > max) {
            finding.violation(format!(
                "{service}: {changes} routing changes, at most {max} expected: the routing flapped"
            ));
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn playbook(timeline: &str) -> Playbook {
        let text = format!(
            "name: t\ndescription: d\ntopology:\n  sites: [a, b, c]\n  services: [{{ name: login, mode: active-active }}]\nworkload: {{ seed: 1, rate_per_sec: 1, duration_secs: 60, users: 2, mix: {{ login: 1 }} }}\ntimeline: {timeline}\nexpect:\n  serving_at_end: [a]\n"
        );
        Playbook::parse("t.yaml", &text).unwrap()
    }

    fn leader(node: u64, term: u64, leader: u64) -> Event {
        Event::Leader {
            at_ms: 0,
            node,
            group: "control".into(),
            term,
            leader,
        }
    }

    fn route(at_ms: u64, epoch: u64, serving: &[&str]) -> Event {
        Event::Route {
            at_ms,
            service: "login".into(),
            serving: serving.iter().map(|s| s.to_string()).collect(),
            epoch,
            changed_at_ms: at_ms,
        }
    }

    fn start() -> Event {
        Event::Phase {
            at_ms: 1_000,
            name: "workload".into(),
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let events = [
            start(),
            leader(1, 2, 1),
            leader(2, 2, 1),
            leader(3, 3, 2),
            route(1_000, 1, &["a", "b", "c"]),
        ];
        let f = check(&playbook("[]"), &events);
        assert!(f.passed, "{:?}", f.violations);
    }

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let events = [
            start(),
            leader(1, 2, 1),
            leader(3, 2, 3),
            route(1_000, 1, &["a"]),
        ];
        let f = check(&playbook("[]"), &events);
        assert!(!f.passed);
        assert!(f.violations[0].contains("term 2"), "{:?}", f.violations);
    }

    #[test]
    fn a_routing_change_without_a_fault_is_caught() {
        let events = [
            start(),
            route(1_000, 1, &["a", "b", "c"]),
            route(5_000, 2, &["a", "b"]),
            route(9_000, 3, &["a", "b", "c"]),
        ];
        let f = check(&playbook("[]"), &events);
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("no fault yet"),
            "{:?}",
            f.violations
        );
    }

    #[test]
    fn a_routing_change_after_a_fault_is_expected() {
        let events = [
            start(),
            route(1_000, 1, &["a", "b", "c"]),
            route(5_000, 2, &["b", "c"]),
            route(9_000, 3, &["a", "b", "c"]),
        ];
        let f = check(
            &playbook("[{ at_secs: 3, fault: site-loss, target: a }]"),
            &events,
        );
        assert!(f.passed, "{:?}", f.violations);
    }

    #[test]
    fn a_crashed_process_is_caught() {
        let events = [
            start(),
            route(1_000, 1, &["a"]),
            Event::ProcessExit {
                at_ms: 9_000,
                process: "b/payments".into(),
                status: "signal: 9 (SIGKILL)".into(),
            },
        ];
        let f = check(&playbook("[]"), &events);
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("b/payments died"),
            "{:?}",
            f.violations
        );
    }

    #[test]
    fn a_failover_storm_is_caught() {
        let mut p = playbook("[{ at_secs: 3, fault: site-loss, target: a }]");
        p.expect.max_routing_changes = Some(2);
        let mut events = vec![start()];
        for epoch in 1..=5 {
            let serving: &[&str] = if epoch % 2 == 1 {
                &["a", "b", "c"]
            } else {
                &["b", "c"]
            };
            events.push(route(4_000 + epoch * 1_000, epoch, serving));
        }
        let f = check(&p, &events);
        assert!(!f.passed);
        assert!(
            f.violations
                .iter()
                .any(|v| v.contains("4 routing changes, at most 2")),
            "{:?}",
            f.violations
        );
    }

    #[test]
    fn a_change_inside_the_dwell_time_is_caught() {
        let events = [
            start(),
            route(1_000, 1, &["a", "b", "c"]),
            route(5_000, 2, &["b", "c"]),
            route(5_500, 3, &["a", "b", "c"]),
        ];
        let f = check(
            &playbook("[{ at_secs: 3, fault: site-loss, target: a }]"),
            &events,
        );
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("inside the dwell time"),
            "{:?}",
            f.violations
        );
    }

    #[test]
    fn a_site_not_serving_at_the_end_is_caught() {
        let events = [
            start(),
            route(1_000, 1, &["a", "b", "c"]),
            route(5_000, 2, &["b", "c"]),
        ];
        let f = check(
            &playbook("[{ at_secs: 3, fault: site-loss, target: a }]"),
            &events,
        );
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("a does not serve"),
            "{:?}",
            f.violations
        );
    }
}
