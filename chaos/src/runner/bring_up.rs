//! Bringing a drill's sites into service: leaders elected, the playbook's topology
//! applied, every service routed where the playbook says and answering through every
//! gateway. Each wait has a deadline and names the logs when it runs out.

use std::time::Duration;

use serde_json::{json, Value};

use crate::driver::LocalSites;
use crate::error::{Error, Result};
use crate::playbook::{Mode, Playbook, ServiceKind};

/// How long the sites get to elect leaders and serve.
const BRING_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the steady condition must hold, on every poll, before the workload starts:
/// three health-probe intervals of the drill's topology (a probe that fell and rises
/// again shows within two).
const STEADY_HOLD: Duration = Duration::from_millis(1_500);
/// How often the steady condition is polled.
const STEADY_POLL: Duration = Duration::from_millis(250);

pub(super) async fn wait_ready(nodes: &[String], sites: &LocalSites) -> Result<()> {
    let http = http_client(sites);
    let deadline = tokio::time::Instant::now() + BRING_UP_TIMEOUT;
    loop {
        let mut control_led = 0;
        let mut state_led = false;
        for node in nodes {
            let info: Option<Value> =
                match http.get(sites.tls.url(node, "/v1/cluster")).send().await {
                    Ok(r) => r.json().await.ok(),
                    Err(_) => None,
                };
            let groups = info
                .as_ref()
                .and_then(|i| i["groups"].as_array().cloned())
                .unwrap_or_default();
            let led = |name: &str| {
                groups
                    .iter()
                    .any(|g| g["name"] == name && !g["leader"].is_null())
            };
            control_led += usize::from(led("control"));
            state_led |= led("state");
        }
        if control_led == nodes.len() && state_led {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::CouldNotRun(format!(
                "the sites elected no leaders within {BRING_UP_TIMEOUT:?}; see the logs: {}",
                sites.logs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn http_client(sites: &LocalSites) -> reqwest::Client {
    sites
        .tls
        .apply(reqwest::Client::builder())
        .timeout(Duration::from_secs(2))
        .build()
        .expect("reqwest client builds with static options")
}

/// The topology a playbook describes, as `/v1/topology` takes it, over `names` (the
/// playbook's sites, less those replaced) and `witnesses` (spare sites brought in: they
/// vote but run no services).
fn topology(
    playbook: &Playbook,
    sites: &LocalSites,
    names: &[String],
    witnesses: &[String],
) -> Value {
    let services: Vec<Value> = playbook
        .topology
        .services
        .iter()
        .filter(|s| s.name.is_process())
        .map(|s| {
            let endpoints: serde_json::Map<String, Value> = names
                .iter()
                .map(|site| (site.clone(), json!(sites.service_url(sites.index(site), s.name))))
                .collect();
            json!({
                "name": s.name.name(), "mode": s.mode.name(), "endpoints": endpoints, "priorities": names,
                "retry_safe": firebreak_services::retry_safe(s.name.name()),
                "health": { "path": "/health", "interval_ms": 500, "timeout_ms": 250, "fall": 2, "rise": 2 },
            })
        })
        .collect();
    let witnesses = witnesses
        .iter()
        .map(|s| json!({ "name": s, "witness": true }));
    json!({
        "sites": names.iter().map(|s| json!({ "name": s })).chain(witnesses).collect::<Vec<_>>(),
        "services": services,
        "policy": policy(playbook),
    })
}

/// The topology's policy: the playbook's timings over the defaults.
fn policy(playbook: &Playbook) -> Value {
    let t = &playbook.topology;
    let defaults = firebreak_model::topology::Policy::default();
    json!({
        "dwell_ms": t.dwell_ms,
        "lease_interval_ms": t.lease_interval_ms.unwrap_or(defaults.lease_interval_ms),
        "site_down_after_ms": t.site_down_after_ms.unwrap_or(defaults.site_down_after_ms),
        "max_sites_down_auto": t.max_sites_down_auto.unwrap_or(defaults.max_sites_down_auto),
    })
}

pub(super) async fn apply_topology(playbook: &Playbook, sites: &LocalSites) -> Result<()> {
    let body = topology(playbook, sites, &playbook.topology.sites, &[]);
    post_topology(sites, &body).await
}

/// Applies the topology once `dead` is replaced by `spare`: `dead` out, `spare` in as a
/// witness, as docs/membership.md tells an operator to (with services there, it would
/// be an ordinary site).
pub(super) async fn apply_replaced_topology(
    playbook: &Playbook,
    sites: &LocalSites,
    dead: &str,
    spare: &str,
) -> Result<()> {
    let names: Vec<String> = playbook
        .topology
        .sites
        .iter()
        .filter(|s| *s != dead)
        .cloned()
        .collect();
    let body = topology(playbook, sites, &names, &[spare.to_string()]);
    post_topology(sites, &body).await
}

async fn post_topology(sites: &LocalSites, body: &Value) -> Result<()> {
    operator_post(sites, "/v1/topology", body, BRING_UP_TIMEOUT)
        .await
        .map_err(|last| {
            Error::CouldNotRun(format!(
                "the cluster did not take the drill's topology: {last}"
            ))
        })
}

/// POSTs an operator command with the drill's token to the nodes' admin listeners in
/// turn until one takes it, for at most `wait`; a refusal (4xx) is final. The error is
/// the last answer.
pub(super) async fn operator_post(
    sites: &LocalSites,
    path: &str,
    body: &Value,
    wait: Duration,
) -> std::result::Result<(), String> {
    let http = http_client(sites);
    let deadline = tokio::time::Instant::now() + wait;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        for node in sites.admin_addrs() {
            let url = sites.tls.url(node, path);
            match http
                .post(url)
                .bearer_auth(&sites.token)
                .json(body)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    let status = r.status();
                    last = format!("{node}: {status} {}", r.text().await.unwrap_or_default());
                    if status.is_client_error() && status != reqwest::StatusCode::NOT_FOUND {
                        return Err(last);
                    }
                }
                Err(e) => last = format!("{node}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last)
}

/// Waits until routing has every service served where the playbook says, and every
/// gateway answers for every service.
pub(super) async fn wait_serving(
    playbook: &Playbook,
    nodes: &[String],
    sites: &LocalSites,
) -> Result<()> {
    let http = http_client(sites);
    let deadline = tokio::time::Instant::now() + BRING_UP_TIMEOUT;
    let wanted = |mode: Mode| match mode {
        Mode::ActiveActive => playbook.topology.sites.len(),
        Mode::ActivePassive => 1,
    };
    loop {
        let routing: Option<Value> = match http
            .get(sites.tls.url(&sites.admin_addrs()[0], "/v1/routing"))
            .send()
            .await
        {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        let routed = routing.as_ref().is_some_and(|r| {
            playbook
                .topology
                .services
                .iter()
                .filter(|s| s.name.is_process())
                .all(|s| {
                    r["routes"][s.name.name()]["serving"]
                        .as_array()
                        .is_some_and(|a| a.len() == wanted(s.mode))
                })
        });
        let mut answering = routed;
        for node in nodes.iter().filter(|_| routed) {
            for service in playbook.process_services() {
                let path = match service {
                    ServiceKind::Messaging => "/messaging/conversations/warmup/messages?after=0",
                    ServiceKind::Payments => "/payments/accounts?limit=1",
                    ServiceKind::Login => "/login/sessions/warmup",
                    ServiceKind::Kv => continue,
                };
                let status = http
                    .get(sites.tls.url(node, path))
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                answering &= matches!(status, Ok(200 | 401 | 404));
            }
        }
        if answering {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::CouldNotRun(format!(
                "the services were not served everywhere within {BRING_UP_TIMEOUT:?}; see the logs: {}",
                sites.logs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// POSTs a membership request to the admin listeners in turn until the control leader
/// takes it; a refusal (4xx) is final. The answer, or the last error.
pub(super) async fn post_membership(
    sites: &LocalSites,
    body: &Value,
    wait: Duration,
) -> std::result::Result<Value, String> {
    let http = sites
        .tls
        .apply(reqwest::Client::builder())
        .timeout(wait)
        .connect_timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        for node in sites.admin_addrs() {
            let request = http
                .post(sites.tls.url(node, "/v1/membership"))
                .bearer_auth(&sites.token)
                .json(body);
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    return r.json().await.map_err(|e| format!("{node}: {e}"))
                }
                Ok(r) => {
                    let status = r.status();
                    last = format!("{node}: {status} {}", r.text().await.unwrap_or_default());
                    if status.is_client_error() {
                        return Err(last);
                    }
                }
                Err(e) => last = format!("{node}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last)
}

/// Adds every site's extra nodes (`node-2`, `node-3`) to the running cluster, one change
/// at a time, as learners (their site has a voter): any live one renews its site's lease.
pub(super) async fn add_extra_nodes(sites: &LocalSites) -> Result<()> {
    for (site, id, addr) in sites.extra_nodes() {
        let body = json!({"action": "node_add", "id": id, "site": site, "addr": addr});
        post_membership(sites, &body, BRING_UP_TIMEOUT)
            .await
            .map_err(|last| {
                Error::CouldNotRun(format!(
                    "node {id} of {site} was not added: {last}; see the logs: {}",
                    sites.logs()
                ))
            })?;
    }
    Ok(())
}

/// Waits until the cluster is steady (`crate::steady`): every group led with a quorum by
/// a leader every site's node names, and every service served by every site it should
/// serve, at one epoch everywhere, on every poll for [`STEADY_HOLD`]. The workload starts
/// only then; a cluster that never settles within [`BRING_UP_TIMEOUT`] is a drill that
/// could not run, with what did not hold.
pub(super) async fn wait_steady(playbook: &Playbook, sites: &LocalSites) -> Result<()> {
    use crate::steady::{leaders_agree, routes_full, Serving, Settle};
    let http = http_client(sites);
    let wanted: Vec<(String, Serving)> = playbook
        .topology
        .services
        .iter()
        .filter(|s| s.name.is_process())
        .map(|s| {
            let serving = match s.mode {
                Mode::ActiveActive => Serving::All(playbook.topology.sites.clone()),
                Mode::ActivePassive => Serving::One,
            };
            (s.name.name().to_string(), serving)
        })
        .collect();
    let started = tokio::time::Instant::now();
    let mut settle = Settle::new(STEADY_HOLD.as_millis() as u64);
    loop {
        let nodes = sites.admin_addrs();
        let get = |node: &String, path: &str| {
            let request = http.get(sites.tls.url(node, path)).send();
            async move { request.await.ok()?.json::<Value>().await.ok() }
        };
        let clusters = futures::future::join_all(nodes.iter().map(|n| get(n, "/v1/cluster"))).await;
        let routings = futures::future::join_all(nodes.iter().map(|n| get(n, "/v1/routing"))).await;
        let verdict = leaders_agree(&clusters).and_then(|_| routes_full(&wanted, &routings));
        if settle.observe(started.elapsed().as_millis() as u64, verdict) {
            return Ok(());
        }
        if started.elapsed() >= BRING_UP_TIMEOUT {
            return Err(Error::CouldNotRun(format!(
                "the cluster did not hold steady for {STEADY_HOLD:?} within {BRING_UP_TIMEOUT:?} (last: {}); see the logs: {}",
                settle.last_reason.unwrap_or_default(),
                sites.logs()
            )));
        }
        tokio::time::sleep(STEADY_POLL).await;
    }
}
