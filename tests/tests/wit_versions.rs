//! Every released WIT version keeps linking: the bridge driver as built
//! against netshim:plugin@0.1.0 (a binary fixture, tests/guests/fixtures)
//! loads next to the built-in bridge, now on 0.2, and both work on the real
//! kernel under the host's scoping rules, side by side on one node.

use std::path::PathBuf;

use netshim_tests::{can_run, netshim_bin, Node, Ns, TempDir, NODE_ADDR, OUTSIDE_ADDR};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("guests/fixtures/bridge-v0.1.0.wasm")
}

/// `guest check` of a component: its JSON report.
fn check(file: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new(netshim_bin())
        .args(["--output", "json", "guest", "check"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn guest_check_reports_each_version() {
    let v = check(&fixture());
    assert_eq!(v["wit"], "netshim:plugin@0.1.0", "{v}");
    let imports = v["imports"].to_string();
    assert!(
        imports.contains("netshim:plugin/netfilter@0.1.0"),
        "{imports}"
    );
    // The built-in bridge, as shim/build.rs built it for this test run.
    let builtin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/guests/wasm32-wasip2/release/netshim_guest_bridge.wasm");
    let v = check(&builtin);
    assert_eq!(v["wit"], "netshim:plugin@0.2.0", "{v}");
    let imports = v["imports"].to_string();
    assert!(
        imports.contains("netshim:plugin/netfilter@0.2.0") && !imports.contains("netfilter@0.1.0"),
        "{imports}"
    );
}

#[test]
fn a_0_1_driver_and_a_0_2_driver_side_by_side() {
    if !can_run() {
        return;
    }
    let node = Node::new("witv");
    let guests = TempDir::new("witv-guests");
    std::fs::copy(fixture(), guests.0.join("bridge01.wasm")).unwrap();
    let g = guests.0.to_str().unwrap();
    let (links, addrs, routes) = node.baseline();
    let ls = node.json(&["--guest-dir", g, "guest", "ls"]).to_string();
    assert!(ls.contains("bridge01") && ls.contains("\"bridge\""), "{ls}");

    node.ok(&[
        "--guest-dir",
        g,
        "network",
        "create",
        "old",
        "--driver",
        "bridge01",
        "--subnet",
        "10.71.0.0/24",
    ]);
    node.ok(&["network", "create", "new", "--subnet", "10.72.0.0/24"]);
    let (a, b, c) = (Ns::new("witv-a"), Ns::new("witv-b"), Ns::new("witv-c"));
    for (net, sb) in [("old", &a), ("old", &b), ("new", &c)] {
        node.ok(&[
            "--guest-dir",
            g,
            "attach",
            "--network",
            net,
            "--netns",
            sb.path.to_str().unwrap(),
        ]);
    }
    // The 0.1 driver: its endpoints talk, and reach outside masqueraded.
    assert!(a.ping("10.71.0.3"), "0.1: a cannot ping b");
    let seen = node.outside.accept_one(&format!("{OUTSIDE_ADDR}:7100"));
    a.connect(&format!("{OUTSIDE_ADDR}:7100"))
        .expect("0.1: a -> outside");
    assert_eq!(
        seen.join().unwrap().ip().to_string(),
        NODE_ADDR,
        "0.1: not masqueraded"
    );
    // The 0.2 driver: the same, through its attach points.
    let seen = node.outside.accept_one(&format!("{OUTSIDE_ADDR}:7101"));
    c.connect(&format!("{OUTSIDE_ADDR}:7101"))
        .expect("0.2: c -> outside");
    assert_eq!(
        seen.join().unwrap().ip().to_string(),
        NODE_ADDR,
        "0.2: not masqueraded"
    );
    let ruleset = node.node.nft_ruleset();
    // 0.1's hooked chains became host dispatch on the driver-wide set; 0.2's
    // attachments dispatch on the network's own set.
    assert!(
        ruleset.contains("table inet netshim-bridge01") && ruleset.contains("@netshim-ifs"),
        "{ruleset}"
    );
    assert!(
        ruleset.contains("table inet netshim-bridge {") && ruleset.contains("@netshim-net-"),
        "{ruleset}"
    );
    assert!(!ruleset.contains("policy drop"), "{ruleset}");

    for (net, sb) in [("old", &a), ("old", &b), ("new", &c)] {
        node.ok(&[
            "--guest-dir",
            g,
            "detach",
            "--network",
            net,
            "--netns",
            sb.path.to_str().unwrap(),
        ]);
    }
    node.ok(&["--guest-dir", g, "network", "rm", "old"]);
    // A 0.2 network removed while another of its driver stays: the host's
    // dispatch set and jumps for it go, the other's stay.
    node.ok(&["network", "create", "new2", "--subnet", "10.73.0.0/24"]);
    let id = node.json(&["network", "inspect", "new"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let tag = format!("netshim-net-{}", &id[..12]);
    assert!(node.node.nft_ruleset().contains(&tag));
    node.ok(&["network", "rm", "new"]);
    let ruleset = node.node.nft_ruleset();
    assert!(
        !ruleset.contains(&tag),
        "network new's dispatch is left:\n{ruleset}"
    );
    assert!(
        ruleset.contains("@netshim-net-"),
        "network new2 lost its dispatch:\n{ruleset}"
    );
    node.ok(&["network", "rm", "new2"]);
    assert_eq!(
        node.baseline(),
        (links, addrs, routes),
        "kernel objects left behind"
    );
    let ruleset = node.node.nft_ruleset();
    assert!(
        !ruleset.contains("netshim"),
        "tables left behind:\n{ruleset}"
    );
}
