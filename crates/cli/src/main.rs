//! `firebreak`: the command line of the firebreak control plane.
//!
//! Thin by design: clap parses, tracing is set up, each subcommand lives in its own file
//! and returns a `Result`; errors become `error: …` with their causes and an exit code
//! from the table in [`exit`].

mod bench;
mod bench_control;
mod bench_dns;
mod bench_failover;
mod bench_watchers;
mod certs;
mod client;
mod control;
mod disk;
mod drill;
mod drill_hosts;
mod drill_line;
mod drill_random;
mod drill_repeat;
mod exit;
mod fault_guard;
mod kv;
mod membership;
mod node;
mod serve;
mod status;
mod topology;
mod up;

use clap::{Parser, Subcommand};

/// Keep critical services alive when a whole data center dies.
#[derive(Parser)]
#[command(name = "firebreak", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node from a YAML config; or add or remove a node at runtime.
    Node(node::Args),
    /// Add, remove or replace a whole site at runtime (needs a token).
    #[command(subcommand)]
    Site(membership::SiteCommand),
    /// Run a local three-site cluster (pangyo, gasan, busan) as child processes.
    Up(up::Args),
    /// Show both Raft groups as every reachable node sees them.
    Status(status::Args),
    /// Read and write the state group's key-value store.
    #[command(subcommand)]
    Kv(kv::Command),
    /// Apply or show the topology: sites, services, failover policy.
    #[command(subcommand)]
    Topology(topology::Command),
    /// Take a site out of every service (needs a token).
    Evacuate(control::EvacuateArgs),
    /// Lift a site's evacuation (needs a token).
    Restore(control::RestoreArgs),
    /// Stop automatic failover (needs a token).
    Freeze(control::FreezeArgs),
    /// Let automatic failover act again (needs a token).
    Unfreeze(control::UnfreezeArgs),
    /// Every routing change and control, with actor, reason and overridden rules.
    Audit(control::AuditArgs),
    /// Run a drill: bring up sites, run traffic, break them, judge the history.
    Drill(drill::Args),
    /// Run a reference service (messaging, payments, login) against the cluster.
    #[command(subcommand)]
    Serve(serve::Command),
    /// Measure the cluster (or etcd, for comparison) under load.
    #[command(subcommand)]
    Bench(bench::Command),
    /// Make the cluster's certificate authority.
    #[command(subcommand)]
    Ca(certs::CaCommand),
    /// Issue node, service and operator certificates from the CA.
    #[command(subcommand)]
    Cert(certs::CertCommand),
    /// A drop-unsynced filesystem for a power-loss drill on a host (started by the ssh
    /// driver, not by hand).
    #[command(hide = true)]
    Disk(disk::Args),
    /// The dead-man's switch of a drill's network fault on a host (started by the ssh
    /// driver, not by hand).
    #[command(hide = true)]
    FaultGuard(fault_guard::Args),
    /// Print the version.
    Version,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FIREBREAK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // At least four async threads, even on two cores: a store call that blocks one for a
    // moment (sled work inside openraft's awaited storage calls) must not leave a node's
    // heartbeats without a thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(firebreak_chaos::driver::cores().max(4))
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Node(args) => node::run(args).await,
            Command::Site(command) => membership::site(command).await,
            Command::Up(args) => up::run(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Kv(command) => kv::run(command).await,
            Command::Bench(command) => bench::run(command).await,
            Command::Serve(command) => serve::run(command).await,
            Command::Drill(args) => drill::run(args).await,
            Command::FaultGuard(args) => fault_guard::run(args).await,
            Command::Disk(args) => disk::run(args).await,
            Command::Topology(command) => topology::run(command).await,
            Command::Evacuate(args) => control::evacuate(args).await,
            Command::Restore(args) => control::restore(args).await,
            Command::Freeze(args) => control::freeze(args).await,
            Command::Unfreeze(args) => control::unfreeze(args).await,
            Command::Audit(args) => control::audit(args).await,
            Command::Ca(command) => certs::ca(command),
            Command::Cert(command) => certs::cert(command),
            Command::Version => {
                println!("firebreak {}", env!("CARGO_PKG_VERSION"));
                Ok(())
            }
        }
    });
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(exit::code(&err));
    }
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (unique argument names, valid `requires`), which
    /// otherwise fire only when a command runs in a debug build.
    #[test]
    fn the_command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
