//! The client API under `/v1/`: key-value operations, transactions, watch, cluster status
//! and a control-group ping. JSON in, JSON out, errors included.
//!
//! ```text
//!   request ─► parse + validate (400/413, nothing proposed)
//!           ─► write: Group::write ── NotLeader ─► forward once to the leader ─► its answer
//!           ─► read:  linearizable (default): on the leader, after ensure_linearizable;
//!                     elsewhere forwarded to the leader
//!                     stale (?consistency=stale): this node's replica, no network
//!           ─► watch: long-poll on this node's replica, from a revision
//! ```
//!
//! Errors are `crate::reply::ApiError`; the routers that mount these handlers are in
//! `crate::routes`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use firebreak_model::control::ControlCommand;
use firebreak_model::grant::Grant;
use firebreak_model::kv::{KvCommand, KvEntry, Txn, MAX_RANGE_LIMIT};
use firebreak_model::watch::{KvEvent, MAX_WATCH_EVENTS};
use firebreak_model::NodeId;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::access::{self, PeerNode};
use crate::context::Api;
use crate::group::{GroupError, GroupInfo};
use crate::reply::{query, read_json, ApiError, ApiResult};
use crate::sabotage;

/// Header set on a request a node forwarded to the leader, so it is never forwarded again.
pub const FORWARDED_HEADER: &str = "x-firebreak-forwarded-by";
/// Header naming the node that answered.
pub const NODE_HEADER: &str = "x-firebreak-node";
/// Longest a watch long-poll waits.
pub const MAX_WATCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Default page size of a range read.
pub const DEFAULT_RANGE_LIMIT: usize = 1000;

/// Sends a request on to the leader once and relays its answer.
pub(crate) async fn forward(
    api: &Api,
    err: GroupError,
    headers: &HeaderMap,
    method: Method,
    uri: &Uri,
    body: Option<Bytes>,
) -> ApiResult<Response> {
    let GroupError::NotLeader {
        leader: Some((leader_id, member)),
    } = &err
    else {
        return Err(err.into());
    };
    if headers.contains_key(FORWARDED_HEADER) {
        // Forward at most once: a stale view on both nodes must not bounce a request around.
        return Err(err.into());
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let url = api.peer_tls.url(&member.addr, path);
    let mut request = api
        .forward
        .request(method.clone(), url)
        .header(FORWARDED_HEADER, api.config.node_id.to_string())
        .header("content-type", "application/json");
    // An operator token travels with the request and the leader checks it; an operator
    // certificate does not travel (see `crate::access::OPERATOR_CERT_HEADER`).
    if let Some(value) = headers.get("authorization") {
        request = request.header("authorization", value.clone());
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    match request.send().await {
        Ok(response) => {
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let retry_after = response.headers().get("retry-after").cloned();
            let leader_node = response.headers().get(NODE_HEADER).cloned();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| unknown_or_unavailable(&method, leader_id, &e))?;
            let mut out = (status, [("content-type", "application/json")], bytes).into_response();
            if let Some(value) = retry_after {
                out.headers_mut().insert("retry-after", value);
            }
            if let Some(value) = leader_node {
                out.headers_mut().insert("x-firebreak-served-by", value);
            }
            Ok(out)
        }
        Err(e) if e.is_connect() => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "leader node {leader_id} at {} is unreachable: {e}",
                member.addr
            ),
        )),
        Err(e) => Err(unknown_or_unavailable(&method, leader_id, &e)),
    }
}

/// A forwarded write whose answer was lost may have committed; a lost read changed nothing.
fn unknown_or_unavailable(method: &Method, leader: &NodeId, e: &reqwest::Error) -> ApiError {
    if method == Method::GET {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("leader node {leader} did not answer: {e}"),
        )
    } else {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "outcome_unknown",
            format!("leader node {leader} took the write but its answer was lost: {e}"),
        )
    }
}

async fn write_state(
    api: &Api,
    grant: Option<Extension<Grant>>,
    headers: &HeaderMap,
    method: Method,
    uri: &Uri,
    body: Option<Bytes>,
    command: KvCommand,
) -> ApiResult<Response> {
    access::check_command(&access::grant_of(grant)?, &command)?;
    command
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    match api.state_writer.write(command).await {
        Ok(response) => Ok(Json(response).into_response()),
        Err(err) => forward(api, err, headers, method, uri, body).await,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    key: String,
    value: String,
}

pub(crate) async fn kv_put(
    State(api): State<Arc<Api>>,
    grant: Option<Extension<Grant>>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult<Response> {
    let (bytes, put): (_, PutBody) = read_json(body, api.config.api.max_body_bytes).await?;
    write_state(
        &api,
        grant,
        &headers,
        Method::PUT,
        &uri,
        Some(bytes),
        KvCommand::Put {
            key: put.key,
            value: put.value,
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyQuery {
    key: String,
}

pub(crate) async fn kv_delete(
    State(api): State<Arc<Api>>,
    grant: Option<Extension<Grant>>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    let KeyQuery { key } = query(&uri)?;
    write_state(
        &api,
        grant,
        &headers,
        Method::DELETE,
        &uri,
        None,
        KvCommand::Delete { key },
    )
    .await
}

pub(crate) async fn txn(
    State(api): State<Arc<Api>>,
    grant: Option<Extension<Grant>>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> ApiResult<Response> {
    let (bytes, txn): (_, Txn) = read_json(body, api.config.api.max_body_bytes).await?;
    write_state(
        &api,
        grant,
        &headers,
        Method::POST,
        &uri,
        Some(bytes),
        KvCommand::Txn(txn),
    )
    .await
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Consistency {
    /// Sees every write acknowledged before the read began (the default).
    #[default]
    Linearizable,
    /// This node's replica as it is: fast, available without a leader, maybe behind.
    Stale,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    key: Option<String>,
    prefix: Option<String>,
    start_after: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    consistency: Consistency,
}

/// A single key's answer.
#[derive(Serialize, Deserialize)]
pub struct GetResponse {
    pub key: String,
    pub entry: Option<KvEntry>,
    /// The store's revision when read.
    pub revision: u64,
}

/// A range read's answer.
#[derive(Serialize, Deserialize)]
pub struct RangeResponse {
    pub entries: Vec<RangeEntry>,
    /// Whether more keys match; ask again with `start_after` the last key.
    pub more: bool,
    pub revision: u64,
}

/// One key of a range read.
#[derive(Serialize, Deserialize)]
pub struct RangeEntry {
    pub key: String,
    #[serde(flatten)]
    pub entry: KvEntry,
}

pub(crate) async fn kv_read(
    State(api): State<Arc<Api>>,
    grant: Option<Extension<Grant>>,
    headers: HeaderMap,
    uri: Uri,
) -> ApiResult<Response> {
    let grant = access::grant_of(grant)?;
    let q: ReadQuery = query(&uri)?;
    if let Some(key) = q.key.as_deref().or(q.prefix.as_deref()) {
        if !grant.allows_prefix(key) {
            return Err(access::denied(&grant, key));
        }
    }
    let sabotaged = q.consistency == Consistency::Linearizable && sabotage::stale_reads();
    if q.consistency == Consistency::Linearizable && !sabotaged {
        if let Err(err) = api.state.linearizable_barrier().await {
            return forward(&api, err, &headers, Method::GET, &uri, None).await;
        }
    }
    let reader = &api.state.reader;
    match (q.key, q.prefix) {
        (Some(key), None) => {
            let read = || reader.read(|kv| (kv.get(&key).cloned(), kv.revision()));
            let (entry, revision) = if sabotaged {
                sabotage::stale_read(&key, read)
            } else {
                read()
            };
            Ok(Json(GetResponse {
                key,
                entry,
                revision,
            })
            .into_response())
        }
        (None, Some(prefix)) => {
            let limit = q.limit.unwrap_or(DEFAULT_RANGE_LIMIT);
            if limit == 0 || limit > MAX_RANGE_LIMIT {
                return Err(ApiError::invalid(format!(
                    "limit must be 1 to {MAX_RANGE_LIMIT}"
                )));
            }
            let (entries, more, revision) = reader.read(|kv| {
                let (entries, more) = kv.range(&prefix, q.start_after.as_deref(), limit);
                (entries, more, kv.revision())
            });
            let entries = entries
                .into_iter()
                .map(|(key, entry)| RangeEntry { key, entry })
                .collect();
            Ok(Json(RangeResponse {
                entries,
                more,
                revision,
            })
            .into_response())
        }
        _ => Err(ApiError::invalid(
            "give exactly one of `key` (one key) or `prefix` (a range; may be empty)",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchQuery {
    #[serde(default)]
    prefix: String,
    from_revision: Option<u64>,
    timeout_ms: Option<u64>,
}

/// A watch answer: the events, and the revision to ask from next.
#[derive(Serialize, Deserialize)]
pub struct WatchResponse {
    pub events: Vec<KvEvent>,
    /// Ask again from this revision to continue without gaps or repeats.
    pub next_revision: u64,
    /// The replica's revision when answered.
    pub revision: u64,
}

pub(crate) async fn watch(
    State(api): State<Arc<Api>>,
    grant: Option<Extension<Grant>>,
    uri: Uri,
) -> ApiResult<Response> {
    let grant = access::grant_of(grant)?;
    let q: WatchQuery = query(&uri)?;
    if !grant.allows_prefix(&q.prefix) {
        return Err(access::denied(&grant, &q.prefix));
    }
    let _permit = watcher_permit(&api, &grant)?;
    let timeout = Duration::from_millis(q.timeout_ms.unwrap_or(30_000)).min(MAX_WATCH_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    let reader = &api.state.reader;
    let from = q
        .from_revision
        .unwrap_or_else(|| reader.read(|kv| kv.revision()) + 1);
    let response = long_poll(reader.subscribe(), deadline, |expired| {
        let (result, revision) = reader.read(|kv| {
            (
                kv.history().since(from, &q.prefix, MAX_WATCH_EVENTS),
                kv.revision(),
            )
        });
        let events =
            result.map_err(|c| ApiError::new(StatusCode::GONE, "compacted", c.to_string()))?;
        if events.is_empty() && !expired {
            return Ok(None);
        }
        let next_revision = match events.last() {
            Some(last) => last.revision + 1,
            None => from.max(revision + 1),
        };
        Ok(Some(WatchResponse {
            events,
            next_revision,
            revision,
        }))
    })
    .await?;
    Ok(Json(response).into_response())
}

/// A place among the long-poll watchers for the holder of `grant`, or 429 when it holds
/// its share or `api.max_watchers` wait already (`crate::watchers`).
pub(crate) fn watcher_permit(api: &Api, grant: &Grant) -> ApiResult<crate::watchers::Slot> {
    api.watchers.take(crate::watchers::Holder::of_grant(grant))
}

/// Answers a long-poll from a replica: calls `poll` now and after every applied entry until
/// it returns an answer; at the deadline `poll` is told the wait expired and must answer.
pub(crate) async fn long_poll<T>(
    mut applied: tokio::sync::watch::Receiver<u64>,
    deadline: tokio::time::Instant,
    mut poll: impl FnMut(bool) -> ApiResult<Option<T>>,
) -> ApiResult<T> {
    loop {
        applied.borrow_and_update();
        let expired = tokio::time::Instant::now() >= deadline;
        if let Some(answer) = poll(expired)? {
            return Ok(answer);
        }
        if tokio::time::timeout_at(deadline, applied.changed())
            .await
            .is_ok_and(|r| r.is_err())
        {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "node is shutting down",
            ));
        }
    }
}

/// What `/v1/cluster` answers: this node's view of both groups and of the sites.
#[derive(Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster: String,
    pub node_id: NodeId,
    pub site: String,
    /// The client listener's address, as configured.
    pub addr: String,
    /// The peer listener's address, as the other members reach it.
    #[serde(default)]
    pub peer_addr: String,
    pub version: String,
    pub groups: Vec<GroupInfo>,
    /// Sites as the control group records them, with their registered nodes.
    pub sites: BTreeMap<String, Vec<NodeId>>,
    /// Keys and revision of this node's replica of the state group.
    pub state_keys: usize,
    pub state_revision: u64,
    /// Days until this node's certificate expires (none without TLS).
    #[serde(default)]
    pub cert_expiry_days: Option<i64>,
}

pub(crate) async fn cluster(State(api): State<Arc<Api>>) -> Json<ClusterInfo> {
    let sites = api.control.reader.read(|c| {
        c.sites
            .iter()
            .map(|(site, record)| (site.to_string(), record.nodes.iter().copied().collect()))
            .collect()
    });
    let (state_keys, state_revision) = api.state.reader.read(|kv| (kv.len(), kv.revision()));
    Json(ClusterInfo {
        cluster: api.config.cluster.clone(),
        node_id: api.config.node_id,
        site: api.config.site.to_string(),
        addr: api.config.listen.to_string(),
        peer_addr: api.config.member().addr,
        version: env!("CARGO_PKG_VERSION").to_string(),
        groups: vec![api.control.info(), api.state.info()],
        sites,
        state_keys,
        state_revision,
        cert_expiry_days: api.keys.as_ref().map(|k| k.days_to_expiry()),
    })
}

/// Lease renewals and health reports forwarded by other nodes; stamped here, the leader.
/// A node renews only its own site's lease and reports only on its own site's services.
pub(crate) async fn internal_control(
    State(api): State<Arc<Api>>,
    peer: Option<Extension<PeerNode>>,
    body: Body,
) -> ApiResult<Response> {
    let (_, mut command): (_, ControlCommand) =
        read_json(body, api.config.api.max_body_bytes).await?;

    if !matches!(
        command,
        ControlCommand::RenewLease { .. } | ControlCommand::ReportHealth { .. }
    ) {
        return Err(ApiError::invalid(
            "only lease renewals and health reports are accepted here",
        ));
    }
    command
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    if let Some(Extension(PeerNode(sender))) = peer {
        check_own_site(&api, sender, &command)?;
    }
    command.stamp(crate::clock::now_ms());
    let response = api.control.write(command).await?;
    Ok(Json(response).into_response())
}

/// 403 unless `command` is about the site of `sender` (as the control group registered it).
fn check_own_site(api: &Api, sender: NodeId, command: &ControlCommand) -> ApiResult<()> {
    let site = match command {
        ControlCommand::RenewLease { site, .. } | ControlCommand::ReportHealth { site, .. } => site,
        _ => return Ok(()),
    };
    let metrics = api.control.raft.metrics();
    let own = metrics
        .borrow()
        .membership_config
        .membership()
        .get_node(&sender)
        .map(|m| m.site.clone());
    match own {
        Some(own) if &own == site => Ok(()),
        own => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "node {sender} (site {}) may renew the lease and report the health of its own site only, not {site}",
                own.map_or("unknown".to_string(), |s| s.to_string())
            ),
        )),
    }
}

/// Liveness of this node's HTTP server: 200 while it serves.
pub(crate) async fn health(State(api): State<Arc<Api>>) -> Json<serde_json::Value> {
    Json(json!({ "ok": true, "node": api.config.node_id, "site": api.config.site }))
}
