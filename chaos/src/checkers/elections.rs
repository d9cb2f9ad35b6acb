//! Elections: few elections once the workload runs. With `expect.max_elections`, no Raft
//! group elects more leaders than that after the term it was in when the workload
//! started (a flapping link must not keep deposing healthy leaders). The count is kept
//! (`elections`) either way.

use std::collections::{BTreeMap, BTreeSet};

use super::Finding;
use crate::history::{workload_start_ms, Event};
use crate::playbook::Playbook;

pub const NAME: &str = "elections";
pub const PROPERTY: &str = "no more elections per Raft group than the playbook allows";

pub fn check(playbook: &Playbook, events: &[Event]) -> Finding {
    let mut finding = Finding::new(NAME, PROPERTY);
    finding.count("elections", 0);
    let start = workload_start_ms(events);
    let mut terms: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    let mut at_start: BTreeMap<&str, u64> = BTreeMap::new();
    for event in events {
        let (at_ms, group, term) = match event {
            Event::Leader {
                at_ms, group, term, ..
            }
            | Event::Elected {
                at_ms, group, term, ..
            } => (*at_ms, group.as_str(), *term),
            _ => continue,
        };
        if at_ms < start {
            let known = at_start.entry(group).or_default();
            *known = (*known).max(term);
        } else {
            terms.entry(group).or_default().insert(term);
        }
    }
    for (group, seen) in terms {
        let first = at_start.get(group).copied().unwrap_or(0);
        let elections = seen.iter().filter(|t| **t > first).count() as u64;
        finding.count("elections", elections);
        if let Some(max) = playbook.expect.max_elections.filter(|max| elections > *max) {
            finding.violation(format!(
                "{group} group: {elections} elections while the workload ran, at most {max} expected"
            ));
        }
    }
    finding
}

#[cfg(test)]
mod tests {
    use super::super::tests::{leader, playbook, start};
    use super::*;

    fn bounded(max: u64) -> Playbook {
        let mut p = playbook("[]");
        p.expect.max_elections = Some(max);
        p
    }

    #[test]
    fn elections_within_the_bound_pass() {
        let events = [leader(0, 1, 2, 1), start(), leader(2_000, 1, 3, 2)];
        let f = check(&bounded(1), &events);
        assert!(f.passed, "{:?}", f.violations);
        assert_eq!(f.get("elections"), 1);
    }

    #[test]
    fn too_many_elections_are_caught() {
        let events = [
            leader(0, 1, 2, 1),
            start(),
            leader(2_000, 1, 3, 2),
            leader(3_000, 1, 4, 3),
            leader(4_000, 1, 5, 1),
        ];
        let f = check(&bounded(2), &events);
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("3 elections"),
            "{:?}",
            f.violations
        );
    }
}
