//! Checkers: pure functions from a history to findings, one property a file.
//!
//! ```text
//!   history ─► operations (invoke joined with ok / fail / unknown)
//!           ─► messaging     every acknowledged message delivered once, in order
//!           ─► payments      acknowledged transfers applied once, total conserved
//!           ─► login         acknowledged sessions still valid
//!           ─► availability  per service per second; failover time; steady state
//!           ─► control       one leader per term; no routing change without a fault
//!           ─► storm         idle push clients back after their site died (if any)
//! ```
//!
//! A checker never talks to the cluster: what it needs from the end state is in the
//! history's read-back events, so every checker can be run on a hand-made history (and
//! is, in its tests) and on a history file from an earlier run.

pub mod availability;
pub mod control;
pub mod login;
pub mod messaging;
pub mod payments;
pub mod storm;

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
    let (finding, figures) = availability::check(playbook, events, &ops);
    findings.push(finding);
    findings.push(control::check(playbook, events));
    let storm = match storm::check(playbook, events) {
        Some((finding, figures)) => {
            findings.push(finding);
            figures
        }
        None => Vec::new(),
    };
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

/// Seconds with one decimal, for messages.
pub fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}
