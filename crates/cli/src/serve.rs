//! `firebreak serve payments`: run a reference service against its site's node.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::client::DEFAULT_NODES;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Accounts and transfers with idempotency keys, stored in the state group.
    Payments(Args),
}

#[derive(clap::Args)]
pub struct Args {
    /// Where the service listens.
    #[arg(long, default_value = "127.0.1.1:8002")]
    listen: SocketAddr,
    /// Nodes to store state through: this site's node first, then the others.
    #[arg(long, env = "FIREBREAK_NODES", default_value = DEFAULT_NODES, value_delimiter = ',')]
    nodes: Vec<String>,
    /// Requests served at once; beyond it the service answers 503 with Retry-After.
    #[arg(long, default_value_t = 256)]
    max_concurrent: usize,
}

pub async fn run(command: Command) -> Result<()> {
    let Command::Payments(args) = command;
    let config = firebreak_services::payments::Config {
        nodes: args.nodes,
        max_concurrent: args.max_concurrent,
        state_timeout: Duration::from_secs(5),
    };
    let (addr, task) = firebreak_services::payments::spawn(args.listen, config)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    tracing::info!(%addr, "payments serving");
    crate::node::shutdown_signal().await;
    task.abort();
    Ok(())
}
