//! The command driver: the drill judges the same history when every site action is an
//! operator's shell hook. `kv-small` passes through `examples/commands-local.yaml`
//! (no root); a partition drill passes with hooks that start the sites inside network
//! namespaces and cut them with nft (root: the ssh test hosts' namespaces, reached without
//! ssh); a playbook whose faults lack a hook is refused before anything starts, and a kill
//! hook that fails does not hang the drill.

use std::path::Path;
use std::process::Command;

use firebreak_tests::DrillRun;

/// One drill at a time: each assumes the two cores are its own.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const PORT: u16 = 7591;

#[test]
fn a_drill_passes_through_the_local_command_hooks() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // kv-small: a site loss and a restore, through examples/commands-local.yaml (the full
    // services go through hooks in the partition test below; `pangyo-fire` passes through
    // these hooks too, by hand: docs/operations.md).
    let args = [
        "tests/playbooks/kv-small.yaml",
        "--driver",
        "command",
        "--inventory",
        "examples/commands-local.yaml",
    ];
    let mut drill = DrillRun::start_args(&args, PORT, &[]);
    let (code, stdout, stderr) = drill.wait();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("through command hooks at 127.0.1.1, 127.0.2.1, 127.0.3.1"),
        "{stderr}"
    );
    assert!(stderr.contains("site-loss pangyo"), "{stderr}");
    assert!(
        stdout.contains("--driver command --inventory examples/commands-local.yaml"),
        "{stdout}"
    );
}

/// `examples/commands-local.yaml` with `edit` applied, in `dir`.
fn hooks_file(dir: &Path, edit: impl Fn(&str) -> String) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("examples/commands-local.yaml")).unwrap();
    let path = dir.join("hooks.yaml");
    std::fs::write(&path, edit(&text)).unwrap();
    path.display().to_string()
}

#[test]
fn missing_and_failing_hooks_get_clear_errors_and_never_hang() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // A partition needs isolate and heal, which the local hooks do not have.
    let hooks = hooks_file(dir.path(), str::to_string);
    let args = [
        "playbooks/site-isolation.yaml",
        "--driver",
        "command",
        "--inventory",
        &hooks,
    ];
    let mut drill = DrillRun::start_args(&args, PORT, &[]);
    let (code, _, stderr) = drill.wait();
    assert_eq!(code, 10, "{stderr}");
    assert!(
        stderr.contains("partition of pangyo needs sites.pangyo.commands.isolate"),
        "{stderr}"
    );

    // A kill hook that fails: the site loss still ends (the start hooks are killed locally)
    // and the drill reaches its verdict.
    let hooks = hooks_file(dir.path(), |t| {
        t.replace(
            "kill: 'kill -KILL $FIREBREAK_PIDS'",
            "kill: 'echo no such pod >&2; exit 3'",
        )
    });
    let args = [
        "tests/playbooks/kv-small.yaml",
        "--driver",
        "command",
        "--inventory",
        &hooks,
    ];
    let mut drill = DrillRun::start_args(&args, PORT, &[("FIREBREAK_LOG", "warn")]);
    let (code, stdout, stderr) = drill.wait();
    assert!(
        code == 0 || code == 9,
        "a verdict, not a hang or a crash: {code}\n{stderr}"
    );
    assert!(
        stderr.contains("site pangyo's kill hook failed (exit status: 3: no such pod)"),
        "{stderr}"
    );
    assert!(stdout.contains("drill kv-small:"), "{stdout}");
}

#[test]
fn a_partition_through_hooks_into_namespaces_passes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var("CI").is_err(), "CI runs as root");
        eprintln!("skipped: hooks into network namespaces need root");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bytes: [u8; 3] = rand::random();
    let run: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hosts = HostsDown(run.clone());
    let up = Command::new("bash")
        .args(["scripts/ssh-hosts.sh", "up", &run])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let mut text = String::from("sites:\n");
    for (i, site) in ["pangyo", "gasan", "busan"].iter().enumerate() {
        let ns = format!("fbh-{run}-{}", i + 1);
        text.push_str(&format!(
            r#"  {site}:
    address: 10.252.0.{n}
    commands:
      start: 'eval "exec ip netns exec {ns} \"\$FIREBREAK_EXE\" $FIREBREAK_ARGS"'
      kill: 'kill -KILL $FIREBREAK_PIDS'
      stop: 'kill -TERM $FIREBREAK_PIDS'
      isolate: 'ip netns exec {ns} nft "add table inet fbc_$FIREBREAK_RUN; add chain inet fbc_$FIREBREAK_RUN out {{ type filter hook output priority 0 ; }}; add rule inet fbc_$FIREBREAK_RUN out ip daddr {{ $(echo $FIREBREAK_PEERS | tr " " ",") }} drop"'
      heal: 'ip netns exec {ns} nft delete table inet fbc_$FIREBREAK_RUN'
"#,
            n = i + 1
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hooks.yaml");
    std::fs::write(&file, text).unwrap();
    let args = [
        "tests/playbooks/ssh-partition-small.yaml",
        "--driver",
        "command",
        "--inventory",
        file.to_str().unwrap(),
    ];
    let mut drill = DrillRun::start_args(&args, 7301, &[]);
    let (code, stdout, stderr) = drill.wait();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("partition pangyo <-> gasan, busan"),
        "{stderr}"
    );
    for service in drill.report()["services"].as_array().unwrap() {
        assert_eq!(service["lost"], 0, "{}", service["service"]);
    }
    drop(hosts);
}

/// Removes the test hosts of a run on drop.
struct HostsDown(String);

impl Drop for HostsDown {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .args(["scripts/ssh-hosts.sh", "down", &self.0])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status();
    }
}
