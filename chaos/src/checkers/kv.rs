//! Kv: every key's history of reads, writes and compare-and-swaps through the nodes' kv
//! API is linearizable, the property etcd and Consul are judged by: there is one order of
//! the operations, each placed between its call and its return, in which every read sees
//! the last write before it and every compare-and-swap the value it compared.
//!
//! Per key, from the workload's operations: an `ok` is placed within its call and return;
//! an `unknown` write or compare-and-swap may have applied at any moment after its call,
//! or never; a `fail` applied nothing and an unknown read says nothing, so neither counts.
//! The search (`linearizable.rs`) is bounded; a key it cannot settle within the bound is
//! "could not verify", never passed.

use std::collections::BTreeMap;

use super::linearizable::{self, RegisterOp, Timed, Verdict};
use super::{secs, Finding};
use crate::history::{Completion, Op, Operation};

pub const NAME: &str = "kv";
pub const PROPERTY: &str = "every key's reads, writes and compare-and-swaps are linearizable";

/// Search steps per key before it is "could not verify".
pub const MAX_STEPS: u64 = 1_000_000;

pub fn check(ops: &[Operation]) -> Finding {
    let mut finding = Finding::new(NAME, PROPERTY);
    let mut keys: BTreeMap<&str, (Vec<Timed>, Vec<&Operation>)> = BTreeMap::new();
    for o in ops {
        let Some((key, timed)) = register_op(o) else {
            continue;
        };
        finding.count("operations", 1);
        if timed.returned_ms.is_none() {
            finding.count("indeterminate", 1);
        }
        let (history, source) = keys.entry(key).or_default();
        history.push(timed);
        source.push(o);
    }
    finding.count("keys", keys.len() as u64);
    for (key, (history, source)) in &keys {
        match linearizable::check(history, MAX_STEPS) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable { culprit } => {
                finding.count("non_linearizable_keys", 1);
                finding.violation(format!(
                    "key {key}: no order of its {} operations explains {}",
                    history.len(),
                    describe(source[culprit])
                ));
            }
            Verdict::TooLarge => finding.could_not_verify(format!(
                "key {key}: its {} operations took the search past {MAX_STEPS} steps",
                history.len()
            )),
        }
    }
    finding
}

/// A kv operation as a register operation of its key (`None`: not kv, or no information).
fn register_op(o: &Operation) -> Option<(&str, Timed)> {
    let returned_ms = match &o.completion {
        Some(Completion::Ok { .. }) => o.completed_ms,
        Some(Completion::Unknown(_)) | None => None,
        Some(Completion::Fail(_)) => return None,
    };
    let body = o.body();
    let (key, op) = match &o.op {
        Op::KvRead { key } => {
            let value = body?["value"].as_str().map(str::to_string);
            (key, RegisterOp::Read(value))
        }
        Op::KvWrite { key, value } => (key, RegisterOp::Write(value.clone())),
        Op::KvCas {
            key,
            expected,
            value,
        } => {
            let (expected, value) = (expected.clone(), value.clone());
            match body {
                Some(b) => {
                    let succeeded = b["succeeded"] == true;
                    (
                        key,
                        RegisterOp::Cas {
                            expected,
                            value,
                            succeeded,
                        },
                    )
                }
                None => (key, RegisterOp::CasUnknown { expected, value }),
            }
        }
        _ => return None,
    };
    let timed = Timed {
        op,
        called_ms: o.invoked_ms,
        returned_ms,
    };
    Some((key, timed))
}

/// One operation, for a violation: what it was, when, through which node, what it saw.
fn describe(o: &Operation) -> String {
    let node = match &o.completion {
        Some(Completion::Ok {
            site: Some(node), ..
        }) => format!(" via {node}"),
        _ => String::new(),
    };
    let when = format!(
        "called at {}{}",
        secs(o.invoked_ms),
        o.completed_ms
            .map_or(String::new(), |c| format!(", answered at {}", secs(c)))
    );
    let what = match (&o.op, o.body()) {
        (Op::KvRead { .. }, Some(b)) => format!("the read that saw {}", b["value"]),
        (Op::KvWrite { value, .. }, _) => format!("the write of {value:?}"),
        (
            Op::KvCas {
                expected, value, ..
            },
            b,
        ) => format!(
            "the compare-and-swap {expected:?} -> {value:?} ({})",
            b.map_or("unknown".to_string(), |b| format!(
                "succeeded: {}",
                b["succeeded"]
            ))
        ),
        (op, _) => format!("{op:?}"),
    };
    format!("{what} ({when}{node})")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::history::{operations, Event};

    /// Events of one kv operation: invoke at `from`, then `ok` with `body` at `to`, or
    /// `unknown` when `body` is None.
    fn op(id: u64, op: Op, from: u64, to: u64, body: Option<serde_json::Value>) -> Vec<Event> {
        let end = match body {
            Some(body) => Event::Ok {
                at_ms: to,
                id,
                status: 200,
                body,
                site: Some(format!("127.0.{id}.1:7301")),
                epoch: None,
            },
            None => Event::Unknown {
                at_ms: to,
                id,
                error: "timed out".into(),
            },
        };
        vec![
            Event::Invoke {
                at_ms: from,
                id,
                op,
            },
            end,
        ]
    }

    fn write(id: u64, v: &str, from: u64, to: u64) -> Vec<Event> {
        let w = Op::KvWrite {
            key: "k".into(),
            value: v.into(),
        };
        op(id, w, from, to, Some(json!({})))
    }

    fn read(id: u64, v: &str, from: u64, to: u64) -> Vec<Event> {
        let r = Op::KvRead { key: "k".into() };
        op(id, r, from, to, Some(json!({ "value": v })))
    }

    fn judge(events: Vec<Vec<Event>>) -> Finding {
        let events: Vec<Event> = events.into_iter().flatten().collect();
        check(&operations(&events))
    }

    #[test]
    fn a_linearizable_history_passes() {
        let cas = Op::KvCas {
            key: "k".into(),
            expected: Some("v1".into()),
            value: "v2".into(),
        };
        let f = judge(vec![
            write(1, "v1", 0, 10),
            read(2, "v1", 20, 30),
            op(3, cas, 40, 50, Some(json!({ "succeeded": true }))),
            read(4, "v2", 60, 70),
        ]);
        assert!(f.passed, "{:?}", f.violations);
        assert_eq!((f.get("keys"), f.get("operations")), (1, 4));
    }

    /// A node that serves its own replica without asking the leader: the read after the
    /// second write completed still sees the first.
    #[test]
    fn a_stale_read_is_caught_and_named() {
        let f = judge(vec![
            write(1, "v1", 0, 10),
            write(2, "v2", 20, 30),
            read(3, "v1", 1_000, 1_100),
        ]);
        assert!(!f.passed);
        assert_eq!(f.get("non_linearizable_keys"), 1);
        assert!(
            f.violations[0].contains("key k: no order of its 3 operations explains the read that saw \"v1\" (called at 1.0 s, answered at 1.1 s via 127.0.3.1:7301)"),
            "{:?}",
            f.violations
        );
    }

    #[test]
    fn an_unknown_write_may_have_applied() {
        let w = Op::KvWrite {
            key: "k".into(),
            value: "v9".into(),
        };
        let f = judge(vec![
            write(1, "v1", 0, 10),
            op(2, w, 20, 2_020, None),
            read(3, "v9", 3_000, 3_010),
        ]);
        assert!(f.passed, "{:?}", f.violations);
        assert_eq!(f.get("indeterminate"), 1);
    }
}
