//! A store that cannot open a file to sync it waits for a descriptor; it does not stop.
//!
//! An adversarial review ran a node out of file descriptors with idle connections; the
//! control store's next sync failed to open `sled/blobs` (`Too many open files`), the
//! flusher took that for a failed fsync and stopped the store for good, and the node exited
//! 11, which the shipped unit never restarts. Nothing had been lost: no fsync had failed.
//!
//! This file holds one test: it uses up every descriptor of the test process.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use firebreak_store::{Flusher, SYNC_RETRIES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_short_of_descriptors_waits_for_one_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sled_dir = dir.path().join("sled");
    let db = sled::Config::new()
        .path(&sled_dir)
        .flush_every_ms(None)
        .open()
        .unwrap();
    let flusher = Flusher::spawn(db.clone(), &sled_dir).unwrap();
    db.insert("acknowledged", "only once durable").unwrap();

    // Take every descriptor this process has left.
    let mut held = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(file) => held.push(file),
            Err(err) if err.raw_os_error() == Some(libc::EMFILE) => break,
            Err(err) => panic!("opening /dev/null: {err}"),
        }
    }
    let retries_before = SYNC_RETRIES.load(Ordering::Relaxed);
    let waiting = flusher.clone();
    let flushed = tokio::spawn(async move { waiting.flush().await });
    let deadline = Instant::now() + Duration::from_secs(20);
    while SYNC_RETRIES.load(Ordering::Relaxed) == retries_before {
        assert!(
            !flushed.is_finished(),
            "the flush ended while no descriptor was free: {:?}",
            flushed.await
        );
        assert!(Instant::now() < deadline, "the flusher never tried again");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        flusher.failed().borrow().is_none(),
        "the store stopped for lack of a descriptor"
    );

    // Descriptors come back: the same flush completes, and the store goes on.
    drop(held);
    let result = tokio::time::timeout(Duration::from_secs(20), flushed)
        .await
        .expect("the flush completes once descriptors are free")
        .expect("the flush task ran");
    assert!(result.is_ok(), "{result:?}");
    assert!(flusher.failed().borrow().is_none());
    db.insert("after", "1").unwrap();
    flusher.flush().await.expect("the store goes on");
}
