//! Goodput: a surge is served at capacity. With `expect.surge_goodput_min_per_sec`, every
//! whole 5-second window of every surge (after its first second, while the rate ramps)
//! completes at least that many workload operations successfully per second. Shedding
//! what cannot be served must not cost what can: a service that collapses under the
//! excess (queueing into timeouts, retries doing the work twice, one service taking every
//! core) fails this. The lowest and mean figures are kept (`goodput_min_per_sec`,
//! `goodput_mean_per_sec`) either way.

use super::Finding;
use crate::history::{workload_start_ms, Event, Operation};
use crate::playbook::Playbook;

pub const NAME: &str = "goodput";
pub const PROPERTY: &str = "a surge is served at the goodput the playbook names, every 5 s of it";

/// Width of a goodput window.
const WINDOW_MS: u64 = 5_000;
/// The start of a surge not judged: the rate ramps and queues fill.
const RAMP_MS: u64 = 1_000;

pub fn check(playbook: &Playbook, events: &[Event], ops: &[Operation]) -> Option<Finding> {
    let min = playbook.expect.surge_goodput_min_per_sec?;
    let mut finding = Finding::new(NAME, PROPERTY);
    let start = workload_start_ms(events);
    let mut done: Vec<u64> = ops
        .iter()
        .filter(|o| o.op.is_workload() && o.is_ok())
        .filter_map(|o| o.completed_ms)
        .collect();
    done.sort_unstable();
    let (mut lowest, mut total, mut windows) = (u64::MAX, 0u64, 0u64);
    for (from, to) in playbook.surges_ms() {
        let mut at = start + from + RAMP_MS;
        while at + WINDOW_MS <= start + to {
            let done = (done.partition_point(|c| *c < at + WINDOW_MS)
                - done.partition_point(|c| *c < at)) as u64;
            let per_sec = done * 1_000 / WINDOW_MS;
            if per_sec < min {
                finding.violation(format!(
                    "{per_sec} operations/s succeeded from {} to {} of the workload, at least {min} expected",
                    super::secs(at - start),
                    super::secs(at - start + WINDOW_MS),
                ));
            }
            lowest = lowest.min(per_sec);
            total += per_sec;
            windows += 1;
            at += WINDOW_MS;
        }
    }
    if windows == 0 {
        finding.could_not_verify("no whole 5 s window inside a surge");
        return Some(finding);
    }
    finding.count("goodput_min_per_sec", lowest);
    finding.count("goodput_mean_per_sec", total / windows);
    Some(finding)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{op, playbook, start};
    use super::*;

    /// A surge from 10 s to 30 s of the workload, judged at `min` operations/s.
    fn surged(min: u64) -> Playbook {
        let mut p = playbook(
            "[{ at_secs: 10, fault: surge, target: workload, factor: 5, duration_secs: 20 }]",
        );
        p.expect.surge_goodput_min_per_sec = Some(min);
        p
    }

    /// An operation every 10 ms of the workload's first minute; from `collapse_at` ms of
    /// it, three in four refused.
    fn ops(collapse_at: u64) -> Vec<Operation> {
        (0..6_000u64)
            .map(|i| {
                let at = 1_000 + i * 10;
                op(at, at < collapse_at.saturating_add(1_000) || i % 4 == 0)
            })
            .collect()
    }

    #[test]
    fn a_surge_served_at_the_rate_passes() {
        let f = check(&surged(90), &[start()], &ops(u64::MAX)).unwrap();
        assert!(f.passed, "{:?}", f.violations);
        assert_eq!(f.get("goodput_min_per_sec"), 100);
        assert_eq!(f.get("goodput_mean_per_sec"), 100);
    }

    #[test]
    fn a_collapse_during_the_surge_is_caught() {
        let f = check(&surged(90), &[start()], &ops(21_000)).unwrap();
        assert!(!f.passed);
        assert_eq!(f.get("goodput_min_per_sec"), 25);
        assert!(
            f.violations[0].contains("25 operations/s"),
            "{:?}",
            f.violations
        );
    }

    #[test]
    fn without_the_expectation_nothing_is_judged() {
        let p = playbook("[{ at_secs: 10, fault: surge, target: workload, factor: 5 }]");
        assert!(check(&p, &[start()], &ops(0)).is_none());
    }
}
