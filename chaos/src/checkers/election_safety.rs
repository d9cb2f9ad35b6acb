//! Election safety: at most one leader per term in each Raft group (Raft's election
//! safety; the groups run openraft in its single-term-leader mode, where this holds).
//!
//! Two sources, and a violation from either fails the drill:
//! - `Elected`: every committed vote a node saved to its log store, the node's own
//!   leadership included. A node keeps each one in a bounded journal that the observer
//!   reads on every poll, so a leader that lasted milliseconds is still seen;
//! - `Leader`: the leader each node named for its term when the observer polled it.

use std::collections::BTreeMap;

use super::{secs, Finding};
use crate::history::Event;

pub const NAME: &str = "election-safety";
pub const PROPERTY: &str = "at most one leader per term in each Raft group";

/// Who said that `leader` led a term, and when: the first report per leader.
struct Witness {
    node: u64,
    at_ms: u64,
    how: &'static str,
}

pub fn check(events: &[Event]) -> Finding {
    let mut finding = Finding::new(NAME, PROPERTY);
    let mut leaders: BTreeMap<(&str, u64), BTreeMap<u64, Witness>> = BTreeMap::new();
    for event in events {
        let (group, term, leader, witness) = match event {
            Event::Leader {
                at_ms,
                node,
                group,
                term,
                leader,
            } => (
                group,
                *term,
                *leader,
                Witness {
                    node: *node,
                    at_ms: *at_ms,
                    how: "named",
                },
            ),
            Event::Elected {
                at_ms,
                node,
                group,
                term,
                leader,
            } => (
                group,
                *term,
                *leader,
                Witness {
                    node: *node,
                    at_ms: *at_ms,
                    how: "saved a committed vote for",
                },
            ),
            _ => continue,
        };
        if leader == 0 {
            continue;
        }
        if matches!(event, Event::Elected { .. }) {
            finding.count("committed_votes_seen", 1);
        }
        leaders
            .entry((group, term))
            .or_default()
            .entry(leader)
            .or_insert(witness);
    }
    finding.count("terms_seen", leaders.len() as u64);
    for ((group, term), by_leader) in &leaders {
        if by_leader.len() < 2 {
            continue;
        }
        finding.count("split_terms", 1);
        let said: Vec<String> = by_leader
            .iter()
            .map(|(leader, w)| {
                format!(
                    "node {} {} node {leader} at {}",
                    w.node,
                    w.how,
                    secs(w.at_ms)
                )
            })
            .collect();
        finding.violation(format!(
            "{group} group: term {term} had {} leaders: {}",
            by_leader.len(),
            said.join("; ")
        ));
    }
    finding
}

#[cfg(test)]
mod tests {
    use super::super::tests::leader;
    use super::*;

    fn elected(node: u64, term: u64, leader: u64) -> Event {
        Event::Elected {
            at_ms: 0,
            node,
            group: "control".into(),
            term,
            leader,
        }
    }

    #[test]
    fn one_leader_per_term_passes() {
        let events = [
            leader(0, 1, 2, 1),
            leader(0, 2, 2, 1),
            elected(1, 2, 1),
            elected(3, 2, 1),
            elected(2, 3, 2),
        ];
        let f = check(&events);
        assert!(f.passed, "{:?}", f.violations);
        assert_eq!(f.get("terms_seen"), 2);
    }

    #[test]
    fn two_leaders_named_in_one_term_are_caught() {
        let f = check(&[leader(0, 1, 2, 1), leader(0, 3, 2, 3)]);
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("term 2 had 2 leaders"),
            "{:?}",
            f.violations
        );
    }

    /// The signal polling alone misses: a leader no poll ever saw, known only from the
    /// committed votes saved in the journals.
    #[test]
    fn two_leaders_from_committed_votes_are_caught() {
        let events = [leader(0, 1, 5, 1), elected(1, 5, 1), elected(2, 5, 2)];
        let f = check(&events);
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("node 2 saved a committed vote for node 2"),
            "{:?}",
            f.violations
        );
    }
}
