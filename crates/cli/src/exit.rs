//! Exit codes, documented in the README so that scripts can act on them.
//!
//! | code | meaning                                                        |
//! |------|----------------------------------------------------------------|
//! | 0    | success                                                        |
//! | 1    | any other failure                                              |
//! | 2    | bad usage, config or input: nothing was changed                |
//! | 3    | the key does not exist (`kv get`)                              |
//! | 4    | no node could serve the request: nothing was changed           |
//! | 5    | outcome unknown: the write may or may not have committed       |
//! | 6    | the data dir belongs to another node or cluster                |
//! | 7    | a safety rule blocked the change (the message names it)        |
//! | 8    | no valid operator token                                        |
//! | 9    | a drill ran and an expectation failed (the verdict says which) |
//! | 10   | a drill could not run (ports taken, sites never came up) or    |
//! |      | was interrupted: no verdict                                    |
//! | 11   | the node stopped: its disk failed to make writes durable        |
//! |      | (a failed fsync), or a store refused a write; check the disk,   |
//! |      | then restart it                                                 |

use std::fmt;

/// An error that carries its exit code.
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

pub const USAGE: i32 = 2;
pub const NOT_FOUND: i32 = 3;
pub const UNAVAILABLE: i32 = 4;
pub const UNKNOWN: i32 = 5;
pub const DATA_DIR: i32 = 6;
pub const BLOCKED: i32 = 7;
pub const UNAUTHORIZED: i32 = 8;
pub const DRILL_FAILED: i32 = 9;
pub const DRILL_NOT_RUN: i32 = 10;
pub const STORE_FAILED: i32 = 11;

/// Builds an error with an exit code.
pub fn fail(code: i32, message: impl Into<String>) -> anyhow::Error {
    Exit {
        code,
        message: message.into(),
    }
    .into()
}

/// The exit code for an error: its own if it carries one, else by kind, else 1.
pub fn code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(exit) = cause.downcast_ref::<Exit>() {
            return exit.code;
        }
        if let Some(node) = cause.downcast_ref::<firebreak_node::Error>() {
            return match node {
                firebreak_node::Error::Config { .. } => USAGE,
                firebreak_node::Error::DataDirMismatch { .. }
                | firebreak_node::Error::IdRefused(_) => DATA_DIR,
                firebreak_node::Error::StoreFailed { .. } => STORE_FAILED,
                _ => 1,
            };
        }
    }
    1
}
