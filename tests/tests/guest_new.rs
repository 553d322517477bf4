//! `netshim guest new`: the scaffolded crate builds for wasm32-wasip2, is a
//! WIT 0.2 component the host loads, and serves a network on the real
//! kernel; what it does not do yet (endpoints) is refused cleanly.

use std::path::PathBuf;
use std::process::Command;

use netshim_tests::guest_build::guest_build_command;
use netshim_tests::{can_run, netshim_bin, Node, Ns, TempDir};

#[test]
fn a_scaffolded_guest_builds_loads_and_serves() {
    let dir = TempDir::new("guest-new");
    let out = Command::new(netshim_bin())
        .args(["--output", "json", "guest", "new", "demo", "--dir"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Build it as its author would; the workspace's guest target dir keeps
    // wit-bindgen compiled between runs.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let target = root.join("target/guests");
    let mut build = guest_build_command(
        env!("CARGO"),
        std::path::Path::new(made["manifest"].as_str().unwrap()),
        &target,
    );
    let built = build.output().unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let wasm = target.join("wasm32-wasip2/release/demo.wasm");
    let check = Command::new(netshim_bin())
        .args(["--output", "json", "guest", "check"])
        .arg(&wasm)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(report["wit"], "netshim:plugin@0.2.0", "{report}");

    if !can_run() {
        return;
    }
    let node = Node::new("gnew");
    let guests = TempDir::new("gnew-guests");
    std::fs::copy(&wasm, guests.0.join("demo.wasm")).unwrap();
    let g = guests.0.to_str().unwrap();
    let before = node.baseline();
    node.ok(&[
        "--guest-dir",
        g,
        "network",
        "create",
        "d1",
        "--driver",
        "demo",
        "--subnet",
        "10.60.0.0/24",
    ]);
    let net = node
        .json(&["--guest-dir", g, "network", "inspect", "d1"])
        .to_string();
    assert!(net.contains("10.60.0.1"), "{net}");
    let c = Ns::new("gnew-c");
    let refused = node.netshim(&[
        "--guest-dir",
        g,
        "attach",
        "--network",
        "d1",
        "--netns",
        c.path.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("does not make endpoints yet"), "{err}");
    assert_eq!(
        c.links(),
        vec!["lo"],
        "a refused attach left a link in the sandbox"
    );
    node.ok(&["--guest-dir", g, "network", "rm", "d1"]);
    assert_eq!(node.baseline(), before);
}
