//! Surge recovery: the excess leaves no backlog. With `expect.surge_recovery_secs_max`,
//! every service is steady again (see `availability`: an undisrupted operation, and only
//! undisrupted ones for 2 s after it) within that long after each surge ends. Queues that
//! hold abandoned work, or clients still backing off in lockstep, fail this. The slowest
//! recovery is kept (`recovery_ms`) either way.

use super::availability::steady_from;
use super::{of_service, secs, Finding};
use crate::history::{workload_start_ms, Event, Operation};
use crate::playbook::Playbook;

pub const NAME: &str = "surge-recovery";
pub const PROPERTY: &str = "every service is steady again soon after a surge ends";

pub fn check(playbook: &Playbook, events: &[Event], ops: &[Operation]) -> Option<Finding> {
    let max_secs = playbook.expect.surge_recovery_secs_max?;
    let mut finding = Finding::new(NAME, PROPERTY);
    let mut slowest = 0;
    let start = workload_start_ms(events);
    let slow_ms = playbook.steady_state.latency_p99_ms_max;
    for (_, to) in playbook.surges_ms() {
        let ended = start + to;
        for service in playbook.services() {
            let after: Vec<&Operation> = of_service(ops, service)
                .filter(|o| o.invoked_ms >= ended)
                .collect();
            match steady_from(&after, slow_ms) {
                Some(at) => {
                    let took = at - ended;
                    slowest = slowest.max(took);
                    if took as f64 > max_secs * 1_000.0 {
                        finding.violation(format!(
                            "{service}: steady {} after the surge ended at {}, within {max_secs} s expected",
                            secs(took),
                            secs(to),
                        ));
                    }
                }
                None => finding.violation(format!(
                    "{service}: never steady again after the surge ended at {}",
                    secs(to)
                )),
            }
        }
    }
    finding.count("recovery_ms", slowest);
    Some(finding)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{op, playbook, start};
    use super::*;

    /// A surge from 10 s to 30 s of the workload; operations every 100 ms fail from 10 s
    /// until `recovered_at` ms of the workload.
    fn run(recovered_at: u64) -> Finding {
        let mut p = playbook(
            "[{ at_secs: 10, fault: surge, target: workload, factor: 5, duration_secs: 20 }]",
        );
        p.expect.surge_recovery_secs_max = Some(5.0);
        let ops: Vec<Operation> = (0..600u64)
            .map(|i| {
                op(
                    1_000 + i * 100,
                    !(10_000..recovered_at).contains(&(i * 100)),
                )
            })
            .collect();
        check(&p, &[start()], &ops).unwrap()
    }

    #[test]
    fn steady_within_the_bound_passes() {
        let f = run(31_500);
        assert!(f.passed, "{:?}", f.violations);
        assert_eq!(f.get("recovery_ms"), 1_500);
    }

    #[test]
    fn a_backlog_after_the_surge_is_caught() {
        let f = run(38_000);
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("steady 8.0 s after"),
            "{:?}",
            f.violations
        );
    }

    #[test]
    fn never_steady_again_is_caught() {
        let f = run(u64::MAX);
        assert!(
            f.violations[0].contains("never steady"),
            "{:?}",
            f.violations
        );
    }
}
