//! The firebreak node: one per site, hosting both Raft groups and serving their APIs.
//!
//! ```text
//!                      ┌───────────────────── firebreak node ─────────────────────┐
//!   peers ─mTLS─► peer │ access::require_member ─► /raft/control/* ─► Raft<control>│
//!                      │   /raft/state/* ─► Raft<state>; /v1/internal/control;     │
//!                      │   writes forwarded to this node as leader                 │
//!   clients ─TLS► client│ access::client_credentials ─► /v1/kv,txn,watch ─► writes:│
//!                      │   batch (state); reads, watch: local replica; gateway     │
//!   operators ─TLS► admin│ operator endpoints (token), status, /metrics            │
//!                      └──────────────────────────────────────────────────────────┘
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
//! `firebreak_tls::listener` accepts connections and completes their TLS handshakes off
//! the accept path;
//! `access` decides who may call what (docs/security.md); the admin listener serves
//! operator commands, status and metrics (`api::admin_routes`). Caveat: membership is
//! fixed at bootstrap (no add/remove commands yet).

pub mod access;
pub mod api;
pub mod auth;
pub mod batch;
pub mod check;
mod clock;
pub mod config;
mod contact;
pub mod context;
mod counters;
pub mod dns;
pub mod election_gate;
mod error;
pub mod failover;
pub mod gateway;
pub mod group;
pub mod hooks;
mod id_check;
mod identity;
pub mod membership;
mod membership_step;
pub mod metrics;
pub mod network;
pub mod node;
pub mod operator;
pub mod peer_answer;
pub mod raft_wire;
mod reply;
mod routes;
pub mod sabotage;
pub mod service_route;
mod watchers;

pub use config::NodeConfig;
pub use error::{Error, Result};
pub use node::{run, start, RunningNode};
