//! Membership over time, for the report: each group's voters and learners as the
//! observer saw them change (a site replaced, a node added or removed).

use std::fmt::Write as _;

use serde::Serialize;

use crate::history::{workload_start_ms, Event};

/// One group's membership from `at_secs` of the workload on.
#[derive(Debug, Clone, Serialize)]
pub struct MembershipRow {
    pub at_secs: f64,
    pub group: String,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

impl MembershipRow {
    fn describe(&self) -> String {
        let list = |ids: &[u64]| {
            let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
            ids.join(", ")
        };
        let mut text = format!(
            "{:>6.1} s  {} group: voters {}",
            self.at_secs,
            self.group,
            list(&self.voters)
        );
        if !self.learners.is_empty() {
            let _ = write!(text, "; learners {}", list(&self.learners));
        }
        text
    }
}

/// Every membership the observer recorded, times from the workload's start (negative:
/// before it).
pub fn rows(events: &[Event]) -> Vec<MembershipRow> {
    let start = workload_start_ms(events) as f64;
    events
        .iter()
        .filter_map(|e| match e {
            Event::Membership {
                at_ms,
                group,
                voters,
                learners,
            } => Some(MembershipRow {
                at_secs: (*at_ms as f64 - start) / 1000.0,
                group: group.clone(),
                voters: voters.clone(),
                learners: learners.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// One line per recorded membership, or none when no group's membership changed during
/// the drill (the report then says nothing about it).
pub fn lines(rows: &[MembershipRow]) -> Vec<String> {
    let changed = ["control", "state"]
        .iter()
        .any(|g| rows.iter().filter(|r| r.group == *g).count() > 1);
    if !changed {
        return Vec::new();
    }
    rows.iter().map(MembershipRow::describe).collect()
}
