//! A node's id at start: the cluster must not know it as removed, and an empty disk must
//! not come back under an id that held log entries (it has forgotten its votes and could
//! vote twice in one term; RAFT-NOTES.md).
//!
//! ```text
//!   start ─► ask every peer, at once: GET /v1/internal/known/{my id} (peer listener)
//!     a peer says tombstoned            ─► refuse: the id was removed
//!     disk empty and a peer says seen   ─► refuse: the votes are lost
//!     otherwise (or nobody answers)     ─► start
//! ```
//!
//! Peers that do not answer are skipped: at a cluster's first start nobody knows anything
//! yet. "Seen" is recorded by the control leader once the node holds log entries, so a
//! disk lost before that is not caught.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use firebreak_model::NodeId;
use firebreak_store::Machine;
use serde::{Deserialize, Serialize};

use crate::access::PeerNode;
use crate::context::Api;
use crate::group::Group;
use crate::reply::{ApiError, ApiResult};
use crate::{Error, NodeConfig, Result};

/// How long a starting node waits for the peers' answers about its id.
const KNOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a group has never voted nor held a log entry here: a fresh (or lost) disk.
pub fn is_empty<M: Machine>(group: &Group<M>) -> bool {
    let metrics = group.metrics();
    metrics.vote.leader_id().term == 0 && metrics.last_log_index.is_none()
}

/// Asks the peers what they know of this node's id; refuses a removed id, and an id
/// that held log entries before when the disk is `empty`.
pub async fn check(config: &NodeConfig, tls: &firebreak_tls::ClientTls, empty: bool) -> Result<()> {
    let http = tls
        .apply(reqwest::Client::builder())
        .timeout(KNOWN_TIMEOUT)
        .build()
        .map_err(|e| Error::Tls(e.to_string()))?;
    if crate::sabotage::id_check_off() {
        tracing::warn!("sabotage: this node's id is not checked against the cluster");
        return Ok(());
    }
    let me = config.node_id;
    let asks = config.peers.iter().filter(|p| p.id != me).map(|peer| {
        let url = tls.url(&peer.addr, &format!("{}{me}", crate::access::KNOWN_PATH));
        let http = &http;
        async move { (peer.id, ask(http, url).await) }
    });
    for (peer, answer) in futures::future::join_all(asks).await {
        let known = match answer {
            Ok(known) => known,
            Err(why) => {
                tracing::debug!(%peer, cause = %why, "peer did not say what it knows of this id");
                continue;
            }
        };
        let why = if known.tombstoned {
            "was removed from the cluster"
        } else if known.seen && empty {
            "held log entries before, and this data dir is empty (a lost or replaced disk)"
        } else {
            continue;
        };
        return Err(Error::IdRefused(format!(
            "node id {me} {why}, as node {peer} of cluster {:?} says; node ids are never reused, so \
             this node must not run under id {me} again. To bring a node back to site {}: \
             `firebreak node remove {me}` (if still a member), then \
             `firebreak node add --id <new id> --site {} --addr <peer host:port>`, and start it \
             on an empty data dir with node_id: <new id> and join: true (docs/membership.md)",
            config.cluster, config.site, config.site
        )));
    }
    Ok(())
}

async fn ask(http: &reqwest::Client, url: String) -> std::result::Result<Known, String> {
    let response = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    crate::peer_answer::json_bounded(response, crate::peer_answer::MAX_SMALL_ANSWER_BYTES)
        .await
        .map_err(|e| e.to_string())
}

/// What the cluster knows of a node id, for that node starting.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Known {
    /// In either group's membership now.
    pub member: bool,
    /// Seen holding log entries before: an empty disk under this id has lost its votes.
    pub seen: bool,
    /// Removed before: never to be used again.
    pub tombstoned: bool,
}

/// `GET /v1/internal/known/{id}` on the peer listener: a node asks about its own id only.
pub async fn known(
    State(api): State<Arc<Api>>,
    caller: Option<axum::Extension<PeerNode>>,
    Path(id): Path<u64>,
) -> ApiResult<Json<Known>> {
    // Only plain-text mode (no certificates, everyone let in) has no caller.
    let caller = caller.map(|axum::Extension(PeerNode(id))| id);
    if let Some(caller) = caller.filter(|c| *c != NodeId(id)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("node {caller} may ask about its own id only"),
        ));
    }
    let id = NodeId(id);
    let member = [api.control.metrics(), api.state.metrics()]
        .iter()
        .any(|m| m.membership_config.membership().get_node(&id).is_some());
    let (seen, tombstoned) = api.control.reader.read(|c| {
        (
            c.membership.seen.contains(&id),
            c.membership.tombstones.contains(&id),
        )
    });
    Ok(Json(Known {
        member,
        seen,
        tombstoned,
    }))
}
