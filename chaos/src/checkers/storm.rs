//! Reconnect storm: every idle push client whose stream broke connected again and
//! received the message sent after the workload, and firebreak's clients were back within
//! `expect.idle_back_secs_max`. Measured per kind of client: reconnect attempts per 100 ms
//! at the surviving sites (everything but `idle_push.through`) from the fault on, the
//! peak, and the time until the last disrupted client had a stream open again. With
//! `expect.idle_peak_ratio_min`, the naive clients' peak must be at least that many times
//! firebreak's, in the same run.
//!
//! A client counts as disrupted when it attempts a connection after the fault, and as back
//! at its first stream opened after that attempt. The fault is the first timeline step
//! touching `through` (the playbook requires one).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{secs, Finding};
use crate::history::{workload_start_ms, Event, IdleKind};
use crate::playbook::Playbook;

pub const PROPERTY: &str =
    "every idle push client whose stream broke came back and received the next message";

/// Most 100 ms windows kept in the series (a minute).
const MAX_WINDOWS: usize = 600;

/// How one kind of client went through the storm.
#[derive(Debug, Clone, Serialize)]
pub struct StormFigures {
    pub kind: IdleKind,
    pub clients: u64,
    /// Clients that tried to connect again after the fault.
    pub disrupted: u64,
    /// Clients whose stream, when the fault came, was open through `idle_push.through`:
    /// those the fault should break. The rest were elsewhere by then: a client whose
    /// connection through it failed or ended before the fault moves to another site
    /// (seen: 29 of 200 firebreak clients in one CI-size run of `storm-small`).
    pub through_at_fault: u64,
    /// Reconnect attempts at the surviving sites in each 100 ms from the fault on.
    pub per_100ms: Vec<u64>,
    pub peak_per_100ms: u64,
    /// Start of the busiest window, after the fault.
    pub peak_at_ms: u64,
    /// Attempts at the surviving sites after the fault, in all.
    pub attempts: u64,
    /// From the fault until the last disrupted client had a stream open again (`None`:
    /// some never did).
    pub back_ms: Option<u64>,
    /// From the fault until half, and 99%, of the disrupted clients were back.
    pub back_p50_ms: Option<u64>,
    pub back_p99_ms: Option<u64>,
    /// Clients that received the probe message.
    pub got_probe: u64,
}

/// What one client did, as the history tells it.
#[derive(Default)]
struct Client {
    opened: bool,
    /// First attempt after the fault.
    disrupted_ms: Option<u64>,
    /// First open after `disrupted_ms`.
    back_ms: Option<u64>,
    newest: u64,
    /// Whether the last stream opened before the fault was through `idle_push.through`.
    through_at_fault: bool,
}

/// Checks the storm property; `None` when the playbook has no idle push clients.
pub fn check(playbook: &Playbook, events: &[Event]) -> Option<(Finding, Vec<StormFigures>)> {
    let idle = playbook.workload.idle_push.as_ref()?;
    let mut finding = Finding::new("storm", PROPERTY);
    let fault_ms =
        workload_start_ms(events) + (playbook.idle_fault_secs().unwrap_or(0.0) * 1000.0) as u64;
    let mut clients: BTreeMap<(IdleKind, u32), Client> = BTreeMap::new();
    let mut windows: HashMap<IdleKind, Vec<u64>> = HashMap::new();
    let mut probe = None;
    for event in events {
        match event {
            Event::IdleAttempt {
                at_ms,
                kind,
                client,
                site,
            } => {
                let c = clients.entry((*kind, *client)).or_default();
                if *at_ms < fault_ms {
                    continue;
                }
                c.disrupted_ms.get_or_insert(*at_ms);
                if *site != idle.through {
                    let window = ((at_ms - fault_ms) / 100) as usize;
                    if window < MAX_WINDOWS {
                        let series = windows.entry(*kind).or_default();
                        if series.len() <= window {
                            series.resize(window + 1, 0);
                        }
                        series[window] += 1;
                    }
                }
            }
            Event::IdleOpen {
                at_ms,
                kind,
                client,
                site,
            } => {
                let c = clients.entry((*kind, *client)).or_default();
                c.opened = true;
                if *at_ms < fault_ms {
                    c.through_at_fault = *site == idle.through;
                }
                if c.disrupted_ms.is_some() && c.back_ms.is_none() {
                    c.back_ms = Some(*at_ms);
                }
            }
            Event::IdleDeliver {
                kind, client, seq, ..
            } => {
                let c = clients.entry((*kind, *client)).or_default();
                c.newest = c.newest.max(*seq);
            }
            Event::IdleProbe { seq, .. } => probe = Some(*seq),
            _ => {}
        }
    }
    let mut figures = Vec::new();
    for kind in [IdleKind::Firebreak, IdleKind::Naive] {
        let mine: Vec<&Client> = clients
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, c)| c)
            .collect();
        let disrupted: Vec<&&Client> = mine.iter().filter(|c| c.disrupted_ms.is_some()).collect();
        let never_back = disrupted.iter().filter(|c| c.back_ms.is_none()).count() as u64;
        let back_ms = (never_back == 0).then(|| {
            disrupted
                .iter()
                .filter_map(|c| c.back_ms)
                .max()
                .map_or(0, |b| b.saturating_sub(fault_ms))
        });
        let mut backs: Vec<u64> = disrupted
            .iter()
            .filter_map(|c| c.back_ms)
            .map(|b| b.saturating_sub(fault_ms))
            .collect();
        backs.sort_unstable();
        let rank = |q: f64| {
            let at = ((backs.len() as f64 * q).ceil() as usize).clamp(1, backs.len().max(1));
            backs.get(at - 1).copied()
        };
        let got_probe =
            probe.map_or(0, |seq| mine.iter().filter(|c| c.newest >= seq).count()) as u64;
        let series = windows.remove(&kind).unwrap_or_default();
        let (peak_window, peak) = series
            .iter()
            .enumerate()
            .max_by_key(|(i, n)| (**n, std::cmp::Reverse(*i)))
            .map_or((0, 0), |(i, n)| (i, *n));
        let name = kind.name();
        if never_back > 0 {
            finding.violation(format!(
                "{never_back} of {} disrupted {name}s never had a stream open again",
                disrupted.len()
            ));
        }
        match probe {
            Some(seq) if got_probe < mine.len() as u64 => finding.violation(format!(
                "{} of {} {name}s never received the probe message (seq {seq})",
                mine.len() as u64 - got_probe,
                mine.len()
            )),
            _ => {}
        }
        if let (IdleKind::Firebreak, Some(max), Some(back)) =
            (kind, playbook.expect.idle_back_secs_max, back_ms)
        {
            if back as f64 > max * 1000.0 {
                finding.violation(format!(
                    "the last {name} was back {} after the fault; the playbook allows {max} s",
                    secs(back)
                ));
            }
        }
        let label = if kind == IdleKind::Firebreak {
            "firebreak"
        } else {
            "naive"
        };
        finding.count(&format!("{label}_clients"), mine.len() as u64);
        finding.count(&format!("{label}_peak_per_100ms"), peak);
        finding.count(&format!("{label}_never_back"), never_back);
        figures.push(StormFigures {
            kind,
            clients: mine.len() as u64,
            disrupted: disrupted.len() as u64,
            through_at_fault: mine.iter().filter(|c| c.through_at_fault).count() as u64,
            attempts: series.iter().sum(),
            per_100ms: series,
            peak_per_100ms: peak,
            peak_at_ms: peak_window as u64 * 100,
            back_ms,
            back_p50_ms: rank(0.5),
            back_p99_ms: rank(0.99),
            got_probe,
        });
    }
    let expected = u64::from(idle.clients);
    let seen = clients.values().filter(|c| c.opened).count() as u64;
    if seen < expected {
        finding.violation(format!(
            "only {seen} of {expected} idle push clients ever had a stream open"
        ));
    }
    if probe.is_none() {
        finding.violation(
            "the probe message was never sent, so nobody can vouch the clients are back",
        );
    }
    if let Some(min) = playbook.expect.idle_peak_ratio_min {
        check_peak_ratio(&mut finding, &figures, min);
    }
    Some((finding, figures))
}

/// The naive clients' peak reconnects per 100 ms must be at least `min` times firebreak's.
fn check_peak_ratio(finding: &mut Finding, figures: &[StormFigures], min: f64) {
    let peak = |kind| {
        figures
            .iter()
            .find(|f| f.kind == kind)
            .map_or(0, |f| f.peak_per_100ms)
    };
    let (firebreak, naive) = (peak(IdleKind::Firebreak), peak(IdleKind::Naive));
    let ratio = naive as f64 / firebreak.max(1) as f64;
    if ratio < min {
        finding.violation(format!(
            "firebreak's clients peaked at {firebreak} reconnects per 100 ms, the naive ones at \
             {naive}: {ratio:.1}x gentler, the playbook wants at least {min}x"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn playbook(extra: &str) -> Playbook {
        let text = format!(
            "name: t\ndescription: d\ntopology:\n  sites: [a, b, c]\n  services: [{{ name: messaging, mode: active-active }}]\nworkload: {{ seed: 1, rate_per_sec: 1, duration_secs: 60, users: 2, mix: {{ messaging: 1 }}, idle_push: {{ clients: 4, through: a }} }}\ntimeline:\n  - {{ at_secs: 10, fault: site-loss, target: a }}\nexpect: {{ push_delay_secs_max: 10, {extra} }}\n"
        );
        Playbook::parse("t.yaml", &text).unwrap()
    }

    fn attempt(at_ms: u64, kind: IdleKind, client: u32, site: &str) -> Event {
        Event::IdleAttempt {
            at_ms,
            kind,
            client,
            site: site.into(),
        }
    }

    fn open(at_ms: u64, kind: IdleKind, client: u32, site: &str) -> Event {
        Event::IdleOpen {
            at_ms,
            kind,
            client,
            site: site.into(),
        }
    }

    fn deliver(kind: IdleKind, client: u32, seq: u64) -> Event {
        Event::IdleDeliver {
            at_ms: 30_000,
            kind,
            client,
            seq,
        }
    }

    /// Two clients of each kind through `a`; the workload starts at 0, `a` dies at 10 s.
    /// Naive ones retry at once (both at 10.0 s); firebreak's spread (10.05 s, 10.75 s).
    fn storm() -> Vec<Event> {
        use IdleKind::{Firebreak as F, Naive as N};
        let mut events = vec![Event::Phase {
            at_ms: 0,
            name: "workload".into(),
        }];
        for (kind, c) in [(F, 0), (F, 1), (N, 0), (N, 1)] {
            events.push(attempt(100, kind, c, "a"));
            events.push(open(110, kind, c, "a"));
        }
        events.extend([
            attempt(10_010, N, 0, "b"),
            attempt(10_020, N, 1, "b"),
            open(10_030, N, 0, "b"),
            open(10_040, N, 1, "b"),
            attempt(10_050, F, 0, "c"),
            open(10_060, F, 0, "c"),
            attempt(10_750, F, 1, "b"),
            open(10_800, F, 1, "b"),
            Event::IdleProbe {
                at_ms: 30_000,
                seq: 1,
            },
        ]);
        for (kind, c) in [(F, 0), (F, 1), (N, 0), (N, 1)] {
            events.push(deliver(kind, c, 1));
        }
        events
    }

    #[test]
    fn a_clean_storm_passes_with_its_figures() {
        let (finding, figures) = check(&playbook("idle_back_secs_max: 2"), &storm()).unwrap();
        assert!(finding.passed, "{:?}", finding.violations);
        let firebreak = &figures[0];
        assert_eq!(firebreak.kind, IdleKind::Firebreak);
        assert_eq!(firebreak.per_100ms, vec![1, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!((firebreak.peak_per_100ms, firebreak.peak_at_ms), (1, 0));
        assert_eq!(firebreak.back_ms, Some(800));
        assert_eq!(
            (firebreak.back_p50_ms, firebreak.back_p99_ms),
            (Some(60), Some(800))
        );
        let naive = &figures[1];
        assert_eq!(naive.per_100ms, vec![2]);
        assert_eq!(naive.peak_per_100ms, 2);
        assert_eq!(naive.back_ms, Some(40));
        assert_eq!((naive.got_probe, naive.disrupted), (2, 2));
    }

    /// A client whose first connection spilled to another site before the fault was not
    /// on `a` when it burned: it is not counted among the streams the fault should break.
    #[test]
    fn a_client_that_spilled_before_the_fault_was_not_through_the_burned_site() {
        let mut events = storm();
        // Firebreak's client 1 lost its first stream at 5 s and moved to b.
        events.insert(9, attempt(5_000, IdleKind::Firebreak, 1, "b"));
        events.insert(10, open(5_010, IdleKind::Firebreak, 1, "b"));
        let (_, figures) = check(&playbook(""), &events).unwrap();
        assert_eq!(figures[0].through_at_fault, 1, "{:?}", figures[0]);
        assert_eq!(figures[1].through_at_fault, 2, "{:?}", figures[1]);
    }

    #[test]
    fn a_client_that_never_comes_back_is_caught() {
        let events: Vec<Event> = storm()
            .into_iter()
            .filter(|e| !matches!(e, Event::IdleOpen { at_ms: 10_800, .. }))
            .collect();
        let (finding, figures) = check(&playbook(""), &events).unwrap();
        assert!(!finding.passed);
        assert!(finding.violations[0].contains("1 of 2 disrupted firebreak clients never"));
        assert_eq!(figures[0].back_ms, None);
    }

    #[test]
    fn a_client_that_misses_the_probe_is_caught() {
        let events: Vec<Event> = storm()
            .into_iter()
            .filter(|e| {
                !matches!(
                    e,
                    Event::IdleDeliver {
                        kind: IdleKind::Naive,
                        client: 1,
                        ..
                    }
                )
            })
            .collect();
        let (finding, _) = check(&playbook(""), &events).unwrap();
        assert!(!finding.passed);
        assert!(
            finding.violations[0].contains("1 of 2 naive clients never received the probe"),
            "{:?}",
            finding.violations
        );
    }

    #[test]
    fn a_slow_return_breaks_the_expectation() {
        let (finding, _) = check(&playbook("idle_back_secs_max: 0.5"), &storm()).unwrap();
        assert!(!finding.passed);
        assert!(finding.violations[0].contains("back 0.8 s after the fault"));
    }

    #[test]
    fn a_storm_not_gentle_enough_is_caught() {
        // Naive peak 2, firebreak's 1: twice as gentle.
        let (finding, _) = check(&playbook("idle_peak_ratio_min: 2"), &storm()).unwrap();
        assert!(finding.passed, "{:?}", finding.violations);
        let (finding, _) = check(&playbook("idle_peak_ratio_min: 3"), &storm()).unwrap();
        assert!(!finding.passed);
        assert!(
            finding.violations[0].contains("2.0x gentler, the playbook wants at least 3x"),
            "{:?}",
            finding.violations
        );
    }

    #[test]
    fn no_probe_means_no_verdict() {
        let events: Vec<Event> = storm()
            .into_iter()
            .filter(|e| !matches!(e, Event::IdleProbe { .. }))
            .collect();
        let (finding, _) = check(&playbook(""), &events).unwrap();
        assert!(!finding.passed);
        assert!(finding.violations[0].contains("probe message was never sent"));
    }
}
