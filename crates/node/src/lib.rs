//! The firebreak node: one per site, hosting both Raft groups and serving their APIs.
//!
//! ```text
//!                 ┌───────────────────── firebreak node ─────────────────────┐
//!   peers ─HTTP─► │ /raft/control/*  ─► Raft<control> ─► sled (control/)     │
//!                 │ /raft/state/*    ─► Raft<state>   ─► sled (state/)       │
//!   clients ─HTTP►│ /v1/* api ─► writes: batch (state) / Group::write         │
//!                 │              reads, watch: the local replica             │
//!                 └──────────────────────────────────────────────────────────┘
//! ```
//!
//! The two groups never share a log, a store, a flusher or an HTTP connection pool, so
//! service data (the `state` group) cannot delay failover decisions (the `control` group).
//! The pure logic lives in `firebreak_model`; this crate is the I/O around it.
//!
//! The failover runtime (`failover`) renews this site's lease, probes its endpoints and,
//! on the control leader, runs `firebreak_model::failover::decide`; `operator` serves the
//! controls and views, `metrics` the Prometheus text.
//!
//! Caveats: no TLS, and no authentication on the Raft, key-value and internal endpoints
//! (only operator endpoints take tokens): bind to a private network. Membership is fixed
//! at bootstrap (no add/remove commands yet).

pub mod api;
pub mod auth;
pub mod batch;
pub mod config;
mod error;
pub mod failover;
pub mod gateway;
pub mod group;
mod identity;
pub mod metrics;
pub mod network;
pub mod node;
pub mod operator;

pub use config::NodeConfig;
pub use error::{Error, Result};
pub use node::{run, start, RunningNode};
