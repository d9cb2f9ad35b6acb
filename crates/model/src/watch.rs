//! A bounded history of key-value events, so that a watcher can resume from a revision.
//!
//! The history lives in memory on every replica, filled as entries are applied. It holds
//! the newest `capacity` events; a watcher asking for a revision older than that gets
//! `Compacted` with the oldest revision still held and must re-read the keys it cares
//! about, as with etcd's compaction. After a restart the history starts empty at the
//! restored revision: it is a convenience for live watchers, not a durable change feed.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::kv::KvEntry;

/// How many events a replica keeps for watchers by default.
pub const WATCH_HISTORY_CAPACITY: usize = 10_000;

/// Most events returned by one watch call; the caller asks again from the next revision.
pub const MAX_WATCH_EVENTS: usize = 1_000;

/// What happened to a key at a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEvent {
    /// The revision the change was committed at; events of one transaction share it.
    pub revision: u64,
    /// `put` or `delete`.
    pub kind: KvEventKind,
    /// The key that changed.
    pub key: String,
    /// The new entry for a put; `None` for a delete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<KvEntry>,
}

/// The two ways a key can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvEventKind {
    /// The key was created or overwritten.
    Put,
    /// The key was removed.
    Delete,
}

/// The revision a watcher asked for is older than the history holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("revision {requested} is compacted; the oldest revision held is {oldest}")]
pub struct Compacted {
    /// What the watcher asked for.
    pub requested: u64,
    /// The oldest revision a watch can start from now.
    pub oldest: u64,
}

/// The newest events, oldest first, with the revision from which the history is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchLog {
    capacity: usize,
    /// Every event with a revision at or above this one is held (or has not happened yet).
    first_revision: u64,
    events: VecDeque<KvEvent>,
}

impl WatchLog {
    /// An empty history that is complete from `first_revision` on.
    pub fn new(capacity: usize, first_revision: u64) -> Self {
        assert!(
            capacity > 0,
            "a watch history needs room for at least one event"
        );
        Self {
            capacity,
            first_revision,
            events: VecDeque::new(),
        }
    }

    /// The oldest revision a watch can start from.
    pub fn first_revision(&self) -> u64 {
        self.first_revision
    }

    /// Records an event; drops the oldest revision's events when full.
    pub fn push(&mut self, event: KvEvent) {
        debug_assert!(
            event.revision >= self.first_revision,
            "events arrive in revision order"
        );
        self.events.push_back(event);
        while self.events.len() > self.capacity {
            let dropped = self
                .events
                .pop_front()
                .expect("non-empty: len > capacity > 0");
            // Drop the whole revision so that a watcher never sees half a transaction.
            while self
                .events
                .front()
                .is_some_and(|e| e.revision == dropped.revision)
            {
                self.events.pop_front();
            }
            self.first_revision = dropped.revision + 1;
        }
    }

    /// Events at or after `from_revision` whose key starts with `prefix`, at most `limit`,
    /// never splitting a revision unless it alone exceeds `limit`.
    pub fn since(
        &self,
        from_revision: u64,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<KvEvent>, Compacted> {
        if from_revision < self.first_revision {
            return Err(Compacted {
                requested: from_revision,
                oldest: self.first_revision,
            });
        }
        let start = self.events.partition_point(|e| e.revision < from_revision);
        let mut out: Vec<KvEvent> = Vec::new();
        for event in self.events.range(start..) {
            if !event.key.starts_with(prefix) {
                continue;
            }
            if out.len() >= limit
                && out
                    .last()
                    .is_some_and(|last| last.revision != event.revision)
            {
                break;
            }
            out.push(event.clone());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(revision: u64, key: &str) -> KvEvent {
        KvEvent {
            revision,
            kind: KvEventKind::Put,
            key: key.into(),
            entry: None,
        }
    }

    #[test]
    fn since_filters_by_revision_and_prefix() {
        let mut log = WatchLog::new(10, 1);
        for (rev, key) in [(1, "a/1"), (2, "b/1"), (3, "a/2")] {
            log.push(put(rev, key));
        }
        let keys: Vec<_> = log
            .since(2, "a/", 10)
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, vec!["a/2"]);
        assert!(log.since(4, "", 10).unwrap().is_empty());
    }

    #[test]
    fn full_history_drops_whole_revisions_and_reports_compaction() {
        let mut log = WatchLog::new(2, 1);
        log.push(put(1, "a"));
        log.push(put(2, "b"));
        log.push(put(2, "c"));
        // Revision 1 went, and with capacity 2 the two events of revision 2 remain.
        assert_eq!(log.first_revision(), 2);
        assert_eq!(
            log.since(1, "", 10),
            Err(Compacted {
                requested: 1,
                oldest: 2
            })
        );
        log.push(put(3, "d"));
        // Dropping one event of revision 2 drops both.
        assert_eq!(log.first_revision(), 3);
        assert_eq!(log.since(3, "", 10).unwrap().len(), 1);
    }

    #[test]
    fn limit_never_splits_a_revision() {
        let mut log = WatchLog::new(10, 1);
        log.push(put(1, "a"));
        log.push(put(2, "b"));
        log.push(put(2, "c"));
        log.push(put(3, "d"));
        let got = log.since(1, "", 2).unwrap();
        assert_eq!(
            got.iter().map(|e| e.revision).collect::<Vec<_>>(),
            vec![1, 2, 2]
        );
    }
}
