//! A group's state machine: the model's pure machine in memory, its records in the sled
//! tree `sm`, and the current snapshot in a file.
//!
//! ```text
//!   apply(entries) ──► machine.apply() in memory ──► one sled batch: changed records,
//!                                                    last_applied, membership
//!                  ──► applied index published to readers (watchers wake up)
//!   build_snapshot ──► serialize machine ──► flush Db (records durable) ──► snapshot file
//!   install        ──► snapshot file ──► replace every record in one batch ──► flush Db
//!   open           ──► records; if the snapshot file is newer (crash mid-install), it wins
//! ```

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use firebreak_model::{Member, NodeId};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, RaftTypeConfig, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use tokio::sync::watch;

use crate::machine::{Change, Machine};
use crate::snapshot_file::{SnapshotFile, Written};
use crate::{Error, Flusher, Result};

const LAST_APPLIED: &[u8] = b"m:last_applied";
const MEMBERSHIP: &[u8] = b"m:membership";
const RECORD_PREFIX: &[u8] = b"d:";

type StorageResult<T> = std::result::Result<T, StorageError<NodeId>>;
type R<M> = <<M as Machine>::Types as RaftTypeConfig>::R;

/// The machine and what openraft needs to know about how far it got.
struct Applied<M> {
    machine: M,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Member>,
}

struct Shared<M> {
    applied: RwLock<Applied<M>>,
    tree: sled::Tree,
    flusher: Flusher,
    snapshot: SnapshotFile,
    /// The last applied index, for readers waiting on progress (watch, linearizable reads).
    applied_index: watch::Sender<u64>,
}

/// A group's state-machine store; openraft's snapshot builder is a clone.
pub struct StateMachineStore<M: Machine> {
    shared: Arc<Shared<M>>,
}

impl<M: Machine> Clone for StateMachineStore<M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

/// Read access to a group's applied state, for the node's API.
pub struct MachineReader<M: Machine> {
    shared: Arc<Shared<M>>,
}

impl<M: Machine> Clone for MachineReader<M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<M: Machine> MachineReader<M> {
    /// Reads the machine under a short lock; do not block inside `f`.
    pub fn read<T>(&self, f: impl FnOnce(&M) -> T) -> T {
        f(&self.lock().machine)
    }

    /// The index of the last applied entry (0 before any).
    pub fn applied_index(&self) -> u64 {
        *self.shared.applied_index.borrow()
    }

    /// A receiver that changes whenever entries are applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.applied_index.subscribe()
    }

    fn lock(&self) -> RwLockReadGuard<'_, Applied<M>> {
        self.shared
            .applied
            .read()
            .expect("state machine lock poisoned: a panic while applying")
    }
}

fn record_key(key: &[u8]) -> Vec<u8> {
    [RECORD_PREFIX, key].concat()
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store metadata always serializes")
}

impl<M: Machine> StateMachineStore<M> {
    pub(crate) fn open(db: &sled::Db, flusher: Flusher, dir: &Path) -> Result<Self> {
        let tree = db.open_tree("sm").map_err(|source| Error::Sled {
            path: dir.join("sm"),
            source,
        })?;
        let corrupt = |reason: String| Error::Corrupt {
            what: "state machine records".into(),
            reason,
        };
        let mut records = BTreeMap::new();
        let mut last_applied = None;
        let mut membership = StoredMembership::default();
        for item in tree.iter() {
            let (key, value) = item.map_err(|source| Error::Sled {
                path: dir.join("sm"),
                source,
            })?;
            if key == LAST_APPLIED {
                last_applied =
                    serde_json::from_slice(&value).map_err(|e| corrupt(e.to_string()))?;
            } else if key == MEMBERSHIP {
                membership = serde_json::from_slice(&value).map_err(|e| corrupt(e.to_string()))?;
            } else if let Some(record) = key.strip_prefix(RECORD_PREFIX) {
                records.insert(record.to_vec(), value.to_vec());
            }
        }
        let machine = M::load(records).map_err(corrupt)?;
        let applied_index = last_applied.map_or(0, |l: LogId<NodeId>| l.index);
        let store = Self {
            shared: Arc::new(Shared {
                applied: RwLock::new(Applied {
                    machine,
                    last_applied,
                    membership,
                }),
                tree,
                flusher,
                snapshot: SnapshotFile::open(dir)?,
                applied_index: watch::Sender::new(applied_index),
            }),
        };
        // A crash between writing a received snapshot and rewriting the records leaves the
        // snapshot newer than the records: finish the install now.
        if let Some((meta, data)) = store.shared.snapshot.read()? {
            if meta.last_log_id > store.write_lock().last_applied {
                tracing::info!(snapshot = %meta.snapshot_id, "restoring state from snapshot newer than records");
                let machine: M =
                    serde_json::from_slice(&data).map_err(|e| corrupt(e.to_string()))?;
                store
                    .replace(&meta, machine)
                    .map_err(|e| corrupt(e.to_string()))?;
            }
        }
        Ok(store)
    }

    /// A read handle for the node's API.
    pub fn reader(&self) -> MachineReader<M> {
        MachineReader {
            shared: self.shared.clone(),
        }
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, Applied<M>> {
        self.shared
            .applied
            .write()
            .expect("state machine lock poisoned: a panic while applying")
    }

    /// Replaces the machine and all its records with a snapshot's, in one sled batch.
    fn replace(&self, meta: &SnapshotMeta<NodeId, Member>, machine: M) -> std::io::Result<()> {
        let mut applied = self.write_lock();
        let mut batch = sled::Batch::default();
        for item in self.shared.tree.iter().keys() {
            batch.remove(item.map_err(std::io::Error::from)?);
        }
        for Change { key, value } in machine.dump() {
            if let Some(value) = value {
                batch.insert(record_key(&key), value);
            }
        }
        batch.insert(LAST_APPLIED, to_json(&meta.last_log_id));
        batch.insert(MEMBERSHIP, to_json(&meta.last_membership));
        self.shared
            .tree
            .apply_batch(batch)
            .map_err(std::io::Error::from)?;
        *applied = Applied {
            machine,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.shared
            .applied_index
            .send_replace(meta.last_log_id.map_or(0, |l| l.index));
        Ok(())
    }
}

impl<M: Machine> RaftSnapshotBuilder<M::Types> for StateMachineStore<M> {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<M::Types>> {
        // Copy under the lock, serialize and write outside it, all off the async workers:
        // a large state must not stall apply, heartbeats or client requests meanwhile (the
        // copy of a 5 MB state took 0.2 s under a surge).
        let shared = self.shared.clone();
        let (machine, last_log_id, last_membership) = tokio::task::spawn_blocking(move || {
            let applied = shared.applied.read().expect("state machine lock poisoned");
            (
                applied.machine.clone(),
                applied.last_applied,
                applied.membership.clone(),
            )
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &std::io::Error::other(e)))?;
        let snapshot_id = match last_log_id {
            Some(log_id) => format!("{}-{}", log_id.leader_id, log_id.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let signature = Some(meta.signature());
        // The records must be durable up to the snapshot before openraft may purge the log
        // that could otherwise rebuild them.
        self.shared
            .flusher
            .flush()
            .await
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
        let shared = self.shared.clone();
        let (meta, data) = tokio::task::spawn_blocking(move || {
            let data = serde_json::to_vec(&machine).map_err(std::io::Error::other)?;
            let written = shared
                .snapshot
                .write(&meta, &data)
                .map_err(std::io::Error::other)?;
            if written == Written::KeptNewer {
                tracing::info!(snapshot = %meta.snapshot_id, "built snapshot is older than the one on disk (installed meanwhile); kept that one");
            }
            Ok::<_, std::io::Error>((meta, data))
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &std::io::Error::other(e)))?
        .map_err(|e| StorageIOError::write_snapshot(signature, &e))?;
        tracing::info!(group = <M::Types as crate::GroupTypes>::NAME, snapshot = %meta.snapshot_id, bytes = data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl<M: Machine> RaftStateMachine<M::Types> for StateMachineStore<M> {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>)> {
        let applied = self.write_lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<R<M>>>
    where
        I: IntoIterator<Item = <M::Types as RaftTypeConfig>::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let mut changes = Vec::new();
        let mut applied = self.write_lock();
        let mut membership_changed = false;
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            responses.push(match entry.payload {
                EntryPayload::Blank => M::empty_response(),
                EntryPayload::Normal(command) => applied.machine.apply(&command, &mut changes),
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    membership_changed = true;
                    M::empty_response()
                }
            });
        }
        let mut batch = sled::Batch::default();
        for Change { key, value } in changes {
            match value {
                Some(value) => batch.insert(record_key(&key), value),
                None => batch.remove(record_key(&key)),
            }
        }
        batch.insert(LAST_APPLIED, to_json(&applied.last_applied));
        if membership_changed {
            batch.insert(MEMBERSHIP, to_json(&applied.membership));
        }
        // A failed write here cannot be retried deterministically: return the error, which
        // stops the Raft node, rather than let this replica drift from the others.
        self.shared
            .tree
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        let index = applied.last_applied.map_or(0, |l| l.index);
        drop(applied);
        self.shared.applied_index.send_replace(index);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let signature = Some(meta.signature());
        let store = self.clone();
        let owned_meta = meta.clone();
        // Decoding, writing and replacing every record is heavy: keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            // Decode before touching anything, so a bad snapshot changes nothing.
            let machine: M = serde_json::from_slice(&data).map_err(std::io::Error::other)?;
            let written = store
                .shared
                .snapshot
                .write(&owned_meta, &data)
                .map_err(std::io::Error::other)?;
            if written == Written::KeptNewer {
                tracing::warn!(snapshot = %owned_meta.snapshot_id, "received snapshot is not newer than the one on disk; kept that one");
                return Ok(());
            }
            store.replace(&owned_meta, machine)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &std::io::Error::other(e)))?
        .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
        self.shared
            .flusher
            .flush()
            .await
            .map_err(|e| StorageIOError::write_snapshot(signature, &e))?;
        tracing::info!(group = <M::Types as crate::GroupTypes>::NAME, snapshot = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<M::Types>>> {
        let shared = self.shared.clone();
        let current = tokio::task::spawn_blocking(move || shared.snapshot.read())
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &std::io::Error::other(e)))?
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(current.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
