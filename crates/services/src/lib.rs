//! Reference services that drills keep alive, and the client library that talks to them
//! without ever amplifying an outage.
//!
//! ```text
//!   client ── backoff (full jitter, Retry-After) ──► service ── StateClient ──► node /v1
//!                                                    (no state of its own)
//! ```
//!
//! So far: `payments` (accounts, transfers with idempotency keys as one compare-and-swap
//! transaction), `state` (the services' client of the state group), `backoff` (the retry
//! policy). Caveats: messaging with push streams, login, the site-aware gateway and the
//! typed client that retries across gateways come next (issue 4 is not finished).

pub mod backoff;
pub mod login;
pub mod messaging;
pub mod payments;
pub mod state;
