//! A site's drop-unsynced disk on its host, for power-loss faults: `firebreak disk`
//! started over ssh (its PID in `RUN/SITE/disk.pid`), which mounts the site's data dir and
//! answers each SIGUSR1 with one JSON line of what it threw away.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use super::{quote, SshHosts, COMMAND_TIMEOUT};
use crate::error::{Error, Result};
use crate::lazyfs::Discarded;
use crate::site_driver::Disk;

/// How long mounting, and each power loss, may take.
const DISK_TIMEOUT: Duration = Duration::from_secs(20);

/// The disk of one site, on its host.
pub(super) struct RemoteDisk {
    who: String,
    ssh: Vec<String>,
    pidfile: String,
    run_dir: String,
    child: Child,
    lines: Receiver<String>,
}

impl SshHosts {
    /// Starts `firebreak disk` on site `index`'s host with the data dir `data` and synced
    /// content in `durable` (both already rewritten for the host); waits until it has
    /// mounted.
    pub(super) fn start_disk(
        &self,
        index: usize,
        data: &str,
        durable: &str,
        log: &std::path::Path,
    ) -> Result<RemoteDisk> {
        let (site, host) = &self.hosts[index];
        let run_dir = self.run_dir(index);
        let pidfile = format!("{run_dir}/{site}/disk.pid");
        let command = format!(
            "cd {run_dir} && echo $$ > {pidfile} && exec {} disk --mount {} --durable {} --name {}",
            self.binary_path(index)?,
            quote(data),
            quote(durable),
            quote(site)
        );
        let ssh = self.ssh_args(host);
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::CouldNotRun(format!("failed to open {}: {e}", log.display())))?;
        let mut child = Command::new("ssh")
            .args(&ssh)
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| Error::CouldNotRun(format!("failed to run ssh: {e}")))?;
        let stdout = child.stdout.take().expect("piped");
        let (send, lines) = channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(|l| l.ok())
            {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut disk = RemoteDisk {
            who: self.who(index),
            ssh,
            pidfile,
            run_dir,
            child,
            lines,
        };
        match disk.lines.recv_timeout(DISK_TIMEOUT) {
            Ok(line) if line.starts_with("mounted") => Ok(disk),
            _ => {
                let _ = disk.child.kill();
                Err(Error::CouldNotRun(format!(
                    "{}: the drop-unsynced disk did not mount within {} s; see {}",
                    disk.who,
                    DISK_TIMEOUT.as_secs(),
                    log.display()
                )))
            }
        }
    }
}

impl RemoteDisk {
    /// Sends `signal` to the disk process on the host, if it is still this run's.
    fn signal(&self, signal: &str) -> std::result::Result<(), String> {
        let (pidfile, run_dir) = (&self.pidfile, &self.run_dir);
        let script = format!(
            "p=$(cat {pidfile}) && tr '\\0' ' ' < /proc/$p/cmdline | grep -q {run_dir} && kill -{signal} $p"
        );
        match super::run_on(&self.ssh, &script, None, COMMAND_TIMEOUT)? {
            out if out.status == Some(0) => Ok(()),
            out => Err(out.stderr.trim().to_string()),
        }
    }
}

impl Disk for RemoteDisk {
    fn power_loss(&mut self) -> Result<Discarded> {
        let fail = |why: String| Error::CouldNotRun(format!("{}: power loss: {why}", self.who));
        self.signal("USR1").map_err(fail)?;
        let line = self.lines.recv_timeout(DISK_TIMEOUT).map_err(|_| {
            fail(format!(
                "the disk did not answer within {} s",
                DISK_TIMEOUT.as_secs()
            ))
        })?;
        serde_json::from_str(&line).map_err(|e| fail(format!("the disk answered {line:?}: {e}")))
    }
}

impl Drop for RemoteDisk {
    /// Unmounts: SIGTERM to the disk process; its session ends when it has.
    fn drop(&mut self) {
        if let Err(why) = self.signal("TERM") {
            tracing::warn!(host = %self.who, cause = %why, "failed to stop the drop-unsynced disk; cleanup unmounts it");
        }
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
