//! What must be fsynced for a sled Db's writes to survive a power loss, and in what order.
//!
//! ```text
//!   after Db::flush (which ends in sync_file_range: not durability):
//!     every blob file new or grown since the last sync ─► fdatasync
//!     blobs/  (its creates and removals)                ─► fsync, if anything changed
//!     the sled dir (snapshot renames, conf)             ─► fsync
//!     db                                                 ─► fdatasync
//! ```
//!
//! sled writes any page bigger than its blob threshold (a leaf of a few large values is
//! enough) to a file of its own under `blobs/` and never syncs it, nor the directory
//! (RAFT-NOTES.md). A blob is written completely before the log record that points to it,
//! so once `Db::flush` returns, every blob a flushed record points to is whole on the page
//! cache; syncing the blobs and their directory before the `db` file means no durable
//! record can point at a blob a power loss took.
//!
//! Caveat: one fsync of `blobs/` makes sled's removals of superseded blobs durable together
//! with the new ones, a moment before the `db` sync that makes the superseding pages
//! durable; a power loss inside that moment could leave a durable page whose blob is gone.
//! sled removes a blob only once the segment holding its replacement is sealed, so the
//! window is one flush wide.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// fsyncs a directory, so that the names in it (creates, renames, removals) survive.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Test-only sabotage, in debug builds alone: with `FIREBREAK_SABOTAGE_SKIP_FSYNC` set, the
/// store skips every fsync, to prove that the power-loss drills catch a missing one.
/// Release builds compile it out.
pub fn sabotaged() -> bool {
    cfg!(debug_assertions) && std::env::var_os("FIREBREAK_SABOTAGE_SKIP_FSYNC").is_some()
}

/// The files of one sled Db that the flusher makes durable.
pub(crate) struct SledFiles {
    db: File,
    dir: PathBuf,
    blobs: PathBuf,
    /// Blob files as last synced, with their length then (a blob still being written when
    /// it was listed is synced again once it grew).
    synced: HashMap<OsString, u64>,
    skip: bool,
}

impl SledFiles {
    /// Opens the `db` file of the sled dir `dir`.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        Ok(Self {
            db: File::open(dir.join("db"))?,
            dir: dir.to_path_buf(),
            blobs: dir.join("blobs"),
            synced: HashMap::new(),
            skip: sabotaged(),
        })
    }

    /// Makes everything sled has written so far durable; call after `Db::flush`.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if self.skip {
            return Ok(());
        }
        if self.sync_blobs()? {
            sync_dir(&self.blobs).map_err(|e| with_path(e, &self.blobs))?;
        }
        sync_dir(&self.dir).map_err(|e| with_path(e, &self.dir))?;
        self.db
            .sync_data()
            .map_err(|e| with_path(e, &self.dir.join("db")))
    }

    /// fdatasyncs every blob file new or grown since the last sync; says whether the
    /// directory changed (a file came or went).
    fn sync_blobs(&mut self) -> io::Result<bool> {
        let entries = match std::fs::read_dir(&self.blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(with_path(e, &self.blobs)),
        };
        let mut now = HashMap::with_capacity(self.synced.len());
        let mut changed = false;
        for entry in entries {
            let entry = entry.map_err(|e| with_path(e, &self.blobs))?;
            let name = entry.file_name();
            let path = entry.path();
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed since
                Err(e) => return Err(with_path(e, &path)),
            };
            let len = file.metadata().map_err(|e| with_path(e, &path))?.len();
            if self.synced.get(&name) != Some(&len) {
                file.sync_data().map_err(|e| with_path(e, &path))?;
                changed |= !self.synced.contains_key(&name);
            }
            now.insert(name, len);
        }
        changed |= self.synced.keys().any(|name| !now.contains_key(name));
        self.synced = now;
        Ok(changed)
    }
}

/// An I/O error that names the file it happened to.
pub(crate) fn with_path(err: io::Error, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}
