//! Election safety, as openraft defines it: each leader is a leader id (term, node) that a
//! quorum granted, and no node's vote ever goes back.
//!
//! openraft 0.9 (in its default mode, which firebreak uses) orders leader ids by term,
//! then node id: when two candidates tie in one term, a voter that granted the lower id
//! may still grant the higher one, so a term can have two leaders, the later with the
//! higher node id (its log entries carry the full leader id, which keeps the log safe).
//! "One leader per term" is therefore not the rule; the rule a node can break is to vote,
//! or follow, backwards: to accept a leader id below one it accepted before, as a node
//! that lost its vote record (an unsynced write, a wiped disk under the same node id) can.
//!
//! Per group and node, every (term, leader) the node accepted must rise, in the order
//! seen, in each of two sources (each is in the node's own order; across the two, a poll
//! may read the journal a moment ahead of the metrics):
//! - `Elected`: the committed votes the node saved to its log store (its election journal,
//!   read on every poll, so a leadership that lasted milliseconds is seen too);
//! - `Leader`: the leader the node named for its term when the observer polled it.
//!
//! Terms that had more than one leader are counted (`shared_terms`), not failed.

use std::collections::{BTreeMap, BTreeSet};

use super::{secs, Finding};
use crate::history::Event;

pub const NAME: &str = "election-safety";
pub const PROPERTY: &str = "no node accepts a leader id (term, node) below one it accepted before";

pub fn check(events: &[Event]) -> Finding {
    let mut finding = Finding::new(NAME, PROPERTY);
    let mut accepted: BTreeMap<(&str, u64, &str), (u64, u64)> = BTreeMap::new();
    let mut leaders: BTreeMap<(&str, u64), BTreeSet<u64>> = BTreeMap::new();
    for event in events {
        let (at_ms, node, group, term, leader, how) = match event {
            Event::Leader {
                at_ms,
                node,
                group,
                term,
                leader,
            } => (*at_ms, *node, group.as_str(), *term, *leader, "named"),
            Event::Elected {
                at_ms,
                node,
                group,
                term,
                leader,
            } => {
                finding.count("committed_votes_seen", 1);
                (
                    *at_ms,
                    *node,
                    group.as_str(),
                    *term,
                    *leader,
                    "saved a committed vote for",
                )
            }
            _ => continue,
        };
        if leader == 0 {
            continue;
        }
        leaders.entry((group, term)).or_default().insert(leader);
        let before = accepted.entry((group, node, how)).or_insert((term, leader));
        if (term, leader) < *before {
            finding.count("votes_back", 1);
            finding.violation(format!(
                "{group} group: node {node} {how} leader T{term}-N{leader} at {}, after it had accepted T{}-N{}: its vote went back",
                secs(at_ms),
                before.0,
                before.1
            ));
        } else {
            *before = (term, leader);
        }
    }
    finding.count("terms_seen", leaders.len() as u64);
    let shared = leaders.values().filter(|l| l.len() > 1).count();
    finding.count("shared_terms", shared as u64);
    finding
}

#[cfg(test)]
mod tests {
    use super::super::tests::{elected, leader};
    use super::*;

    #[test]
    fn rising_leader_ids_pass() {
        let events = [
            leader(0, 1, 2, 1),
            elected(0, 2, 2, 1),
            // A tie in term 3, won by node 2 and then by node 3: openraft's order.
            elected(100, 1, 3, 2),
            elected(200, 1, 3, 3),
            leader(300, 2, 3, 3),
            elected(400, 3, 4, 3),
        ];
        let f = check(&events);
        assert!(f.passed, "{:?}", f.violations);
        assert_eq!(f.get("terms_seen"), 3);
        assert_eq!(f.get("shared_terms"), 1);
    }

    #[test]
    fn a_vote_that_goes_back_to_an_older_term_is_caught() {
        let events = [leader(0, 2, 5, 1), leader(1_000, 2, 4, 3)];
        let f = check(&events);
        assert!(!f.passed);
        assert!(
            f.violations[0]
                .contains("node 2 named leader T4-N3 at 1.0 s, after it had accepted T5-N1"),
            "{:?}",
            f.violations
        );
    }

    /// Two leaders of one term in the wrong order on one node: the second vote of a node
    /// that forgot its first (the signal polling alone would miss, from the journal).
    #[test]
    fn a_second_vote_below_the_first_in_one_term_is_caught() {
        let events = [elected(0, 1, 5, 3), elected(10, 1, 5, 2)];
        let f = check(&events);
        assert!(!f.passed);
        assert_eq!(f.get("votes_back"), 1);
        assert!(
            f.violations[0].contains("saved a committed vote for leader T5-N2"),
            "{:?}",
            f.violations
        );
    }
}
