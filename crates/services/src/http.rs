//! What the three services share at their HTTP edge: error answers, id checks, load
//! shedding answers and serving a router.

use std::net::SocketAddr;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

use crate::state::StateError;

/// Longest id a service accepts (account, conversation, message id, idempotency key).
pub const MAX_ID_BYTES: usize = 64;

/// The kind of a 503 that sheds load (it also carries [`firebreak_model::SHED_HEADER`]).
const OVERLOADED: &str = "overloaded";

/// An error answer: status, kind, message. 503 answers carry `Retry-After: 1`.
pub(crate) struct Failure(pub StatusCode, pub &'static str, pub String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = (
            self.0,
            Json(json!({ "error": { "kind": self.1, "message": self.2 } })),
        )
            .into_response();
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        if self.1 == OVERLOADED {
            response
                .headers_mut()
                .insert(firebreak_model::SHED_HEADER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<StateError> for Failure {
    fn from(err: StateError) -> Self {
        match err {
            StateError::Unavailable(m) => {
                Failure(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
            StateError::OutcomeUnknown(m) => Failure(
                StatusCode::GATEWAY_TIMEOUT,
                "outcome_unknown",
                format!("{m}; retrying with the same idempotency key or message id is safe"),
            ),
            StateError::Invalid(m) => Failure(StatusCode::BAD_REQUEST, "invalid_input", m),
        }
    }
}

impl Failure {
    /// The answer when a bound on work in flight is reached.
    pub(crate) fn overloaded(what: &str) -> Self {
        Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            OVERLOADED,
            format!("too many {what} in flight"),
        )
    }
}

/// A permit from a service's bound on requests in flight, or the 503 that sheds the load.
pub(crate) fn shed(
    permits: &tokio::sync::Semaphore,
) -> Result<tokio::sync::SemaphorePermit<'_>, Failure> {
    permits
        .try_acquire()
        .map_err(|_| Failure::overloaded("requests"))
}

/// Checks an id: 1 to [`MAX_ID_BYTES`] of a-z, A-Z, 0-9, `-` and `_`.
pub(crate) fn check_id(field: &str, id: &str) -> Result<(), Failure> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then_some(()).ok_or_else(|| {
        Failure(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("{field} must be 1 to {MAX_ID_BYTES} of a-z, A-Z, 0-9, - and _"),
        )
    })
}

/// Drops work whose caller has given up: a request whose [`firebreak_model::DEADLINE_HEADER`]
/// is 0 is answered 503 at once (nothing was done), and one still running when its
/// deadline passes is cut off with 504 `outcome_unknown` (a write may have reached the
/// state group). A push stream's deadline covers only its opening.
pub(crate) async fn deadline(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(budget) = request
        .headers()
        .get(firebreak_model::DEADLINE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(firebreak_model::parse_deadline)
    else {
        return next.run(request).await;
    };
    if budget.is_zero() {
        return Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "deadline_passed",
            "the caller's deadline had passed when the request arrived; nothing was done".into(),
        )
        .into_response();
    }
    match tokio::time::timeout(budget, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Failure(
            StatusCode::GATEWAY_TIMEOUT,
            "outcome_unknown",
            format!(
                "the caller's deadline ({} ms) passed while the request was being served; it \
                 may have been applied",
                budget.as_millis()
            ),
        )
        .into_response(),
    }
}

/// The TLS a service serves with: its certificate (reloading) and the cluster CA; `None`
/// serves plain HTTP (in-process tests, `--plaintext-for-debugging`).
pub type ServerTls = Option<std::sync::Arc<rustls::ServerConfig>>;

/// The share of an instance's file descriptors (beyond the reserve) its listener may hold.
const SERVED_SHARE: u64 = 80;

/// Serves `router` on `listen` until the returned task is aborted; returns the bound address.
pub(crate) async fn serve(
    listen: SocketAddr,
    router: Router,
    tls: ServerTls,
    name: &'static str,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use firebreak_tls::listener::{bind, raise_open_file_limit, Limits, Listener};
    // The rest is the instance's own calls: to its nodes, its peers, its store.
    let limits = Limits::share_of(raise_open_file_limit(), SERVED_SHARE);
    let listener = Listener::new(bind(listen)?, tls, limits, std::sync::Arc::default())?;
    let addr = listener.local_addr();
    tracing::debug!(
        service = name,
        connections = limits.connections,
        "listening"
    );
    let stopped = std::future::pending::<()>();
    let task = tokio::spawn(firebreak_tls::serve::serve(listener, router, stopped));
    Ok((addr, task))
}
