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

pub mod append_budget;
pub mod control;
mod control_input;
pub mod dns;
pub mod election_gate;
pub mod error;
pub mod failover;
pub mod grant;
pub mod hooks;
pub mod ids;
pub mod kv;
pub mod membership;
pub mod node_order;
pub mod request_path;
pub mod response_rate;
pub mod retry;
pub mod topology;
pub mod watch;

pub use control_input::MAX_ACTOR_NAME_BYTES;
pub use error::{InvalidInput, Result};
pub use ids::{Member, NodeId, SiteId};

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

/// Request header: how many milliseconds its caller will wait for an answer, counted from
/// when the request was sent. Each hop passes on what is left of it, and drops work whose
/// deadline has passed: its caller has given up, and finishing it would only take capacity
/// from requests that can still be answered in time.
pub const DEADLINE_HEADER: &str = "x-firebreak-deadline-ms";

/// Longest deadline a hop believes.
pub const MAX_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// The deadline a [`DEADLINE_HEADER`] value gives, at most [`MAX_DEADLINE`]; `None` for a
/// value that is not a number of milliseconds.
pub fn parse_deadline(value: &str) -> Option<std::time::Duration> {
    let ms: u64 = value.trim().parse().ok()?;
    Some(std::time::Duration::from_millis(ms).min(MAX_DEADLINE))
}

/// Response header of a push stream: the window, in milliseconds, over which its clients
/// should spread their reconnects when it ends (a server sizes it to its fleet: what the
/// surviving sites can take). It overrides the client's own first backoff window, as an
/// SSE `retry:` field in an event does.
pub const RECONNECT_WINDOW_HEADER: &str = "x-firebreak-reconnect-window-ms";

/// How long a push stream advertising `keepalive` may stay silent before its client takes
/// it as dead: two keepalives and a second, so one late comment on a busy site is not a
/// reconnect.
pub fn stream_silence_limit(keepalive: std::time::Duration) -> std::time::Duration {
    keepalive.saturating_mul(2) + std::time::Duration::from_secs(1)
}

/// The gateway a push stream reconnects to after the one at `current` ended or failed:
/// one picked with `jitter` (uniform in `[0, 1)`) among those not in `avoid` (the ones
/// that ended or failed since the client last had a stream open), so that the clients
/// of a lost site spread over the survivors and none goes back to a dead site while an
/// untried one is left. When every other gateway is to be avoided, any other one; with a
/// single gateway, that one.
pub fn next_gateway(current: usize, avoid: &[bool], jitter: f64) -> usize {
    let count = avoid.len();
    let others = (0..count).filter(|&g| g != current);
    let fresh: Vec<usize> = others.clone().filter(|&g| !avoid[g]).collect();
    let candidates = if fresh.is_empty() {
        others.collect()
    } else {
        fresh
    };
    if candidates.is_empty() {
        return current;
    }
    let pick = (jitter.clamp(0.0, 1.0) * candidates.len() as f64) as usize;
    candidates[pick.min(candidates.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_avoids_the_gateways_that_just_failed() {
        // Three gateways: the stream at 0 ended and 1 refused; only 2 is left to try.
        for jitter in [0.0, 0.3, 0.5, 0.99] {
            assert_eq!(next_gateway(1, &[true, true, false], jitter), 2);
        }
        // Nothing failed yet: the jitter spreads the clients over every other gateway.
        let picks: Vec<usize> = [0.0, 0.49, 0.5, 0.99]
            .iter()
            .map(|&j| next_gateway(0, &[true, false, false], j))
            .collect();
        assert_eq!(picks, [1, 1, 2, 2]);
    }

    #[test]
    fn when_all_failed_any_other_gateway_will_do() {
        assert_eq!(next_gateway(2, &[true, true, true], 0.0), 0);
        assert_eq!(next_gateway(2, &[true, true, true], 0.9), 1);
        assert_eq!(next_gateway(0, &[true], 0.5), 0, "one gateway: that one");
        assert_eq!(
            next_gateway(0, &[false, true], 1.0),
            1,
            "jitter 1.0 stays in range"
        );
    }
}
