//! The CNM core: networks, endpoints and sandboxes. It validates a request,
//! takes the state lock, runs the driver's guest calls in order, and either
//! commits the result or rolls every call back, so a failed request leaves
//! neither kernel objects nor state behind.

mod calls;
mod cluster_root;
mod cluster_status;
mod driver;
mod gc;
mod ipam_check;
mod lifecycle;
pub mod model;
mod reconcile;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use netshim_host_api::host::{self, Grant};
use netshim_host_api::journal::Journal;
use netshim_host_api::kernel::metered::Metered;
use netshim_host_api::kernel::{Kernel, KernelError, LinkRef, NsId};
use netshim_host_api::store::{Condition, EtcdStore, LocalStore, Store, StoreError};

use crate::guests::{self, Source};
use crate::runtime::{Guest, Runtime, RuntimeError};
use crate::sandbox;
use model::SPACE;
pub use model::{Endpoint, Network, Pool, PortMapping};

#[derive(Debug, thiserror::Error)]
pub enum CnmError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{what}: its record was lost with the damaged state database, which was recovered ({kept} records kept; the damaged file is kept as {}); the recovery removed {links} link(s) and {tables} table(s) that no surviving record owns; see `netshim topology` for what is left", damaged.display())]
    LostWithDamage {
        what: String,
        damaged: std::path::PathBuf,
        kept: usize,
        links: usize,
        tables: usize,
    },
    #[error("{0}")]
    Exists(String),
    #[error("driver {driver}: {message}")]
    Driver {
        driver: String,
        kind: DriverErrorKind,
        message: String,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Kernel(#[from] KernelError),
    #[error("{0}")]
    Sandbox(#[from] sandbox::SandboxError),
    #[error("{}", .0.join("; "))]
    Teardown(Vec<String>),
}

pub type CnmResult<T> = Result<T, CnmError>;

/// What kind of failure a driver reported (its WIT error case), or that
/// the host refused what the driver handed back. Decisions are made on
/// this, never on the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverErrorKind {
    Exists,
    NotFound,
    Denied,
    Invalid,
    Unsupported,
    Conflict,
    Failed,
    /// The host's check of a value the driver returned failed.
    Refused,
}

pub struct CreateNetwork {
    pub name: String,
    pub driver: String,
    pub subnet: Option<IpNet>,
    pub gateway: Option<IpAddr>,
    pub internal: bool,
    pub options: Vec<(String, String)>,
}

pub struct Attach {
    pub network: String,
    pub netns: PathBuf,
    pub ip: Option<IpAddr>,
    pub ifname: String,
    /// The container the sandbox belongs to, when the caller knows it.
    pub container: Option<String>,
    pub ports: Vec<PortMapping>,
}

impl Attach {
    pub fn new(network: impl Into<String>, netns: impl Into<PathBuf>) -> Attach {
        Attach {
            network: network.into(),
            netns: netns.into(),
            ip: None,
            ifname: "eth0".into(),
            container: None,
            ports: Vec::new(),
        }
    }
}

/// Which endpoint to detach.
#[derive(Debug, Clone)]
pub enum DetachTarget {
    Sandbox { network: String, netns: PathBuf },
    Endpoint(String),
}

/// Time spent, for `netshim bench`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timing {
    pub total: Duration,
    /// In wasm: instantiation and guest code, without the kernel calls the
    /// guest made (those are the network work itself).
    pub wasm: Duration,
    pub instantiate: Duration,
    /// In kernel calls (netlink, nftables), the guest's and the host's own.
    pub kernel: Duration,
}

pub struct Core {
    runtime: Runtime,
    kernel: Arc<dyn Kernel>,
    meter: Arc<Metered>,
    store: LocalStore,
    guest_dirs: Vec<PathBuf>,
    loaded: Mutex<BTreeMap<String, Guest>>,
    /// Each loaded driver's capabilities, asked once: a guest's answer
    /// does not change while it stays loaded.
    capabilities: Mutex<BTreeMap<String, (Scope, Scope)>>,
    underlay: OnceLock<Option<LinkRef>>,
    /// The node's name: `--node-name`, else the host name, read once.
    node_name: OnceLock<String>,
    route_reflector: Option<std::net::Ipv4Addr>,
    state_dir: PathBuf,
    timing: Mutex<Timing>,
    metrics: Arc<crate::metrics::Metrics>,
    /// The cluster store (`--store etcd://…`), for what every node shares;
    /// node-local records stay in `store` (see `cluster_root`).
    cluster: Option<EtcdStore>,
}

/// Seconds since the epoch, as records keep them.
pub fn now_seconds() -> u64 {
    now()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 64 hex characters from the kernel's CSPRNG, like Docker's ids.
pub fn random_id() -> String {
    let mut buf = [0u8; 32];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf));
    if filled.is_err() {
        // getrandom(2) cannot fail here short of a broken kernel; fall back
        // to time and pid so ids stay unique.
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        buf[..16].copy_from_slice(&t.to_le_bytes());
        buf[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_name(name: &str) -> CnmResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(CnmError::Invalid(format!(
            "invalid network name {name:?}: use 1 to 64 letters, digits, '_', '.', '-', starting with a letter or digit"
        )))
    }
}

fn get_json<T: serde::de::DeserializeOwned>(s: &mut dyn Store, key: &str) -> CnmResult<Option<T>> {
    match s.get(SPACE, key)? {
        None => Ok(None),
        Some(e) => serde_json::from_slice(&e.value).map(Some).map_err(|err| {
            CnmError::Store(StoreError::BadRecord {
                space: SPACE.into(),
                key: key.into(),
                message: err.to_string(),
            })
        }),
    }
}

fn put_json<T: serde::Serialize>(s: &mut dyn Store, key: &str, value: &T) -> CnmResult<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| CnmError::Invalid(e.to_string()))?;
    s.put(SPACE, key, &bytes, Condition::None, None)?;
    Ok(())
}

impl Core {
    pub fn new(
        runtime: Runtime,
        kernel: Arc<dyn Kernel>,
        state_dir: &Path,
        guest_dirs: Vec<PathBuf>,
    ) -> CnmResult<Core> {
        let meter = Arc::new(Metered::new(kernel));
        Ok(Core {
            runtime,
            kernel: meter.clone(),
            meter,
            store: LocalStore::open(state_dir)?,
            guest_dirs,
            loaded: Mutex::new(BTreeMap::new()),
            capabilities: Mutex::new(BTreeMap::new()),
            underlay: OnceLock::new(),
            node_name: OnceLock::new(),
            route_reflector: None,
            state_dir: state_dir.to_path_buf(),
            timing: Mutex::new(Timing::default()),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            cluster: None,
        })
    }

    /// The node's state directory (BIRD's files live under it).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Share cluster state through this etcd store.
    pub fn with_cluster(mut self, cluster: Option<EtcdStore>) -> Core {
        self.cluster = cluster;
        self
    }

    pub fn cluster_store(&self) -> Option<&EtcdStore> {
        self.cluster.as_ref()
    }

    /// End a process that ran one operation: the store is closed (SQLite
    /// folds its log into the database), the rest — the wasm engine and its
    /// memory, the guests, netlink sockets — goes with the process, whose
    /// exit unmaps it all at once instead of piece by piece.
    pub fn close_for_exit(self) {
        let Core { store, .. } = &self;
        store.close();
        std::mem::forget(self);
    }

    pub fn kernel(&self) -> &Arc<dyn Kernel> {
        &self.kernel
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// For a process that serves many operations: the store's log is
    /// folded into the database off the operations' path.
    pub fn serve_many(&self) -> CnmResult<()> {
        Ok(self.store.checkpoint_in_background()?)
    }

    /// Bytes the state takes on disk.
    pub fn store_bytes(&self) -> u64 {
        self.store.disk_bytes()
    }

    /// Time of the last operation, and the share of it spent in wasm.
    pub fn last_timing(&self) -> Timing {
        *self.timing.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn drivers(&self) -> BTreeMap<String, Source> {
        guests::discover(&self.guest_dirs)
    }

    /// The guest for a driver, compiled or loaded from cache once per process.
    pub fn guest(&self, driver: &str) -> CnmResult<Guest> {
        if let Some(g) = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(driver)
        {
            return Ok(g.clone());
        }
        let all = self.drivers();
        let guest = match all.get(driver) {
            Some(Source::Builtin(bytes)) => self.runtime.load(driver, bytes)?,
            Some(Source::File(path)) => {
                let wasm = std::fs::read(path).map_err(|e| {
                    CnmError::NotFound(format!(
                        "driver {driver}: cannot read {}: {e}",
                        path.display()
                    ))
                })?;
                self.runtime.load(driver, &wasm)?
            }
            None => {
                let known: Vec<&str> = all.keys().map(String::as_str).collect();
                return Err(CnmError::NotFound(format!(
                    "unknown driver {driver:?}; installed drivers: {}",
                    known.join(", ")
                )));
            }
        };
        tracing::debug!(driver, "guest loaded");
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(driver.into(), guest.clone());
        Ok(guest)
    }

    /// The node's underlay: the link of the default route, resolved once.
    fn underlay(&self) -> Option<LinkRef> {
        *self
            .underlay
            .get_or_init(|| netshim_host_api::kernel::default_route_link(self.kernel.as_ref()))
    }

    /// Use the link named `name` as the node's underlay (`--underlay`)
    /// instead of the default route's.
    pub fn with_underlay(self, name: Option<&str>) -> CnmResult<Core> {
        if let Some(name) = name {
            let link = self
                .kernel
                .link_by_name(netshim_host_api::kernel::NsId::NODE, name)?
                .ok_or_else(|| {
                    CnmError::NotFound(format!(
                        "--underlay {name}: the node has no link of that name"
                    ))
                })?;
            let _ = self.underlay.set(Some(link.link_ref()));
        }
        Ok(self)
    }

    /// Name the node (`--node-name`); the host name otherwise.
    pub fn with_node_name(self, name: Option<String>) -> Core {
        if let Some(n) = name {
            let _ = self.node_name.set(n);
        }
        self
    }

    /// Make this node a BGP route reflector with this cluster id
    /// (`--route-reflector-cluster-id`); drivers read it from `bgp`.
    pub fn with_route_reflector(mut self, cluster_id: Option<std::net::Ipv4Addr>) -> Core {
        self.route_reflector = cluster_id;
        self
    }

    /// The node's name as drivers see it.
    pub fn node_name(&self) -> String {
        self.node_name
            .get_or_init(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_default()
            })
            .clone()
    }

    fn grant(&self, net: &Network, with_underlay: bool) -> Grant {
        Grant {
            driver: net.driver.clone(),
            network_id: Some(net.id.clone()),
            // The pools, and the cluster prefixes the operator granted
            // (checked when the network was created).
            route_prefixes: net
                .ipv4
                .iter()
                .map(|p| p.subnet)
                .chain(ipam_check::route_prefixes(&net.options, None).unwrap_or_default())
                .collect(),
            pools: net.ipv4.iter().map(|p| p.subnet).collect(),
            published: Vec::new(),
            underlay: if with_underlay { self.underlay() } else { None },
            node_name: self.node_name(),
            // Only where there is a cluster store: no work in the attach
            // path of a node without one.
            cluster_root: self
                .cluster
                .as_ref()
                .and_then(|_| cluster_root::root(&net.driver, &net.options).ok()),
            may_claim: false,
            route_reflector: self.route_reflector,
        }
    }

    fn ipam_grant(driver: &str) -> Grant {
        Grant {
            driver: driver.into(),
            ..Grant::default()
        }
    }

    fn find_network(&self, s: &mut dyn Store, name_or_id: &str) -> CnmResult<Network> {
        if let Some(id) = s.get(SPACE, &model::name_key(name_or_id))? {
            let id = String::from_utf8_lossy(&id.value).into_owned();
            if let Some(n) = get_json::<Network>(s, &model::network_key(&id))? {
                return Ok(n);
            }
        }
        if let Some(n) = get_json::<Network>(s, &model::network_key(name_or_id))? {
            return Ok(n);
        }
        // A unique id prefix, as Docker accepts.
        if name_or_id.len() >= 6 {
            let matches = s.list(SPACE, &model::network_key(name_or_id))?;
            if matches.len() == 1 {
                return get_json::<Network>(s, &matches[0].key)?
                    .ok_or_else(|| CnmError::NotFound(name_or_id.into()));
            }
        }
        Err(CnmError::NotFound(format!(
            "network {name_or_id:?} not found; `netshim network ls` lists networks"
        )))
    }

    pub fn networks(&self) -> CnmResult<Vec<(Network, usize)>> {
        let mut s = self.store.session()?;
        let mut out = Vec::new();
        for e in s.list(SPACE, "networks/")? {
            if let Ok(n) = serde_json::from_slice::<Network>(&e.value) {
                let count = s.list(SPACE, &format!("sandboxes/{}/", n.id))?.len();
                out.push((n, count));
            }
        }
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(out)
    }

    pub fn inspect(&self, name_or_id: &str) -> CnmResult<(Network, Vec<Endpoint>)> {
        let mut s = self.store.session()?;
        let net = self.find_network(&mut s, name_or_id)?;
        let eps = self.endpoints_of(&mut s, &net.id)?;
        Ok((net, eps))
    }

    /// Every endpoint of a network, whichever front-end made it (Docker's
    /// have no sandbox index until they join).
    fn endpoints_of(&self, s: &mut dyn Store, network_id: &str) -> CnmResult<Vec<Endpoint>> {
        Ok(s.list(SPACE, "endpoints/")?
            .into_iter()
            .filter_map(|e| serde_json::from_slice::<Endpoint>(&e.value).ok())
            .filter(|ep| ep.network_id == network_id)
            .collect())
    }

    /// Roll back the journals of the calls that succeeded before a failure.
    fn unwind(&self, journals: Vec<Journal>, s: &mut dyn Store) -> Vec<String> {
        let mut errors = Vec::new();
        for j in journals.into_iter().rev() {
            errors.extend(j.rollback(self.kernel.as_ref(), s));
        }
        errors
    }

    fn record_timing(&self, t: Timing) {
        *self.timing.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }
}

/// Deletes what is left of a driver when its last network goes: its nft table.
/// What the host keeps in a driver's table for a network that is gone:
/// the whole table when the driver has no network left, else the
/// network's dispatch set and jumps. Returns what could not be removed.
fn release_netfilter(kernel: &dyn Kernel, net: &Network, others: bool) -> Option<String> {
    let table = host::nft_table(&net.driver);
    if others {
        return host::release_network(kernel, &net.driver, &net.id)
            .err()
            .map(|e| {
                format!(
                    "removing network {}'s dispatch from table inet {table}: {e}",
                    net.name
                )
            });
    }
    match kernel.nft_tables(NsId::NODE) {
        Ok(tables) if tables.contains(&table) => kernel
            .nft_apply(
                NsId::NODE,
                &table,
                &[netshim_host_api::model::nft::Op::DeleteTable],
            )
            .err()
            .map(|e| format!("removing nftables table inet {table}: {e}")),
        Ok(_) => None,
        Err(e) => Some(format!("listing nftables tables: {e}")),
    }
}

mod ops;
mod steps;
pub use cluster_root::ETCD_PREFIX_OPTION;
pub use cluster_status::{Lease, NetworkStatus, NodeStatus};
pub use driver::{Event, Join, Mac, RouteVia, Scope, StaticRoute};
pub use gc::{GcReport, Orphans};
pub use lifecycle::PoolGrant;
pub use reconcile::ClusterNetwork;

#[cfg(test)]
mod tests;
