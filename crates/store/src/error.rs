//! Errors from opening or reading a store. Errors inside openraft's traits are openraft's
//! `StorageError`, which stops the Raft node rather than let a replica diverge.

use std::path::PathBuf;

/// Why a store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("failed to access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// sled refused to open or operate on the database.
    #[error("sled database at {path} failed")]
    Sled {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    /// Stored bytes did not decode: the data dir is damaged or from an incompatible version.
    #[error("stored {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
}

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
