//! The seam between a drill and where its sites run: a [`SiteDriver`] starts and signals a
//! site's processes, and [`NetworkFaults`] breaks the network between sites. Everything
//! else (configs, certificates, restarts, history, checkers) is the same whatever the
//! driver, so every driver is judged on the same history.
//!
//! | driver | processes | network faults |
//! |---|---|---|
//! | [`Loopback`] (`local`) | children of the drill on 127.0.N.1 | none |
//! | [`Namespaced`] (`netns`) | children of the drill inside one namespace per site | [`crate::netns::Network`] |
//! | [`crate::ssh::SshHosts`] (`ssh`) | started over ssh on the inventory's hosts | nftables tables on the hosts, each with a host-side expiry |

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Child;

use crate::error::Result;
use crate::netns::Shaping;

/// Where a drill's sites run.
pub trait SiteDriver: std::fmt::Debug + Send + Sync {
    /// The name the playbook uses (`local`, `netns`, `ssh`).
    fn name(&self) -> &'static str;

    /// Where the sites are (their nodes on `port`), for the drill's first line.
    fn describe(&self, port: u16) -> String;

    /// The address site `index` listens on (spare sites after the others).
    fn ip(&self, index: usize) -> String;

    /// Makes what site `index`'s processes read (its configs, certificates, the token file;
    /// `files` relative to `dir`) available where they run, before their first start.
    fn install(&self, _index: usize, _dir: &Path, _files: &[PathBuf]) -> Result<()> {
        Ok(())
    }

    /// Starts `exe args` (the `firebreak` binary; the ssh driver runs its installed copy)
    /// as process `process` of site `index`, its output appended to `log`. The child
    /// handle ends when the process does.
    fn spawn(
        &self,
        index: usize,
        process: &str,
        exe: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Child>;

    /// Sends `signal` to processes of site `index`, all at once where the driver can: each
    /// named, with the PID of its child handle.
    fn signal(&self, index: usize, processes: &[(&str, Option<libc::pid_t>)], signal: libc::c_int);

    /// Puts a drop-unsynced filesystem (`crate::lazyfs`) at site `index`'s `data_dir`,
    /// its synced content kept in `durable`, for power-loss faults; called after
    /// [`SiteDriver::install`]. This machine's by default; the ssh driver mounts it on the
    /// host.
    fn mount_disk(
        &self,
        _index: usize,
        data_dir: &Path,
        durable: &Path,
        name: &str,
    ) -> Result<Box<dyn Disk>> {
        Ok(Box::new(crate::lazyfs::Mount::new(
            data_dir, durable, name,
        )?))
    }

    /// Deletes site `index`'s data dir (a site lost with its disks).
    fn wipe(&self, _index: usize, data_dir: &Path) {
        let _ = std::fs::remove_dir_all(data_dir);
    }

    /// Removes what the run left where its sites ran, once its processes have stopped;
    /// what could not be removed, said so that an operator can finish the job.
    fn clean_up(&self) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// A site's drop-unsynced disk.
pub trait Disk: Send {
    /// Throws away what was not synced, as a power loss would (the site's processes are
    /// dead by then); what was lost.
    fn power_loss(&mut self) -> Result<crate::lazyfs::Discarded>;
}

impl Disk for crate::lazyfs::Mount {
    fn power_loss(&mut self) -> Result<crate::lazyfs::Discarded> {
        crate::lazyfs::Mount::power_loss(self)
    }
}

/// Network faults between sites (by index). Each fault carries the time after which it
/// must heal by itself even if the drill never heals it: drivers that can (ssh) make the
/// host enforce it; the netns driver's faults go with its namespaces instead.
pub trait NetworkFaults: Send + Sync {
    /// Cuts traffic from every site of `from` to every site of `to` (and back, unless
    /// `one_way`).
    fn partition(
        &self,
        from: &[usize],
        to: &[usize],
        one_way: bool,
        expiry: Duration,
    ) -> Result<()>;
    /// Undoes [`NetworkFaults::partition`] with the same arguments.
    fn heal_partition(&self, from: &[usize], to: &[usize], one_way: bool) -> Result<()>;
    /// Drops `percent` of the packets `site` sends to `peers`.
    fn loss(&self, site: usize, peers: &[usize], percent: u32, expiry: Duration) -> Result<()>;
    /// Ends [`NetworkFaults::loss`] on `site`.
    fn clear_loss(&self, site: usize) -> Result<()>;
    /// Delays and/or caps what `site` sends to `peers`.
    fn shape(
        &self,
        site: usize,
        peers: &[usize],
        shaping: &Shaping,
        expiry: Duration,
    ) -> Result<()>;
    /// Ends [`NetworkFaults::shape`] on `site`.
    fn clear_shape(&self, site: usize) -> Result<()>;
    /// Cuts `site` from everything (`up: false`), or joins it again.
    fn link(&self, site: usize, up: bool, expiry: Duration) -> Result<()>;
}

/// Sites as children of the drill on 127.0.N.1: the local driver.
#[derive(Debug, Clone, Default)]
pub struct Loopback;

impl SiteDriver for Loopback {
    fn name(&self) -> &'static str {
        "local"
    }

    fn describe(&self, port: u16) -> String {
        format!("on 127.0.N.1:{port}")
    }

    fn ip(&self, index: usize) -> String {
        crate::driver::site_ip(index)
    }

    fn spawn(
        &self,
        _index: usize,
        _process: &str,
        exe: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Child> {
        crate::driver::spawn_child(exe, args, log, libc::SIGKILL, None)
    }

    fn signal(
        &self,
        _index: usize,
        processes: &[(&str, Option<libc::pid_t>)],
        signal: libc::c_int,
    ) {
        signal_local(processes, signal);
    }
}

/// Sites as children of the drill, each inside its network namespace: the netns driver.
#[derive(Debug, Clone)]
pub struct Namespaced {
    /// The run id the namespaces carry.
    pub run_id: String,
    /// Site N's address.
    pub ips: Vec<String>,
    /// Site N's namespace (`/run/netns/...`).
    pub namespaces: Vec<PathBuf>,
}

impl SiteDriver for Namespaced {
    fn name(&self) -> &'static str {
        "netns"
    }

    fn describe(&self, port: u16) -> String {
        format!(
            "in network namespaces {}{}-*, 10.251.0.N:{port}",
            crate::netns::PREFIX,
            self.run_id
        )
    }

    fn ip(&self, index: usize) -> String {
        self.ips[index].clone()
    }

    fn spawn(
        &self,
        index: usize,
        _process: &str,
        exe: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Child> {
        let netns = Some(self.namespaces[index].as_path());
        crate::driver::spawn_child(exe, args, log, libc::SIGKILL, netns)
    }

    fn signal(
        &self,
        _index: usize,
        processes: &[(&str, Option<libc::pid_t>)],
        signal: libc::c_int,
    ) {
        signal_local(processes, signal);
    }
}

fn signal_local(processes: &[(&str, Option<libc::pid_t>)], signal: libc::c_int) {
    for pid in processes.iter().filter_map(|(_, pid)| *pid) {
        // SAFETY: kill(2) on a PID the driver spawned and has not reaped.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Waits for `child` for at most `limit`; past it, kills and reaps it and gives `None`.
/// For the short commands the remote drivers run (ssh commands, hooks).
pub(crate) fn wait_bounded(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}
