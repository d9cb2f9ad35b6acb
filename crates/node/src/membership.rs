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
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use firebreak_model::control::{ControlCommand, ControlResponse, ControlState};
use firebreak_model::failover::Actor;
use firebreak_model::membership::{self, CatchUp, Change, Plan, Request, View};
use firebreak_model::{NodeId, SiteId};
use serde::Serialize;

use crate::clock::now_ms;
use crate::context::Api;
use crate::membership_step::{self as step, Answer, GroupName, Step};
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
    /// The node added as a learner (not promoted: its site has a voter), if any.
    pub learner: Option<NodeId>,
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
    // Carried out in a task of its own: a caller that gives up (a client timeout) must not
    // cancel a change half-way and leave it marked running.
    let task = {
        let (api, plan) = (api.clone(), plan.clone());
        tokio::spawn(async move {
            let result = carry_out(&api, &plan).await;
            let tombstones = match &result {
                Ok(_) => plan.remove.clone(),
                Err(_) => BTreeSet::new(),
            };
            end(&api, tombstones, result.as_ref().err().cloned()).await;
            result
        })
    };
    let result = task
        .await
        .unwrap_or_else(|e| Err(format!("the change's task failed: {e}")));
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
    let learner = plan
        .add
        .as_ref()
        .filter(|_| !plan.promotes())
        .map(|(id, _)| *id);
    Ok(Json(Outcome {
        change: request.describe(),
        voters: plan.voters,
        removed: plan.remove,
        learner,
        catch_up_ms,
    })
    .into_response())
}

fn blocked(refusal: membership::Refusal) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "blocked", refusal.to_string())
}

/// What the planner needs: the control group's membership, tombstones, the running
/// change, and which sites renew their lease.
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
            .filter(|site| c.failover.renewing(site, now))
            .cloned()
            .collect();
        View {
            voters: voters.clone(),
            learners,
            tombstones: c.membership.tombstones.clone(),
            sites_up,
            running: c.membership.running.clone(),
            leader: api.config.node_id,
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
        leader: api.config.node_id,
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

/// Carries the plan out on both groups; the new voter's catch-up time, if any. A node
/// added here is dropped again if a later step fails.
async fn carry_out(api: &Api, plan: &Plan) -> Result<Option<u64>, String> {
    let Some((id, member)) = &plan.add else {
        change_voters(api, plan).await?;
        return Ok(None);
    };
    let result = async {
        for group in GROUPS {
            let step = Step::AddLearner {
                id: *id,
                member: member.clone(),
            };
            step::run(api, group, &step).await?;
        }
        let started = std::time::Instant::now();
        if plan.promotes() {
            let (control, state) = tokio::join!(
                caught_up(api, GroupName::Control, *id),
                caught_up(api, GroupName::State, *id)
            );
            control.and(state)?;
        }
        let catch_up_ms = plan
            .promotes()
            .then(|| started.elapsed().as_millis() as u64);
        change_voters(api, plan).await?;
        Ok(catch_up_ms)
    }
    .await;
    if result.is_err() {
        let drop = Step::RemoveNodes {
            ids: BTreeSet::from([*id]),
        };
        for group in GROUPS {
            if let Err(err) = step::run(api, group, &drop).await {
                tracing::warn!(node = %id, cause = %err, "could not drop the node of a failed change");
            }
        }
    }
    result
}

/// Both groups, the control group first.
const GROUPS: [GroupName; 2] = [GroupName::Control, GroupName::State];

/// Sets both groups' voters to the plan's, then drops the removed nodes.
async fn change_voters(api: &Api, plan: &Plan) -> Result<(), String> {
    let promote = plan
        .add
        .as_ref()
        .filter(|_| plan.promotes())
        .map(|(id, _)| *id);
    for group in GROUPS {
        let step = Step::Voters {
            remove: plan.remove.clone(),
            promote,
        };
        step::run(api, group, &step).await?;
    }
    for group in GROUPS {
        let step = Step::RemoveNodes {
            ids: plan.remove.clone(),
        };
        step::run(api, group, &step).await?;
    }
    Ok(())
}

/// Waits until `id` has kept up with `group`'s leader for the stable period.
async fn caught_up(api: &Api, group: GroupName, id: NodeId) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
    let mut catch_up = CatchUp::default();
    loop {
        let lag = match step::run(api, group, &Step::Lag { id }).await {
            Ok(Answer::Lag(lag)) => lag,
            Ok(Answer::Done) => None,
            // The state leader may move while the learner catches up: ask again.
            Err(err) => {
                tracing::debug!(cause = %err, "learner lag not known");
                None
            }
        };
        if catch_up.observe(lag, now_ms()) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "node {id} did not catch up with the {group:?} group within {} s (it trails by {}); is it running and reachable at its address?",
                CATCH_UP_TIMEOUT.as_secs(),
                lag.map_or("everything".to_string(), |l| format!("{l} entries")),
            ));
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
}
