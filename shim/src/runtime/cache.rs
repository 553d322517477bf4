//! Compiled components, cached on disk: Cranelift runs once per guest and
//! engine configuration, every later process deserializes in microseconds.
//! A cached file is machine code the runtime will run, so it is used only
//! when nobody but netshim's user could have written it: the directory and
//! the file are ours and private (`netshim_host_api::private`), else the
//! guest is compiled afresh and the entry replaced.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use netshim_host_api::private;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

use super::RuntimeError;

pub fn component(
    engine: &Engine,
    dir: Option<&Path>,
    name: &str,
    wasm: &[u8],
) -> Result<(Component, String), RuntimeError> {
    let digest = hex(&Sha256::digest(wasm));
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let key = format!("{}-{:016x}.cwasm", &digest[..32], h.finish());

    // A directory other users could write to is not used at all.
    let dir = dir.filter(|d| match private::dir(d) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "not using the compiled-guest cache");
            false
        }
    });
    if let Some(dir) = dir {
        let path = dir.join(&key);
        match private::open_file(&path) {
            Ok(Some(file)) => {
                // Through the descriptor that was checked, not the name:
                // the file mapped is the file whose owner and mode were seen.
                let checked = format!("/proc/self/fd/{}", file.as_raw_fd());
                // SAFETY: `Component::serialize` of an engine with the same
                // compatibility hash (it is in the name) wrote this file: it
                // is netshim's own, writable by nobody else, in a directory
                // writable by nobody else, opened without following links.
                match unsafe { Component::deserialize_file(engine, &checked) } {
                    Ok(c) => return Ok((c, digest)),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled-guest cache entry")
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "refusing a compiled-guest cache entry; compiling the guest again")
            }
        }
    }

    let component = Component::new(engine, wasm).map_err(|e| RuntimeError::Invalid {
        guest: name.into(),
        message: format!("{e:#}"),
    })?;
    if let Some(dir) = dir {
        if let Err(e) = store(dir, &key, &component) {
            tracing::debug!(dir = %dir.display(), error = %e, "compiled guest not cached");
        }
    }
    Ok((component, digest))
}

fn store(dir: &Path, key: &str, component: &Component) -> std::io::Result<()> {
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{key}.{}.tmp", std::process::id()));
    let mut f = private::create(&tmp).map_err(std::io::Error::other)?;
    f.write_all(&bytes)?;
    drop(f);
    fs::rename(&tmp, dir.join(key))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cwasm"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_engine_of_another_configuration_compiles_its_own_entry() {
        let dir = std::env::temp_dir().join(format!("netshim-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let wasm = crate::guests::BUILTIN[0].1;
        let engine = |epochs: bool| {
            let mut c = wasmtime::Config::new();
            c.wasm_component_model(true).epoch_interruption(epochs);
            Engine::new(&c).unwrap()
        };
        let (a, b) = (engine(true), engine(false));
        let (_, digest) = component(&a, Some(&dir), "bridge", wasm).unwrap();
        let first = cached(&dir);
        assert_eq!(first.len(), 1, "{first:?}");
        assert!(
            first[0].starts_with(&digest[..32]),
            "keyed by the component's hash"
        );
        // Another engine version or configuration has another
        // compatibility hash: the entry above is not used, a new one is.
        component(&b, Some(&dir), "bridge", wasm).unwrap();
        assert_eq!(cached(&dir).len(), 2, "{:?}", cached(&dir));
        // The first engine finds its own entry again: loaded, not written anew.
        use std::os::unix::fs::MetadataExt;
        let inode = |name: &str| std::fs::metadata(dir.join(name)).unwrap().ino();
        let before = inode(&first[0]);
        component(&a, Some(&dir), "bridge", wasm).unwrap();
        assert_eq!(cached(&dir).len(), 2);
        assert_eq!(
            inode(&first[0]),
            before,
            "the entry was compiled and written again"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
