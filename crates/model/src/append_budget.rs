//! How many bytes of log entries the next AppendEntries to one peer may carry.
//!
//! openraft 0.9 gives every AppendEntries one heartbeat interval to cross, be stored and be
//! answered, and sends the same entries again when it did not. A payload the link cannot
//! carry in that time is sent again and again and never arrives: a follower that fell
//! behind never caught up, and when the leader burned, its successor's first catch-up RPC
//! (openraft probes from the middle of the log) stopped every write (wan-pangyo-fire in
//! CI, at a 10 ms round trip: each timeout also dropped the connection, so each retry began
//! in TCP slow start).
//!
//! So each peer gets a budget, at most `raft.max_append_bytes`:
//!
//! ```text
//!   an RPC got no answer in time (or its connection broke)   budget / 2, not below 16 KiB
//!   answered, but in over 3/4 of the time                   budget / 2
//!   answered in under 1/2 of the time, the budget used      budget × 2, up to the maximum
//! ```
//!
//! A payload over budget is cut to the entries that fit (at least one always goes); the
//! leader hears that only those were stored and sends the rest next.

use std::time::Duration;

/// The least budget: below it, a link is too slow for Raft at this heartbeat anyway, and
/// one entry always goes.
pub const MIN_APPEND_BUDGET_BYTES: usize = 16 * 1024;

/// One peer's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendBudget {
    max: usize,
    bytes: usize,
}

impl AppendBudget {
    /// A budget of `max` bytes, the most it ever grows to.
    pub fn new(max: usize) -> Self {
        let max = max.max(MIN_APPEND_BUDGET_BYTES);
        Self { max, bytes: max }
    }

    /// Bytes the next AppendEntries may carry.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// An AppendEntries got no answer within its time, or its connection broke.
    pub fn lost(&mut self) {
        self.bytes = (self.bytes / 2).max(MIN_APPEND_BUDGET_BYTES);
    }

    /// An AppendEntries of `sent` bytes was answered after `took`, of the `ttl` it had.
    pub fn answered(&mut self, sent: usize, took: Duration, ttl: Duration) {
        if took * 4 > ttl * 3 {
            self.lost();
        } else if took * 2 < ttl && sent * 2 >= self.bytes {
            self.bytes = (self.bytes * 2).min(self.max);
        }
    }
}

/// How many of `entries` entries, `encoded` bytes together, to send within `budget`
/// bytes: all if they fit, else a share in proportion (entries are of similar size within
/// one catch-up), at least one and fewer than all.
pub fn entries_within(entries: usize, encoded: usize, budget: usize) -> usize {
    if encoded <= budget || entries <= 1 {
        return entries;
    }
    let share = (entries as u128 * budget as u128 / encoded as u128) as usize;
    share.clamp(1, entries - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_millis(100);

    #[test]
    fn a_lost_rpc_halves_the_budget_down_to_the_floor() {
        let mut budget = AppendBudget::new(1024 * 1024);
        budget.lost();
        assert_eq!(budget.bytes(), 512 * 1024);
        for _ in 0..10 {
            budget.lost();
        }
        assert_eq!(budget.bytes(), MIN_APPEND_BUDGET_BYTES);
    }

    #[test]
    fn a_quick_answer_to_a_full_payload_doubles_it_back_to_the_maximum() {
        let mut budget = AppendBudget::new(256 * 1024);
        budget.lost();
        budget.lost();
        assert_eq!(budget.bytes(), 64 * 1024);
        budget.answered(60 * 1024, Duration::from_millis(20), TTL);
        assert_eq!(budget.bytes(), 128 * 1024);
        budget.answered(128 * 1024, Duration::from_millis(20), TTL);
        budget.answered(256 * 1024, Duration::from_millis(20), TTL);
        assert_eq!(budget.bytes(), 256 * 1024, "never above the maximum");
    }

    #[test]
    fn heartbeats_and_middling_answers_leave_it_and_a_late_one_halves_it() {
        let mut budget = AppendBudget::new(256 * 1024);
        budget.lost();
        budget.answered(100, Duration::from_millis(1), TTL);
        assert_eq!(budget.bytes(), 128 * 1024, "a heartbeat tests nothing");
        budget.answered(128 * 1024, Duration::from_millis(60), TTL);
        assert_eq!(
            budget.bytes(),
            128 * 1024,
            "between 1/2 and 3/4 of the time"
        );
        budget.answered(128 * 1024, Duration::from_millis(80), TTL);
        assert_eq!(budget.bytes(), 64 * 1024);
    }

    #[test]
    fn a_payload_over_budget_keeps_its_share_of_the_entries_and_at_least_one() {
        assert_eq!(entries_within(10, 1000, 1000), 10);
        assert_eq!(entries_within(10, 1000, 500), 5);
        assert_eq!(entries_within(10, 1000, 10), 1);
        assert_eq!(entries_within(1, 1000, 10), 1);
        assert_eq!(entries_within(10, 1000, 999), 9, "fewer than all");
        assert_eq!(entries_within(0, 0, 10), 0);
    }
}
