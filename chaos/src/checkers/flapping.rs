//! Flapping: no service changes its routing more often over the drill than the playbook
//! allows (`expect.max_routing_changes`): a flapping link must not cause a failover
//! storm. The changes are counted (`routing_changes`) either way.

use std::collections::BTreeMap;

use super::route_changes::changes;
use super::Finding;
use crate::history::Event;
use crate::playbook::Playbook;

pub const NAME: &str = "flapping";
pub const PROPERTY: &str = "no more routing changes per service than the playbook allows";

pub fn check(playbook: &Playbook, events: &[Event]) -> Finding {
    let mut finding = Finding::new(NAME, PROPERTY);
    let mut per_service: BTreeMap<&str, u64> = BTreeMap::new();
    for change in changes(events) {
        finding.count("routing_changes", change.jump);
        *per_service.entry(change.service).or_default() += change.jump;
    }
    if let Some(max) = playbook.expect.max_routing_changes {
        for (service, changes) in per_service.iter().filter(|(_, c)| **c > max) {
            finding.violation(format!(
                "{service}: {changes} routing changes, at most {max} expected: the routing flapped"
            ));
        }
    }
    finding
}

#[cfg(test)]
mod tests {
    use super::super::route_changes::tests::route;
    use super::super::tests::{playbook, start};
    use super::*;

    fn flaps(times: u64) -> Vec<Event> {
        let mut events = vec![start()];
        for epoch in 1..=times + 1 {
            let serving: &[&str] = if epoch % 2 == 1 {
                &["a", "b", "c"]
            } else {
                &["b", "c"]
            };
            events.push(route(4_000 + epoch * 1_000, epoch, serving));
        }
        events
    }

    #[test]
    fn changes_within_the_bound_pass_and_are_counted() {
        let mut p = playbook("[{ at_secs: 3, fault: site-loss, target: a }]");
        p.expect.max_routing_changes = Some(2);
        let f = check(&p, &flaps(2));
        assert!(f.passed, "{:?}", f.violations);
        assert_eq!(f.get("routing_changes"), 2);
    }

    #[test]
    fn a_failover_storm_is_caught() {
        let mut p = playbook("[{ at_secs: 3, fault: site-loss, target: a }]");
        p.expect.max_routing_changes = Some(2);
        let f = check(&p, &flaps(4));
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("4 routing changes, at most 2"),
            "{:?}",
            f.violations
        );
    }
}
