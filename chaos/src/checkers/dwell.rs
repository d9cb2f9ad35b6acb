//! Dwell: a service's routing never changes again within the topology's dwell time of
//! its last change (judged by the control leader's `changed_at_ms`; several epochs
//! between two polls mean changes closer than the poll interval).

use super::route_changes::changes;
use super::{secs, Finding};
use crate::history::Event;
use crate::playbook::Playbook;

pub const NAME: &str = "dwell";
pub const PROPERTY: &str = "routing never changes again inside the dwell time";

pub fn check(playbook: &Playbook, events: &[Event]) -> Finding {
    let mut finding = Finding::new(NAME, PROPERTY);
    let dwell = playbook.topology.dwell_ms;
    for change in changes(events) {
        let gap = (change.jump == 1).then_some(change.since_previous_ms);
        if gap.is_none_or(|g| g < dwell) {
            finding.violation(format!(
                "{}: routing changed again {} after the last change (epoch {}), inside the dwell time of {}",
                change.service,
                gap.map_or("within one poll".into(), secs),
                change.epoch,
                secs(dwell)
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

    const FAULT: &str = "[{ at_secs: 3, fault: site-loss, target: a }]";

    #[test]
    fn changes_further_apart_than_the_dwell_pass() {
        let events = [
            start(),
            route(1_000, 1, &["a", "b", "c"]),
            route(5_000, 2, &["b", "c"]),
            route(60_000, 3, &["a", "b", "c"]),
        ];
        let f = check(&playbook(FAULT), &events);
        assert!(f.passed, "{:?}", f.violations);
    }

    #[test]
    fn a_change_inside_the_dwell_time_is_caught() {
        let events = [
            start(),
            route(1_000, 1, &["a", "b", "c"]),
            route(5_000, 2, &["b", "c"]),
            route(5_500, 3, &["a", "b", "c"]),
        ];
        let f = check(&playbook(FAULT), &events);
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("inside the dwell time"),
            "{:?}",
            f.violations
        );
    }

    #[test]
    fn two_changes_between_polls_are_caught() {
        let events = [
            start(),
            route(1_000, 1, &["a", "b"]),
            route(40_000, 3, &["a"]),
        ];
        let f = check(&playbook(FAULT), &events);
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("within one poll"),
            "{:?}",
            f.violations
        );
    }
}
