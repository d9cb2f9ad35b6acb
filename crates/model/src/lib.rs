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
pub use ids::{Member, NodeId, SiteId};
