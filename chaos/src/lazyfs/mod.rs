//! A drop-unsynced filesystem for power-loss drills, with the semantics of Jepsen's
//! LazyFS: a site's data dir is a FUSE mount that keeps every write in memory until the
//! file is fsynced, and every create, rename and unlink until its directory is; a power
//! loss throws all of that away, as a machine losing power would.
//!
//! ```text
//!   node, services ──syscalls──► kernel FUSE ──► Adapter (fuse.rs) ──► Volume (volume.rs)
//!                                                                      │ dirty pages, names
//!   power_loss(): unmount ─► Volume::power_loss() (what is lost) ─► mount again
//!                                                                      ▼
//!                                                  <site>/durable/<inode>: synced content
//! ```
//!
//! SIGKILL keeps the page cache, so no kill-based fault can tell a missing fsync; this one
//! can. It needs root (mount(2)) and `/dev/fuse`; [`probe`] says which is missing.
//!
//! Caveats: the mount serves requests on one thread, so a site's disk is slower than a
//! real one; content lives in the backing dir by inode number, so after the drill the
//! data dir itself is an empty mountpoint; torn writes inside a page are not modelled.

mod fuse;
pub mod volume;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use volume::{Discarded, Volume};

use crate::error::{Error, Result};

/// Prefix of every mount's filesystem name, so that `drill heal` finds what a dead drill
/// left mounted.
pub const FSNAME_PREFIX: &str = "firebreak-lazyfs-";

/// Says why drop-unsynced mounts cannot work here, if they cannot.
pub fn probe() -> Result<()> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::CouldNotRun(
            "power-loss faults mount a FUSE filesystem under each site's data dir, which needs root: run the drill as root (sudo -E), or drop the power-loss steps".into(),
        ));
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return Err(Error::CouldNotRun(format!(
            "power-loss faults need /dev/fuse ({e}): load the module (`modprobe fuse`) or, in a container, pass the device (--device /dev/fuse)"
        )));
    }
    Ok(())
}

/// One mounted drop-unsynced filesystem; unmounted when dropped.
pub struct Mount {
    dir: PathBuf,
    name: String,
    volume: Arc<Mutex<Volume>>,
    session: Option<fuser::BackgroundSession>,
}

impl Mount {
    /// Mounts an empty volume at `dir` (created if missing), keeping synced content in
    /// `backing`; `name` (a site's) names the mount in /proc/mounts, after this process's
    /// PID.
    pub fn new(dir: &Path, backing: &Path, name: &str) -> Result<Self> {
        let io = |what: &str, path: &Path, e: std::io::Error| {
            Error::CouldNotRun(format!("failed to {what} {}: {e}", path.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        let volume = Volume::new(backing).map_err(|e| io("create", backing, e))?;
        let mut mount = Self {
            dir: dir.to_path_buf(),
            name: format!("{FSNAME_PREFIX}{}-{name}", std::process::id()),
            volume: Arc::new(Mutex::new(volume)),
            session: None,
        };
        mount.mount()?;
        Ok(mount)
    }

    fn mount(&mut self) -> Result<()> {
        let options = [
            fuser::MountOption::FSName(self.name.clone()),
            fuser::MountOption::Subtype("lazyfs".into()),
            fuser::MountOption::RW,
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
        ];
        let adapter = fuse::Adapter {
            volume: self.volume.clone(),
            generation: self.lock().generation,
        };
        let session = fuser::spawn_mount2(adapter, &self.dir, &options).map_err(|e| {
            Error::CouldNotRun(format!(
                "failed to mount the drop-unsynced filesystem at {}: {e}",
                self.dir.display()
            ))
        })?;
        self.session = Some(session);
        Ok(())
    }

    /// Loses power: unmounts, drops everything unsynced and mounts the survivors again.
    /// Every process using the mount must be dead already (their handles die with it).
    pub fn power_loss(&mut self) -> Result<Discarded> {
        self.session = None; // unmounts (lazily: the processes are gone)
        let discarded = self.lock().power_loss();
        self.mount()?;
        tracing::debug!(
            dir = %self.dir.display(),
            bytes = discarded.bytes,
            files = discarded.files,
            "power loss: unsynced data discarded"
        );
        Ok(discarded)
    }

    /// Makes every later fsync fail with EIO (a dying disk), or stops doing so.
    pub fn fail_fsync(&self, fail: bool) {
        self.lock().fail_fsync = fail;
    }

    /// Unsynced bytes the mount holds now.
    pub fn unsynced_bytes(&self) -> u64 {
        self.lock().dirty_bytes()
    }

    /// Where it is mounted.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Volume> {
        self.volume.lock().expect("volume lock poisoned")
    }
}

/// Unmounts every drop-unsynced filesystem left by a drill that is no longer running (a
/// drill killed before it could unmount); returns the mountpoints it unmounted. Mounts of
/// live drills are left alone: their names carry the drill's PID.
pub fn unmount_leftovers() -> Vec<PathBuf> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    let mut done = Vec::new();
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(source), Some(point)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(rest) = source.strip_prefix(FSNAME_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if pid.is_empty() || Path::new("/proc").join(pid).exists() {
            continue;
        }
        // /proc/mounts escapes spaces and the like as octal.
        let point = point.replace("\\040", " ");
        let Ok(c_point) = std::ffi::CString::new(point.clone()) else {
            continue;
        };
        // SAFETY: umount2(2) with a valid C string.
        if unsafe { libc::umount2(c_point.as_ptr(), libc::MNT_DETACH) } == 0 {
            done.push(PathBuf::from(point));
        }
    }
    done
}
