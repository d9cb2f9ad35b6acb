//! Routing hooks: which routing changes each configured hook still has to receive, and
//! what the control group remembers of their delivery.
//!
//! ```text
//!   routing[service].epoch > hooks[hook][service].acked_epoch ─► pending(hook, service)
//!   control leader delivers it (exec or webhook, retried) ─► HookResult committed
//!        ok: acked_epoch = epoch          failed: failures + 1, last error, audited
//! ```
//!
//! Delivery is at least once: the acknowledgement is replicated, so a new control leader
//! delivers whatever its predecessor had not yet had acknowledged, and a receiver may see a
//! change twice; the idempotency key (cluster, service, epoch) lets it drop the repeat.
//! Hooks are level-triggered: each delivery carries the whole route, and a change that a
//! newer one replaced before it was delivered is skipped for the newer one (an epoch is
//! never delivered after a later one).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::control::ControlState;
use crate::failover::{Actor, AuditEntry, MAX_TEXT_BYTES};
use crate::SiteId;

/// Most distinct hook names the control group keeps records for.
pub const MAX_HOOKS: usize = 16;
/// Longest wait between two failed delivery rounds of one change.
pub const MAX_BACKOFF_MS: u64 = 60_000;

/// What the control group knows of one hook's deliveries of one service's changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRecord {
    /// The newest epoch the hook acknowledged.
    pub acked_epoch: u64,
    /// Failed delivery rounds since the last success.
    pub failures: u32,
    /// Why the last round failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the last round ended.
    pub at_ms: u64,
}

/// What a hook receives: the change, as JSON on an exec hook's stdin or a webhook's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookChange {
    /// `<cluster>/<service>/<epoch>`: the same change always has the same key.
    pub idempotency_key: String,
    pub cluster: String,
    pub service: String,
    pub epoch: u64,
    /// Sites serving the service from this epoch on.
    pub serving: Vec<SiteId>,
    /// The primary, for active-passive.
    pub primary: Option<SiteId>,
    /// The endpoints of the serving sites, in the same order.
    pub endpoints: Vec<String>,
    /// Why it changed and who changed it, from the audit log (when it still holds them).
    pub reason: String,
    pub actor: Option<Actor>,
}

/// A change `hook` has yet to receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub hook: String,
    pub change: HookChange,
}

/// Every change a hook of `hooks` has yet to receive at `now_ms`, skipping those whose
/// last failed round is still backing off.
pub fn pending(state: &ControlState, cluster: &str, hooks: &[String], now_ms: u64) -> Vec<Pending> {
    let f = &state.failover;
    let Some(topology) = &f.topology else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for hook in hooks {
        let records = state.hooks.get(hook);
        for (service, route) in &f.routing {
            let record = records
                .and_then(|r| r.get(service))
                .cloned()
                .unwrap_or_default();
            if record.acked_epoch >= route.epoch
                || now_ms < record.at_ms.saturating_add(backoff_ms(record.failures))
            {
                continue;
            }
            let spec = topology.service(service);
            let audit = f.audit.entries.iter().rev().find(|e| {
                e.action == "route" && e.target == *service && e.epoch == Some(route.epoch)
            });
            let serving: Vec<SiteId> = route.serving.iter().cloned().collect();
            out.push(Pending {
                hook: hook.clone(),
                change: HookChange {
                    idempotency_key: format!("{cluster}/{service}/{}", route.epoch),
                    cluster: cluster.to_string(),
                    service: service.clone(),
                    epoch: route.epoch,
                    endpoints: serving
                        .iter()
                        .filter_map(|s| spec?.endpoints.get(s).cloned())
                        .collect(),
                    serving,
                    primary: route.primary.clone(),
                    reason: audit.map_or_else(|| "topology applied".into(), |e| e.reason.clone()),
                    actor: audit.map(|e| e.actor.clone()),
                },
            });
        }
    }
    out
}

/// How long after `failures` failed rounds the next one waits: 1 s doubling, at most
/// [`MAX_BACKOFF_MS`]; none before the first failure.
pub fn backoff_ms(failures: u32) -> u64 {
    match failures {
        0 => 0,
        n => (1000u64 << (n - 1).min(16)).min(MAX_BACKOFF_MS),
    }
}

impl ControlState {
    /// Records how a delivery round of `hook` for `service` at `epoch` ended; a failure is
    /// audited. Records of services that have no route any more are dropped, and a hook
    /// beyond the first [`MAX_HOOKS`] names is not recorded.
    pub fn hook_result(
        &mut self,
        hook: &str,
        service: &str,
        epoch: u64,
        error: Option<&str>,
        at_ms: u64,
    ) {
        if !self.hooks.contains_key(hook) && self.hooks.len() >= MAX_HOOKS {
            return;
        }
        let routing = &self.failover.routing;
        for records in self.hooks.values_mut() {
            records.retain(|service, _| routing.contains_key(service));
        }
        let record = self
            .hooks
            .entry(hook.to_string())
            .or_default()
            .entry(service.to_string())
            .or_default();
        record.at_ms = at_ms;
        match error {
            None => {
                record.acked_epoch = record.acked_epoch.max(epoch);
                record.failures = 0;
                record.last_error = None;
            }
            Some(error) => {
                let error = truncate(error);
                record.failures = record.failures.saturating_add(1);
                record.last_error = Some(error.clone());
                let hook_actor = Actor::automation();
                let entry = AuditEntry {
                    epoch: Some(epoch),
                    ..AuditEntry::new(
                        at_ms,
                        &hook_actor,
                        "hook-failed",
                        service,
                        &format!("hook {hook}: {error}"),
                    )
                };
                self.failover.push_audit(entry);
            }
        }
    }
}

fn truncate(text: &str) -> String {
    let mut end = text.len().min(MAX_TEXT_BYTES - 64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// The records kept per hook, then service.
pub type HookRecords = BTreeMap<String, BTreeMap<String, HookRecord>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute() {
        assert_eq!(backoff_ms(0), 0);
        assert_eq!(backoff_ms(1), 1000);
        assert_eq!(backoff_ms(3), 4000);
        assert_eq!(backoff_ms(40), MAX_BACKOFF_MS);
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let error = "화".repeat(400);
        let cut = truncate(&error);
        assert!(cut.len() <= MAX_TEXT_BYTES);
        assert!(error.starts_with(&cut));
    }
}
