//! Where drivers come from: the built-in guests embedded in the binary, and
//! any `<name>.wasm` in the guest directories (replacing a built-in of the
//! same name), so a driver is a file an operator can swap.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Built-in guests, compiled for wasm32-wasip2 by build.rs.
pub const BUILTIN: &[(&str, &[u8])] = &[
    (
        "bridge",
        include_bytes!(concat!(env!("OUT_DIR"), "/bridge.wasm")),
    ),
    (
        "flannel",
        include_bytes!(concat!(env!("OUT_DIR"), "/flannel.wasm")),
    ),
    (
        "calico",
        include_bytes!(concat!(env!("OUT_DIR"), "/calico.wasm")),
    ),
];

#[derive(Debug, Clone)]
pub enum Source {
    Builtin(&'static [u8]),
    File(PathBuf),
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Builtin(_) => "built-in".into(),
            Source::File(p) => p.display().to_string(),
        }
    }
}

/// Every driver name and where it comes from.
pub fn discover(dirs: &[PathBuf]) -> BTreeMap<String, Source> {
    let mut all: BTreeMap<String, Source> = BUILTIN
        .iter()
        .map(|(n, b)| (n.to_string(), Source::Builtin(b)))
        .collect();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "wasm") {
                if let Some(stem) = path.file_stem() {
                    all.insert(stem.to_string_lossy().into_owned(), Source::File(path));
                }
            }
        }
    }
    all
}

/// The default guest directory: `../lib/netshim/guests` beside the binary,
/// where a package installs extra drivers.
pub fn default_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(prefix) = exe.parent().and_then(Path::parent) {
            dirs.push(prefix.join("lib/netshim/guests"));
        }
    }
    dirs
}
