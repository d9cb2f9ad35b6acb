//! The systemd units shipped in `examples/systemd/` load cleanly (`systemd-analyze verify`
//! reports nothing), and their pre-start check is the binary's real `--check-config`.
//! Skipped where systemd-analyze is missing.

use std::process::Command;

use firebreak_tests::binary;

#[test]
fn the_shipped_units_verify_cleanly() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no systemd-analyze on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/systemd");
    let mut units = Vec::new();
    for entry in std::fs::read_dir(&source).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        // Verify resolves ExecStart's binary: point it at the one under test.
        let text = text.replace("/usr/local/bin/firebreak", &binary().display().to_string());
        assert!(text.contains("ExecStart="), "{}", entry.path().display());
        let name = entry
            .file_name()
            .to_string_lossy()
            .replace("@.service", "@messaging.service");
        std::fs::write(dir.path().join(&name), text).unwrap();
        units.push(dir.path().join(name));
    }
    assert_eq!(units.len(), 2, "a node unit and a service template");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
    let node = std::fs::read_to_string(source.join("firebreak-node.service")).unwrap();
    assert!(node.contains("ExecStartPre=/usr/local/bin/firebreak node --config /etc/firebreak/node.yaml --check-config"));
}
