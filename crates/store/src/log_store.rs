//! The Raft log, vote and committed index of one group, in sled trees `log` and `meta`.
//!
//! Log keys are the entry index as big-endian u64 so that sled's key order is log order;
//! values are the entry as JSON. Appends are acknowledged to openraft through the flusher
//! once fsynced; a vote is fsynced before `save_vote` returns; purge and truncate need no
//! flush of their own (a later flush covers them, and sled recovers writes in order).
//!
//! A purge records its point and returns; the entries at or below it are deleted on a
//! blocking thread. Deleting the ten thousand entries behind a snapshot took 0.2-0.5 s
//! under a surge, and openraft awaits a purge in its core loop: heartbeats stopped, and
//! on a 2-core host the async thread it held stalled the control group's too, long enough
//! for a site's lease to lapse (a failover from load alone). Readers never see an entry at
//! or below the point, deleted yet or not.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::GroupTypes;
use crate::{Error, Flusher, Result};

/// Largest encoded log entry the store accepts. The model's command limits keep real
/// entries far smaller (and requests are checked against them before anything is
/// proposed); hitting this is a bug, and the node stops rather than store it.
pub const MAX_ENCODED_ENTRY_BYTES: usize = 120 * 1024;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// Default bound of one AppendEntries' entries, as stored (see
/// [`LogStore::limit_payload_bytes`]).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Sentinel for "no committed index yet" in [`LogStore::committed_index`].
const NONE: u64 = u64::MAX;

/// A group's log store; cheap to clone (openraft's log reader is a clone).
pub struct LogStore<C: GroupTypes> {
    log: sled::Tree,
    meta: sled::Tree,
    flusher: Flusher,
    committed: Arc<AtomicU64>,
    /// The first index not purged (0: nothing purged yet).
    first_kept: Arc<AtomicU64>,
    elections: crate::ElectionJournal,
    max_payload_bytes: usize,
    _types: std::marker::PhantomData<C>,
}

impl<C: GroupTypes> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            log: self.log.clone(),
            meta: self.meta.clone(),
            flusher: self.flusher.clone(),
            committed: self.committed.clone(),
            first_kept: self.first_kept.clone(),
            elections: self.elections.clone(),
            max_payload_bytes: self.max_payload_bytes,
            _types: std::marker::PhantomData,
        }
    }
}

type StorageResult<T> = std::result::Result<T, StorageError<firebreak_model::NodeId>>;

impl<C: GroupTypes> LogStore<C> {
    pub(crate) fn open(db: &sled::Db, flusher: Flusher) -> Result<Self> {
        let open = |name: &str| {
            db.open_tree(name).map_err(|source| Error::Sled {
                path: name.into(),
                source,
            })
        };
        let store = Self {
            log: open("log")?,
            meta: open("meta")?,
            flusher,
            committed: Arc::new(AtomicU64::new(NONE)),
            first_kept: Arc::default(),
            elections: crate::ElectionJournal::default(),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            _types: std::marker::PhantomData,
        };
        let log_id = |key: &[u8], what: &str| -> Result<Option<LogId<firebreak_model::NodeId>>> {
            read_json(&store.meta, key).map_err(|e| Error::Corrupt {
                what: what.into(),
                reason: e.to_string(),
            })
        };
        let committed = log_id(COMMITTED, "committed index")?;
        let purged = log_id(LAST_PURGED, "purge point")?;
        store
            .committed
            .store(committed.map_or(NONE, |c| c.index), Ordering::Relaxed);
        store
            .first_kept
            .store(purged.map_or(0, |p| p.index + 1), Ordering::Relaxed);
        Ok(store)
    }

    /// Bounds what one AppendEntries carries to `bytes` of entries as stored (at least one
    /// entry is always sent). openraft asks for up to `max_payload_entries` entries per
    /// RPC and gives the RPC one heartbeat interval; bounding the bytes as well keeps a
    /// catch-up RPC of large entries within that on a slow link.
    pub fn limit_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes.max(1);
        self
    }

    /// The last committed index this node knows of, for status; `None` before the first.
    pub fn committed_index(&self) -> Option<u64> {
        match self.committed.load(Ordering::Relaxed) {
            NONE => None,
            index => Some(index),
        }
    }

    /// Becomes `Some(why)` once the store failed to make writes durable: the node must
    /// stop (see the flusher).
    pub fn failed(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.flusher.failed()
    }

    /// The journal of committed votes this store saved (who won which term).
    pub fn election_journal(&self) -> crate::ElectionJournal {
        self.elections.clone()
    }

    /// A handle that reads the committed index later, without the store.
    pub fn committed_index_handle(&self) -> CommittedIndex {
        CommittedIndex(self.committed.clone())
    }
}

/// Reads a group's committed index as the log store last saved it.
#[derive(Clone)]
pub struct CommittedIndex(Arc<AtomicU64>);

impl CommittedIndex {
    /// The committed index, `None` before the first commit.
    pub fn get(&self) -> Option<u64> {
        match self.0.load(Ordering::Relaxed) {
            NONE => None,
            index => Some(index),
        }
    }
}

fn key_range<RB: RangeBounds<u64>>(range: &RB) -> (Bound<[u8; 8]>, Bound<[u8; 8]>) {
    let key = |bound: Bound<&u64>| match bound {
        Bound::Included(i) => Bound::Included(index_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (key(range.start_bound()), key(range.end_bound()))
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn read_json<T: DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
) -> std::result::Result<Option<T>, std::io::Error> {
    match tree.get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(std::io::Error::other),
    }
}

fn write_json<T: Serialize>(
    tree: &sled::Tree,
    key: &[u8],
    value: &T,
) -> std::result::Result<(), std::io::Error> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    tree.insert(key, bytes)?;
    Ok(())
}

impl<C: GroupTypes> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<C::Entry>> {
        self.read_entries(range, usize::MAX)
    }

    /// Entries from `start` up to `end`, stopping before the one that would take them over
    /// the payload bound in bytes; never empty when the range is not.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> StorageResult<Vec<C::Entry>> {
        self.read_entries(start..end, self.max_payload_bytes)
    }
}

impl<C: GroupTypes> LogStore<C> {
    /// Reads entries of `range` in order until the next would take their stored size over
    /// `max_bytes`; the first entry is read whatever its size.
    fn read_entries<RB: RangeBounds<u64>>(
        &self,
        range: RB,
        max_bytes: usize,
    ) -> StorageResult<Vec<C::Entry>> {
        let mut entries = Vec::new();
        let mut bytes_read = 0usize;
        let (start, end) = key_range(&range);
        // Purged entries may still be on disk until their deletion ends: start after them.
        let first_kept = index_key(self.first_kept.load(Ordering::Relaxed));
        let start = match start {
            Bound::Included(k) | Bound::Excluded(k) if k >= first_kept => start,
            _ => Bound::Included(first_kept),
        };
        for item in self.log.range::<[u8; 8], _>((start, end)) {
            let (_, bytes) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            bytes_read = bytes_read.saturating_add(bytes.len());
            if !entries.is_empty() && bytes_read > max_bytes {
                break;
            }
            let entry: C::Entry =
                serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read_logs(&e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl<C: GroupTypes> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<C>> {
        let last_purged_log_id: Option<LogId<_>> =
            read_json(&self.meta, LAST_PURGED).map_err(|e| StorageIOError::read_logs(&e))?;
        let last = match self.log.last().map_err(|e| StorageIOError::read_logs(&e))? {
            None => None,
            Some((_, bytes)) => {
                let entry: C::Entry =
                    serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read_logs(&e))?;
                Some(entry.log_id)
            }
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> StorageResult<()> {
        write_json(&self.meta, VOTE, vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.flusher
            .flush()
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        if vote.is_committed() {
            if let Some(leader) = vote.leader_id().voted_for() {
                self.elections.record(crate::Elected {
                    term: vote.leader_id().get_term(),
                    leader,
                });
            }
        }
        Ok(())
    }

    /// openraft reads the vote once, at startup. It comes back uncommitted, so that a node
    /// that led before it stopped starts again as a follower and stands for election like
    /// anyone else: openraft 0.9 would restore a committed vote for itself as leadership at
    /// once, but a leader's own disk may lack entries that two followers made committed (a
    /// commit needs a quorum's flush, not the leader's own), and a leader restored after a
    /// power loss then wrote different entries under the same log ids (seen in
    /// `tests/blackout_store.rs`: an acknowledged write gone). The term and whom the node
    /// voted for, which is what safety rests on, are kept as they are.
    async fn read_vote(&mut self) -> StorageResult<Option<Vote<C::NodeId>>> {
        let vote: Option<Vote<C::NodeId>> =
            read_json(&self.meta, VOTE).map_err(|e| StorageIOError::read_vote(&e))?;
        Ok(vote.map(|mut vote| {
            vote.committed = false;
            vote
        }))
    }

    async fn save_committed(&mut self, committed: Option<LogId<C::NodeId>>) -> StorageResult<()> {
        // Not flushed on its own: a committed index that lags after a crash is only a
        // smaller starting point for re-applying the log.
        write_json(&self.meta, COMMITTED, &committed).map_err(|e| StorageIOError::write(&e))?;
        self.committed
            .store(committed.map_or(NONE, |c| c.index), Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<C::NodeId>>> {
        Ok(read_json::<Option<LogId<C::NodeId>>>(&self.meta, COMMITTED)
            .map_err(|e| StorageIOError::read(&e))?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> StorageResult<()>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            if bytes.len() > MAX_ENCODED_ENTRY_BYTES {
                let err = std::io::Error::other(format!(
                    "log entry {} is {} bytes, over the store's {MAX_ENCODED_ENTRY_BYTES}-byte limit",
                    entry.log_id, bytes.len()
                ));
                return Err(StorageIOError::write_logs(&err).into());
            }
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.flusher
            .then(move |result| callback.log_io_completed(result))
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> StorageResult<()> {
        tracing::debug!(group = C::NAME, since = log_id.index, "truncate log");
        self.remove_range(index_key(log_id.index).., "truncate")
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> StorageResult<()> {
        tracing::debug!(group = C::NAME, upto = log_id.index, "purge log");
        // Record the purge point first: openraft ignores entries at or below it, so a crash
        // between the two steps leaves only garbage, never a hole.
        write_json(&self.meta, LAST_PURGED, &log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        self.first_kept
            .fetch_max(log_id.index + 1, Ordering::Relaxed);
        let store = self.clone();
        // Off openraft's core loop and the async threads (module docs). A failed deletion
        // leaves garbage that readers skip and the next purge's range covers again.
        tokio::task::spawn_blocking(move || {
            if let Err(err) = store.remove_range(..=index_key(log_id.index), "purge") {
                tracing::warn!(group = C::NAME, upto = log_id.index, %err, "purged entries not deleted yet; the next purge retries");
            }
        });
        Ok(())
    }
}

impl<C: GroupTypes> LogStore<C> {
    fn remove_range(&self, range: impl RangeBounds<[u8; 8]>, what: &str) -> StorageResult<()> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(range) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(|e| {
            let err = std::io::Error::other(format!("failed to {what} the log: {e}"));
            StorageIOError::write_logs(&err)
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use firebreak_model::kv::KvCommand;
    use firebreak_model::NodeId;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader};

    use crate::types::StateTypes;

    /// A log of `count` entries of about `value_bytes` each, written straight to the tree.
    fn log_of(
        dir: &std::path::Path,
        count: u64,
        value_bytes: usize,
    ) -> super::LogStore<StateTypes> {
        let (log, _sm) = crate::open::<firebreak_model::kv::KvStore>(dir).unwrap();
        for index in 1..=count {
            let entry: Entry<StateTypes> = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, NodeId(1)), index),
                payload: EntryPayload::Normal(vec![KvCommand::Put {
                    key: format!("k{index}"),
                    value: "v".repeat(value_bytes),
                }]),
            };
            let bytes = serde_json::to_vec(&entry).unwrap();
            log.log.insert(super::index_key(index), bytes).unwrap();
        }
        log
    }

    #[tokio::test]
    async fn an_append_carries_at_most_its_payload_bytes() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut log = log_of(dir.path(), 64, 10_000).limit_payload_bytes(100_000);
        let sent = log.limited_get_log_entries(1, 65).await.unwrap();
        assert!(
            (9..=10).contains(&sent.len()),
            "about ten 10 KB entries fit in 100 KB, got {}",
            sent.len()
        );
        assert_eq!(
            sent[0].log_id.index, 1,
            "from the start of the range, in order"
        );
        let all = log.try_get_log_entries(1..65).await.unwrap();
        assert_eq!(all.len(), 64, "reads for other purposes are not bounded");
    }

    /// Opens the store in `dir`, waiting while the last handle's flusher still holds it.
    fn reopen(dir: &std::path::Path) -> super::LogStore<StateTypes> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match crate::open::<firebreak_model::kv::KvStore>(dir) {
                Ok((log, _sm)) => return log,
                Err(err) if std::time::Instant::now() < deadline => {
                    let _ = err;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(err) => panic!("the store did not open again: {err}"),
            }
        }
    }

    fn indexes(entries: &[Entry<StateTypes>]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn purged_entries_are_never_read_though_still_on_disk_and_are_deleted_in_the_background()
    {
        let dir = tempfile::TempDir::new().unwrap();
        {
            // A crash after the purge point was recorded, before the entries were deleted.
            let log = log_of(dir.path(), 10, 10);
            let point = LogId::new(CommittedLeaderId::new(1, NodeId(1)), 6);
            super::write_json(&log.meta, super::LAST_PURGED, &point).unwrap();
            log.flusher.flush().await.unwrap();
        }
        let mut log = reopen(dir.path());
        assert_eq!(log.log.len(), 10, "the entries are still on disk");
        let read = log.try_get_log_entries(1..11).await.unwrap();
        assert_eq!(indexes(&read), (7..=10).collect::<Vec<_>>());

        let point = LogId::new(CommittedLeaderId::new(1, NodeId(1)), 8);
        openraft::storage::RaftLogStorage::purge(&mut log, point)
            .await
            .unwrap();
        let read = log.try_get_log_entries(..).await.unwrap();
        assert_eq!(indexes(&read), vec![9, 10], "at once, deleted yet or not");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while log.log.len() != 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the purged entries were not deleted: {} left",
                log.log.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn an_entry_larger_than_the_bound_is_still_sent_alone() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut log = log_of(dir.path(), 4, 50_000).limit_payload_bytes(1_000);
        let sent = log.limited_get_log_entries(2, 5).await.unwrap();
        assert_eq!(sent.len(), 1, "never empty, or replication would stall");
        assert_eq!(sent[0].log_id.index, 2);
    }
}
