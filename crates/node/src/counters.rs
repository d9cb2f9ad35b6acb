//! Counts kept between scrapes of `/metrics`: failovers, changes blocked by each rule, and
//! failed TLS handshakes per listener, DNS queries by response code, hook delivery rounds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use firebreak_model::failover::Rule;

/// Counts kept between scrapes.
#[derive(Debug, Default)]
pub struct Counters {
    pub failovers: AtomicU64,
    pub(crate) blocked_min_serving: AtomicU64,
    pub(crate) blocked_dwell: AtomicU64,
    pub(crate) blocked_max_sites_down: AtomicU64,
    /// Failed TLS handshakes on the peer listener.
    pub peer_handshake_failures: Arc<AtomicU64>,
    /// Failed TLS handshakes on the client listener.
    pub client_handshake_failures: Arc<AtomicU64>,
    /// Failed TLS handshakes on the admin listener.
    pub admin_handshake_failures: Arc<AtomicU64>,
    /// DNS queries answered, by response code.
    pub dns: crate::dns::DnsCounters,
    /// Routing hooks' delivery rounds, by hook and outcome.
    pub hooks: crate::hooks::HookCounters,
}

impl Counters {
    /// Counts one automatic change blocked by `rule`.
    pub fn blocked(&self, rule: Rule) {
        let counter = match rule {
            Rule::MinServing => &self.blocked_min_serving,
            Rule::Dwell => &self.blocked_dwell,
            Rule::MaxSitesDown => &self.blocked_max_sites_down,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
