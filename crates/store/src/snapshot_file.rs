//! The current snapshot of a group, as one file replaced atomically.
//!
//! Layout: an 8-byte little-endian length, the snapshot's meta as JSON, then the data.
//! Written to a temporary name of its own, fsynced, renamed over `snapshot`, and the
//! directory fsynced: after a crash the file is the old snapshot or the new one, never a
//! mix.
//!
//! openraft builds and installs snapshots concurrently: writers take turns on one lock,
//! and a snapshot older than the current one is never written over it (a slow build
//! finishing after a newer install keeps the install).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use firebreak_model::{Member, NodeId};
use openraft::{LogId, SnapshotMeta};

use crate::{Error, Result};

/// Largest snapshot meta accepted when reading (it holds a membership, so it is small).
const MAX_META_BYTES: u64 = 1024 * 1024;
/// Prefix of temporary snapshot files; leftovers of a crash are removed at open.
const TMP_PREFIX: &str = "snapshot.tmp.";

/// Where a group keeps its current snapshot.
#[derive(Debug)]
pub(crate) struct SnapshotFile {
    dir: PathBuf,
    /// The last log id of the snapshot on disk; held while writing, so writers take turns.
    current: Mutex<Option<LogId<NodeId>>>,
    next_tmp: AtomicU64,
}

pub(crate) type Meta = SnapshotMeta<NodeId, Member>;

/// What a write did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Written {
    Replaced,
    /// The file on disk is newer (or the same): it was kept.
    KeptNewer,
}

impl SnapshotFile {
    /// The snapshot file of `dir`; removes temporary files a crash left behind.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let file = Self {
            dir: dir.to_path_buf(),
            current: Mutex::new(None),
            next_tmp: AtomicU64::new(0),
        };
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let on_disk = file.read()?.and_then(|(meta, _)| meta.last_log_id);
        *file.current.lock().expect("snapshot lock") = on_disk;
        Ok(file)
    }

    fn path(&self) -> PathBuf {
        self.dir.join("snapshot")
    }

    fn io(&self, path: PathBuf) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { path, source }
    }

    /// Replaces the current snapshot, durably, unless the one on disk is as new or newer.
    pub(crate) fn write(&self, meta: &Meta, data: &[u8]) -> Result<Written> {
        let mut current = self.current.lock().expect("snapshot lock poisoned");
        if current.is_some() && *current >= meta.last_log_id {
            return Ok(Written::KeptNewer);
        }
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{}.{n}", std::process::id()));
        let written = self.write_tmp(&tmp, meta, data).and_then(|()| {
            fs::rename(&tmp, self.path()).map_err(self.io(self.path()))?;
            if !crate::sync::sabotaged() {
                crate::sync::sync_dir(&self.dir).map_err(self.io(self.dir.clone()))?;
            }
            Ok(())
        });
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        *current = meta.last_log_id;
        Ok(Written::Replaced)
    }

    fn write_tmp(&self, tmp: &Path, meta: &Meta, data: &[u8]) -> Result<()> {
        let meta_bytes = serde_json::to_vec(meta).expect("snapshot meta always serializes");
        let io = || self.io(tmp.to_path_buf());
        let mut file = File::create(tmp).map_err(io())?;
        file.write_all(&(meta_bytes.len() as u64).to_le_bytes())
            .map_err(io())?;
        file.write_all(&meta_bytes).map_err(io())?;
        file.write_all(data).map_err(io())?;
        if !crate::sync::sabotaged() {
            file.sync_all().map_err(io())?;
        }
        Ok(())
    }

    /// The current snapshot's meta and data, if there is one.
    pub(crate) fn read(&self) -> Result<Option<(Meta, Vec<u8>)>> {
        let path = self.path();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path, source }),
        };
        let corrupt = |reason: String| Error::Corrupt {
            what: format!("snapshot {}", path.display()),
            reason,
        };
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .map_err(|e| corrupt(e.to_string()))?;
        let len = u64::from_le_bytes(len);
        if len > MAX_META_BYTES {
            return Err(corrupt(format!(
                "meta length {len} is over {MAX_META_BYTES}"
            )));
        }
        let mut meta_bytes = vec![0u8; len as usize];
        file.read_exact(&mut meta_bytes)
            .map_err(|e| corrupt(e.to_string()))?;
        let meta: Meta = serde_json::from_slice(&meta_bytes).map_err(|e| corrupt(e.to_string()))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(Some((meta, data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, StoredMembership};

    fn meta(index: u64) -> Meta {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, NodeId(1)), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("s-{index}"),
        }
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap();
        assert_eq!(
            file.write(&meta(20), b"installed").unwrap(),
            Written::Replaced
        );
        assert_eq!(
            file.write(&meta(10), b"slow build").unwrap(),
            Written::KeptNewer
        );
        let (on_disk, data) = file.read().unwrap().unwrap();
        assert_eq!(on_disk.snapshot_id, "s-20");
        assert_eq!(data, b"installed");
        // The same holds across a restart.
        let reopened = SnapshotFile::open(dir.path()).unwrap();
        assert_eq!(
            reopened.write(&meta(15), b"late").unwrap(),
            Written::KeptNewer
        );
        assert_eq!(
            reopened.write(&meta(30), b"newer").unwrap(),
            Written::Replaced
        );
    }

    #[test]
    fn concurrent_writers_leave_the_newest_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::sync::Arc::new(SnapshotFile::open(dir.path()).unwrap());
        let writers: Vec<_> = (1..=16u64)
            .map(|i| {
                let file = file.clone();
                std::thread::spawn(move || file.write(&meta(i), &vec![i as u8; 100_000]).unwrap())
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let (on_disk, data) = file.read().unwrap().unwrap();
        assert_eq!(on_disk.snapshot_id, "s-16");
        assert_eq!(data, vec![16u8; 100_000]);
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["snapshot".to_string()]);
    }
}
