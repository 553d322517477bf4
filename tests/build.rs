//! Builds the hostile guest fixtures (tests/guests, a workspace of their
//! own) for wasm32-wasip2; tests find them through HOSTILE_WASM.

use std::env;
use std::path::PathBuf;

#[path = "../shim/guest_build.rs"]
mod guest_build;

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = dir.parent().unwrap().to_path_buf();
    println!("cargo:rerun-if-changed={}", dir.join("guests").display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("shim/guest_build.rs").display()
    );
    let target_dir = root.join("target").join("guests");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = guest_build::guest_build_command(
        &cargo,
        &dir.join("guests").join("Cargo.toml"),
        &target_dir,
    );
    let status = cmd.status().expect("run cargo for the hostile guests");
    assert!(
        status.success(),
        "building tests/guests failed; run: rustup target add wasm32-wasip2"
    );
    let wasm = target_dir.join("wasm32-wasip2/release/netshim_guest_hostile.wasm");
    println!("cargo:rustc-env=HOSTILE_WASM={}", wasm.display());
    println!(
        "cargo:rustc-env=UNKNOWN_IMPORT_WAT={}",
        dir.join("guests/unknown-import.wat").display()
    );
}
