//! Answers to requests: the JSON error every endpoint gives (`{"error": {"kind",
//! "message", "leader"?}}`), and reading a bounded JSON body or a query string into a type.
//!
//! The kinds a client acts on: `invalid_input` (fix the request), `not_leader`/`no_quorum`/
//! `unavailable`/`overloaded` (nothing was written: retry, elsewhere or later),
//! `outcome_unknown` (it may have committed: retry only if the write is idempotent, or read
//! to find out), `compacted`, `unauthorized`/`forbidden` (a credential is missing or does
//! not reach this).

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use firebreak_model::{Member, NodeId};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::group::GroupError;

/// An error answer: status, kind, message, and where the leader is when that helps.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    leader: Option<(NodeId, Member)>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            leader: None,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// A `not_leader` answer to an operator who came with a certificate: no node forwards
    /// one, since only the leader can see the certificate itself.
    pub(crate) fn certificate_to_leader(mut self) -> Self {
        if self.kind == "not_leader" {
            self.message.push_str(
                "; an operator certificate is checked by the leader itself: send the command to the leader's admin listener (the CLI tries each of --admin-nodes in turn)",
            );
        }
        self
    }
}

impl From<GroupError> for ApiError {
    fn from(err: GroupError) -> Self {
        let message = err.to_string();
        match err {
            GroupError::NotLeader { leader } => {
                let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_leader", match &leader {
                    Some((id, m)) => format!("node is not the leader; node {id} at {} is", m.addr),
                    None => "node is not the leader and no leader is known yet (election in progress?)".into(),
                });
                e.leader = leader;
                e
            }
            GroupError::NoQuorum { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "no_quorum", message)
            }
            GroupError::Overloaded { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message)
            }
            GroupError::OutcomeUnknown { .. } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "outcome_unknown", message)
            }
            GroupError::Unavailable { .. } => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            GroupError::TooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "kind": self.kind, "message": self.message });
        if let Some((id, member)) = &self.leader {
            body["leader"] = json!({ "id": id, "addr": member.addr, "site": member.site });
        }
        let mut response = (self.status, Json(json!({ "error": body }))).into_response();
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        response
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub(crate) async fn read_json<T: DeserializeOwned>(
    body: Body,
    limit: usize,
) -> ApiResult<(Bytes, T)> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_input",
            format!("request body is over the {limit}-byte limit"),
        )
    })?;
    let value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::invalid(format!(
            "request body is not valid JSON for this endpoint: {e}"
        ))
    })?;
    Ok((bytes, value))
}

pub(crate) fn query<T: DeserializeOwned>(uri: &Uri) -> ApiResult<T> {
    Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::invalid(format!("bad query string: {e}")))
}
