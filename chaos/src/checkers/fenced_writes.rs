//! Fenced writes: an active-passive service never acknowledges a write made under an older
//! routing epoch than a write it had already acknowledged, counting from when the later
//! write started. Such a write was committed by a primary that had lost its role (a
//! zombie primary, or a gateway with a stale view) after the new primary had committed:
//! the fencing the epoch exists for did not hold. The epoch of each write is the one its
//! gateway sent with it (`x-firebreak-epoch`, recorded with the answer).

use super::{secs, Finding};
use crate::history::{Completion, Op, Operation};
use crate::playbook::{Mode, Playbook};

pub const NAME: &str = "fenced-writes";
pub const PROPERTY: &str =
    "an active-passive service acknowledges no write at an older epoch than one acknowledged before it started";

/// A write an active-passive service acknowledged, with its epoch and serving site.
struct Acked<'a> {
    op: &'a Operation,
    epoch: u64,
    site: &'a str,
    completed_ms: u64,
}

fn is_write(op: &Op) -> bool {
    matches!(
        op,
        Op::Send { .. }
            | Op::OpenAccount { .. }
            | Op::Transfer { .. }
            | Op::Register { .. }
            | Op::Login { .. }
    )
}

pub fn check(playbook: &Playbook, ops: &[Operation]) -> Finding {
    let mut finding = Finding::new(NAME, PROPERTY);
    for spec in &playbook.topology.services {
        if spec.mode != Mode::ActivePassive {
            continue;
        }
        let mut acked: Vec<Acked> = ops
            .iter()
            .filter(|o| o.op.service() == spec.name && is_write(&o.op))
            .filter_map(|op| match (&op.completion, op.completed_ms) {
                (
                    Some(Completion::Ok {
                        status: 200..=299,
                        epoch: Some(epoch),
                        site,
                        ..
                    }),
                    Some(completed_ms),
                ) => Some(Acked {
                    op,
                    epoch: *epoch,
                    site: site.as_deref().unwrap_or("?"),
                    completed_ms,
                }),
                _ => None,
            })
            .collect();
        finding.count("writes_with_epoch", acked.len() as u64);
        judge_service(&mut finding, spec.name.name(), &mut acked);
    }
    finding
}

/// Sweeps the writes in the order they started, against the newest epoch acknowledged
/// before each started.
fn judge_service(finding: &mut Finding, service: &str, acked: &mut [Acked]) {
    acked.sort_by_key(|a| a.op.invoked_ms);
    let mut newest: Option<(u64, u64, String)> = None; // (epoch, completed_ms, site)
    let mut order: Vec<(u64, u64, String)> = acked
        .iter()
        .map(|a| (a.completed_ms, a.epoch, a.site.to_string()))
        .collect();
    order.sort();
    let mut next = 0;
    for write in acked.iter() {
        while next < order.len() && order[next].0 < write.op.invoked_ms {
            let (completed_ms, epoch, site) = order[next].clone();
            if newest.as_ref().is_none_or(|(e, ..)| epoch > *e) {
                newest = Some((epoch, completed_ms, site));
            }
            next += 1;
        }
        if let Some((epoch, completed_ms, site)) = &newest {
            if write.epoch < *epoch {
                finding.count("stale_writes", 1);
                finding.violation(format!(
                    "{service}: operation {} started at {} and was acknowledged by {} at epoch {}, \
                     after a write at epoch {epoch} had been acknowledged by {site} at {}: \
                     a primary that had lost its role committed",
                    write.op.id,
                    secs(write.op.invoked_ms),
                    write.site,
                    write.epoch,
                    secs(*completed_ms),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::playbook_with;
    use super::*;

    const SERVICES: &str =
        "[{ name: payments, mode: active-passive }, { name: login, mode: active-active }]";

    /// A transfer invoked at `from_ms`, acknowledged at `to_ms` by `site` at `epoch`.
    fn transfer(id: u64, from_ms: u64, to_ms: u64, site: &str, epoch: u64) -> Operation {
        Operation {
            id,
            op: Op::Transfer {
                key: format!("t{id}"),
                from: "a".into(),
                to: "b".into(),
                amount: 1,
            },
            invoked_ms: from_ms,
            completed_ms: Some(to_ms),
            completion: Some(Completion::Ok {
                status: 200,
                body: serde_json::json!({}),
                site: Some(site.into()),
                epoch: Some(epoch),
            }),
        }
    }

    #[test]
    fn writes_that_overlap_a_failover_pass() {
        // The old primary's write was in flight when the new one committed: allowed.
        let ops = [
            transfer(1, 0, 100, "pangyo", 1),
            transfer(2, 150, 400, "pangyo", 1),
            transfer(3, 200, 300, "gasan", 2),
            transfer(4, 500, 600, "gasan", 2),
        ];
        let f = check(&playbook_with(SERVICES, "[]"), &ops);
        assert!(f.passed, "{:?}", f.violations);
        assert_eq!(f.get("writes_with_epoch"), 4);
    }

    #[test]
    fn a_stale_primary_committing_after_the_new_one_is_caught() {
        let ops = [
            transfer(1, 0, 100, "gasan", 2),
            transfer(2, 150, 200, "pangyo", 1),
        ];
        let f = check(&playbook_with(SERVICES, "[]"), &ops);
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("pangyo at epoch 1"),
            "{:?}",
            f.violations
        );
        assert!(f.violations[0].contains("epoch 2 had been acknowledged by gasan"));
    }

    #[test]
    fn active_active_services_are_not_fenced() {
        let ops = [
            transfer(1, 0, 100, "gasan", 2),
            transfer(2, 150, 200, "pangyo", 1),
        ];
        let f = check(
            &playbook_with(
                "[{ name: payments, mode: active-active }, { name: login, mode: active-active }]",
                "[]",
            ),
            &ops,
        );
        assert!(f.passed);
    }
}
