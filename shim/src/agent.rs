//! The node agent: inside `netshim daemon`, it keeps every cluster network
//! of this node in line with the cluster store. It calls the driver's
//! reconcile at start, when a key of the driver's subtree changes (an etcd
//! watch, resumed across reconnects), and when the interval the driver
//! asked for is due. Calls for one network are coalesced: a burst of
//! changes is one call. When etcd is unreachable the calls fail and are
//! retried; nothing is torn down for it, so running containers keep their
//! traffic, and the watch's resync brings the node up to date when etcd
//! is back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netshim_host_api::store::{Change, WatchGuard};

use crate::cnm::{ClusterNetwork, Core, Event};
use crate::udp_datapath::Datapaths;

/// How often the list of this node's networks is read again (a network
/// created by the CLI joins the agent within this).
const RESCAN: Duration = Duration::from_secs(1);
/// After a failed reconcile (etcd down, a conflict with another node).
const RETRY: Duration = Duration::from_secs(2);
/// When the driver names no interval: still check now and then.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

pub struct Agent {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Agent {
    /// Start following the cluster; nothing to do without a cluster store.
    pub fn start(core: Arc<Core>) -> Option<Agent> {
        core.cluster_store()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("netshim-agent".into())
            .spawn(move || run(&core, &flag))
            .ok()?;
        tracing::info!("node agent started");
        Some(Agent {
            stop,
            thread: Some(thread),
        })
    }

    /// Let the reconcile in progress finish, then stop.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What is known of one network between calls.
struct Followed {
    net: ClusterNetwork,
    due: Instant,
    /// Keys changed since the last call.
    changed: BTreeSet<String>,
    resync: bool,
}

fn run(core: &Core, stop: &AtomicBool) {
    let Some(store) = core.cluster_store().cloned() else {
        return;
    };
    let (tx, rx) = channel::<Change>();
    let mut watches: BTreeMap<String, WatchGuard> = BTreeMap::new();
    let mut nets: BTreeMap<String, Followed> = BTreeMap::new();
    let mut scanned = Instant::now() - RESCAN;
    let mut tunnels = Datapaths::new(core.kernel().clone());
    while !stop.load(Ordering::Relaxed) {
        if scanned.elapsed() >= RESCAN {
            scanned = Instant::now();
            match core.udp_tunnels() {
                Ok(t) => tunnels.sync(t),
                Err(e) => tracing::warn!(error = %e, "agent: cannot read tunnel records"),
            }
            match core.cluster_networks() {
                Ok(list) => {
                    let ids: BTreeSet<String> = list.iter().map(|n| n.id.clone()).collect();
                    nets.retain(|id, _| ids.contains(id));
                    for n in list {
                        if !watches.contains_key(&n.root) {
                            watches.insert(n.root.clone(), store.watch(&n.root, tx.clone()));
                        }
                        nets.entry(n.id.clone()).or_insert_with(|| Followed {
                            net: n,
                            due: Instant::now(),
                            changed: BTreeSet::new(),
                            resync: true,
                        });
                    }
                    let roots: BTreeSet<&String> = nets.values().map(|f| &f.net.root).collect();
                    watches.retain(|r, _| roots.contains(r));
                }
                Err(e) => tracing::warn!(error = %e, "agent: cannot list networks"),
            }
        }
        let now = Instant::now();
        let next = nets
            .values()
            .map(|f| f.due)
            .min()
            .unwrap_or(now + RESCAN)
            .min(scanned + RESCAN);
        let wait = next
            .saturating_duration_since(now)
            .min(Duration::from_millis(500));
        take_changes(&rx, wait, &mut nets);
        let mut reconciled = false;
        for f in nets.values_mut() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let due = f.due <= Instant::now() || f.resync || !f.changed.is_empty();
            if !due {
                continue;
            }
            let event = if f.resync || f.changed.len() != 1 {
                Event::Resync
            } else {
                Event::KeyChanged(f.changed.iter().next().cloned().unwrap_or_default())
            };
            let started = Instant::now();
            match core.reconcile(&f.net.id, event.clone()) {
                Ok(next) => {
                    let every = next
                        .map(|s| Duration::from_secs(u64::from(s.max(1))))
                        .unwrap_or(DEFAULT_INTERVAL)
                        .min(MAX_INTERVAL);
                    tracing::debug!(
                        network = f.net.name,
                        ?event,
                        took_ms = started.elapsed().as_millis() as u64,
                        next_s = every.as_secs(),
                        "reconciled"
                    );
                    f.due = Instant::now() + every;
                    f.resync = false;
                    f.changed.clear();
                    reconciled = true;
                }
                Err(e) => {
                    tracing::warn!(network = f.net.name, error = %e, "reconcile failed; retrying");
                    // Whatever was missed is covered by a full pass.
                    f.resync = false;
                    f.changed.clear();
                    f.due = Instant::now() + RETRY;
                }
            }
        }
        // A pass may have changed a tunnel's table: follow it now.
        if reconciled {
            match core.udp_tunnels() {
                Ok(t) => tunnels.sync(t),
                Err(e) => tracing::warn!(error = %e, "agent: cannot read tunnel records"),
            }
        }
    }
    tunnels.stop_all();
}

/// Wait up to `wait` for changes, then take every one that is queued.
fn take_changes(rx: &Receiver<Change>, wait: Duration, nets: &mut BTreeMap<String, Followed>) {
    let first = match rx.recv_timeout(wait) {
        Ok(c) => c,
        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
    };
    for change in std::iter::once(first).chain(rx.try_iter()) {
        for f in nets.values_mut() {
            match &change {
                Change::Resync { root } if *root == f.net.root => f.resync = true,
                Change::Key { root, key } if *root == f.net.root => {
                    f.changed.insert(key.clone());
                }
                _ => {}
            }
        }
    }
}
