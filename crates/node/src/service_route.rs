//! `GET /v1/routing/{service}` on the client listener: a service's own route, for its
//! instances to fence writes with (see the payments service). A long poll with
//! `after_epoch=N` answers once the epoch is past N, or at `timeout_ms` (at most 30 s)
//! with the route as it is.
//!
//! Who may call it: a credential whose grant covers `<service>/` (that service's
//! certificate, or an operator); 401 without one, 403 for another service's.
//!
//! Thousands of instances wait here at once, so they wait on [`watch_routes`], which
//! changes only when a route does, not on every entry the control group applies (lease
//! renewals and health reports, several a second): 10,000 waiting watchers cost the three
//! nodes 2.3 s of CPU per 10 s when every applied entry woke them.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use firebreak_model::control::ControlState;
use firebreak_model::grant::Grant;
use firebreak_model::SiteId;
use firebreak_store::MachineReader;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::access;
use crate::api::{long_poll, watcher_permit};
use crate::context::Api;
use crate::reply::{query, ApiError, ApiResult};

/// Longest wait of one long poll.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// A service's route as its instances see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRoute {
    pub service: String,
    pub epoch: u64,
    pub serving: Vec<SiteId>,
    /// The primary, for active-passive.
    pub primary: Option<SiteId>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteQuery {
    after_epoch: Option<u64>,
    timeout_ms: Option<u64>,
}

pub(crate) async fn service_route(
    State(api): State<Arc<Api>>,
    grant: Option<Extension<Grant>>,
    Path(service): Path<String>,
    uri: Uri,
) -> ApiResult<Response> {
    let grant = access::grant_of(grant)?;
    let prefix = format!("{service}/");
    if !grant.allows_prefix(&prefix) {
        return Err(access::denied(&grant, &prefix));
    }
    let q: RouteQuery = query(&uri)?;
    let _permit = watcher_permit(&api, &grant)?;
    let after = q.after_epoch.unwrap_or(0);
    let wait = Duration::from_millis(q.timeout_ms.unwrap_or(0)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let route = long_poll(api.routes.clone(), deadline, |expired| {
        let route = current(&api, &service);
        match route {
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("service {service} has no route (not in the applied topology)"),
            )),
            Some(route) if route.epoch > after || expired => Ok(Some(route)),
            Some(_) => Ok(None),
        }
    })
    .await?;
    Ok(Json(route).into_response())
}

fn current(api: &Api, service: &str) -> Option<ServiceRoute> {
    api.control.reader.read(|c| {
        let route = c.failover.routing.get(service)?;
        Some(ServiceRoute {
            service: service.to_string(),
            epoch: route.epoch,
            serving: route.serving.iter().cloned().collect(),
            primary: route.primary.clone(),
        })
    })
}

/// A watch that changes whenever any service's route does (its epoch, or the service
/// appearing or going): one task per node follows the applied entries and compares a
/// fingerprint of every route's epoch.
pub(crate) fn watch_routes(reader: MachineReader<ControlState>) -> watch::Receiver<u64> {
    let fingerprint = |c: &ControlState| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for (service, route) in &c.failover.routing {
            (service, route.epoch).hash(&mut hasher);
        }
        hasher.finish()
    };
    let (tx, rx) = watch::channel(reader.read(fingerprint));
    let mut applied = reader.subscribe();
    // Ends once nobody holds a receiver (the node's API is gone): the reader it holds
    // keeps the store open, and the applied-index sender lives in that store.
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
            let now = reader.read(fingerprint);
            tx.send_if_modified(|was| std::mem::replace(was, now) != now);
        }
    });
    rx
}
