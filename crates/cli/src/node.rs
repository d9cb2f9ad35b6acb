//! `firebreak node --config node.yaml`: the daemon, until SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::Result;
use firebreak_node::NodeConfig;

#[derive(clap::Args)]
pub struct Args {
    /// The node's YAML config (see the README for every field).
    #[arg(long, short)]
    config: PathBuf,
}

pub async fn run(args: Args) -> Result<()> {
    let config = NodeConfig::load(&args.config)?;
    let span = tracing::info_span!("node", node = %config.node_id, site = %config.site);
    let _guard = span.enter();
    firebreak_node::run(config, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler works on unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
