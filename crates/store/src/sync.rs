//! What must be fsynced for a sled Db's writes to survive a power loss, and in what order.
//!
//! ```text
//!   after Db::flush (which ends in sync_file_range: not durability):
//!     every blob file new or grown since the last sync ─► fdatasync
//!     blobs/  (its creates and removals)                ─► fsync, if anything changed
//!     the sled dir (snapshot renames, conf)             ─► fsync, if its names changed
//!     db                                                 ─► fdatasync
//! ```
//!
//! sled writes any page bigger than its blob threshold (a quarter of its segment size: a
//! leaf of a few large values is enough at sled's default) to a file of its own under
//! `blobs/` and never syncs it, nor the directory (RAFT-NOTES.md). New stores use 16 MiB
//! segments so that no page of ours reaches the threshold (`SEGMENT_BYTES`); the syncs
//! below are what makes it safe anyway. A blob is written completely before the log record that points to it,
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

/// A file or directory the sync needed could not be opened: the process (EMFILE) or the
/// system (ENFILE) has no file descriptor to spare. Nothing was written or lost, unlike a
/// failed fsync, so the flusher tries again instead of stopping the store.
#[derive(Debug, thiserror::Error)]
#[error("{path}: no file descriptor to open it with ({source})")]
pub struct OutOfDescriptors {
    pub path: PathBuf,
    pub source: io::Error,
}

/// Whether `err` is an [`OutOfDescriptors`].
pub fn out_of_descriptors(err: &io::Error) -> bool {
    err.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<OutOfDescriptors>().is_some())
}

/// An error from opening `path` for a sync: [`OutOfDescriptors`] for EMFILE and ENFILE,
/// else the error with its path.
fn opening(err: io::Error, path: &Path) -> io::Error {
    match err.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => io::Error::other(OutOfDescriptors {
            path: path.to_path_buf(),
            source: err,
        }),
        _ => with_path(err, path),
    }
}

/// fsyncs `dir` and its parent: a store's directory and its entry in the data dir.
pub(crate) fn sync_dir_and_parent(dir: &Path) -> crate::Result<()> {
    if sabotaged() {
        return Ok(());
    }
    for path in [Some(dir), dir.parent()].into_iter().flatten() {
        sync_dir(path).map_err(|source| crate::Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
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
    /// The sled dir's names as last synced (sled renames its own snapshot files there).
    names: Vec<OsString>,
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
            names: Vec::new(),
            skip: sabotaged(),
        })
    }

    /// Makes everything sled has written so far durable; call after `Db::flush`.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if self.skip {
            return Ok(());
        }
        if self.sync_blobs()? {
            sync_dir_opened(&self.blobs)?;
        }
        let names = list(&self.dir)?;
        if names != self.names {
            sync_dir_opened(&self.dir)?;
            self.names = names;
        }
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
            Err(e) => return Err(opening(e, &self.blobs)),
        };
        let mut now = HashMap::with_capacity(self.synced.len());
        let mut changed = false;
        for entry in entries {
            let entry = entry.map_err(|e| with_path(e, &self.blobs))?;
            let name = entry.file_name();
            let len = match entry.metadata() {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed since
                Err(e) => return Err(with_path(e, &entry.path())),
            };
            if self.synced.get(&name) != Some(&len) {
                let path = entry.path();
                match File::open(&path) {
                    Ok(file) => file.sync_data().map_err(|e| with_path(e, &path))?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(opening(e, &path)),
                }
                changed |= !self.synced.contains_key(&name);
            }
            now.insert(name, len);
        }
        changed |= self.synced.keys().any(|name| !now.contains_key(name));
        self.synced = now;
        Ok(changed)
    }
}

/// fsyncs a directory; a failure to open it is told apart from a failure to sync it.
fn sync_dir_opened(path: &Path) -> io::Result<()> {
    File::open(path)
        .map_err(|e| opening(e, path))?
        .sync_all()
        .map_err(|e| with_path(e, path))
}

/// The names in a directory, sorted.
fn list(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| opening(e, dir))? {
        names.push(entry.map_err(|e| with_path(e, dir))?.file_name());
    }
    names.sort();
    Ok(names)
}

/// An I/O error that names the file it happened to.
pub(crate) fn with_path(err: io::Error, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At sled's default segment size a leaf of large values goes to a blob file: every
    /// one of them must be synced (and tracked at its full length) by the time `sync`
    /// returns, before the `db` file.
    #[test]
    fn every_blob_file_sled_wrote_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let sled_dir = dir.path().join("sled");
        let db = sled::Config::new()
            .path(&sled_dir)
            .segment_size(512 * 1024)
            .flush_every_ms(None)
            .open()
            .unwrap();
        let mut files = SledFiles::open(&sled_dir).unwrap();
        let tree = db.open_tree("log").unwrap();
        for i in 0u64..64 {
            tree.insert(i.to_be_bytes(), vec![i as u8; 16 * 1024])
                .unwrap();
        }
        db.flush().unwrap();
        files.sync().unwrap();
        let on_disk: HashMap<OsString, u64> = std::fs::read_dir(sled_dir.join("blobs"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), e.metadata().unwrap().len())
            })
            .collect();
        assert!(
            !on_disk.is_empty(),
            "16 KiB values at 512 KiB segments make blob files"
        );
        assert_eq!(files.synced, on_disk);
    }

    fn conf(dir: &Path) -> String {
        String::from_utf8_lossy(&std::fs::read(dir.join("sled/conf")).unwrap()).into_owned()
    }

    #[test]
    fn new_stores_use_segments_too_big_for_any_of_our_pages_to_become_a_blob() {
        let dir = tempfile::tempdir().unwrap();
        drop(crate::open::<firebreak_model::kv::KvStore>(dir.path()).unwrap());
        let conf = conf(dir.path());
        assert!(
            conf.contains(&format!("segment_size: {}\n", crate::SEGMENT_BYTES)),
            "{conf}"
        );
        // 17 items (a leaf splits above 16) of the largest entry fit under a quarter.
        const { assert!(17 * crate::log_store::MAX_ENCODED_ENTRY_BYTES < crate::SEGMENT_BYTES / 4) };
    }

    #[test]
    fn a_store_made_with_sleds_default_segments_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let old = sled::Config::new()
            .path(dir.path().join("sled"))
            .open()
            .unwrap();
        old.flush().unwrap();
        drop(old);
        let (_log, _sm) = crate::open::<firebreak_model::kv::KvStore>(dir.path())
            .expect("sled refuses a changed segment size: the store keeps the old one");
        assert!(conf(dir.path()).contains("segment_size: 524288\n"));
    }
}
