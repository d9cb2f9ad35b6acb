//! Preflight and install on the hosts: whether each host can run the drill (before any
//! fault), the binary copied once per checksum, and each site's files for this run.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{SshHosts, COMMAND_TIMEOUT, INSTALL_TIMEOUT};
use crate::error::{Error, Result};

impl SshHosts {
    /// Checks every host before anything changes on any of them: ssh reaches it with the
    /// inventory's key, it runs this binary's architecture, has `tar` and `sha256sum`,
    /// when the drill has network faults `nft` and root, and when it has power losses
    /// `/dev/fuse` and root. Every problem found is reported together.
    pub fn preflight(&self, network_faults: bool, power_loss: bool) -> Result<()> {
        let mut problems = Vec::new();
        for index in 0..self.hosts.len() {
            if let Err(problem) = self.preflight_host(index, network_faults, power_loss) {
                problems.push(problem);
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::CouldNotRun(format!(
            "the hosts are not ready (inventory {}); nothing was changed on any host:\n  {}",
            self.inventory.display(),
            problems.join("\n  ")
        )))
    }

    fn preflight_host(
        &self,
        index: usize,
        network_faults: bool,
        power_loss: bool,
    ) -> std::result::Result<(), String> {
        let host = &self.hosts[index].1;
        if !host.key.is_file() {
            return Err(format!(
                "{}: the key {} does not exist",
                self.who(index),
                host.key.display()
            ));
        }
        let runs = format!("{}/runs", super::host_dir(host));
        let script = format!(
            "echo uid=$(id -u); echo arch=$(uname -m); \
             for t in nft tar sha256sum; do command -v $t >/dev/null 2>&1 && echo has=$t; done; \
             [ -c /dev/fuse ] && echo has=fuse; \
             ls {runs} 2>/dev/null | sed 's/^/run=/'"
        );
        let out = super::run_on(&self.ssh_args(host), &script, None, COMMAND_TIMEOUT)
            .map_err(|e| format!("{}: {e}", self.who(index)))?;
        if out.status == Some(255) || out.status.is_none() {
            let why = out
                .stderr
                .trim()
                .lines()
                .last()
                .unwrap_or("no answer")
                .to_string();
            return Err(format!(
                "{}: ssh failed: {why}; check that the host is up and sshd listens on port {}, \
                 that its key is in the inventory's known_hosts, and that {} is in the user's authorized_keys",
                self.who(index),
                host.port,
                host.key.display()
            ));
        }
        let has = |tool: &str| out.stdout.lines().any(|l| l == format!("has={tool}"));
        let arch = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("arch="))
            .unwrap_or("");
        if arch != std::env::consts::ARCH {
            return Err(format!(
                "{}: the host is {arch:?} and this firebreak is built for {}",
                self.who(index),
                std::env::consts::ARCH
            ));
        }
        if let Some(tool) = ["tar", "sha256sum"].into_iter().find(|t| !has(t)) {
            return Err(format!(
                "{}: no `{tool}` on the host; install it",
                self.who(index)
            ));
        }
        if network_faults && !has("nft") {
            return Err(format!(
                "{}: no `nft` on the host: the playbook's partition, loss and link-flap faults need nftables; \
                 install it there (Debian: apt-get install nftables), or drop those faults",
                self.who(index)
            ));
        }
        if power_loss && !has("fuse") {
            return Err(format!(
                "{}: no /dev/fuse on the host: power-loss faults mount a drop-unsynced FUSE filesystem there; \
                 load the module (modprobe fuse), or drop those faults",
                self.who(index)
            ));
        }
        if (network_faults || power_loss) && !out.stdout.lines().any(|l| l == "uid=0") {
            return Err(format!(
                "{}: network faults (nftables) and power losses (a FUSE mount) need root on the host: log in as root",
                self.who(index)
            ));
        }
        let left: Vec<&str> = out
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("run="))
            .collect();
        if let Some(run) = left.first() {
            return Err(format!(
                "{}: run {run} of an earlier drill is still there ({runs}/{run}): another drill is running on \
                 these hosts, or one was killed; `firebreak drill cleanup --run {run} --inventory {}` removes it",
                self.who(index),
                self.inventory.display()
            ));
        }
        Ok(())
    }

    /// Copies `exe` to every host as `DIR/bin/firebreak-<sha256 prefix>`, unless a copy with
    /// that checksum is there already; a copy whose checksum differs is an error.
    pub fn install_binary(&self, exe: &Path) -> Result<()> {
        let sha = sha256_file(exe)?;
        let name = format!("firebreak-{}", &sha[..16]);
        for index in 0..self.hosts.len() {
            let bin = format!("{}/bin", super::host_dir(&self.hosts[index].1));
            let path = format!("{bin}/{name}");
            let have = self.run_ok(index, &format!("sha256sum {path} 2>/dev/null || true"))?;
            if have.split_whitespace().next() == Some(sha.as_str()) {
                continue;
            }
            let temp = format!("{bin}/.{name}.{}", self.run_id);
            let script = format!("mkdir -p {bin} && cat > {temp} && sha256sum {temp}");
            let out = self.run(index, &script, Some(exe), INSTALL_TIMEOUT)?;
            let copied = out
                .stdout
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            if out.status != Some(0) || copied != sha {
                let _ = self.run_ok(index, &format!("rm -f {temp}"));
                return Err(Error::CouldNotRun(format!(
                    "{}: the copy of {} has checksum {copied:?}, not {sha} ({}): the transfer was damaged or the disk is full",
                    self.who(index),
                    exe.display(),
                    out.stderr.trim()
                )));
            }
            self.run_ok(index, &format!("chmod 755 {temp} && mv -f {temp} {path}"))?;
        }
        *self.binary.lock().expect("not poisoned") = Some(name);
        Ok(())
    }
}

/// Copies `files` (relative to `dir`) to the run's dir on site `index`'s host, with the
/// drill's dir in configs rewritten to the run's dir there.
pub(super) fn site_files(
    hosts: &SshHosts,
    index: usize,
    dir: &Path,
    files: &[PathBuf],
) -> Result<()> {
    let site = &hosts.hosts[index].0;
    let stage = dir.join(".install").join(site);
    let _ = std::fs::remove_dir_all(&stage);
    let fail = |what: &str, e: std::io::Error| {
        Error::CouldNotRun(format!("failed to {what} for {site}'s host: {e}"))
    };
    for file in files {
        copy_rewritten(hosts, index, &dir.join(file), &stage.join(file))
            .map_err(|e| fail("stage files", e))?;
    }
    let tar = dir.join(".install").join(format!("{site}.tar"));
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(&stage)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .map_err(|e| fail("run tar", e))?;
    if !status.success() {
        return Err(Error::CouldNotRun(format!(
            "tar failed packing {}",
            stage.display()
        )));
    }
    let run_dir = hosts.run_dir(index);
    let script = format!("mkdir -p {run_dir} && chmod 700 {run_dir} && tar -C {run_dir} -xf -");
    let out = hosts.run(index, &script, Some(&tar), COMMAND_TIMEOUT)?;
    let _ = std::fs::remove_dir_all(dir.join(".install"));
    if out.status != Some(0) {
        return Err(Error::CouldNotRun(format!(
            "{}: unpacking the site's files into {run_dir} failed: {}",
            hosts.who(index),
            out.stderr.trim()
        )));
    }
    check_node_configs(hosts, index, files)
}

/// Runs `firebreak node --check-config` on the host for each node config of the site, as
/// a systemd unit's `ExecStartPre=` would: a config, certificate or data dir the node would
/// refuse is reported before anything starts.
fn check_node_configs(hosts: &SshHosts, index: usize, files: &[PathBuf]) -> Result<()> {
    let binary = hosts.binary_path(index)?;
    let run_dir = hosts.run_dir(index);
    let configs = files.iter().filter(|f| {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        name.starts_with("node") && name.ends_with(".yaml")
    });
    for config in configs {
        let path = format!("{run_dir}/{}", config.display());
        let out = hosts.run(
            index,
            &format!("{binary} node --config {path} --check-config"),
            None,
            COMMAND_TIMEOUT,
        )?;
        if out.status != Some(0) {
            return Err(Error::CouldNotRun(format!(
                "{}: {path} does not pass `firebreak node --check-config`: {}",
                hosts.who(index),
                out.stderr.trim()
            )));
        }
    }
    Ok(())
}

/// Copies `from` (a file or a flat dir) to `to`, keeping modes; YAML gets its paths
/// rewritten for the host.
fn copy_rewritten(hosts: &SshHosts, index: usize, from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_rewritten(hosts, index, &entry.path(), &to.join(entry.file_name()))?;
        }
        return Ok(());
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if from.extension().is_some_and(|e| e == "yaml") {
        let text = std::fs::read_to_string(from)?;
        std::fs::write(to, hosts.remote_path(index, &text))?;
        std::fs::set_permissions(to, std::fs::metadata(from)?.permissions())
    } else {
        std::fs::copy(from, to).map(|_| ())
    }
}

/// The SHA-256 of a file, in hex.
fn sha256_file(path: &Path) -> Result<String> {
    let fail =
        |e: std::io::Error| Error::CouldNotRun(format!("failed to read {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(fail)?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    Ok(context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
