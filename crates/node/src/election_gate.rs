//! Elections only when they can help: a pre-vote in spirit, for openraft 0.9, which has
//! none. A node that lost touch with its leader may start an election only once a majority
//! of the voters (itself included, in each configuration while a change is joint) answer
//! that they hear no leader either. The decision is `firebreak_model::election_gate`'s; this
//! module asks the questions and throws the switch. A node cut off from the others
//! therefore keeps its term instead of raising it at every election timeout, and does not
//! force an election on the healthy leader when it comes back; and a leader that a
//! majority cannot hear is replaced even while one voter still hears it (a partial
//! partition), or one voter claims to.
//!
//! ```text
//!   every heartbeat, per group, on a voter that is not the leader:
//!     heard from a leader within election_timeout_min ─► elect off (nothing to do)
//!     else ask every other voter GET /v1/internal/leader/{group} (peer listener),
//!       each with an election_timeout_min to answer
//!       a majority (each configuration's) hears no leader ─► elect on  (openraft elects on its timer)
//!       otherwise                                         ─► elect off
//! ```
//!
//! "Heard from a leader" is an AppendEntries from the leader this node accepted
//! ([`LeaderContact`], recorded by the RPC handler), or, on the leader, its quorum contact.
//! The switch is openraft's runtime `elect`; openraft still waits for its own election
//! timeout, so a dead leader is replaced as fast as before.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use firebreak_model::NodeId;
use firebreak_store::Machine;
use openraft::ServerState;
use serde::{Deserialize, Serialize};

use crate::context::Api;
use crate::group::Group;

/// When this node last accepted an AppendEntries from a leader, per group.
#[derive(Debug, Clone)]
pub struct LeaderContact {
    anchor: Instant,
    /// Milliseconds after `anchor`, plus one (0: never).
    last: Arc<AtomicU64>,
}

impl Default for LeaderContact {
    fn default() -> Self {
        Self {
            anchor: Instant::now(),
            last: Arc::default(),
        }
    }
}

impl LeaderContact {
    /// Records an AppendEntries accepted from the leader.
    pub fn heard(&self) {
        let ms = self.anchor.elapsed().as_millis() as u64 + 1;
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long ago the leader was last heard from (`None`: never).
    pub fn since(&self) -> Option<Duration> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                self.anchor
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms - 1)),
            ),
        }
    }
}

/// What a voter tells another about its leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaderView {
    /// Whether it leads with a quorum, or heard from a leader within an election timeout.
    pub hears_leader: bool,
    pub term: u64,
}

/// This node's view of `group`'s leader: whether it is in contact with one (it leads with
/// a quorum, or heard from the leader within an election timeout).
fn view<M: Machine>(group: &Group<M>) -> LeaderView {
    LeaderView {
        hears_leader: group.in_contact(),
        term: group.raft.metrics().borrow().current_term,
    }
}

/// `GET /v1/internal/leader/{group}` on the peer listener (members only).
pub(crate) async fn leader(State(api): State<Arc<Api>>, Path(group): Path<String>) -> Response {
    match group.as_str() {
        "control" => Json(view(&api.control)).into_response(),
        "state" => Json(view(&api.state)).into_response(),
        _ => (axum::http::StatusCode::NOT_FOUND, "no such group").into_response(),
    }
}

/// Gates `group`'s elections for as long as the node runs.
pub async fn run<M: Machine>(api: Arc<Api>, group: Group<M>) {
    let timings = group.timings();
    let mut tick = tokio::time::interval(timings.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut enabled = None;
    loop {
        tick.tick().await;
        let elect = may_elect(&api, &group).await;
        if enabled != Some(elect) {
            tracing::debug!(group = group.name(), elect, "election gate");
            group.raft.runtime_config().elect(elect);
            enabled = Some(elect);
        }
    }
}

/// Whether `group` may elect now (see the module docs).
async fn may_elect<M: Machine>(api: &Api, group: &Group<M>) -> bool {
    let metrics = group.raft.metrics().borrow().clone();
    if metrics.state == ServerState::Leader {
        return true;
    }
    let min = group.timings().election_timeout_min;
    if group.contact.since().is_some_and(|since| since < min) {
        return false;
    }
    let membership = metrics.membership_config.membership().clone();
    let configs: Vec<BTreeSet<NodeId>> = membership.get_joint_config().clone();
    if !configs.iter().any(|voters| voters.contains(&metrics.id)) {
        return false;
    }
    let voters: BTreeSet<NodeId> = configs.iter().flatten().copied().collect();
    // An answer slower than a heartbeat is still an answer: openraft waits out its own
    // election timeout after the switch anyway, and on a WAN link a probe that needs a new
    // connection takes several round trips.
    let patience = min;
    let asks = voters
        .iter()
        .filter(|id| **id != metrics.id)
        .filter(|id| !crate::sabotage::rpc_cut(group.name(), metrics.id, **id, "leader"))
        .filter_map(|id| membership.get_node(id).map(|member| (*id, member)))
        .map(|(id, member)| async move {
            let view = ask(api, &member.addr, group.name(), patience).await;
            (id, view.map(|v| v.hears_leader))
        });
    let answers = futures::future::join_all(asks).await;
    firebreak_model::election_gate::may_elect(metrics.id, &configs, &answers)
}

/// Asks the voter at `addr` whether it hears a leader; `None` if it did not answer in time.
async fn ask(api: &Api, addr: &str, group: &str, timeout: Duration) -> Option<LeaderView> {
    let url = api
        .peer_tls
        .url(addr, &format!("/v1/internal/leader/{group}"));
    let response = api.forward.get(url).timeout(timeout).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    crate::peer_answer::json_bounded(response, crate::peer_answer::MAX_SMALL_ANSWER_BYTES)
        .await
        .ok()
}
