//! Errors a node reports when it cannot start or keep running. Request-level errors are
//! [`crate::reply::ApiError`], which reach clients as JSON.

use std::path::PathBuf;

/// Why a node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is malformed or breaks a rule; nothing was started.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Config {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The data dir was written by another node or cluster; refusing it protects both.
    #[error("data dir {} belongs to node {found_node} of cluster {found_cluster:?}, not node {node} of cluster {cluster:?}; point data_dir at this node's own directory, or move the old one away if it is no longer needed", path.display())]
    DataDirMismatch {
        path: PathBuf,
        found_node: u64,
        found_cluster: String,
        node: u64,
        cluster: String,
    },
    /// A file or directory could not be read or written.
    #[error("failed to access {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The Raft storage could not be opened.
    #[error("failed to open the {group} group's store")]
    Store {
        group: &'static str,
        #[source]
        source: firebreak_store::Error,
    },
    /// The listen address could not be bound.
    #[error("failed to listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A store failed to make writes durable (a failed fsync): the node stopped rather than
    /// acknowledge anything the kernel may have dropped.
    #[error("the {group} group's store stopped: {message}")]
    StoreFailed {
        group: &'static str,
        message: String,
    },
    /// The node's certificates could not be loaded or do not name this node.
    #[error("TLS: {0}")]
    Tls(String),
    /// The cluster knows this node's id, yet its disk is empty: it has lost its votes and
    /// must not take part under this id again.
    #[error("{0}")]
    IdRefused(String),
    /// openraft refused to start or stopped with a fatal error.
    #[error("the {group} Raft group failed: {message}")]
    Raft {
        group: &'static str,
        message: String,
    },
}

impl Error {
    /// Why the node stops once openraft's core of `group` quit with `fatal`. A storage
    /// error is a stopped store (exit 11, whoever saw it first: the core or the store's
    /// flusher), told in the flusher's words when it recorded why (`store_reason`).
    pub(crate) fn from_fatal(
        group: &'static str,
        fatal: &openraft::error::Fatal<firebreak_model::NodeId>,
        store_reason: Option<String>,
    ) -> Self {
        match fatal {
            openraft::error::Fatal::StorageError(err) => Error::StoreFailed {
                group,
                message: store_reason.unwrap_or_else(|| {
                    format!("openraft stopped the group on a storage error: {err}")
                }),
            },
            other => Error::Raft {
                group,
                message: other.to_string(),
            },
        }
    }
}

/// Result of node operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use openraft::error::Fatal;
    use openraft::{StorageError, StorageIOError};

    use super::Error;

    fn storage_error() -> Fatal<firebreak_model::NodeId> {
        let io = std::io::Error::other("Input/output error");
        Fatal::StorageError(StorageError::from(StorageIOError::write_logs(&io)))
    }

    /// The exit code a unit relies on must not depend on which task saw the failed fsync
    /// first: openraft's core quitting on it is a stopped store, like the flusher's signal
    /// (seen in CI: the core quit first and the node exited 1, not 11).
    #[test]
    fn a_core_that_quit_on_a_storage_error_is_a_stopped_store() {
        let flusher = "the store failed to make writes durable (Input/output error)";
        match Error::from_fatal("state", &storage_error(), Some(flusher.into())) {
            Error::StoreFailed { group, message } => {
                assert_eq!((group, message.as_str()), ("state", flusher));
            }
            other => panic!("expected StoreFailed, got {other:?}"),
        }
        match Error::from_fatal("control", &storage_error(), None) {
            Error::StoreFailed { message, .. } => {
                assert!(message.contains("Input/output error"), "{message}");
            }
            other => panic!("expected StoreFailed, got {other:?}"),
        }
    }

    #[test]
    fn a_core_that_panicked_is_a_raft_failure() {
        assert!(matches!(
            Error::from_fatal("state", &Fatal::Panicked, None),
            Error::Raft { group: "state", .. }
        ));
    }
}
