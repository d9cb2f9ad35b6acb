//! The site-aware gateway: `/{service}/...` on any node goes to an instance of the service
//! in a site that serves it now, following the routing table of the local replica.
//!
//! ```text
//!   request ─► routing[service].serving ─► own site first, then topology priority
//!           ─► forward (method, headers, bounded body; the response streams through,
//!              so push streams work) ─► response + x-firebreak-site, x-firebreak-epoch
//!   no connection made ─► next serving site (nothing was sent)
//!   sent, answer lost ─► retry-safe (GET, HEAD, the service's `retry_safe` routes in
//!              the topology)? next serving site : 504 outcome_unknown
//!   instance sheds load (503 + x-firebreak-shed) ─► relayed: the client decides
//!   no site answered ─► 503 unavailable only if the request was never sent to any
//!              instance; 504 outcome_unknown if one may have received it
//! ```
//!
//! A request's deadline (`x-firebreak-deadline-ms`, what its caller will wait) bounds the
//! whole relay: each instance is sent what is left of it, and when it runs out the gateway
//! stops trying (503 if nothing was sent yet, else 504).
//!
//! So a 503 from the gateway always means "nothing was applied": a client may send it
//! anywhere again. Whether a request is safe to repeat is declared per service and route
//! in the topology, by whoever knows what the service deduplicates; no header of the
//! request is trusted for it.
//!
//! A path with a segment that could resolve to another path on the way (`..`, `%2e%2e`,
//! an encoded slash) is refused with 400: it would be routed as one service and could land
//! on another (`firebreak_model::request_path`).
//!
//! A node cut off from its control group (no leader in reach) answers 503 at once: its
//! routing may be stale and its site cannot commit, so the client should go elsewhere.
//! For the same reason, the push streams it is passing through end when it has been cut
//! off for 1 s (not at a moment's lapse, which would start a reconnect storm): a
//! stream from a site that cannot commit would stay open and silent, and its client would
//! miss every message until the partition heals (seen in `site-isolation`: pushes 20 s
//! late).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use firebreak_model::topology::Topology;
use firebreak_model::SiteId;

use crate::context::Api;
use crate::reply::{ApiError, ApiResult};

/// Largest request body the gateway forwards.
const MAX_GATEWAY_BODY_BYTES: usize = 256 * 1024;
/// Hop-by-hop headers not forwarded.
const HOP_HEADERS: [&str; 6] = [
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Where a request goes: the instances to try, best first, the service's epoch, and
/// whether the request may be sent again after a lost answer.
struct Plan {
    targets: Vec<(SiteId, String)>,
    epoch: u64,
    /// The primary, for active-passive.
    primary: Option<SiteId>,
    retry_safe: bool,
}

/// Headers the gateway sets on every request it forwards (whatever the caller sent is
/// dropped): the route's epoch, the site of the instance, and the primary of an
/// active-passive service. Instances fence writes with them.
pub const EPOCH_HEADER: &str = "x-firebreak-epoch";
pub const SITE_HEADER: &str = "x-firebreak-site";
pub const PRIMARY_HEADER: &str = "x-firebreak-primary";

/// The plan for a `method` request to `path` of `service`.
fn candidates(api: &Api, service: &str, method: &Method, path: &str) -> Option<Plan> {
    api.control.reader.read(|c| {
        let f = &c.failover;
        let spec = f.topology.as_ref()?.service(service)?;
        let retry_safe = spec.retry_safe(method.as_str(), path);
        let route = f.routing.get(service)?;
        let own = &api.config.site;
        let stale;
        let route = match crate::sabotage::stale_route_hold(own) {
            Some(hold) => {
                stale = crate::sabotage::stale_view(service, route, hold);
                &stale
            }
            None => route,
        };
        let mut sites: Vec<SiteId> = Topology::ranked_sites(spec)
            .into_iter()
            .filter(|s| route.serving.contains(s))
            .collect();
        if let Some(i) = sites.iter().position(|s| s == own) {
            let mine = sites.remove(i);
            sites.insert(0, mine);
        }
        let targets = sites
            .into_iter()
            .filter_map(|s| Some((s.clone(), spec.endpoints.get(&s)?.clone())))
            .collect();
        Some(Plan {
            targets,
            epoch: route.epoch,
            primary: route.primary.clone(),
            retry_safe,
        })
    })
}

/// `/{service}/{*rest}`: forwards to a serving instance.
pub async fn forward(
    State(api): State<Arc<Api>>,
    Path((service, _rest)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let deadline = headers
        .get(firebreak_model::DEADLINE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(firebreak_model::parse_deadline)
        .map(|budget| tokio::time::Instant::now() + budget);
    if !api.control.in_contact() {
        // Cut off (or mid-election): this replica's routing may be stale, and what its
        // site's services would write cannot commit. Send the client elsewhere at once.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this node is cut off from its control group (no leader in reach); try another node",
        ));
    }
    if let Some(segment) = firebreak_model::request_path::ambiguous_segment(uri.path()) {
        return Err(ApiError::invalid(format!(
            "path segment {segment:?} could resolve to another path on the way (a dot segment or an encoded slash); send the path without it"
        )));
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let plan = candidates(&api, &service, &method, uri.path()).ok_or_else(|| {
        // A replica without any topology is starting or catching up (a node restored on
        // an empty disk): "no such service" would be a wrong definitive answer.
        if api.control.reader.read(|c| c.failover.topology.is_none()) {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "this node has no topology yet (starting or catching up); try another node",
            )
        } else {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no service {service} in the topology"),
            )
        }
    })?;
    if plan.targets.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("no site serves {service} now"),
        ));
    }
    let body = axum::body::to_bytes(body, MAX_GATEWAY_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_input",
                format!("request body is over {MAX_GATEWAY_BODY_BYTES} bytes"),
            )
        })?;
    let request = Outgoing {
        method,
        path,
        headers,
        body,
        deadline,
    };
    try_sites(&api, &service, &plan, &request).await
}

/// A request as the gateway passes it on.
struct Outgoing {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: axum::body::Bytes,
    /// When the caller stops waiting, if it said.
    deadline: Option<tokio::time::Instant>,
}

/// Sends `request` to the plan's instances in turn until one answers (see the module
/// docs for when it moves on).
async fn try_sites(
    api: &Api,
    service: &str,
    plan: &Plan,
    request: &Outgoing,
) -> ApiResult<Response> {
    let mut tried = Vec::new();
    let mut sent = false;
    for (site, endpoint) in &plan.targets {
        let left = request
            .deadline
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            tried.push(format!("{site}: not tried, the caller's deadline passed"));
            break;
        }
        let answer = match send(api, (site, endpoint), plan, request, left).await {
            Some(answer) => answer,
            None => {
                return Err(outcome_unknown(format!(
                    "the caller's deadline passed while the instance in {site} had the request"
                )))
            }
        };
        match answer {
            // An instance's own 503 means it applied nothing; one that sheds load is
            // answered as is: the client moves on to another gateway (another site) or
            // waits as Retry-After asks.
            Ok(response)
                if response.status() == StatusCode::SERVICE_UNAVAILABLE
                    && plan.retry_safe
                    && !response
                        .headers()
                        .contains_key(firebreak_model::SHED_HEADER) =>
            {
                tried.push(format!("{site}: 503"));
            }
            Ok(response) => {
                return Ok(relay(response, site, plan.epoch, api.contact.clone()));
            }
            Err(err) if err.is_connect() => tried.push(format!("{site}: {err}")),
            Err(err) if plan.retry_safe => {
                sent = true;
                tried.push(format!("{site}: {err} (after sending)"));
            }
            Err(err) => {
                return Err(outcome_unknown(format!(
                    "instance in {site} took the request but did not answer ({err})"
                )))
            }
        }
    }
    let tried = tried.join("; ");
    if sent {
        return Err(outcome_unknown(format!(
            "no instance of {service} answered, and one may have received the request: {tried}"
        )));
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("no instance of {service} answered, and none applied the request: {tried}"),
    ))
}

/// Sends `request` to the instance at `endpoint` with `left` of its deadline (`None`:
/// none); `None` when the deadline passed before the instance answered.
async fn send(
    api: &Api,
    (site, endpoint): (&SiteId, &str),
    plan: &Plan,
    request: &Outgoing,
    left: Option<std::time::Duration>,
) -> Option<reqwest::Result<reqwest::Response>> {
    let url = format!("{}{}", endpoint.trim_end_matches('/'), request.path);
    let mut outgoing = api.gateway.request(request.method.clone(), url);
    let ours = [
        firebreak_model::DEADLINE_HEADER,
        EPOCH_HEADER,
        SITE_HEADER,
        PRIMARY_HEADER,
    ];
    for (name, value) in &request.headers {
        let name = name.as_str();
        if !HOP_HEADERS.contains(&name) && !ours.contains(&name) {
            outgoing = outgoing.header(name, value);
        }
    }
    outgoing = outgoing
        .header(EPOCH_HEADER, plan.epoch)
        .header(SITE_HEADER, site.0.as_str());
    if let Some(primary) = &plan.primary {
        outgoing = outgoing.header(PRIMARY_HEADER, primary.0.as_str());
    }
    let sending = match left {
        Some(left) => outgoing.header(firebreak_model::DEADLINE_HEADER, left.as_millis() as u64),
        None => outgoing,
    }
    .body(request.body.clone())
    .send();
    match left {
        Some(left) => tokio::time::timeout(left, sending).await.ok(),
        None => Some(sending.await),
    }
}

/// 504: the request may have been applied; `what` says why nobody knows.
fn outcome_unknown(what: String) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "outcome_unknown",
        format!(
            "{what}; it may have been applied: retry only if the service deduplicates it \
             (the same idempotency key or message id), or check its outcome first"
        ),
    )
}

/// The instance's answer with the gateway's headers; a push stream ends early if this node
/// is cut off from its control group meanwhile.
fn relay(
    response: reqwest::Response,
    site: &SiteId,
    epoch: u64,
    mut contact: tokio::sync::watch::Receiver<bool>,
) -> Response {
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    for (name, value) in response.headers() {
        if !HOP_HEADERS.contains(&name.as_str()) {
            headers.insert(name.clone(), value.clone());
        }
    }
    // Only push streams are cut: an ordinary answer is short, and cutting it would turn
    // a committed write into an unknown outcome.
    let streaming = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let body = if streaming {
        let cut_off = async move {
            let _ = contact.wait_for(|in_contact| !*in_contact).await;
        };
        Body::from_stream(futures::StreamExt::take_until(
            response.bytes_stream(),
            cut_off,
        ))
    } else {
        Body::from_stream(response.bytes_stream())
    };
    let mut out = (status, body).into_response();
    out.headers_mut().extend(headers);
    if let Ok(value) = HeaderValue::from_str(&site.0) {
        out.headers_mut().insert(SITE_HEADER, value);
    }
    out.headers_mut()
        .insert(EPOCH_HEADER, HeaderValue::from(epoch));
    out
}
