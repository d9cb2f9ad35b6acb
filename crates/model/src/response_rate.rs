//! Response-rate limiting of the DNS server's UDP answers, per source network: a UDP
//! query's source address can be forged, so without a limit the server answers a flood
//! aimed at a victim (reflection). Over TCP the source is real and nothing is limited.
//!
//! ```text
//!   source network       an IPv4 /24, an IPv6 /56 (as BIND's rate limiting counts them)
//!   each one             a bucket of `burst` answers, refilled at `per_sec`
//!   over its rate        every second query: an empty answer with TC set (a real client
//!                        asks again over TCP); the others: no answer at all
//!   sources tracked      at most `max_sources`; when full, idle ones are forgotten (at
//!                        most once a second), and a new source is answered with TC
//! ```
//!
//! A truncated answer is no larger than the query, so a forged flood gains the attacker
//! nothing, while a real resolver behind a busy network still gets its answer over TCP.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What to do with one UDP query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answer it.
    Answer,
    /// Answer with an empty, truncated message: ask again over TCP.
    Truncate,
    /// Send nothing.
    Drop,
}

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
    limited: u64,
}

/// The buckets of every source network seen lately.
#[derive(Debug, Clone)]
pub struct ResponseRate {
    per_sec: f64,
    burst: f64,
    max_sources: usize,
    buckets: HashMap<IpAddr, Bucket>,
    pruned_at_ms: Option<u64>,
}

impl ResponseRate {
    /// `per_sec` answers a second per source network, `burst` at once, for at most
    /// `max_sources` networks.
    pub fn new(per_sec: u32, burst: u32, max_sources: usize) -> Self {
        Self {
            per_sec: f64::from(per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
            pruned_at_ms: None,
        }
    }

    /// The verdict on a UDP query from `source` at `now_ms` (a monotonic clock).
    pub fn check(&mut self, source: IpAddr, now_ms: u64) -> Verdict {
        let network = network_of(source);
        if !self.buckets.contains_key(&network) && !self.make_room(now_ms) {
            return Verdict::Truncate;
        }
        let (per_sec, burst) = (self.per_sec, self.burst);
        let bucket = self.buckets.entry(network).or_insert(Bucket {
            tokens: burst,
            at_ms: now_ms,
            limited: 0,
        });
        let elapsed = now_ms.saturating_sub(bucket.at_ms) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(burst);
        bucket.at_ms = now_ms;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Verdict::Answer;
        }
        bucket.limited += 1;
        if bucket.limited % 2 == 1 {
            Verdict::Truncate
        } else {
            Verdict::Drop
        }
    }

    /// Source networks tracked now.
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }

    /// Whether a new source fits, after forgetting the idle ones (those whose bucket would
    /// be full again) at most once a second.
    fn make_room(&mut self, now_ms: u64) -> bool {
        if self.buckets.len() < self.max_sources {
            return true;
        }
        if self.pruned_at_ms.is_some_and(|at| now_ms < at + 1000) {
            return false;
        }
        self.pruned_at_ms = Some(now_ms);
        let refill_ms = (self.burst / self.per_sec * 1000.0).ceil() as u64;
        self.buckets
            .retain(|_, b| now_ms.saturating_sub(b.at_ms) < refill_ms);
        self.buckets.len() < self.max_sources
    }
}

/// The network a source counts in: its /24 (IPv4) or /56 (IPv6).
fn network_of(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & 0xffff_ff00)),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 72) - 1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate_and_alternates_tc_and_silence() {
        let mut rate = ResponseRate::new(10, 5, 100);
        let a = ip("192.0.2.1");
        let first: Vec<Verdict> = (0..9).map(|_| rate.check(a, 0)).collect();
        use Verdict::*;
        assert_eq!(
            first,
            [Answer, Answer, Answer, Answer, Answer, Truncate, Drop, Truncate, Drop]
        );
        assert_eq!(rate.check(a, 100), Answer, "one token back after 100 ms");
        assert_ne!(rate.check(a, 100), Answer);
        assert_eq!(rate.check(a, 10_000), Answer, "refilled to the burst");
    }

    #[test]
    fn a_network_is_counted_whole_and_another_keeps_its_own_bucket() {
        let mut rate = ResponseRate::new(1, 2, 100);
        assert_eq!(rate.check(ip("192.0.2.1"), 0), Verdict::Answer);
        assert_eq!(rate.check(ip("192.0.2.200"), 0), Verdict::Answer);
        assert_ne!(rate.check(ip("192.0.2.7"), 0), Verdict::Answer, "same /24");
        assert_eq!(rate.check(ip("198.51.100.1"), 0), Verdict::Answer);
        assert_eq!(rate.check(ip("2001:db8:0:1::1"), 0), Verdict::Answer);
        assert_eq!(rate.check(ip("2001:db8:0:1:ffff::9"), 0), Verdict::Answer);
        assert_ne!(
            rate.check(ip("2001:db8:0:1::2"), 0),
            Verdict::Answer,
            "same /56"
        );
        assert_eq!(rate.check(ip("2001:db8:0:100::1"), 0), Verdict::Answer);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_idle_sources() {
        let mut rate = ResponseRate::new(10, 10, 2);
        assert_eq!(rate.check(ip("10.0.1.1"), 0), Verdict::Answer);
        assert_eq!(rate.check(ip("10.0.2.1"), 0), Verdict::Answer);
        assert_eq!(rate.check(ip("10.0.3.1"), 0), Verdict::Truncate, "full");
        assert_eq!(
            rate.check(ip("10.0.3.1"), 500),
            Verdict::Truncate,
            "pruned once a second at most"
        );
        assert_eq!(rate.sources(), 2);
        assert_eq!(
            rate.check(ip("10.0.3.1"), 1_600),
            Verdict::Answer,
            "the idle ones forgotten"
        );
        assert_eq!(rate.sources(), 1);
    }
}
