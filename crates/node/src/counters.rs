//! Counts kept between scrapes of `/metrics`: failovers, changes blocked by each rule, and
//! per listener failed TLS handshakes and refused and open connections, DNS queries by response code, hook delivery rounds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use firebreak_model::failover::Rule;
use firebreak_tls::listener;

/// Counts kept between scrapes.
#[derive(Debug, Default)]
pub struct Counters {
    pub failovers: AtomicU64,
    pub(crate) blocked_min_serving: AtomicU64,
    pub(crate) blocked_dwell: AtomicU64,
    pub(crate) blocked_max_sites_down: AtomicU64,
    /// The peer listener's failed handshakes, refused and open connections.
    pub peer_listener: Arc<listener::Counters>,
    /// The client listener's.
    pub client_listener: Arc<listener::Counters>,
    /// The admin listener's.
    pub admin_listener: Arc<listener::Counters>,
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
