//! Quiet routing: no routing change before the first fault. A healthy cluster must not
//! fail anything over; in a drill without faults, nothing changes at all.

use super::route_changes::changes;
use super::{secs, Finding};
use crate::history::{workload_start_ms, Event};
use crate::playbook::Playbook;

pub const NAME: &str = "quiet-routing";
pub const PROPERTY: &str = "no routing change before the first fault";

pub fn check(playbook: &Playbook, events: &[Event]) -> Finding {
    let mut finding = Finding::new(NAME, PROPERTY);
    let start = workload_start_ms(events);
    let first_fault = playbook
        .first_fault_secs()
        .map_or(u64::MAX, |s| start + (s * 1000.0) as u64);
    for change in changes(events) {
        if change.at_ms >= start && change.at_ms < first_fault {
            finding.violation(format!(
                "{}: routing changed to {:?} at {} with no fault yet",
                change.service,
                change.serving,
                secs(change.at_ms - start)
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

    #[test]
    fn a_routing_change_without_a_fault_is_caught() {
        let events = [
            start(),
            route(1_000, 1, &["a", "b", "c"]),
            route(5_000, 2, &["a", "b"]),
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
        ];
        let f = check(
            &playbook("[{ at_secs: 3, fault: site-loss, target: a }]"),
            &events,
        );
        assert!(f.passed, "{:?}", f.violations);
    }
}
