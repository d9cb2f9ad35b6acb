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
        "cluster: c\nnode_id: 1\nsite: pangyo\nlisten: 127.0.0.1:0\ndata_dir: {}\npeers:\n  - {{ id: 1, site: pangyo, addr: \"127.0.0.1:1\" }}\n",
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
fn commands_fail_over_across_nodes_and_report_unavailable() {
    // Nothing listens on these ports: every node is tried and the exit code says so.
    let (code, _, err) = firebreak(&["kv", "get", "k", "--nodes", "127.0.0.1:9,127.0.0.1:10"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("127.0.0.1:9") && err.contains("127.0.0.1:10"),
        "{err}"
    );
}
