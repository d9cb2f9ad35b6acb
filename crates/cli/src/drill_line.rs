//! A drill's verdict in one line, for the commands that run many (`--repeat`, `--seeds`):
//! what failed over how fast, what was lost, and the first thing that failed.

use firebreak_chaos::report::Report;

/// `PASSED  faults 1  failover messaging 1.2 s, ...  lost or duplicated 0`, and for a run
/// that did not pass, why: the stop, or the first failed checker and its first violation.
pub fn verdict(report: &Report) -> String {
    let verdict = if report.passed { "PASSED" } else { "FAILED" };
    let failover: Vec<String> = report
        .services
        .iter()
        .map(|s| match s.failover_secs {
            Some(f) => format!("{} {f:.1} s", s.service),
            None => format!("{} -", s.service),
        })
        .collect();
    let lost: u64 = report.services.iter().map(|s| s.lost + s.duplicated).sum();
    let why = match report.passed {
        true => String::new(),
        false => format!("  {}", first_failure(report)),
    };
    format!(
        "{verdict}  faults {}  failover {}  lost or duplicated {lost}{why}",
        report.timeline.len(),
        failover.join(", ")
    )
}

/// Why a run did not pass, in a phrase: the stop that ended it, or the failed checkers,
/// the first with its first violation (`failed: quiet-routing (messaging: ...), dwell`).
pub fn first_failure(report: &Report) -> String {
    if let Some(why) = &report.aborted {
        return format!("stopped: {why}");
    }
    let failing: Vec<_> = report.findings.iter().filter(|f| !f.passed).collect();
    let Some(first) = failing.first() else {
        return "failed, yet no checker says why (a bug in the report)".into();
    };
    let mut text = format!("failed: {}", first.checker);
    if let Some(violation) = first.violations.first() {
        text.push_str(&format!(" ({violation})"));
    }
    for other in &failing[1..] {
        text.push_str(&format!(", {}", other.checker));
    }
    text
}
