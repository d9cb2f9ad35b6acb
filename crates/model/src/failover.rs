//! Guarded failover: leases, health, routing, operator controls, safety rules, audit, and
//! `decide`, the whole automatic policy as one pure function.
//!
//! ```text
//!   renewals, health transitions ──► ControlState (replicated) ──► decide(state, now)
//!   operator controls ─────────────►        ▲                          │ Route / Restore
//!                                           └── apply (rules checked) ◄┘ through Raft
//! ```
//!
//! Time: every command carries `at_ms`, stamped by the control leader that proposes it, so
//! apply is deterministic. The stamps lie on one timeline: a node's clock advances with its
//! monotonic clock and never reads behind the group's latest stamp (`ControlState::clock_ms`,
//! followed by the node's `clock`), so a clock step on a leader, or skew between two
//! leaders' clocks, neither takes a live site down nor keeps a dead one up. `decide` judges
//! leases and dwell as differences on that timeline. After a leadership change the engine
//! waits two lease intervals before it runs `decide`: no lease could be renewed while there
//! was no leader.
//!
//! Invariants, enforced in apply for every routing change, automatic or manual:
//! - a service always keeps a serving site (`min-serving`): automation fails static;
//! - two changes of one service are at least `dwell_ms` apart (`dwell`);
//! - a manual action may break a rule only by naming it, and the audit records that.
//!
//! `decide` adds automation's own limits: it holds at most `max_sites_down_auto` sites out
//! of a service (`max-sites-down`), fails static rather than empty a service, and proposes
//! nothing while frozen. It runs only on a control leader that has a quorum.
//!
//! Precedence: an evacuation is lifted only by an actor of the same or higher precedence
//! (manual > automatic > drill), and automation never serves an evacuated site.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::topology::{Mode, Topology};
use crate::SiteId;

/// Longest evacuation, and the default when no expiry is given: 72 hours.
pub const MAX_EVACUATION_MS: u64 = 72 * 3600 * 1000;
/// Longest reason or actor name kept.
pub const MAX_TEXT_BYTES: usize = 512;

/// A safety rule a change can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Every service keeps at least one serving site.
    MinServing,
    /// Changes of one service are at least `dwell_ms` apart.
    Dwell,
    /// Automation holds at most `max_sites_down_auto` sites out of a service.
    MaxSitesDown,
}

impl Rule {
    /// The rule's name as operators write it (`--override dwell`).
    pub fn name(self) -> &'static str {
        match self {
            Rule::MinServing => "min-serving",
            Rule::Dwell => "dwell",
            Rule::MaxSitesDown => "max-sites-down",
        }
    }
}

/// Who acts, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    Drill,
    Automatic,
    Manual,
}

/// An actor: its kind and a name (the token's name for people, `failover` for automation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    pub name: String,
}

impl Actor {
    /// The failover engine.
    pub fn automation() -> Self {
        Self {
            kind: ActorKind::Automatic,
            name: "failover".into(),
        }
    }
}

/// A site's liveness lease as the control group last recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Last renewal, on the proposing leader's clock.
    pub renewed_at_ms: u64,
    /// Start of the current run of renewals without a lapse.
    pub up_since_ms: u64,
}

/// A service instance's health in one site, as its agent last reported a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub healthy: bool,
    pub since_ms: u64,
}

/// Where a service is served now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Sites that serve the service; one for active-passive.
    pub serving: BTreeSet<SiteId>,
    /// The primary, for active-passive.
    pub primary: Option<SiteId>,
    /// Grows at every change: a fencing token for services and hooks.
    pub epoch: u64,
    pub changed_at_ms: u64,
}

/// A site taken out of service by an actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evacuation {
    pub actor: Actor,
    pub reason: String,
    pub at_ms: u64,
    pub expires_at_ms: u64,
}

/// Automation is frozen: it proposes nothing until unfrozen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    pub actor: Actor,
    pub reason: String,
    pub at_ms: u64,
}

/// One audited change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the whole history, archived entries included.
    pub seq: u64,
    pub at_ms: u64,
    pub actor: Actor,
    /// `topology`, `route`, `evacuate`, `restore`, `freeze`, `unfreeze`, `hook-failed`.
    pub action: String,
    /// The service or site acted on.
    pub target: String,
    pub reason: String,
    /// Rules the actor chose to override.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overridden: Vec<Rule>,
    /// The service's epoch after a routing change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl AuditEntry {
    /// An entry without overrides or epoch; the log assigns `seq`.
    pub fn new(at_ms: u64, actor: &Actor, action: &str, target: &str, reason: &str) -> Self {
        Self {
            seq: 0,
            at_ms,
            actor: actor.clone(),
            action: action.into(),
            target: target.into(),
            reason: reason.into(),
            overridden: Vec::new(),
            epoch: None,
        }
    }
}

/// The append-only audit log, bounded by moving old entries to an archived count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    pub entries: VecDeque<AuditEntry>,
    /// Entries compacted away (the oldest `archived` sequence numbers).
    pub archived: u64,
}

impl Audit {
    /// Appends an entry and compacts to `keep`.
    pub fn push(&mut self, mut entry: AuditEntry, keep: usize) {
        entry.seq = self.archived + self.entries.len() as u64;
        self.entries.push_back(entry);
        while self.entries.len() > keep {
            self.entries.pop_front();
            self.archived += 1;
        }
    }
}

/// Why a change was refused: the rule, and what the actor can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Refusal {
    /// A safety rule blocks it; name the rule with `--override` to go ahead anyway.
    #[error("blocked by rule {}: {detail}; a manual command may go ahead with --override {}", .rule.name(), .rule.name())]
    Blocked { rule: Rule, detail: String },
    /// Bad input: unknown site or service, no topology, a precedence it lacks.
    #[error("{message}")]
    Invalid { message: String },
}

impl Refusal {
    /// Refuses bad input with a message the actor can act on.
    pub fn invalid(message: impl Into<String>) -> Self {
        Refusal::Invalid {
            message: message.into(),
        }
    }
}

/// Failover's part of the control state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failover {
    pub topology: Option<Topology>,
    pub leases: BTreeMap<SiteId, Lease>,
    /// Health by service, then site; no entry means no transition reported: healthy.
    pub health: BTreeMap<String, BTreeMap<SiteId, Health>>,
    pub routing: BTreeMap<String, Route>,
    pub evacuations: BTreeMap<SiteId, Evacuation>,
    pub frozen: Option<Freeze>,
    pub audit: Audit,
}

/// A routing change, automatic or manual.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteChange {
    pub service: String,
    pub serving: BTreeSet<SiteId>,
    pub primary: Option<SiteId>,
    pub actor: Actor,
    pub reason: String,
    #[serde(default)]
    pub overrides: Vec<Rule>,
    pub at_ms: u64,
}

impl Failover {
    fn keep(&self) -> usize {
        self.topology
            .as_ref()
            .map_or(10_000, |t| t.policy.audit_keep)
    }

    pub(crate) fn audit(&mut self, entry: AuditEntry) {
        let keep = self.keep();
        self.audit.push(entry, keep);
    }

    /// Appends `entry` to the audit log, compacted to the topology's `audit_keep`.
    pub(crate) fn push_audit(&mut self, entry: AuditEntry) {
        self.audit(entry);
    }

    /// Replaces the topology; new services start served by every site with an endpoint
    /// that is not evacuated (the primary by priority), removed services lose their route.
    pub fn apply_topology(
        &mut self,
        topology: Topology,
        actor: &Actor,
        at_ms: u64,
    ) -> Result<(), Refusal> {
        self.routing
            .retain(|name, _| topology.service(name).is_some());
        self.health
            .retain(|name, _| topology.service(name).is_some());
        for service in &topology.services {
            if let Some(route) = self.routing.get(&service.name) {
                if let Some(route) = reshaped(service, route, &self.evacuations, at_ms) {
                    let entry = AuditEntry {
                        epoch: Some(route.epoch),
                        ..AuditEntry::new(
                            at_ms,
                            actor,
                            "route",
                            &service.name,
                            "the topology changed the service's mode or sites",
                        )
                    };
                    self.routing.insert(service.name.clone(), route);
                    self.audit(entry);
                }
                continue;
            }
            let ranked: Vec<SiteId> = Topology::ranked_sites(service)
                .into_iter()
                .filter(|s| !self.evacuations.contains_key(s))
                .collect();
            let ranked = if ranked.is_empty() {
                Topology::ranked_sites(service)
            } else {
                ranked
            };
            let (serving, primary) = match service.mode {
                Mode::ActiveActive => (ranked.iter().cloned().collect(), None),
                Mode::ActivePassive => {
                    (BTreeSet::from([ranked[0].clone()]), Some(ranked[0].clone()))
                }
            };
            self.routing.insert(
                service.name.clone(),
                Route {
                    serving,
                    primary,
                    epoch: 1,
                    changed_at_ms: at_ms,
                },
            );
        }
        let summary = format!(
            "{} sites, {} services",
            topology.sites.len(),
            topology.services.len()
        );
        self.topology = Some(topology);
        self.audit(AuditEntry::new(
            at_ms, actor, "topology", "cluster", &summary,
        ));
        Ok(())
    }

    /// Records a lease renewal of `site`.
    pub fn renew_lease(&mut self, site: &SiteId, at_ms: u64) {
        let down_after = self
            .topology
            .as_ref()
            .map_or(u64::MAX, |t| t.policy.site_down_after_ms);
        let up_since_ms = match self.leases.get(site) {
            Some(lease) if at_ms.saturating_sub(lease.renewed_at_ms) <= down_after => {
                lease.up_since_ms
            }
            _ => at_ms,
        };
        self.leases.insert(
            site.clone(),
            Lease {
                renewed_at_ms: at_ms,
                up_since_ms,
            },
        );
    }

    /// Records a health transition of `service` in `site`.
    pub fn report_health(
        &mut self,
        service: &str,
        site: &SiteId,
        healthy: bool,
        at_ms: u64,
    ) -> Result<(), Refusal> {
        let topology = self
            .topology
            .as_ref()
            .ok_or_else(|| Refusal::invalid("no topology applied"))?;
        let spec = topology
            .service(service)
            .ok_or_else(|| Refusal::invalid(format!("unknown service {service}")))?;
        if !spec.endpoints.contains_key(site) {
            return Err(Refusal::invalid(format!(
                "service {service} has no endpoint in site {site}"
            )));
        }
        let entry = self.health.entry(service.to_string()).or_default();
        if entry.get(site).map(|h| h.healthy) != Some(healthy) {
            entry.insert(
                site.clone(),
                Health {
                    healthy,
                    since_ms: at_ms,
                },
            );
        }
        Ok(())
    }

    /// Checks a routing change against every rule not overridden; applies and audits it.
    pub fn change_route(&mut self, change: RouteChange) -> Result<u64, Refusal> {
        let topology = self
            .topology
            .as_ref()
            .ok_or_else(|| Refusal::invalid("no topology applied"))?;
        let policy = topology.policy.clone();
        let spec = topology
            .service(&change.service)
            .ok_or_else(|| Refusal::invalid(format!("unknown service {}", change.service)))?;
        let candidates: BTreeSet<SiteId> = spec.endpoints.keys().cloned().collect();
        if let Some(site) = change.serving.iter().find(|s| !candidates.contains(*s)) {
            return Err(Refusal::invalid(format!(
                "service {} has no endpoint in site {site}",
                change.service
            )));
        }
        if let Some(problem) = shape_problem(spec.mode, &change.serving, &change.primary) {
            return Err(Refusal::invalid(format!(
                "service {}: {problem}",
                change.service
            )));
        }
        let route = self.routing.get(&change.service).cloned().ok_or_else(|| {
            Refusal::invalid(format!("service {} has no route yet", change.service))
        })?;
        let overridden =
            |rule| change.actor.kind == ActorKind::Manual && change.overrides.contains(&rule);
        if change.serving.is_empty() && !overridden(Rule::MinServing) {
            return Err(Refusal::Blocked {
                rule: Rule::MinServing,
                detail: format!("service {} would have no serving site", change.service),
            });
        }
        let since = change.at_ms.saturating_sub(route.changed_at_ms);
        if since < policy.dwell_ms && !overridden(Rule::Dwell) {
            return Err(Refusal::Blocked {
                rule: Rule::Dwell,
                detail: format!(
                    "service {} changed {since} ms ago; the dwell time is {} ms",
                    change.service, policy.dwell_ms
                ),
            });
        }
        let epoch = route.epoch + 1;
        self.routing.insert(
            change.service.clone(),
            Route {
                serving: change.serving,
                primary: change.primary,
                epoch,
                changed_at_ms: change.at_ms,
            },
        );
        self.audit(AuditEntry {
            overridden: change.overrides.clone(),
            epoch: Some(epoch),
            ..AuditEntry::new(
                change.at_ms,
                &change.actor,
                "route",
                &change.service,
                &change.reason,
            )
        });
        Ok(epoch)
    }

    /// Takes a site out of every service, all or nothing: each service's change must pass
    /// the rules not overridden.
    pub fn evacuate(
        &mut self,
        site: &SiteId,
        evacuation: Evacuation,
        overrides: &[Rule],
    ) -> Result<(), Refusal> {
        let topology = self
            .topology
            .as_ref()
            .ok_or_else(|| Refusal::invalid("no topology applied"))?;
        match topology.site(site) {
            None => return Err(Refusal::invalid(format!("unknown site {site}"))),
            Some(spec) if spec.witness => {
                return Err(Refusal::invalid(format!(
                    "site {site} is a witness and serves nothing"
                )))
            }
            Some(_) => {}
        }
        let at_ms = evacuation.at_ms;
        if let Some(existing) = self.evacuations.get(site) {
            if existing.actor.kind > evacuation.actor.kind {
                return Err(Refusal::invalid(format!(
                    "site {site} is already evacuated by {} ({:?})",
                    existing.actor.name, existing.actor.kind
                )));
            }
        }
        let mut next = self.clone();
        let services: Vec<_> = topology.services.clone();
        for service in services {
            let Some(route) = next.routing.get(&service.name) else {
                continue;
            };
            if !route.serving.contains(site) {
                continue;
            }
            let mut serving = route.serving.clone();
            serving.remove(site);
            let primary = match service.mode {
                Mode::ActiveActive => None,
                Mode::ActivePassive => {
                    let fallback = Topology::ranked_sites(&service)
                        .into_iter()
                        .find(|s| s != site && !next.evacuations.contains_key(s));
                    serving = fallback.iter().cloned().collect();
                    fallback
                }
            };
            next.change_route(RouteChange {
                service: service.name.clone(),
                serving,
                primary,
                actor: evacuation.actor.clone(),
                reason: format!("evacuate {site}: {}", evacuation.reason),
                overrides: overrides.to_vec(),
                at_ms,
            })?;
        }
        let (actor, reason) = (evacuation.actor.clone(), evacuation.reason.clone());
        next.evacuations.insert(site.clone(), evacuation);
        next.audit(AuditEntry {
            overridden: overrides.to_vec(),
            ..AuditEntry::new(at_ms, &actor, "evacuate", &site.0, &reason)
        });
        *self = next;
        Ok(())
    }

    /// Lifts an evacuation; automation serves the site again once it is up and healthy and
    /// the dwell time allows. Only an actor of the same or higher precedence may lift it,
    /// except once it has expired.
    pub fn restore(
        &mut self,
        site: &SiteId,
        actor: &Actor,
        reason: &str,
        at_ms: u64,
    ) -> Result<(), Refusal> {
        let evacuation = self
            .evacuations
            .get(site)
            .ok_or_else(|| Refusal::invalid(format!("site {site} is not evacuated")))?;
        let expired = at_ms >= evacuation.expires_at_ms;
        if !expired && actor.kind < evacuation.actor.kind {
            return Err(Refusal::invalid(format!(
                "site {site} was evacuated by {} ({:?}); a {:?} actor cannot lift it",
                evacuation.actor.name, evacuation.actor.kind, actor.kind
            )));
        }
        self.evacuations.remove(site);
        self.audit(AuditEntry::new(at_ms, actor, "restore", &site.0, reason));
        Ok(())
    }

    /// Stops automation until unfrozen.
    pub fn freeze(&mut self, freeze: Freeze) -> Result<(), Refusal> {
        let (actor, reason, at_ms) = (freeze.actor.clone(), freeze.reason.clone(), freeze.at_ms);
        self.frozen = Some(freeze);
        self.audit(AuditEntry::new(
            at_ms,
            &actor,
            "freeze",
            "automation",
            &reason,
        ));
        Ok(())
    }

    /// Lets automation act again.
    pub fn unfreeze(&mut self, actor: &Actor, at_ms: u64) -> Result<(), Refusal> {
        let freeze = self
            .frozen
            .as_ref()
            .ok_or_else(|| Refusal::invalid("automation is not frozen"))?;
        if actor.kind < freeze.actor.kind {
            return Err(Refusal::invalid(format!(
                "automation was frozen by {}; a {:?} actor cannot unfreeze it",
                freeze.actor.name, actor.kind
            )));
        }
        self.frozen = None;
        self.audit(AuditEntry::new(at_ms, actor, "unfreeze", "automation", ""));
        Ok(())
    }

    /// Whether `site` counts as up at `now_ms`: renewed within `site_down_after_ms`, and
    /// renewing without a lapse for `site_rise` intervals.
    pub fn site_up(&self, site: &SiteId, now_ms: u64) -> bool {
        let Some(topology) = &self.topology else {
            return false;
        };
        let policy = &topology.policy;
        self.leases.get(site).is_some_and(|lease| {
            now_ms.saturating_sub(lease.renewed_at_ms) <= policy.site_down_after_ms
                && now_ms.saturating_sub(lease.up_since_ms)
                    >= u64::from(policy.site_rise - 1) * policy.lease_interval_ms
        })
    }

    /// Whether `site` renewed its lease within `site_down_after_ms` of `now_ms`: by the
    /// topology's policy, or the default one before a topology is applied. Membership
    /// changes ask this of a voter's site: is it still alive?
    pub fn renewing(&self, site: &SiteId, now_ms: u64) -> bool {
        let down_after = self.topology.as_ref().map_or_else(
            || crate::topology::Policy::default().site_down_after_ms,
            |t| t.policy.site_down_after_ms,
        );
        self.leases
            .get(site)
            .is_some_and(|lease| now_ms.saturating_sub(lease.renewed_at_ms) <= down_after)
    }

    /// Whether `service`'s instance in `site` is healthy (no reported transition: healthy).
    pub fn healthy(&self, service: &str, site: &SiteId) -> bool {
        self.health
            .get(service)
            .and_then(|h| h.get(site))
            .is_none_or(|h| h.healthy)
    }
}

/// What is wrong with a route of a `mode` service serving `serving` with `primary`:
/// active-passive is served by exactly its primary (or, with `min-serving` overridden, by
/// nothing and without one), active-active names no primary.
fn shape_problem(
    mode: Mode,
    serving: &BTreeSet<SiteId>,
    primary: &Option<SiteId>,
) -> Option<String> {
    match (mode, primary) {
        (Mode::ActiveActive, Some(p)) => Some(format!(
            "an active-active service has no primary, yet {p} was named one"
        )),
        (Mode::ActiveActive, None) => None,
        (Mode::ActivePassive, None) if serving.is_empty() => None,
        (Mode::ActivePassive, Some(p)) if serving.len() == 1 && serving.contains(p) => None,
        (Mode::ActivePassive, _) => Some(format!(
            "an active-passive service is served by exactly its primary; got serving {:?} \
             with primary {:?}: name one site in both",
            serving.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
            primary.as_ref().map(|p| p.0.as_str())
        )),
    }
}

/// The route a new topology gives a service that already has `route`, when it changes it:
/// sites without an endpoint leave (an active-active service they empty is served by
/// every site not evacuated), and the route takes the shape of the service's mode
/// (the primary alone for active-passive: the old primary if it still serves, else the
/// best-ranked serving site, else the best-ranked site not evacuated). A new epoch.
fn reshaped(
    service: &crate::topology::ServiceSpec,
    route: &Route,
    evacuations: &BTreeMap<SiteId, Evacuation>,
    at_ms: u64,
) -> Option<Route> {
    let mut serving: BTreeSet<SiteId> = route
        .serving
        .iter()
        .filter(|s| service.endpoints.contains_key(*s))
        .cloned()
        .collect();
    let primary = match service.mode {
        Mode::ActiveActive => None,
        // Emptied on purpose (min-serving overridden): left so.
        Mode::ActivePassive if route.serving.is_empty() => None,
        Mode::ActivePassive => {
            let ranked = Topology::ranked_sites(service);
            let keep = route.primary.clone().filter(|p| serving.contains(p));
            let primary = keep
                .or_else(|| ranked.iter().find(|s| serving.contains(*s)).cloned())
                .or_else(|| {
                    ranked
                        .iter()
                        .find(|s| !evacuations.contains_key(*s))
                        .cloned()
                })
                .or_else(|| ranked.first().cloned());
            serving = primary.iter().cloned().collect();
            primary
        }
    };
    if serving.is_empty() && !route.serving.is_empty() {
        serving = Topology::ranked_sites(service)
            .into_iter()
            .filter(|s| !evacuations.contains_key(s))
            .collect();
    }
    (serving != route.serving || primary != route.primary).then(|| Route {
        serving,
        primary,
        epoch: route.epoch + 1,
        changed_at_ms: at_ms,
    })
}

/// What `decide` wants done, and what its rules held back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Route changes and expired-evacuation restores to propose, in order.
    pub commands: Vec<AutoCommand>,
    /// Services whose wanted change a rule blocked this round.
    pub blocked: Vec<(String, Rule)>,
}

/// A command automation proposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoCommand {
    Route(RouteChange),
    Restore {
        site: SiteId,
        reason: String,
        at_ms: u64,
    },
}

/// The whole automatic failover policy: what to change now, given the replicated state and
/// the control leader's clock. Pure; the engine proposes the commands through Raft.
pub fn decide(state: &Failover, now_ms: u64) -> Decision {
    let mut decision = Decision::default();
    let Some(topology) = &state.topology else {
        return decision;
    };
    if state.frozen.is_some() {
        return decision;
    }
    for (site, evacuation) in &state.evacuations {
        if now_ms >= evacuation.expires_at_ms {
            decision.commands.push(AutoCommand::Restore {
                site: site.clone(),
                reason: format!("evacuation by {} expired", evacuation.actor.name),
                at_ms: now_ms,
            });
        }
    }
    for service in &topology.services {
        let Some(route) = state.routing.get(&service.name) else {
            continue;
        };
        let ranked: Vec<SiteId> = Topology::ranked_sites(service)
            .into_iter()
            .filter(|s| !state.evacuations.contains_key(s))
            .collect();
        let eligible: Vec<&SiteId> = ranked
            .iter()
            .filter(|s| state.site_up(s, now_ms) && state.healthy(&service.name, s))
            .collect();
        let (serving, primary): (BTreeSet<SiteId>, Option<SiteId>) = match service.mode {
            Mode::ActiveActive => (eligible.iter().map(|s| (*s).clone()).collect(), None),
            Mode::ActivePassive => {
                let keep = route.primary.as_ref().filter(|p| eligible.contains(p));
                let primary = keep.or_else(|| eligible.first().copied()).cloned();
                (primary.iter().cloned().collect(), primary)
            }
        };
        if serving == route.serving && primary == route.primary {
            continue;
        }
        if serving.is_empty() {
            decision
                .blocked
                .push((service.name.clone(), Rule::MinServing));
            continue;
        }
        // Holding many sites out at once more likely means the observer is cut off than that
        // the sites are gone: beyond the limit, automation removes nothing (adding back is fine).
        let held_out = ranked.len() - eligible.len();
        let removes = route.serving.iter().any(|s| !serving.contains(s));
        if held_out > topology.policy.max_sites_down_auto && removes {
            decision
                .blocked
                .push((service.name.clone(), Rule::MaxSitesDown));
            continue;
        }
        if now_ms.saturating_sub(route.changed_at_ms) < topology.policy.dwell_ms {
            decision.blocked.push((service.name.clone(), Rule::Dwell));
            continue;
        }
        decision.commands.push(AutoCommand::Route(RouteChange {
            service: service.name.clone(),
            reason: describe(state, service, &ranked, now_ms),
            serving,
            primary,
            actor: Actor::automation(),
            overrides: Vec::new(),
            at_ms: now_ms,
        }));
    }
    decision
}

/// Why automation wants a service's route changed: the sites it drops or takes back.
fn describe(
    state: &Failover,
    service: &crate::topology::ServiceSpec,
    ranked: &[SiteId],
    now_ms: u64,
) -> String {
    let parts: Vec<String> = ranked
        .iter()
        .map(|site| {
            let state_word = if !state.site_up(site, now_ms) {
                "down"
            } else if !state.healthy(&service.name, site) {
                "unhealthy"
            } else {
                "ok"
            };
            format!("{site} {state_word}")
        })
        .collect();
    parts.join(", ")
}
