//! Cleanup by run id (`firebreak drill cleanup --run ID --inventory FILE`, and the end of
//! every ssh drill): on every host of the inventory, exactly what run ID left, namely its
//! processes (their command line names the run's dir or tables), the drop-unsynced disks
//! mounted under its dir, its nftables tables `fb_<run>_*` and its dir. Idempotent: a second cleanup finds nothing.

use super::{run_dir, run_on, ssh_args, COMMAND_TIMEOUT};
use crate::error::{Error, Result};
use crate::inventory::Inventory;

/// What cleanup did on one host, and whether it could.
#[derive(Debug, Clone, PartialEq)]
pub struct HostCleanup {
    /// `site/user@address`.
    pub host: String,
    /// What was removed ("process 4242 (pangyo/node)", "nft table fb_ab12cd_part",
    /// "dir /var/lib/firebreak-drill/runs/ab12cd").
    pub removed: Vec<String>,
    /// Why the host could not be cleaned, if it could not: what run ID may still hold there.
    pub failed: Option<String>,
}

/// Checks that `run_id` is one a drill makes (six lowercase hex digits), so that it is
/// safe in commands and matches nothing else.
pub fn check_run_id(run_id: &str) -> Result<()> {
    let ok = run_id.len() == 6
        && run_id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
    if ok {
        return Ok(());
    }
    Err(Error::CouldNotRun(format!(
        "run id {run_id:?} is not a drill's run id (six lowercase hex digits, as the drill printed: `run ab12cd`)"
    )))
}

/// Removes what run `run_id` left on every host of `inventory` (read from `file`).
pub fn clean_up(run_id: &str, inventory: &Inventory) -> Result<Vec<HostCleanup>> {
    check_run_id(run_id)?;
    let control = tempfile::Builder::new()
        .prefix("fbssh-cleanup-")
        .tempdir()
        .map_err(|e| Error::CouldNotRun(format!("failed to create a temp dir: {e}")))?;
    let mut results = Vec::new();
    for (site, hosts) in &inventory.sites {
        for host in &hosts.hosts {
            let args = ssh_args(host, inventory.known_hosts.as_deref(), control.path());
            let script = script(run_id, &run_dir(host, run_id));
            let name = format!("{site}/{}@{}", host.user, host.address);
            let result = match run_on(&args, &script, None, COMMAND_TIMEOUT) {
                Ok(out) if out.status == Some(0) => HostCleanup {
                    host: name,
                    removed: out.stdout.lines().map(String::from).collect(),
                    failed: None,
                },
                Ok(out) => HostCleanup {
                    host: name,
                    removed: out.stdout.lines().map(String::from).collect(),
                    failed: Some(
                        out.stderr
                            .trim()
                            .lines()
                            .last()
                            .unwrap_or("failed")
                            .to_string(),
                    ),
                },
                Err(e) => HostCleanup {
                    host: name,
                    removed: Vec::new(),
                    failed: Some(e),
                },
            };
            let _ = std::process::Command::new("ssh")
                .args(["-O", "exit"])
                .args(&args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            results.push(result);
        }
    }
    Ok(results)
}

/// The shell that removes run `run_id`'s processes, tables and dir `dir` on one host,
/// printing a line for each thing removed.
fn script(run_id: &str, dir: &str) -> String {
    format!(
        r#"for f in {dir}/*/*.pid {dir}/guard-*.pid; do
  [ -f "$f" ] || continue
  p=$(cat "$f")
  if tr '\0' ' ' </proc/$p/cmdline 2>/dev/null | grep -q -e "{dir}" -e "fb_{run_id}_"; then
    kill -CONT $p 2>/dev/null; kill -KILL $p 2>/dev/null && echo "process $p ($(basename "$f" .pid))"
  fi
done
for m in $(awk -v r="{dir}/" 'index($2, r) == 1 {{print $2}}' /proc/mounts); do
  umount -l "$m" && echo "mount $m"
done
if command -v nft >/dev/null 2>&1; then
  for t in $(nft list tables 2>/dev/null | awk '$2 == "inet" {{print $3}}' | grep "^fb_{run_id}_"); do
    nft delete table inet "$t" && echo "nft table $t"
  done
fi
if [ -d {dir} ]; then rm -rf {dir} && echo "dir {dir}"; fi
true
"#
    )
}
