//! The `control` group's state machine: the cluster's members and sites, and everything
//! failover needs (topology, leases, health, routing, controls, audit; see [`failover`]).
//!
//! The control group is separate from the `state` group so that a flood of service data
//! can never delay it. `Ping` commits nothing but proves the control group can commit.
//! Every command that depends on time carries `at_ms`, stamped by the proposing leader,
//! so that apply stays deterministic.
//!
//! [`failover`]: crate::failover

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::failover::{
    Actor, AuditEntry, Evacuation, Failover, Freeze, Refusal, RouteChange, Rule,
};
use crate::membership::{self, Change};
use crate::topology::Topology;
use crate::{Member, NodeId, SiteId};

/// Longest member address accepted (`host:port`).
pub const MAX_ADDR_BYTES: usize = 255;

/// Everything the control group holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlState {
    /// Sites by name, with the nodes that registered in each.
    pub sites: BTreeMap<SiteId, SiteRecord>,
    /// Registered nodes by id.
    pub members: BTreeMap<NodeId, Member>,
    /// Count of pings committed: a cheap witness that the group commits.
    pub pings: u64,
    /// Topology, leases, health, routing, controls and audit.
    #[serde(default)]
    pub failover: Failover,
    /// The latest time stamped on an applied command: where the control group's timeline
    /// has got to. Every node's clock follows it, so that no leader stamps into the past
    /// of the one before it (however far behind its own wall clock is).
    #[serde(default)]
    pub clock_ms: u64,
    /// Routing hooks' deliveries, by hook then service (see [`crate::hooks`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hooks: crate::hooks::HookRecords,
    /// Runtime membership: the change running, removed ids, nodes that have held a log.
    #[serde(default)]
    pub membership: MembershipRecord,
}

/// What the control group remembers of membership changes (see [`crate::membership`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipRecord {
    /// The change in progress: at most one at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<Change>,
    /// Ids of removed nodes: never used again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tombstones: BTreeSet<NodeId>,
    /// Nodes the leader has seen hold log entries: one of them starting again on an empty
    /// disk has lost its votes, and is refused.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub seen: BTreeSet<NodeId>,
}

/// What the control group knows of one site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRecord {
    /// Nodes that registered in this site.
    pub nodes: BTreeSet<NodeId>,
}

/// A change request for the control group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlCommand {
    /// A node announces its site and address; repeating it is harmless.
    RegisterMember { node_id: NodeId, member: Member },
    /// Commit a no-op, to measure or prove the control group's write path.
    Ping,
    /// Replace the topology.
    ApplyTopology {
        topology: Topology,
        actor: Actor,
        at_ms: u64,
    },
    /// A site's node renews the site's liveness lease.
    RenewLease { site: SiteId, at_ms: u64 },
    /// A site's agent reports a health transition of a service's local instance.
    ReportHealth {
        service: String,
        site: SiteId,
        healthy: bool,
        at_ms: u64,
    },
    /// Change where a service is served (automation, or an operator naming overrides).
    Route(RouteChange),
    /// Take a site out of every service until restored or expired.
    Evacuate {
        site: SiteId,
        actor: Actor,
        reason: String,
        expires_at_ms: u64,
        overrides: Vec<Rule>,
        at_ms: u64,
    },
    /// Lift an evacuation.
    Restore {
        site: SiteId,
        actor: Actor,
        reason: String,
        at_ms: u64,
    },
    /// Stop automation.
    Freeze {
        actor: Actor,
        reason: String,
        at_ms: u64,
    },
    /// Let automation act again.
    Unfreeze { actor: Actor, at_ms: u64 },
    /// An operator's membership change starts; refused while another one runs.
    BeginMembership { change: Change },
    /// The running membership change ends (`error`: it failed part-way); `tombstones`
    /// are the ids it removed.
    EndMembership {
        tombstones: BTreeSet<NodeId>,
        error: Option<String>,
        at_ms: u64,
    },
    /// The control leader saw this node hold log entries.
    NodeSeen { node_id: NodeId },
    /// How a routing hook's delivery round of a service's change ended (`error`: failed).
    HookResult {
        hook: String,
        service: String,
        epoch: u64,
        error: Option<String>,
        at_ms: u64,
    },
}

/// What a control command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlResponse {
    /// Whether the registration changed anything.
    Registered { changed: bool },
    /// The number of pings committed so far, this one included.
    Pong { pings: u64 },
    /// The command took effect; a routing change reports the service's new epoch.
    Done { epoch: Option<u64> },
    /// The command was refused and changed nothing.
    Refused(Refusal),
    /// A membership change was refused and changed nothing.
    MembershipRefused(membership::Refusal),
    /// A log entry that carries no command, or an invalid one that changed nothing.
    None,
}

impl ControlCommand {
    /// The command's time, if it carries one.
    pub fn at_ms(&self) -> Option<u64> {
        match self {
            ControlCommand::ApplyTopology { at_ms, .. }
            | ControlCommand::RenewLease { at_ms, .. }
            | ControlCommand::ReportHealth { at_ms, .. }
            | ControlCommand::Restore { at_ms, .. }
            | ControlCommand::Freeze { at_ms, .. }
            | ControlCommand::Unfreeze { at_ms, .. }
            | ControlCommand::HookResult { at_ms, .. }
            | ControlCommand::EndMembership { at_ms, .. }
            | ControlCommand::Evacuate { at_ms, .. } => Some(*at_ms),
            ControlCommand::Route(change) => Some(change.at_ms),
            ControlCommand::BeginMembership { change } => Some(change.at_ms),
            ControlCommand::RegisterMember { .. }
            | ControlCommand::NodeSeen { .. }
            | ControlCommand::Ping => None,
        }
    }

    /// Sets the command's time, as the control leader does when it proposes it, so that
    /// every time in the control state comes from one clock per leadership.
    pub fn stamp(&mut self, now_ms: u64) {
        match self {
            ControlCommand::ApplyTopology { at_ms, .. }
            | ControlCommand::RenewLease { at_ms, .. }
            | ControlCommand::ReportHealth { at_ms, .. }
            | ControlCommand::Restore { at_ms, .. }
            | ControlCommand::Freeze { at_ms, .. }
            | ControlCommand::Unfreeze { at_ms, .. }
            | ControlCommand::HookResult { at_ms, .. }
            | ControlCommand::EndMembership { at_ms, .. } => *at_ms = now_ms,
            ControlCommand::Route(change) => change.at_ms = now_ms,
            ControlCommand::BeginMembership { change } => change.at_ms = now_ms,
            ControlCommand::Evacuate {
                at_ms,
                expires_at_ms,
                ..
            } => {
                // The expiry travels as a duration from the proposer's clock to the leader's.
                *expires_at_ms = now_ms + expires_at_ms.saturating_sub(*at_ms);
                *at_ms = now_ms;
            }
            ControlCommand::RegisterMember { .. }
            | ControlCommand::NodeSeen { .. }
            | ControlCommand::Ping => {}
        }
    }
}

impl ControlState {
    /// Applies a committed command. Never validates: the proposer did, by the rules of its
    /// version, and an entry today's limits would refuse must apply alike on every replica
    /// of a rolling upgrade.
    pub fn apply(&mut self, command: &ControlCommand) -> ControlResponse {
        if let Some(at_ms) = command.at_ms() {
            self.clock_ms = self.clock_ms.max(at_ms);
        }
        match command {
            ControlCommand::RegisterMember { node_id, member } => {
                let changed = self.members.get(node_id) != Some(member);
                if let Some(old) = self.members.insert(*node_id, member.clone()) {
                    if let Some(site) = self.sites.get_mut(&old.site) {
                        site.nodes.remove(node_id);
                    }
                }
                self.sites
                    .entry(member.site.clone())
                    .or_default()
                    .nodes
                    .insert(*node_id);
                self.sites.retain(|_, site| !site.nodes.is_empty());
                ControlResponse::Registered { changed }
            }
            ControlCommand::Ping => {
                self.pings += 1;
                ControlResponse::Pong { pings: self.pings }
            }
            ControlCommand::HookResult {
                hook,
                service,
                epoch,
                error,
                at_ms,
            } => {
                self.hook_result(hook, service, *epoch, error.as_deref(), *at_ms);
                ControlResponse::Done { epoch: None }
            }
            ControlCommand::BeginMembership { change } => self.begin_membership(change),
            ControlCommand::EndMembership {
                tombstones,
                error,
                at_ms,
            } => self.end_membership(tombstones, error.as_deref(), *at_ms),
            ControlCommand::NodeSeen { node_id } => {
                self.membership.seen.insert(*node_id);
                ControlResponse::Done { epoch: None }
            }
            other => done(self.apply_failover(other)),
        }
    }

    fn begin_membership(&mut self, change: &Change) -> ControlResponse {
        if let Some(running) = &self.membership.running {
            if running.blocks(change.leader, change.at_ms) {
                return ControlResponse::MembershipRefused(running.refusal());
            }
        }
        let entry = AuditEntry::new(
            change.at_ms,
            &change.actor,
            "membership",
            &change.what,
            "started",
        );
        self.failover.audit(entry);
        self.membership.running = Some(change.clone());
        ControlResponse::Done { epoch: None }
    }

    fn end_membership(
        &mut self,
        tombstones: &BTreeSet<NodeId>,
        error: Option<&str>,
        at_ms: u64,
    ) -> ControlResponse {
        let Some(change) = self.membership.running.take() else {
            return ControlResponse::None;
        };
        self.membership.tombstones.extend(tombstones);
        for id in tombstones {
            if let Some(member) = self.members.remove(id) {
                if let Some(site) = self.sites.get_mut(&member.site) {
                    site.nodes.remove(id);
                }
            }
        }
        self.sites.retain(|_, site| !site.nodes.is_empty());
        let outcome = match error {
            None => "done".to_string(),
            Some(error) => format!("failed: {error}"),
        };
        let entry = AuditEntry::new(at_ms, &change.actor, "membership", &change.what, &outcome);
        self.failover.audit(entry);
        ControlResponse::Done { epoch: None }
    }

    fn apply_failover(
        &mut self,
        command: &ControlCommand,
    ) -> std::result::Result<Option<u64>, Refusal> {
        let f = &mut self.failover;
        match command.clone() {
            ControlCommand::ApplyTopology {
                topology,
                actor,
                at_ms,
            } => f.apply_topology(topology, &actor, at_ms).map(|_| None),
            ControlCommand::RenewLease { site, at_ms } => {
                f.renew_lease(&site, at_ms);
                Ok(None)
            }
            ControlCommand::ReportHealth {
                service,
                site,
                healthy,
                at_ms,
            } => f
                .report_health(&service, &site, healthy, at_ms)
                .map(|_| None),
            ControlCommand::Route(change) => f.change_route(change).map(Some),
            ControlCommand::Evacuate {
                site,
                actor,
                reason,
                expires_at_ms,
                overrides,
                at_ms,
            } => f
                .evacuate(
                    &site,
                    Evacuation {
                        actor,
                        reason,
                        at_ms,
                        expires_at_ms,
                    },
                    &overrides,
                )
                .map(|_| None),
            ControlCommand::Restore {
                site,
                actor,
                reason,
                at_ms,
            } => f.restore(&site, &actor, &reason, at_ms).map(|_| None),
            ControlCommand::Freeze {
                actor,
                reason,
                at_ms,
            } => f
                .freeze(Freeze {
                    actor,
                    reason,
                    at_ms,
                })
                .map(|_| None),
            ControlCommand::Unfreeze { actor, at_ms } => f.unfreeze(&actor, at_ms).map(|_| None),
            ControlCommand::HookResult { .. }
            | ControlCommand::RegisterMember { .. }
            | ControlCommand::BeginMembership { .. }
            | ControlCommand::EndMembership { .. }
            | ControlCommand::NodeSeen { .. }
            | ControlCommand::Ping => {
                unreachable!("handled by apply")
            }
        }
    }
}

fn done(result: std::result::Result<Option<u64>, Refusal>) -> ControlResponse {
    match result {
        Ok(epoch) => ControlResponse::Done { epoch },
        Err(refusal) => ControlResponse::Refused(refusal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(id: u64, site: &str) -> ControlCommand {
        ControlCommand::RegisterMember {
            node_id: NodeId(id),
            member: Member {
                addr: format!("127.0.0.{id}:7000"),
                site: site.into(),
            },
        }
    }

    #[test]
    fn registration_is_idempotent_and_moves_between_sites() {
        let mut state = ControlState::default();
        assert_eq!(
            state.apply(&register(1, "pangyo")),
            ControlResponse::Registered { changed: true }
        );
        assert_eq!(
            state.apply(&register(1, "pangyo")),
            ControlResponse::Registered { changed: false }
        );
        state.apply(&register(1, "gasan"));
        assert_eq!(
            state.sites.keys().map(|s| s.0.as_str()).collect::<Vec<_>>(),
            vec!["gasan"]
        );
    }

    /// A freeze whose reason an older version's larger limit accepted is committed; a
    /// replica running today's limits applies it as the others did: automation stops.
    #[test]
    fn an_entry_over_todays_limits_still_applies() {
        let command = ControlCommand::Freeze {
            actor: Actor {
                kind: crate::failover::ActorKind::Manual,
                name: "ops".into(),
            },
            reason: "r".repeat(crate::failover::MAX_TEXT_BYTES + 1),
            at_ms: 1,
        };
        assert_eq!(command.validate().unwrap_err().field, "reason");
        let mut state = ControlState::default();
        state.apply(&command);
        assert!(state.failover.frozen.is_some(), "the freeze applied");
    }

    /// Two operators start membership changes at once: the log orders them, and the second
    /// is refused by the state machine itself, naming the first, with nothing changed.
    #[test]
    fn a_second_membership_change_is_refused_while_one_runs() {
        let change = |what: &str, at_ms| ControlCommand::BeginMembership {
            change: Change {
                what: what.into(),
                actor: Actor {
                    kind: crate::failover::ActorKind::Manual,
                    name: "ops".into(),
                },
                at_ms,
                leader: NodeId(1),
            },
        };
        let mut state = ControlState::default();
        assert_eq!(
            state.apply(&change("node-add 4 in pangyo", 10)),
            ControlResponse::Done { epoch: None }
        );
        let before = state.clone();
        match state.apply(&change("node-remove 2", 20)) {
            ControlResponse::MembershipRefused(refusal) => {
                assert_eq!(refusal.rule, membership::Rule::OneAtATime);
                assert!(refusal.detail.contains("node-add 4 in pangyo"), "{refusal}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(state.membership, before.membership, "nothing changed");
        state.apply(&ControlCommand::EndMembership {
            tombstones: [NodeId(2)].into(),
            error: None,
            at_ms: 30,
        });
        assert!(state.membership.running.is_none());
        assert!(state.membership.tombstones.contains(&NodeId(2)));
        assert_eq!(
            state.apply(&change("node-remove 3", 40)),
            ControlResponse::Done { epoch: None },
            "the next change may start once the first ended"
        );
    }

    #[test]
    fn ping_counts() {
        let mut state = ControlState::default();
        state.apply(&ControlCommand::Ping);
        assert_eq!(
            state.apply(&ControlCommand::Ping),
            ControlResponse::Pong { pings: 2 }
        );
    }
}
