//! The failover runtime: lease renewal, the health agent, and the engine that runs
//! `decide` on the control leader.
//!
//! ```text
//!   every node:   lease task ── RenewLease(own site) ──┐
//!                 agent ─ probe own site's endpoints ──┼─► control leader ─► Raft
//!                        (only fall/rise transitions)  │   (stamps at_ms)
//!   leader only:  engine tick ─ decide(state, now) ────┘
//! ```
//!
//! The engine runs only where the control group's leader has heard from a quorum within an
//! election timeout (the same check that guards writes), so nothing is decided without a
//! quorum. A new leader waits two lease intervals before it decides anything: while there
//! was no leader no lease could be renewed, so a lease that looks stale at the moment of
//! election proves nothing until every live site has had the time to renew it with the new
//! leader (a flapping link, which forces election after election, made leaders drop a
//! healthy site before this wait). Every proposal goes through the state machine, which
//! checks the safety rules again.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use firebreak_model::control::{ControlCommand, ControlResponse};
use firebreak_model::failover::{decide, Actor, AutoCommand};
use firebreak_model::topology::Policy;
use firebreak_model::SiteId;
use tokio::task::JoinHandle;

use crate::clock::now_ms;
use crate::context::Api;

/// How often the engine runs `decide`.
pub const ENGINE_TICK: Duration = Duration::from_millis(250);
/// How often a node that does not lead the control group checks whether it has become
/// its leader (a new leader's wait starts from that moment).
const LEADERSHIP_POLL: Duration = Duration::from_millis(50);
/// How often the agent checks which probes are due.
const AGENT_TICK: Duration = Duration::from_millis(100);
/// How often a node moves its clock up to the control group's latest stamp.
const CLOCK_TICK: Duration = Duration::from_millis(50);

/// Starts the lease, agent and engine tasks; abort them to stop.
pub fn spawn(api: Arc<Api>) -> Vec<JoinHandle<()>> {
    crate::clock::now_ms(); // anchors the clock at start
    vec![
        tokio::spawn(follow_clock(api.clone())),
        tokio::spawn(renew_leases(api.clone())),
        tokio::spawn(agent(api.clone())),
        tokio::spawn(engine(api)),
    ]
}

fn policy(api: &Api) -> Policy {
    api.control
        .reader
        .read(|c| c.failover.topology.as_ref().map(|t| t.policy.clone()))
        .unwrap_or_default()
}

/// Keeps this node's clock from reading behind the control group's latest stamp (see
/// `clock`), so that it stamps on the same timeline when it leads.
async fn follow_clock(api: Arc<Api>) {
    let mut tick = tokio::time::interval(CLOCK_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        crate::clock::observe(api.control.reader.read(|c| c.clock_ms));
    }
}

async fn renew_leases(api: Arc<Api>) {
    let site = api.config.site.clone();
    loop {
        let interval = Duration::from_millis(policy(&api).lease_interval_ms);
        let started = tokio::time::Instant::now();
        if let Err(err) = api
            .propose_control(ControlCommand::RenewLease {
                site: site.clone(),
                at_ms: 0,
            })
            .await
        {
            tracing::debug!(cause = %err, "lease renewal not committed");
        }
        tokio::time::sleep_until(started + interval).await;
    }
}

/// Consecutive probe results of one service in this site.
#[derive(Default)]
struct Probe {
    next_due_ms: u64,
    successes: u32,
    failures: u32,
}

async fn agent(api: Arc<Api>) {
    let site = api.config.site.clone();
    // The gateway's pool: it trusts the cluster CA, so endpoints may serve TLS too.
    let http = api.gateway.clone();
    let mut probes: BTreeMap<String, Probe> = BTreeMap::new();
    loop {
        tokio::time::sleep(AGENT_TICK).await;
        let Some(topology) = api.control.reader.read(|c| c.failover.topology.clone()) else {
            continue;
        };
        let now = now_ms();
        probes.retain(|name, _| {
            topology
                .service(name)
                .is_some_and(|s| s.endpoints.contains_key(&site))
        });
        let due: Vec<_> = topology
            .services
            .iter()
            .filter(|s| s.endpoints.contains_key(&site))
            .filter(|s| probes.get(&s.name).is_none_or(|p| p.next_due_ms <= now))
            .collect();
        let results = futures::future::join_all(due.iter().map(|service| {
            let url = format!(
                "{}{}",
                service.endpoints[&site].trim_end_matches('/'),
                service.health.path
            );
            let request = http
                .get(url)
                .timeout(Duration::from_millis(service.health.timeout_ms));
            async move { matches!(request.send().await, Ok(r) if r.status().is_success()) }
        }))
        .await;
        for (service, ok) in due.into_iter().zip(results) {
            let probe = probes.entry(service.name.clone()).or_default();
            probe.next_due_ms = now + service.health.interval_ms;
            if ok {
                (probe.successes, probe.failures) = (probe.successes + 1, 0);
            } else {
                (probe.successes, probe.failures) = (0, probe.failures + 1);
            }
            let verdict = if probe.failures >= service.health.fall {
                Some(false)
            } else if probe.successes >= service.health.rise {
                Some(true)
            } else {
                None
            };
            // Report transitions only, against what the control group holds (no entry: healthy);
            // a report that did not commit is simply made again after the next probe.
            let committed = api
                .control
                .reader
                .read(|c| c.failover.healthy(&service.name, &site));
            if verdict.is_some_and(|healthy| healthy != committed) {
                report(&api, &service.name, &site, !committed).await;
            }
        }
    }
}

async fn report(api: &Api, service: &str, site: &SiteId, healthy: bool) {
    let command = ControlCommand::ReportHealth {
        service: service.into(),
        site: site.clone(),
        healthy,
        at_ms: 0,
    };
    match api.propose_control(command).await {
        Ok(_) => tracing::info!(service, %site, healthy, "reported health transition"),
        Err(err) => {
            tracing::warn!(service, %site, healthy, cause = %err, "health report not committed; will retry")
        }
    }
}

async fn engine(api: Arc<Api>) {
    let mut leading_since: Option<tokio::time::Instant> = None;
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::time::sleep_until(next).await;
        let at = tokio::time::Instant::now();
        if !api.control.leads_with_quorum() {
            // Watched closely, so that the wait below starts when leadership does.
            leading_since = None;
            next = at + LEADERSHIP_POLL;
            continue;
        }
        let since = *leading_since.get_or_insert(at);
        let lease_interval = api.control.reader.read(|c| {
            c.failover
                .topology
                .as_ref()
                .map_or(Policy::default().lease_interval_ms, |t| {
                    t.policy.lease_interval_ms
                })
        });
        let ready = since + Duration::from_millis(2 * lease_interval);
        if at < ready {
            // Let every live site renew its lease with this leader first, then decide at
            // once rather than at the next tick.
            next = ready;
            continue;
        }
        next = at + ENGINE_TICK;
        let now = now_ms();
        let decision = api.control.reader.read(|c| decide(&c.failover, now));
        for (service, rule) in &decision.blocked {
            api.counters.blocked(*rule);
            tracing::debug!(service, rule = rule.name(), "automatic change blocked");
        }
        for command in decision.commands {
            let mut command = match command {
                AutoCommand::Route(change) => ControlCommand::Route(change),
                AutoCommand::Restore {
                    site,
                    reason,
                    at_ms,
                } => ControlCommand::Restore {
                    site,
                    actor: Actor::automation(),
                    reason,
                    at_ms,
                },
            };
            command.stamp(now);
            match api.control.write(command.clone()).await {
                Ok(ControlResponse::Done { epoch }) => {
                    if let ControlCommand::Route(change) = &command {
                        api.counters.failovers.fetch_add(1, Ordering::Relaxed);
                        let serving: Vec<_> =
                            change.serving.iter().map(|s| s.to_string()).collect();
                        tracing::warn!(service = %change.service, ?serving, ?epoch, reason = %change.reason, "failover: routing changed");
                    }
                }
                Ok(ControlResponse::Refused(refusal)) => {
                    tracing::info!(%refusal, "automatic change refused by the state machine")
                }
                Ok(other) => tracing::debug!(?other, "unexpected response to an automatic change"),
                Err(err) => {
                    tracing::debug!(cause = %err, "automatic change not committed");
                    break;
                }
            }
        }
    }
}
