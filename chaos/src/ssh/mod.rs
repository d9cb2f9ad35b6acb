//! The ssh driver: a drill's sites on real hosts, reached with the system's `ssh` client
//! (one shared connection per host: ControlMaster), as Jepsen does it.
//!
//! ```text
//!   drill machine                               host of site N (inventory)
//!   preflight: ssh, root, nft, tar, arch  ───►  (nothing changed yet)
//!   install: binary (sha256 checked)      ───►  DIR/bin/firebreak-<sha>
//!            configs, certificates        ───►  DIR/runs/<run>/<site>/...
//!   start: ssh … exec firebreak …         ───►  process; its pid in DIR/runs/<run>/<site>/<process>.pid
//!          (its output streams back into the local log; the ssh client ends when it does)
//!   kill, pause, resume: one ssh, kill -SIG <pids>
//!   partition, loss, link-flap            ───►  nft table fb_<run>_<fault>, and a
//!                                               `firebreak fault-guard` that deletes it at its expiry
//!   end: stop processes; cleanup          ───►  processes, tables, guards, DIR/runs/<run> gone
//! ```
//!
//! Invariants: every command names the run id, and cleanup touches only what carries it
//! (processes whose command line names the run's dir or tables, tables `fb_<run>_*`, the
//! run's dir); a fault on a host heals at its expiry even if the drill is killed or cut
//! off (the guard runs on the host, detached from ssh); every ssh command is bounded in
//! time. Host keys are checked against the inventory's `known_hosts` (never accepted on
//! first sight), and a site's host gets that site's keys only, never the CA's key.

mod cleanup;
mod disk;
mod faults;
mod install;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use tokio::process::Child;

use crate::error::{Error, Result};
use crate::inventory::{Host, Inventory};
use crate::site_driver::{Disk, SiteDriver};

pub use cleanup::{check_run_id, clean_up, HostCleanup};

/// How long one ssh command may take (connecting included) before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long copying the binary to one host may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The hosts of one drill run, one per site in the playbook's site order.
#[derive(Debug)]
pub struct SshHosts {
    run_id: String,
    /// The inventory file, for error messages.
    inventory: PathBuf,
    /// The inventory: its known hosts, and every host (cleanup visits them all).
    all_hosts: Inventory,
    hosts: Vec<(String, Host)>,
    /// The local dir of the connection sockets (mode 0700), removed on drop.
    control_dir: PathBuf,
    /// The drill's local dir: paths under it are rewritten to the run's dir on a host.
    local_root: Mutex<Option<PathBuf>>,
    /// The installed binary's name under `DIR/bin/`, once installed.
    binary: Mutex<Option<String>>,
}

/// What one ssh command printed.
pub(crate) struct Output {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl SshHosts {
    /// The hosts of `sites` from `inventory` (read from `file`), for run `run_id`.
    pub fn new(run_id: &str, inventory: &Inventory, file: &Path, sites: &[String]) -> Result<Self> {
        let hosts = inventory.hosts_for(sites, file)?;
        let control_dir = std::env::temp_dir().join(format!("fbssh-{run_id}"));
        std::fs::create_dir_all(&control_dir)
            .and_then(|()| {
                std::fs::set_permissions(
                    &control_dir,
                    std::os::unix::fs::PermissionsExt::from_mode(0o700),
                )
            })
            .map_err(|e| {
                Error::CouldNotRun(format!("failed to create {}: {e}", control_dir.display()))
            })?;
        Ok(Self {
            run_id: run_id.to_string(),
            inventory: file.to_path_buf(),
            all_hosts: inventory.clone(),
            hosts,
            control_dir,
            local_root: Mutex::new(None),
            binary: Mutex::new(None),
        })
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Removes what this run left on every host of the inventory; what could not be
    /// removed, with the command that retries.
    fn clean_up_run(&self) -> std::result::Result<(), String> {
        let results = clean_up(&self.run_id, &self.all_hosts).map_err(|e| e.to_string())?;
        let failed: Vec<String> = results
            .iter()
            .filter_map(|r| r.failed.as_ref().map(|why| format!("{}: {why}", r.host)))
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        Err(format!(
            "cleanup of run {} failed on {}; run `firebreak drill cleanup --run {} --inventory {}` once the hosts are reachable",
            self.run_id,
            failed.join("; "),
            self.run_id,
            self.inventory.display()
        ))
    }

    /// `site`'s host as `user@address:port`, for messages.
    fn who(&self, index: usize) -> String {
        let (site, host) = &self.hosts[index];
        format!(
            "site {site}'s host {}@{}:{}",
            host.user, host.address, host.port
        )
    }

    /// The run's dir on a host.
    fn run_dir(&self, index: usize) -> String {
        run_dir(&self.hosts[index].1, &self.run_id)
    }

    /// The ssh arguments that reach `host`, up to and including its address.
    fn ssh_args(&self, host: &Host) -> Vec<String> {
        ssh_args(
            host,
            self.all_hosts.known_hosts.as_deref(),
            &self.control_dir,
        )
    }

    /// Runs `script` with `sh` on site `index`'s host, stdin from `input`; bounded by `limit`.
    pub(crate) fn run(
        &self,
        index: usize,
        script: &str,
        input: Option<&Path>,
        limit: Duration,
    ) -> Result<Output> {
        run_on(&self.ssh_args(&self.hosts[index].1), script, input, limit)
            .map_err(|e| Error::CouldNotRun(format!("{}: {e}", self.who(index))))
    }

    /// Like [`SshHosts::run`], but a non-zero exit is an error that quotes stderr.
    pub(crate) fn run_ok(&self, index: usize, script: &str) -> Result<String> {
        let out = self.run(index, script, None, COMMAND_TIMEOUT)?;
        if out.status != Some(0) {
            return Err(Error::CouldNotRun(format!(
                "{}: `{}` failed ({}): {}",
                self.who(index),
                script.lines().next().unwrap_or(""),
                status_text(out.status),
                out.stderr.trim()
            )));
        }
        Ok(out.stdout)
    }

    /// `local` with the drill's dir replaced by the run's dir on site `index`'s host.
    fn remote_path(&self, index: usize, local: &str) -> String {
        match &*self.local_root.lock().expect("not poisoned") {
            Some(root) => local.replace(&root.display().to_string(), &self.run_dir(index)),
            None => local.to_string(),
        }
    }

    fn binary_path(&self, index: usize) -> Result<String> {
        let name = self
            .binary
            .lock()
            .expect("not poisoned")
            .clone()
            .ok_or_else(|| {
                Error::CouldNotRun("the firebreak binary is not installed on the hosts yet".into())
            })?;
        Ok(format!("{}/bin/{name}", host_dir(&self.hosts[index].1)))
    }
}

impl SiteDriver for SshHosts {
    fn name(&self) -> &'static str {
        "ssh"
    }

    fn describe(&self, port: u16) -> String {
        let addresses: Vec<String> = self
            .hosts
            .iter()
            .map(|(_, h)| h.address.to_string())
            .collect();
        format!(
            "on ssh hosts {} (nodes on port {port}; run {})",
            addresses.join(", "),
            self.run_id
        )
    }

    fn ip(&self, index: usize) -> String {
        self.hosts[index].1.address.to_string()
    }

    fn install(&self, index: usize, dir: &Path, files: &[PathBuf]) -> Result<()> {
        self.local_root
            .lock()
            .expect("not poisoned")
            .get_or_insert_with(|| dir.to_path_buf());
        install::site_files(self, index, dir, files)
    }

    fn spawn(
        &self,
        index: usize,
        process: &str,
        _exe: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Child> {
        let site = &self.hosts[index].0;
        let run_dir = self.run_dir(index);
        let mut command = format!(
            "cd {run_dir} && echo $$ > {run_dir}/{site}/{process}.pid && exec {}",
            self.binary_path(index)?
        );
        for arg in args {
            command.push(' ');
            command.push_str(&quote(&self.remote_path(index, arg)));
        }
        let mut ssh = self.ssh_args(&self.hosts[index].1);
        ssh.push(command);
        crate::driver::spawn_child(Path::new("ssh"), &ssh, log, libc::SIGKILL, None)
    }

    fn signal(&self, index: usize, processes: &[(&str, Option<libc::pid_t>)], signal: libc::c_int) {
        let site = &self.hosts[index].0;
        let run_dir = self.run_dir(index);
        let mut script = String::new();
        for (process, _) in processes {
            let pidfile = format!("{run_dir}/{site}/{process}.pid");
            script.push_str(&format!(
                "p=$(cat {pidfile} 2>/dev/null) && tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null | grep -q {run_dir} && kill -{signal} $p\n"
            ));
        }
        script.push_str("true\n");
        if let Err(e) = self.run_ok(index, &script) {
            tracing::warn!(error = %e, signal, "failed to signal processes over ssh");
        }
    }

    fn mount_disk(
        &self,
        index: usize,
        data_dir: &Path,
        durable: &Path,
        _name: &str,
    ) -> Result<Box<dyn Disk>> {
        let data = self.remote_path(index, &data_dir.display().to_string());
        let durable = self.remote_path(index, &durable.display().to_string());
        let log = data_dir.with_file_name("disk.log");
        Ok(Box::new(self.start_disk(index, &data, &durable, &log)?))
    }

    fn wipe(&self, index: usize, data_dir: &Path) {
        let remote = self.remote_path(index, &data_dir.display().to_string());
        if !remote.starts_with(&self.run_dir(index)) {
            return; // only ever inside the run's own dir
        }
        if let Err(e) = self.run_ok(index, &format!("rm -rf {}", quote(&remote))) {
            tracing::warn!(error = %e, "failed to wipe a site's data over ssh");
        }
    }

    fn clean_up(&self) -> std::result::Result<(), String> {
        self.clean_up_run()
    }
}

impl Drop for SshHosts {
    fn drop(&mut self) {
        for (_, host) in &self.hosts {
            let mut args = self.ssh_args(host);
            args.insert(0, "-O".into());
            args.insert(1, "exit".into());
            let _ = Command::new("ssh")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.control_dir);
    }
}

/// Where firebreak lives on `host`.
fn host_dir(host: &Host) -> String {
    host.dir.as_ref().map_or_else(
        || "/var/lib/firebreak-drill".into(),
        |d| d.display().to_string(),
    )
}

/// The dir of run `run_id` on `host`.
pub(crate) fn run_dir(host: &Host, run_id: &str) -> String {
    format!("{}/runs/{run_id}", host_dir(host))
}

/// The arguments of `ssh` that reach `host` (no command yet).
pub(crate) fn ssh_args(host: &Host, known_hosts: Option<&Path>, control_dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "ServerAliveInterval=2",
        "-o",
        "ServerAliveCountMax=3",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ControlMaster=auto",
        "-o",
        "ControlPersist=60",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("-o".into());
    args.push(format!("ControlPath={}/%C", control_dir.display()));
    if let Some(known) = known_hosts {
        args.push("-o".into());
        args.push(format!("UserKnownHostsFile={}", known.display()));
        args.push("-o".into());
        args.push("StrictHostKeyChecking=yes".into());
    }
    if let Some(jump) = &host.jump {
        args.push("-J".into());
        args.push(jump.clone());
    }
    args.extend([
        "-i".to_string(),
        host.key.display().to_string(),
        "-p".into(),
        host.port.to_string(),
        "-l".into(),
        host.user.clone(),
        host.address.to_string(),
    ]);
    args
}

/// Runs `script` on the host `ssh_args` reach, killing ssh after `limit`.
pub(crate) fn run_on(
    ssh_args: &[String],
    script: &str,
    input: Option<&Path>,
    limit: Duration,
) -> std::result::Result<Output, String> {
    let stdin = match input {
        Some(path) => Stdio::from(
            std::fs::File::open(path)
                .map_err(|e| format!("failed to open {}: {e}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    let mut child = Command::new("ssh")
        .args(ssh_args)
        .arg(format!("sh -c {}", quote(script)))
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("failed to run ssh: {e} (is the openssh client installed?)"))?;
    let out_reader = drain(child.stdout.take());
    let err_reader = drain(child.stderr.take());
    let status = crate::site_driver::wait_bounded(&mut child, limit)
        .ok_or_else(|| format!("ssh did not finish within {} s", limit.as_secs()))?
        .code();
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// Reads a pipe to its end on a thread of its own (so neither pipe can fill and stall).
fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

fn status_text(status: Option<i32>) -> String {
    status.map_or_else(|| "killed".into(), |c| format!("exit {c}"))
}

/// `text` quoted for a POSIX shell.
pub(crate) fn quote(text: &str) -> String {
    shlex::try_quote(text).map_or_else(|_| "''".into(), |q| q.into_owned())
}
