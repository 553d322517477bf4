//! `netshim store recover`: a state database SQLite calls corrupt (a
//! truncated file, a damaged page) makes every operation fail, poststop
//! included. Recovery reads every record the damaged file still yields,
//! walking the key order from both ends (a damaged page stops one walk,
//! not the other), moves the damaged files aside (kept, never deleted) and
//! writes what was read into a fresh database.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rusqlite::{Connection, OpenFlags};

use super::legacy::Row;
use super::local::{emptied, insert_rows, DB_FILE, MADE_FILE};
use super::{LocalStore, StoreError};

/// What a recovery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Records read back and written to the new database.
    pub kept: usize,
    /// Where the damaged database now is.
    pub moved_to: PathBuf,
}

impl LocalStore {
    /// Recover a damaged database; `None` when it is healthy (nothing is
    /// touched then).
    pub fn recover(&self) -> Result<Option<Recovered>, StoreError> {
        let _lock = self.lock()?;
        // The cached connection may be on the damaged file.
        self.close();
        let path = self.dir().join(DB_FILE);
        // A database that is gone or has no bytes in a directory that had
        // one: nothing to read, and SQLite is not let near it (it would
        // delete its log, which is kept aside below like any damaged file).
        let lost = self.dir().join(MADE_FILE).exists() && emptied(&path);
        if !lost && (!path.exists() || healthy(&path)) {
            return Ok(None);
        }
        let (rows, revision) = if lost {
            (Vec::new(), 0)
        } else {
            salvage(&path)
        };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        // The new database is written whole, and synced, beside the damaged
        // one before anything is moved: a recovery killed at any point
        // leaves either the damaged database (recovered again next time) or
        // the new one, never an empty state.
        let fresh = self.dir().join(format!("{DB_FILE}.recovering"));
        let _ = std::fs::remove_file(&fresh);
        drop(crate::private::open_writable(&fresh)?);
        {
            let conn = Connection::open(&fresh).map_err(|source| StoreError::Database {
                path: fresh.clone(),
                source,
            })?;
            conn.execute_batch(super::local::SCHEMA)
                .and_then(|_| insert_rows(&conn, &rows, revision))
                .map_err(|source| StoreError::Database {
                    path: fresh.clone(),
                    source,
                })?;
            // Closing folds its log into the file.
        }
        std::fs::File::open(&fresh)
            .and_then(|f| f.sync_all())
            .map_err(io(&fresh))?;
        // The damaged files are kept under a new name (hard links), and
        // its log taken away before the new file takes its place: SQLite
        // would replay a stale log into the new database.
        // A name no earlier recovery took.
        let moved_to = (0..)
            .map(|n| match n {
                0 => self.dir().join(format!("{DB_FILE}.corrupt-{stamp}")),
                n => self.dir().join(format!("{DB_FILE}.corrupt-{stamp}.{n}")),
            })
            .find(|p| !p.exists())
            .unwrap_or_default();
        for suffix in ["", "-wal", "-shm"] {
            let from = self.dir().join(format!("{DB_FILE}{suffix}"));
            if from.exists() {
                let to = PathBuf::from(format!("{}{suffix}", moved_to.display()));
                std::fs::hard_link(&from, &to).map_err(io(&from))?;
                if !suffix.is_empty() {
                    std::fs::remove_file(&from).map_err(io(&from))?;
                }
            }
        }
        std::fs::rename(&fresh, &path).map_err(io(&path))?;
        std::fs::File::open(self.dir())
            .and_then(|d| d.sync_all())
            .map_err(io(self.dir()))?;
        tracing::warn!(
            kept = rows.len(),
            damaged = %moved_to.display(),
            "state database recovered"
        );
        Ok(Some(Recovered {
            kept: rows.len(),
            moved_to,
        }))
    }
}

/// SQLite's own quick check, a schema in place (a file without one is
/// what `connect` refuses in a directory that had a database), and a
/// read of every record.
fn healthy(path: &std::path::Path) -> bool {
    let Ok(conn) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE) else {
        return false;
    };
    let version: Result<i64, _> = conn.query_row("PRAGMA user_version", [], |r| r.get(0));
    if !matches!(version, Ok(v) if v > 0) {
        return false;
    }
    let check: Result<String, _> = conn.query_row("PRAGMA quick_check", [], |r| r.get(0));
    let count: Result<i64, _> = conn.query_row("SELECT count(*) FROM kv", [], |r| r.get(0));
    matches!(check.as_deref(), Ok("ok")) && count.is_ok()
}

/// Every record still readable, and the highest revision seen.
fn salvage(path: &std::path::Path) -> (Vec<Row>, u64) {
    let mut found: BTreeMap<(String, String), Row> = BTreeMap::new();
    let mut revision = 0;
    let Ok(conn) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE) else {
        return (Vec::new(), 0);
    };
    if let Ok(r) = conn.query_row("SELECT value FROM meta WHERE name = 'revision'", [], |r| {
        r.get::<_, i64>(0)
    }) {
        revision = r.max(0) as u64;
    }
    for order in ["ASC", "DESC"] {
        let sql = format!(
            "SELECT space, key, value, revision, expires FROM kv ORDER BY space {order}, key {order}"
        );
        let Ok(mut st) = conn.prepare(&sql) else {
            continue;
        };
        let Ok(mut rows) = st.query([]) else {
            continue;
        };
        // A damaged page ends this walk; the other direction reads up to it.
        while let Ok(Some(r)) = rows.next() {
            let row = (|| -> rusqlite::Result<Row> {
                Ok(Row {
                    space: r.get(0)?,
                    key: r.get(1)?,
                    value: r.get(2)?,
                    revision: r.get::<_, i64>(3)?.max(0) as u64,
                    expires: r.get::<_, Option<i64>>(4)?.map(|e| e.max(0) as u64),
                })
            })();
            if let Ok(row) = row {
                found.insert((row.space.clone(), row.key.clone()), row);
            }
        }
    }
    (found.into_values().collect(), revision)
}
