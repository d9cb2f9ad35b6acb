//! One router per listener (see docs/security.md for who may call what):
//!
//! ```text
//!   client: access::client_credentials ─► /v1/kv, /v1/txn, /v1/watch, /v1/routing/{service}
//!           (grants), /v1/cluster,
//!           /v1/health, gateway /{service}/...; operator paths answer 404 (admin listener)
//!   admin:  access::admin_credentials ─► operator commands (token), routing, failover,
//!           audit, topology, /v1/cluster, /v1/health, /metrics
//!   peer:   access::require_member ─► /raft/{control,state}/*, /v1/internal/control,
//!           /v1/internal/leader/{group} (the election gate's question),
//!           keys and operator writes forwarded to this node as leader
//! ```

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::access;
use crate::api::{self, NODE_HEADER};
use crate::context::Api;
use crate::reply::ApiError;

/// The key routes, served on both listeners (on the peer listener, for requests other
/// nodes forward to this one as leader).
fn key_routes() -> Router<Arc<Api>> {
    Router::new()
        .route(
            "/v1/kv",
            get(api::kv_read).put(api::kv_put).delete(api::kv_delete),
        )
        .route("/v1/txn", post(api::txn))
        .route("/v1/watch", get(api::watch))
}

/// The client listener's router: keys (with a credential), api::health, api::cluster info and the
/// gateway.
pub fn client_routes(api: Arc<Api>) -> Router {
    key_routes()
        .route("/v1/cluster", get(api::cluster))
        .route("/v1/health", get(api::health))
        .route(
            "/v1/routing/{service}",
            get(crate::service_route::service_route),
        )
        // Node paths that are not on this listener (operator, Raft, internal) are not
        // services: the gateway must not take them.
        .route("/v1/{*rest}", axum::routing::any(not_on_client_listener))
        .route("/raft/{*rest}", axum::routing::any(not_found))
        .route("/metrics", axum::routing::any(not_on_client_listener))
        .route(
            "/{service}/{*rest}",
            axum::routing::any(crate::gateway::forward),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            access::client_credentials,
        ))
        .layer(axum::middleware::map_response_with_state(
            api.clone(),
            add_node_header,
        ))
        .with_state(api)
}

/// The admin listener's router: operator commands, status and metrics.
pub fn admin_routes(api: Arc<Api>) -> Router {
    crate::operator::routes()
        .route("/v1/membership", post(crate::membership::change))
        .route("/v1/cluster", get(api::cluster))
        .route("/v1/health", get(api::health))
        .route("/metrics", get(crate::metrics::render))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            access::admin_credentials,
        ))
        .layer(axum::middleware::map_response_with_state(
            api.clone(),
            add_node_header,
        ))
        .with_state(api)
}

/// The peer listener's router: both groups' Raft RPCs, lease renewals and api::health reports,
/// and what other nodes forward to the leader (keys, operator writes); members only.
pub fn peer_routes(api: Arc<Api>) -> Router {
    let raft = crate::network::routes(api.control.raft.clone(), api.control.contact.clone())
        .merge(crate::network::routes(
            api.state.raft.clone(),
            api.state.contact.clone(),
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::network::MAX_RAFT_BODY_BYTES,
        ));
    key_routes()
        .route("/v1/internal/control", post(api::internal_control))
        .route(
            "/v1/internal/leader/{group}",
            get(crate::election_gate::leader),
        )
        .route("/v1/internal/known/{id}", get(crate::id_check::known))
        .route(
            "/v1/internal/membership/{group}",
            post(crate::membership_step::internal),
        )
        .merge(crate::operator::routes())
        .fallback(not_found)
        .with_state(api.clone())
        .merge(raft)
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            access::require_member,
        ))
        .layer(axum::middleware::map_response_with_state(
            api,
            add_node_header,
        ))
}

async fn not_on_client_listener() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "not on the client listener: operator commands, status and metrics are on the admin listener (admin_listen); see docs/security.md",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint on this listener; see docs/reference.md",
    )
}

/// Names the answering node in every response.
async fn add_node_header(State(api): State<Arc<Api>>, mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(NODE_HEADER, HeaderValue::from(api.config.node_id.0));
    response
}
