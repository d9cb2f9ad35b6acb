//! The `firebreak` binary as a user meets it: exit codes and error messages.

use std::process::Command;

fn firebreak(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(args)
        .output()
        .expect("run firebreak");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn version_prints_the_version() {
    let (code, out, _) = firebreak(&["version"]);
    assert_eq!(
        (code, out.trim()),
        (0, concat!("firebreak ", env!("CARGO_PKG_VERSION")))
    );
}

#[test]
fn certificates_are_made_by_the_cli_and_mistakes_get_clear_errors() {
    let dir = tempfile::TempDir::new().unwrap();
    let ca = dir.path().join("ca");
    let ca = ca.to_str().unwrap();
    let out = dir.path().to_str().unwrap();
    let (code, stdout, err) = firebreak(&["ca", "init", "--cluster", "prod", "--dir", ca]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("made the CA of cluster prod"), "{stdout}");
    // A CA is never replaced in place.
    let (code, _, err) = firebreak(&["ca", "init", "--cluster", "prod", "--dir", ca]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already exists"), "{err}");
    let (code, stdout, err) = firebreak(&[
        "cert", "issue", "node", "--id", "3", "--host", "10.0.3.1", "--ca", ca, "--out", out,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("firebreak://prod/node/3"), "{stdout}");
    assert!(dir.path().join("node-3.pem").exists() && dir.path().join("node-3.key").exists());
    let (code, stdout, err) = firebreak(&[
        "cert", "issue", "service", "payments", "--ca", ca, "--out", out,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("firebreak://prod/service/payments"),
        "{stdout}"
    );
    for (args, needle) in [
        (
            vec!["cert", "issue", "operator", "Alice!", "--ca", ca],
            "a-z, 0-9",
        ),
        (
            vec!["cert", "issue", "operator", "alice", "--ca", out],
            "ca.pem",
        ),
        (
            vec![
                "cert", "issue", "operator", "alice", "--ca", ca, "--days", "0",
            ],
            "1 to 3650",
        ),
    ] {
        let (code, _, err) = firebreak(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn malformed_config_names_file_line_and_field_and_exits_2() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("node.yaml");
    std::fs::write(&path, "cluster: c\nnode_id: 1\nsite: pangyo\nlisten: 127.0.0.1:1\ndata_dir: d\npeers: []\nheartbeat: 5\n").unwrap();
    let (code, _, err) = firebreak(&["node", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("node.yaml:7:1") && err.contains("unknown field `heartbeat`"),
        "{err}"
    );
}

#[test]
fn data_dir_of_another_node_is_refused_with_exit_6() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("identity.json"), r#"{"cluster":"c","node_id":2}"#).unwrap();
    let path = dir.path().join("node.yaml");
    let config = format!(
        "cluster: c\nnode_id: 1\nsite: pangyo\nlisten: 127.0.0.1:0\npeer_listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n\
         tls: {{ plaintext_for_debugging: true }}\ndata_dir: {}\npeers:\n  - {{ id: 1, site: pangyo, addr: \"127.0.0.1:1\" }}\n",
        data.display()
    );
    std::fs::write(&path, config).unwrap();
    let (code, _, err) = firebreak(&["node", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("belongs to node 2"), "{err}");
    // Nothing was written into the other node's data dir.
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1);
}

#[test]
fn check_config_says_what_a_node_would_find_and_changes_nothing() {
    let dir = tempfile::TempDir::new().unwrap();
    let (ca, out) = (dir.path().join("ca"), dir.path());
    let ca = ca.to_str().unwrap();
    assert_eq!(
        firebreak(&["ca", "init", "--cluster", "c", "--dir", ca]).0,
        0
    );
    let issue = [
        "cert",
        "issue",
        "node",
        "--id",
        "1",
        "--host",
        "127.0.0.1",
        "--ca",
        ca,
    ];
    let (code, _, err) = firebreak(&[&issue[..], &["--out", out.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{err}");
    let data = dir.path().join("data");
    let path = dir.path().join("node.yaml");
    let config = |id: u64| {
        format!(
            "cluster: c\nnode_id: {id}\nsite: pangyo\nlisten: 127.0.0.1:0\npeer_listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n\
             tls: {{ ca_file: {ca}/ca.pem, cert_file: {o}/node-1.pem, key_file: {o}/node-1.key }}\n\
             data_dir: {}\npeers:\n  - {{ id: {id}, site: pangyo, addr: \"127.0.0.1:1\" }}\n",
            data.display(),
            o = out.display(),
        )
    };
    std::fs::write(&path, config(1)).unwrap();
    let check = ["node", "--config", path.to_str().unwrap(), "--check-config"];
    let (code, stdout, err) = firebreak(&check);
    assert_eq!(code, 0, "{err}");
    for found in [
        "node 1's certificate of cluster c",
        "is new",
        "ok, node 1 would start",
    ] {
        assert!(stdout.contains(found), "{found}: {stdout}");
    }
    assert!(!data.exists(), "a check writes nothing");
    // The certificate of node 1 under node 2's config: refused, as the node would.
    std::fs::write(&path, config(2)).unwrap();
    let (code, _, err) = firebreak(&check);
    assert_ne!(code, 0);
    assert!(err.contains("names firebreak://c/node/1"), "{err}");
    assert!(!data.exists(), "a check writes nothing");
}

#[test]
fn commands_fail_over_across_nodes_and_report_unavailable() {
    let dir = tempfile::TempDir::new().unwrap();
    let ca = dir.path().join("ca");
    let (code, _, err) = firebreak(&[
        "ca",
        "init",
        "--cluster",
        "c",
        "--dir",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let ca_pem = ca.join("ca.pem");
    // Nothing listens on these ports: every node is tried and the exit code says so.
    let nodes = [
        "--nodes",
        "127.0.0.1:9,127.0.0.1:10",
        "--ca",
        ca_pem.to_str().unwrap(),
    ];
    let (code, _, err) = firebreak(&[&["kv", "get", "k"][..], &nodes].concat());
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("127.0.0.1:9") && err.contains("127.0.0.1:10"),
        "{err}"
    );
}

/// The README's first command: `firebreak up --services` brings up three sites with the
/// services behind every gateway, and SIGTERM stops every process it started.
#[test]
fn up_with_services_serves_through_every_gateway_and_stops_everything() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};
    let dir = tempfile::TempDir::new().unwrap();
    let mut up = Command::new(env!("CARGO_BIN_EXE_firebreak"))
        .args(["up", "--services", "--port", "7391", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run firebreak up");
    let stdout = up.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready = false;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains("Ctrl-C stops everything") => {
                ready = true;
                break;
            }
            _ => {}
        }
    }
    let pids: Vec<i32> = std::fs::read_dir(dir.path().join("pangyo"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect();
    let answered = ready && {
        // Any node's gateway serves the services; retry while health checks settle.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if https_get(
                &dir.path().join("ca/ca.pem"),
                "127.0.3.1:7391",
                "/payments/accounts",
            )
            .is_some_and(|r| r.contains("accounts"))
            {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // SAFETY: kill(2) on the PID of the child this test spawned.
    unsafe { libc::kill(up.id() as i32, libc::SIGTERM) };
    let status = up.wait().unwrap();
    assert!(ready, "up did not report ready");
    assert!(answered, "the gateway did not serve payments");
    assert_eq!(status.code(), Some(0));
    assert_eq!(pids.len(), 4, "pangyo runs a node and three services");
    for pid in pids {
        // SAFETY: signal 0 only checks whether the process exists.
        assert_ne!(
            unsafe { libc::kill(pid, 0) },
            0,
            "process {pid} outlived up"
        );
    }
}

/// A GET over TLS trusting `ca`: the body of a 200 answer, or None.
fn https_get(ca: &std::path::Path, addr: &str, path: &str) -> Option<String> {
    let tls = firebreak_tls::ClientTls::new(ca, None).ok()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let http = tls
            .apply(reqwest::Client::builder())
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .ok()?;
        let response = http.get(tls.url(addr, path)).send().await.ok()?;
        match response.status().is_success() {
            true => response.text().await.ok(),
            false => None,
        }
    })
}

#[test]
fn drill_check_validates_a_playbook_without_running_it() {
    let root = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../playbooks/pangyo-fire.yaml"
    );
    let (code, out, err) = firebreak(&["drill", root, "--check", "--seed", "42"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("valid: pangyo-fire: 3 sites, 3 services, 2 faults")
            && out.contains("seed 42"),
        "{out}"
    );

    let dir = tempfile::TempDir::new().unwrap();
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(root)
        .unwrap()
        .replace("target: pangyo }", "target: pangy }");
    std::fs::write(&broken, text).unwrap();
    let (code, out, err) = firebreak(&["drill", broken.to_str().unwrap(), "--check"]);
    assert_eq!(code, 2, "a bad playbook is a usage error: {out}{err}");
    assert!(
        err.contains("broken.yaml:32:46: timeline[0].target: no site \"pangy\""),
        "the error names file, line, column and field: {err}"
    );

    let (code, _, err) = firebreak(&["drill", "no/such/playbook.yaml", "--check"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("failed to read no/such/playbook.yaml"),
        "{err}"
    );
}

/// The scale benchmark at a small size: every figure it promises is printed.
#[test]
fn bench_control_measures_the_control_state_at_scale() {
    let (code, out, err) = firebreak(&[
        "bench",
        "control",
        "--services",
        "100",
        "--sites",
        "3",
        "--rounds",
        "3",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    for figure in [
        "decide(), quiet fleet",
        "decide(), a site down",
        "(50 route changes)",
        "snapshot",
        "DNS lookups",
        "resident memory",
    ] {
        assert!(out.contains(figure), "{figure} missing:\n{out}");
    }
    let (code, _, err) = firebreak(&["bench", "control", "--services", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--services must be 1 to 10000"), "{err}");
}
