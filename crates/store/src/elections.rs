//! The election journal: every committed vote this node saved, i.e. who won which term.
//!
//! openraft saves a committed vote when this node wins an election and when it first
//! hears from a new leader, always through [`crate::LogStore`]'s `save_vote`. Recording it
//! there sees every leadership this node took part in, however short, where sampling the
//! Raft metrics would miss one that lasted less than a poll. Drills read the journal to
//! check election safety (at most one leader per term). It lives in memory, bounded to
//! the last [`MAX_ELECTIONS`]; a restart starts it empty.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use firebreak_model::NodeId;
use serde::{Deserialize, Serialize};

/// Entries kept; the oldest go first. A poll every 250 ms reads them long before 64
/// elections could pass.
pub const MAX_ELECTIONS: usize = 64;

/// `leader` won `term` (a committed vote saved by this node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Elected {
    pub term: u64,
    pub leader: NodeId,
}

/// The journal of one group; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct ElectionJournal(Arc<Mutex<VecDeque<Elected>>>);

impl ElectionJournal {
    /// Records a committed vote; the same one twice in a row is kept once.
    pub(crate) fn record(&self, elected: Elected) {
        let mut entries = self.0.lock().expect("election journal lock");
        if entries.back() == Some(&elected) {
            return;
        }
        if entries.len() == MAX_ELECTIONS {
            entries.pop_front();
        }
        tracing::info!(term = elected.term, leader = %elected.leader, "committed vote saved: a leader for this term");
        entries.push_back(elected);
    }

    /// The entries kept, oldest first.
    pub fn entries(&self) -> Vec<Elected> {
        self.0
            .lock()
            .expect("election journal lock")
            .iter()
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_keeps_the_latest_and_skips_repeats() {
        let journal = ElectionJournal::default();
        for term in 1..=(MAX_ELECTIONS as u64 + 10) {
            let elected = Elected {
                term,
                leader: NodeId(term % 3 + 1),
            };
            journal.record(elected);
            journal.record(elected);
        }
        let entries = journal.entries();
        assert_eq!(entries.len(), MAX_ELECTIONS);
        assert_eq!(entries[0].term, 11);
        assert_eq!(entries.last().unwrap().term, MAX_ELECTIONS as u64 + 10);
    }
}
