//! `firebreak node --config node.yaml`: the daemon, until SIGTERM or Ctrl-C; and
//! `firebreak node add|remove` (see [`crate::membership`]).

use std::path::PathBuf;

use anyhow::Result;
use firebreak_node::NodeConfig;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<crate::membership::NodeCommand>,
    /// The node's YAML config (every field: docs/reference.md).
    #[arg(long, short, required = true)]
    config: Option<PathBuf>,
    /// Check the config, certificate, tokens and data dir as a starting node would, print
    /// what was found and exit (0 when the node would start), binding and writing nothing.
    #[arg(long)]
    check_config: bool,
}

pub async fn run(args: Args) -> Result<()> {
    if let Some(command) = args.command {
        return crate::membership::node(command).await;
    }
    let path = args
        .config
        .expect("clap requires --config without a subcommand");
    let config = NodeConfig::load(&path)?;
    if args.check_config {
        for line in firebreak_node::check::check_config(&config)? {
            println!("{line}");
        }
        println!(
            "{}: ok, node {} would start",
            path.display(),
            config.node_id
        );
        return Ok(());
    }
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
