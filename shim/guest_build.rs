//! `cargo build` of a guest workspace for wasm32-wasip2, shared by
//! shim/build.rs, tests/build.rs and the scaffold test (each includes this
//! file): the outer build's flags and target are for the host, and must
//! not reach the wasm build.

use std::path::Path;
use std::process::Command;

/// The command that builds `manifest` into `target_dir`; the caller runs it.
pub fn guest_build_command(cargo: &str, manifest: &Path, target_dir: &Path) -> Command {
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(manifest)
    .arg("--target-dir")
    .arg(target_dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    cmd
}
