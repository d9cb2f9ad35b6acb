//! The drill's client of the nodes' kv API: one attempt per operation, to the node the
//! workload picked, with the run's operator token, so the history holds exactly what each
//! node answered (a retry would hide which node served a stale read).
//!
//! ```text
//!   read  GET  /v1/kv?key=K                 ─► ok {"value": V|null}
//!   write PUT  /v1/kv {key, value}          ─► ok {}
//!   cas   POST /v1/txn compare value == E   ─► ok {"succeeded": bool}
//! ```
//!
//! Outcomes follow the node's contract: 2xx ok; 503 (no leader, overloaded: nothing
//! applied) and a connection refused fail; 504 (the leader took it, the answer was lost),
//! any other 5xx, a timeout or a cut answer are unknown; a 4xx fails (refused before
//! anything was proposed).

use std::time::Duration;

use firebreak_services::client::Outcome;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::history::Op;

/// A kv client over every node's client listener.
pub struct KvClient {
    http: reqwest::Client,
    tls: firebreak_tls::ClientTls,
    token: String,
}

impl KvClient {
    pub fn new(tls: firebreak_tls::ClientTls, token: String, timeout: Duration) -> Self {
        let http = tls
            .apply(reqwest::Client::builder())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(1)))
            .build()
            .expect("reqwest client builds with static options");
        Self { http, tls, token }
    }

    /// Runs a kv operation at `node`; other operations are not the kv API's.
    pub async fn execute(&self, node: &str, op: &Op) -> Outcome {
        let (method, path, body) = match op {
            Op::KvRead { key } => (Method::GET, format!("/v1/kv?key={key}"), None),
            Op::KvWrite { key, value } => (
                Method::PUT,
                "/v1/kv".to_string(),
                Some(json!({ "key": key, "value": value })),
            ),
            Op::KvCas {
                key,
                expected,
                value,
            } => (
                Method::POST,
                "/v1/txn".to_string(),
                Some(json!({
                    "compare": [{ "key": key, "op": "eq", "target": { "value": expected } }],
                    "success": [{ "put": { "key": key, "value": value } }],
                    "failure": [],
                })),
            ),
            other => return Outcome::Failed(format!("{other:?} is not a kv operation")),
        };
        let mut request = self
            .http
            .request(method, self.tls.url(node, &path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_connect() => return Outcome::Failed(format!("{node}: {e}")),
            Err(e) => return Outcome::Unknown(format!("{node}: {e}")),
        };
        let status = response.status();
        let body: Value = match response.bytes().await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            Err(e) if status.is_success() => {
                return Outcome::Unknown(format!("{node}: {status} but the answer was cut: {e}"))
            }
            Err(_) => Value::Null,
        };
        outcome(node, op, status, &body)
    }
}

/// The outcome of one answer, its body in the history's shape.
fn outcome(node: &str, op: &Op, status: StatusCode, body: &Value) -> Outcome {
    let message = body["error"]["message"].as_str().unwrap_or("");
    if status.is_success() {
        let body = match op {
            Op::KvRead { .. } => json!({ "value": body["entry"]["value"] }),
            Op::KvCas { .. } => json!({ "succeeded": body["txn"]["succeeded"] }),
            _ => json!({}),
        };
        return Outcome::Done {
            status: status.as_u16(),
            body,
            site: Some(node.to_string()),
            epoch: None,
        };
    }
    let what = format!("{node}: {status} {message}");
    match status {
        StatusCode::SERVICE_UNAVAILABLE => Outcome::Failed(what),
        s if s.is_client_error() => Outcome::Failed(what),
        _ => Outcome::Unknown(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_the_nodes_contract() {
        let read = Op::KvRead { key: "k".into() };
        let ok = outcome(
            "n",
            &read,
            StatusCode::OK,
            &json!({ "entry": { "value": "v1" } }),
        );
        assert_eq!(ok.ok(), Some(&json!({ "value": "v1" })));
        let absent = outcome("n", &read, StatusCode::OK, &json!({ "entry": null }));
        assert_eq!(absent.ok(), Some(&json!({ "value": null })));
        let write = Op::KvWrite {
            key: "k".into(),
            value: "v".into(),
        };
        let no_leader = outcome("n", &write, StatusCode::SERVICE_UNAVAILABLE, &Value::Null);
        assert!(matches!(no_leader, Outcome::Failed(_)));
        let lost = outcome("n", &write, StatusCode::GATEWAY_TIMEOUT, &Value::Null);
        assert!(matches!(lost, Outcome::Unknown(_)));
        let crashed = outcome("n", &write, StatusCode::INTERNAL_SERVER_ERROR, &Value::Null);
        assert!(
            matches!(crashed, Outcome::Unknown(_)),
            "a 500 may follow a write"
        );
    }
}
