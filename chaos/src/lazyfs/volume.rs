//! The volume behind a drop-unsynced mount: what a process sees now, what would survive a
//! power loss, and the difference between them.
//!
//! ```text
//!   write ──► dirty pages (memory) ──fsync(file)──► backing/<ino> (durable content)
//!   create, unlink, rename ──► entries (memory) ──fsync(dir)──► durable entries
//!   power_loss ──► every file back to its durable content, every directory back to its
//!                  durable entries, whatever is no longer reachable from the root deleted
//! ```
//!
//! Invariants:
//! - A byte written is durable only once its file was fsynced (or fdatasynced) since; a
//!   create, rename or unlink only once its directory was fsynced since (LazyFS semantics;
//!   `sync_file_range` has no FUSE opcode, so nothing else makes data durable).
//! - Bytes at or above `floor` that no write touched since the last fsync read as zero:
//!   they were truncated away or are a hole, whatever the backing file still holds.
//! - Memory holds only unsynced pages: synced content lives in the backing files, and
//!   pages of a file no name and no open handle reaches are dropped at once.
//!
//! Not modelled: hard links, symlinks, special files, torn writes inside a page, xattrs.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Unit of unsynced data kept in memory.
pub const PAGE_BYTES: u64 = 4096;
/// The root directory's inode number (FUSE's).
pub const ROOT: u64 = 1;
/// Most unsynced bytes a volume holds before writes fail with ENOSPC: a bound on the
/// drill's memory, far above what a node writes between two fsyncs.
pub const MAX_DIRTY_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// What a power loss threw away, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Discarded {
    /// Unsynced bytes written and lost (whole pages, clipped to the file's size).
    pub bytes: u64,
    /// Files and directories whose unsynced content or names were lost.
    pub files: u64,
}

/// Why an operation failed, as the errno FUSE hands back.
pub type Errno = libc::c_int;

/// A file's content: durable in the backing file, unsynced in memory.
#[derive(Debug, Default)]
pub struct FileData {
    pub size: u64,
    durable_size: u64,
    floor: u64,
    dirty: BTreeMap<u64, Box<[u8]>>,
}

/// A directory's names now and as of its last fsync.
#[derive(Debug, Default)]
pub struct DirData {
    parent: u64,
    pub entries: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
}

#[derive(Debug)]
pub enum Kind {
    File(FileData),
    Dir(DirData),
}

#[derive(Debug)]
pub struct Inode {
    pub kind: Kind,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    /// Names that reach it now.
    links: u32,
    /// Durable names that reach it.
    durable_links: u32,
    /// Open handles.
    open: u32,
}

/// A whole volume: inodes in memory, durable file content under `backing`.
#[derive(Debug)]
pub struct Volume {
    backing: PathBuf,
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    dirty_bytes: u64,
    /// Test switch: every fsync fails with EIO (a dying disk), and syncs nothing.
    pub fail_fsync: bool,
    /// Grows at every power loss; a mount serves one generation (see the FUSE adapter).
    pub generation: u64,
}

impl Volume {
    /// An empty volume whose durable file content goes to files in `backing`.
    pub fn new(backing: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(backing)?;
        let mut inodes = HashMap::new();
        let mut root = Inode::new(Kind::Dir(DirData::default()), 0o755, 0, 0);
        root.links = 1;
        root.durable_links = 1;
        if let Kind::Dir(d) = &mut root.kind {
            d.parent = ROOT;
        }
        inodes.insert(ROOT, root);
        Ok(Self {
            backing: backing.to_path_buf(),
            inodes,
            next_ino: ROOT + 1,
            dirty_bytes: 0,
            fail_fsync: false,
            generation: 0,
        })
    }

    pub fn get(&self, ino: u64) -> Result<&Inode, Errno> {
        self.inodes.get(&ino).ok_or(libc::ENOENT)
    }

    fn dir(&self, ino: u64) -> Result<&DirData, Errno> {
        match &self.get(ino)?.kind {
            Kind::Dir(d) => Ok(d),
            Kind::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut DirData, Errno> {
        match &mut self.inodes.get_mut(&ino).ok_or(libc::ENOENT)?.kind {
            Kind::Dir(d) => Ok(d),
            Kind::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut FileData, Errno> {
        match &mut self.inodes.get_mut(&ino).ok_or(libc::ENOENT)?.kind {
            Kind::File(f) => Ok(f),
            Kind::Dir(_) => Err(libc::EISDIR),
        }
    }

    /// The inode a name in `parent` reaches now.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.dir(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or(libc::ENOENT)
    }

    /// The parent of a directory (the root is its own).
    pub fn parent(&self, dir: u64) -> Result<u64, Errno> {
        Ok(self.dir(dir)?.parent)
    }

    /// Makes a file or directory `name` in `parent`; the name is durable at the parent's
    /// next fsync.
    pub fn make(
        &mut self,
        parent: u64,
        name: &OsStr,
        dir: bool,
        perm: u16,
        owner: (u32, u32),
    ) -> Result<u64, Errno> {
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let kind = if dir {
            Kind::Dir(DirData {
                parent,
                ..DirData::default()
            })
        } else {
            Kind::File(FileData::default())
        };
        let mut inode = Inode::new(kind, perm, owner.0, owner.1);
        inode.links = 1;
        self.inodes.insert(ino, inode);
        self.dir_mut(parent)?.entries.insert(name.to_owned(), ino);
        Ok(ino)
    }

    /// Removes a name; a directory must be empty.
    pub fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        match (&self.get(ino)?.kind, dir) {
            (Kind::Dir(d), true) if !d.entries.is_empty() => return Err(libc::ENOTEMPTY),
            (Kind::Dir(_), false) => return Err(libc::EISDIR),
            (Kind::File(_), true) => return Err(libc::ENOTDIR),
            _ => {}
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.unlinked(ino);
        Ok(())
    }

    /// Moves a name, replacing what the new name reached (RENAME_NOREPLACE refuses that).
    pub fn rename(
        &mut self,
        from: (u64, &OsStr),
        to: (u64, &OsStr),
        no_replace: bool,
    ) -> Result<(), Errno> {
        let ino = self.lookup(from.0, from.1)?;
        self.dir(to.0)?;
        if let Ok(old) = self.lookup(to.0, to.1) {
            if old == ino {
                return Ok(());
            }
            if no_replace {
                return Err(libc::EEXIST);
            }
            match (&self.get(old)?.kind, &self.get(ino)?.kind) {
                (Kind::Dir(d), Kind::Dir(_)) if !d.entries.is_empty() => {
                    return Err(libc::ENOTEMPTY)
                }
                (Kind::Dir(_), Kind::File(_)) => return Err(libc::EISDIR),
                (Kind::File(_), Kind::Dir(_)) => return Err(libc::ENOTDIR),
                _ => {}
            }
            self.dir_mut(to.0)?.entries.remove(to.1);
            self.unlinked(old);
        }
        self.dir_mut(from.0)?.entries.remove(from.1);
        self.dir_mut(to.0)?.entries.insert(to.1.to_owned(), ino);
        if let Kind::Dir(d) = &mut self.inodes.get_mut(&ino).expect("looked up").kind {
            d.parent = to.0;
        }
        Ok(())
    }

    fn unlinked(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.links = inode.links.saturating_sub(1);
        }
        self.collect(ino);
    }

    /// Drops what nothing can reach any more: unsynced pages of a file no name and no
    /// handle reaches (no fsync can save them), and the whole inode once no durable name
    /// reaches it either.
    fn collect(&mut self, ino: u64) {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        if inode.links > 0 || inode.open > 0 || ino == ROOT {
            return;
        }
        if let Kind::File(f) = &mut inode.kind {
            self.dirty_bytes -= f.dirty.len() as u64 * PAGE_BYTES;
            f.dirty.clear();
        }
        if inode.durable_links == 0 {
            self.inodes.remove(&ino);
            let _ = std::fs::remove_file(self.backing_path(ino));
        }
    }

    pub fn opened(&mut self, ino: u64) -> Result<(), Errno> {
        self.inodes.get_mut(&ino).ok_or(libc::ENOENT)?.open += 1;
        Ok(())
    }

    pub fn released(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.open = inode.open.saturating_sub(1);
        }
        self.collect(ino);
    }

    pub fn touch(&mut self, ino: u64, perm: Option<u16>, owner: (Option<u32>, Option<u32>)) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.perm = perm.unwrap_or(inode.perm);
            inode.uid = owner.0.unwrap_or(inode.uid);
            inode.gid = owner.1.unwrap_or(inode.gid);
            inode.mtime = SystemTime::now();
        }
    }

    fn backing_path(&self, ino: u64) -> PathBuf {
        self.backing.join(ino.to_string())
    }

    /// Reads what a process would see now.
    pub fn read(&self, ino: u64, offset: u64, len: u32) -> Result<Vec<u8>, Errno> {
        let Kind::File(f) = &self.get(ino)?.kind else {
            return Err(libc::EISDIR);
        };
        let end = (offset + u64::from(len)).min(f.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - offset) as usize];
        // Durable bytes first, below the floor only; the rest stays zero.
        let durable_end = end.min(f.floor);
        if offset < durable_end {
            let span = (durable_end - offset) as usize;
            if let Ok(file) = File::open(self.backing_path(ino)) {
                let mut done = 0;
                while done < span {
                    match file.read_at(&mut out[done..span], offset + done as u64) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) => return Err(e.raw_os_error().unwrap_or(libc::EIO)),
                    }
                }
            }
        }
        for (&page, bytes) in f.dirty.range(offset / PAGE_BYTES..=(end - 1) / PAGE_BYTES) {
            let start = page * PAGE_BYTES;
            let from = offset.max(start);
            let to = end.min(start + PAGE_BYTES);
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&bytes[(from - start) as usize..(to - start) as usize]);
        }
        Ok(out)
    }

    /// Writes into memory; nothing reaches the backing file before an fsync.
    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<(), Errno> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset + data.len() as u64;
        let first = offset / PAGE_BYTES;
        let last = (end - 1) / PAGE_BYTES;
        for page in first..=last {
            let start = page * PAGE_BYTES;
            let missing =
                !matches!(&self.get(ino)?.kind, Kind::File(f) if f.dirty.contains_key(&page));
            if missing {
                if self.dirty_bytes + PAGE_BYTES > MAX_DIRTY_BYTES {
                    return Err(libc::ENOSPC);
                }
                let covered = offset <= start && end >= start + PAGE_BYTES;
                let current = if covered {
                    vec![0u8; PAGE_BYTES as usize]
                } else {
                    let mut bytes = self.read(ino, start, PAGE_BYTES as u32)?;
                    bytes.resize(PAGE_BYTES as usize, 0);
                    bytes
                };
                self.file_mut(ino)?
                    .dirty
                    .insert(page, current.into_boxed_slice());
                self.dirty_bytes += PAGE_BYTES;
            }
            let f = self.file_mut(ino)?;
            let bytes = f.dirty.get_mut(&page).expect("inserted above");
            let from = offset.max(start);
            let to = end.min(start + PAGE_BYTES);
            bytes[(from - start) as usize..(to - start) as usize]
                .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
        }
        let f = self.file_mut(ino)?;
        f.size = f.size.max(end);
        Ok(())
    }

    /// Sets a file's size; bytes past the old size read as zero.
    pub fn truncate(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        let f = self.file_mut(ino)?;
        f.floor = f.floor.min(size).min(f.size);
        let first_gone = size.div_ceil(PAGE_BYTES);
        let dropped = f.dirty.split_off(&first_gone).len() as u64;
        if !size.is_multiple_of(PAGE_BYTES) {
            if let Some(page) = f.dirty.get_mut(&(size / PAGE_BYTES)) {
                page[(size % PAGE_BYTES) as usize..].fill(0);
            }
        }
        f.size = size;
        self.dirty_bytes -= dropped * PAGE_BYTES;
        Ok(())
    }

    /// fsync or fdatasync of a file: its content as of now survives a power loss.
    pub fn sync_file(&mut self, ino: u64) -> Result<(), Errno> {
        if self.fail_fsync {
            return Err(libc::EIO);
        }
        let path = self.backing_path(ino);
        let f = self.file_mut(ino)?;
        let io = |e: io::Error| e.raw_os_error().unwrap_or(libc::EIO);
        let backing = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        backing.set_len(f.floor).map_err(io)?;
        backing.set_len(f.size).map_err(io)?;
        for (&page, bytes) in &f.dirty {
            let start = page * PAGE_BYTES;
            let len = (f.size - start).min(PAGE_BYTES) as usize;
            backing.write_all_at(&bytes[..len], start).map_err(io)?;
        }
        let pages = f.dirty.len() as u64;
        f.dirty.clear();
        f.durable_size = f.size;
        f.floor = f.size;
        self.dirty_bytes -= pages * PAGE_BYTES;
        Ok(())
    }

    /// fsync of a directory: its names as of now survive a power loss.
    pub fn sync_dir(&mut self, ino: u64) -> Result<(), Errno> {
        if self.fail_fsync {
            return Err(libc::EIO);
        }
        let d = self.dir_mut(ino)?;
        let old = std::mem::replace(&mut d.durable, d.entries.clone());
        let new = d.durable.clone();
        for (name, child) in &old {
            if new.get(name) != Some(child) {
                if let Some(inode) = self.inodes.get_mut(child) {
                    inode.durable_links = inode.durable_links.saturating_sub(1);
                }
                self.collect(*child);
            }
        }
        for (name, child) in &new {
            if old.get(name) != Some(child) {
                if let Some(inode) = self.inodes.get_mut(child) {
                    inode.durable_links += 1;
                }
            }
        }
        Ok(())
    }

    /// Unsynced bytes held now.
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty_bytes
    }

    /// Loses power: every file and directory goes back to what was last synced, and
    /// whatever no durable name reaches is gone. No handle survives (the processes died).
    pub fn power_loss(&mut self) -> Discarded {
        self.generation += 1;
        let mut discarded = Discarded::default();
        for inode in self.inodes.values_mut() {
            inode.open = 0;
            inode.links = 0;
            inode.durable_links = 0;
            match &mut inode.kind {
                Kind::File(f) => {
                    let lost: u64 = f
                        .dirty
                        .keys()
                        .map(|page| f.size.saturating_sub(page * PAGE_BYTES).min(PAGE_BYTES))
                        .sum();
                    if lost > 0 || f.size != f.durable_size || f.floor != f.durable_size {
                        discarded.files += 1;
                    }
                    discarded.bytes += lost;
                    f.dirty.clear();
                    f.size = f.durable_size;
                    f.floor = f.durable_size;
                }
                Kind::Dir(d) => {
                    if d.entries != d.durable {
                        discarded.files += 1;
                    }
                    d.entries = d.durable.clone();
                }
            }
        }
        self.dirty_bytes = 0;
        let reachable = self.relink();
        let unreachable: Vec<u64> = self
            .inodes
            .keys()
            .copied()
            .filter(|ino| !reachable.contains(ino))
            .collect();
        // Their names were lost with their directories' unsynced entries (counted above).
        for ino in unreachable {
            self.inodes.remove(&ino);
            let _ = std::fs::remove_file(self.backing_path(ino));
        }
        discarded
    }

    /// Recounts names from the root after a power loss; returns every inode reached.
    fn relink(&mut self) -> std::collections::HashSet<u64> {
        let mut reached = std::collections::HashSet::from([ROOT]);
        let mut queue = vec![ROOT];
        while let Some(dir) = queue.pop() {
            let children: Vec<u64> = match &self.inodes[&dir].kind {
                Kind::Dir(d) => d.entries.values().copied().collect(),
                Kind::File(_) => continue,
            };
            for child in children {
                let Some(inode) = self.inodes.get_mut(&child) else {
                    continue;
                };
                inode.links += 1;
                inode.durable_links += 1;
                if let Kind::Dir(d) = &mut inode.kind {
                    d.parent = dir;
                }
                if reached.insert(child) {
                    queue.push(child);
                }
            }
        }
        self.inodes.get_mut(&ROOT).expect("root").links = 1;
        reached
    }
}

impl Inode {
    fn new(kind: Kind, perm: u16, uid: u32, gid: u32) -> Self {
        Self {
            kind,
            perm,
            uid,
            gid,
            mtime: SystemTime::now(),
            links: 0,
            durable_links: 0,
            open: 0,
        }
    }

    /// Names that reach it now (for `nlink`).
    pub fn links(&self) -> u32 {
        self.links
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume() -> (tempfile::TempDir, Volume) {
        let dir = tempfile::tempdir().unwrap();
        let volume = Volume::new(dir.path()).unwrap();
        (dir, volume)
    }

    fn file(v: &mut Volume, parent: u64, name: &str) -> u64 {
        v.make(parent, OsStr::new(name), false, 0o644, (0, 0))
            .unwrap()
    }

    #[test]
    fn a_write_without_fsync_is_gone_after_a_power_loss() {
        let (_dir, mut v) = volume();
        let ino = file(&mut v, ROOT, "db");
        v.sync_dir(ROOT).unwrap();
        v.write(ino, 0, b"acknowledged?").unwrap();
        assert_eq!(v.read(ino, 0, 100).unwrap(), b"acknowledged?");
        let lost = v.power_loss();
        assert_eq!(v.lookup(ROOT, OsStr::new("db")), Ok(ino));
        assert_eq!(v.read(ino, 0, 100).unwrap(), b"");
        assert_eq!(
            lost,
            Discarded {
                bytes: 13,
                files: 1
            }
        );
    }

    #[test]
    fn with_fsync_it_survives_and_later_writes_do_not() {
        let (_dir, mut v) = volume();
        let ino = file(&mut v, ROOT, "db");
        v.sync_dir(ROOT).unwrap();
        v.write(ino, 0, &[7u8; 10_000]).unwrap();
        v.sync_file(ino).unwrap();
        v.write(ino, 5_000, &[9u8; 10_000]).unwrap();
        v.power_loss();
        assert_eq!(v.read(ino, 0, 20_000).unwrap(), vec![7u8; 10_000]);
        assert_eq!(v.dirty_bytes(), 0);
    }

    #[test]
    fn a_create_without_a_directory_fsync_is_undone_even_if_the_file_was_synced() {
        let (_dir, mut v) = volume();
        let ino = file(&mut v, ROOT, "blob");
        v.write(ino, 0, b"page").unwrap();
        v.sync_file(ino).unwrap();
        let lost = v.power_loss();
        assert_eq!(v.lookup(ROOT, OsStr::new("blob")), Err(libc::ENOENT));
        assert_eq!(lost.files, 1);
        assert_eq!(v.get(ino).err(), Some(libc::ENOENT));
    }

    #[test]
    fn a_rename_without_a_directory_fsync_is_undone() {
        let (_dir, mut v) = volume();
        let old = file(&mut v, ROOT, "snapshot");
        v.write(old, 0, b"old").unwrap();
        v.sync_file(old).unwrap();
        let new = file(&mut v, ROOT, "snapshot.tmp");
        v.write(new, 0, b"new").unwrap();
        v.sync_file(new).unwrap();
        v.sync_dir(ROOT).unwrap();
        v.rename(
            (ROOT, OsStr::new("snapshot.tmp")),
            (ROOT, OsStr::new("snapshot")),
            false,
        )
        .unwrap();
        assert_eq!(
            v.read(v.lookup(ROOT, OsStr::new("snapshot")).unwrap(), 0, 9)
                .unwrap(),
            b"new"
        );
        v.power_loss();
        let survivor = v.lookup(ROOT, OsStr::new("snapshot")).unwrap();
        assert_eq!(v.read(survivor, 0, 9).unwrap(), b"old");
        v.rename(
            (ROOT, OsStr::new("snapshot.tmp")),
            (ROOT, OsStr::new("snapshot")),
            false,
        )
        .unwrap();
        v.sync_dir(ROOT).unwrap();
        v.power_loss();
        let survivor = v.lookup(ROOT, OsStr::new("snapshot")).unwrap();
        assert_eq!(v.read(survivor, 0, 9).unwrap(), b"new");
        assert_eq!(
            v.lookup(ROOT, OsStr::new("snapshot.tmp")),
            Err(libc::ENOENT)
        );
    }

    #[test]
    fn truncated_bytes_read_as_zero_until_synced_and_come_back_after_a_loss() {
        let (_dir, mut v) = volume();
        let ino = file(&mut v, ROOT, "f");
        v.sync_dir(ROOT).unwrap();
        v.write(ino, 0, &[1u8; 8192]).unwrap();
        v.sync_file(ino).unwrap();
        v.truncate(ino, 100).unwrap();
        v.truncate(ino, 8192).unwrap();
        let now = v.read(ino, 0, 8192).unwrap();
        assert_eq!(&now[..100], &[1u8; 100][..]);
        assert!(now[100..].iter().all(|b| *b == 0));
        v.write(ino, 4096, b"x").unwrap();
        v.sync_file(ino).unwrap();
        let synced = v.read(ino, 0, 8192).unwrap();
        assert_eq!(synced[4096], b'x');
        assert_eq!(synced[4097], 0);
        assert_eq!(synced[99], 1);
        assert_eq!(synced[100], 0);
    }

    #[test]
    fn an_unlinked_closed_file_frees_its_pages_and_a_failed_fsync_syncs_nothing() {
        let (_dir, mut v) = volume();
        let ino = file(&mut v, ROOT, "gone");
        v.write(ino, 0, &[1u8; 40_000]).unwrap();
        assert_eq!(v.dirty_bytes(), 10 * PAGE_BYTES);
        v.remove(ROOT, OsStr::new("gone"), false).unwrap();
        assert_eq!(v.dirty_bytes(), 0);
        let kept = file(&mut v, ROOT, "kept");
        v.sync_dir(ROOT).unwrap();
        v.write(kept, 0, b"data").unwrap();
        v.fail_fsync = true;
        assert_eq!(v.sync_file(kept), Err(libc::EIO));
        v.fail_fsync = false;
        v.power_loss();
        assert_eq!(v.read(kept, 0, 4).unwrap(), b"");
    }
}
