//! One step of a membership change on one Raft group, run by that group's leader.
//!
//! The control leader carries a change out (`crate::membership`), but the state group may
//! be led by another node, and only a group's leader can change its membership. So each
//! step runs on this node when it leads the group, and is otherwise sent to the group's
//! leader at `POST /v1/internal/membership/{group}` (peer listener), which takes it only
//! from the node it knows as the control leader.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use firebreak_model::{Member, NodeId};
use firebreak_store::Machine;
use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};

use crate::access::PeerNode;
use crate::context::Api;
use crate::group::Group;
use crate::peer_answer;
use crate::reply::{ApiError, ApiResult};

/// Which group a step is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupName {
    Control,
    State,
}

/// One membership step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Add a learner (or nothing, if it is already a member).
    AddLearner { id: NodeId, member: Member },
    /// How far the node trails the leader, in entries (`None`: it has acknowledged nothing).
    Lag { id: NodeId },
    /// Voters := the group's voters, less `remove`, plus `promote`.
    Voters {
        remove: BTreeSet<NodeId>,
        promote: Option<NodeId>,
    },
    /// Drop these nodes (no longer voters) from the group.
    RemoveNodes { ids: BTreeSet<NodeId> },
}

/// A step's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Done,
    Lag(Option<u64>),
}

/// How long a step waits for its group to have a leader that takes it (an election, a
/// leader that just moved). Every step is idempotent, so trying again is safe.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two tries of a step.
const STEP_RETRY: Duration = Duration::from_millis(100);

/// Runs `step` on `group`'s leader, trying again while the group has no leader or its
/// leader moves, for at most [`STEP_TIMEOUT`]; the last error after that.
pub async fn run(api: &Api, group: GroupName, step: &Step) -> Result<Answer, String> {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        match run_once(api, group, step).await {
            Err(err) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(?group, cause = %err, "membership step not taken yet");
                tokio::time::sleep(STEP_RETRY).await;
            }
            done => return done,
        }
    }
}

/// One try of `step` on `group`'s leader: here, or at the leader's internal endpoint.
async fn run_once(api: &Api, group: GroupName, step: &Step) -> Result<Answer, String> {
    let leader = match group {
        // The control leader carries every change out.
        GroupName::Control => return locally(&api.control, step).await,
        GroupName::State => api.state.metrics(),
    };
    if leader.state == ServerState::Leader {
        return locally(&api.state, step).await;
    }
    let Some(id) = leader.current_leader else {
        return Err(format!("the {group:?} group has no leader now; try again"));
    };
    let member = leader
        .membership_config
        .membership()
        .get_node(&id)
        .cloned()
        .ok_or_else(|| format!("the {group:?} group's leader {id} is not in its membership"))?;
    let path = format!("/v1/internal/membership/{}", name(group));
    let url = api.peer_tls.url(&member.addr, &path);
    let response = api
        .forward
        .post(url)
        .json(step)
        .send()
        .await
        .map_err(|e| format!("the {group:?} group's leader {id} did not answer: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = peer_answer::text_at_most(response, peer_answer::MAX_ERROR_TEXT_BYTES).await;
        return Err(format!(
            "the {group:?} group's leader {id} answered {status}: {body}"
        ));
    }
    peer_answer::json_bounded(response, peer_answer::MAX_SMALL_ANSWER_BYTES)
        .await
        .map_err(|e| format!("the {group:?} group's leader {id}: {e}"))
}

fn name(group: GroupName) -> &'static str {
    match group {
        GroupName::Control => "control",
        GroupName::State => "state",
    }
}

/// Runs `step` on `group`, which this node leads.
async fn locally<M: Machine>(group: &Group<M>, step: &Step) -> Result<Answer, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        format!("{what} on the {} group failed: {e}", group.name())
    };
    let metrics = group.metrics();
    let membership = metrics.membership_config.membership().clone();
    let change = match step {
        Step::AddLearner { id, member } => {
            if membership.get_node(id).is_some() {
                return Ok(Answer::Done);
            }
            let added = group.raft.add_learner(*id, member.clone(), false).await;
            return added
                .map(|_| Answer::Done)
                .map_err(|e| fail(&format!("adding node {id} as a learner"), &e));
        }
        Step::Lag { id } => {
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|log| log.index);
            let last = metrics.last_log_index.unwrap_or(0);
            return Ok(Answer::Lag(matched.map(|m| last.saturating_sub(m))));
        }
        Step::Voters { remove, promote } => {
            let current: BTreeSet<NodeId> = membership.voter_ids().collect();
            let mut next: BTreeSet<NodeId> = current.difference(remove).copied().collect();
            next.extend(promote);
            if next == current {
                return Ok(Answer::Done);
            }
            ChangeMembers::ReplaceAllVoters(next)
        }
        Step::RemoveNodes { ids } => {
            let present: BTreeSet<NodeId> = ids
                .iter()
                .filter(|id| membership.get_node(id).is_some())
                .copied()
                .collect();
            if present.is_empty() {
                return Ok(Answer::Done);
            }
            ChangeMembers::RemoveNodes(present)
        }
    };
    group
        .raft
        .change_membership(change, false)
        .await
        .map(|_| Answer::Done)
        .map_err(|e| fail("changing the membership", &e))
}

/// `POST /v1/internal/membership/{group}`: a step from the control leader.
pub async fn internal(
    State(api): State<Arc<Api>>,
    caller: Option<Extension<PeerNode>>,
    Path(group): Path<String>,
    Json(step): Json<Step>,
) -> ApiResult<Json<Answer>> {
    let control_leader = api.control.metrics().current_leader;
    // Only plain-text mode (no certificates) has no caller to check.
    if let Some(Extension(PeerNode(caller))) = caller {
        if Some(caller) != control_leader {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("membership steps come from the control leader; node {caller} is not it"),
            ));
        }
    }
    let result = match group.as_str() {
        "state" => locally(&api.state, &step).await,
        "control" => locally(&api.control, &step).await,
        _ => {
            return Err(ApiError::invalid(format!(
                "no group {group:?}: control or state"
            )))
        }
    };
    result
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "membership_step", e))
}
