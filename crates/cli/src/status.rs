//! `firebreak status`: both Raft groups as every reachable node sees them.
//!
//! Asks every given node at once (a dead site only adds an "unreachable" row), then prints
//! per group the leader and term, and per member its site, role, commit and applied index,
//! and lag as the leader reports it. `--output json` prints every node's raw view.

use std::time::Duration;

use anyhow::Result;
use comfy_table::Table;
use firebreak_node::api::ClusterInfo;
use firebreak_node::operator::FailoverStatus;
use futures::future::join_all;

use crate::client::{Client, Nodes};
use crate::exit::{self, fail};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    nodes: Nodes,
    /// `table` for people, `json` for scripts.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

pub async fn run(args: Args) -> Result<()> {
    let client = Client::admin(&args.nodes)?;
    let views = join_all(client.nodes().iter().map(|node| fetch(&client, node))).await;
    if views.iter().all(|(_, view)| view.is_err()) {
        let reasons: Vec<String> = views
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.as_ref().err().unwrap()))
            .collect();
        return Err(fail(
            exit::UNAVAILABLE,
            format!("no node answered:\n  {}", reasons.join("\n  ")),
        ));
    }
    if args.output == "json" {
        let json: serde_json::Map<String, serde_json::Value> = views
            .iter()
            .map(|(node, view)| {
                let value = match view {
                    Ok(info) => serde_json::to_value(info).expect("cluster info serializes"),
                    Err(err) => serde_json::json!({ "error": err.to_string() }),
                };
                (node.clone(), value)
            })
            .collect();
        let failover = first_failover(&client, &views).await;
        let out = serde_json::json!({ "nodes": json, "failover": failover });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print_tables(&views);
    print_failover(&client, &views).await;
    Ok(())
}

/// Sites and services as the first node that answers sees them (`None`: no topology).
async fn first_failover(
    client: &Client,
    views: &[(String, Result<ClusterInfo>)],
) -> Option<(String, Option<FailoverStatus>)> {
    for (node, view) in views {
        if view.is_err() {
            continue;
        }
        let url = client.url(node, "/v1/failover");
        let Ok(response) = client
            .http()
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        else {
            continue;
        };
        if let Ok(status) = response.json::<Option<FailoverStatus>>().await {
            return Some((node.clone(), status));
        }
    }
    None
}

/// Sites and services from the first node that answers.
async fn print_failover(client: &Client, views: &[(String, Result<ClusterInfo>)]) {
    if let Some((node, status)) = first_failover(client, views).await {
        let Some(status) = status else {
            println!("\nno topology applied: firebreak topology apply FILE");
            return;
        };
        println!(
            "\nsites (as node at {node} sees them){}",
            status
                .frozen
                .as_ref()
                .map_or(String::new(), |f| format!(" -- AUTOMATION FROZEN: {f}"))
        );
        let mut table = Table::new();
        table.load_preset(comfy_table::presets::NOTHING);
        table.set_header(["site", "state", "lease age", "evacuated"]);
        for site in &status.sites {
            let state = if site.witness {
                "witness"
            } else if site.up {
                "up"
            } else {
                "DOWN"
            };
            let age = site
                .lease_age_ms
                .map_or("-".to_string(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
            table.add_row([
                site.name.clone(),
                state.to_string(),
                age,
                site.evacuated.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        println!("{table}");
        println!("\nservices");
        let mut table = Table::new();
        table.load_preset(comfy_table::presets::NOTHING);
        table.set_header(["service", "mode", "serving", "primary", "epoch", "health"]);
        for service in &status.services {
            let health: Vec<String> = service
                .health
                .iter()
                .map(|(site, ok)| format!("{site}:{}", if *ok { "ok" } else { "FAIL" }))
                .collect();
            table.add_row([
                service.name.clone(),
                service.mode.clone(),
                service.serving.join(","),
                service.primary.clone().unwrap_or_else(|| "-".into()),
                service.epoch.to_string(),
                health.join(" "),
            ]);
        }
        println!("{table}");
        print_hooks(&status.hooks);
    }
}

/// Routing hooks, when any has a record; a hook behind or failing says so.
fn print_hooks(hooks: &[firebreak_node::operator::HookStatus]) {
    if hooks.is_empty() {
        return;
    }
    println!(
        "
routing hooks"
    );
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["hook", "service", "delivered", "state"]);
    for hook in hooks {
        let state = match (&hook.last_error, hook.acked_epoch >= hook.epoch) {
            (Some(error), _) => format!("FAILING ({} rounds): {error}", hook.failures),
            (None, true) => "ok".into(),
            (None, false) => "delivering".into(),
        };
        table.add_row([
            hook.hook.clone(),
            hook.service.clone(),
            format!("epoch {} of {}", hook.acked_epoch, hook.epoch),
            state,
        ]);
    }
    println!("{table}");
}

async fn fetch(client: &Client, node: &str) -> (String, Result<ClusterInfo>) {
    let result = async {
        let response = client
            .http()
            .get(client.url(node, "/v1/cluster"))
            .timeout(Duration::from_secs(2))
            .send()
            .await?
            .error_for_status()?;
        Ok(response.json::<ClusterInfo>().await?)
    }
    .await;
    (node.to_string(), result)
}

fn print_tables(views: &[(String, Result<ClusterInfo>)]) {
    let first = views
        .iter()
        .find_map(|(_, v)| v.as_ref().ok())
        .expect("checked: one view at least");
    println!("cluster {}", first.cluster);
    let expiry: Vec<String> = views
        .iter()
        .filter_map(|(_, v)| v.as_ref().ok())
        .map(|info| match info.cert_expiry_days {
            Some(days) => format!("node {} {days} d", info.node_id),
            None => format!("node {} no TLS", info.node_id),
        })
        .collect();
    println!("certificates expire in: {}", expiry.join(", "));
    for group in ["control", "state"] {
        let infos: Vec<_> = views
            .iter()
            .filter_map(|(_, v)| v.as_ref().ok())
            .filter_map(|info| {
                info.groups
                    .iter()
                    .find(|g| g.name == group)
                    .map(|g| (info, g))
            })
            .collect();
        let leader_view = infos.iter().find(|(_, g)| g.role == "leader");
        let (leader, term) = match leader_view {
            Some((info, g)) => (format!("node {} ({})", info.node_id, info.site), g.term),
            None => (
                "none".to_string(),
                infos.iter().map(|(_, g)| g.term).max().unwrap_or(0),
            ),
        };
        println!("\n{group} group: leader {leader}, term {term}");
        if let Some((_, g)) = leader_view.or(infos.first()) {
            println!("{}", membership(&g.members));
        }
        let mut table = Table::new();
        table.load_preset(comfy_table::presets::NOTHING);
        table.set_header([
            "node", "site", "addr", "role", "term", "commit", "applied", "lag",
        ]);
        for (node, view) in views {
            match view {
                Ok(info) => {
                    let Some(g) = info.groups.iter().find(|g| g.name == group) else {
                        continue;
                    };
                    let lag = leader_view
                        .and_then(|(_, lg)| lg.members.iter().find(|m| m.id == info.node_id))
                        .and_then(|m| m.lag)
                        .map_or("-".to_string(), |l| l.to_string());
                    table.add_row([
                        info.node_id.to_string(),
                        info.site.clone(),
                        info.addr.clone(),
                        g.role.clone(),
                        g.term.to_string(),
                        opt(g.committed_index),
                        opt(g.applied_index),
                        lag,
                    ]);
                }
                Err(_) => {
                    // Name the unreachable node from the members the others know.
                    // Members are known by their peer address; a node is asked at its
                    // client address: the host names it when only one member has it.
                    let host =
                        |addr: &str| addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string();
                    let mut members: Vec<_> = infos
                        .iter()
                        .flat_map(|(_, g)| &g.members)
                        .filter(|m| host(&m.addr) == host(node))
                        .collect();
                    members.dedup_by_key(|m| m.id);
                    let member = match members.as_slice() {
                        [one] => Some(*one),
                        _ => None,
                    };
                    let (id, site) = member.map_or(("?".to_string(), "?".to_string()), |m| {
                        (m.id.to_string(), m.site.clone())
                    });
                    table.add_row([
                        id,
                        site,
                        node.clone(),
                        "unreachable".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                    ]);
                }
            }
        }
        println!("{table}");
    }
}

/// `voters 1 (pangyo), 2 (gasan); learners 4 (pangyo)`, as one node sees the group.
fn membership(members: &[firebreak_node::group::MemberInfo]) -> String {
    let list = |voter: bool| {
        let ids: Vec<String> = members
            .iter()
            .filter(|m| m.voter == voter)
            .map(|m| format!("{} ({})", m.id, m.site))
            .collect();
        ids.join(", ")
    };
    match list(false) {
        learners if learners.is_empty() => format!("voters {}", list(true)),
        learners => format!("voters {}; learners {learners}", list(true)),
    }
}

fn opt(value: Option<u64>) -> String {
    value.map_or("-".to_string(), |v| v.to_string())
}
