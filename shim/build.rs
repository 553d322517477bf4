//! Builds the built-in guests (guests/, a workspace of its own) for
//! wasm32-wasip2 and leaves them in OUT_DIR, where `src/guests.rs` embeds
//! them: the `netshim` binary carries its drivers, nobody copies .wasm files.

use std::env;
use std::path::{Path, PathBuf};

const GUESTS: &[&str] = &["bridge", "flannel", "calico"];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed={}", root.join("guests").display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("guest_build.rs").display()
    );
    println!("cargo:rerun-if-env-changed=NETSHIM_GUESTS_PREBUILT");

    // Packagers may build the guests separately and point here.
    if let Ok(dir) = env::var("NETSHIM_GUESTS_PREBUILT") {
        for g in GUESTS {
            std::fs::copy(
                Path::new(&dir).join(format!("{g}.wasm")),
                out.join(format!("{g}.wasm")),
            )
            .expect("copy prebuilt guest");
        }
        return;
    }

    let target_dir = root.join("target").join("guests");
    build_guest_workspace(&root.join("guests").join("Cargo.toml"), &target_dir);
    for g in GUESTS {
        let built = target_dir
            .join("wasm32-wasip2")
            .join("release")
            .join(format!("netshim_guest_{g}.wasm"));
        std::fs::copy(&built, out.join(format!("{g}.wasm")))
            .unwrap_or_else(|e| panic!("guest {g} not built at {}: {e}", built.display()));
    }
}

#[path = "guest_build.rs"]
mod guest_build;

fn build_guest_workspace(manifest: &Path, target_dir: &Path) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = guest_build::guest_build_command(&cargo, manifest, target_dir)
        .status()
        .expect("run cargo for the guests");
    if !status.success() {
        panic!(
            "building the wasm guests in {} failed; is the target installed? run: rustup target add wasm32-wasip2",
            manifest.display()
        );
    }
}
