//! The host side of every import: capability checks on resolved objects,
//! a journal of what the call changed, then the kernel or the store.
//!
//! One [`HostState`] lives for exactly one guest call (a fresh wasmtime
//! `Store`). It owns the store session for that call and hands it back,
//! with the journal, when the call ends; on failure the runtime replays the
//! journal backwards ([`crate::journal::Journal::rollback`]).

pub mod bgp;
mod cluster;
mod convert;
mod kv;
mod links;
mod log;
mod netfilter;
mod nft_v01;
mod nft_v02;
mod node;
mod routes;
mod sysctl;
#[cfg(test)]
mod test_support;
pub mod udp_tunnel;

use std::sync::Arc;

use ipnet::IpNet;
use wasmtime::component::{Resource, ResourceTable};

use crate::bindings::netshim::plugin::types;
use crate::journal::Journal;
use crate::kernel::{Kernel, KernelError, LinkRef, NsId};
use crate::store::{Store, StoreError};

pub use cluster::ClusterAccess;
pub use convert::{from_ip, from_prefix, to_ip, to_prefix};
pub use netfilter::release_network;

/// What a host call failed with: a value the guest sees, or a trap.
#[derive(Debug)]
pub enum HostError {
    Guest(types::Error),
    Trap(wasmtime::Error),
}

impl HostError {
    pub fn denied(msg: impl Into<String>) -> HostError {
        HostError::Guest(types::Error::Denied(msg.into()))
    }
    pub fn invalid(msg: impl Into<String>) -> HostError {
        HostError::Guest(types::Error::Invalid(msg.into()))
    }
    pub fn not_found(msg: impl Into<String>) -> HostError {
        HostError::Guest(types::Error::NotFound(msg.into()))
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostError::Guest(e) => write!(f, "{e:?}"),
            HostError::Trap(t) => write!(f, "trap: {t:#}"),
        }
    }
}

impl From<KernelError> for HostError {
    fn from(e: KernelError) -> HostError {
        let msg = e.to_string();
        HostError::Guest(match e {
            KernelError::Exists(_) => types::Error::Exists(msg),
            KernelError::NotFound(_) => types::Error::NotFound(msg),
            KernelError::Invalid(_) => types::Error::Invalid(msg),
            KernelError::Unsupported(_) => types::Error::Unsupported(msg),
            KernelError::Permission(_) | KernelError::Other(_) => types::Error::Failed(msg),
        })
    }
}

impl From<StoreError> for HostError {
    fn from(e: StoreError) -> HostError {
        let msg = e.to_string();
        HostError::Guest(match e {
            StoreError::Conflict(_) | StoreError::Raced(_) => types::Error::Conflict(msg),
            _ => types::Error::Failed(msg),
        })
    }
}

/// A bad resource handle is a broken guest, not a recoverable error.
impl From<wasmtime::component::ResourceTableError> for HostError {
    fn from(e: wasmtime::component::ResourceTableError) -> HostError {
        HostError::Trap(wasmtime::Error::new(e))
    }
}

pub type HostResult<T> = Result<T, HostError>;

/// A link handle held by the guest.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    pub link: LinkRef,
    pub name: String,
    /// The guest may change or delete it (created by this network, or inside
    /// the sandbox granted to this call). The underlay is never owned.
    pub owned: bool,
}

/// A sandbox (network namespace) granted to this call.
#[derive(Debug, Clone)]
pub struct SandboxHandle {
    pub ns: NsId,
    pub path: String,
}

/// What one call may touch, decided by the CNM core before the call.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Driver name: its store space is `driver/<name>`, its nftables table
    /// `inet netshim-<name>`.
    pub driver: String,
    /// The network this call acts for. IPAM calls have none and so may not
    /// create or change kernel objects.
    pub network_id: Option<String>,
    /// Destinations the network may route: its pools and any cluster
    /// prefixes the operator granted.
    pub route_prefixes: Vec<IpNet>,
    /// The network's pools, checked by the host: what its NAT may cover.
    pub pools: Vec<IpNet>,
    /// Ports the call publishes (program-external-connectivity): the only
    /// DNAT a driver may add.
    pub published: Vec<crate::guard::netfilter::Published>,
    /// The node's underlay link, lent read-only.
    pub underlay: Option<LinkRef>,
    /// The node's name (WIT 0.2 `node.identity`; the rest of the identity
    /// is read from the kernel when a driver asks).
    pub node_name: String,
    /// The driver's subtree of the cluster store for this call (WIT 0.2
    /// `cluster`), decided by the CNM core; `None`: no cluster access.
    pub cluster_root: Option<String>,
    /// Whether request-pool may claim route prefixes (the operator
    /// granted the network none).
    pub may_claim: bool,
    /// The cluster id the operator made this node a BGP route reflector
    /// with (`--route-reflector-cluster-id`).
    pub route_reflector: Option<std::net::Ipv4Addr>,
}

impl Grant {
    pub fn store_space(&self) -> String {
        format!("driver/{}", self.driver)
    }
    pub fn nft_table(&self) -> String {
        nft_table(&self.driver)
    }
}

/// The nftables table (family inet) that belongs to a driver.
pub fn nft_table(driver: &str) -> String {
    format!("netshim-{driver}")
}

/// The IFLA_IFALIAS netshim writes on every link a network creates. It
/// survives restarts, so ownership and cleanup never depend on names.
pub fn ownership_mark(network_id: &str) -> String {
    format!("netshim:{network_id}")
}

pub struct HostState {
    pub(crate) kernel: Arc<dyn Kernel>,
    pub(crate) store: Box<dyn Store + Send>,
    pub(crate) grant: Grant,
    pub(crate) journal: Journal,
    pub(crate) table: ResourceTable,
    /// The export being called, to tag the guest's log lines.
    pub(crate) call: String,
    /// Bytes this call may still write to the store.
    pub(crate) store_budget: usize,
    /// Links this call created: their undo is their deletion, so changes to
    /// them need no read-back for the journal.
    pub(crate) created: Vec<LinkRef>,
    /// Log lines the guest wrote in this call (past the quota: counted only).
    pub(crate) log_lines: usize,
    /// The cluster store, as far as this call may use it.
    pub(crate) cluster: ClusterAccess,
    /// Route prefixes the driver claimed (`cluster.claim-route-prefix`),
    /// for the CNM core to check.
    pub(crate) claims: Vec<IpNet>,
}

/// What a finished call hands back.
pub struct Finished {
    /// The store session, to commit or keep using.
    pub store: Box<dyn Store + Send>,
    /// What the call changed, to roll back on failure.
    pub journal: Journal,
    pub cluster: ClusterAccess,
    pub claims: Vec<IpNet>,
}

impl HostState {
    pub fn new(
        kernel: Arc<dyn Kernel>,
        store: Box<dyn Store + Send>,
        grant: Grant,
        call: &str,
    ) -> HostState {
        HostState {
            kernel,
            store,
            grant,
            journal: Journal::default(),
            table: ResourceTable::new(),
            call: call.to_string(),
            store_budget: crate::guard::limits::STORE_BYTES_PER_CALL,
            log_lines: 0,
            created: Vec::new(),
            cluster: ClusterAccess::Absent,
            claims: Vec::new(),
        }
    }

    /// Let the call use the cluster store as `access` says.
    pub fn with_cluster(mut self, access: ClusterAccess) -> HostState {
        self.cluster = access;
        self
    }

    /// Lend a sandbox to the call; the returned handle is passed to the export.
    pub fn grant_sandbox(
        &mut self,
        ns: NsId,
        path: &std::path::Path,
    ) -> wasmtime::Result<Resource<SandboxHandle>> {
        Ok(self.table.push(SandboxHandle {
            ns,
            path: path.display().to_string(),
        })?)
    }

    /// End the call: its sessions and its journal.
    pub fn finish(self) -> Finished {
        let quota = crate::guard::limits::LOG_LINES_PER_CALL;
        if self.log_lines > quota {
            tracing::warn!(
                target: "guest",
                driver = self.grant.driver.as_str(),
                call = self.call.as_str(),
                "{} lines dropped (a call may log {quota})",
                self.log_lines - quota
            );
        }
        Finished {
            store: self.store,
            journal: self.journal,
            cluster: self.cluster,
            claims: self.claims,
        }
    }

    pub fn kernel(&self) -> &Arc<dyn Kernel> {
        &self.kernel
    }

    fn network(&self, what: &str) -> HostResult<&str> {
        self.grant.network_id.as_deref().ok_or_else(|| {
            HostError::denied(format!(
                "{what}: this call acts for no network (IPAM calls may not change the kernel)"
            ))
        })
    }

    /// The node's underlay: the one lent to the call, else the default
    /// route's (read only when a driver asks, not on every attach).
    fn underlay(&self) -> Option<LinkRef> {
        self.grant
            .underlay
            .or_else(|| crate::kernel::default_route_link(self.kernel.as_ref()))
    }

    /// Set (or, with `None`, remove) a record the host keeps for a
    /// network in its own space (a UDP tunnel, a BGP speaker): counted
    /// against what one call may write, and journalled like a driver's
    /// own store write.
    fn put_host_record(
        &mut self,
        space: &str,
        key: String,
        value: Option<Vec<u8>>,
    ) -> HostResult<()> {
        let cost = key.len() + value.as_ref().map_or(0, Vec::len);
        if cost > self.store_budget {
            return Err(HostError::invalid(format!(
                "{space}: the record exceeds what one call may write ({} bytes)",
                crate::guard::limits::STORE_BYTES_PER_CALL
            )));
        }
        self.store_budget -= cost;
        let old = self.store.get(space, &key)?;
        if old.as_ref().map(|e| &e.value) == value.as_ref() {
            return Ok(());
        }
        match &value {
            Some(v) => {
                self.store
                    .put(space, &key, v, crate::store::Condition::None, None)?;
            }
            None => {
                self.store
                    .delete(space, &key, crate::store::Condition::None)?;
            }
        }
        self.journal.record(crate::journal::Undo::Kv {
            space: space.into(),
            key,
            old,
        });
        Ok(())
    }

    fn mark(&self, what: &str) -> HostResult<String> {
        Ok(ownership_mark(self.network(what)?))
    }

    fn link(&self, r: &Resource<LinkHandle>) -> HostResult<LinkHandle> {
        Ok(self.table.get(r)?.clone())
    }

    /// The link behind a handle, only if this network may change it.
    fn owned_link(&self, r: &Resource<LinkHandle>, what: &str) -> HostResult<LinkHandle> {
        let h = self.link(r)?;
        if !h.owned {
            let net = self.grant.network_id.as_deref().unwrap_or("-");
            return Err(HostError::denied(format!(
                "{what} on link {:?} denied: the link is not owned by network {net} (only links the network created or links inside the granted sandbox may be changed)",
                h.name
            )));
        }
        Ok(h)
    }

    fn sandbox(&self, r: &Resource<SandboxHandle>) -> HostResult<SandboxHandle> {
        Ok(self.table.get(r)?.clone())
    }
}

impl types::Host for HostState {
    fn convert_error(&mut self, err: HostError) -> wasmtime::Result<types::Error> {
        match err {
            HostError::Guest(e) => Ok(e),
            HostError::Trap(t) => Err(t),
        }
    }
}

/// Where a namespace came from, for messages.
pub fn ns_label(ns: NsId) -> &'static str {
    if ns == NsId::NODE {
        "node"
    } else {
        "sandbox"
    }
}
