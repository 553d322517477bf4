//! The state file of netshim before the database: one JSON document,
//! `state.json`, read once to be moved into the database.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use super::StoreError;

/// Refused beyond this: the old format rewrote the whole file on every
/// operation, so no real node comes near it.
const MAX_BYTES: u64 = 256 << 20;

#[derive(Deserialize)]
struct Document {
    revision: u64,
    spaces: BTreeMap<String, BTreeMap<String, Record>>,
}

#[derive(Deserialize)]
struct Record {
    value: String,
    revision: u64,
    #[serde(default)]
    expires: Option<u64>,
}

pub struct Row {
    pub space: String,
    pub key: String,
    pub value: Vec<u8>,
    pub revision: u64,
    pub expires: Option<u64>,
}

/// The rows of a legacy state file and its revision; `None` when there is
/// no such file.
pub fn read(path: &Path) -> Result<Option<(Vec<Row>, u64)>, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let Some(f) = crate::private::open_file(path)? else {
        return Ok(None);
    };
    let mut text = Vec::new();
    f.take(MAX_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if text.len() as u64 > MAX_BYTES {
        return Err(corrupt(format!("larger than {MAX_BYTES} bytes")));
    }
    let doc: Document = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
    let mut rows = Vec::new();
    for (space, map) in doc.spaces {
        for (key, r) in map {
            let value = base64::engine::general_purpose::STANDARD
                .decode(&r.value)
                .map_err(|e| corrupt(format!("{space}/{key}: {e}")))?;
            rows.push(Row {
                space: space.clone(),
                key,
                value,
                revision: r.revision,
                expires: r.expires,
            });
        }
    }
    Ok(Some((rows, doc.revision)))
}
