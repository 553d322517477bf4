//! One CNM operation as a sequence of guest calls sharing one store
//! session. Each call that succeeds leaves its journal here; if a later
//! step fails, [`Calls::abort`] undoes them all, newest first.

use std::path::Path;
use std::time::Instant;

use ipnet::IpNet;
use netshim_host_api::bindings::netshim::plugin::types::Error as WitError;
use netshim_host_api::bindings::Plugin;
use netshim_host_api::host::{ClusterAccess, HostState, SandboxHandle};
use netshim_host_api::journal::Journal;
use netshim_host_api::kernel::NsId;
use netshim_host_api::store::{EtcdSession, Store};
use wasmtime::component::Resource;

use super::{CnmError, CnmResult, Core, DriverErrorKind, Timing};
use crate::runtime::{CallData, Guest};

pub struct Calls<'a> {
    pub(super) core: &'a Core,
    pub(super) guest: Guest,
    store: Option<Box<dyn Store + Send>>,
    journals: Vec<Journal>,
    started: Instant,
    /// The kernel meter when the operation started.
    kernel_at_start: std::time::Duration,
    timing: Timing,
    teardown: bool,
    kernel_state_only: bool,
    /// What the rollback of a failed call could not undo.
    unwound: Vec<String>,
    /// The operation's cluster-store session, opened by the first call
    /// that may use it, committed before the local store's.
    cluster: Option<Box<EtcdSession>>,
    /// Route prefixes the driver claimed in request-pool.
    claims: Vec<IpNet>,
    /// The options that place the driver's cluster subtree (the network's
    /// `etcd-prefix`), for IPAM calls, which carry no network.
    subtree: Vec<(String, String)>,
}

/// The exports that may use the cluster store: those that decide cluster
/// state, and IPAM's address calls (an attach waits for etcd only if its
/// driver keeps addresses there, as Calico does).
const CLUSTER_CALLS: &[&str] = &[
    "create-network",
    "delete-network",
    "reconcile",
    "request-pool",
    "release-pool",
    // Addresses, for an IPAM kept in the cluster (Calico's blocks); a
    // driver that keeps them on the node (flannel) never reaches etcd here.
    "request-address",
    "release-address",
];

/// How a driver's error reads: its kind, then its own words (cut to the
/// length limit: they reach logs, HTTP replies and terminals).
pub fn describe(e: &WitError) -> String {
    let cut = |m: &str| {
        netshim_host_api::guard::limits::truncate(
            m,
            netshim_host_api::guard::limits::ERROR_MESSAGE_BYTES,
        )
    };
    match e {
        WitError::Exists(m) => format!("already exists: {}", cut(m)),
        WitError::NotFound(m) => format!("not found: {}", cut(m)),
        WitError::Denied(m) => format!("denied: {}", cut(m)),
        WitError::Invalid(m) => format!("invalid: {}", cut(m)),
        WitError::Unsupported(m) => format!("unsupported: {}", cut(m)),
        WitError::Conflict(m) => format!("conflict: {}", cut(m)),
        WitError::Failed(m) => format!("failed: {}", cut(m)),
    }
}

fn kind_of(e: &WitError) -> DriverErrorKind {
    match e {
        WitError::Exists(_) => DriverErrorKind::Exists,
        WitError::NotFound(_) => DriverErrorKind::NotFound,
        WitError::Denied(_) => DriverErrorKind::Denied,
        WitError::Invalid(_) => DriverErrorKind::Invalid,
        WitError::Unsupported(_) => DriverErrorKind::Unsupported,
        WitError::Conflict(_) => DriverErrorKind::Conflict,
        WitError::Failed(_) => DriverErrorKind::Failed,
    }
}

pub fn is_not_found(e: &CnmError) -> bool {
    matches!(
        e,
        CnmError::Driver {
            kind: DriverErrorKind::NotFound,
            ..
        }
    )
}

impl<'a> Calls<'a> {
    pub fn new(core: &'a Core, driver: &str, store: Box<dyn Store + Send>) -> CnmResult<Calls<'a>> {
        let guest = core.guest(driver)?;
        Ok(Calls {
            core,
            guest,
            store: Some(store),
            journals: Vec::new(),
            started: Instant::now(),
            kernel_at_start: core.meter.elapsed(),
            timing: Timing::default(),
            teardown: false,
            kernel_state_only: false,
            unwound: Vec::new(),
            cluster: None,
            claims: Vec::new(),
            subtree: Vec::new(),
        })
    }

    /// IPAM calls of this operation act for a network with these options:
    /// they reach the same cluster subtree as its other calls.
    pub fn place_subtree(&mut self, options: &[(String, String)]) {
        self.subtree = options
            .iter()
            .filter(|(k, _)| k == super::ETCD_PREFIX_OPTION)
            .cloned()
            .collect();
    }

    pub(super) fn subtree(&self) -> &[(String, String)] {
        &self.subtree
    }

    /// Route prefixes the driver claimed so far (for the core to check).
    pub fn take_claims(&mut self) -> Vec<IpNet> {
        std::mem::take(&mut self.claims)
    }

    /// What this call may do with the cluster store.
    fn cluster_access(
        &mut self,
        grant: &netshim_host_api::host::Grant,
        name: &str,
    ) -> ClusterAccess {
        let Some(store) = &self.core.cluster else {
            return ClusterAccess::Absent;
        };
        let Some(root) = grant.cluster_root.clone() else {
            return ClusterAccess::Denied;
        };
        if !CLUSTER_CALLS.contains(&name) {
            return ClusterAccess::Denied;
        }
        let session = self
            .cluster
            .take()
            .unwrap_or_else(|| Box::new(store.session_unlocked()));
        ClusterAccess::Granted {
            session,
            root,
            may_claim: grant.may_claim && name == "request-pool",
        }
    }

    pub fn store(&mut self) -> &mut dyn Store {
        self.store
            .as_deref_mut()
            .expect("store session is present between calls")
    }

    /// Run one export (through the typed wrappers of `driver`). A driver
    /// error or a trap rolls back what this call did before it is returned.
    pub(super) fn call<R>(
        &mut self,
        grant: netshim_host_api::host::Grant,
        name: &str,
        sandboxes: &[(NsId, &Path)],
        f: impl FnOnce(
            &Plugin,
            &mut wasmtime::Store<CallData>,
            &[Resource<SandboxHandle>],
        ) -> wasmtime::Result<Result<R, WitError>>,
    ) -> CnmResult<R> {
        let store = self
            .store
            .take()
            .expect("store session is present between calls");
        let access = self.cluster_access(&grant, name);
        let mark = match &access {
            ClusterAccess::Granted { session, .. } => Some(session.mark()),
            _ => None,
        };
        let host =
            HostState::new(self.core.kernel.clone(), store, grant, name).with_cluster(access);
        let in_kernel = self.core.meter.elapsed();
        let out = self
            .core
            .runtime
            .call(&self.guest, host, name, sandboxes, f);
        let in_kernel = self.core.meter.elapsed().saturating_sub(in_kernel);
        self.timing.wasm += out.wasm_time.saturating_sub(in_kernel);
        self.timing.instantiate += out.instantiate_time;
        self.store = Some(out.store);
        if let Some(session) = out.cluster.into_session() {
            self.cluster = Some(session);
        }
        let failure = match out.result {
            Ok(Ok(r)) => {
                self.journals.push(out.journal);
                self.claims.extend(out.claims);
                return Ok(r);
            }
            Ok(Err(e)) => CnmError::Driver {
                driver: self.guest.name.clone(),
                kind: kind_of(&e),
                message: format!("{name}: {}", describe(&e)),
            },
            Err(trap) => {
                if let crate::runtime::RuntimeError::Trap { reason, .. } = &trap {
                    self.core.metrics.stopped(&self.guest.name, reason.as_str());
                }
                CnmError::Runtime(trap)
            }
        };
        // The failed call's cluster writes go with it, in teardown too
        // (buffered writes cost nothing to drop, unlike kernel effects);
        // reads stay: what the operation decides next still rests on them.
        if let (Some(session), Some(mark)) = (self.cluster.as_mut(), mark) {
            session.restore(mark);
        }
        if self.teardown {
            // Teardown goes forward: what a failed call did remove stays
            // removed; its error is reported.
            self.journals.push(out.journal);
            return Err(failure);
        }
        let errors = out
            .journal
            .rollback(self.core.kernel.as_ref(), self.store());
        for e in &errors {
            tracing::error!(call = name, error = %e, "rollback after a failed guest call is incomplete");
        }
        // Counted as the transaction's own: its record of intent stays.
        self.unwound.extend(errors);
        Err(failure)
    }

    /// While on, calls are teardown: best effort, never rolled back.
    pub fn teardown(&mut self, on: bool) {
        self.teardown = on;
    }

    /// What this transaction records describes kernel objects only (an
    /// endpoint, its address lease): its commit survives the process
    /// dying but is not synced to disk, since a power loss takes the
    /// objects it describes away too. Saves an fsync per attach and detach.
    pub fn kernel_state_only(&mut self) {
        self.kernel_state_only = true;
    }

    /// Undo every call that succeeded, newest first; the session is
    /// dropped uncommitted, so the store is untouched too.
    pub fn abort(mut self) -> Vec<String> {
        let journals = std::mem::take(&mut self.journals);
        let mut store = self
            .store
            .take()
            .expect("store session is present between calls");
        let mut errors = std::mem::take(&mut self.unwound);
        errors.extend(self.core.unwind(journals, store.as_mut()));
        self.finish_timing();
        errors
    }

    /// Commit the session. If that fails (a full disk), the calls are
    /// undone as by [`Calls::abort`]: no kernel object outlives the record
    /// that did not get written. The error says whether the undo was
    /// complete.
    pub fn commit(mut self) -> Result<(), (CnmError, bool)> {
        let mut store = self
            .store
            .take()
            .expect("store session is present between calls");
        // The cluster first: if another node got there in between, its
        // conflict undoes this operation before any local record says
        // otherwise.
        let cluster = match self.cluster.take() {
            Some(mut c) if c.has_writes() => c.commit(),
            _ => Ok(()),
        };
        let committed = cluster.and_then(|()| {
            if self.kernel_state_only {
                store.checkpoint()
            } else {
                store.commit()
            }
        });
        let result = match committed {
            Ok(()) => Ok(()),
            // Committed: undoing the kernel work now would leave records
            // that others can see describing objects that are gone.
            Err(e @ netshim_host_api::store::StoreError::NotSynced { .. }) => {
                tracing::error!(error = %e, "commit not synced");
                Err((CnmError::Store(e), false))
            }
            Err(e) => {
                let journals = std::mem::take(&mut self.journals);
                let incomplete = self.core.unwind(journals, store.as_mut());
                for r in &incomplete {
                    tracing::error!(error = %r, "undoing after a failed commit is incomplete");
                }
                Err((CnmError::Store(e), incomplete.is_empty()))
            }
        };
        self.finish_timing();
        result
    }

    fn finish_timing(&mut self) {
        self.timing.total = self.started.elapsed();
        self.timing.kernel = self
            .core
            .meter
            .elapsed()
            .saturating_sub(self.kernel_at_start);
        self.core.record_timing(self.timing);
    }
}
