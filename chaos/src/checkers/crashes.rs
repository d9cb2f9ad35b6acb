//! Crashes: no process dies unless the drill kills it (a panic, an out-of-memory kill
//! under load). The driver records a `ProcessExit` for every child that exits on its own.

use super::{secs, Finding};
use crate::history::Event;

pub const NAME: &str = "crashes";
pub const PROPERTY: &str = "no process dies unless the drill kills it";

pub fn check(events: &[Event]) -> Finding {
    let mut finding = Finding::new(NAME, PROPERTY);
    for event in events {
        if let Event::ProcessExit {
            at_ms,
            process,
            status,
        } = event
        {
            finding.count("crashes", 1);
            finding.violation(format!(
                "{process} died at {} without the drill killing it ({status})",
                secs(*at_ms)
            ));
        }
    }
    finding
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_history_passes() {
        let events = [Event::Phase {
            at_ms: 0,
            name: "workload".into(),
        }];
        assert!(check(&events).passed);
    }

    #[test]
    fn a_crashed_process_is_caught() {
        let events = [Event::ProcessExit {
            at_ms: 9_000,
            process: "b/payments".into(),
            status: "signal: 9 (SIGKILL)".into(),
        }];
        let f = check(&events);
        assert!(!f.passed);
        assert_eq!(f.get("crashes"), 1);
        assert!(
            f.violations[0].contains("b/payments died at 9.0 s"),
            "{:?}",
            f.violations
        );
    }
}
