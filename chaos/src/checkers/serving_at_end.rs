//! Serving at the end: every site the playbook names (`expect.serving_at_end`) serves every
//! active-active service again by the end of the drill, as the last observed route says.

use super::route_changes::last_routes;
use super::Finding;
use crate::history::Event;
use crate::playbook::{Mode, Playbook};

pub const NAME: &str = "serving-at-end";
pub const PROPERTY: &str =
    "the sites the playbook names serve every active-active service at the end";

pub fn check(playbook: &Playbook, events: &[Event]) -> Finding {
    let mut finding = Finding::new(NAME, PROPERTY);
    let last = last_routes(events);
    for spec in &playbook.topology.services {
        if spec.mode != Mode::ActiveActive || !spec.name.is_process() {
            continue;
        }
        let serving = last
            .get(spec.name.name())
            .map(|(_, s)| *s)
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

#[cfg(test)]
mod tests {
    use super::super::route_changes::tests::route;
    use super::super::tests::{playbook, start};
    use super::*;

    const FAULT: &str = "[{ at_secs: 3, fault: site-loss, target: a }]";

    #[test]
    fn a_site_back_at_the_end_passes() {
        let events = [
            start(),
            route(1_000, 1, &["a", "b", "c"]),
            route(5_000, 2, &["b", "c"]),
            route(40_000, 3, &["a", "b", "c"]),
        ];
        assert!(check(&playbook(FAULT), &events).passed);
    }

    #[test]
    fn a_site_not_serving_at_the_end_is_caught() {
        let events = [
            start(),
            route(1_000, 1, &["a", "b", "c"]),
            route(5_000, 2, &["b", "c"]),
        ];
        let f = check(&playbook(FAULT), &events);
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("a does not serve"),
            "{:?}",
            f.violations
        );
    }
}
