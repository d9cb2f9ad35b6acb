//! Retry delays that never turn an outage into a flood: capped exponential backoff with
//! full jitter, and the server's `Retry-After` honoured.
//!
//! ```text
//!   attempt n  ─► ceiling = min(cap, base × 2^n) ─► delay = ceiling × u,  u ∈ [0, 1)
//!   Retry-After: r ─► delay = r + u × max(ceiling, min(r, cap))
//! ```
//!
//! `Retry-After` is a floor, never a rendezvous: every client of an overloaded or lost
//! site is told the same `r`, so waiting exactly `r` would bring them all back in the same
//! instant. They wait `r` and then spread over a window as wide as `r` (bounded by `cap`).
//!
//! Full jitter (AWS architecture blog, "Exponential Backoff And Jitter") spreads the
//! clients that lost the same site at the same instant over the whole window instead of
//! letting them return in lockstep. Pure: the uniform sample `u` comes in as an argument,
//! so a seeded run is reproducible.

use std::time::Duration;

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first window.
    pub base: Duration,
    /// The largest window.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// Between push-stream reconnects. A broken stream usually means a lost instance or
    /// site, which every client on it lost at the same instant: the first window is wide
    /// (1 s) so that they return spread out (10,000 such clients: about a tenth per 100 ms)
    /// instead of in one burst, at the cost of a pushed message arriving up to 1 s later.
    pub const STREAM: Backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(30),
    };

    /// The window of attempt `attempt` (0-based): `min(cap, base × 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The backoff of a push stream's reconnect `failures` (0: the first since a stream was
    /// open) when the servers suggested `window`: the first reconnect spreads over the
    /// whole window, since every client of a lost site starts it at the same instant; a
    /// client whose reconnect then failed is already out of step with the others, so it
    /// backs off from `self` (the stream backoff) instead of from another whole window,
    /// which would put the unlucky ones back after two or three windows.
    pub fn reconnect(self, window: Option<Duration>, failures: u32) -> Backoff {
        match window {
            Some(w) if failures == 0 => Backoff {
                base: w,
                cap: self.cap.max(w),
            },
            _ => self,
        }
    }

    /// The delay before retry `attempt`, from a uniform sample `u` in [0, 1) and the
    /// server's `Retry-After`, if it sent one: never sooner than it asked, and jittered
    /// beyond it.
    pub fn delay(&self, attempt: u32, u: f64, retry_after: Option<Duration>) -> Duration {
        let u = u.clamp(0.0, 1.0);
        let ceiling = self.ceiling(attempt);
        match retry_after {
            Some(after) => after + ceiling.max(after.min(self.cap)).mul_f64(u),
            None => ceiling.mul_f64(u),
        }
    }
}

/// Parses a `Retry-After` header given in seconds (the HTTP-date form is not used here).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
        .filter(|d| *d <= Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn a_failed_reconnect_backs_off_from_the_stream_backoff_not_another_window() {
        let window = Some(Duration::from_secs(20));
        let first = Backoff::STREAM.reconnect(window, 0);
        assert_eq!(
            first.delay(0, 0.99, None),
            Duration::from_secs(20).mul_f64(0.99)
        );
        let second = Backoff::STREAM.reconnect(window, 1);
        assert!(
            second.delay(1, 0.99, None) <= Duration::from_secs(2),
            "a reconnect that failed inside a 20 s window waits {:?}",
            second.delay(1, 0.99, None)
        );
        assert_eq!(Backoff::STREAM.reconnect(None, 0), Backoff::STREAM);
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let b = Backoff::default();
        let ms: Vec<u128> = (0..9).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(
            ms,
            vec![100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        assert_eq!(b.ceiling(200), b.cap);
    }

    #[test]
    fn retry_after_is_a_floor_with_jitter_beyond_it() {
        let b = Backoff::default();
        // Spread over a window as wide as the wait, or the backoff's own when wider.
        assert_eq!(
            b.delay(0, 0.5, Some(Duration::from_secs(2))),
            Duration::from_secs(3)
        );
        assert_eq!(
            b.delay(6, 0.9, Some(Duration::from_secs(1))),
            Duration::from_millis(1000 + 5760)
        );
        // A huge Retry-After is honoured, with no more jitter than the cap.
        assert_eq!(
            b.delay(0, 0.5, Some(Duration::from_secs(600))),
            Duration::from_secs(605)
        );
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("soon"), None);
    }

    /// The busiest 100 ms window's share of the first three reconnects of `clients` that
    /// all lost their site at the same instant.
    fn busiest_share(backoff: Backoff, clients: usize, seed: u64) -> f64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut windows = std::collections::BTreeMap::<u128, usize>::new();
        for _ in 0..clients {
            let mut at = Duration::ZERO;
            for attempt in 0..3 {
                at += backoff.delay(attempt, rng.gen::<f64>(), None);
                *windows.entry(at.as_millis() / 100).or_default() += 1;
            }
        }
        *windows.values().max().unwrap() as f64 / (3 * clients) as f64
    }

    /// 10,000 clients all told `Retry-After: 1` (as every 503 and 429 says) must not come
    /// back together one second later: the 2011 retry-DDoS again.
    #[test]
    fn clients_told_to_retry_after_one_second_do_not_return_in_lockstep() {
        const SEED: u64 = 20110311;
        let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
        let backoff = Backoff::default();
        let mut windows = std::collections::BTreeMap::<u128, usize>::new();
        for _ in 0..10_000 {
            let at = backoff.delay(0, rng.gen::<f64>(), Some(Duration::from_secs(1)));
            assert!(at >= Duration::from_secs(1), "sooner than the server asked");
            *windows.entry(at.as_millis() / 100).or_default() += 1;
        }
        let share = *windows.values().max().unwrap() as f64 / 10_000.0;
        assert!(
            share < 0.15,
            "busiest 100 ms window after Retry-After took {share:.3} of the retries (seed {SEED})"
        );
    }

    /// 10,000 clients lose their site at once. With full jitter from a 500 ms base no 100 ms
    /// window takes more than 15% of their reconnects; a naive client that retries at once
    /// puts every one of them in the same window.
    #[test]
    fn reconnects_of_many_clients_spread_over_time() {
        const SEED: u64 = 20221015;
        let jittered = Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        };
        let share = busiest_share(jittered, 10_000, SEED);
        assert!(
            share < 0.15,
            "busiest 100 ms window took {share:.3} of reconnects (seed {SEED})"
        );
        let naive = Backoff {
            base: Duration::ZERO,
            cap: Duration::ZERO,
        };
        assert_eq!(busiest_share(naive, 10_000, SEED), 1.0);
    }
}
