//! The ssh driver against real sshd hosts (`scripts/ssh-hosts.sh`: three network namespaces,
//! each its own sshd, reachable only over ssh): `pangyo-fire`, `site-isolation` and
//! `ssh-faults-small` (pause, restart, kill, loss, link-flap, and a power loss on a
//! drop-unsynced disk on the host) pass and leave nothing on the hosts; a drill SIGKILLed
//! mid-partition heals on the hosts by itself (each table's fault-guard) and `drill
//! cleanup` removes the rest (processes, mounts, dir), then finds nothing; and
//! hosts that cannot run a drill (unreachable, a wrong key, no nft) are refused, each
//! named, before anything changes on any host.
//!
//! Root only (namespaces, sshd); skipped with a message otherwise, except under CI=true.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use firebreak_tests::{binary, DrillRun};

/// One set of hosts at a time: the drills assume the two cores are theirs.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Three hosts made by `scripts/ssh-hosts.sh up RUN`, removed (`down RUN`) on drop.
struct Hosts {
    run: String,
    inventory: PathBuf,
}

impl Hosts {
    fn up() -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var("CI").is_err(),
                "CI runs as root; the ssh drills need it"
            );
            eprintln!("skipped: the ssh drills need root (namespaces, sshd)");
            return None;
        }
        let bytes: [u8; 3] = rand::random();
        let run: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let out = script(&["up", &run]);
        let inventory = PathBuf::from(out.lines().last().expect("up prints the inventory last"));
        assert!(inventory.is_file(), "{out}");
        Some(Self { run, inventory })
    }

    fn base(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/fbh-{}", self.run))
    }

    fn namespace(&self, host: usize) -> String {
        format!("fbh-{}-{host}", self.run)
    }

    /// The nftables tables of a host.
    fn tables(&self, host: usize) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.namespace(host),
                "nft",
                "list",
                "tables",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into()
    }

    /// The firebreak processes running on a host (sshd aside).
    fn firebreak_processes(&self, host: usize) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.namespace(host)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains("/bin/firebreak-"))
            .collect()
    }

    /// The runs whose dir is on a host.
    fn runs(&self, host: usize) -> Vec<String> {
        let dir = self.base().join(format!("host{host}/firebreak/runs"));
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Asserts that no host holds a process, table or dir of any drill run.
    fn assert_clean(&self, after: &str) {
        for host in 1..=3 {
            assert_eq!(
                self.firebreak_processes(host),
                Vec::<String>::new(),
                "host {host} {after}"
            );
            assert!(
                !self.tables(host).contains("fb_"),
                "host {host} {after}: {}",
                self.tables(host)
            );
            assert_eq!(self.runs(host), Vec::<String>::new(), "host {host} {after}");
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .args(["scripts/ssh-hosts.sh", "down", &self.run])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status();
    }
}

/// Runs `scripts/ssh-hosts.sh ARGS`, asserting success; its stdout.
fn script(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg("scripts/ssh-hosts.sh")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "ssh-hosts.sh {args:?}: {stdout}\n{stderr}"
    );
    stdout.into()
}

fn cleanup(run: &str, inventory: &Path) -> (i32, String) {
    let out = Command::new(binary())
        .args(["drill", "cleanup", "--run", run, "--inventory"])
        .arg(inventory)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The run id the drill printed (`run ab12cd`), waiting for it.
fn drill_run_id(drill: &DrillRun, until: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let err = std::fs::read_to_string(drill.out.path().join("stderr")).unwrap_or_default();
        if err.contains(until) {
            let id = err.split("; run ").nth(1).expect("the drill names its run");
            return id[..6].to_string();
        }
        assert!(Instant::now() < deadline, "no {until:?} in: {err}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_drills_pass_on_ssh_hosts_and_leave_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(hosts) = Hosts::up() else { return };
    let inventory = hosts.inventory.display().to_string();
    for (playbook, fault) in [
        ("playbooks/pangyo-fire.yaml", "site-loss pangyo"),
        (
            "playbooks/site-isolation.yaml",
            "partition pangyo <-> gasan, busan",
        ),
        // Pause, clean restart, kill, loss, a flapping link and a power loss, over ssh.
        (
            "tests/playbooks/ssh-faults-small.yaml",
            "unsynced data discarded",
        ),
    ] {
        let mut drill = DrillRun::start_args(&[playbook, "--inventory", &inventory], 7301, &[]);
        let (code, stdout, stderr) = drill.wait();
        assert_eq!(
            code, 0,
            "{playbook} must pass on ssh hosts\n{stdout}\n{stderr}"
        );
        assert!(
            stderr.contains("on ssh hosts 10.252.0.1, 10.252.0.2, 10.252.0.3"),
            "{stderr}"
        );
        assert!(stderr.contains(fault), "{stderr}");
        for service in drill.report()["services"].as_array().unwrap() {
            assert_eq!(service["lost"], 0, "{playbook}: {}", service["service"]);
        }
        // The sites' output came back over ssh into the local logs.
        let log = drill.out.path().join("report/sites/gasan/node.log");
        assert!(
            std::fs::metadata(&log).is_ok_and(|m| m.len() > 0),
            "{}",
            log.display()
        );
        hosts.assert_clean(&format!("after {playbook}"));
    }
}

#[test]
fn a_drill_killed_mid_partition_heals_on_the_hosts_and_cleanup_removes_the_rest() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(hosts) = Hosts::up() else { return };
    let inventory = hosts.inventory.display().to_string();
    let args = [
        "tests/playbooks/ssh-kill-small.yaml",
        "--inventory",
        &inventory,
    ];
    let mut drill = DrillRun::start_args(&args, 7301, &[]);
    let run = drill_run_id(&drill, "partition pangyo <-> gasan, busan");
    // SAFETY: kill(2) on the drill we started.
    unsafe { libc::kill(drill.child.id() as i32, libc::SIGKILL) };
    let _ = drill.child.wait();
    let killed = Instant::now();
    let table = format!("fb_{run}_part");
    assert!(
        hosts.tables(1).contains(&table),
        "the cut is in place: {}",
        hosts.tables(1)
    );

    // 8 s of partition + 10 s of grace: every host deletes its table by itself.
    let deadline = killed + Duration::from_secs(30);
    while (1..=3).any(|h| hosts.tables(h).contains(&table)) {
        assert!(
            Instant::now() < deadline,
            "the partition outlived its expiry"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "the hosts healed {:.1} s after the drill died",
        killed.elapsed().as_secs_f64()
    );
    assert!(
        !hosts.firebreak_processes(1).is_empty(),
        "the sites still run: cleanup's job"
    );

    let (code, out) = cleanup(&run, &hosts.inventory);
    assert_eq!(code, 0, "{out}");
    for site in ["pangyo", "gasan", "busan"] {
        assert!(
            out.contains(&format!("{site}/root@")) && out.contains("(node)"),
            "{out}"
        );
    }
    assert!(out.contains(&format!("/runs/{run}")), "{out}");
    // The drop-unsynced disks the killed drill had mounted, one per site.
    assert_eq!(out.matches("removed mount ").count(), 3, "{out}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&format!("/runs/{run}/")), "{mounts}");
    hosts.assert_clean("after cleanup");
    let (code, out) = cleanup(&run, &hosts.inventory);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("nothing left of run {run} on the 3 hosts")),
        "{out}"
    );
}

/// An extra sshd on host 3, port 2222, whose sessions have no /usr/sbin on their PATH (so
/// no `nft`); killed by its PID on drop.
struct NoNftSshd {
    pid: i32,
}

impl NoNftSshd {
    fn start(hosts: &Hosts) -> Self {
        let dir = hosts.base().join("host3");
        let config = std::fs::read_to_string(dir.join("sshd_config")).unwrap();
        let config = config
            .replace("Port 22", "Port 2222")
            .replace("sshd.pid", "sshd-no-nft.pid")
            + "SetEnv PATH=/usr/bin:/bin\n";
        let path = dir.join("sshd_config_no_nft");
        std::fs::write(&path, config).unwrap();
        let status = Command::new("ip")
            .args(["netns", "exec", &hosts.namespace(3), "/usr/sbin/sshd", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let pidfile = dir.join("sshd-no-nft.pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                break pid;
            }
            assert!(
                Instant::now() < deadline,
                "the extra sshd never wrote its pid"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Self { pid }
    }
}

impl Drop for NoNftSshd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the sshd this test started.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
    }
}

#[test]
fn hosts_that_cannot_run_the_drill_are_refused_before_anything_changes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(hosts) = Hosts::up() else { return };
    let _sshd = NoNftSshd::start(&hosts);
    let wrong_key = hosts.base().join("wrong_key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&wrong_key)
        .status()
        .unwrap();
    assert!(status.success());
    let good = std::fs::read_to_string(&hosts.inventory).unwrap();
    let client_key = hosts.base().join("client_key").display().to_string();
    let mut lines: Vec<String> = good.lines().map(String::from).collect();
    for line in &mut lines {
        if line.contains("10.252.0.1,") {
            *line = line.replace(&client_key, &wrong_key.display().to_string());
        } else if line.contains("10.252.0.2,") {
            *line = line.replace("10.252.0.2,", "10.252.0.9,");
        } else if line.contains("10.252.0.3,") {
            *line = line.replace("user: root,", "user: root, port: 2222,");
        }
    }
    let bad = hosts.base().join("bad-inventory.yaml");
    std::fs::write(&bad, lines.join("\n")).unwrap();

    let args = [
        "playbooks/site-isolation.yaml",
        "--inventory",
        bad.to_str().unwrap(),
    ];
    let mut drill = DrillRun::start_args(&args, 7301, &[]);
    let (code, _, stderr) = drill.wait();
    assert_eq!(code, 10, "a drill that cannot run exits 10: {stderr}");
    assert!(
        stderr.contains("nothing was changed on any host"),
        "{stderr}"
    );
    for (host, why) in [
        ("site pangyo's host root@10.252.0.1:22", "Permission denied"),
        ("site gasan's host root@10.252.0.9:22", "ssh failed"),
        (
            "site busan's host root@10.252.0.3:2222",
            "no `nft` on the host",
        ),
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(host))
            .unwrap_or_else(|| panic!("{host} not named: {stderr}"));
        assert!(line.contains(why), "{host}: {line}");
    }
    for host in 1..=3 {
        assert_eq!(
            hosts.runs(host),
            Vec::<String>::new(),
            "nothing installed on host {host}"
        );
    }
}

#[test]
fn a_cleanup_that_fails_is_in_the_verdict_and_the_command_finishes_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(hosts) = Hosts::up() else { return };
    let inventory = hosts.inventory.display().to_string();
    let args = ["tests/playbooks/kv-small.yaml", "--inventory", &inventory];
    let mut drill = DrillRun::start_args(&args, 7301, &[]);
    let run = drill_run_id(&drill, "sites up and serving");
    // busan's sshd stops listening: the drill's open connection goes on, a new one (the
    // end of the drill's cleanup) is refused.
    let pidfile = hosts.base().join("host3/sshd.pid");
    let sshd: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on the sshd scripts/ssh-hosts.sh started for this test.
    unsafe { libc::kill(sshd, libc::SIGTERM) };
    let (code, stdout, stderr) = drill.wait();
    assert_eq!(
        code, 0,
        "the verdict is reached and written\n{stdout}\n{stderr}"
    );
    let incidents = drill.report()["incidents"].to_string();
    let left = format!("cleanup of run {run} failed on busan/root@10.252.0.3");
    assert!(incidents.contains(&left), "{incidents}");
    assert!(
        incidents.contains(&format!("firebreak drill cleanup --run {run}")),
        "{incidents}"
    );
    assert_eq!(
        hosts.runs(3),
        vec![run.clone()],
        "busan still holds the run"
    );
    assert_eq!(hosts.runs(1), Vec::<String>::new(), "pangyo was cleaned");

    let config = hosts.base().join("host3/sshd_config");
    let status = Command::new("ip")
        .args(["netns", "exec", &hosts.namespace(3), "/usr/sbin/sshd", "-f"])
        .arg(&config)
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let (code, out) = cleanup(&run, &hosts.inventory);
        if code == 0 || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(out.contains("busan/root@10.252.0.3: removed dir"), "{out}");
    hosts.assert_clean("after the cleanup command");
}
