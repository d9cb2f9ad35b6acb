//! Quorum: both Raft groups keep a leader that can commit. With
//! `expect.quorum_gap_secs_max`, neither group goes longer than that without a node that
//! leads it with a quorum behind it (as the observer sees it, every 250 ms), from the
//! workload's start to the end, and each has one at the end. An election after a leader's
//! death is a short gap; a group that lost the majority of its voters (a second fire
//! before the first site was replaced) never gets one back, and fails this. The longest
//! gap per group is kept (`control_longest_gap_ms`, `state_longest_gap_ms`).

use super::{secs, Finding};
use crate::history::{workload_start_ms, Event};
use crate::playbook::Playbook;

pub const NAME: &str = "quorum";
pub const PROPERTY: &str = "both Raft groups always regain a leader with a quorum, soon";

/// The groups judged.
const GROUPS: [&str; 2] = ["control", "state"];

pub fn check(playbook: &Playbook, events: &[Event]) -> Option<Finding> {
    let max_secs = playbook.expect.quorum_gap_secs_max?;
    let mut finding = Finding::new(NAME, PROPERTY);
    let start = workload_start_ms(events);
    let end = events.iter().map(Event::at_ms).max().unwrap_or(start);
    for group in GROUPS {
        let changes: Vec<(u64, bool)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Quorum {
                    at_ms,
                    group: g,
                    held,
                } if g == group => Some((*at_ms, *held)),
                _ => None,
            })
            .collect();
        if changes.is_empty() {
            finding.violation(format!("{group}: the observer never saw the group"));
            continue;
        }
        let gaps = gaps(&changes, start, end);
        let longest = gaps.iter().map(|(from, to)| to - from).max().unwrap_or(0);
        finding.count(&format!("{group}_longest_gap_ms"), longest);
        for (from, to) in gaps {
            if to == end && changes.last().is_some_and(|(_, held)| !held) {
                finding.violation(format!(
                    "{group}: no leader with a quorum from {} to the end",
                    secs(from.saturating_sub(start))
                ));
            } else if (to - from) as f64 > max_secs * 1_000.0 {
                finding.violation(format!(
                    "{group}: no leader with a quorum for {} from {}, at most {max_secs} s expected",
                    secs(to - from),
                    secs(from.saturating_sub(start))
                ));
            }
        }
    }
    Some(finding)
}

/// The spans, within `start..end`, during which the group had no leader with a quorum.
fn gaps(changes: &[(u64, bool)], start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut gaps = Vec::new();
    let mut lost_since: Option<u64> = None;
    for &(at, held) in changes {
        match (held, lost_since) {
            (false, None) => lost_since = Some(at.max(start)),
            (true, Some(from)) => {
                if at > start {
                    gaps.push((from, at));
                }
                lost_since = None;
            }
            _ => {}
        }
    }
    if let Some(from) = lost_since {
        gaps.push((from, end.max(from)));
    }
    gaps
}

#[cfg(test)]
mod tests {
    use super::super::tests::{playbook, start};
    use super::*;

    fn quorum(at_ms: u64, group: &str, held: bool) -> Event {
        Event::Quorum {
            at_ms,
            group: group.into(),
            held,
        }
    }

    fn judge(events: &[Event]) -> Finding {
        let mut p = playbook("[]");
        p.expect.quorum_gap_secs_max = Some(5.0);
        check(&p, events).unwrap()
    }

    #[test]
    fn an_election_after_a_fire_is_a_short_gap() {
        let f = judge(&[
            quorum(500, "control", true),
            quorum(500, "state", true),
            start(),
            quorum(10_000, "control", false),
            quorum(11_200, "control", true),
            quorum(60_000, "state", true),
        ]);
        assert!(f.passed, "{:?}", f.violations);
        assert_eq!(f.get("control_longest_gap_ms"), 1_200);
        assert_eq!(f.get("state_longest_gap_ms"), 0);
    }

    #[test]
    fn a_group_that_lost_its_majority_is_caught() {
        let f = judge(&[
            quorum(500, "control", true),
            quorum(500, "state", true),
            start(),
            quorum(45_000, "state", false),
            quorum(61_000, "control", true),
        ]);
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("state: no leader with a quorum from 44.0 s to the end"),
            "{:?}",
            f.violations
        );
    }

    #[test]
    fn a_long_gap_that_ends_is_caught_too() {
        let f = judge(&[
            quorum(500, "control", true),
            quorum(500, "state", true),
            start(),
            quorum(20_000, "control", false),
            quorum(28_000, "control", true),
            quorum(60_000, "state", true),
        ]);
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("for 8.0 s from 19.0 s"),
            "{:?}",
            f.violations
        );
    }

    #[test]
    fn a_group_never_seen_is_caught() {
        let f = judge(&[quorum(500, "control", true), start()]);
        assert!(!f.passed);
        assert!(f.violations[0].contains("state: the observer never saw"));
    }
}
