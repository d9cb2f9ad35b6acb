//! The drill harness's errors: the kinds a caller acts on.

/// Why a drill could not be checked or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The playbook breaks a rule; nothing ran.
    #[error("{file}:{line}:{column}: {message}")]
    Playbook {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The ssh driver's inventory breaks a rule; nothing ran.
    #[error("{file}:{line}:{column}: {message}")]
    Inventory {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The playbook file could not be read.
    #[error("failed to read {file}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The drill could not start or finish its setup (ports taken, a site that never came
    /// up): no verdict about the services.
    #[error("drill could not run: {0}")]
    CouldNotRun(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
