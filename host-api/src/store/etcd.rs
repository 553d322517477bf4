//! The cluster backend of [`Store`]: etcd v3, for state every node of a
//! cluster shares (issue 9). A key `K` of space `S` is the etcd key
//! `<prefix><S>/<K>`; an entry's revision is etcd's `mod_revision`.
//!
//! A session is optimistic: reads go to etcd and are remembered with the
//! revision they saw (0 for absent), writes are buffered, and the commit
//! is one etcd transaction that applies the writes only if nothing the
//! session read has changed since (`mod_revision` equal, or
//! `create_revision == 0` for what was absent; a listed range must hold no
//! key modified after the list). Another node's write in between is a
//! [`StoreError::Raced`]: nothing of the session is applied. Processes
//! of one node still exclude each other with the state directory's lock,
//! as on the local store, so they never conflict among themselves.
//!
//! A TTL is an etcd lease granted at commit (one per distinct TTL): the key
//! goes when the lease ends. An uncommitted session writes nothing.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use nix::fcntl::Flock;

use super::{Condition, Entry, Store, StoreError};

/// Each request gives up after this; the next one reconnects.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// One exchange with etcd as a whole (a commit's lease grants and its
/// transaction, a keep-alive and its answer) gives up after this: a
/// stalled etcd must not hold the node's lock for long.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);
/// Distinct TTLs (leases granted) in one commit at most.
const LEASES_PER_COMMIT: usize = 4;
/// The longest lease a key may have (flannel's own limit on lease TTLs).
pub const MAX_TTL: u32 = 7 * 24 * 3600;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Revisions of buffered writes: far above any etcd revision, so a
/// condition on a key this session wrote compares against its own write.
const BUFFERED: u64 = 1 << 62;
/// etcd's default `--max-txn-ops`: compares and writes of one transaction.
const MAX_TXN_OPS: usize = 128;
/// Lists up to this long have each key compared at commit.
const LISTED_KEYS_COMPARED: usize = 32;

/// A connection to an etcd cluster. Cloning shares it.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// Drives the client: its own threads, so sync callers (and callers on
    /// another runtime's blocking pool) can wait on it.
    rt: Arc<tokio::runtime::Runtime>,
    endpoints: String,
    prefix: String,
    /// The state directory whose lock node-local sessions take.
    lock_dir: Option<PathBuf>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// `etcd://HOST:PORT[,HOST:PORT…]` as the client's endpoint URLs.
pub fn parse_endpoints(url: &str) -> Result<Vec<String>, StoreError> {
    let bad = |why: &str| {
        StoreError::Config(format!(
            "store {url:?}: {why}; expected etcd://HOST:PORT[,HOST:PORT...]"
        ))
    };
    let rest = url
        .strip_prefix("etcd://")
        .ok_or_else(|| bad("not an etcd:// address"))?;
    let mut out = Vec::new();
    for hp in rest.split(',') {
        let (host, port) = hp
            .rsplit_once(':')
            .ok_or_else(|| bad(&format!("{hp:?} has no port")))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad(&format!("{hp:?} is not HOST:PORT")));
        }
        out.push(format!("http://{hp}"));
    }
    Ok(out)
}

impl EtcdStore {
    /// Connect to `etcd://…`, keeping keys under `prefix` (e.g.
    /// "/netshim/"). With `lock_dir`, sessions of this node's processes
    /// exclude each other through that directory's lock.
    pub fn connect(
        url: &str,
        prefix: &str,
        lock_dir: Option<&Path>,
    ) -> Result<EtcdStore, StoreError> {
        let endpoints = parse_endpoints(url)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("netshim-etcd")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io {
                path: PathBuf::from(url),
                source,
            })?;
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        let client = rt
            .block_on(Client::connect(&endpoints, Some(options)))
            .map_err(|source| StoreError::Etcd {
                endpoints: url.to_string(),
                source,
            })?;
        if let Some(dir) = lock_dir {
            crate::private::dir(dir)?;
        }
        Ok(EtcdStore {
            client,
            rt: Arc::new(rt),
            endpoints: url.to_string(),
            prefix: prefix.to_string(),
            lock_dir: lock_dir.map(Path::to_path_buf),
        })
    }

    /// A session that takes no lock: for a caller that already holds the
    /// node's (an operation inside a local-store session).
    pub fn session_unlocked(&self) -> EtcdSession {
        EtcdSession {
            store: self.clone(),
            _lock: None,
            reads: HashMap::new(),
            ranges: Vec::new(),
            writes: BTreeMap::new(),
            next: BUFFERED,
        }
    }

    /// Run one exchange with etcd on this store's runtime, giving up after
    /// [`EXCHANGE_TIMEOUT`].
    fn exchange<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        self.rt
            .block_on(async { tokio::time::timeout(EXCHANGE_TIMEOUT, fut).await })
            .map_err(|_| {
                self.error(etcd_client::Error::IoError(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} s", EXCHANGE_TIMEOUT.as_secs()),
                )))
            })?
            .map_err(|e| self.error(e))
    }

    /// Whether etcd answers within `within` (a cheap read), for callers
    /// that would otherwise wait for it while holding something.
    pub fn reachable(&self, within: Duration) -> bool {
        let mut client = self.client.clone();
        self.rt.block_on(async move {
            let probe = client.get("/", Some(GetOptions::new().with_keys_only().with_limit(1)));
            matches!(tokio::time::timeout(within, probe).await, Ok(Ok(_)))
        })
    }

    pub fn session(&self) -> Result<EtcdSession, StoreError> {
        let lock = match &self.lock_dir {
            Some(d) => Some(super::local::lock_dir(d)?),
            None => None,
        };
        Ok(EtcdSession {
            _lock: lock,
            ..self.session_unlocked()
        })
    }

    /// Follow every change under `root` (a space: keys `<root>/…`), from
    /// now on, into `tx`, until the guard is dropped or `tx`'s receiver
    /// goes. A [`Change::Resync`] comes first and whenever changes may
    /// have been missed: the watch resumes from the revision after the
    /// last event it saw when the connection breaks (retrying with
    /// backoff from 100 ms to 5 s), and re-lists when etcd compacted that
    /// revision away.
    pub fn watch(&self, root: &str, tx: std::sync::mpsc::Sender<Change>) -> WatchGuard {
        self.watch_from(root, None, tx)
    }

    /// [`EtcdStore::watch`] from `revision` on (no first resync), as a
    /// watcher that saw everything before it resumes.
    pub fn watch_from(
        &self,
        root: &str,
        revision: Option<i64>,
        tx: std::sync::mpsc::Sender<Change>,
    ) -> WatchGuard {
        let prefix = self.full_key(root, "");
        let root = root.to_string();
        let mut client = self.client.clone();
        let task = self.rt.spawn(async move {
            let first_backoff = Duration::from_millis(100);
            let mut backoff = first_backoff;
            let mut from: Option<i64> = revision;
            loop {
                let start = match from {
                    Some(r) => r,
                    None => {
                        let options = GetOptions::new().with_prefix().with_keys_only().with_limit(1);
                        match client.get(prefix.clone(), Some(options)).await {
                            Ok(r) => {
                                let next = r.header().map_or(0, |h| h.revision()) + 1;
                                from = Some(next);
                                if tx.send(Change::Resync { root: root.clone() }).is_err() {
                                    return;
                                }
                                next
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, root, "cluster watch: cannot reach etcd");
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                                continue;
                            }
                        }
                    }
                };
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(start);
                let (_watcher, mut stream) = match client.watch(prefix.clone(), Some(options)).await {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::debug!(error = %e, root, "cluster watch: cannot start");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                backoff = first_backoff;
                loop {
                    match stream.message().await {
                        Ok(Some(resp)) => {
                            if resp.compact_revision() > 0 || resp.canceled() {
                                // Events before the compaction are gone: list again
                                // (after a pause: an etcd that keeps cancelling
                                // must not turn this into a busy loop).
                                tracing::info!(root, compacted = resp.compact_revision(), "cluster watch: resyncing");
                                from = None;
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                                break;
                            }
                            for ev in resp.events() {
                                let Some(kv) = ev.kv() else { continue };
                                from = Some(kv.mod_revision() + 1);
                                let Some(key) = kv.key_str().ok().and_then(|k| k.strip_prefix(&prefix)) else {
                                    continue;
                                };
                                let change = Change::Key {
                                    root: root.clone(),
                                    key: key.to_string(),
                                };
                                if tx.send(change).is_err() {
                                    return;
                                }
                            }
                        }
                        Ok(None) | Err(_) => {
                            tracing::debug!(root, "cluster watch: stream ended, resuming");
                            tokio::time::sleep(backoff).await;
                            break;
                        }
                    }
                }
            }
        });
        WatchGuard(task)
    }

    fn full_key(&self, space: &str, key: &str) -> String {
        format!("{}{space}/{key}", self.prefix)
    }

    fn error(&self, source: etcd_client::Error) -> StoreError {
        StoreError::Etcd {
            endpoints: self.endpoints.clone(),
            source,
        }
    }
}

/// A change [`EtcdStore::watch`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A key under the root was written or went (its lease ended); the key
    /// is relative to the root.
    Key { root: String, key: String },
    /// Changes may have been missed (the watch just started, or etcd
    /// compacted what it would have replayed): re-read everything.
    Resync { root: String },
}

/// Stops its watch when dropped.
pub struct WatchGuard(tokio::task::JoinHandle<()>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Clone)]
enum Write {
    Put {
        value: Vec<u8>,
        ttl: Option<u32>,
        revision: u64,
    },
    Delete,
}

/// One optimistic transaction on etcd (see the module's comment).
pub struct EtcdSession {
    store: EtcdStore,
    _lock: Option<Flock<File>>,
    /// Full key → what this session read of it: value and mod_revision,
    /// or absent.
    reads: HashMap<String, Option<(Vec<u8>, i64)>>,
    /// Listed prefixes and the store revision they were read at.
    ranges: Vec<(String, i64)>,
    writes: BTreeMap<String, Write>,
    next: u64,
}

impl EtcdSession {
    /// The key as this session sees it: its own write, else what it read
    /// of it before (reads repeat within a session), else etcd's value,
    /// remembered for the commit's compare.
    fn current(&mut self, full: &str) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        match self.writes.get(full) {
            Some(Write::Put {
                value, revision, ..
            }) => return Ok(Some((value.clone(), *revision))),
            Some(Write::Delete) => return Ok(None),
            None => {}
        }
        if let Some(seen) = self.reads.get(full) {
            return Ok(seen.clone().map(|(v, r)| (v, r as u64)));
        }
        let mut kv = self.store.client.kv_client();
        let key = full.to_string();
        let got = self
            .store
            .exchange(async move { kv.get(key, None).await })?;
        let found = got
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision()));
        self.reads.insert(full.to_string(), found.clone());
        Ok(found.map(|(v, r)| (v, r as u64)))
    }

    /// One etcd transaction: the writes, if every read still holds. What
    /// was read stays read past a checkpoint (the session's later writes
    /// still rest on it), updated with what this transaction wrote.
    fn apply(&mut self) -> Result<(), StoreError> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let mut compares = Vec::new();
        for (key, seen) in &self.reads {
            // A key this transaction writes is compared as it was read.
            compares.push(match seen {
                None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                Some((_, rev)) => Compare::mod_revision(key.clone(), CompareOp::Equal, *rev),
            });
        }
        for (prefix, at) in &self.ranges {
            compares
                .push(Compare::mod_revision(prefix.clone(), CompareOp::Less, at + 1).with_prefix());
        }
        let ops_count = compares.len() + self.writes.len();
        if ops_count > MAX_TXN_OPS {
            self.writes.clear();
            return Err(StoreError::Config(format!(
                "one operation on {} needs {ops_count} compares and writes in one etcd transaction; etcd allows {MAX_TXN_OPS} by default (--max-txn-ops)",
                self.store.endpoints
            )));
        }
        let client = self.store.client.clone();
        let writes = std::mem::take(&mut self.writes);
        let written: Vec<(String, Option<Vec<u8>>)> = writes
            .iter()
            .map(|(k, w)| match w {
                Write::Put { value, .. } => (k.clone(), Some(value.clone())),
                Write::Delete => (k.clone(), None),
            })
            .collect();
        let ttls: std::collections::BTreeSet<u32> = writes
            .values()
            .filter_map(|w| match w {
                Write::Put { ttl, .. } => *ttl,
                Write::Delete => None,
            })
            .collect();
        if ttls.len() > LEASES_PER_COMMIT {
            return Err(StoreError::Config(format!(
                "one operation on {} asks for {} different lease lengths; at most {LEASES_PER_COMMIT}",
                self.store.endpoints,
                ttls.len()
            )));
        }
        let result = self.store.exchange(async move {
            let mut client = client;
            let mut leases: BTreeMap<u32, i64> = BTreeMap::new();
            let mut ops = Vec::new();
            let mut granted = Ok(());
            for (key, w) in writes {
                match w {
                    Write::Put { value, ttl, .. } => {
                        let options = match ttl {
                            None => None,
                            Some(t) => {
                                let id = match leases.get(&t) {
                                    Some(id) => *id,
                                    None => match client.lease_grant(i64::from(t), None).await {
                                        Ok(r) => {
                                            leases.insert(t, r.id());
                                            r.id()
                                        }
                                        Err(e) => {
                                            granted = Err(e);
                                            break;
                                        }
                                    },
                                };
                                Some(PutOptions::new().with_lease(id))
                            }
                        };
                        ops.push(TxnOp::put(key, value, options));
                    }
                    Write::Delete => ops.push(TxnOp::delete(key, None)),
                }
            }
            let outcome = match granted {
                Ok(()) => {
                    let txn = Txn::new().when(compares).and_then(ops);
                    client
                        .txn(txn)
                        .await
                        .map(|r| (r.succeeded(), r.header().map_or(0, |h| h.revision())))
                }
                Err(e) => Err(e),
            };
            // A lease no committed key uses would only wait out its TTL.
            if !matches!(outcome, Ok((true, _))) {
                for id in leases.values() {
                    let _ = client.lease_revoke(*id).await;
                }
            }
            outcome
        });
        match result {
            Ok((true, revision)) => {
                for (key, value) in written {
                    self.reads.insert(key, value.map(|v| (v, revision)));
                }
                for (_, at) in &mut self.ranges {
                    *at = revision;
                }
                Ok(())
            }
            Ok((false, _)) => {
                let (keys, ranges) = (self.reads.len(), self.ranges.len());
                Err(StoreError::Raced(format!(
                    "cluster store {}: another writer changed what this operation read ({keys} key(s), {ranges} range(s)) before it committed; nothing of it was applied",
                    self.store.endpoints
                )))
            }
            Err(e) => Err(e),
        }
    }
}

/// What [`EtcdSession::mark`] saved: the buffered writes at that point.
pub struct Mark {
    writes: BTreeMap<String, Write>,
    next: u64,
}

impl EtcdSession {
    /// Save the buffered writes, to go back to them if a step fails.
    pub fn mark(&self) -> Mark {
        Mark {
            writes: self.writes.clone(),
            next: self.next,
        }
    }

    /// Forget the writes buffered since `mark` (what was read stays read:
    /// the commit still checks it).
    pub fn restore(&mut self, mark: Mark) {
        self.writes = mark.writes;
        self.next = mark.next;
    }

    /// Whether a commit would write anything.
    pub fn has_writes(&self) -> bool {
        !self.writes.is_empty()
    }

    /// Bytes (keys and values) the buffered writes hold.
    pub fn buffered_bytes(&self) -> usize {
        self.writes
            .iter()
            .map(|(k, w)| {
                k.len()
                    + match w {
                        Write::Put { value, .. } => value.len(),
                        Write::Delete => 0,
                    }
            })
            .sum()
    }

    /// Refresh the lease of `key` to its full TTL (etcd's LeaseKeepAlive)
    /// and return that TTL; `None` for no key or a key with no lease. It
    /// takes effect at once, not with the session's commit: refreshing a
    /// lease changes no key, so there is nothing to undo.
    pub fn keep_alive(&mut self, space: &str, key: &str) -> Result<Option<u32>, StoreError> {
        self.with_lease(space, key, |mut client, lease| async move {
            let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            // A lease that already ended answers a TTL of 0: the key is gone.
            Ok(answers.message().await?.map(|a| a.ttl()).filter(|t| *t > 0))
        })
    }

    /// Seconds until the key's lease ends, as this session sees the key:
    /// its own buffered write (its TTL), else etcd's lease of the key.
    /// `None`: no key, or a key with no lease.
    pub fn expires_in(&mut self, space: &str, key: &str) -> Result<Option<u32>, StoreError> {
        match self.writes.get(&self.store.full_key(space, key)) {
            Some(Write::Put { ttl, .. }) => return Ok(*ttl),
            Some(Write::Delete) => return Ok(None),
            None => {}
        }
        // A lease that ended answers -1: the key is going.
        self.with_lease(space, key, |mut client, lease| async move {
            Ok(Some(client.lease_time_to_live(lease, None).await?.ttl()))
        })
    }

    /// `f(client, lease)` for the etcd lease `key` is bound to, as seconds;
    /// `None` for no key or a key with no lease.
    fn with_lease<F, Fut>(
        &mut self,
        space: &str,
        key: &str,
        f: F,
    ) -> Result<Option<u32>, StoreError>
    where
        F: FnOnce(Client, i64) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Option<i64>, etcd_client::Error>> + Send,
    {
        let full = self.store.full_key(space, key);
        let mut client = self.store.client.clone();
        let seconds = self.store.exchange(async move {
            let got = client.get(full, None).await?;
            match got.kvs().first().map_or(0, |kv| kv.lease()) {
                0 => Ok(None),
                lease => f(client, lease).await,
            }
        })?;
        Ok(seconds.map(|t| t.clamp(0, i64::from(u32::MAX)) as u32))
    }
}

impl Store for EtcdSession {
    fn get(&mut self, space: &str, key: &str) -> Result<Option<Entry>, StoreError> {
        let full = self.store.full_key(space, key);
        Ok(self.current(&full)?.map(|(value, revision)| Entry {
            key: key.to_string(),
            value,
            revision,
        }))
    }

    fn put(
        &mut self,
        space: &str,
        key: &str,
        value: &[u8],
        cond: Condition,
        ttl_seconds: Option<u32>,
    ) -> Result<u64, StoreError> {
        let full = self.store.full_key(space, key);
        let current = self.current(&full)?.map(|(_, r)| r);
        cond.check(&full, current)?;
        self.next += 1;
        let revision = self.next;
        self.writes.insert(
            full,
            Write::Put {
                value: value.to_vec(),
                ttl: ttl_seconds,
                revision,
            },
        );
        Ok(revision)
    }

    fn delete(
        &mut self,
        space: &str,
        key: &str,
        cond: Condition,
    ) -> Result<Option<Entry>, StoreError> {
        let full = self.store.full_key(space, key);
        let current = self.current(&full)?;
        cond.check(&full, current.as_ref().map(|(_, r)| *r))?;
        let Some((value, revision)) = current else {
            return Ok(None);
        };
        self.writes.insert(full, Write::Delete);
        Ok(Some(Entry {
            key: key.to_string(),
            value,
            revision,
        }))
    }

    fn list(&mut self, space: &str, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        let space_prefix = self.store.full_key(space, "");
        let full = format!("{space_prefix}{prefix}");
        let mut kv = self.store.client.kv_client();
        let range = full.clone();
        let got = self
            .store
            .exchange(async move { kv.get(range, Some(GetOptions::new().with_prefix())).await })?;
        let at = got.header().map_or(0, |h| h.revision());
        self.ranges.push((full.clone(), at));
        let mut out: BTreeMap<String, Entry> = BTreeMap::new();
        // The keys of a short list join what the commit compares, so a
        // delete in the range (which the range compare cannot see) is
        // caught too; a long one would overrun etcd's transaction limit,
        // and a key deleted from it goes unnoticed (what is deleted frees
        // something: no decision taken on the list is made unsafe by it).
        let track_keys = got.kvs().len() <= LISTED_KEYS_COMPARED;
        for kv in got.kvs() {
            let Ok(k) = kv.key_str() else { continue };
            if track_keys {
                self.reads
                    .entry(k.to_string())
                    .or_insert_with(|| Some((kv.value().to_vec(), kv.mod_revision())));
            }
            let Some(key) = k.strip_prefix(&space_prefix) else {
                continue;
            };
            out.insert(
                key.to_string(),
                Entry {
                    key: key.to_string(),
                    value: kv.value().to_vec(),
                    revision: kv.mod_revision() as u64,
                },
            );
        }
        // This session's own writes, over what etcd holds.
        for (k, w) in self.writes.range(full.clone()..) {
            if !k.starts_with(&full) {
                break;
            }
            let key = k[space_prefix.len()..].to_string();
            match w {
                Write::Put {
                    value, revision, ..
                } => {
                    out.insert(
                        key.clone(),
                        Entry {
                            key,
                            value: value.clone(),
                            revision: *revision,
                        },
                    );
                }
                Write::Delete => {
                    out.remove(&key);
                }
            }
        }
        Ok(out.into_values().collect())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        self.apply()
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.apply()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        assert_eq!(
            parse_endpoints("etcd://192.0.2.10:2379,192.0.2.11:2379").unwrap(),
            vec!["http://192.0.2.10:2379", "http://192.0.2.11:2379"]
        );
        for bad in [
            "http://x:1",
            "etcd://",
            "etcd://host",
            "etcd://host:port",
            "etcd://:2379",
        ] {
            let e = parse_endpoints(bad).unwrap_err().to_string();
            assert!(e.contains("etcd://HOST:PORT"), "{bad}: {e}");
        }
    }
}
