//! `netshim guest new NAME`: a new driver crate from a template, ready for
//! `cargo build --release --target wasm32-wasip2`. The template is a
//! working driver (records only, with the SDK's IPAM); the comments say
//! where the kernel work goes.
//!
//! The crate depends on the guest SDK (guests/sdk). The binary carries the
//! SDK's sources, WIT included, and writes them beside the template as
//! `NAME/netshim-guest-sdk/`, so the crate builds on a machine that has
//! netshim and a Rust toolchain and nothing else; `--sdk PATH` uses an SDK
//! checkout instead.

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
    #[error("--sdk {path}: {reason}; point it at the guests/sdk directory of a netshim checkout")]
    Sdk { path: PathBuf, reason: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

const CARGO_TOML: &str = include_str!("../templates/guest/Cargo.toml");
const LIB_RS: &str = include_str!("../templates/guest/lib.rs");

/// Where the embedded SDK goes inside the new crate.
pub const SDK_DIR: &str = "netshim-guest-sdk";

/// `(path, text)` of files of guests/sdk, embedded at build time.
macro_rules! sdk_files {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../guests/sdk/", $path)))),*]
    };
}

/// The SDK crate as it is in guests/sdk, file by file (its `wit` is a
/// symlink there and real files here). The test below fails when a file
/// is added to guests/sdk and not here.
const SDK: &[(&str, &str)] = sdk_files![
    "Cargo.toml",
    "README.md",
    "src/lib.rs",
    "src/addr.rs",
    "src/names.rs",
    "src/options.rs",
    "src/log.rs",
    "src/links.rs",
    "src/rules.rs",
    "src/store_cas.rs",
    "src/teardown.rs",
    "src/ipam/mod.rs",
    "src/ipam/bitmap.rs",
    "src/ipam/pool.rs",
    "wit/world.wit",
    "wit/host.wit",
    "wit/deps/netshim-plugin-0.1.0/types.wit",
    "wit/deps/netshim-plugin-0.1.0/host.wit",
    "wit/deps/netshim-plugin-0.1.0/driver.wit",
];

fn valid(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The SDK checkout at `path`, as an absolute path the new crate's
/// Cargo.toml can name from wherever it is.
fn sdk_checkout(path: &Path) -> Result<String, ScaffoldError> {
    let bad = |reason: String| ScaffoldError::Sdk {
        path: path.to_path_buf(),
        reason,
    };
    let abs = fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
    let manifest = fs::read_to_string(abs.join("Cargo.toml"))
        .map_err(|e| bad(format!("reading Cargo.toml: {e}")))?;
    if !manifest
        .lines()
        .any(|l| l.trim() == "name = \"netshim-guest-sdk\"")
    {
        return Err(bad(
            "its Cargo.toml is not the netshim-guest-sdk crate's".into()
        ));
    }
    abs.to_str()
        .map(str::to_string)
        .ok_or_else(|| bad("the path is not UTF-8".into()))
}

/// Write the crate for driver `name` into `dir/name`, with the embedded
/// SDK, or depending on the SDK checkout at `sdk`; returns its path.
pub fn new_guest(name: &str, dir: &Path, sdk: Option<&Path>) -> Result<PathBuf, ScaffoldError> {
    if !valid(name) {
        return Err(ScaffoldError::Name(name.into()));
    }
    let sdk_path = match sdk {
        Some(p) => sdk_checkout(p)?,
        None => SDK_DIR.to_string(),
    };
    let root = dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let fill = |t: &str| {
        t.replace("{{NAME}}", name)
            .replace("{{CRATE}}", &name.replace('-', "_"))
            .replace("\"{{SDK}}\"", &toml_string(&sdk_path))
    };
    let mut files = vec![
        ("Cargo.toml".to_string(), fill(CARGO_TOML)),
        ("src/lib.rs".to_string(), fill(LIB_RS)),
    ];
    if sdk.is_none() {
        files.extend(
            SDK.iter()
                .map(|(p, t)| (format!("{SDK_DIR}/{p}"), t.to_string())),
        );
    }
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

    fn temp(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("netshim-scaffold-{tag}-{}", std::process::id()))
    }

    #[test]
    fn names_and_files() {
        let dir = temp("embedded");
        for bad in ["", "Up", "1x", "a_b", "a/b", &"x".repeat(33)] {
            assert!(
                matches!(new_guest(bad, &dir, None), Err(ScaffoldError::Name(_))),
                "{bad:?}"
            );
        }
        let root = new_guest("my-driver", &dir, None).unwrap();
        let lib = fs::read_to_string(root.join("src/lib.rs")).unwrap();
        assert!(lib.contains("my-driver does not make endpoints") && !lib.contains("{{"));
        assert!(lib.contains("netshim_guest_sdk::export!(Component);"));
        let toml = fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(toml.contains("name = \"my-driver\""), "{toml}");
        assert!(
            toml.contains("netshim-guest-sdk = { path = \"netshim-guest-sdk\" }"),
            "{toml}"
        );
        assert!(!toml.contains("{{"), "{toml}");
        let sdk = root.join(SDK_DIR);
        assert!(sdk.join("src/ipam/mod.rs").exists());
        // Real files, not links into a checkout the user does not have.
        let wit = sdk.join("wit/deps/netshim-plugin-0.1.0/driver.wit");
        assert!(fs::symlink_metadata(&wit).unwrap().is_file());
        assert!(matches!(
            new_guest("my-driver", &dir, None),
            Err(ScaffoldError::Exists(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_sdk_checkout_instead_of_the_embedded_one() {
        let dir = temp("checkout");
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests/sdk");
        let root = new_guest("d", &dir, Some(&checkout)).unwrap();
        let toml = fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let abs = fs::canonicalize(&checkout).unwrap();
        assert!(
            toml.contains(&format!(
                "netshim-guest-sdk = {{ path = {} }}",
                toml_string(abs.to_str().unwrap())
            )),
            "{toml}"
        );
        assert!(!root.join(SDK_DIR).exists());
        // Not an SDK: refused before anything is written.
        for bad in [dir.join("missing"), root.clone()] {
            assert!(
                matches!(
                    new_guest("e", &dir, Some(&bad)),
                    Err(ScaffoldError::Sdk { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(!dir.join("e").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("/a/b"), "\"/a/b\"");
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }

    /// Every file of guests/sdk (its wit links followed) is embedded, with
    /// the same text: a file added there must be added to `SDK` too.
    #[test]
    fn the_embedded_sdk_is_all_of_guests_sdk() {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                // fs::metadata follows the wit symlinks, as include_str! does.
                if fs::metadata(&p).unwrap().is_dir() {
                    if p.file_name().is_some_and(|n| n != "target") {
                        walk(base, &p, out);
                    }
                } else {
                    out.push(p.strip_prefix(base).unwrap().to_str().unwrap().into());
                }
            }
        }
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests/sdk");
        let mut on_disk = Vec::new();
        walk(&base, &base, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = SDK.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
        for (p, text) in SDK {
            assert_eq!(&fs::read_to_string(base.join(p)).unwrap(), text, "{p}");
        }
    }
}
