//! The embedded store: SQLite in WAL mode, one row per key, in
//! `<state-dir>/state.db`. An operation writes only the rows it changes, so
//! its cost does not grow with the node. A commit is durable: the WAL is
//! synced before it returns. A checkpoint is not synced (SQLite's
//! `synchronous=NORMAL`): it survives the process dying, not a power loss,
//! and is for records of kernel objects, which a power loss takes too. The
//! log stays a consistent prefix either way.
//!
//! Sessions exclude each other with an exclusive `flock` on
//! `<state-dir>/lock`, held from [`LocalStore::session`] until the session
//! is dropped, across its checkpoints: a CNM operation reads and writes a
//! state nobody changes under it, and its intent, once checkpointed, is
//! seen by the next session only after this one is over. SQLite's own
//! locking is then never contended. flock, not fcntl locks: it is per open
//! file, so two sessions in one process (the daemon's threads) exclude each
//! other too.
//!
//! A `state.json` left by an earlier netshim is moved into the database by
//! the first session and renamed `state.json.migrated`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use super::{legacy, Condition, Entry, Store, StoreError};

pub(super) const DB_FILE: &str = "state.db";
/// Made when a database first gets its schema: a database without one in
/// a directory with this file was truncated to nothing or replaced, and is
/// reported as corrupt rather than silently taken for a new node.
pub(super) const MADE_FILE: &str = "state.db.made";
const LOCK_FILE: &str = "lock";
const LEGACY_FILE: &str = "state.json";

/// `PRAGMA user_version` of a database with [`SCHEMA`] in place.
const SCHEMA_VERSION: i64 = 1;

pub(super) const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    CREATE TABLE IF NOT EXISTS kv (
        space    TEXT NOT NULL,
        key      TEXT NOT NULL,
        value    BLOB NOT NULL,
        revision INTEGER NOT NULL,
        expires  INTEGER,
        PRIMARY KEY (space, key)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires) WHERE expires IS NOT NULL;
    CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
    PRAGMA user_version = 1;
";

/// Opens sessions on a state directory. Cloning shares the idle connection.
#[derive(Debug, Clone)]
pub struct LocalStore {
    dir: PathBuf,
    /// The connection of the last session, kept for the next one: opening
    /// SQLite costs more than an attach's own reads.
    idle: Arc<Mutex<Option<Connection>>>,
    /// Device and inode of the file the idle connection has open: another
    /// process's `store recover` puts a new file in its place, and a
    /// connection still on the old one would split the state in two.
    idle_file: Arc<Mutex<Option<(u64, u64)>>>,
    /// Set once a thread folds the log into the database (see
    /// [`LocalStore::checkpoint_in_background`]): sessions then never do.
    background: Arc<AtomicBool>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A database file that is missing or has no bytes.
pub(super) fn emptied(path: &Path) -> bool {
    std::fs::metadata(path).map_or(true, |m| m.len() == 0)
}

fn emptied_error(dir: &Path) -> StoreError {
    StoreError::Corrupt {
        path: dir.join(DB_FILE),
        message: format!(
            "it is missing, empty or without its schema, but a database was made here before ({} exists): the file was truncated, deleted or replaced",
            dir.join(MADE_FILE).display()
        ),
    }
}

fn db_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_path_buf(),
            message: source.to_string(),
        },
        _ => StoreError::Database {
            path: path.to_path_buf(),
            source,
        },
    }
}

impl LocalStore {
    /// Open (creating it private, 0700) a state directory; one that other
    /// users could write to is refused.
    pub fn open(dir: &Path) -> Result<LocalStore, StoreError> {
        crate::private::dir(dir)?;
        Ok(LocalStore {
            dir: dir.to_path_buf(),
            idle: Arc::new(Mutex::new(None)),
            idle_file: Arc::new(Mutex::new(None)),
            background: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of the database and its write-ahead log.
    pub fn disk_bytes(&self) -> u64 {
        ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                std::fs::metadata(self.dir.join(format!("{DB_FILE}{suffix}"))).ok()
            })
            .map(|m| m.len())
            .sum()
    }

    pub(super) fn connect(&self) -> Result<Connection, StoreError> {
        let path = self.dir.join(DB_FILE);
        // Looked at before SQLite opens anything: it deletes the log of a
        // database with no pages, and a missing file would be created.
        // The marker is made only after the schema is committed, so a
        // marker seen first means the schema was there (a process racing
        // to make it first does not trip this).
        let had_database = self.dir.join(MADE_FILE).exists();
        if had_database && emptied(&path) {
            return Err(emptied_error(&self.dir));
        }
        // Made private before SQLite sees it; its -wal and -shm files take
        // the database file's mode.
        drop(crate::private::open_writable(&path)?);
        let conn = Connection::open(&path).map_err(db_error(&path))?;
        // A process opens the database once per operation: the schema is
        // written once, and later opens only check its version.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db_error(&path))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { path, version });
        }
        if version != SCHEMA_VERSION {
            if version == 0 && had_database {
                return Err(emptied_error(&self.dir));
            }
            conn.execute_batch(SCHEMA).map_err(db_error(&path))?;
        }
        if !had_database {
            self.mark_made();
        }
        // Per connection: not stored in the file.
        conn.execute_batch("PRAGMA synchronous = NORMAL")
            .map_err(db_error(&path))?;
        if self.background.load(Ordering::Relaxed) {
            conn.execute_batch("PRAGMA wal_autocheckpoint = 0")
                .map_err(db_error(&path))?;
        }
        Ok(conn)
    }

    /// Remember that this directory has a database. Best effort: without
    /// the marker only the detection of an emptied database is lost.
    pub(super) fn mark_made(&self) {
        let made = self.dir.join(MADE_FILE);
        let done = crate::private::open_writable(&made)
            .map_err(|e| e.to_string())
            .and_then(|f| f.sync_all().map_err(|e| e.to_string()))
            .and_then(|()| {
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = done {
            tracing::warn!(file = %made.display(), error = %e, "could not mark the state directory as holding a database");
        }
    }

    /// Take the state lock (blocking until other sessions end) and start a
    /// transaction on the current state.
    pub fn session(&self) -> Result<LocalSession, StoreError> {
        let lock = self.lock()?;
        let db = self.dir.join(DB_FILE);
        let now = file_id(&db);
        let mut idle = self.take_idle();
        if idle.is_some() && *self.idle_file.lock().unwrap_or_else(|p| p.into_inner()) != now {
            tracing::info!(file = %db.display(), "the state database was replaced (recovered): reopening it");
            idle = None;
        }
        let conn = match idle {
            Some(c) => c,
            None => {
                let c = self.connect()?;
                *self.idle_file.lock().unwrap_or_else(|p| p.into_inner()) = file_id(&db);
                c
            }
        };
        let mut s = LocalSession {
            _lock: lock,
            conn: Some(conn),
            idle: self.idle.clone(),
            path: self.dir.join(DB_FILE),
        };
        s.migrate(&self.dir.join(LEGACY_FILE))?;
        s.sql("BEGIN")?;
        Ok(s)
    }

    /// The state lock, blocking until other sessions end.
    pub(super) fn lock(&self) -> Result<Flock<File>, StoreError> {
        lock_dir(&self.dir)
    }

    /// For a process that serves many operations (the daemon): SQLite
    /// folds its log into the database on a thread of its own, once a
    /// second, instead of inside whichever commit crosses 1,000 pages of
    /// log. That fold syncs the database and took 2–3 ms, in one attach in
    /// a hundred: it was the p99 of attach. A passive checkpoint never
    /// blocks a writer. The thread ends with the last clone of this store.
    pub fn checkpoint_in_background(&self) -> Result<(), StoreError> {
        if self.background.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        let conn = self.connect()?;
        if let Some(idle) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            idle.execute_batch("PRAGMA wal_autocheckpoint = 0")
                .map_err(db_error(&self.dir.join(DB_FILE)))?;
        }
        let alive: Weak<AtomicBool> = Arc::downgrade(&self.background);
        std::thread::Builder::new()
            .name("netshim-store".into())
            .spawn(move || {
                while alive.strong_count() > 0 {
                    std::thread::sleep(Duration::from_secs(1));
                    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                        tracing::warn!(error = %e, "folding the state log into the database");
                    }
                }
            })
            .map_err(|source| StoreError::Io {
                path: self.dir.clone(),
                source,
            })?;
        Ok(())
    }

    /// Close the idle connection now (a session in progress keeps its own).
    pub fn close(&self) {
        drop(self.take_idle());
    }

    /// The connection the last session left, if any.
    fn take_idle(&self) -> Option<Connection> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Every live key of every space, for tests and diagnostics.
    pub fn snapshot(&self) -> Result<Vec<(String, Entry)>, StoreError> {
        let s = self.session()?;
        let path = s.path.clone();
        let mut stmt = s
            .conn()
            .prepare_cached(
                "SELECT space, key, value, revision FROM kv
                 WHERE expires IS NULL OR expires > ?1 ORDER BY space, key",
            )
            .map_err(db_error(&path))?;
        let rows = stmt
            .query_map(params![now()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Entry {
                        key: r.get(1)?,
                        value: r.get(2)?,
                        revision: r.get::<_, i64>(3)? as u64,
                    },
                ))
            })
            .map_err(db_error(&path))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_error(&path));
        drop(stmt);
        drop(s);
        rows
    }
}

pub struct LocalSession {
    _lock: Flock<File>,
    /// Present until the session is dropped.
    conn: Option<Connection>,
    idle: Arc<Mutex<Option<Connection>>>,
    path: PathBuf,
}

impl Drop for LocalSession {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // What was not committed is undone; a connection that cannot
            // undo is not reused.
            if conn.is_autocommit() || conn.execute_batch("ROLLBACK").is_ok() {
                *self.idle.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
            }
        }
    }
}

impl LocalSession {
    fn conn(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("the connection is present until the session is dropped")
    }

    fn sql(&self, sql: &str) -> Result<(), StoreError> {
        self.conn().execute_batch(sql).map_err(db_error(&self.path))
    }

    /// Move a legacy state file into the database, once.
    fn migrate(&mut self, legacy_path: &Path) -> Result<(), StoreError> {
        if std::fs::symlink_metadata(legacy_path).is_err() {
            return Ok(());
        }
        let Some((rows, revision)) = legacy::read(legacy_path)? else {
            return Ok(());
        };
        insert_rows(self.conn(), &rows, revision).map_err(db_error(&self.path))?;
        let done = legacy_path.with_extension("json.migrated");
        std::fs::rename(legacy_path, &done).map_err(|source| StoreError::Io {
            path: legacy_path.to_path_buf(),
            source,
        })?;
        tracing::info!(
            keys = rows.len(),
            from = %legacy_path.display(),
            "state moved into the database"
        );
        Ok(())
    }

    fn current(&self, space: &str, key: &str) -> Result<Option<Entry>, StoreError> {
        self.conn()
            .prepare_cached(
                "SELECT value, revision FROM kv
                 WHERE space = ?1 AND key = ?2 AND (expires IS NULL OR expires > ?3)",
            )
            .and_then(|mut st| {
                st.query_row(params![space, key, now()], |r| {
                    Ok(Entry {
                        key: key.to_string(),
                        value: r.get(0)?,
                        revision: r.get::<_, i64>(1)? as u64,
                    })
                })
                .optional()
            })
            .map_err(db_error(&self.path))
    }

    fn next_revision(&self) -> Result<u64, StoreError> {
        self.conn()
            .prepare_cached(
                "UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value",
            )
            .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
            .map(|r| r as u64)
            .map_err(db_error(&self.path))
    }

    fn end_transaction(&mut self) -> Result<(), StoreError> {
        let t = now();
        self.conn()
            .prepare_cached("DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?1")
            .and_then(|mut st| st.execute(params![t]))
            .map_err(db_error(&self.path))?;
        self.sql("COMMIT")?;
        // The session goes on (checkpoints are followed by more writes).
        self.sql("BEGIN")
    }
}

/// Device and inode of a file, if it exists.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The exclusive lock on `<dir>/lock`, blocking until its holder lets go.
/// The file is private (0600 in a 0700 directory): no other user can take
/// it and hang every netshim operation.
pub(super) fn lock_dir(dir: &Path) -> Result<Flock<File>, StoreError> {
    let lock_path = dir.join(LOCK_FILE);
    let mut file = crate::private::open_writable(&lock_path)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(l) => return Ok(l),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, e)) => {
                return Err(StoreError::Io {
                    path: lock_path,
                    source: std::io::Error::from(e),
                })
            }
        }
    }
}

/// Write rows (a legacy file's, a salvage's) in one transaction, and move
/// the revision counter past all of them.
pub(super) fn insert_rows(
    conn: &Connection,
    rows: &[legacy::Row],
    revision: u64,
) -> Result<(), rusqlite::Error> {
    conn.execute_batch("BEGIN")?;
    let mut max = revision;
    for r in rows {
        max = max.max(r.revision);
        conn.prepare_cached(
            "INSERT OR REPLACE INTO kv (space, key, value, revision, expires)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            r.space,
            r.key,
            r.value,
            r.revision as i64,
            r.expires.map(|x| x as i64)
        ])?;
    }
    conn.execute(
        "UPDATE meta SET value = max(value, ?1) WHERE name = 'revision'",
        params![max as i64],
    )?;
    conn.execute_batch("COMMIT")
}

impl Store for LocalSession {
    fn get(&mut self, space: &str, key: &str) -> Result<Option<Entry>, StoreError> {
        self.current(space, key)
    }

    fn put(
        &mut self,
        space: &str,
        key: &str,
        value: &[u8],
        cond: Condition,
        ttl_seconds: Option<u32>,
    ) -> Result<u64, StoreError> {
        if cond != Condition::None {
            cond.check(
                &format!("{space}/{key}"),
                self.current(space, key)?.map(|e| e.revision),
            )?;
        }
        let revision = self.next_revision()?;
        let expires = ttl_seconds.map(|t| now() + i64::from(t));
        self.conn()
            .prepare_cached(
                "INSERT OR REPLACE INTO kv (space, key, value, revision, expires)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| st.execute(params![space, key, value, revision as i64, expires]))
            .map_err(db_error(&self.path))?;
        Ok(revision)
    }

    fn delete(
        &mut self,
        space: &str,
        key: &str,
        cond: Condition,
    ) -> Result<Option<Entry>, StoreError> {
        let old = self.current(space, key)?;
        cond.check(&format!("{space}/{key}"), old.as_ref().map(|e| e.revision))?;
        let removed = self
            .conn()
            .prepare_cached("DELETE FROM kv WHERE space = ?1 AND key = ?2")
            .and_then(|mut st| st.execute(params![space, key]))
            .map_err(db_error(&self.path))?;
        if removed > 0 {
            self.next_revision()?;
        }
        Ok(old)
    }

    fn list(&mut self, space: &str, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        // Keys from `prefix` up to `prefix` followed by the highest
        // character: an index range, not a scan.
        let upper = format!("{prefix}\u{10FFFF}");
        self.conn()
            .prepare_cached(
                "SELECT key, value, revision FROM kv
                 WHERE space = ?1 AND key >= ?2 AND key < ?3
                   AND (expires IS NULL OR expires > ?4)
                 ORDER BY key",
            )
            .and_then(|mut st| {
                st.query_map(params![space, prefix, upper, now()], |r| {
                    Ok(Entry {
                        key: r.get(0)?,
                        value: r.get(1)?,
                        revision: r.get::<_, i64>(2)? as u64,
                    })
                })?
                .collect()
            })
            .map_err(db_error(&self.path))
    }

    fn space_bytes(&mut self, space: &str) -> Result<usize, StoreError> {
        self.conn()
            .prepare_cached(
                "SELECT coalesce(sum(length(CAST(key AS BLOB)) + length(value)), 0) FROM kv
                 WHERE space = ?1 AND (expires IS NULL OR expires > ?2)",
            )
            .and_then(|mut st| st.query_row(params![space, now()], |r| r.get::<_, i64>(0)))
            .map(|n| n.max(0) as usize)
            .map_err(db_error(&self.path))
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.end_transaction()?;
        // What synchronous=FULL would do at COMMIT: the log, which now
        // holds the commit, on disk before we return. (SQLite's setting
        // cannot change inside the session's open transaction, so it stays
        // NORMAL and the durable commits sync here.) The commit stands
        // either way: a failed sync is reported as such, not as a failed
        // commit, so nobody undoes work that others can already see.
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        let synced = match File::open(&wal).and_then(|f| f.sync_data()) {
            // No log: SQLite wrote the commit to the database file itself.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                File::open(&self.path).and_then(|f| f.sync_data())
            }
            other => other,
        };
        synced.map_err(|source| StoreError::NotSynced {
            path: self.path.clone(),
            source,
        })
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.end_transaction()
    }
}
