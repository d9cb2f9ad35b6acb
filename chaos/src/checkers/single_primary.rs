//! Single primary: an active-passive service is never routed to two sites at once. Every
//! route the observer saw from any node, at any epoch, serves at most one site; two
//! would mean two primaries taking writes (split brain at the service level).

use super::{secs, Finding};
use crate::history::Event;
use crate::playbook::{Mode, Playbook};

pub const NAME: &str = "single-primary";
pub const PROPERTY: &str = "an active-passive service is served by at most one site at any epoch";

pub fn check(playbook: &Playbook, events: &[Event]) -> Finding {
    let mut finding = Finding::new(NAME, PROPERTY);
    let passive: Vec<&str> = playbook
        .topology
        .services
        .iter()
        .filter(|s| s.mode == Mode::ActivePassive)
        .map(|s| s.name.name())
        .collect();
    for event in events {
        let Event::Route {
            at_ms,
            service,
            serving,
            epoch,
            ..
        } = event
        else {
            continue;
        };
        if !passive.contains(&service.as_str()) {
            continue;
        }
        finding.count("routes_seen", 1);
        if serving.len() > 1 {
            finding.count("two_primaries", 1);
            finding.violation(format!(
                "{service} (active-passive): epoch {epoch} routes it to {serving:?} at {}: more than one primary",
                secs(*at_ms)
            ));
        }
    }
    finding
}

#[cfg(test)]
mod tests {
    use super::super::tests::playbook_with;
    use super::*;

    fn payments(epoch: u64, serving: &[&str]) -> Event {
        Event::Route {
            at_ms: epoch * 1_000,
            service: "payments".into(),
            serving: serving.iter().map(|s| s.to_string()).collect(),
            epoch,
            changed_at_ms: 0,
        }
    }

    const SERVICES: &str =
        "[{ name: payments, mode: active-passive }, { name: login, mode: active-active }]";

    #[test]
    fn one_primary_at_a_time_passes() {
        let events = [payments(1, &["a"]), payments(2, &["b"]), payments(3, &[])];
        let f = check(&playbook_with(SERVICES, "[]"), &events);
        assert!(f.passed, "{:?}", f.violations);
        assert_eq!(f.get("routes_seen"), 3);
    }

    #[test]
    fn two_primaries_are_caught() {
        let events = [payments(1, &["a"]), payments(2, &["a", "b"])];
        let f = check(&playbook_with(SERVICES, "[]"), &events);
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("more than one primary"),
            "{:?}",
            f.violations
        );
    }
}
