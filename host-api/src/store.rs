//! The key-value store behind both the CNM state and the guests' `store`
//! import. [`Store`] is the interface a cluster backend (etcd) implements;
//! [`LocalStore`] is the embedded default: one JSON document under the state
//! directory, replaced atomically (write, fsync, rename) and guarded by an
//! exclusive `flock`, so concurrent `netshim` processes and a daemon can
//! share it and a crash leaves either the old or the new state, never half.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0:?}: condition failed (it changed since it was read)")]
    Conflict(String),
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt: {message}; move it aside to start from an empty state")]
    Corrupt { path: PathBuf, message: String },
    #[error("state directory: {0}")]
    Private(#[from] crate::private::PrivateError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    pub revision: u64,
}

/// When a write may happen, compare-and-swap style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    None,
    Absent,
    Revision(u64),
}

/// One session with the store: a local store holds its lock for the whole
/// session, so a CNM operation reads and writes a consistent state; a cluster
/// store would map each call onto an etcd request. Spaces separate the CNM
/// state ("cnm") from each driver's keys ("driver/<name>").
pub trait Store {
    fn get(&mut self, space: &str, key: &str) -> Result<Option<Entry>, StoreError>;
    /// Returns the new revision.
    fn put(
        &mut self,
        space: &str,
        key: &str,
        value: &[u8],
        cond: Condition,
        ttl_seconds: Option<u32>,
    ) -> Result<u64, StoreError>;
    /// Returns the entry that was deleted, if any.
    fn delete(
        &mut self,
        space: &str,
        key: &str,
        cond: Condition,
    ) -> Result<Option<Entry>, StoreError>;
    fn list(&mut self, space: &str, prefix: &str) -> Result<Vec<Entry>, StoreError>;
    /// Bytes (keys and values) a space holds, for quotas.
    fn space_bytes(&mut self, space: &str) -> Result<usize, StoreError> {
        Ok(self
            .list(space, "")?
            .iter()
            .map(|e| e.key.len() + e.value.len())
            .sum())
    }
    /// Make every write of this session durable.
    fn commit(&mut self) -> Result<(), StoreError>;
    /// Make the writes so far visible to other sessions and safe from this
    /// process dying, but not from the machine losing power: for records
    /// about kernel objects, which a power loss takes away as well.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.commit()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Document {
    revision: u64,
    spaces: BTreeMap<String, BTreeMap<String, Record>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// base64, so driver values may be arbitrary bytes.
    value: String,
    revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<u64>,
}

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";

/// Opens sessions on a state directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    /// Open (creating it private, 0700) a state directory; one that other
    /// users could write to is refused.
    pub fn open(dir: &Path) -> Result<LocalStore, StoreError> {
        crate::private::dir(dir)?;
        Ok(LocalStore {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Take the state lock (blocking until other processes release it) and
    /// load the current state.
    pub fn session(&self) -> Result<LocalSession, StoreError> {
        let lock_path = self.dir.join(LOCK_FILE);
        let io = |source| StoreError::Io {
            path: lock_path.clone(),
            source,
        };
        // Private (0600 in a 0700 directory): no other user can take it
        // and hang every netshim operation.
        let mut file = crate::private::open_writable(&lock_path)?;
        // flock, not fcntl locks: it is per open file, so two sessions in one
        // process (the daemon's threads) exclude each other too.
        let lock = loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(l) => break l,
                Err((f, Errno::EINTR)) => file = f,
                Err((_, e)) => return Err(io(std::io::Error::from(e))),
            }
        };
        let path = self.dir.join(STATE_FILE);
        let doc = load(&path)?;
        Ok(LocalSession {
            dir: self.dir.clone(),
            _lock: lock,
            doc,
            dirty: false,
        })
    }
}

fn load(path: &Path) -> Result<Document, StoreError> {
    let mut text = String::new();
    let Some(mut f) = crate::private::open_file(path)? else {
        return Ok(Document::default());
    };
    f.read_to_string(&mut text)
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct LocalSession {
    dir: PathBuf,
    _lock: Flock<File>,
    doc: Document,
    dirty: bool,
}

impl LocalSession {
    /// Replace the state file atomically; with `durable`, also survive a
    /// power loss (fsync the file and the directory entry).
    fn write(&mut self, durable: bool) -> Result<(), StoreError> {
        if !self.dirty {
            return Ok(());
        }
        let t = now();
        for map in self.doc.spaces.values_mut() {
            map.retain(|_, r| r.expires.is_none_or(|e| e > t));
        }
        self.doc.spaces.retain(|_, m| !m.is_empty());
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let io = |source| StoreError::Io {
            path: tmp.clone(),
            source,
        };
        let text = serde_json::to_vec(&self.doc).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut f = crate::private::create(&tmp)?;
        f.write_all(&text).map_err(io)?;
        if durable {
            f.sync_data().map_err(io)?;
        }
        fs::rename(&tmp, &path).map_err(io)?;
        if durable {
            // The rename is durable only once the directory entry is.
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| StoreError::Io {
                    path: self.dir.clone(),
                    source,
                })?;
        }
        self.dirty = false;
        Ok(())
    }

    fn live(&self, space: &str, key: &str) -> Option<&Record> {
        let rec = self.doc.spaces.get(space)?.get(key)?;
        match rec.expires {
            Some(t) if t <= now() => None,
            _ => Some(rec),
        }
    }

    fn check(&self, space: &str, key: &str, cond: Condition) -> Result<(), StoreError> {
        check(space, key, self.live(space, key).map(|r| r.revision), cond)
    }
}

/// Whether a write under `cond` may go ahead, given the key's current revision.
fn check(space: &str, key: &str, current: Option<u64>, cond: Condition) -> Result<(), StoreError> {
    let ok = match cond {
        Condition::None => true,
        Condition::Absent => current.is_none(),
        Condition::Revision(r) => current == Some(r),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!("{space}/{key}")))
    }
}

fn entry(key: &str, rec: &Record) -> Entry {
    let value = base64::engine::general_purpose::STANDARD
        .decode(&rec.value)
        .unwrap_or_default();
    Entry {
        key: key.to_string(),
        value,
        revision: rec.revision,
    }
}

impl Store for LocalSession {
    fn get(&mut self, space: &str, key: &str) -> Result<Option<Entry>, StoreError> {
        Ok(self.live(space, key).map(|r| entry(key, r)))
    }

    fn put(
        &mut self,
        space: &str,
        key: &str,
        value: &[u8],
        cond: Condition,
        ttl_seconds: Option<u32>,
    ) -> Result<u64, StoreError> {
        self.check(space, key, cond)?;
        self.doc.revision += 1;
        let revision = self.doc.revision;
        let rec = Record {
            value: base64::engine::general_purpose::STANDARD.encode(value),
            revision,
            expires: ttl_seconds.map(|t| now() + u64::from(t)),
        };
        self.doc
            .spaces
            .entry(space.to_string())
            .or_default()
            .insert(key.to_string(), rec);
        self.dirty = true;
        Ok(revision)
    }

    fn delete(
        &mut self,
        space: &str,
        key: &str,
        cond: Condition,
    ) -> Result<Option<Entry>, StoreError> {
        self.check(space, key, cond)?;
        let old = self.live(space, key).map(|r| entry(key, r));
        if let Some(map) = self.doc.spaces.get_mut(space) {
            if map.remove(key).is_some() {
                self.doc.revision += 1;
                self.dirty = true;
            }
        }
        Ok(old)
    }

    fn list(&mut self, space: &str, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        let Some(map) = self.doc.spaces.get(space) else {
            return Ok(Vec::new());
        };
        let t = now();
        Ok(map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, r)| r.expires.is_none_or(|e| e > t))
            .map(|(k, r)| entry(k, r))
            .collect())
    }

    fn space_bytes(&mut self, space: &str) -> Result<usize, StoreError> {
        let t = now();
        Ok(self.doc.spaces.get(space).map_or(0, |m| {
            m.iter()
                .filter(|(_, r)| r.expires.is_none_or(|e| e > t))
                .map(|(k, r)| k.len() + r.value.len() / 4 * 3)
                .sum()
        }))
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.write(true)
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.write(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("netshim-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn cas_and_revisions() {
        let dir = tmpdir("cas");
        let store = LocalStore::open(&dir).unwrap();
        let mut s = store.session().unwrap();
        let r1 = s.put("d", "a", b"1", Condition::Absent, None).unwrap();
        assert!(matches!(
            s.put("d", "a", b"2", Condition::Absent, None),
            Err(StoreError::Conflict(_))
        ));
        let r2 = s
            .put("d", "a", b"2", Condition::Revision(r1), None)
            .unwrap();
        assert!(r2 > r1);
        assert!(matches!(
            s.put("d", "a", b"3", Condition::Revision(r1), None),
            Err(StoreError::Conflict(_))
        ));
        s.put("d", "ab", b"x", Condition::None, None).unwrap();
        s.put("d", "b", b"y", Condition::None, None).unwrap();
        let keys: Vec<_> = s
            .list("d", "a")
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["a", "ab"]);
        s.commit().unwrap();
        drop(s);
        let mut s = store.session().unwrap();
        assert_eq!(s.get("d", "a").unwrap().unwrap().value, b"2");
        assert!(s.delete("d", "a", Condition::Revision(r1)).is_err());
        assert!(s
            .delete("d", "a", Condition::Revision(r2))
            .unwrap()
            .is_some());
        assert!(s.get("d", "a").unwrap().is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn uncommitted_session_leaves_state_untouched() {
        let dir = tmpdir("abort");
        let store = LocalStore::open(&dir).unwrap();
        {
            let mut s = store.session().unwrap();
            s.put("d", "k", b"v", Condition::None, None).unwrap();
        }
        let mut s = store.session().unwrap();
        assert!(s.get("d", "k").unwrap().is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn expired_keys_vanish() {
        let dir = tmpdir("ttl");
        let store = LocalStore::open(&dir).unwrap();
        let mut s = store.session().unwrap();
        s.put("d", "lease", b"v", Condition::None, Some(0)).unwrap();
        assert!(s.get("d", "lease").unwrap().is_none());
        s.put("d", "lease", b"v", Condition::Absent, Some(3600))
            .unwrap();
        assert!(s.get("d", "lease").unwrap().is_some());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sessions_exclude_each_other() {
        let dir = tmpdir("lock");
        let store = LocalStore::open(&dir).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        let mut s = store.session().unwrap();
                        let cur = s.get("d", "n").unwrap();
                        let n: u32 = cur
                            .as_ref()
                            .map(|e| String::from_utf8_lossy(&e.value).parse().unwrap())
                            .unwrap_or(0);
                        s.put(
                            "d",
                            "n",
                            (n + 1).to_string().as_bytes(),
                            Condition::None,
                            None,
                        )
                        .unwrap();
                        s.commit().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut s = store.session().unwrap();
        assert_eq!(s.get("d", "n").unwrap().unwrap().value, b"80");
        fs::remove_dir_all(&dir).unwrap();
    }
}
