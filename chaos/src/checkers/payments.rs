//! Payments: every acknowledged transfer applied exactly once, an unknown one once or
//! never, a refused one never; every balance is what the applied transfers make it, and
//! the total never changes.
//!
//! This is the promise of an idempotent compare-and-set transfer (DESIGN.md): a retry
//! never charges twice and money is neither created nor destroyed, whatever failed over.
//! The read-back gives each transfer's record (what the service says it applied, by
//! idempotency key) and every account's balance, page by page. The checker sums the total
//! itself from those balances (an account nobody opened counts too: money from nowhere),
//! rather than trust a sum the service computed. A transfer applied twice leaves the
//! records unchanged but moves the balances twice, so balances are recomputed from the
//! opening balances and the records and compared. A read-back that failed makes what it
//! would have shown "could not verify", never passed.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Finding;
use crate::history::{Completion, Event, Op, Operation};

pub const PROPERTY: &str =
    "every acknowledged transfer applied exactly once, unknown ones once or never, the total conserved";

/// What the read-back gave the checker.
#[derive(Default)]
struct ReadBack<'e> {
    records: BTreeMap<&'e str, &'e Option<Value>>,
    balances: BTreeMap<&'e str, i128>,
    /// Failed read-backs: what, and why.
    unread: BTreeMap<&'e str, &'e str>,
}

impl<'e> ReadBack<'e> {
    fn of(events: &'e [Event]) -> Self {
        let mut read = ReadBack::default();
        for event in events {
            match event {
                Event::TransferRecord { key, record, .. } => {
                    read.records.insert(key, record);
                }
                Event::Balance {
                    account, balance, ..
                } => {
                    read.balances.insert(account, i128::from(*balance));
                }
                Event::ReadBackFailed { what, error, .. } => {
                    read.unread.insert(what, error);
                }
                _ => {}
            }
        }
        read
    }
}

/// Checks the payments property over a history.
pub fn check(events: &[Event], ops: &[Operation]) -> Finding {
    let mut finding = Finding::new("payments", PROPERTY);
    let mut opening: BTreeMap<&str, i128> = BTreeMap::new();
    for o in ops {
        if let (Op::OpenAccount { account, balance }, true) = (&o.op, o.is_ok()) {
            opening.insert(account, i128::from(*balance));
        }
    }
    let read = ReadBack::of(events);
    // The total first: it is the headline when money went missing.
    let accounts_read = check_total(&mut finding, &opening, &read);
    let expected = check_transfers(&mut finding, ops, &read, opening);
    if accounts_read {
        check_balances(&mut finding, &expected, &read.balances);
    }
    finding
}

/// The total the checker sums from every account read back against what the accounts
/// opened with; false when the accounts could not be read (then nothing is verified).
fn check_total(finding: &mut Finding, opening: &BTreeMap<&str, i128>, read: &ReadBack<'_>) -> bool {
    if let Some((what, error)) = read
        .unread
        .iter()
        .find(|(what, _)| what.starts_with("accounts"))
    {
        finding.could_not_verify(format!(
            "the total or any balance: reading {what} failed ({error})"
        ));
        return false;
    }
    let opened: i128 = opening.values().sum();
    let total: i128 = read.balances.values().sum();
    if total != opened {
        finding.violation(format!(
            "the balances of {} accounts sum to {total} but the accounts opened with {opened}: money was created or destroyed",
            read.balances.len()
        ));
    }
    true
}

/// Judges each transfer by its record; returns every balance the applied ones make.
fn check_transfers<'o>(
    finding: &mut Finding,
    ops: &'o [Operation],
    read: &ReadBack<'_>,
    mut expected: BTreeMap<&'o str, i128>,
) -> BTreeMap<&'o str, i128> {
    for o in ops {
        let Op::Transfer {
            key,
            from,
            to,
            amount,
        } = &o.op
        else {
            continue;
        };
        let record = match read.records.get(key.as_str()) {
            Some(record) => record.as_ref(),
            None => {
                let why = read
                    .unread
                    .get(format!("transfer {key}").as_str())
                    .copied()
                    .unwrap_or("never read");
                finding.could_not_verify(format!(
                    "transfer {key}: its record was not read back ({why})"
                ));
                continue;
            }
        };
        judge_transfer(finding, o, key, record);
        if record.is_some_and(|r| r["status"] == "ok") {
            *expected.entry(from).or_default() -= i128::from(*amount);
            *expected.entry(to).or_default() += i128::from(*amount);
        }
    }
    expected
}

/// Every balance read back against what its opening and the applied transfers make.
fn check_balances(
    finding: &mut Finding,
    expected: &BTreeMap<&str, i128>,
    balances: &BTreeMap<&str, i128>,
) {
    for (account, want) in expected {
        match balances.get(account) {
            None => finding.violation(format!(
                "account {account}: opened, but not among the accounts read back (lost)"
            )),
            Some(have) if have != want => {
                finding.count("balances_off", 1);
                finding.violation(format!(
                    "account {account}: balance {have}, but its opening balance and applied transfers make {want} (a transfer applied twice, or money from nowhere)"
                ));
            }
            Some(_) => {}
        }
        if *want < 0 {
            finding.violation(format!(
                "account {account}: the applied transfers overdraw it to {want}"
            ));
        }
    }
}

fn judge_transfer(finding: &mut Finding, o: &Operation, key: &str, record: Option<&Value>) {
    match (&o.completion, record) {
        (Some(Completion::Ok { body, .. }), Some(record)) => {
            finding.count("acknowledged", 1);
            if body["status"] != record["status"] {
                finding.violation(format!(
                    "transfer {key}: answered {} but recorded {}",
                    body["status"], record["status"]
                ));
            }
        }
        (Some(Completion::Ok { .. }), None) => {
            finding.count("acknowledged", 1);
            finding.count("lost", 1);
            finding.violation(format!(
                "transfer {key}: acknowledged but never applied (lost)"
            ));
        }
        (Some(Completion::Fail(error)), Some(_)) => {
            finding.violation(format!("transfer {key}: refused ({error}) but applied"))
        }
        (Some(Completion::Fail(_)), None) => finding.count("refused", 1),
        (Some(Completion::Unknown(_)) | None, applied) => {
            finding.count("unknown", 1);
            if applied.is_some() {
                finding.count("unknown_applied", 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::history::operations;

    /// Accounts a and b open with 100 each; t1 moves 10 from a to b (acknowledged).
    fn history(balance_a: u64, balance_b: u64, record: bool) -> Vec<Event> {
        let mut events = Vec::new();
        for (id, account) in [(1, "a"), (2, "b")] {
            events.push(Event::Invoke {
                at_ms: 0,
                id,
                op: Op::OpenAccount {
                    account: account.into(),
                    balance: 100,
                },
            });
            events.push(Event::Ok {
                at_ms: 1,
                id,
                status: 201,
                body: json!({}),
                site: None,
                epoch: None,
            });
        }
        events.push(Event::Invoke {
            at_ms: 10,
            id: 3,
            op: Op::Transfer {
                key: "t1".into(),
                from: "a".into(),
                to: "b".into(),
                amount: 10,
            },
        });
        events.push(Event::Ok {
            at_ms: 20,
            id: 3,
            status: 200,
            body: json!({ "status": "ok" }),
            site: Some("gasan".into()),
            epoch: None,
        });
        events.push(Event::TransferRecord {
            at_ms: 30,
            key: "t1".into(),
            record: record.then(|| json!({ "status": "ok", "from": "a", "to": "b", "amount": 10 })),
        });
        events.push(Event::Balance {
            at_ms: 31,
            account: "a".into(),
            balance: balance_a,
        });
        events.push(Event::Balance {
            at_ms: 31,
            account: "b".into(),
            balance: balance_b,
        });
        events
    }

    /// The history with transfer t1's answer lost (unknown) instead of ok.
    fn unknown_transfer(mut events: Vec<Event>) -> Vec<Event> {
        events.retain(|e| !matches!(e, Event::Ok { id: 3, .. }));
        let lost = Event::Unknown {
            at_ms: 20,
            id: 3,
            error: "timed out".into(),
        };
        events.insert(5, lost);
        events
    }

    fn run(events: &[Event]) -> Finding {
        check(events, &operations(events))
    }

    #[test]
    fn a_clean_history_passes() {
        let f = run(&history(90, 110, true));
        assert!(f.passed, "{:?}", f.violations);
        assert_eq!(f.get("acknowledged"), 1);
    }

    #[test]
    fn a_transfer_applied_twice_is_caught() {
        let f = run(&history(80, 120, true));
        assert!(!f.passed);
        assert_eq!(f.get("balances_off"), 2);
    }

    /// An account nobody opened holds money: the total, summed by the checker from every
    /// account read back, drifts.
    #[test]
    fn a_drifting_total_is_caught() {
        let mut events = history(90, 110, true);
        events.push(Event::Balance {
            at_ms: 31,
            account: "ghost".into(),
            balance: 10,
        });
        let f = run(&events);
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("3 accounts sum to 210 but the accounts opened with 200"),
            "{:?}",
            f.violations
        );
    }

    #[test]
    fn a_failed_read_back_is_could_not_verify_never_passed() {
        let mut events = history(90, 110, true);
        events.retain(|e| !matches!(e, Event::Balance { .. } | Event::TransferRecord { .. }));
        events.push(Event::ReadBackFailed {
            at_ms: 31,
            what: "accounts (the first)".into(),
            error: "Failed(\"503\")".into(),
        });
        let f = run(&events);
        assert!(!f.passed);
        assert_eq!(f.get("could_not_verify"), 2, "the total, and transfer t1");
        assert_eq!(f.get("lost"), 0, "what was not read back is not lost");
        assert!(
            f.violations[0].starts_with(
                "could not verify the total or any balance: reading accounts (the first) failed"
            ),
            "{:?}",
            f.violations
        );
        let mut records_only = history(90, 110, true);
        records_only.retain(|e| !matches!(e, Event::TransferRecord { .. }));
        let f = run(&records_only);
        assert!(!f.passed);
        assert!(
            f.violations[0].starts_with("could not verify transfer t1"),
            "{:?}",
            f.violations
        );
    }

    #[test]
    fn an_acknowledged_transfer_never_applied_is_lost() {
        let f = run(&history(100, 100, false));
        assert!(!f.passed);
        assert_eq!(f.get("lost"), 1);
    }

    /// An unknown transfer may apply once; applied twice, the balances say so.
    #[test]
    fn an_unknown_transfer_applied_twice_is_caught() {
        let f = run(&unknown_transfer(history(80, 120, true)));
        assert!(!f.passed);
        assert_eq!((f.get("unknown_applied"), f.get("balances_off")), (1, 2));
    }

    #[test]
    fn an_unknown_transfer_may_apply_once() {
        let events = unknown_transfer(history(90, 110, true));
        let f = run(&events);
        assert!(f.passed, "{:?}", f.violations);
        assert_eq!(f.get("unknown_applied"), 1);
    }
}
