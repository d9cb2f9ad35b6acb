//! Live progress of a running drill: the phase and each service's success rate over the
//! last second, on a progress bar (terminal) or as a line every few seconds (CI logs).
//! It also watches the playbook's stop condition, since it already counts successes.

use std::collections::{BTreeMap, HashMap};

use crate::history::{Event, History};
use crate::playbook::{Playbook, ServiceKind};

/// Live progress: the phase and each service's success rate over the last second, on a
/// progress bar (terminal) or a line every [`PLAIN_EVERY_SECS`] seconds; it also watches
/// the stop condition.
pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    services: Vec<ServiceKind>,
    cursor: usize,
    owner: HashMap<u64, ServiceKind>,
    second: BTreeMap<ServiceKind, (u64, u64)>,
    last_second: u64,
    low_for: BTreeMap<ServiceKind, u32>,
    stop: Option<crate::playbook::StopWhen>,
    phase: String,
    timeline: Vec<(f64, String)>,
    duration: u32,
    last_line: String,
}

/// How often a plain (non-terminal) progress line is printed.
const PLAIN_EVERY_SECS: u64 = 5;

impl Progress {
    pub(super) fn new(playbook: &Playbook, live: bool) -> Self {
        let duration = playbook.workload.duration_secs;
        let bar = live.then(|| {
            let bar = indicatif::ProgressBar::new(u64::from(duration));
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos:>4}/{len} s  {msg}")
                    .expect("a static template parses"),
            );
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar
        });
        Self {
            bar,
            services: playbook.services(),
            cursor: 0,
            owner: HashMap::new(),
            second: BTreeMap::new(),
            last_second: 0,
            low_for: BTreeMap::new(),
            stop: playbook.stop.clone(),
            phase: "steady".into(),
            timeline: playbook
                .timeline
                .iter()
                .map(|s| (s.at_secs, format!("{} {}", s.fault.name(), s.target)))
                .collect(),
            duration,
            last_line: String::new(),
        }
    }

    /// Takes in new history; once a second redraws and checks the stop condition, which
    /// it returns as the reason to abort when it holds.
    pub(super) fn update(
        &mut self,
        history: &History,
        elapsed: f64,
        in_flight: usize,
    ) -> Option<String> {
        let fresh = history.since(self.cursor);
        self.cursor += fresh.len();
        for event in fresh {
            match event {
                Event::Invoke { id, op, .. } if op.is_workload() => {
                    self.owner.insert(id, op.service());
                }
                Event::Ok { id, .. } | Event::Fail { id, .. } | Event::Unknown { id, .. } => {
                    if let Some(service) = self.owner.remove(&id) {
                        let entry = self.second.entry(service).or_default();
                        entry.1 += 1;
                        entry.0 += u64::from(matches!(event, Event::Ok { .. }));
                    }
                }
                _ => {}
            }
        }
        let second = elapsed as u64;
        if second == self.last_second {
            return None;
        }
        self.last_second = second;
        if let Some((_, name)) = self.timeline.iter().rev().find(|(at, _)| *at <= elapsed) {
            self.phase = format!("after {name}");
        }
        let rates: Vec<String> = self
            .services
            .iter()
            .map(|s| match self.second.get(s) {
                Some((ok, total)) if *total > 0 => {
                    format!("{s} {:>3.0}%", *ok as f64 * 100.0 / *total as f64)
                }
                _ => format!("{s}    -"),
            })
            .collect();
        self.last_line = format!(
            "{}  |  {}  |  in flight {in_flight}",
            self.phase,
            rates.join("  ")
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(second.min(u64::from(self.duration)));
                bar.set_message(self.last_line.clone());
            }
            None if second.is_multiple_of(PLAIN_EVERY_SECS) => {
                eprintln!("[{second:>4}/{} s] {}", self.duration, self.last_line)
            }
            None => {}
        }
        let verdict = self.check_stop();
        self.second.clear();
        verdict
    }

    fn check_stop(&mut self) -> Option<String> {
        let stop = self.stop.as_ref()?;
        for (service, (ok, total)) in &self.second {
            let low = self.low_for.entry(*service).or_default();
            if *total > 0 && (*ok as f64 / *total as f64) < stop.availability_below {
                *low += 1;
            } else if *total > 0 {
                *low = 0;
            }
            if *low >= stop.for_secs {
                return Some(format!(
                    "{service} stayed under {:.0}% availability for {} s (stop condition)",
                    stop.availability_below * 100.0,
                    stop.for_secs
                ));
            }
        }
        None
    }

    /// Prints a line above the progress bar, or plainly.
    pub(super) fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub(super) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::history::Op;

    fn playbook() -> Playbook {
        let text = "name: t\ndescription: d\ntopology:\n  sites: [a, b, c]\n  services: [{ name: login, mode: active-active }]\nworkload: { seed: 1, rate_per_sec: 1, duration_secs: 60, users: 2, mix: { login: 1 } }\nstop: { availability_below: 0.5, for_secs: 3 }\nexpect: {}\n";
        Playbook::parse("t.yaml", text).unwrap()
    }

    /// Records one login per call, ok or failed.
    fn op(history: &History, id: u64, ok: bool) {
        let op = Op::Login { user: "u".into() };
        history.record(Event::Invoke { at_ms: 0, id, op });
        history.record(if ok {
            Event::Ok {
                at_ms: 1,
                id,
                status: 201,
                body: json!({}),
                site: None,
                epoch: None,
            }
        } else {
            Event::Fail {
                at_ms: 1,
                id,
                error: "503".into(),
            }
        });
    }

    #[test]
    fn the_stop_condition_fires_after_its_seconds_below_the_floor() {
        let history = History::new();
        let mut progress = Progress::new(&playbook(), false);
        let mut verdicts = Vec::new();
        // Seconds 1-2 healthy, 3-4 failing, 5 healthy (resets), 6-8 failing.
        for (second, ok) in [
            (1, true),
            (2, true),
            (3, false),
            (4, false),
            (5, true),
            (6, false),
            (7, false),
            (8, false),
        ] {
            op(&history, second, ok);
            verdicts.push(progress.update(&history, second as f64 + 0.01, 0));
        }
        let fired: Vec<usize> = verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_some())
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(
            fired,
            vec![8],
            "fires on the third failing second in a row only"
        );
        assert!(verdicts[7]
            .as_ref()
            .unwrap()
            .contains("login stayed under 50%"));
    }
}
