//! Durable storage for firebreak's Raft groups: openraft's storage-v2 traits on sled.
//!
//! ```text
//!   openraft ──append──► LogStore ──insert──► sled tree `log` ─┐
//!            ──vote────►          ──insert──► sled tree `meta` ├─► one sled Db per group
//!            ──apply───► StateMachineStore ─► sled tree `sm`  ─┘        │
//!                              │ (machine in memory, records on disk)   │
//!                              └─ snapshot file (fsynced, renamed)      ▼
//!                                               Flusher thread: Db::flush, then fdatasync
//!                                               blobs, fsync blobs/ and sled/, fdatasync db;
//!                                               then every waiting callback fires
//! ```
//!
//! Invariants:
//! - An appended entry is reported flushed to openraft (and so may be acknowledged) only
//!   after sled wrote it *and* every file it may live in was fsynced: sled's own flush ends
//!   in `sync_file_range`, which is not an fsync, and its blob files are never synced by
//!   sled (RAFT-NOTES.md; see `sync.rs`). A vote is durable before `save_vote` returns.
//! - A failed flush or fsync stops the store for good ("fsyncgate"): nothing later is
//!   acknowledged, and `Flusher::failed` tells the node to exit.
//! - Every flush of a Db goes through its one [`Flusher`] thread, which also batches
//!   concurrent waiters into one fsync (group commit); sled's own periodic flusher is off.
//! - Large pages go to sled's blob files, which the flusher syncs like the rest; log
//!   entries are still bounded (the model's command limits, checked here), and snapshots
//!   live in their own file: written to a unique temporary name, fsynced, renamed, one
//!   writer at a time, never over a newer one.
//! - The state machine's records reach sled in one atomic batch per apply call, together
//!   with `last_applied`; they are not fsynced on apply (the log they came from is), but
//!   they are before a snapshot lets openraft purge that log.
//!
//! Not done here: choosing when to snapshot or purge (openraft's policy, set by the node),
//! compaction of sled's own files (sled has space amplification, RAFT-NOTES.md).

// openraft's trait signatures fix `StorageError` (224 bytes) as the error type.
#![allow(clippy::result_large_err)]

mod elections;
mod error;
mod flusher;
pub mod log_store;
mod machine;
mod snapshot_file;
mod state_machine;
pub mod sync;
pub mod types;

pub use elections::{Elected, ElectionJournal, MAX_ELECTIONS};
pub use error::{Error, Result};
pub use flusher::{Flusher, OPEN_RETRY_FOR, SYNC_RETRIES};
pub use log_store::LogStore;
pub use machine::{Change, Machine};
pub use state_machine::{MachineReader, StateMachineStore};
pub use types::{ControlTypes, GroupTypes, StateTypes};

use std::path::Path;

/// Default sled page cache per group; the stores keep their own state in memory, so sled
/// needs little.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// sled's IO buffer and segment size for new stores: 16 MiB, sled's maximum. sled writes a
/// page bigger than a quarter of it (4 MiB) to a blob file of its own; a leaf splits at 17
/// items, and every value we store is bounded (log entries 120 KiB, records less), so no
/// page comes near: blob files, and their fsyncs, stay out of the write path. The flusher
/// still syncs any blob (a store made with sled's 512 KiB default keeps that size, as sled
/// refuses a change, and has blobs).
pub const SEGMENT_BYTES: usize = 16 * 1024 * 1024;

/// The segment size an existing sled dir was made with (sled's `conf` file holds lines
/// such as `segment_size: N`, then a 4-byte checksum), or [`SEGMENT_BYTES`] for a new one.
fn segment_size(sled_dir: &Path) -> usize {
    std::fs::read(sled_dir.join("conf"))
        .ok()
        .and_then(|conf| {
            String::from_utf8_lossy(&conf)
                .lines()
                .find_map(|line| line.strip_prefix("segment_size: "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(SEGMENT_BYTES)
}

/// Opens (or creates) the storage of one Raft group in `dir`: its log store and state
/// machine, sharing one sled Db and one flusher.
pub fn open<M: Machine>(dir: &Path) -> Result<(LogStore<M::Types>, StateMachineStore<M>)> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let db = sled::Config::new()
        .path(dir.join("sled"))
        .segment_size(segment_size(&dir.join("sled")))
        .cache_capacity(DEFAULT_CACHE_BYTES)
        .flush_every_ms(None)
        .open()
        .map_err(|source| Error::Sled {
            path: dir.join("sled"),
            source,
        })?;
    let flusher = Flusher::spawn(db.clone(), &dir.join("sled"))?;
    // The group's directory and its `sled` must be named durably too, or a power loss
    // leaves an empty data dir that starts as a brand-new node.
    sync::sync_dir_and_parent(dir)?;
    let log = LogStore::open(&db, flusher.clone())?;
    let sm = StateMachineStore::open(&db, flusher, dir)?;
    Ok((log, sm))
}

#[cfg(test)]
mod tests;
