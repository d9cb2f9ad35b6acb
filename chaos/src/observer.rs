//! The observer: polls every node for the leader and term it knows per Raft group, and the
//! routing table, and records what changed in the history (for the control checker and
//! the report's timeline), and per Raft group whether some node led it with a quorum
//! behind it and who its voters and learners were (for the quorum checker and the
//! report's membership over time).
//!
//! It records a `Leader` event only when a node's (term, leader) for a group changes, an
//! `Elected` event for each entry new in a node's election journal (the committed votes it
//! saved, bounded on the node), and a `Route` event only when a service's epoch changes,
//! so the history stays small. A node
//! that does not answer within [`POLL_TIMEOUT`] is skipped for that round (it may be dead
//! or paused: that is the drill's business, not the observer's).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use crate::history::{Event, History};

/// How often every node is asked.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How long one answer may take.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(500);

/// Polls until `stop` turns true; `first_round` fires once the first round is recorded
/// (so that the drill's workload starts after the leaders of the start are known).
pub async fn observe(
    nodes: Vec<String>,
    tls: firebreak_tls::ClientTls,
    history: History,
    mut stop: watch::Receiver<bool>,
    first_round: tokio::sync::oneshot::Sender<()>,
) {
    let mut first_round = Some(first_round);
    let http = tls
        .apply(reqwest::Client::builder())
        .timeout(POLL_TIMEOUT)
        .build()
        .expect("reqwest client builds with static options");
    let mut leaders: BTreeMap<(u64, String), (u64, u64)> = BTreeMap::new();
    let mut elected: BTreeSet<(u64, String, u64, u64)> = BTreeSet::new();
    let mut epochs: BTreeMap<String, u64> = BTreeMap::new();
    let mut groups = Groups::default();
    loop {
        let round = futures_round(&http, &tls, &nodes).await;
        groups.record(&round, &history);
        for (cluster, routing) in round {
            if let Some(info) = cluster {
                record_leaders(&info, &history, &mut leaders);
                record_elections(&info, &history, &mut elected);
            }
            if let Some(routing) = routing {
                record_routes(&routing, &history, &mut epochs);
            }
        }
        if let Some(first) = first_round.take() {
            let _ = first.send(());
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// What the observer last recorded of each group: whether it had a leader with a quorum,
/// and its voters and learners.
#[derive(Default)]
struct Groups {
    quorum: BTreeMap<String, bool>,
    membership: BTreeMap<String, (Vec<u64>, Vec<u64>)>,
}

/// The groups every node hosts.
const GROUPS: [&str; 2] = ["control", "state"];

impl Groups {
    /// Records, per group, a change of quorum (some node led it with a quorum behind it
    /// this round) and of membership (as the leader that answered reported it).
    fn record(&mut self, round: &[(Option<Value>, Option<Value>)], history: &History) {
        for name in GROUPS {
            let leading: Vec<&Value> = round
                .iter()
                .filter_map(|(info, _)| info.as_ref())
                .flat_map(|info| info["groups"].as_array().into_iter().flatten())
                .filter(|g| g["name"] == name && g["leads_with_quorum"] == true)
                .collect();
            let held = !leading.is_empty();
            if self.quorum.insert(name.to_string(), held) != Some(held) {
                history.record(Event::Quorum {
                    at_ms: history.now_ms(),
                    group: name.to_string(),
                    held,
                });
            }
            let Some(leader) = leading.first() else {
                continue;
            };
            let members = leader["members"].as_array().cloned().unwrap_or_default();
            let ids = |voter: bool| -> Vec<u64> {
                members
                    .iter()
                    .filter(|m| m["voter"].as_bool() == Some(voter))
                    .filter_map(|m| m["id"].as_u64())
                    .collect()
            };
            let now = (ids(true), ids(false));
            if self.membership.get(name) != Some(&now) {
                self.membership.insert(name.to_string(), now.clone());
                history.record(Event::Membership {
                    at_ms: history.now_ms(),
                    group: name.to_string(),
                    voters: now.0,
                    learners: now.1,
                });
            }
        }
    }
}

/// Asks every node at once for `/v1/cluster` and `/v1/routing`.
async fn futures_round(
    http: &reqwest::Client,
    tls: &firebreak_tls::ClientTls,
    nodes: &[String],
) -> Vec<(Option<Value>, Option<Value>)> {
    let mut tasks = Vec::new();
    for node in nodes {
        let (http, tls) = (http.clone(), tls.clone());
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let get = |path: &str| {
                let url = tls.url(&node, path);
                let http = http.clone();
                async move {
                    match http.get(url).send().await {
                        Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                        _ => None,
                    }
                }
            };
            (get("/v1/cluster").await, get("/v1/routing").await)
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        if let Ok(answer) = task.await {
            answers.push(answer);
        }
    }
    answers
}

fn record_leaders(info: &Value, history: &History, seen: &mut BTreeMap<(u64, String), (u64, u64)>) {
    let node = info["node_id"].as_u64().unwrap_or(0);
    for group in info["groups"].as_array().into_iter().flatten() {
        let name = group["name"].as_str().unwrap_or("?").to_string();
        let term = group["term"].as_u64().unwrap_or(0);
        let leader = group["leader"].as_u64().unwrap_or(0);
        if leader == 0 {
            continue;
        }
        if seen.insert((node, name.clone()), (term, leader)) != Some((term, leader)) {
            history.record(Event::Leader {
                at_ms: history.now_ms(),
                node,
                group: name,
                term,
                leader,
            });
        }
    }
}

/// Each (node, group, term, leader) from the nodes' election journals, once.
fn record_elections(info: &Value, history: &History, seen: &mut BTreeSet<(u64, String, u64, u64)>) {
    let node = info["node_id"].as_u64().unwrap_or(0);
    for group in info["groups"].as_array().into_iter().flatten() {
        let name = group["name"].as_str().unwrap_or("?");
        for entry in group["elections"].as_array().into_iter().flatten() {
            let term = entry["term"].as_u64().unwrap_or(0);
            let leader = entry["leader"].as_u64().unwrap_or(0);
            if seen.insert((node, name.to_string(), term, leader)) {
                history.record(Event::Elected {
                    at_ms: history.now_ms(),
                    node,
                    group: name.to_string(),
                    term,
                    leader,
                });
            }
        }
    }
}

fn record_routes(routing: &Value, history: &History, epochs: &mut BTreeMap<String, u64>) {
    let Some(routes) = routing["routes"].as_object() else {
        return;
    };
    for (service, route) in routes {
        let epoch = route["epoch"].as_u64().unwrap_or(0);
        if epochs.get(service).is_some_and(|e| *e >= epoch) {
            continue; // a lagging replica: not news
        }
        epochs.insert(service.clone(), epoch);
        let serving = route["serving"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect();
        history.record(Event::Route {
            at_ms: history.now_ms(),
            service: service.clone(),
            serving,
            epoch,
            changed_at_ms: route["changed_at_ms"].as_u64().unwrap_or(0),
        });
    }
}
