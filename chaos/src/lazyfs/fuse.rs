//! The FUSE face of a [`Volume`]: each kernel request becomes one call on the volume,
//! under its lock, and the answer goes straight back.
//!
//! Every handle is number 0 (the volume keys everything by inode); attributes and names
//! are cached by the kernel for [`TTL`], which is safe because every change reaches the
//! volume through this same kernel.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileType, Filesystem, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

use super::volume::{Errno, Inode, Kind, Volume, PAGE_BYTES};

/// How long the kernel may cache attributes and names.
const TTL: Duration = Duration::from_secs(1);
/// `RENAME_NOREPLACE` from renameat2(2).
const RENAME_NOREPLACE: u32 = 1;

/// The filesystem a mount serves; the volume outlives it (a power loss remounts).
pub struct Adapter {
    pub volume: Arc<Mutex<Volume>>,
    /// The volume's power generation this mount serves. A request still queued on an
    /// unmounted session (a write a killed process issued just before the power went)
    /// must not land after the power loss: such requests get EIO and change nothing.
    pub generation: u64,
}

impl Adapter {
    fn volume(&self) -> Result<MutexGuard<'_, Volume>, Errno> {
        let volume = self.volume.lock().expect("volume lock poisoned");
        if volume.generation != self.generation {
            return Err(libc::EIO);
        }
        Ok(volume)
    }
}

/// The volume, or an EIO answer to a stale request.
macro_rules! volume {
    ($self:ident, $reply:ident) => {
        match $self.volume() {
            Ok(volume) => volume,
            Err(e) => return $reply.error(e),
        }
    };
}

fn attr(ino: u64, inode: &Inode) -> FileAttr {
    let (kind, size) = match &inode.kind {
        Kind::File(f) => (FileType::RegularFile, f.size),
        Kind::Dir(d) => (FileType::Directory, d.entries.len() as u64),
    };
    FileAttr {
        ino,
        size,
        blocks: size.div_ceil(512),
        atime: inode.mtime,
        mtime: inode.mtime,
        ctime: inode.mtime,
        crtime: inode.mtime,
        kind,
        perm: inode.perm,
        nlink: inode.links().max(1),
        uid: inode.uid,
        gid: inode.gid,
        rdev: 0,
        blksize: PAGE_BYTES as u32,
        flags: 0,
    }
}

fn entry_of(volume: &Volume, ino: Result<u64, Errno>, reply: ReplyEntry) {
    match ino.and_then(|ino| volume.get(ino).map(|inode| attr(ino, inode))) {
        Ok(a) => reply.entry(&TTL, &a, 0),
        Err(e) => reply.error(e),
    }
}

fn empty(result: Result<(), Errno>, reply: ReplyEmpty) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn perm(mode: u32, umask: u32) -> u16 {
    (mode & !umask & 0o7777) as u16
}

impl Filesystem for Adapter {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let volume = volume!(self, reply);
        entry_of(&volume, volume.lookup(parent, name), reply);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match volume!(self, reply).get(ino) {
            Ok(inode) => reply.attr(&TTL, &attr(ino, inode)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut volume = volume!(self, reply);
        if let Some(size) = size {
            if let Err(e) = volume.truncate(ino, size) {
                return reply.error(e);
            }
        }
        volume.touch(ino, mode.map(|m| perm(m, 0)), (uid, gid));
        match volume.get(ino) {
            Ok(inode) => reply.attr(&TTL, &attr(ino, inode)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut volume = volume!(self, reply);
        let made = volume.make(
            parent,
            name,
            true,
            perm(mode, umask),
            (req.uid(), req.gid()),
        );
        entry_of(&volume, made, reply);
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(libc::EPERM);
        }
        let mut volume = volume!(self, reply);
        let made = volume.make(
            parent,
            name,
            false,
            perm(mode, umask),
            (req.uid(), req.gid()),
        );
        entry_of(&volume, made, reply);
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut volume = volume!(self, reply);
        let made = volume
            .make(
                parent,
                name,
                false,
                perm(mode, umask),
                (req.uid(), req.gid()),
            )
            .and_then(|ino| volume.opened(ino).map(|()| ino))
            .and_then(|ino| volume.get(ino).map(|inode| attr(ino, inode)));
        match made {
            Ok(a) => reply.created(&TTL, &a, 0, 0, 0),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        empty(volume!(self, reply).remove(parent, name, false), reply);
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        empty(volume!(self, reply).remove(parent, name, true), reply);
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        if flags & !RENAME_NOREPLACE != 0 {
            return reply.error(libc::EINVAL); // RENAME_EXCHANGE, RENAME_WHITEOUT
        }
        let no_replace = flags & RENAME_NOREPLACE != 0;
        let renamed = volume!(self, reply).rename((parent, name), (newparent, newname), no_replace);
        empty(renamed, reply);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match volume!(self, reply).opened(ino) {
            Ok(()) => reply.opened(0, 0),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        match volume!(self, reply).read(ino, offset.max(0) as u64, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        match volume!(self, reply).write(ino, offset.max(0) as u64, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    /// close(2): not durability.
    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        volume!(self, reply).released(ino);
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _data: bool, reply: ReplyEmpty) {
        empty(volume!(self, reply).sync_file(ino), reply);
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match volume!(self, reply).get(ino) {
            Ok(Inode {
                kind: Kind::Dir(_), ..
            }) => reply.opened(0, 0),
            Ok(_) => reply.error(libc::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let volume = volume!(self, reply);
        let (Ok(inode), Ok(parent)) = (volume.get(ino), volume.parent(ino)) else {
            return reply.error(libc::ENOTDIR);
        };
        let Kind::Dir(dir) = &inode.kind else {
            return reply.error(libc::ENOTDIR);
        };
        let dots = [(ino, OsStr::new(".")), (parent, OsStr::new(".."))];
        let names = dir.entries.iter().map(|(n, i)| (*i, n.as_os_str()));
        for (i, (child, name)) in dots.into_iter().chain(names).enumerate() {
            if (i as i64) < offset {
                continue;
            }
            let kind = match volume.get(child).map(|c| &c.kind) {
                Ok(Kind::Dir(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            if reply.add(child, i as i64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _data: bool, reply: ReplyEmpty) {
        empty(volume!(self, reply).sync_dir(ino), reply);
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        // Plenty of room: the backing disk is what runs out, and it says so on write.
        let blocks = 1 << 30;
        reply.statfs(
            blocks,
            blocks,
            blocks,
            1 << 20,
            1 << 20,
            PAGE_BYTES as u32,
            255,
            PAGE_BYTES as u32,
        );
    }

    fn access(&mut self, _req: &Request<'_>, ino: u64, _mask: i32, reply: ReplyEmpty) {
        empty(volume!(self, reply).get(ino).map(|_| ()), reply);
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(libc::EOPNOTSUPP);
        }
        let mut volume = volume!(self, reply);
        let end = (offset + length).max(0) as u64;
        let grown = match &volume.get(ino).map(|i| &i.kind) {
            Ok(Kind::File(f)) if f.size < end => volume.truncate(ino, end),
            Ok(Kind::File(_)) => Ok(()),
            Ok(Kind::Dir(_)) => Err(libc::EISDIR),
            Err(e) => Err(*e),
        };
        empty(grown, reply);
    }
}
