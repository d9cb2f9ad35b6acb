//! Availability and failover time, per service, measured at the client: what users saw.
//!
//! - Availability: the share of the workload's operations that ended `ok`, per second of
//!   the workload (by invoke time) and over the whole drill.
//! - Failover time, per fault: from the first operation after the fault began that was
//!   disrupted, to the start of steady service: the first undisrupted operation after which
//!   every operation invoked within [`STEADY_MS`] was undisrupted. Disrupted means it did
//!   not end `ok`, or took longer than the steady state's p99 limit: the client library
//!   retries on other sites, so users see a site loss mostly as a stall, and a stall is
//!   what failover time must measure. A fault that disrupts nothing has a failover time of
//!   zero; a service that never steadies again has none (it failed).
//! - The steady state of the playbook (availability and p99 latency) must hold in the
//!   window before the first fault (over the operations that ended before it began) and in
//!   the last window of the workload.
//! - The playbook's expectations: the longest failover per service, and the most failed
//!   or unknown operations.

use serde::Serialize;

use super::{of_service, secs, Finding};
use crate::history::{workload_start_ms, Completion, Event, Operation};
use crate::playbook::{Playbook, ServiceKind};

pub const PROPERTY: &str =
    "each service fails over within its limit and holds its steady state before the faults and after recovery";

/// How long success must hold, unbroken, to count as recovered.
pub const STEADY_MS: u64 = 2_000;

/// One second of one service.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Second {
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    /// Latency of the operations that ended ok, milliseconds.
    pub p50_ms: u64,
    pub max_ms: u64,
}

/// The figures of one service, for the verdict and the report.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceFigures {
    pub service: ServiceKind,
    pub operations: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    /// Ok operations over all operations (1 when there were none).
    pub availability: f64,
    /// The longest failover over the faults, milliseconds; `None` if the service never
    /// steadied again after one of them.
    pub failover_ms: Option<u64>,
    pub latency_p50_ms: u64,
    pub latency_p99_ms: u64,
    /// Second by second, from the workload's start.
    pub seconds: Vec<Second>,
}

/// Computes every service's figures and checks steady state and expectations.
pub fn check(
    playbook: &Playbook,
    events: &[Event],
    ops: &[Operation],
) -> (Finding, Vec<ServiceFigures>) {
    let mut finding = Finding::new("availability", PROPERTY);
    let start = workload_start_ms(events);
    let duration_ms = u64::from(playbook.workload.duration_secs) * 1000;
    let faults: Vec<u64> = playbook
        .timeline
        .iter()
        .map(|s| start + (s.at_secs * 1000.0) as u64)
        .collect();
    let mut figures = Vec::new();
    let mut failed_total = 0;
    for service in playbook.services() {
        let mine: Vec<&Operation> = of_service(ops, service).collect();
        let slow_ms = playbook.steady_state.latency_p99_ms_max;
        let f = figures_of(service, &mine, (start, duration_ms), &faults, slow_ms);
        failed_total += f.failed + f.unknown;
        check_steady_state(&mut finding, playbook, &mine, start);
        if let Some(max) = playbook.expect.failover_secs_max.get(&service) {
            let limit = (max * 1000.0) as u64;
            match f.failover_ms {
                None => finding.violation(format!("{service}: never steady again after a fault")),
                Some(ms) if ms > limit => finding.violation(format!(
                    "{service}: failover took {}, the limit is {}",
                    secs(ms),
                    secs(limit)
                )),
                Some(_) => {}
            }
        }
        figures.push(f);
    }
    finding.count("failed_or_unknown", failed_total);
    if let Some(max) = playbook.expect.failed_max {
        if failed_total > max {
            finding.violation(format!(
                "{failed_total} operations failed or ended unknown; at most {max} expected"
            ));
        }
    }
    (finding, figures)
}

fn figures_of(
    service: ServiceKind,
    ops: &[&Operation],
    (start, duration_ms): (u64, u64),
    faults: &[u64],
    slow_ms: u64,
) -> ServiceFigures {
    let seconds_count = duration_ms.div_ceil(1000) as usize;
    let mut seconds = vec![Second::default(); seconds_count];
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); seconds_count];
    let (mut ok, mut failed, mut unknown) = (0, 0, 0);
    let mut all_latencies = Vec::new();
    for o in ops {
        let second = (o.invoked_ms.saturating_sub(start) / 1000) as usize;
        let slot = second.min(seconds_count.saturating_sub(1));
        match &o.completion {
            Some(Completion::Ok { .. }) => {
                ok += 1;
                seconds[slot].ok += 1;
                if let Some(l) = o.latency_ms() {
                    latencies[slot].push(l);
                    all_latencies.push(l);
                }
            }
            Some(Completion::Fail(_)) => {
                failed += 1;
                seconds[slot].failed += 1;
            }
            Some(Completion::Unknown(_)) | None => {
                unknown += 1;
                seconds[slot].unknown += 1;
            }
        }
    }
    for (second, l) in seconds.iter_mut().zip(latencies) {
        second.p50_ms = percentile(&l, 0.5);
        second.max_ms = l.iter().copied().max().unwrap_or(0);
    }
    let mut failover_ms = Some(0);
    for (i, at) in faults.iter().enumerate() {
        let until = faults.get(i + 1).copied().unwrap_or(u64::MAX);
        failover_ms = match (failover_ms, failover(ops, *at, until, slow_ms)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    let total = ok + failed + unknown;
    ServiceFigures {
        service,
        operations: total,
        ok,
        failed,
        unknown,
        availability: if total == 0 {
            1.0
        } else {
            ok as f64 / total as f64
        },
        failover_ms,
        latency_p50_ms: percentile(&all_latencies, 0.5),
        latency_p99_ms: percentile(&all_latencies, 0.99),
        seconds,
    }
}

/// Failover time after a fault at `from` (drill ms), looking at disruptions that start
/// before `until`; an operation slower than `slow_ms` is disrupted. `None` if service never
/// steadies again.
pub fn failover(ops: &[&Operation], from: u64, until: u64, slow_ms: u64) -> Option<u64> {
    let good = |o: &Operation| undisrupted(o, slow_ms);
    let after: Vec<&Operation> = ops
        .iter()
        .copied()
        .filter(|o| o.invoked_ms >= from)
        .collect();
    let Some(first) = after.iter().position(|o| o.invoked_ms < until && !good(o)) else {
        return Some(0);
    };
    let failed_at = after[first].invoked_ms;
    steady_from(&after[first + 1..], slow_ms).map(|at| at - failed_at)
}

/// When `ops` (in invocation order) steady: the invocation of the first undisrupted one
/// after which every one invoked within [`STEADY_MS`] was undisrupted too. `None` if
/// they never do.
pub fn steady_from(ops: &[&Operation], slow_ms: u64) -> Option<u64> {
    for (i, candidate) in ops.iter().enumerate() {
        if !undisrupted(candidate, slow_ms) {
            continue;
        }
        let steady_until = candidate.invoked_ms + STEADY_MS;
        let broken = ops[i..]
            .iter()
            .take_while(|o| o.invoked_ms < steady_until)
            .any(|o| !undisrupted(o, slow_ms));
        if !broken {
            return Some(candidate.invoked_ms);
        }
    }
    None
}

/// Succeeded within `slow_ms`.
fn undisrupted(o: &Operation, slow_ms: u64) -> bool {
    o.is_ok() && o.latency_ms().is_some_and(|l| l <= slow_ms)
}

fn check_steady_state(finding: &mut Finding, playbook: &Playbook, ops: &[&Operation], start: u64) {
    let steady = &playbook.steady_state;
    let window = u64::from(steady.window_secs) * 1000;
    let end = start + u64::from(playbook.workload.duration_secs) * 1000;
    let before = playbook
        .first_fault_secs()
        .map_or(start + window, |s| start + (s * 1000.0) as u64);
    // Before the first fault, an operation still in flight when the fault began is the
    // fault's to judge (failover), not the steady state's: only what ended before counts.
    let windows = [
        (
            "before the first fault",
            before.saturating_sub(window).max(start),
            before,
            true,
        ),
        ("at the end", end.saturating_sub(window), end, false),
    ];
    for (name, from, to, ended_before) in windows {
        let inside: Vec<&&Operation> = ops
            .iter()
            .filter(|o| (from..to).contains(&o.invoked_ms))
            .filter(|o| !ended_before || o.completed_ms.is_some_and(|c| c < to))
            .collect();
        let Some(service) = inside.first().map(|o| o.op.service()) else {
            continue;
        };
        let ok = inside.iter().filter(|o| o.is_ok()).count();
        let availability = ok as f64 / inside.len() as f64;
        if availability < steady.availability_min {
            finding.violation(format!(
                "{service}: availability {:.1}% {name} ({} to {}), steady state needs {:.1}%",
                availability * 100.0,
                secs(from - start),
                secs(to - start),
                steady.availability_min * 100.0
            ));
        }
        let latencies: Vec<u64> = inside.iter().filter_map(|o| o.latency_ms()).collect();
        let p99 = percentile(&latencies, 0.99);
        if p99 > steady.latency_p99_ms_max {
            finding.violation(format!(
                "{service}: p99 latency {p99} ms {name}, steady state allows {} ms",
                steady.latency_p99_ms_max
            ));
        }
    }
}

/// The `q` quantile (0 to 1) of `values` in ms, from an HDR histogram (3 significant
/// digits); 0 when empty.
pub fn percentile(values: &[u64], q: f64) -> u64 {
    let mut histogram =
        hdrhistogram::Histogram::<u64>::new(3).expect("3 significant digits is a valid precision");
    for &value in values {
        histogram.saturating_record(value);
    }
    if histogram.is_empty() {
        return 0;
    }
    histogram.value_at_quantile(q)
}

#[cfg(test)]
mod tests {
    use super::super::tests::op;
    use super::*;

    /// Every 100 ms an operation; failures between `down` and `up` (ms).
    fn timeline(down: u64, up: u64) -> Vec<Operation> {
        (0..100)
            .map(|i| i * 100)
            .map(|t| op(t, !(down..up).contains(&t)))
            .collect()
    }

    #[test]
    fn failover_is_first_failure_to_steady_success() {
        let ops = timeline(3_000, 5_100);
        let refs: Vec<&Operation> = ops.iter().collect();
        assert_eq!(failover(&refs, 2_500, u64::MAX, 1_000), Some(2_100));
    }

    #[test]
    fn a_fault_that_fails_nothing_takes_no_failover_time() {
        let ops = timeline(0, 0);
        let refs: Vec<&Operation> = ops.iter().collect();
        assert_eq!(failover(&refs, 2_500, u64::MAX, 1_000), Some(0));
    }

    #[test]
    fn flapping_success_is_not_recovery() {
        let mut ops = timeline(3_000, 5_000);
        ops[60] = op(6_000, false); // one more failure a second after "recovery"
        let refs: Vec<&Operation> = ops.iter().collect();
        assert_eq!(failover(&refs, 2_500, u64::MAX, 1_000), Some(3_100));
    }

    #[test]
    fn a_service_that_never_returns_has_no_failover_time() {
        let ops = timeline(3_000, 20_000);
        let refs: Vec<&Operation> = ops.iter().collect();
        assert_eq!(failover(&refs, 2_500, u64::MAX, 1_000), None);
    }

    #[test]
    fn a_stall_counts_as_disruption() {
        let mut ops = timeline(0, 0);
        for o in &mut ops[30..45] {
            o.completed_ms = Some(o.invoked_ms + 1_500); // answered, but after 1.5 s
        }
        let refs: Vec<&Operation> = ops.iter().collect();
        assert_eq!(failover(&refs, 2_500, u64::MAX, 1_000), Some(1_500));
    }

    fn steady_state_violations(ops: &[Operation]) -> Vec<String> {
        let text = "name: t\ndescription: d\ntopology:\n  sites: [a, b, c]\n  services: [{ name: login, mode: active-active }]\nworkload: { seed: 1, rate_per_sec: 10, duration_secs: 10, users: 2, mix: { login: 1 } }\nsteady_state: { availability_min: 0.99, latency_p99_ms_max: 1000, window_secs: 5 }\ntimeline:\n  - { at_secs: 5, fault: site-loss, target: a }\nexpect: {}\n";
        let playbook = Playbook::parse("t.yaml", text).unwrap();
        let mut finding = Finding::new("availability", PROPERTY);
        let refs: Vec<&Operation> = ops.iter().collect();
        check_steady_state(&mut finding, &playbook, &refs, 0);
        finding.violations
    }

    #[test]
    fn an_operation_the_fault_caught_in_flight_is_not_held_against_the_steady_state() {
        let mut ops = timeline(0, 0);
        // Invoked 100 ms before the fault at 5 s; its answer never came (the site died).
        ops[49] = op(4_900, false);
        ops[49].completed_ms = Some(6_700);
        ops[49].completion = Some(Completion::Unknown("connection reset".into()));
        assert_eq!(steady_state_violations(&ops), Vec::<String>::new());
        // One that failed before the fault did break it.
        ops[40] = op(4_000, false);
        let violations = steady_state_violations(&ops);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            violations[0].contains("before the first fault"),
            "{violations:?}"
        );
    }

    #[test]
    fn percentiles() {
        assert_eq!(percentile(&[5, 1, 3, 2, 4], 0.5), 3);
        assert_eq!(percentile(&(1..=100).collect::<Vec<_>>(), 0.99), 99);
        assert_eq!(percentile(&[], 0.99), 0);
    }
}
