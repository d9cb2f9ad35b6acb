//! Runtime membership, carried out on the control leader: `POST /v1/membership` on the
//! admin listener (operator certificate or token; audited), for `firebreak node add|remove`
//! and `firebreak site add|remove|replace`.
//!
//! ```text
//!   request ─► validate ─► not the control leader? ─► 503 not_leader (the CLI tries the next)
//!           ─► plan (firebreak_model::membership; a refusal is 409 naming its rule)
//!           ─► BeginMembership (the control state runs one change at a time)
//!           ─► add_learner to both groups ─► caught up? (lag ≤ 100 entries for 2 s)
//!           ─► change_membership: the plan's voters, removed nodes dropped
//!           ─► EndMembership (removed ids tombstoned) ─► 200 with what was done
//! ```
//!
//! A change that fails part-way ends with its error in the audit log, and the membership
//! is what openraft committed up to then (a learner that never caught up is dropped
//! again). The request waits for the whole change, at most [`CATCH_UP_TIMEOUT`] for the
//! catch-up: callers need a long timeout (the CLI sets one).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use firebreak_model::control::{ControlCommand, ControlResponse, ControlState};
use firebreak_model::failover::Actor;
use firebreak_model::membership::{self, CatchUp, Change, Plan, Request, View};
use firebreak_model::{Member, NodeId, SiteId};
use firebreak_store::Machine;
use openraft::ChangeMembers;
use serde::Serialize;

use crate::access::PeerNode;
use crate::clock::now_ms;
use crate::context::Api;
use crate::group::Group;
use crate::reply::{read_json, ApiError, ApiResult};

/// Longest a new voter may take to catch up before the change is given up.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);
/// How often a learner's lag is looked at.
const CATCH_UP_POLL: Duration = Duration::from_millis(100);

/// What a finished change did.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub change: String,
    pub voters: BTreeSet<NodeId>,
    pub removed: BTreeSet<NodeId>,
    /// How long the new voter took to catch up, if one was promoted.
    pub catch_up_ms: Option<u64>,
}

/// `POST /v1/membership`: plan and carry out an operator's membership request.
pub async fn change(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let actor = crate::operator::authorize(&api, &headers)?;
    let (_, request): (_, Request) = read_json(body, api.config.api.max_body_bytes).await?;
    request
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    if let Err(err) = api.control.linearizable_barrier().await {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            format!("membership changes run on the control leader: {err}; try the leader's admin listener"),
        ));
    }
    let view = view(&api);
    let plan = membership::plan(&view, &request, now_ms()).map_err(blocked)?;
    begin(&api, &request, actor).await?;
    let result = carry_out(&api, &plan).await;
    let tombstones = match &result {
        Ok(_) => plan.remove.clone(),
        Err(_) => BTreeSet::new(),
    };
    end(&api, tombstones, result.as_ref().err().cloned()).await;
    let catch_up_ms = result.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "membership_failed",
            format!(
                "{}: {e}; see `firebreak status` for the membership now",
                request.describe()
            ),
        )
    })?;
    Ok(Json(Outcome {
        change: request.describe(),
        voters: plan.voters,
        removed: plan.remove,
        catch_up_ms,
    })
    .into_response())
}

fn blocked(refusal: membership::Refusal) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "blocked", refusal.to_string())
}

/// What the planner needs: the control group's membership, tombstones, the running
/// change, and which sites renew their lease (all of them before a topology is applied).
fn view(api: &Api) -> View {
    let metrics = api.control.metrics();
    let membership = metrics.membership_config.membership();
    let site_of = |id: &NodeId| {
        membership
            .get_node(id)
            .map_or_else(SiteId::default, |m| m.site.clone())
    };
    let voters: BTreeMap<NodeId, SiteId> = membership
        .voter_ids()
        .map(|id| (id, site_of(&id)))
        .collect();
    let learners = membership
        .learner_ids()
        .map(|id| (id, site_of(&id)))
        .collect();
    let now = now_ms();
    api.control.reader.read(|c: &ControlState| {
        let sites_up = voters
            .values()
            .filter(|site| c.failover.topology.is_none() || c.failover.site_up(site, now))
            .cloned()
            .collect();
        View {
            voters: voters.clone(),
            learners,
            tombstones: c.membership.tombstones.clone(),
            sites_up,
            running: c.membership.running.clone(),
        }
    })
}

async fn propose(api: &Api, mut command: ControlCommand) -> ApiResult<ControlResponse> {
    command
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    command.stamp(now_ms());
    Ok(api.control.write(command).await?)
}

async fn begin(api: &Api, request: &Request, actor: Actor) -> ApiResult<()> {
    let change = Change {
        what: request.describe(),
        actor,
        at_ms: 0,
    };
    match propose(api, ControlCommand::BeginMembership { change }).await? {
        ControlResponse::MembershipRefused(refusal) => Err(blocked(refusal)),
        _ => Ok(()),
    }
}

async fn end(api: &Api, tombstones: BTreeSet<NodeId>, error: Option<String>) {
    let error = error.map(|e| e.chars().take(1000).collect());
    let command = ControlCommand::EndMembership {
        tombstones,
        error,
        at_ms: 0,
    };
    if let Err(err) = propose(api, command).await {
        // The record lapses by itself after MAX_CHANGE_MS; the audit names the start.
        tracing::warn!(cause = ?err, "could not record the end of a membership change");
    }
}

/// Carries the plan out on both groups; the new voter's catch-up time, if any.
async fn carry_out(api: &Api, plan: &Plan) -> Result<Option<u64>, String> {
    let mut catch_up_ms = None;
    if let Some((id, member)) = &plan.add {
        add_learner(&api.control, *id, member).await?;
        add_learner(&api.state, *id, member).await?;
        if plan.promotes() {
            let started = std::time::Instant::now();
            let caught_up = async {
                caught_up(&api.control, *id).await?;
                caught_up(&api.state, *id).await
            };
            if let Err(err) = caught_up.await {
                let drop = BTreeSet::from([*id]);
                let _ = remove_nodes(&api.state, &drop).await;
                let _ = remove_nodes(&api.control, &drop).await;
                return Err(err);
            }
            catch_up_ms = Some(started.elapsed().as_millis() as u64);
        }
    }
    change_voters(&api.control, plan).await?;
    change_voters(&api.state, plan).await?;
    remove_nodes(&api.state, &plan.remove).await?;
    remove_nodes(&api.control, &plan.remove).await?;
    Ok(catch_up_ms)
}

async fn add_learner<M: Machine>(
    group: &Group<M>,
    id: NodeId,
    member: &Member,
) -> Result<(), String> {
    group
        .raft
        .add_learner(id, member.clone(), false)
        .await
        .map(|_| ())
        .map_err(|e| {
            format!(
                "adding node {id} as a learner of the {} group failed: {e}",
                group.name()
            )
        })
}

/// Waits until `id` has kept up with the leader of `group` for the stable period.
async fn caught_up<M: Machine>(group: &Group<M>, id: NodeId) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
    let mut catch_up = CatchUp::default();
    loop {
        let metrics = group.metrics();
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map(|log| log.index);
        let lag = matched.map(|m| metrics.last_log_index.unwrap_or(0).saturating_sub(m));
        if catch_up.observe(lag, now_ms()) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "node {id} did not catch up with the {} group within {} s (it trails by {}); is it running and reachable at its address?",
                group.name(),
                CATCH_UP_TIMEOUT.as_secs(),
                lag.map_or("everything".to_string(), |l| format!("{l} entries")),
            ));
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
}

/// Makes `group`'s voters the plan's: its own voters, less the removed ones, plus the
/// promoted one (the state group may have fewer voters than the control group).
async fn change_voters<M: Machine>(group: &Group<M>, plan: &Plan) -> Result<(), String> {
    let current: BTreeSet<NodeId> = group
        .metrics()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    let mut next: BTreeSet<NodeId> = current.difference(&plan.remove).copied().collect();
    if let Some((id, _)) = plan.add.as_ref().filter(|_| plan.promotes()) {
        next.insert(*id);
    }
    if next == current {
        return Ok(());
    }
    group
        .raft
        .change_membership(ChangeMembers::ReplaceAllVoters(next), false)
        .await
        .map(|_| ())
        .map_err(|e| {
            format!(
                "changing the voters of the {} group failed: {e}",
                group.name()
            )
        })
}

/// Drops `ids` that are still learners of `group`.
async fn remove_nodes<M: Machine>(group: &Group<M>, ids: &BTreeSet<NodeId>) -> Result<(), String> {
    let membership = group.metrics().membership_config.membership().clone();
    let present: BTreeSet<NodeId> = ids
        .iter()
        .filter(|id| membership.get_node(id).is_some())
        .copied()
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    group
        .raft
        .change_membership(ChangeMembers::RemoveNodes(present), false)
        .await
        .map(|_| ())
        .map_err(|e| format!("removing nodes from the {} group failed: {e}", group.name()))
}

/// What the cluster knows of a node id, for that node starting on an empty disk.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
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
