//! `netshim guest new NAME`: a new driver crate from a template, with the
//! WIT it targets copied beside it, ready for `cargo build --release
//! --target wasm32-wasip2`. The template is a working driver (records only,
//! with an IPAM); the comments say where the kernel work goes.

use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "guest name {0:?}: use 1 to 32 lowercase letters, digits and '-', starting with a letter"
    )]
    Name(String),
    #[error("{0} already exists; pick another name or directory")]
    Exists(PathBuf),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

const CARGO_TOML: &str = include_str!("../templates/guest/Cargo.toml");
const LIB_RS: &str = include_str!("../templates/guest/lib.rs");

/// The WIT files a 0.2 guest builds against, at the paths its
/// `generate!` expects.
const WIT: &[(&str, &str)] = &[
    (
        "wit/v0.2.0/host.wit",
        include_str!("../../wit/v0.2.0/host.wit"),
    ),
    (
        "wit/v0.2.0/world.wit",
        include_str!("../../wit/v0.2.0/world.wit"),
    ),
    (
        "wit/v0.2.0/deps/netshim-plugin-0.1.0/types.wit",
        include_str!("../../wit/v0.1.0/types.wit"),
    ),
    (
        "wit/v0.2.0/deps/netshim-plugin-0.1.0/host.wit",
        include_str!("../../wit/v0.1.0/host.wit"),
    ),
    (
        "wit/v0.2.0/deps/netshim-plugin-0.1.0/driver.wit",
        include_str!("../../wit/v0.1.0/driver.wit"),
    ),
];

fn valid(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Write the crate for driver `name` into `dir/name`; returns its path.
pub fn new_guest(name: &str, dir: &Path) -> Result<PathBuf, ScaffoldError> {
    if !valid(name) {
        return Err(ScaffoldError::Name(name.into()));
    }
    let root = dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let fill = |t: &str| {
        t.replace("{{NAME}}", name)
            .replace("{{CRATE}}", &name.replace('-', "_"))
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
    ]
    .into_iter()
    .chain(WIT.iter().map(|(p, t)| (*p, t.to_string())));
    for (rel, text) in files {
        let path = root.join(rel);
        let write = |source| ScaffoldError::Write {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(path.parent().unwrap_or(&root)).map_err(write)?;
        fs::write(&path, text).map_err(write)?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_files() {
        let dir = std::env::temp_dir().join(format!("netshim-scaffold-{}", std::process::id()));
        for bad in ["", "Up", "1x", "a_b", "a/b", &"x".repeat(33)] {
            assert!(
                matches!(new_guest(bad, &dir), Err(ScaffoldError::Name(_))),
                "{bad:?}"
            );
        }
        let root = new_guest("my-driver", &dir).unwrap();
        let lib = fs::read_to_string(root.join("src/lib.rs")).unwrap();
        assert!(lib.contains("my-driver does not make endpoints") && !lib.contains("{{"));
        assert!(fs::read_to_string(root.join("Cargo.toml"))
            .unwrap()
            .contains("name = \"my-driver\""));
        assert!(root
            .join("wit/v0.2.0/deps/netshim-plugin-0.1.0/driver.wit")
            .exists());
        assert!(matches!(
            new_guest("my-driver", &dir),
            Err(ScaffoldError::Exists(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
