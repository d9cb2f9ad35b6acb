//! firebreak's domain: the types every crate shares and the pure logic of both Raft
//! groups' state machines.
//!
//! ```text
//!   committed log entry ──► apply(&mut state, command) ──► response (+ events)
//!                             (kv::KvStore, control::ControlState)
//! ```
//!
//! Everything here is deterministic: no I/O, no clock, no randomness, no tokio or sled.
//! Time and inputs come in as arguments, so the same code runs in the node, in unit tests
//! and in simulations, and every replica that applies the same log reaches the same state.
//!
//! `failover::decide` is the whole automatic failover policy as one pure function; the
//! node's engine calls it on the control leader and proposes what it returns.

pub mod control;
pub mod error;
pub mod failover;
pub mod ids;
pub mod kv;
pub mod topology;
pub mod watch;

pub use error::{InvalidInput, Result};

/// Response header a service sets when it sheds a request because it is at capacity (with
/// 503 and Retry-After). A gateway relays such an answer rather than trying the other
/// sites: they are most likely as busy, and trying each of them from each gateway the
/// client tries would multiply the load of an overload by the number of sites.
pub const SHED_HEADER: &str = "x-firebreak-shed";

/// Response header of a push stream: the interval, in milliseconds, of the keepalive
/// comments the service sends on it when idle. A client that hears nothing for
/// [`stream_silence_limit`] of it takes the stream as dead (a partition drops packets
/// without a reset, and TCP alone would wait many minutes) and reconnects elsewhere.
pub const KEEPALIVE_HEADER: &str = "x-firebreak-keepalive-ms";

/// How long a push stream advertising `keepalive` may stay silent before its client takes
/// it as dead: two keepalives and a second, so one late comment on a busy site is not a
/// reconnect.
pub fn stream_silence_limit(keepalive: std::time::Duration) -> std::time::Duration {
    keepalive.saturating_mul(2) + std::time::Duration::from_secs(1)
}
pub use ids::{Member, NodeId, SiteId};
