//! The one thread that makes a sled Db durable.
//!
//! ```text
//!   append / save_vote / snapshot ──(bounded queue)──► flusher thread
//!                                                      drain every waiting request
//!                                                      Db::flush()  (sync_file_range)
//!                                                      fdatasync(<db dir>/db)
//!                                                      call every waiter with the result
//! ```
//!
//! One thread per Db: concurrent sled flushes can deadlock (sled #1308, #1357), and one
//! fsync for a whole batch of waiters is what makes many concurrent writes cheap.

use std::fs::File;
use std::io;
use std::path::Path;

use tokio::sync::{mpsc, oneshot};

use crate::{Error, Result};

/// Most requests that may wait for the flusher; appends beyond it wait for room.
pub const MAX_PENDING_FLUSHES: usize = 4096;

/// Something to run once the Db is durable (or failed to become so).
type Waiter = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Handle to a Db's flusher thread; cheap to clone. The thread ends when every handle is
/// dropped.
#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::Sender<Waiter>,
}

impl Flusher {
    /// Starts the flusher of `db`, whose files are in `sled_dir`.
    pub fn spawn(db: sled::Db, sled_dir: &Path) -> Result<Self> {
        let path = sled_dir.join("db");
        let file = File::open(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        // The files sled just created must survive too: sync them and their directory once.
        for entry in [path.clone(), sled_dir.join("conf"), sled_dir.to_path_buf()] {
            if let Ok(f) = File::open(&entry) {
                f.sync_all().map_err(|source| Error::Io {
                    path: entry.clone(),
                    source,
                })?;
            }
        }
        let (tx, rx) = mpsc::channel(MAX_PENDING_FLUSHES);
        std::thread::Builder::new()
            .name("sled-flusher".into())
            .spawn(move || run(db, file, rx))
            .map_err(|source| Error::Io { path, source })?;
        Ok(Self { tx })
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
}

fn stopped() -> io::Error {
    io::Error::other("the store's flusher thread has stopped")
}

fn run(db: sled::Db, file: File, mut rx: mpsc::Receiver<Waiter>) {
    let mut batch: Vec<Waiter> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_PENDING_FLUSHES {
            match rx.try_recv() {
                Ok(waiter) => batch.push(waiter),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let flushed = db.flush().map_err(io::Error::from);
        let sled_flush = started.elapsed();
        let result = flushed.and_then(|_| file.sync_data());
        tracing::trace!(
            waiters = batch.len(),
            sled_flush_us = sled_flush.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "flushed"
        );
        if let Err(err) = &result {
            tracing::error!(cause = %err, waiters = batch.len(), "store flush failed");
        }
        for waiter in batch.drain(..) {
            waiter(match &result {
                Ok(()) => Ok(()),
                Err(err) => Err(io::Error::new(err.kind(), err.to_string())),
            });
        }
    }
}
