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

/// Result of node operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
