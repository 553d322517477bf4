//! Compiled components, cached on disk: Cranelift runs once per guest and
//! engine configuration, every later process deserializes in microseconds.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;

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

    if let Some(dir) = dir {
        let path = dir.join(&key);
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash (it is in the name),
            // in a directory only netshim writes.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, digest)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled-guest cache entry")
                }
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
    fs::create_dir_all(dir)?;
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{key}.{}.tmp", std::process::id()));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, dir.join(key))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
