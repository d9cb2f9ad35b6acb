//! `firebreak drill PLAYBOOK`: bring up sites, run traffic, break them on the playbook's
//! timeline, and judge the history. `--check` only validates the playbook; `--random`
//! draws the timeline from the seed instead (`drill_random.rs`); `--repeat N` runs it N
//! times in a row (`drill_repeat.rs`); `firebreak drill heal` removes what crashed drills
//! left on this machine (namespaces `fb-*`, drop-unsynced mounts `firebreak-lazyfs-*`);
//! `firebreak drill cleanup --run ID --inventory FILE` removes what
//! an ssh drill's run left on its hosts.
//!
//! Exit status: 0 when every expectation held, 9 when one did not (the verdict says
//! which), 10 when the drill could not run or was interrupted, 2 for a bad playbook.

use std::path::PathBuf;

use anyhow::Result;
use firebreak_chaos::playbook::Driver;
use firebreak_chaos::{DrillOptions, Error, Playbook};

use crate::exit::{self, fail};

#[derive(clap::Args)]
pub struct Args {
    /// The playbook (YAML), e.g. playbooks/pangyo-fire.yaml; or `heal` to remove what
    /// crashed netns drills left (network namespaces named fb-*, and their processes).
    /// With --random, the base whose timeline is drawn (default: the built-in
    /// playbooks/random.yaml).
    pub(crate) playbook: Option<PathBuf>,
    /// Validate the playbook and print what it would do; run nothing.
    #[arg(long)]
    pub(crate) check: bool,
    /// Seed of the workload (default: the playbook's), to repeat or vary a run; with
    /// --random, also of the fault schedule.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Write history.jsonl, report.json, report.html and the sites' logs here (with
    /// --seeds, one directory per seed: DIR/seed-N).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Port of every site's node on its 127.0.N.1 address; services use the next three.
    #[arg(long, default_value_t = 7301)]
    pub(crate) port: u16,
    /// Site driver, overriding the playbook's: local (loopback, no privileges), netns
    /// (network namespaces; root, Linux; needed for network faults), ssh (real hosts, from
    /// --inventory) or command (the operator's shell hooks, from --inventory).
    #[arg(long, value_enum)]
    pub(crate) driver: Option<DriverArg>,
    /// The hosts of the ssh driver, or the hooks of the command driver (YAML;
    /// docs/operations.md). Implies --driver ssh unless --driver command.
    #[arg(long)]
    pub(crate) inventory: Option<PathBuf>,
    /// With `drill cleanup`: the run id the ssh drill printed (`run ab12cd`).
    #[arg(long)]
    pub(crate) run: Option<String>,
    /// Draw the fault timeline from the seed (the randomized nemesis), within the bounds of
    /// docs/drills.md, instead of the playbook's.
    #[arg(long)]
    pub(crate) random: bool,
    /// With --random: run the seeds FIRST..LAST in a row, one line each, then a summary;
    /// exits 9 if any failed.
    #[arg(long, requires = "random", conflicts_with = "seed", value_parser = crate::drill_random::parse_seeds)]
    pub(crate) seeds: Option<std::ops::RangeInclusive<u64>>,
    /// Run the playbook N times in a row (1 to 1000), each with its own seed (the
    /// playbook's, then the next ones) unless --seed gives one for all: one line per run,
    /// then a summary naming each failure's checker and first violation; exits 9 if any
    /// run failed. With --out, one directory per run: DIR/run-N.
    #[arg(long, conflicts_with_all = ["random", "check"], value_parser = crate::drill_repeat::parse_count)]
    pub(crate) repeat: Option<u32>,
    /// With --random: the fault kinds to draw, comma-separated, of kill, pause,
    /// partition, power-loss, flap, surge (default: kill,pause,surge; with the netns
    /// driver also partition,flap).
    #[arg(long, requires = "random")]
    pub(crate) faults: Option<String>,
    /// With --random: most sites faulted at once (default: a minority of the sites).
    #[arg(long, requires = "random")]
    pub(crate) max_faulted_sites: Option<usize>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum DriverArg {
    Local,
    Netns,
    Ssh,
    Command,
}

pub async fn run(args: Args) -> Result<()> {
    if args
        .playbook
        .as_ref()
        .is_some_and(|p| p.as_os_str() == "heal" && !p.exists())
    {
        return heal();
    }
    if args
        .playbook
        .as_ref()
        .is_some_and(|p| p.as_os_str() == "cleanup" && !p.exists())
    {
        return crate::drill_hosts::cleanup(&args);
    }
    if args.random {
        return crate::drill_random::run(args).await;
    }
    let Some(path) = args.playbook.clone() else {
        return Err(fail(
            exit::USAGE,
            "name a playbook, e.g. `firebreak drill playbooks/pangyo-fire.yaml`, or draw one with --random",
        ));
    };
    let playbook = Playbook::load(&path).map_err(to_exit)?;
    if args.check {
        print_check(&path, &playbook, args.seed);
        return Ok(());
    }
    if let Some(count) = args.repeat {
        return crate::drill_repeat::run(&args, &path, playbook, count).await;
    }
    let options = options(&args, path, playbook, None)?;
    let outcome = execute(options, args.out.as_deref()).await?;
    print!("{}", outcome.report.render_terminal());
    if let Some(out) = &args.out {
        println!("report: {}", out.join("report.html").display());
    }
    if let Some(dir) = outcome.sites_dir.filter(|_| !outcome.report.passed) {
        println!("site logs: {}", dir.display());
    }
    if !outcome.report.passed {
        return Err(fail(
            exit::DRILL_FAILED,
            format!("drill {} failed its expectations", outcome.report.playbook),
        ));
    }
    Ok(())
}

/// `--check`: what the playbook would do.
fn print_check(path: &std::path::Path, playbook: &Playbook, seed: Option<u64>) {
    let operations =
        u64::from(playbook.workload.rate_per_sec) * u64::from(playbook.workload.duration_secs);
    let faults = match playbook.timeline.len() {
        1 => "1 fault".to_string(),
        n => format!("{n} faults"),
    };
    let idle = playbook
        .workload
        .idle_push
        .as_ref()
        .map_or(String::new(), |i| {
            format!(", {} idle push clients through {}", i.clients, i.through)
        });
    println!(
        "{}: valid: {}: {} sites, {} services, {faults}, {} s at {} operations/s ({operations} operations){idle}, seed {}",
        path.display(),
        playbook.name,
        playbook.topology.sites.len(),
        playbook.topology.services.len(),
        playbook.workload.duration_secs,
        playbook.workload.rate_per_sec,
        seed.unwrap_or(playbook.workload.seed),
    );
}

/// The options of one drill run from the command line's.
pub(crate) fn options(
    args: &Args,
    playbook_path: PathBuf,
    playbook: Playbook,
    repeat: Option<String>,
) -> Result<DrillOptions> {
    let exe = std::env::current_exe().map_err(|e| {
        fail(
            exit::DRILL_NOT_RUN,
            format!("failed to find the firebreak binary: {e}"),
        )
    })?;
    Ok(DrillOptions {
        playbook_path,
        playbook,
        seed: args.seed,
        driver: match (args.driver, &args.inventory) {
            (None, Some(_)) => Some(Driver::Ssh),
            (driver, _) => driver.map(DriverArg::driver),
        },
        inventory: args.inventory.clone(),
        out: args.out.clone(),
        port: args.port,
        exe,
        live: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        repeat,
    })
}

impl DriverArg {
    pub(crate) fn driver(self) -> Driver {
        match self {
            DriverArg::Local => Driver::Local,
            DriverArg::Netns => Driver::Netns,
            DriverArg::Ssh => Driver::Ssh,
            DriverArg::Command => Driver::Command,
        }
    }
}

/// Runs one drill to its verdict; an interrupt is an error (no verdict).
pub(crate) async fn execute(
    options: DrillOptions,
    out: Option<&std::path::Path>,
) -> Result<firebreak_chaos::DrillOutcome> {
    let outcome = firebreak_chaos::run(options, crate::node::shutdown_signal())
        .await
        .map_err(to_exit)?;
    if outcome.interrupted {
        if let Some(out) = out {
            eprintln!("partial history: {}", out.join("history.jsonl").display());
        }
        return Err(fail(
            exit::DRILL_NOT_RUN,
            "the drill was interrupted: no verdict; every process it started is stopped",
        ));
    }
    Ok(outcome)
}

/// Removes the namespaces (and processes in them) that crashed netns drills left.
fn heal() -> Result<()> {
    let unmounted = firebreak_chaos::lazyfs::unmount_leftovers();
    for point in &unmounted {
        println!("unmounted {}", point.display());
    }
    let healed = firebreak_chaos::netns::heal_leftovers().map_err(to_exit)?;
    if healed.is_empty() && unmounted.is_empty() {
        println!(
            "nothing to heal: no network namespace named {}* and no {}* mount of a dead drill",
            firebreak_chaos::netns::PREFIX,
            firebreak_chaos::lazyfs::FSNAME_PREFIX
        );
    }
    for name in healed {
        println!("removed {name}");
    }
    Ok(())
}

pub(crate) fn to_exit(err: Error) -> anyhow::Error {
    let code = match err {
        Error::Playbook { .. } | Error::Inventory { .. } | Error::Read { .. } => exit::USAGE,
        Error::CouldNotRun(_) => exit::DRILL_NOT_RUN,
    };
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    fail(code, message)
}
