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

use crate::bird::Supervisor;
use crate::cnm::{ClusterNetwork, Core, Event};
use crate::udp_datapath::Datapaths;

/// How often the list of this node's networks is read again (a network
/// created by the CLI joins the agent within this).
const RESCAN: Duration = Duration::from_secs(1);
/// After a failed reconcile (etcd down, a conflict with another node),
/// doubling with each failure in a row up to [`MAX_RETRY`].
const RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Calls for one network are at least a gap apart, however many changes
/// arrive: [`MIN_GAP`] after a quiet spell, so a change elsewhere (a node
/// joining) is followed within milliseconds, doubling with each call woken
/// by changes in a row up to [`MAX_GAP`] (a driver whose own writes wake
/// it cannot spin).
const MIN_GAP: Duration = Duration::from_millis(50);
const MAX_GAP: Duration = Duration::from_secs(1);
/// etcd must answer a probe within this before a pass takes the node's
/// lock: while it is away, attaches are not kept waiting behind passes.
const PROBE: Duration = Duration::from_millis(500);
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
    last_run: Option<Instant>,
    /// The gap before the next call may follow the last one.
    gap: Duration,
    /// Failed passes in a row.
    failures: u32,
    /// A pass has succeeded since the agent started following it.
    passed: bool,
}

impl Followed {
    /// When the next call may happen: when due, or at once when woken by
    /// a change (unless backing off), never within the gap of the last.
    fn next_call(&self, now: Instant) -> Instant {
        let woken = self.failures == 0 && (self.resync || !self.changed.is_empty());
        let at = if woken { now } else { self.due };
        match self.last_run {
            Some(t) => at.max(t + self.gap),
            None => at,
        }
    }

    fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
        let wait = RETRY.saturating_mul(1 << self.failures.min(5).saturating_sub(1));
        self.due = Instant::now() + wait.min(MAX_RETRY);
        // Whatever was missed meanwhile is covered by a full pass.
        self.resync = true;
        self.changed.clear();
    }
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
    let mut bird = Supervisor::new(core.state_dir());
    while !stop.load(Ordering::Relaxed) {
        bird.tick();
        // Once per pass at most: after a rescan, or after a reconcile that
        // may have changed a tunnel's table or the BGP speaker.
        let mut follow = false;
        if scanned.elapsed() >= RESCAN {
            scanned = Instant::now();
            follow = true;
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
                            last_run: None,
                            gap: MIN_GAP,
                            failures: 0,
                            passed: false,
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
            .map(|f| f.next_call(now))
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
            let now = Instant::now();
            if f.next_call(now) > now {
                continue;
            }
            if !store.reachable(PROBE) {
                if f.failures == 0 {
                    tracing::warn!(
                        network = f.net.name,
                        "cluster store unreachable; passes wait for it"
                    );
                }
                f.failed();
                continue;
            }
            // Woken again soon after the last call: wait longer next time;
            // after a quiet spell, answer at once again.
            f.gap = match f.last_run {
                Some(t) if now.duration_since(t) < f.gap * 2 => (f.gap * 2).min(MAX_GAP),
                _ => MIN_GAP,
            };
            f.last_run = Some(now);
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
                    f.failures = 0;
                    reconciled = true;
                    if !f.passed {
                        f.passed = true;
                        tracing::info!(
                            network = f.net.name,
                            "first pass done; following the cluster"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(network = f.net.name, error = %e, "reconcile failed; retrying");
                    f.failed();
                }
            }
        }
        if follow || reconciled {
            follow_datapaths(core, &mut tunnels, &mut bird);
        }
    }
    tunnels.stop_all();
    bird.stop();
}

/// Bring the host-run parts of the networks (UDP tunnels, BIRD) in line
/// with what the drivers recorded.
fn follow_datapaths(core: &Core, tunnels: &mut Datapaths, bird: &mut Supervisor) {
    match core.udp_tunnels() {
        Ok(t) => tunnels.sync(t),
        Err(e) => tracing::warn!(error = %e, "agent: cannot read tunnel records"),
    }
    match core.runnable_bgp_speakers() {
        Ok(s) => bird.sync(&s),
        Err(e) => tracing::warn!(error = %e, "agent: cannot read BGP speaker records"),
    }
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
