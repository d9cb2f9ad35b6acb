//! What every handler shares: the config, both groups, the batched state writer, the
//! operator tokens, the counters, this node's keys, and the HTTP clients it uses toward its
//! peers (mutual TLS) and service instances. The handlers live by what they serve (`api`,
//! `operator`, `gateway`, `metrics`), their routers by listener in `routes`.

use std::sync::Arc;
use std::time::Duration;

use firebreak_model::control::{ControlCommand, ControlResponse, ControlState};
use firebreak_model::kv::KvStore;

use crate::auth::Tokens;
use crate::batch::StateWriter;
use crate::counters::Counters;
use crate::group::{Group, GroupError};
use crate::NodeConfig;

/// What every handler shares.
pub struct Api {
    pub config: NodeConfig,
    pub control: Group<ControlState>,
    pub state: Group<KvStore>,
    /// The batched write path of the state group.
    pub state_writer: StateWriter,
    /// Operator tokens.
    pub tokens: Tokens,
    /// Failovers and blocked changes, for /metrics.
    pub counters: Counters,
    /// The recorder /metrics renders.
    pub(crate) metrics: crate::metrics::Registry,
    pub(crate) forward: reqwest::Client,
    /// How this node reaches its peers' peer listeners (its own certificate, the CA; the
    /// server must present a node certificate of this cluster).
    pub(crate) peer_tls: firebreak_tls::ClientTls,
    /// This node's certificate and key (none in plain-text mode), for their expiry.
    pub keys: Option<Arc<firebreak_tls::Keys>>,
    /// The gateway's pool to service instances (no overall timeout: streams pass through).
    pub(crate) gateway: reqwest::Client,
    /// Whether the control group is in reach, changing only on transitions: what the
    /// gateway passes through ends when it turns false.
    pub(crate) contact: tokio::sync::watch::Receiver<bool>,
    pub(crate) watchers: Arc<crate::watchers::Watchers>,
    /// Changes whenever a route does: what routing long polls wait on.
    pub(crate) routes: tokio::sync::watch::Receiver<u64>,
}

impl Api {
    /// Builds the API state of a node.
    pub fn new(
        config: NodeConfig,
        control: Group<ControlState>,
        state: Group<KvStore>,
        tokens: Tokens,
        peer_tls: firebreak_tls::ClientTls,
        service_tls: firebreak_tls::ClientTls,
        keys: Option<Arc<firebreak_tls::Keys>>,
    ) -> Self {
        let timeout =
            Duration::from_millis(config.api.write_timeout_ms.max(config.api.read_timeout_ms))
                + Duration::from_secs(2);
        let forward = peer_tls
            .apply(reqwest::Client::builder())
            .timeout(timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(128)
            .build()
            .expect("reqwest client builds with static options");
        let watchers = crate::watchers::Watchers::new(config.api.max_watchers);
        let state_writer = StateWriter::spawn(state.clone(), config.api.max_inflight_writes);
        let contact = crate::contact::watch_contact(control.clone());
        let routes = crate::service_route::watch_routes(control.reader.clone());
        Self {
            config,
            control,
            state,
            state_writer,
            tokens,
            counters: Counters::default(),
            metrics: crate::metrics::Registry::default(),
            forward,
            peer_tls,
            keys,
            gateway: service_tls
                .apply_any_scheme(reqwest::Client::builder())
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .build()
                .expect("reqwest client builds with static options"),
            contact,
            watchers,
            routes,
        }
    }
}

impl Api {
    /// Whether this node runs without TLS (`tls.plaintext_for_debugging`).
    pub fn plaintext(&self) -> bool {
        self.keys.is_none()
    }

    /// Proposes a control command from any node: on the leader it is stamped with the
    /// leader's clock and written; elsewhere it goes to the leader's internal endpoint,
    /// which does the same.
    pub async fn propose_control(
        &self,
        mut command: ControlCommand,
    ) -> Result<ControlResponse, GroupError> {
        command.stamp(crate::clock::now_ms());
        match self.control.write(command.clone()).await {
            Err(GroupError::NotLeader {
                leader: Some((_, member)),
            }) => {
                let url = self.peer_tls.url(&member.addr, "/v1/internal/control");
                let response = self
                    .forward
                    .post(url)
                    .json(&command)
                    .send()
                    .await
                    .map_err(|e| GroupError::Unavailable {
                        reason: format!("leader at {} did not answer: {e}", member.addr),
                    })?;
                if !response.status().is_success() {
                    let reason =
                        format!("leader at {} answered {}", member.addr, response.status());
                    return Err(GroupError::Unavailable { reason });
                }
                crate::peer_answer::json_bounded(response, crate::network::MAX_RAFT_BODY_BYTES)
                    .await
                    .map_err(|e| GroupError::Unavailable {
                        reason: format!("leader at {}: {e}", member.addr),
                    })
            }
            other => other,
        }
    }
}
