//! The site-aware gateway: `/{service}/...` on any node goes to an instance of the service
//! in a site that serves it now, following the routing table of the local replica.
//!
//! ```text
//!   request ─► routing[service].serving ─► own site first, then topology priority
//!           ─► forward (method, headers, bounded body; the response streams through,
//!              so push streams work) ─► response + x-firebreak-site, x-firebreak-epoch
//!   instance unreachable ─► next serving site, only when safe: a connection that was
//!              never made, a GET, or a request with an Idempotency-Key header
//!   instance sheds load (503 + x-firebreak-shed) ─► relayed: the client decides
//! ```
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

/// The instances to try for `service`, best first, with the service's epoch.
fn candidates(api: &Api, service: &str) -> Option<(Vec<(SiteId, String)>, u64)> {
    api.control.reader.read(|c| {
        let f = &c.failover;
        let spec = f.topology.as_ref()?.service(service)?;
        let route = f.routing.get(service)?;
        let own = &api.config.site;
        let mut sites: Vec<SiteId> = Topology::ranked_sites(spec)
            .into_iter()
            .filter(|s| route.serving.contains(s))
            .collect();
        if let Some(i) = sites.iter().position(|s| s == own) {
            let mine = sites.remove(i);
            sites.insert(0, mine);
        }
        let out = sites
            .into_iter()
            .map(|s| (s.clone(), spec.endpoints[&s].clone()))
            .collect();
        Some((out, route.epoch))
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
    if !api.control.in_contact() {
        // Cut off (or mid-election): this replica's routing may be stale, and what its
        // site's services would write cannot commit. Send the client elsewhere at once.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this node is cut off from its control group (no leader in reach); try another node",
        ));
    }
    let (targets, epoch) = candidates(&api, &service).ok_or_else(|| {
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
    if targets.is_empty() {
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
    let safe =
        method == Method::GET || method == Method::HEAD || headers.contains_key("idempotency-key");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut tried = Vec::new();
    for (site, endpoint) in &targets {
        let mut request = api.gateway.request(
            method.clone(),
            format!("{}{path}", endpoint.trim_end_matches('/')),
        );
        for (name, value) in &headers {
            if !HOP_HEADERS.contains(&name.as_str()) {
                request = request.header(name, value);
            }
        }
        match request.body(body.clone()).send().await {
            // An instance that sheds load is answered as is: the client moves on to
            // another gateway (another site) or waits as Retry-After asks.
            Ok(response)
                if response.status() == StatusCode::SERVICE_UNAVAILABLE
                    && safe
                    && !response.headers().contains_key(firebreak_model::SHED_HEADER) =>
            {
                tried.push(format!("{site}: 503"));
            }
            Ok(response) => return Ok(relay(response, site, epoch, api.contact.clone())),
            Err(err) if err.is_connect() || safe => tried.push(format!("{site}: {err}")),
            Err(err) => {
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "outcome_unknown",
                    format!("instance in {site} took the request but did not answer ({err}); retry with an Idempotency-Key"),
                ))
            }
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("no instance of {service} answered: {}", tried.join("; ")),
    ))
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
        out.headers_mut().insert("x-firebreak-site", value);
    }
    out.headers_mut()
        .insert("x-firebreak-epoch", HeaderValue::from(epoch));
    out
}
