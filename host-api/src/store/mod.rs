//! The key-value store behind both the CNM state and the guests' `store`
//! import. [`Store`] is the interface a cluster backend (etcd) implements;
//! [`LocalStore`] is the embedded default (SQLite under the state
//! directory, see `local`): an operation writes only the keys it changes,
//! a commit is durable, and concurrent `netshim` processes and a daemon
//! share it one session at a time.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0:?}: condition failed (it changed since it was read)")]
    Conflict(String),
    /// A commit found that another writer changed what the session read:
    /// nothing of the session was applied.
    #[error("{0}")]
    Raced(String),
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt: {message}; `netshim store recover` keeps every record that can still be read (the damaged file stays beside it) and removes what no surviving record owns")]
    Corrupt { path: PathBuf, message: String },
    #[error("record {key:?} of space {space} is unreadable: {message}")]
    BadRecord {
        space: String,
        key: String,
        message: String,
    },
    #[error("state directory: {0}")]
    Private(#[from] crate::private::PrivateError),
    #[error("cluster store {endpoints}: {source}")]
    Etcd {
        endpoints: String,
        source: etcd_client::Error,
    },
    #[error("{0}")]
    Config(String),
    /// The commit is made and visible; syncing it to disk failed, so it
    /// may not survive a power loss.
    #[error("state database {path}: committed, but syncing it to disk failed ({source}); it may not survive a power loss")]
    NotSynced {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} has schema version {version}, newer than this netshim's: use the netshim that wrote it")]
    NewerSchema { path: PathBuf, version: i64 },
    #[error("state database {path}: {source}")]
    Database {
        path: PathBuf,
        source: rusqlite::Error,
    },
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

impl Condition {
    /// Whether a write under this condition may go ahead, given the key's
    /// current revision (as this session sees it); `key` names it in the
    /// conflict.
    pub(crate) fn check(self, key: &str, current: Option<u64>) -> Result<(), StoreError> {
        let ok = match self {
            Condition::None => true,
            Condition::Absent => current.is_none(),
            Condition::Revision(r) => current == Some(r),
        };
        if ok {
            Ok(())
        } else {
            Err(StoreError::Conflict(key.to_string()))
        }
    }
}

/// One session with the store: a local store holds its lock for the whole
/// session, so a CNM operation reads and writes a consistent state; the
/// etcd store reads through and commits its buffered writes in one
/// transaction that fails if anything it read changed (see `etcd`). Spaces separate the CNM
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

pub mod etcd;
mod legacy;
mod local;
mod recover;

pub use etcd::{parse_endpoints, Change, EtcdSession, EtcdStore, Mark, WatchGuard};
pub use local::{LocalSession, LocalStore};
pub use recover::Recovered;

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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

    #[test]
    fn a_legacy_state_file_is_moved_into_the_database() {
        let dir = tmpdir("legacy");
        crate::private::dir(&dir).unwrap();
        // What netshim wrote before the database: values are base64.
        let legacy = serde_json::json!({
            "revision": 41,
            "spaces": {
                "cnm": {"networks/abc": {"value": "eyJpZCI6ImFiYyJ9", "revision": 40}},
                "driver/bridge": {"ipam/alloc/10.77.0.0/24": {"value": "Bw==", "revision": 41}},
            }
        });
        fs::write(dir.join("state.json"), legacy.to_string()).unwrap();
        let store = LocalStore::open(&dir).unwrap();
        let mut s = store.session().unwrap();
        let net = s.get("cnm", "networks/abc").unwrap().unwrap();
        assert_eq!(net.value, br#"{"id":"abc"}"#);
        assert_eq!(net.revision, 40);
        assert_eq!(
            s.get("driver/bridge", "ipam/alloc/10.77.0.0/24")
                .unwrap()
                .unwrap()
                .value,
            [7]
        );
        // Revisions go on from the old file's.
        assert!(s.put("cnm", "x", b"1", Condition::None, None).unwrap() > 41);
        s.commit().unwrap();
        drop(s);
        assert!(!dir.join("state.json").exists());
        assert!(dir.join("state.json.migrated").exists());
        // Once only: a second session finds nothing to move.
        let mut s = store.session().unwrap();
        assert!(s.get("cnm", "networks/abc").unwrap().is_some());
        drop(s);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_legacy_file_is_named() {
        let dir = tmpdir("legacy-bad");
        crate::private::dir(&dir).unwrap();
        fs::write(dir.join("state.json"), b"{\"revision\": 3, \"spa").unwrap();
        let store = LocalStore::open(&dir).unwrap();
        let e = store.session().err().unwrap().to_string();
        assert!(e.contains("state.json") && e.contains("corrupt"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_database_is_named() {
        let dir = tmpdir("db-bad");
        crate::private::dir(&dir).unwrap();
        fs::write(dir.join("state.db"), vec![0x5a; 8192]).unwrap();
        let store = LocalStore::open(&dir).unwrap();
        let e = store.session().err().unwrap().to_string();
        assert!(
            e.contains("state.db") && e.contains("netshim store recover"),
            "{e}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_database_is_recovered_around_the_damage() {
        let dir = tmpdir("db-cut");
        {
            let store = LocalStore::open(&dir).unwrap();
            fill(&store);
            // Nothing to recover in a healthy database.
            assert_eq!(store.recover().unwrap(), None);
        }
        // The last connection closed: the write-ahead log is in the file.
        let db = dir.join("state.db");
        assert!(!dir.join("state.db-wal").exists());
        // A torn page in the middle (a bad sector, a stray write).
        let mut bytes = fs::read(&db).unwrap();
        assert!(bytes.len() > 20 * 4096);
        bytes[12 * 4096..13 * 4096].fill(0xa5);
        fs::write(&db, &bytes).unwrap();
        let store = LocalStore::open(&dir).unwrap();
        let e = store.snapshot().unwrap_err().to_string();
        assert!(e.contains("netshim store recover"), "{e}");
        let r = store.recover().unwrap().expect("damage found");
        // Only the records on the torn page are lost.
        assert!(r.kept > 350 && r.kept < 400, "{r:?}");
        assert!(r.moved_to.exists(), "the damaged file is kept");
        let mut s = store.session().unwrap();
        assert_eq!(s.list("cnm", "k").unwrap().len(), r.kept);
        // Revisions go on past the salvaged ones.
        let rev = s.put("cnm", "new", b"1", Condition::None, None).unwrap();
        assert!(rev > 400, "{rev}");
        s.commit().unwrap();
        drop(s);

        // Cut to half: the table's inner pages are gone, and with them every
        // path to its records. What is left is a fresh, working store.
        drop(store);
        let len = fs::metadata(&db).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let store = LocalStore::open(&dir).unwrap();
        let e = store.snapshot().unwrap_err().to_string();
        assert!(
            e.contains(db.to_str().unwrap()) && e.contains("netshim store recover"),
            "{e}"
        );
        assert!(store.recover().unwrap().is_some());
        fill(&store);
        assert_eq!(store.snapshot().unwrap().len(), 400);

        // Cut to nothing while a connection keeps its log: SQLite would take
        // it for a new, empty database and delete the log; this directory
        // had a database, so it is reported before SQLite opens it, and the
        // log is kept beside the recovered database.
        let writer = store.clone();
        let mut s = writer.session().unwrap();
        s.put("cnm", "logged", b"1", Condition::None, None).unwrap();
        s.commit().unwrap();
        drop(s); // its connection stays open and idle: the log stays
        let wal = dir.join("state.db-wal");
        assert!(fs::metadata(&wal).map(|m| m.len() > 0).unwrap_or(false));
        fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .unwrap()
            .set_len(0)
            .unwrap();
        let other = LocalStore::open(&dir).unwrap();
        let e = other
            .session()
            .err()
            .expect("an empty database")
            .to_string();
        assert!(
            e.contains(db.to_str().unwrap())
                && e.contains("truncated, deleted or replaced")
                && e.contains("netshim store recover"),
            "{e}"
        );
        assert!(wal.exists(), "the log was deleted");
        let r = other
            .recover()
            .unwrap()
            .expect("an empty database is damage");
        assert_eq!(r.kept, 0);
        let kept_log = PathBuf::from(format!("{}-wal", r.moved_to.display()));
        assert!(
            fs::metadata(&kept_log).unwrap().len() > 0,
            "the log was not kept"
        );
        fill(&other);
        assert_eq!(other.snapshot().unwrap().len(), 400);
        drop((store, writer, other));

        // Deleted: the same.
        fs::remove_file(&db).unwrap();
        let store = LocalStore::open(&dir).unwrap();
        let e = store.snapshot().unwrap_err().to_string();
        assert!(e.contains("truncated, deleted or replaced"), "{e}");
        assert!(!db.exists(), "the missing database was made again");
        assert!(store.recover().unwrap().is_some());
        assert_eq!(store.snapshot().unwrap().len(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_state_directory_is_marked_and_opens_again_without_alarm() {
        let dir = tmpdir("fresh");
        assert!(!dir.join(local::MADE_FILE).exists());
        let store = LocalStore::open(&dir).unwrap();
        let mut s = store.session().unwrap();
        s.put("cnm", "k", b"1", Condition::Absent, None).unwrap();
        s.commit().unwrap();
        drop((s, store));
        assert!(dir.join(local::MADE_FILE).exists());
        // Opened again by another process: the same records, no alarm.
        let again = LocalStore::open(&dir).unwrap();
        assert_eq!(again.snapshot().unwrap().len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_database_whose_schema_mark_is_gone_is_damage_and_its_records_are_kept() {
        let dir = tmpdir("unmarked");
        let store = LocalStore::open(&dir).unwrap();
        fill(&store);
        drop(store);
        rusqlite::Connection::open(dir.join("state.db"))
            .unwrap()
            .execute_batch("PRAGMA user_version = 0")
            .unwrap();
        let store = LocalStore::open(&dir).unwrap();
        let e = store.snapshot().unwrap_err().to_string();
        assert!(e.contains("netshim store recover"), "{e}");
        // Recovery agrees it is damaged (it is not "healthy") and keeps
        // every record.
        let r = store.recover().unwrap().expect("damage");
        assert_eq!(r.kept, 400);
        assert_eq!(store.snapshot().unwrap().len(), 400);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_database_of_a_newer_netshim_is_refused_untouched() {
        let dir = tmpdir("newer");
        let store = LocalStore::open(&dir).unwrap();
        let mut s = store.session().unwrap();
        s.put("cnm", "k", b"1", Condition::Absent, None).unwrap();
        s.commit().unwrap();
        drop((s, store));
        let db = dir.join("state.db");
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch("PRAGMA user_version = 7")
            .unwrap();
        let store = LocalStore::open(&dir).unwrap();
        let e = store.snapshot().unwrap_err().to_string();
        assert!(e.contains("schema version 7") && e.contains("newer"), "{e}");
        drop(store);
        let v: i64 = rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 7, "the newer database was rewritten");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_long_lived_store_follows_a_recovery_made_by_another_process() {
        let dir = tmpdir("follow");
        let daemon = LocalStore::open(&dir).unwrap();
        let mut s = daemon.session().unwrap();
        s.put("cnm", "before", b"1", Condition::None, None).unwrap();
        s.commit().unwrap();
        drop(s); // its connection stays open, idle, as the daemon's does
                 // Another process finds the file damaged and recovers it (the log
                 // folded in first, so the damage is what SQLite reads).
        let db = dir.join("state.db");
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        let mut bytes = fs::read(&db).unwrap();
        bytes[..100].fill(0x5a);
        fs::write(&db, &bytes).unwrap();
        let cli = LocalStore::open(&dir).unwrap();
        assert!(cli.recover().unwrap().is_some());
        // The daemon's next session is on the new file, not the damaged one.
        let mut s = daemon.session().unwrap();
        s.put("cnm", "after", b"1", Condition::None, None).unwrap();
        s.commit().unwrap();
        drop(s);
        let keys: Vec<String> = cli
            .snapshot()
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.key)
            .collect();
        assert!(keys.contains(&"after".to_string()), "{keys:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_background_thread_folds_the_log_into_the_database() {
        let dir = tmpdir("bg-ckpt");
        let store = LocalStore::open(&dir).unwrap();
        store.checkpoint_in_background().unwrap();
        let db = dir.join("state.db");
        let before = fs::metadata(&db).unwrap().len();
        for i in 0..300 {
            let mut s = store.session().unwrap();
            s.put(
                "cnm",
                &format!("k{i}"),
                &[b'x'; 2000],
                Condition::None,
                None,
            )
            .unwrap();
            s.commit().unwrap();
        }
        // Sessions no longer fold the log themselves (autocheckpoint off):
        // the thread does, within a couple of its one-second rounds.
        let grown = (0..40).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            fs::metadata(&db).unwrap().len() > before + 300 * 2000
        });
        assert!(grown, "the database file did not take the log's pages");
        assert_eq!(store.snapshot().unwrap().len(), 300);
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// 400 records of 300 bytes, enough to spread the table over many pages.
    fn fill(store: &LocalStore) {
        let mut s = store.session().unwrap();
        for i in 0..400 {
            let v = vec![b'x'; 300];
            s.put("cnm", &format!("k{i:04}"), &v, Condition::None, None)
                .unwrap();
        }
        s.commit().unwrap();
    }

    /// Bytes this thread has handed to write(2) and its kin so far (the
    /// store writes on the caller's thread; other tests run on theirs).
    fn written_by_this_thread() -> u64 {
        fs::read_to_string("/proc/thread-self/io")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("wchar:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn a_write_costs_what_it_changes_not_what_the_store_holds() {
        let dir = tmpdir("cost");
        let store = LocalStore::open(&dir).unwrap();
        let value = [b'x'; 200];
        let mut s = store.session().unwrap();
        for i in 0..4000 {
            s.put("d", &format!("k{i:04}"), &value, Condition::Absent, None)
                .unwrap();
        }
        s.commit().unwrap();
        drop(s);
        let held = fs::metadata(dir.join(local::DB_FILE)).unwrap().len()
            + fs::metadata(dir.join(format!("{}-wal", local::DB_FILE)))
                .map(|m| m.len())
                .unwrap_or(0);
        assert!(held > 800_000, "the store holds {held} bytes");
        // A new key, a changed one and a deleted one, each its own commit.
        let ops: [(&str, fn(&mut dyn Store)); 3] = [
            ("a new key", |s| {
                s.put("d", "new", b"v", Condition::Absent, None).unwrap();
            }),
            ("a changed key", |s| {
                s.put("d", "k2000", b"w", Condition::None, None).unwrap();
            }),
            ("a deleted key", |s| {
                s.delete("d", "k3000", Condition::None).unwrap();
            }),
        ];
        for (what, op) in ops {
            let before = written_by_this_thread();
            let mut s = store.session().unwrap();
            op(&mut s);
            s.commit().unwrap();
            drop(s);
            let wrote = written_by_this_thread() - before;
            // A few pages of log, whatever the store holds (the whole
            // document, as the old state.json was, is 800 KB and more).
            assert!(wrote < 64 << 10, "{what}: {wrote} bytes written");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writes_touch_only_their_keys() {
        // Two sessions' writes to different keys both survive: nothing
        // rewrites what it did not change.
        let dir = tmpdir("keys");
        let store = LocalStore::open(&dir).unwrap();
        for i in 0..100 {
            let mut s = store.session().unwrap();
            s.put("d", &format!("k{i:03}"), b"v", Condition::Absent, None)
                .unwrap();
            s.commit().unwrap();
        }
        let mut s = store.session().unwrap();
        assert_eq!(s.list("d", "k").unwrap().len(), 100);
        assert_eq!(s.list("d", "k05").unwrap().len(), 10);
        assert_eq!(s.space_bytes("d").unwrap(), 100 * 5);
        drop(s);
        fs::remove_dir_all(&dir).unwrap();
    }
}
