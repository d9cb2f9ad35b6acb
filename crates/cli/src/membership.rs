//! `firebreak node add|remove` and `firebreak site add|remove|replace`: runtime membership.
//!
//! Each command needs an operator credential, runs on the control leader (the CLI tries
//! each admin node until it reaches it), waits for the whole change (a new voter first
//! catches up as a learner, up to 5 minutes), and is audited. A change a rule refuses
//! exits 7 naming the rule; nothing changed.

use anyhow::Result;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{Client, Nodes};

/// Longest the CLI waits for a membership change: the node's catch-up bound and a margin.
const CHANGE_TIMEOUT_MS: u64 = 330_000;

#[derive(clap::Subcommand)]
pub enum NodeCommand {
    /// Add a node to a site: a learner, promoted to voter once caught up if its site has
    /// no voter yet (or with --voter). Start it with `join: true` in its config.
    Add {
        /// The new node's id: never used before in this cluster.
        #[arg(long)]
        id: u64,
        /// Its site.
        #[arg(long)]
        site: String,
        /// Its peer listener, host:port, as the other nodes reach it.
        #[arg(long)]
        addr: String,
        /// Make it a voter even if its site has one (refused if a site would then hold a
        /// majority of the voters).
        #[arg(long)]
        voter: bool,
        #[command(flatten)]
        nodes: Nodes,
    },
    /// Remove a node from both groups; its id is never used again.
    Remove {
        id: u64,
        /// Remove it even though its site still renews its lease.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        nodes: Nodes,
    },
}

#[derive(clap::Subcommand)]
pub enum SiteCommand {
    /// Add a site with its first node, as a voter.
    Add {
        site: String,
        #[arg(long)]
        id: u64,
        #[arg(long)]
        addr: String,
        #[command(flatten)]
        nodes: Nodes,
    },
    /// Remove every node of a site (refused if fewer than 3 voting sites would be left).
    Remove {
        site: String,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        nodes: Nodes,
    },
    /// Replace a (burned) site's voters with a new site's first node, in one change.
    Replace {
        dead: String,
        /// The new site.
        #[arg(long)]
        with: String,
        /// The new site's first node's id: never used before in this cluster.
        #[arg(long)]
        id: u64,
        /// Its peer listener, host:port.
        #[arg(long)]
        addr: String,
        /// Replace the site even though it still renews its lease.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        nodes: Nodes,
    },
}

pub async fn node(command: NodeCommand) -> Result<()> {
    let (request, nodes) = match command {
        NodeCommand::Add {
            id,
            site,
            addr,
            voter,
            nodes,
        } => (
            json!({"action": "node_add", "id": id, "site": site, "addr": addr, "voter": voter}),
            nodes,
        ),
        NodeCommand::Remove { id, force, nodes } => (
            json!({"action": "node_remove", "id": id, "force": force}),
            nodes,
        ),
    };
    change(request, nodes).await
}

pub async fn site(command: SiteCommand) -> Result<()> {
    let (request, nodes) = match command {
        SiteCommand::Add {
            site,
            id,
            addr,
            nodes,
        } => (
            json!({"action": "site_add", "site": site, "id": id, "addr": addr}),
            nodes,
        ),
        SiteCommand::Remove { site, force, nodes } => (
            json!({"action": "site_remove", "site": site, "force": force}),
            nodes,
        ),
        SiteCommand::Replace {
            dead,
            with,
            id,
            addr,
            force,
            nodes,
        } => (
            json!({"action": "site_replace", "dead": dead, "with": with, "id": id, "addr": addr, "force": force}),
            nodes,
        ),
    };
    change(request, nodes).await
}

async fn change(request: Value, mut nodes: Nodes) -> Result<()> {
    nodes.timeout_ms = nodes.timeout_ms.max(CHANGE_TIMEOUT_MS);
    let client = Client::admin(&nodes)?;
    let outcome = client
        .send(Method::POST, "/v1/membership", Some(&request))
        .await?;
    println!("{}", describe(&outcome));
    Ok(())
}

fn describe(outcome: &Value) -> String {
    let list = |field: &str| {
        outcome[field]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .map(|id| id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let mut text = format!(
        "{}: done; voters now {}",
        outcome["change"].as_str().unwrap_or("membership change"),
        list("voters")
    );
    if let Some(id) = outcome["learner"].as_u64() {
        text += &format!("; node {id} is a learner (its site has a voter)");
    }
    if !list("removed").is_empty() {
        text += &format!("; removed {} (ids never reused)", list("removed"));
    }
    if let Some(ms) = outcome["catch_up_ms"].as_u64() {
        text += &format!("; the new voter caught up in {:.1} s", ms as f64 / 1000.0);
    }
    text
}
