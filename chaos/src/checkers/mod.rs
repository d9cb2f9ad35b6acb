//! Checkers: pure functions from a history to findings, one property a file.
//!
//! ```text
//!   history ─► operations (invoke joined with ok / fail / unknown)
//!           ─► messaging     every acknowledged message delivered once, in order
//!           ─► payments      acknowledged transfers applied once, total conserved
//!           ─► login         acknowledged sessions still valid
//!           ─► kv            every key's history linearizable (with `kv`)
//!           ─► availability  per service per second; failover time; steady state
//!           ─► storm         idle push clients back after their site died (if any)
//!           ─► goodput       a surge served at the named rate, every 5 s (if asked)
//!           ─► surge-recovery  steady again soon after a surge (if asked)
//!           ─► control plane, one invariant a file:
//!                crashes          no process dies unasked
//!                election-safety  at most one leader per term (polls and vote journals)
//!                elections        no more elections than the playbook allows
//!                quiet-routing    no routing change before the first fault
//!                dwell            no routing change inside the dwell time
//!                flapping         no more routing changes than the playbook allows
//!                single-primary   an active-passive service never has two primaries
//!                fenced-writes    nor acknowledges a write of a primary that lost its role
//!                serving-at-end   the named sites serve again by the end
//! ```
//!
//! A checker never talks to the cluster: what it needs from the end state is in the
//! history's read-back events, so every checker can be run on a hand-made history (and
//! is, in its tests) and on a history file from an earlier run. A playbook may turn
//! checkers off by name (`expect.checkers_off`); the report says which were off.

pub mod availability;
pub mod crashes;
pub mod dwell;
pub mod election_safety;
pub mod elections;
pub mod fenced_writes;
pub mod flapping;
pub mod goodput;
pub mod kv;
pub mod linearizable;
pub mod login;
pub mod messaging;
pub mod payments;
pub mod quiet_routing;
pub mod quorum;
pub mod route_changes;
pub mod serving_at_end;
pub mod single_primary;
pub mod storm;
pub mod surge_recovery;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::history::{operations, Event, Operation};
use crate::playbook::{Playbook, ServiceKind};

/// Most violations a finding lists one by one; the rest are counted.
pub const MAX_LISTED: usize = 20;

/// What one checker concluded.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub checker: &'static str,
    /// The property checked, in one sentence.
    pub property: &'static str,
    pub passed: bool,
    /// The first [`MAX_LISTED`] violations, each a sentence naming what and when.
    pub violations: Vec<String>,
    /// Violations beyond those listed.
    pub more_violations: usize,
    /// Named counts (acknowledged, lost, duplicated, unknown...).
    pub counts: BTreeMap<String, u64>,
}

impl Finding {
    pub fn new(checker: &'static str, property: &'static str) -> Self {
        Self {
            checker,
            property,
            passed: true,
            violations: Vec::new(),
            more_violations: 0,
            counts: BTreeMap::new(),
        }
    }

    /// Records a violation; the finding fails.
    pub fn violation(&mut self, message: impl Into<String>) {
        self.passed = false;
        if self.violations.len() < MAX_LISTED {
            self.violations.push(message.into());
        } else {
            self.more_violations += 1;
        }
    }

    /// Records what the checker could not verify because its read-back failed: the finding
    /// fails (never passes on missing evidence) and says so, counted apart from what it
    /// proved wrong (`could_not_verify`).
    pub fn could_not_verify(&mut self, what: impl std::fmt::Display) {
        self.count("could_not_verify", 1);
        self.violation(format!("could not verify {what}"));
    }

    /// Adds to a named count.
    pub fn count(&mut self, name: &str, by: u64) {
        *self.counts.entry(name.to_string()).or_default() += by;
    }

    pub fn get(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }
}

/// Every checker's findings and the per-service figures of the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Judgement {
    pub findings: Vec<Finding>,
    pub services: Vec<availability::ServiceFigures>,
    /// The reconnect storm, per kind of client (empty without idle push clients).
    pub storm: Vec<storm::StormFigures>,
}

impl Judgement {
    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.passed)
    }
}

/// Runs every checker over a history.
pub fn judge(playbook: &Playbook, events: &[Event]) -> Judgement {
    let ops = operations(events);
    let services = playbook.services();
    let mut findings = Vec::new();
    if services.contains(&ServiceKind::Messaging) {
        let push_delay_max = playbook
            .expect
            .push_delay_secs_max
            .map(std::time::Duration::from_secs_f64);
        findings.push(messaging::check(events, &ops, push_delay_max));
    }
    if services.contains(&ServiceKind::Payments) {
        findings.push(payments::check(events, &ops));
    }
    if services.contains(&ServiceKind::Login) {
        findings.push(login::check(events, &ops));
    }
    if services.contains(&ServiceKind::Kv) {
        findings.push(kv::check(&ops));
    }
    let (finding, figures) = availability::check(playbook, events, &ops);
    findings.push(finding);
    findings.extend([
        crashes::check(events),
        election_safety::check(events),
        elections::check(playbook, events),
        quiet_routing::check(playbook, events),
        dwell::check(playbook, events),
        flapping::check(playbook, events),
        single_primary::check(playbook, events),
        fenced_writes::check(playbook, &ops),
        serving_at_end::check(playbook, events),
    ]);
    findings.extend(goodput::check(playbook, events, &ops));
    findings.extend(surge_recovery::check(playbook, events, &ops));
    findings.extend(quorum::check(playbook, events));
    let storm = match storm::check(playbook, events) {
        Some((finding, figures)) => {
            findings.push(finding);
            figures
        }
        None => Vec::new(),
    };
    findings.retain(|f| {
        !playbook
            .expect
            .checkers_off
            .iter()
            .any(|off| off == f.checker)
    });
    Judgement {
        findings,
        services: figures,
        storm,
    }
}

/// The workload's operations of one service.
pub fn of_service(ops: &[Operation], service: ServiceKind) -> impl Iterator<Item = &Operation> {
    ops.iter()
        .filter(move |o| o.op.is_workload() && o.op.service() == service)
}

/// Every checker's name, as findings and `expect.checkers_off` spell them.
pub const NAMES: [&str; 18] = [
    "messaging",
    "payments",
    "login",
    "availability",
    crashes::NAME,
    election_safety::NAME,
    elections::NAME,
    quiet_routing::NAME,
    dwell::NAME,
    flapping::NAME,
    single_primary::NAME,
    fenced_writes::NAME,
    serving_at_end::NAME,
    "storm",
    kv::NAME,
    goodput::NAME,
    surge_recovery::NAME,
    quorum::NAME,
];

/// Seconds with one decimal, for messages.
pub fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    use crate::history::{Completion, Op};

    /// A login invoked at `at` ms that took 10 ms, succeeded or refused.
    pub fn op(at: u64, ok: bool) -> Operation {
        Operation {
            id: at,
            op: Op::Login { user: "u".into() },
            invoked_ms: at,
            completed_ms: Some(at + 10),
            completion: Some(if ok {
                Completion::Ok {
                    status: 201,
                    body: json!({}),
                    site: None,
                    epoch: None,
                }
            } else {
                Completion::Fail("503".into())
            }),
        }
    }

    /// A playbook over sites a, b, c running `services`, with `timeline`.
    pub fn playbook_with(services: &str, timeline: &str) -> Playbook {
        let text = format!(
            "name: t\ndescription: d\ntopology:\n  sites: [a, b, c]\n  services: {services}\nworkload: {{ seed: 1, rate_per_sec: 1, duration_secs: 60, users: 2, mix: {{ login: 1 }} }}\ntimeline: {timeline}\nexpect:\n  serving_at_end: [a]\n"
        );
        Playbook::parse("t.yaml", &text).unwrap()
    }

    /// A playbook running login active-active, with `timeline`.
    pub fn playbook(timeline: &str) -> Playbook {
        playbook_with("[{ name: login, mode: active-active }]", timeline)
    }

    /// The workload starts at 1 s.
    pub fn start() -> Event {
        Event::Phase {
            at_ms: 1_000,
            name: "workload".into(),
        }
    }

    /// `node` names `leader` for `term` of the control group at `at_ms`.
    pub fn leader(at_ms: u64, node: u64, term: u64, leader: u64) -> Event {
        Event::Leader {
            at_ms,
            node,
            group: "control".into(),
            term,
            leader,
        }
    }

    /// `node` saved a committed vote for `leader` in `term` of the control group.
    pub fn elected(at_ms: u64, node: u64, term: u64, leader: u64) -> Event {
        Event::Elected {
            at_ms,
            node,
            group: "control".into(),
            term,
            leader,
        }
    }

    #[test]
    fn a_checker_turned_off_is_not_judged() {
        let mut p = playbook("[]");
        let crash = [Event::ProcessExit {
            at_ms: 1,
            process: "a/node".into(),
            status: "exit status: 101".into(),
        }];
        let crashed = |j: &Judgement| {
            j.findings
                .iter()
                .find(|f| f.checker == crashes::NAME)
                .map(|f| f.passed)
        };
        assert_eq!(crashed(&judge(&p, &crash)), Some(false));
        p.expect.checkers_off = vec![crashes::NAME.to_string()];
        assert_eq!(crashed(&judge(&p, &crash)), None);
    }
}
