//! Who may call what, per listener; the layers run before any handler.
//!
//! | listener | who gets in | what they get |
//! |---|---|---|
//! | peer | a certificate naming a current member node of this cluster (mutual TLS) | everything on it, as that node ([`PeerNode`]), but never as an operator; a node of this cluster that is no member only [`KNOWN_PATH`] with its own id |
//! | client | anyone, for the gateway and `/v1/health`, `/v1/cluster` | keys only with a credential: a service certificate ([`Grant::service`]), an operator certificate or an operator token ([`Grant::All`]), a current member node's certificate ([`Grant::All`]; a removed node's certificate stays valid, there is no revocation, and reaches no key) |
//! | admin | anyone with TLS | operator commands with an operator certificate ([`OPERATOR_CERT_HEADER`]) or token, checked by `crate::operator`; status with one too under `auth.protect_reads`; metrics |
//! A certificate of another cluster is refused wherever it shows up.
//! In `plaintext_for_debugging` mode there are no certificates: every caller is let in as
//! a member with every key, which is why that mode is for one machine only.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use firebreak_model::grant::Grant;
use firebreak_model::NodeId;
use firebreak_tls::{Identity, Role};

use crate::context::Api;
use crate::reply::ApiError;
use firebreak_tls::listener::Remote;

/// The header through which the admin listener's layer tells the operator endpoints which
/// operator's certificate a request came with, set from the verified certificate alone.
/// Every listener removes whatever a caller sent, members included: a node never speaks
/// for an operator, so a follower does not forward a certificate operator's command (the
/// leader must see the certificate itself) and answers `not_leader` instead.
pub const OPERATOR_CERT_HEADER: &str = "x-firebreak-operator-cert";

/// The one peer path a node of this cluster that is not a member may call, with its own id.
pub const KNOWN_PATH: &str = "/v1/internal/known/";

/// The member node a peer request came from, as its certificate names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerNode(pub NodeId);

/// The peer listener's gate: current members only.
pub async fn require_member(
    State(api): State<Arc<Api>>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    mut request: Request,
    next: Next,
) -> Response {
    // Only the admin listener's layer may vouch for an operator certificate.
    request.headers_mut().remove(OPERATOR_CERT_HEADER);
    if api.plaintext() {
        request.extensions_mut().insert(Grant::All);
        return next.run(request).await;
    }
    let id = match remote.identity {
        Some(Identity {
            cluster,
            role: Role::Node(id),
        }) if cluster == api.config.cluster => NodeId(id),
        Some(other) => {
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                "{other} is not a node of cluster {}: the peer listener serves its members only",
                api.config.cluster
            ),
            )
        }
        None => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "the peer listener needs a node certificate of this cluster".into(),
            )
        }
    };
    if !is_member(&api, id) {
        if request.uri().path() == format!("{KNOWN_PATH}{id}") {
            // A node not (or no longer) a member may ask what the cluster knows of its own id.
            request.extensions_mut().insert(PeerNode(id));
            return next.run(request).await;
        }
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "node {id} is not a member of cluster {}",
                api.config.cluster
            ),
        );
    }
    request.extensions_mut().insert(PeerNode(id));
    request.extensions_mut().insert(Grant::All);
    next.run(request).await
}

/// Whether `id` is in either group's membership; before either group has one (at first
/// start), whether it is in the configured peers.
fn is_member(api: &Api, id: NodeId) -> bool {
    let mut known = false;
    for metrics in [api.control.raft.metrics(), api.state.raft.metrics()] {
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        if membership.get_node(&id).is_some() {
            return true;
        }
        known |= membership.nodes().next().is_some();
    }
    !known && api.config.peers.iter().any(|p| p.id == id)
}

/// The client listener's layer: turns a credential into a [`Grant`] for the key routes.
/// Requests without one pass on without a grant; the key routes then refuse them.
pub async fn client_credentials(
    State(api): State<Arc<Api>>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    mut request: Request,
    next: Next,
) -> Response {
    // Only the admin listener's layer may vouch for an operator certificate.
    request.headers_mut().remove(OPERATOR_CERT_HEADER);
    let grant = match remote.identity {
        _ if api.plaintext() => Some(Grant::All),
        Some(Identity { cluster, role }) if cluster == api.config.cluster => match role {
            Role::Service(name) => Some(Grant::service(&name)),
            Role::Operator(_) => Some(Grant::All),
            Role::Node(id) => is_member(&api, NodeId(id)).then_some(Grant::All),
        },
        Some(other) => return foreign(&api, &other),
        None => api.tokens.check(request.headers()).ok().map(|_| Grant::All),
    };
    if let Some(grant) = grant {
        request.extensions_mut().insert(grant);
    }
    next.run(request).await
}

/// The admin listener's layer: refuses certificates of another cluster, and records a
/// verified operator certificate for the operator endpoints (which otherwise check tokens).
pub async fn admin_credentials(
    State(api): State<Arc<Api>>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    mut request: Request,
    next: Next,
) -> Response {
    request.headers_mut().remove(OPERATOR_CERT_HEADER);
    match remote.identity {
        Some(other) if other.cluster != api.config.cluster => foreign(&api, &other),
        Some(Identity {
            role: Role::Operator(name),
            ..
        }) => match axum::http::HeaderValue::from_str(&name) {
            Ok(value) => {
                request.headers_mut().insert(OPERATOR_CERT_HEADER, value);
                next.run(request).await
            }
            Err(_) => refuse(
                StatusCode::FORBIDDEN,
                "an operator name that is not a header value".into(),
            ),
        },
        _ => next.run(request).await,
    }
}

/// The grant of a key request, or 401 naming the credentials that would do.
pub fn grant_of(grant: Option<axum::Extension<Grant>>) -> Result<Grant, ApiError> {
    grant.map(|g| g.0).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "keys need a credential: a service certificate (`firebreak cert issue service NAME`) for the service's own prefix, or an operator certificate or token for every key",
        )
    })
}

/// 403 unless `grant` covers every key of `command`.
pub fn check_command(
    grant: &Grant,
    command: &firebreak_model::kv::KvCommand,
) -> Result<(), ApiError> {
    match grant.denied_key(command) {
        None => Ok(()),
        Some(key) => Err(denied(grant, key)),
    }
}

/// 403 naming the key and what the credential allows.
pub fn denied(grant: &Grant, key: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "key {} is outside this credential's grant ({})",
            firebreak_model::ids::quote(key),
            grant.describe()
        ),
    )
}

/// 403 for a certificate that the CA issued for another cluster.
fn foreign(api: &Api, identity: &Identity) -> Response {
    refuse(
        StatusCode::FORBIDDEN,
        format!(
            "{identity} was not issued for cluster {}",
            api.config.cluster
        ),
    )
}

fn refuse(status: StatusCode, message: String) -> Response {
    let kind = match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        _ => "forbidden",
    };
    ApiError::new(status, kind, message).into_response()
}
