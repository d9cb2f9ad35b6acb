//! The command driver: each site's actions are shell hooks of the operator's, so a drill
//! reaches whatever runs the sites (Kubernetes, a cloud API, an internal tool). The drill
//! writes the same configs and certificates, runs the same workload and judges the same
//! history as with every other driver; only the hooks change.
//!
//! ```yaml
//! # --driver command --inventory commands.yaml
//! sites:
//!   pangyo:
//!     address: 10.0.1.10          # where the site's node and services listen
//!     commands:
//!       start: 'kubectl -n pangyo exec deploy/fb-$FIREBREAK_PROCESS -- firebreak $FIREBREAK_ARGS'
//!       kill: 'kubectl -n pangyo delete pod -l app=fb --grace-period=0 --force'
//!       pause: ...                # optional, as are resume, stop, isolate and heal
//! ```
//!
//! | hook | when | environment (besides `FIREBREAK_RUN`, `_SITE`, `_ADDRESS`, `_DIR`) |
//! |---|---|---|
//! | `start` | a process starts; the hook runs as long as the process does (its end is the process's end), output into the local log | `FIREBREAK_PROCESS` (node, messaging, ...), `FIREBREAK_EXE` (this firebreak), `FIREBREAK_ARGS` (shell-quoted) |
//! | `kill` | SIGKILL (site loss, process kill) | `FIREBREAK_PROCESSES` (names), `FIREBREAK_PIDS` (the local PIDs of their start hooks) |
//! | `stop` | SIGTERM (clean restart, end of the drill); `kill` if absent | as `kill` |
//! | `pause`, `resume` | SIGSTOP, SIGCONT | as `kill` |
//! | `isolate`, `heal` | a partition starts, ends | `FIREBREAK_PEERS` (addresses), `FIREBREAK_ONE_WAY` (0 or 1), `FIREBREAK_EXPIRES_IN` (seconds: heal by then even if the drill never says so) |
//!
//! A hook that fails or takes more than 30 s (start aside) is an error of the drill, with
//! its stderr quoted. The playbook's faults are checked against the hooks before anything
//! starts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Child;

use crate::error::{Error, Result};
use crate::netns::Shaping;
use crate::playbook::{FaultKind, Playbook};
use crate::site_driver::{NetworkFaults, SiteDriver};

/// How long a hook other than `start` may take.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// The hooks file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandInventory {
    pub sites: BTreeMap<String, CommandSite>,
}

/// One site's address and hooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSite {
    pub address: IpAddr,
    pub commands: Hooks,
}

/// The shell hooks of a site (`sh -c`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    pub start: String,
    pub kill: String,
    #[serde(default)]
    pub stop: Option<String>,
    #[serde(default)]
    pub pause: Option<String>,
    #[serde(default)]
    pub resume: Option<String>,
    #[serde(default)]
    pub isolate: Option<String>,
    #[serde(default)]
    pub heal: Option<String>,
}

impl CommandInventory {
    /// Reads `path`; errors carry file:line:column.
    pub fn load(path: &Path) -> Result<Self> {
        let (file, text) = crate::inventory::read_bounded(path)?;
        crate::inventory::parse_yaml(&file, &text)
    }
}

/// The sites of one drill run through their hooks.
#[derive(Debug)]
pub struct CommandSites {
    run_id: String,
    sites: Vec<(String, CommandSite)>,
    /// The drill's local dir (where each site's files are), once known.
    dir: Mutex<Option<PathBuf>>,
}

impl CommandSites {
    /// The hooks of `playbook`'s sites, checked against its faults before anything starts.
    pub fn new(
        run_id: &str,
        inventory: &CommandInventory,
        file: &Path,
        playbook: &Playbook,
    ) -> Result<Self> {
        let mut sites = Vec::new();
        for name in &playbook.topology.sites {
            let site = inventory.sites.get(name).ok_or_else(|| {
                Error::CouldNotRun(format!(
                    "{}: the playbook's site {name} has no sites.{name}",
                    file.display()
                ))
            })?;
            sites.push((name.clone(), site.clone()));
        }
        for step in &playbook.timeline {
            for name in step.target_sites() {
                let Some((_, site)) = sites.iter().find(|(n, _)| n == name) else {
                    continue;
                };
                if let Some(missing) = missing_hook(step.fault, &site.commands) {
                    return Err(Error::CouldNotRun(format!(
                        "{}: the playbook's {} of {} needs sites.{name}.commands.{missing}",
                        file.display(),
                        step.fault.name(),
                        step.target
                    )));
                }
            }
        }
        Ok(Self {
            run_id: run_id.to_string(),
            sites,
            dir: Mutex::new(None),
        })
    }

    /// The environment every hook of site `index` gets.
    fn env(&self, index: usize) -> Vec<(String, String)> {
        let (name, site) = &self.sites[index];
        let dir = self
            .dir
            .lock()
            .expect("not poisoned")
            .clone()
            .unwrap_or_default();
        vec![
            ("FIREBREAK_RUN".into(), self.run_id.clone()),
            ("FIREBREAK_SITE".into(), name.clone()),
            ("FIREBREAK_ADDRESS".into(), site.address.to_string()),
            ("FIREBREAK_DIR".into(), dir.join(name).display().to_string()),
        ]
    }

    /// Runs a hook of site `index` to its end (bounded), with `extra` environment.
    fn run_hook(
        &self,
        index: usize,
        what: &str,
        hook: &str,
        extra: &[(&str, String)],
    ) -> Result<()> {
        let mut child = Command::new("sh")
            .args(["-c", hook])
            .envs(self.env(index))
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::CouldNotRun(format!("failed to run sh for the {what} hook: {e}"))
            })?;
        let Some(status) = crate::site_driver::wait_bounded(&mut child, HOOK_TIMEOUT) else {
            return Err(self.hook_failed(index, what, "did not finish within 30 s"));
        };
        if status.success() {
            return Ok(());
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        Err(self.hook_failed(index, what, &format!("{status}: {}", stderr.trim())))
    }

    fn hook_failed(&self, index: usize, what: &str, why: &str) -> Error {
        Error::CouldNotRun(format!(
            "site {}'s {what} hook failed ({why})",
            self.sites[index].0
        ))
    }

    fn hooks(&self, index: usize) -> &Hooks {
        &self.sites[index].1.commands
    }

    fn peers(&self, sites: &[usize], except: usize) -> String {
        let addresses: Vec<String> = sites
            .iter()
            .filter(|s| **s != except)
            .map(|s| self.sites[*s].1.address.to_string())
            .collect();
        addresses.join(" ")
    }

    fn partition_hook(
        &self,
        from: &[usize],
        to: &[usize],
        one_way: bool,
        expiry: Option<Duration>,
    ) -> Result<()> {
        let what = if expiry.is_some() { "isolate" } else { "heal" };
        let mut sides = vec![(from, to)];
        if !one_way {
            sides.push((to, from));
        }
        for (cut, others) in sides {
            for site in cut {
                let hooks = self.hooks(*site);
                let hook = if expiry.is_some() {
                    &hooks.isolate
                } else {
                    &hooks.heal
                };
                let hook = hook
                    .as_deref()
                    .ok_or_else(|| self.hook_failed(*site, what, "not given"))?;
                let expires = expiry.map_or(String::new(), |e| e.as_secs().to_string());
                let extra = [
                    ("FIREBREAK_PEERS", self.peers(others, *site)),
                    ("FIREBREAK_ONE_WAY", u8::from(one_way).to_string()),
                    ("FIREBREAK_EXPIRES_IN", expires),
                ];
                self.run_hook(*site, what, hook, &extra)?;
            }
        }
        Ok(())
    }
}

/// The hook a fault needs that `hooks` lacks.
fn missing_hook(fault: FaultKind, hooks: &Hooks) -> Option<&'static str> {
    let need = |hook: &Option<String>, name| hook.is_none().then_some(name);
    match fault {
        FaultKind::ProcessPause => need(&hooks.pause, "pause").or(need(&hooks.resume, "resume")),
        FaultKind::Partition => need(&hooks.isolate, "isolate").or(need(&hooks.heal, "heal")),
        _ => None,
    }
}

impl SiteDriver for CommandSites {
    fn name(&self) -> &'static str {
        "command"
    }

    fn describe(&self, port: u16) -> String {
        let addresses: Vec<String> = self
            .sites
            .iter()
            .map(|(_, s)| s.address.to_string())
            .collect();
        format!(
            "through command hooks at {} (nodes on port {port}; run {})",
            addresses.join(", "),
            self.run_id
        )
    }

    fn ip(&self, index: usize) -> String {
        self.sites[index].1.address.to_string()
    }

    fn install(&self, _index: usize, dir: &Path, _files: &[PathBuf]) -> Result<()> {
        self.dir
            .lock()
            .expect("not poisoned")
            .get_or_insert_with(|| dir.to_path_buf());
        Ok(())
    }

    fn spawn(
        &self,
        index: usize,
        process: &str,
        exe: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Child> {
        let quoted: Vec<String> = args.iter().map(|a| crate::ssh::quote(a)).collect();
        let mut env = self.env(index);
        env.push(("FIREBREAK_PROCESS".into(), process.into()));
        env.push(("FIREBREAK_EXE".into(), exe.display().to_string()));
        env.push(("FIREBREAK_ARGS".into(), quoted.join(" ")));
        let mut sh = vec!["-c".to_string(), self.hooks(index).start.clone()];
        // The environment travels as `env K=V ... sh -c HOOK`, so spawn_child needs no change.
        let mut argv: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        argv.push("sh".into());
        argv.append(&mut sh);
        crate::driver::spawn_child(Path::new("env"), &argv, log, libc::SIGKILL, None)
    }

    fn signal(&self, index: usize, processes: &[(&str, Option<libc::pid_t>)], signal: libc::c_int) {
        let hooks = self.hooks(index);
        let (what, hook) = match signal {
            libc::SIGSTOP => ("pause", hooks.pause.as_ref()),
            libc::SIGCONT => ("resume", hooks.resume.as_ref()),
            libc::SIGTERM => ("stop", hooks.stop.as_ref().or(Some(&hooks.kill))),
            _ => ("kill", Some(&hooks.kill)),
        };
        let Some(hook) = hook else { return };
        let names: Vec<&str> = processes.iter().map(|(n, _)| *n).collect();
        let pids: Vec<String> = processes
            .iter()
            .filter_map(|(_, p)| p.map(|p| p.to_string()))
            .collect();
        let extra = [
            ("FIREBREAK_PROCESSES", names.join(" ")),
            ("FIREBREAK_PIDS", pids.join(" ")),
        ];
        if let Err(e) = self.run_hook(index, what, hook, &extra) {
            tracing::warn!(error = %e, "a command hook failed");
        }
    }
}

impl NetworkFaults for CommandSites {
    fn partition(
        &self,
        from: &[usize],
        to: &[usize],
        one_way: bool,
        expiry: Duration,
    ) -> Result<()> {
        self.partition_hook(from, to, one_way, Some(expiry))
    }

    fn heal_partition(&self, from: &[usize], to: &[usize], one_way: bool) -> Result<()> {
        self.partition_hook(from, to, one_way, None)
    }

    fn loss(&self, _: usize, _: &[usize], _: u32, _: Duration) -> Result<()> {
        Err(unsupported("loss"))
    }

    fn clear_loss(&self, _: usize) -> Result<()> {
        Ok(())
    }

    fn shape(&self, _: usize, _: &[usize], _: &Shaping, _: Duration) -> Result<()> {
        Err(unsupported("latency and bandwidth"))
    }

    fn clear_shape(&self, _: usize) -> Result<()> {
        Ok(())
    }

    fn link(&self, _: usize, _: bool, _: Duration) -> Result<()> {
        Err(unsupported("link-flap"))
    }
}

fn unsupported(what: &str) -> Error {
    Error::CouldNotRun(format!(
        "{what} has no command hook (playbook validation refuses it with the command driver)"
    ))
}
