//! The services' client for the node's `state` group (the key-value store), trying every
//! given node in turn so that a service never depends on one site.
//!
//! Outcomes are kept apart as the node reports them: refused (nothing written; safe to
//! retry anywhere), unknown (it may have committed; retry only what is idempotent).
//!
//! A node that does not answer at all (a partition drops packets without a word) costs a
//! request its timeout, so every call is bounded: a read by the client's timeout, a
//! long-poll by its wait plus [`ANSWER_GRACE`], and a long-poll on any node but the first
//! one given (the service's own site's) waits at most [`FALLBACK_WAIT`], so that a
//! partition that starts mid-poll holds it no longer, and it is back on its own node
//! soon. A node that timed out is tried last for [`SILENT_FOR`]
//! (`firebreak_model::node_order`), then on probation: asked in its place again, but
//! within those short bounds, until it answers. A refused connection changes nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firebreak_model::kv::{KvEntry, KvResponse, Txn, TxnOp, TxnOpResult};
use firebreak_model::watch::KvEvent;
use reqwest::StatusCode;
use serde_json::Value;

/// How long a node may take to answer a long-poll beyond the wait it was asked for.
pub const ANSWER_GRACE: Duration = Duration::from_secs(2);
/// Longest wait of a long-poll on a node other than the first one tried.
pub const FALLBACK_WAIT: Duration = Duration::from_secs(2);
/// How long a node that did not answer in time is tried last.
pub const SILENT_FOR: Duration = Duration::from_secs(30);
/// Longest wait to open a connection to a node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a state-group call did not give an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    /// No node could serve it; nothing was written.
    #[error("no node could serve the request: {0}")]
    Unavailable(String),
    /// A write may or may not have committed.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The request itself was refused as invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// A client of the state group.
#[derive(Clone)]
pub struct StateClient {
    nodes: Vec<String>,
    http: reqwest::Client,
    tls: firebreak_tls::ClientTls,
    /// Bound of a call that is not a long-poll.
    timeout: Duration,
    /// Per node, until when it is tried last (it did not answer in time; past that
    /// instant and until it answers, it is on probation); shared by clones.
    silent_until: Arc<Mutex<Vec<Option<Instant>>>>,
}

impl StateClient {
    /// A client of the nodes at `nodes` (`host:port`), tried in order, presenting the
    /// service's certificate through `tls`.
    pub fn new(nodes: Vec<String>, tls: firebreak_tls::ClientTls, timeout: Duration) -> Self {
        let http = tls
            .apply(reqwest::Client::builder())
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .tcp_nodelay(true)
            .build()
            .expect("reqwest client builds with static options");
        let silent_until = Arc::new(Mutex::new(vec![None; nodes.len()]));
        Self {
            nodes,
            http,
            tls,
            timeout,
            silent_until,
        }
    }

    /// The nodes to try now, in order (silent ones last), each with whether it is
    /// trusted (it answered last time it was asked) or silent or on probation.
    fn order(&self) -> Vec<(usize, bool)> {
        let now = Instant::now();
        let standing = self.silent_until.lock().expect("silent_until lock").clone();
        let silent: Vec<bool> = standing
            .iter()
            .map(|until| until.is_some_and(|u| u > now))
            .collect();
        firebreak_model::node_order::try_order(&silent)
            .into_iter()
            .map(|i| (i, standing[i].is_none()))
            .collect()
    }

    /// Notes how node `index` did: an HTTP answer clears it; a call that timed out
    /// (connecting included) makes it silent for [`SILENT_FOR`]. A refused connection
    /// changes nothing: it costs nothing to ask again, and a service started before its
    /// own node must come back to that node as soon as it listens.
    fn note(&self, index: usize, err: Option<&reqwest::Error>) {
        let until = match err {
            None => None,
            Some(e) if e.is_timeout() => Some(Instant::now() + SILENT_FOR),
            Some(_) => return,
        };
        if let Some(slot) = self
            .silent_until
            .lock()
            .expect("silent_until lock")
            .get_mut(index)
        {
            *slot = until;
        }
    }

    /// Runs a transaction (linearizable: it goes through the leader and the log).
    pub async fn txn(&self, txn: &Txn) -> Result<(bool, Vec<TxnOpResult>), StateError> {
        let body = serde_json::to_value(txn).expect("a txn serializes");
        let mut refused = Vec::new();
        for (index, _) in self.order() {
            let node = &self.nodes[index];
            let sent = self
                .http
                .post(self.tls.url(node, "/v1/txn"))
                .timeout(self.timeout)
                .json(&body)
                .send()
                .await;
            self.note(index, sent.as_ref().err());
            let response = match sent {
                Ok(response) => response,
                Err(err) if err.is_connect() => {
                    refused.push(format!("{node}: {err}"));
                    continue;
                }
                Err(err) => return Err(StateError::OutcomeUnknown(format!("{node}: {err}"))),
            };
            let status = response.status();
            let value: Value = response.json().await.unwrap_or(Value::Null);
            let message = value["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            match status {
                s if s.is_success() => {
                    let parsed: KvResponse = serde_json::from_value(value).map_err(|e| {
                        StateError::OutcomeUnknown(format!("{node}: unreadable answer: {e}"))
                    })?;
                    return match parsed {
                        KvResponse::Txn {
                            succeeded, results, ..
                        } => Ok((succeeded, results)),
                        other => Err(StateError::OutcomeUnknown(format!(
                            "{node}: unexpected answer {other:?}"
                        ))),
                    };
                }
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                    refused.push(format!("{node}: {message}"))
                }
                StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                    return Err(StateError::Invalid(message))
                }
                _ => {
                    return Err(StateError::OutcomeUnknown(format!(
                        "{node} answered {status}: {message}"
                    )))
                }
            }
        }
        Err(StateError::Unavailable(refused.join("; ")))
    }

    /// Reads keys at one revision, through the log (a read-only transaction).
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KvEntry>>, StateError> {
        let txn = Txn {
            success: keys.iter().map(|k| TxnOp::Get { key: k.clone() }).collect(),
            ..Txn::default()
        };
        let (_, results) = self.txn(&txn).await?;
        Ok(results
            .into_iter()
            .map(|r| match r {
                TxnOpResult::Get { entry, .. } => entry,
                _ => None,
            })
            .collect())
    }

    /// Keys under `prefix` after `start_after` (linearizable), up to `limit`, with the
    /// store's revision at the read.
    pub async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, KvEntry)>, u64), StateError> {
        self.range_with(prefix, start_after, limit, false).await
    }

    /// [`StateClient::range`] from the first node's own replica, without asking the
    /// leader: cheap, maybe behind; pair it with a watch from the returned revision.
    pub async fn range_stale(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, KvEntry)>, u64), StateError> {
        self.range_with(prefix, start_after, limit, true).await
    }

    async fn range_with(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        stale: bool,
    ) -> Result<(Vec<(String, KvEntry)>, u64), StateError> {
        let mut query = vec![("prefix", prefix.to_string()), ("limit", limit.to_string())];
        if stale {
            query.push(("consistency", "stale".to_string()));
        }
        if let Some(after) = start_after {
            query.push(("start_after", after.to_string()));
        }
        let value = self.get_json("/v1/kv", &query, None).await?;
        let entries = value["entries"].as_array().cloned().unwrap_or_default();
        let entries = entries
            .into_iter()
            .filter_map(|e| {
                Some((
                    e["key"].as_str()?.to_string(),
                    serde_json::from_value(e).ok()?,
                ))
            })
            .collect();
        Ok((entries, value["revision"].as_u64().unwrap_or(0)))
    }

    /// Waits up to `timeout` for changes under `prefix` from `from_revision`, on the first
    /// node that answers (its local replica). `Ok(None)` means the revision is compacted
    /// there: re-read, then watch from the new revision.
    pub async fn watch(
        &self,
        prefix: &str,
        from_revision: u64,
        timeout: Duration,
    ) -> Result<Option<(Vec<KvEvent>, u64)>, StateError> {
        let query = [
            ("prefix", prefix.to_string()),
            ("from_revision", from_revision.to_string()),
        ];
        match self.get_json("/v1/watch", &query, Some(timeout)).await {
            Ok(value) => {
                let events = serde_json::from_value(value["events"].clone()).unwrap_or_default();
                Ok(Some((
                    events,
                    value["next_revision"].as_u64().unwrap_or(from_revision),
                )))
            }
            Err(StateError::Invalid(message)) if message.contains("compacted") => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Waits up to `timeout` for `service`'s route to pass `after_epoch` (on the first node
    /// that answers); its epoch, and its primary (active-passive).
    pub async fn route(
        &self,
        service: &str,
        after_epoch: u64,
        timeout: Duration,
    ) -> Result<(u64, Option<String>), StateError> {
        let query = [("after_epoch", after_epoch.to_string())];
        let value = self
            .get_json(&format!("/v1/routing/{service}"), &query, Some(timeout))
            .await?;
        let epoch = value["epoch"]
            .as_u64()
            .ok_or_else(|| StateError::Unavailable(format!("no epoch in {value}")))?;
        Ok((epoch, value["primary"].as_str().map(String::from)))
    }

    /// A GET on the first node that answers it: a read within the client's timeout, or a
    /// long-poll that waits up to `wait`, within the wait and [`ANSWER_GRACE`]. Only the
    /// first node given (the service's own site's) gets a long wait, and only while it is
    /// trusted: on any other node a long-poll waits at most [`FALLBACK_WAIT`] (a partition
    /// that starts mid-poll holds the service that long at most, and it is back on its own
    /// node soon), and on a node on probation a read is bounded as such a long-poll.
    async fn get_json(
        &self,
        path: &str,
        query: &[(&str, String)],
        wait: Option<Duration>,
    ) -> Result<Value, StateError> {
        let mut refused = Vec::new();
        for (index, trusted) in self.order() {
            let node = &self.nodes[index];
            let mut request = self.http.get(self.tls.url(node, path)).query(query);
            // Only the own node (given first), trusted, gets the whole wait.
            let whole = index == 0 && trusted;
            let wait = wait.map(|w| if whole { w } else { w.min(FALLBACK_WAIT) });
            let bound = match wait {
                Some(wait) => wait + ANSWER_GRACE,
                None if trusted => self.timeout,
                None => self.timeout.min(FALLBACK_WAIT + ANSWER_GRACE),
            };
            if let Some(wait) = wait {
                request = request.query(&[("timeout_ms", wait.as_millis().to_string())]);
            }
            let answer = match request.timeout(bound).send().await {
                Ok(response) if response.status().is_success() => response.json().await,
                Ok(response) if response.status() == StatusCode::GONE => {
                    self.note(index, None);
                    return Err(StateError::Invalid("compacted".into()));
                }
                Ok(response) => {
                    self.note(index, None);
                    refused.push(format!("{node}: {}", response.status()));
                    continue;
                }
                Err(err) => Err(err),
            };
            self.note(index, answer.as_ref().err());
            match answer {
                Ok(value) => return Ok(value),
                Err(err) if err.is_timeout() => {
                    refused.push(format!("{node}: no answer within {bound:?}"))
                }
                Err(err) => refused.push(format!("{node}: {err}")),
            }
        }
        Err(StateError::Unavailable(refused.join("; ")))
    }
}
