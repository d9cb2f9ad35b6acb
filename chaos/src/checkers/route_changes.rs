//! Routing changes as the observer saw them: what the routing checkers share.
//!
//! The observer records a `Route` when a service's epoch grows. A change is one such step;
//! `jump` above 1 means several changes happened between two polls.

use crate::history::Event;

/// One observed change of a service's routing.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteChange<'e> {
    /// When the observer saw it (drill milliseconds).
    pub at_ms: u64,
    pub service: &'e str,
    pub serving: &'e [String],
    pub epoch: u64,
    /// Epochs since the previous observation (1: a single change).
    pub jump: u64,
    /// The control leader's time between this change and the previous one.
    pub since_previous_ms: u64,
}

/// Every change after each service's first observed route, in order.
pub fn changes(events: &[Event]) -> Vec<RouteChange<'_>> {
    let mut last: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    let mut out = Vec::new();
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
        if let Some((previous, changed)) = last.get(service.as_str()) {
            if epoch < previous {
                continue; // a lagging replica: not news
            }
            if epoch > previous {
                out.push(RouteChange {
                    at_ms: *at_ms,
                    service,
                    serving,
                    epoch: *epoch,
                    jump: epoch - previous,
                    since_previous_ms: changed_at_ms.saturating_sub(*changed),
                });
            }
        }
        last.insert(service, (*epoch, *changed_at_ms));
    }
    out
}

/// Each service's last observed route: its epoch and serving sites.
pub fn last_routes(events: &[Event]) -> std::collections::BTreeMap<&str, (u64, &[String])> {
    let mut last = std::collections::BTreeMap::new();
    for event in events {
        if let Event::Route {
            service,
            serving,
            epoch,
            ..
        } = event
        {
            last.insert(service.as_str(), (*epoch, serving.as_slice()));
        }
    }
    last
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A route of `login` seen at `at_ms` (the leader changed it then too).
    pub fn route(at_ms: u64, epoch: u64, serving: &[&str]) -> Event {
        Event::Route {
            at_ms,
            service: "login".into(),
            serving: serving.iter().map(|s| s.to_string()).collect(),
            epoch,
            changed_at_ms: at_ms,
        }
    }

    #[test]
    fn changes_skip_the_first_route_and_lagging_replicas() {
        let events = [
            route(1_000, 1, &["a", "b"]),
            route(2_000, 3, &["b"]),
            route(2_100, 2, &["a"]),
        ];
        let c = changes(&events);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].epoch, c[0].jump, c[0].since_previous_ms),
            (3, 2, 1_000)
        );
    }
}
