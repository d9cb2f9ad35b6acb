//! Runtime membership: which operator requests may change who votes, and the plan that
//! carries one out. Pure: the node's admin endpoint asks [`plan`] with what it sees of
//! both Raft groups and the control state, and executes the plan it gets (or answers the
//! refusal, which names its rule, having changed nothing).
//!
//! ```text
//!   request ─► plan(view) ─► refused(rule)                        (nothing changed)
//!                         └► Plan { add, promote, remove }
//!                              begin (control state: one change at a time)
//!                              add learner ─► caught up? ─► voters := next ─► drop removed
//!                              end (removed ids tombstoned for good)
//! ```
//!
//! Rules (RAFT-NOTES.md, after etcd's strict reconfiguration check and Consul autopilot):
//! - `one-at-a-time`: two changes at once can leave a joint configuration behind;
//! - `id-reused`: a node id is never used twice, or a replayed configuration could make a
//!   fresh node a quorum of one;
//! - `site-majority`: no site holds a majority of the voters, or its fire takes the quorum;
//! - `survival-goal`: voters span at least [`MIN_VOTING_SITES`] sites, so any one site can
//!   burn and a quorum is left;
//! - `healthy-voter`: a voter whose site is still up is removed only with `--force`.
//!
//! A learner is promoted only once [`CatchUp`] says it has kept up for a stable period.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::control::MAX_ADDR_BYTES;
use crate::failover::Actor;
use crate::{InvalidInput, Member, NodeId, SiteId};

/// Fewest distinct sites the voters may span: lose any one, and a majority is left.
pub const MIN_VOTING_SITES: usize = 3;
/// Most voters a membership may have (each voter slows every commit).
pub const MAX_VOTERS: usize = 9;
/// Most nodes (voters and learners) a membership may have.
pub const MAX_NODES: usize = 64;
/// A change still marked running after this long is taken as abandoned, so the next
/// change may go ahead. (A change whose control leader lost its leadership is abandoned at
/// once: only the leader that started a change carries it out.)
pub const MAX_CHANGE_MS: u64 = 60 * 60 * 1000;
/// A learner is caught up once it trails the leader by at most this many entries...
pub const CATCH_UP_MAX_LAG: u64 = 100;
/// ...continuously for this long.
pub const CATCH_UP_STABLE_MS: u64 = 2_000;

/// An operator's membership request, as the admin endpoint takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action", deny_unknown_fields)]
pub enum Request {
    /// A node joins `site` as a learner; it becomes a voter if its site has none yet (or
    /// with `voter: true`, where the rules allow).
    NodeAdd {
        id: NodeId,
        site: SiteId,
        addr: String,
        #[serde(default)]
        voter: bool,
    },
    /// A node leaves both groups; its id is tombstoned.
    NodeRemove {
        id: NodeId,
        #[serde(default)]
        force: bool,
    },
    /// A new site joins with its first node, as a voter.
    SiteAdd {
        site: SiteId,
        id: NodeId,
        addr: String,
    },
    /// Every node of a site leaves.
    SiteRemove {
        site: SiteId,
        #[serde(default)]
        force: bool,
    },
    /// A new site's first node takes the place of every voter of `dead`, in one change.
    SiteReplace {
        dead: SiteId,
        with: SiteId,
        id: NodeId,
        addr: String,
        #[serde(default)]
        force: bool,
    },
}

/// What the planner sees: both groups' membership (the control group's; the state group
/// follows it) and what the control state remembers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub voters: BTreeMap<NodeId, SiteId>,
    pub learners: BTreeMap<NodeId, SiteId>,
    /// Ids removed before: never to be used again.
    pub tombstones: BTreeSet<NodeId>,
    /// Sites whose lease is current (their voters are healthy).
    pub sites_up: BTreeSet<SiteId>,
    /// A change still running, if any.
    pub running: Option<Change>,
    /// The control leader that would carry the change out (the node planning it).
    pub leader: NodeId,
}

/// The steps a request comes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// A node to add as a learner first.
    pub add: Option<(NodeId, Member)>,
    /// The voters once the change is done (equal to the current ones: no voter change).
    pub voters: BTreeSet<NodeId>,
    /// Nodes to drop from both groups and tombstone.
    pub remove: BTreeSet<NodeId>,
}

impl Plan {
    /// Whether the added node becomes a voter (and must catch up first).
    pub fn promotes(&self) -> bool {
        self.add
            .as_ref()
            .is_some_and(|(id, _)| self.voters.contains(id))
    }
}

/// A membership change in progress, as the control state records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The request's action and target, e.g. `site-replace pangyo`.
    pub what: String,
    pub actor: Actor,
    pub at_ms: u64,
    /// The control leader carrying it out; once another node leads, the change is
    /// abandoned (its steps fail on a node that no longer leads).
    #[serde(default)]
    pub leader: NodeId,
}

impl Change {
    /// Whether `next`, started by `next.leader` at `next.at_ms`, must wait for this one.
    pub fn blocks(&self, next_leader: NodeId, now_ms: u64) -> bool {
        self.leader == next_leader && now_ms.saturating_sub(self.at_ms) < MAX_CHANGE_MS
    }

    /// The refusal of a change that must wait for this one.
    pub fn refusal(&self) -> Refusal {
        refuse(
            Rule::OneAtATime,
            format!(
                "{} (by {}) is still running; wait for it to finish",
                self.what, self.actor.name
            ),
        )
    }
}

/// A rule that refuses a membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    OneAtATime,
    IdReused,
    SiteMajority,
    SurvivalGoal,
    HealthyVoter,
    /// The request names a node or site that is not there, or one that already is.
    Target,
    /// The membership would exceed a bound.
    Limit,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::OneAtATime => "one-at-a-time",
            Rule::IdReused => "id-reused",
            Rule::SiteMajority => "site-majority",
            Rule::SurvivalGoal => "survival-goal",
            Rule::HealthyVoter => "healthy-voter",
            Rule::Target => "target",
            Rule::Limit => "limit",
        }
    }
}

/// A refused membership change; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("refused by rule {}: {detail}", .rule.name())]
pub struct Refusal {
    pub rule: Rule,
    pub detail: String,
}

fn refuse(rule: Rule, detail: impl Into<String>) -> Refusal {
    Refusal {
        rule,
        detail: detail.into(),
    }
}

impl Request {
    /// Checks every field before anything else looks at the request.
    pub fn validate(&self) -> crate::Result<()> {
        let check_addr = |addr: &str| {
            let ok = !addr.is_empty() && addr.len() <= MAX_ADDR_BYTES && addr.contains(':');
            if ok {
                Ok(())
            } else {
                Err(InvalidInput::new(
                    "addr",
                    format!(
                        "the new node's peer address must be 1 to {MAX_ADDR_BYTES} bytes of host:port"
                    ),
                ))
            }
        };
        match self {
            Request::NodeAdd { site, addr, .. } | Request::SiteAdd { site, addr, .. } => {
                site.validate("site")?;
                check_addr(addr)
            }
            Request::NodeRemove { .. } => Ok(()),
            Request::SiteRemove { site, .. } => site.validate("site"),
            Request::SiteReplace {
                dead, with, addr, ..
            } => {
                dead.validate("dead")?;
                with.validate("with")?;
                if dead == with {
                    return Err(InvalidInput::new(
                        "with",
                        "a site cannot replace itself: name a new site",
                    ));
                }
                check_addr(addr)
            }
        }
    }

    /// How the audit log and the running-change record name it.
    pub fn describe(&self) -> String {
        match self {
            Request::NodeAdd { id, site, .. } => format!("node-add {id} in {site}"),
            Request::NodeRemove { id, .. } => format!("node-remove {id}"),
            Request::SiteAdd { site, id, .. } => format!("site-add {site} (node {id})"),
            Request::SiteRemove { site, .. } => format!("site-remove {site}"),
            Request::SiteReplace { dead, with, id, .. } => {
                format!("site-replace {dead} with {with} (node {id})")
            }
        }
    }
}

/// The plan for `request` given `view`, or the rule that refuses it.
pub fn plan(view: &View, request: &Request, now_ms: u64) -> Result<Plan, Refusal> {
    check_running(view, now_ms)?;
    let plan = match request.clone() {
        Request::NodeAdd {
            id,
            site,
            addr,
            voter,
        } => {
            let promote = voter || !view.voters.values().any(|s| *s == site);
            add(view, id, Member { addr, site }, promote, BTreeSet::new())?
        }
        Request::SiteAdd { site, id, addr } => {
            check_new_site(view, &site)?;
            add(view, id, Member { addr, site }, true, BTreeSet::new())?
        }
        Request::SiteReplace {
            dead,
            with,
            id,
            addr,
            force,
        } => {
            let gone = nodes_of(view, &dead)?;
            check_new_site(view, &with)?;
            check_removal(view, &gone, force)?;
            add(view, id, Member { addr, site: with }, true, gone)?
        }
        Request::NodeRemove { id, force } => {
            if !view.voters.contains_key(&id) && !view.learners.contains_key(&id) {
                return Err(refuse(
                    Rule::Target,
                    format!("node {id} is not a member (see `firebreak status`)"),
                ));
            }
            remove(view, BTreeSet::from([id]), force)?
        }
        Request::SiteRemove { site, force } => remove(view, nodes_of(view, &site)?, force)?,
    };
    check_voters(view, &plan)?;
    Ok(plan)
}

/// Refuses while another change runs (unless it is old enough to be abandoned).
fn check_running(view: &View, now_ms: u64) -> Result<(), Refusal> {
    match &view.running {
        Some(running) if running.blocks(view.leader, now_ms) => Err(running.refusal()),
        _ => Ok(()),
    }
}

/// A site a request brings in must not have nodes yet.
fn check_new_site(view: &View, site: &SiteId) -> Result<(), Refusal> {
    let known = view
        .voters
        .values()
        .chain(view.learners.values())
        .any(|s| s == site);
    if known {
        return Err(refuse(
            Rule::Target,
            format!("site {site} already has nodes: a new site starts empty; add nodes to it with `firebreak node add`"),
        ));
    }
    Ok(())
}

/// A plan that drops `gone` from both groups.
fn remove(view: &View, gone: BTreeSet<NodeId>, force: bool) -> Result<Plan, Refusal> {
    check_removal(view, &gone, force)?;
    let voters = view
        .voters
        .keys()
        .filter(|id| !gone.contains(id))
        .copied()
        .collect();
    Ok(Plan {
        add: None,
        voters,
        remove: gone,
    })
}

/// Every node (voter or learner) of `site`; refused when it has none.
fn nodes_of(view: &View, site: &SiteId) -> Result<BTreeSet<NodeId>, Refusal> {
    let nodes: BTreeSet<NodeId> = view
        .voters
        .iter()
        .chain(&view.learners)
        .filter(|(_, s)| *s == site)
        .map(|(id, _)| *id)
        .collect();
    if nodes.is_empty() {
        return Err(refuse(
            Rule::Target,
            format!("site {site} has no nodes (see `firebreak status`)"),
        ));
    }
    Ok(nodes)
}

/// A plan that adds `id` (as a voter if `promote`) and drops `remove`.
fn add(
    view: &View,
    id: NodeId,
    member: Member,
    promote: bool,
    remove: BTreeSet<NodeId>,
) -> Result<Plan, Refusal> {
    if view.tombstones.contains(&id) {
        return Err(refuse(
            Rule::IdReused,
            format!("node id {id} was removed before and is never used again; pick a new id"),
        ));
    }
    if view.voters.contains_key(&id) || view.learners.contains_key(&id) {
        return Err(refuse(
            Rule::IdReused,
            format!("node id {id} is already a member; pick a new id"),
        ));
    }
    if view.voters.len() + view.learners.len() >= MAX_NODES {
        return Err(refuse(
            Rule::Limit,
            format!("the cluster has {MAX_NODES} nodes, the most it may have"),
        ));
    }
    let mut voters: BTreeSet<NodeId> = view.voters.keys().copied().collect();
    voters.retain(|v| !remove.contains(v));
    if promote {
        voters.insert(id);
    }
    Ok(Plan {
        add: Some((id, member)),
        voters,
        remove,
    })
}

/// Refuses to remove the control leader (it carries the change out: openraft 0.9 has no
/// leader transfer), and a voter whose site is up unless forced.
fn check_removal(view: &View, gone: &BTreeSet<NodeId>, force: bool) -> Result<(), Refusal> {
    if gone.contains(&view.leader) {
        return Err(refuse(
            Rule::Target,
            format!(
                "node {} leads the control group and carries this change out: it cannot remove itself; \
                 stop it so that another node leads, then repeat",
                view.leader
            ),
        ));
    }
    if force {
        return Ok(());
    }
    let healthy: Vec<String> = gone
        .iter()
        .filter_map(|id| view.voters.get(id).map(|site| (id, site)))
        .filter(|(_, site)| view.sites_up.contains(*site))
        .map(|(id, site)| format!("node {id} ({site})"))
        .collect();
    if healthy.is_empty() {
        return Ok(());
    }
    Err(refuse(
        Rule::HealthyVoter,
        format!(
            "{} still renews its site's lease; to remove a healthy voter anyway, repeat with --force",
            healthy.join(", ")
        ),
    ))
}

/// The voters after the plan: spread over enough sites, none holding a majority.
fn check_voters(view: &View, plan: &Plan) -> Result<(), Refusal> {
    let site_of = |id: &NodeId| {
        view.voters.get(id).or_else(|| {
            plan.add
                .as_ref()
                .filter(|(a, _)| a == id)
                .map(|(_, m)| &m.site)
        })
    };
    let mut per_site: BTreeMap<&SiteId, usize> = BTreeMap::new();
    for id in &plan.voters {
        if let Some(site) = site_of(id) {
            *per_site.entry(site).or_default() += 1;
        }
    }
    let total = plan.voters.len();
    if total > MAX_VOTERS {
        return Err(refuse(
            Rule::Limit,
            format!("{total} voters exceed the limit of {MAX_VOTERS}; add it as a learner"),
        ));
    }
    if per_site.len() < MIN_VOTING_SITES {
        let sites: Vec<String> = per_site.keys().map(|s| s.to_string()).collect();
        return Err(refuse(
            Rule::SurvivalGoal,
            format!(
                "the voters would span {} site(s) ({}); at least {MIN_VOTING_SITES} are needed so that \
                 any one site can burn and a majority is left: replace the site instead of removing it",
                per_site.len(),
                sites.join(", ")
            ),
        ));
    }
    if let Some((site, count)) = per_site.iter().find(|(_, n)| **n * 2 > total) {
        return Err(refuse(
            Rule::SiteMajority,
            format!(
                "site {site} would hold {count} of {total} voters, a majority: its fire would take the quorum"
            ),
        ));
    }
    Ok(())
}

/// Whether a learner has caught up: it trailed the leader by at most [`CATCH_UP_MAX_LAG`]
/// entries at every observation for [`CATCH_UP_STABLE_MS`].
#[derive(Debug, Clone, Default)]
pub struct CatchUp {
    within_since_ms: Option<u64>,
}

impl CatchUp {
    /// Records the learner's lag (`None`: it has acknowledged nothing yet) at `now_ms`;
    /// true once it has been within the bound for the whole stable period.
    pub fn observe(&mut self, lag: Option<u64>, now_ms: u64) -> bool {
        match lag {
            Some(lag) if lag <= CATCH_UP_MAX_LAG => {
                let since = *self.within_since_ms.get_or_insert(now_ms);
                now_ms.saturating_sub(since) >= CATCH_UP_STABLE_MS
            }
            _ => {
                self.within_since_ms = None;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
