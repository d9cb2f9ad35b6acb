//! Operator endpoints: topology, evacuate, restore, freeze, unfreeze (token required), and
//! the failover views: routing (with long-poll), status, audit (open unless
//! `auth.protect_reads`).
//!
//! A refused change answers 409 `blocked` naming the rule (and how to override it) or 400
//! `invalid_input`; either way nothing changed. Writes to a follower are forwarded, token
//! included, to the leader, which checks the token again and stamps the time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use firebreak_model::control::{ControlCommand, ControlResponse};
use firebreak_model::failover::{
    Actor, ActorKind, AuditEntry, Refusal, Route, Rule, MAX_EVACUATION_MS,
};
use firebreak_model::topology::Topology;
use firebreak_model::SiteId;
use serde::{Deserialize, Serialize};

use crate::api::{forward, long_poll};
use crate::auth::Denied;
use crate::clock::now_ms;
use crate::context::Api;
use crate::reply::{query, read_json, ApiError, ApiResult};
use crate::watchers::Holder;
use axum::extract::ConnectInfo;
use firebreak_tls::listener::Remote;

/// Longest a routing long-poll waits.
const MAX_ROUTING_WAIT: Duration = Duration::from_secs(60);
/// Most audit entries one request returns.
const MAX_AUDIT_ENTRIES: usize = 1000;

/// The operator routes, mounted by the `/v1` router.
pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/topology", post(apply_topology).get(show_topology))
        .route("/v1/control/ping", post(control_ping))
        .route("/v1/evacuate", post(evacuate))
        .route("/v1/restore", post(restore))
        .route("/v1/freeze", post(freeze))
        .route("/v1/unfreeze", post(unfreeze))
        .route("/v1/routing", get(routing))
        .route("/v1/failover", get(status))
        .route("/v1/audit", get(audit))
}

/// The operator behind a request: its verified operator certificate (as the listener's
/// layer recorded it), else its bearer token.
pub(crate) fn authorize(api: &Api, headers: &HeaderMap) -> ApiResult<Actor> {
    if let Some(name) = headers
        .get(crate::access::OPERATOR_CERT_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        return Ok(Actor {
            kind: ActorKind::Manual,
            name: name.to_string(),
        });
    }
    match api.tokens.check(headers) {
        Ok(name) => Ok(Actor { kind: ActorKind::Manual, name }),
        Err(Denied::Missing) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint needs an operator token (`Authorization: Bearer TOKEN`; the CLI reads FIREBREAK_TOKEN or --token-file) or an operator certificate (`firebreak cert issue operator NAME`; the CLI's --cert and --key)",
        )),
        Err(Denied::Unknown) => Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "the token is not configured on this node")),
    }
}

fn authorize_read(api: &Api, headers: &HeaderMap) -> ApiResult<()> {
    if api.tokens.protect_reads {
        authorize(api, headers)?;
    }
    Ok(())
}

/// Proposes an operator command on the leader (forwarding if needed) and maps refusals.
async fn operator_write(
    api: &Api,
    headers: &HeaderMap,
    uri: &Uri,
    body: Bytes,
    mut command: ControlCommand,
) -> ApiResult<Response> {
    command
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    command.stamp(now_ms());
    match api.control.write(command).await {
        Ok(ControlResponse::Refused(Refusal::Blocked { rule, detail })) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "blocked",
            format!(
                "blocked by rule {}: {detail}; to go ahead anyway, repeat with --override {}",
                rule.name(),
                rule.name()
            ),
        )),
        Ok(ControlResponse::Refused(Refusal::Invalid { message })) => {
            Err(ApiError::invalid(message))
        }
        Ok(response) => Ok(Json(response).into_response()),
        Err(err) if headers.contains_key(crate::access::OPERATOR_CERT_HEADER) => {
            Err(ApiError::from(err).certificate_to_leader())
        }
        Err(err) => forward(api, err, headers, Method::POST, uri, Some(body)).await,
    }
}

/// Authorizes the operator, parses the JSON body, and proposes the command `build` makes
/// of it (on the leader, forwarding if needed).
async fn operator_json<T: serde::de::DeserializeOwned>(
    api: &Api,
    headers: &HeaderMap,
    uri: &Uri,
    body: Body,
    build: impl FnOnce(T, Actor) -> ApiResult<ControlCommand>,
) -> ApiResult<Response> {
    let actor = authorize(api, headers)?;
    let (bytes, parsed) = read_json(body, api.config.api.max_body_bytes).await?;
    let command = build(parsed, actor)?;
    operator_write(api, headers, uri, bytes, command).await
}

async fn apply_topology(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult<Response> {
    // A site without a node never renews its lease: it would be down forever.
    let mut known: Vec<String> = api
        .control
        .info()
        .members
        .into_iter()
        .map(|m| m.site)
        .collect();
    known.sort();
    known.dedup();
    operator_json(&api, &headers, &uri, body, |topology: Topology, actor| {
        if let Some(site) = topology.sites.iter().find(|s| !known.contains(&s.name.0)) {
            return Err(ApiError::invalid(format!(
                "site {} has no node in this cluster (nodes are in {}); a site without a node is always down",
                site.name,
                known.join(", ")
            )));
        }
        Ok(ControlCommand::ApplyTopology { topology, actor, at_ms: 0 })
    })
    .await
}

async fn show_topology(State(api): State<Arc<Api>>, headers: HeaderMap) -> ApiResult<Response> {
    authorize_read(&api, &headers)?;
    let topology = api.control.reader.read(|c| c.failover.topology.clone());
    Ok(Json(topology).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvacuateBody {
    site: SiteId,
    reason: String,
    /// Default and maximum: 72 hours.
    expires_in_ms: Option<u64>,
    #[serde(default)]
    overrides: Vec<Rule>,
}

async fn evacuate(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult<Response> {
    operator_json(&api, &headers, &uri, body, |b: EvacuateBody, actor| {
        let expires_in = b.expires_in_ms.unwrap_or(MAX_EVACUATION_MS);
        if expires_in == 0 || expires_in > MAX_EVACUATION_MS {
            return Err(ApiError::invalid(
                "expires_in_ms must be above 0 and at most 72 hours",
            ));
        }
        // at_ms 0 and the expiry as a duration: stamping turns both into the leader's clock.
        Ok(ControlCommand::Evacuate {
            site: b.site,
            actor,
            reason: b.reason,
            expires_at_ms: expires_in,
            overrides: b.overrides,
            at_ms: 0,
        })
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    site: SiteId,
    #[serde(default = "default_restore_reason")]
    reason: String,
}

fn default_restore_reason() -> String {
    "restored by operator".into()
}

async fn restore(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult<Response> {
    operator_json(&api, &headers, &uri, body, |b: RestoreBody, actor| {
        Ok(ControlCommand::Restore {
            site: b.site,
            actor,
            reason: b.reason,
            at_ms: 0,
        })
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FreezeBody {
    reason: String,
}

async fn freeze(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult<Response> {
    operator_json(&api, &headers, &uri, body, |b: FreezeBody, actor| {
        Ok(ControlCommand::Freeze {
            actor,
            reason: b.reason,
            at_ms: 0,
        })
    })
    .await
}

async fn unfreeze(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult<Response> {
    let actor = authorize(&api, &headers)?;
    let bytes = axum::body::to_bytes(body, api.config.api.max_body_bytes)
        .await
        .unwrap_or_default();
    operator_write(
        &api,
        &headers,
        &uri,
        bytes,
        ControlCommand::Unfreeze { actor, at_ms: 0 },
    )
    .await
}

/// The routing table as gateways read it, from this node's replica.
#[derive(Serialize, Deserialize)]
pub struct RoutingView {
    /// Grows with every audited change (routing, controls, topology): poll from it.
    pub revision: u64,
    pub routes: BTreeMap<String, Route>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingQuery {
    after_revision: Option<u64>,
    timeout_ms: Option<u64>,
}

fn routing_view(api: &Api) -> RoutingView {
    api.control.reader.read(|c| RoutingView {
        revision: c.failover.audit.archived + c.failover.audit.entries.len() as u64,
        routes: c.failover.routing.clone(),
    })
}

/// `GET /v1/routing[?after_revision=N&timeout_ms=T]`: at once, or once the revision passes
/// N. A wait takes a long-poll slot: an operator's from the whole pool, anyone else's from
/// their address's share (`crate::watchers`).
async fn routing(
    State(api): State<Arc<Api>>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    authorize_read(&api, &headers)?;
    let q: RoutingQuery = query(&uri)?;
    let Some(after) = q.after_revision else {
        return Ok(Json(routing_view(&api)).into_response());
    };
    let holder = match authorize(&api, &headers) {
        Ok(_) => Holder::Operator,
        Err(_) => Holder::Address(remote.addr.ip()),
    };
    let _slot = api.watchers.take(holder)?;
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(q.timeout_ms.unwrap_or(30_000)).min(MAX_ROUTING_WAIT);
    let view = long_poll(api.control.reader.subscribe(), deadline, |expired| {
        let view = routing_view(&api);
        Ok((view.revision > after || expired).then_some(view))
    })
    .await?;
    Ok(Json(view).into_response())
}

/// Sites and services as this node's replica sees them, for `firebreak status`.
#[derive(Serialize, Deserialize)]
pub struct FailoverStatus {
    /// This node's clock when answering, to read lease ages against.
    pub now_ms: u64,
    pub frozen: Option<String>,
    pub sites: Vec<SiteStatus>,
    pub services: Vec<ServiceStatus>,
    /// Routing hooks' deliveries per hook and service, as the control group recorded them.
    #[serde(default)]
    pub hooks: Vec<HookStatus>,
}

#[derive(Serialize, Deserialize)]
pub struct HookStatus {
    pub hook: String,
    pub service: String,
    /// The service's epoch, and the newest the hook acknowledged.
    pub epoch: u64,
    pub acked_epoch: u64,
    /// Failed delivery rounds since the last success, and why the last one failed.
    pub failures: u32,
    pub last_error: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct SiteStatus {
    pub name: String,
    pub witness: bool,
    pub up: bool,
    pub lease_age_ms: Option<u64>,
    pub evacuated: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub mode: String,
    pub serving: Vec<String>,
    pub primary: Option<String>,
    pub epoch: u64,
    /// Health per site with an endpoint.
    pub health: BTreeMap<String, bool>,
}

async fn status(State(api): State<Arc<Api>>, headers: HeaderMap) -> ApiResult<Response> {
    authorize_read(&api, &headers)?;
    let now = now_ms();
    let view = api.control.reader.read(|c| {
        let f = &c.failover;
        let topology = f.topology.as_ref()?;
        let sites = topology
            .sites
            .iter()
            .map(|s| SiteStatus {
                name: s.name.to_string(),
                witness: s.witness,
                up: f.site_up(&s.name, now),
                lease_age_ms: f
                    .leases
                    .get(&s.name)
                    .map(|l| now.saturating_sub(l.renewed_at_ms)),
                evacuated: f
                    .evacuations
                    .get(&s.name)
                    .map(|e| format!("{} by {}", e.reason, e.actor.name)),
            })
            .collect();
        let services = topology
            .services
            .iter()
            .filter_map(|s| {
                let route = f.routing.get(&s.name)?;
                Some(ServiceStatus {
                    name: s.name.clone(),
                    mode: serde_json::to_value(s.mode)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default(),
                    serving: route.serving.iter().map(|x| x.to_string()).collect(),
                    primary: route.primary.as_ref().map(|p| p.to_string()),
                    epoch: route.epoch,
                    health: s
                        .endpoints
                        .keys()
                        .map(|site| (site.to_string(), f.healthy(&s.name, site)))
                        .collect(),
                })
            })
            .collect();
        let frozen = f
            .frozen
            .as_ref()
            .map(|z| format!("{} by {}", z.reason, z.actor.name));
        Some(FailoverStatus {
            now_ms: now,
            frozen,
            sites,
            services,
            hooks: hook_status(c),
        })
    });
    Ok(Json(view).into_response())
}

/// Every hook the control group has records of, per service with a route.
fn hook_status(c: &firebreak_model::control::ControlState) -> Vec<HookStatus> {
    let mut out = Vec::new();
    for (hook, records) in &c.hooks {
        for (service, route) in &c.failover.routing {
            let record = records.get(service).cloned().unwrap_or_default();
            out.push(HookStatus {
                hook: hook.clone(),
                service: service.clone(),
                epoch: route.epoch,
                acked_epoch: record.acked_epoch,
                failures: record.failures,
                last_error: record.last_error,
            });
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    since_ms: Option<u64>,
    limit: Option<usize>,
}

async fn audit(State(api): State<Arc<Api>>, headers: HeaderMap, uri: Uri) -> ApiResult<Response> {
    authorize_read(&api, &headers)?;
    let q: AuditQuery = query(&uri)?;
    let limit = q.limit.unwrap_or(MAX_AUDIT_ENTRIES).min(MAX_AUDIT_ENTRIES);
    let since = q.since_ms.unwrap_or(0);
    let (entries, archived): (Vec<AuditEntry>, u64) = api.control.reader.read(|c| {
        let all = &c.failover.audit;
        let matching: Vec<_> = all.entries.iter().filter(|e| e.at_ms >= since).collect();
        let skip = matching.len().saturating_sub(limit);
        (
            matching.into_iter().skip(skip).cloned().collect(),
            all.archived,
        )
    });
    Ok(Json(serde_json::json!({ "entries": entries, "archived": archived })).into_response())
}

/// Commits a no-op through the control group: proves and times its write path. Each one is
/// an fsynced entry, so it takes an operator token like any other control write.
async fn control_ping(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    authorize(&api, &headers)?;
    let started = std::time::Instant::now();
    match api.control.write(ControlCommand::Ping).await {
        Ok(response) => Ok(Json(
            serde_json::json!({ "response": response, "latency_ms": started.elapsed().as_secs_f64() * 1000.0 }),
        )
        .into_response()),
        Err(err) => forward(&api, err, &headers, Method::POST, &uri, None).await,
    }
}
