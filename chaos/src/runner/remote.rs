//! The drivers whose sites are not the drill's own children: `ssh` (hosts of an
//! inventory) and `command` (the operator's hooks). Each reads its file, prepares what it
//! needs before the first site starts, and hands over to [`super::run_sites`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use super::{run_sites, DrillOptions};
use crate::driver;
use crate::error::{Error, Result};
use crate::report::Report;

/// `--inventory`, which `driver` needs (`what` says what the file holds).
fn inventory_file(options: &DrillOptions, driver: &str, what: &str) -> Result<PathBuf> {
    options.inventory.clone().ok_or_else(|| {
        Error::CouldNotRun(format!(
            "the {driver} driver needs {what}: pass --inventory FILE (docs/operations.md)"
        ))
    })
}

/// The ssh driver: checks every host of the inventory, installs the binary, then runs
/// the drill on them; the end of the run removes what it left there.
pub(super) async fn run_on_hosts(
    options: DrillOptions,
    sites_dir: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> Result<(Report, bool)> {
    let what = "the hosts (scripts/ssh-hosts.sh up makes three local ones)";
    let file = inventory_file(&options, "ssh", what)?;
    let inventory = crate::inventory::Inventory::load(&file)?;
    let run_id = driver::random_token()[..6].to_string();
    let sites = &options.playbook.topology.sites;
    let hosts = crate::ssh::SshHosts::new(&run_id, &inventory, &file, sites)?;
    let network_faults = options
        .playbook
        .timeline
        .iter()
        .any(|s| s.fault.needs_netns());
    let started = std::time::Instant::now();
    hosts.preflight(network_faults, options.playbook.has_power_loss())?;
    hosts.install_binary(&options.exe)?;
    eprintln!(
        "hosts ready in {:.1} s (preflight, binary checked or copied); run {run_id}: if this drill is killed, \
         `firebreak drill cleanup --run {run_id} --inventory {}` removes what it left",
        started.elapsed().as_secs_f64(),
        file.display()
    );
    let hosts = Arc::new(hosts);
    run_sites(options, sites_dir, hosts.clone(), Some(hosts), shutdown).await
}

/// The command driver: each site's actions through the operator's hooks.
pub(super) async fn run_with_commands(
    options: DrillOptions,
    sites_dir: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> Result<(Report, bool)> {
    let file = inventory_file(&options, "command", "the sites' hooks")?;
    let inventory = crate::command_driver::CommandInventory::load(&file)?;
    let run_id = driver::random_token()[..6].to_string();
    let sites =
        crate::command_driver::CommandSites::new(&run_id, &inventory, &file, &options.playbook)?;
    let sites = Arc::new(sites);
    run_sites(options, sites_dir, sites.clone(), Some(sites), shutdown).await
}
