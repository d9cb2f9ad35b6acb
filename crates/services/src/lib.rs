//! Reference services that drills keep alive, and the client library that talks to them
//! without ever amplifying an outage.
//!
//! ```text
//!   client ── backoff (full jitter, Retry-After) ──► service ── StateClient ──► node /v1
//!                                                    (no state of its own)
//! ```
//!
//! - `messaging`: conversations, per-conversation sequence numbers, `client_msg_id`
//!   dedupe, server-sent-event push streams that resume from `Last-Event-ID`;
//! - `payments`: accounts, transfers with idempotency keys as one compare-and-swap txn;
//! - `login`: argon2 password hashes, sessions valid in every site;
//! - `client`: the typed client over every gateway, with `backoff` (full jitter,
//!   Retry-After) and honest outcomes; `state`: the services' client of the state group.
//!
//! The gateway that routes `/{service}/...` to a serving site lives in the node.

pub mod backoff;
pub mod client;
mod fence;
mod http;
pub mod login;
pub mod messaging;
pub mod payments;
pub mod push;
mod sabotage;
pub mod state;
mod stripes;

/// The `retry_safe` routes of reference service `name` for a topology (empty for a name
/// that is not one).
pub fn retry_safe(name: &str) -> &'static [&'static str] {
    match name {
        "messaging" => messaging::RETRY_SAFE,
        "payments" => payments::RETRY_SAFE,
        "login" => login::RETRY_SAFE,
        _ => &[],
    }
}
