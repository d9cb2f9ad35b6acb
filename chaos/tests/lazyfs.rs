//! The drop-unsynced filesystem through a real FUSE mount (root, /dev/fuse): what real
//! syscalls make durable survives a power loss and nothing else does; a failed fsync says
//! EIO; `unmount_leftovers` leaves a live drill's mounts alone.
//!
//! Without root they are skipped with a message, except under CI (CI=true), where root is
//! expected and its absence fails them.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use firebreak_chaos::lazyfs::{self, Mount};

fn usable_or_skip() -> bool {
    match lazyfs::probe() {
        Ok(()) => true,
        Err(e) => {
            assert!(
                std::env::var("CI").is_err(),
                "CI runs as root with /dev/fuse; the lazyfs tests need them: {e}"
            );
            eprintln!("skipped: {e}");
            false
        }
    }
}

fn mounted(name: &str) -> (tempfile::TempDir, Mount) {
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::new(&dir.path().join("data"), &dir.path().join("durable"), name).unwrap();
    (dir, mount)
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

#[test]
fn only_what_was_fsynced_survives_a_power_loss() {
    if !usable_or_skip() {
        return;
    }
    let (_dir, mut mount) = mounted("t-sync");
    let data = mount.dir().to_path_buf();
    fs::create_dir(data.join("sled")).unwrap();
    let mut synced = File::create(data.join("sled/db")).unwrap();
    let mut unsynced = File::create(data.join("sled/blob")).unwrap();
    sync_dir(&data);
    sync_dir(&data.join("sled"));
    synced.write_all(&[1u8; 20_000]).unwrap();
    synced.sync_data().unwrap();
    synced.write_all(b"after the fsync").unwrap();
    unsynced.write_all(&[2u8; 10_000]).unwrap();
    let renamed = data.join("sled/renamed");
    fs::write(data.join("sled/tmp"), b"x").unwrap();
    File::open(data.join("sled/tmp"))
        .unwrap()
        .sync_all()
        .unwrap();
    fs::rename(data.join("sled/tmp"), &renamed).unwrap();
    assert_eq!(
        mount.unsynced_bytes(),
        4096 + 3 * 4096,
        "one page of db, three of blob"
    );
    drop((synced, unsynced));

    let lost = mount.power_loss().unwrap();

    assert_eq!(fs::read(data.join("sled/db")).unwrap(), vec![1u8; 20_000]);
    assert_eq!(fs::read(data.join("sled/blob")).unwrap(), b"");
    assert!(
        !renamed.exists(),
        "a rename without a directory fsync is undone"
    );
    assert!(
        !data.join("sled/tmp").exists(),
        "and so is the create before it"
    );
    // Whole dirty pages, clipped to the size: db's last page (from 16,384) and the blob.
    assert_eq!(lost.bytes, (20_015 - 16_384) + 10_000);
    assert_eq!(lost.files, 3, "db, blob and the sled directory");
    // The mount works on after the loss.
    fs::write(data.join("sled/after"), b"ok").unwrap();
    assert_eq!(fs::read(data.join("sled/after")).unwrap(), b"ok");
}

#[test]
fn a_failing_disk_answers_fsync_with_eio_and_keeps_nothing() {
    if !usable_or_skip() {
        return;
    }
    let (_dir, mut mount) = mounted("t-eio");
    let path = mount.dir().join("log");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .unwrap();
    sync_dir(mount.dir());
    file.write_all(b"entry").unwrap();
    mount.fail_fsync(true);
    let err = file.sync_data().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    drop(file);
    mount.fail_fsync(false);
    mount.power_loss().unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"");
}

#[test]
fn heal_leaves_the_mounts_of_a_live_drill_alone() {
    if !usable_or_skip() {
        return;
    }
    let (_dir, mount) = mounted("t-heal");
    fs::write(mount.dir().join("f"), b"still here").unwrap();
    let unmounted = lazyfs::unmount_leftovers();
    assert!(!unmounted.iter().any(|p| p == mount.dir()), "{unmounted:?}");
    assert_eq!(fs::read(mount.dir().join("f")).unwrap(), b"still here");
}
