//! The command line without root: help, the built-in guests, and errors
//! that say what to do. (Also makes cargo build the binary that the
//! integration tests in tests/ drive.)

use std::process::Command;

fn netshim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_netshim"))
        .args(args)
        .env(
            "NETSHIM_STATE_DIR",
            std::env::temp_dir().join("netshim-cli-test"),
        )
        .output()
        .unwrap()
}

#[test]
fn builtin_bridge_guest_is_listed_and_loads() {
    let out = netshim(&["guest", "ls"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bridge") && text.contains("built-in"),
        "{text}"
    );
}

#[test]
fn guest_check_reports_the_wit_version_or_why_it_is_refused() {
    let dir = std::env::temp_dir().join(format!("netshim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.wasm");
    std::fs::write(&bad, b"not wasm").unwrap();
    let out = netshim(&["guest", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a valid component"), "{err}");

    let unknown = dir.join("evil.wat");
    std::fs::write(
        &unknown,
        r#"(component (import "evil:net/raw-socket@1.0.0" (instance (export "open" (func)))))"#,
    )
    .unwrap();
    let out = netshim(&[
        "--output",
        "json",
        "guest",
        "check",
        unknown.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("errors are JSON on stdout with --output json");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("evil:net/raw-socket"),
        "{json}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn usage_errors_are_clear() {
    let out = netshim(&["detach", "--network", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--netns"));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_netshim"))
        .args([
            "--log-format",
            "json",
            "guest",
            "check",
            "/nonexistent.wasm",
        ])
        .env("NETSHIM_LOG", "debug")
        .env(
            "NETSHIM_STATE_DIR",
            std::env::temp_dir().join("netshim-cli-test"),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<&str> = err.lines().filter(|l| l.starts_with('{')).collect();
    assert!(!logs.is_empty(), "no JSON log lines in: {err}");
    for l in logs {
        let v: serde_json::Value = serde_json::from_str(l).expect(l);
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
}
