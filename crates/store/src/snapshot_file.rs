//! The current snapshot of a group, as one file replaced atomically.
//!
//! Layout: an 8-byte little-endian length, the snapshot's meta as JSON, then the data.
//! Written to `snapshot.tmp`, fsynced, renamed over `snapshot`, and the directory fsynced:
//! after a crash the file is the old snapshot or the new one, never a mix.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use firebreak_model::{Member, NodeId};
use openraft::SnapshotMeta;

use crate::{Error, Result};

/// Largest snapshot meta accepted when reading (it holds a membership, so it is small).
const MAX_META_BYTES: u64 = 1024 * 1024;

/// Where a group keeps its current snapshot.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotFile {
    dir: PathBuf,
}

pub(crate) type Meta = SnapshotMeta<NodeId, Member>;

impl SnapshotFile {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("snapshot")
    }

    fn io(&self, path: PathBuf) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { path, source }
    }

    /// Replaces the current snapshot, durably.
    pub(crate) fn write(&self, meta: &Meta, data: &[u8]) -> Result<()> {
        let tmp = self.dir.join("snapshot.tmp");
        let meta_bytes = serde_json::to_vec(meta).expect("snapshot meta always serializes");
        let mut file = File::create(&tmp).map_err(self.io(tmp.clone()))?;
        file.write_all(&(meta_bytes.len() as u64).to_le_bytes())
            .map_err(self.io(tmp.clone()))?;
        file.write_all(&meta_bytes).map_err(self.io(tmp.clone()))?;
        file.write_all(data).map_err(self.io(tmp.clone()))?;
        file.sync_all().map_err(self.io(tmp.clone()))?;
        fs::rename(&tmp, self.path()).map_err(self.io(self.path()))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(self.io(self.dir.clone()))?;
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
