//! The one thread that makes a sled Db durable.
//!
//! ```text
//!   append / save_vote / snapshot ──(bounded queue)──► flusher thread
//!                                                      drain every waiting request
//!                                                      Db::flush()  (sync_file_range)
//!                                                      SledFiles::sync (blobs, dirs, db)
//!                                                      call every waiter with the result
//! ```
//!
//! One thread per Db: concurrent sled flushes can deadlock (sled #1308, #1357), and one
//! fsync for a whole batch of waiters is what makes many concurrent writes cheap.
//!
//! A failed flush or fsync stops the flusher for good: after a failed fsync the kernel may
//! already have dropped the pages ("fsyncgate"), so nothing written since the last good
//! sync may be acknowledged, ever. Every later waiter gets the error, and
//! [`Flusher::failed`] tells the node, which exits.
//!
//! A file the sync could not even open for lack of file descriptors
//! ([`crate::sync::OutOfDescriptors`]) is different: nothing was synced or lost, so the
//! flusher tries the sync again, backing off, for up to [`OPEN_RETRY_FOR`], and counts
//! each try ([`SYNC_RETRIES`]); the waiters wait. Only a shortage that outlasts that stops
//! the store. An outsider who runs a node out of descriptors must not stop it for good.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::sync::{out_of_descriptors, SledFiles};
use crate::{Error, Result};

/// Most requests that may wait for the flusher; appends beyond it wait for room.
pub const MAX_PENDING_FLUSHES: usize = 4096;
/// Longest the flusher keeps trying a sync that could not open its files for lack of
/// file descriptors.
pub const OPEN_RETRY_FOR: Duration = Duration::from_secs(60);
/// The first wait before such a retry; it doubles up to [`OPEN_RETRY_MAX_WAIT`].
const OPEN_RETRY_FIRST_WAIT: Duration = Duration::from_millis(10);
const OPEN_RETRY_MAX_WAIT: Duration = Duration::from_millis(500);

/// Syncs tried again because a file could not be opened for lack of descriptors, in this
/// process (every store); the node exports it as a metric.
pub static SYNC_RETRIES: AtomicU64 = AtomicU64::new(0);

/// Something to run once the Db is durable (or failed to become so).
type Waiter = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Handle to a Db's flusher thread; cheap to clone. The thread ends when every handle is
/// dropped.
#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::Sender<Waiter>,
    failed: watch::Receiver<Option<String>>,
}

impl Flusher {
    /// Starts the flusher of `db`, whose files are in `sled_dir`.
    pub fn spawn(db: sled::Db, sled_dir: &Path) -> Result<Self> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let mut files = SledFiles::open(sled_dir).map_err(io(sled_dir))?;
        // The files sled just created must survive too: sync them and their directory once.
        db.flush().map_err(|e| Error::Io {
            path: sled_dir.to_path_buf(),
            source: e.into(),
        })?;
        files.sync().map_err(io(sled_dir))?;
        let (tx, rx) = mpsc::channel(MAX_PENDING_FLUSHES);
        let (failed_tx, failed) = watch::channel(None);
        std::thread::Builder::new()
            .name("sled-flusher".into())
            .spawn(move || run(db, files, rx, failed_tx))
            .map_err(io(sled_dir))?;
        Ok(Self { tx, failed })
    }

    /// Runs `done` after everything written to the Db so far is on disk.
    pub async fn then(&self, done: impl FnOnce(io::Result<()>) + Send + 'static) -> io::Result<()> {
        self.tx.send(Box::new(done)).await.map_err(|_| stopped())
    }

    /// Waits until everything written to the Db so far is on disk.
    pub async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.then(move |result| {
            let _ = tx.send(result);
        })
        .await?;
        rx.await.map_err(|_| stopped())?
    }

    /// Becomes `Some(why)` once a flush or fsync failed: the store acknowledges nothing
    /// more, and the node must stop.
    pub fn failed(&self) -> watch::Receiver<Option<String>> {
        self.failed.clone()
    }
}

/// `files.sync()`, tried again while it fails only to open a file for lack of descriptors
/// (see the module docs).
fn sync_retrying(files: &mut SledFiles) -> io::Result<()> {
    let started = Instant::now();
    let mut wait = OPEN_RETRY_FIRST_WAIT;
    loop {
        match files.sync() {
            Err(err) if out_of_descriptors(&err) && started.elapsed() < OPEN_RETRY_FOR => {
                if SYNC_RETRIES
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(100)
                {
                    tracing::warn!(cause = %err, "the store cannot open a file to sync it; trying again (nothing is lost, writes wait)");
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(OPEN_RETRY_MAX_WAIT);
            }
            result => return result,
        }
    }
}

fn stopped() -> io::Error {
    io::Error::other("the store's flusher thread has stopped")
}

fn run(
    db: sled::Db,
    mut files: SledFiles,
    mut rx: mpsc::Receiver<Waiter>,
    failed: watch::Sender<Option<String>>,
) {
    let mut batch: Vec<Waiter> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_PENDING_FLUSHES {
            match rx.try_recv() {
                Ok(waiter) => batch.push(waiter),
                Err(_) => break,
            }
        }
        let known = failed.borrow().clone();
        let result = match known {
            Some(why) => Err(io::Error::other(why)),
            None => flush(&db, &mut files, batch.len(), &failed),
        };
        for waiter in batch.drain(..) {
            waiter(match &result {
                Ok(()) => Ok(()),
                Err(err) => Err(io::Error::new(err.kind(), err.to_string())),
            });
        }
    }
}

/// One group commit: sled's flush, then the fsyncs; a failure poisons the flusher.
fn flush(
    db: &sled::Db,
    files: &mut SledFiles,
    waiters: usize,
    failed: &watch::Sender<Option<String>>,
) -> io::Result<()> {
    let started = std::time::Instant::now();
    let flushed = db.flush().map_err(io::Error::from);
    let sled_flush = started.elapsed();
    let result = flushed.and_then(|_| sync_retrying(files));
    tracing::trace!(
        waiters,
        sled_flush_us = sled_flush.as_micros() as u64,
        total_us = started.elapsed().as_micros() as u64,
        "flushed"
    );
    if let Err(err) = &result {
        let why = format!(
            "the store failed to make writes durable ({err}); the kernel may have dropped them, so this node acknowledges nothing more and stops: check the disk, then restart it to recover from what is on disk"
        );
        tracing::error!(cause = %err, waiters, "store flush failed; stopping the store");
        failed.send_replace(Some(why));
    }
    result
}
