//! One CNM operation as a sequence of guest calls sharing one store
//! session. Each call that succeeds leaves its journal here; if a later
//! step fails, [`Calls::abort`] undoes them all, newest first.

use std::path::Path;
use std::time::Instant;

use netshim_host_api::bindings::exports::netshim::plugin::driver as wit;
use netshim_host_api::bindings::netshim::plugin::types::Error as WitError;
use netshim_host_api::bindings::Plugin;
use netshim_host_api::host::{from_prefix, HostState, SandboxHandle};
use netshim_host_api::journal::Journal;
use netshim_host_api::kernel::NsId;
use netshim_host_api::store::Store;
use wasmtime::component::Resource;

use std::net::IpAddr;

use netshim_host_api::host::from_ip;

use super::{CnmError, CnmResult, Core, DriverErrorKind, Endpoint, Network, PortMapping, Timing};
use crate::runtime::{CallData, Guest};

pub struct Calls<'a> {
    core: &'a Core,
    pub guest: Guest,
    store: Option<Box<dyn Store + Send>>,
    journals: Vec<Journal>,
    started: Instant,
    timing: Timing,
    teardown: bool,
}

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

pub fn wit_port(p: &PortMapping) -> wit::PortBinding {
    wit::PortBinding {
        protocol: p.protocol.clone(),
        container_port: p.container_port,
        host_ip: p.host_ip.map(from_ip),
        host_port: p.host_port,
    }
}

/// What the driver is told of a stored endpoint, with these ports.
pub fn wit_endpoint(ep: &Endpoint, ports: &[PortMapping]) -> wit::EndpointRequest {
    wit::EndpointRequest {
        id: ep.id.clone(),
        ipv4: ep.ipv4.map(from_prefix),
        ipv6: None,
        mac: None,
        ifname: ep.ifname.clone(),
        options: Vec::new(),
        ports: ports.iter().map(wit_port).collect(),
    }
}

pub fn wit_network(n: &Network) -> wit::Network {
    wit::Network {
        id: n.id.clone(),
        name: n.name.clone(),
        options: n.options.clone(),
        internal: n.internal,
        ipv4: n
            .ipv4
            .iter()
            .map(|p| wit::PoolData {
                pool: from_prefix(p.subnet),
                gateway: p.gateway.map(from_prefix),
                aux_addresses: Vec::new(),
            })
            .collect(),
        ipv6: Vec::new(),
    }
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
            timing: Timing::default(),
            teardown: false,
        })
    }

    pub fn store(&mut self) -> &mut dyn Store {
        self.store
            .as_deref_mut()
            .expect("store session is present between calls")
    }

    /// Run one export. A driver error or a trap rolls back what this call
    /// did before it is returned.
    pub fn call<R>(
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
        let host = HostState::new(self.core.kernel.clone(), store, grant, name);
        let in_kernel = self.core.meter.elapsed();
        let out = self
            .core
            .runtime
            .call(&self.guest, host, name, sandboxes, f);
        let in_kernel = self.core.meter.elapsed().saturating_sub(in_kernel);
        self.timing.wasm += out.wasm_time.saturating_sub(in_kernel);
        self.timing.instantiate += out.instantiate_time;
        self.store = Some(out.store);
        let failure = match out.result {
            Ok(Ok(r)) => {
                self.journals.push(out.journal);
                return Ok(r);
            }
            Ok(Err(e)) => CnmError::Driver {
                driver: self.guest.name.clone(),
                kind: kind_of(&e),
                message: format!("{name}: {}", describe(&e)),
            },
            Err(trap) => CnmError::Runtime(trap),
        };
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
        Err(failure)
    }

    /// IPAM's release-address: no network is involved.
    pub fn release_address(
        &mut self,
        driver: &str,
        pool_id: &str,
        address: IpAddr,
    ) -> CnmResult<()> {
        let a = from_ip(address);
        self.call(
            Core::ipam_grant(driver),
            "release-address",
            &[],
            |p, st, _| p.netshim_plugin_ipam().call_release_address(st, pool_id, a),
        )
    }

    /// Publish (program-external-connectivity) or withdraw (revoke-…) the
    /// ports in `ep`.
    pub fn ports(
        &mut self,
        net: &Network,
        ep: &wit::EndpointRequest,
        publish: bool,
    ) -> CnmResult<()> {
        let wnet = wit_network(net);
        let mut grant = self.core.grant(net, false);
        if publish {
            grant.published = published(ep);
            self.call(grant, "program-external-connectivity", &[], |p, st, _| {
                p.netshim_plugin_driver()
                    .call_program_external_connectivity(st, &wnet, ep)
            })
        } else {
            self.call(grant, "revoke-external-connectivity", &[], |p, st, _| {
                p.netshim_plugin_driver()
                    .call_revoke_external_connectivity(st, &wnet, ep)
            })
        }
    }

    /// While on, calls are teardown: best effort, never rolled back.
    pub fn teardown(&mut self, on: bool) {
        self.teardown = on;
    }

    /// Undo every call that succeeded, newest first; the session is
    /// dropped uncommitted, so the store is untouched too.
    pub fn abort(mut self) -> Vec<String> {
        let journals = std::mem::take(&mut self.journals);
        let mut store = self
            .store
            .take()
            .expect("store session is present between calls");
        let errors = self.core.unwind(journals, store.as_mut());
        self.finish_timing();
        errors
    }

    pub fn commit(mut self) -> CnmResult<()> {
        let mut store = self
            .store
            .take()
            .expect("store session is present between calls");
        store.commit()?;
        self.finish_timing();
        Ok(())
    }

    fn finish_timing(&mut self) {
        self.timing.total = self.started.elapsed();
        self.core.record_timing(self.timing);
    }
}

/// The DNAT a publishing call may add: each binding to the endpoint's own
/// address. Bindings the host cannot read are left out (the driver's DNAT
/// for them is then refused).
fn published(ep: &wit::EndpointRequest) -> Vec<netshim_host_api::guard::netfilter::Published> {
    use netshim_host_api::model::nft::Protocol;
    let Some(target) = ep
        .ipv4
        .as_ref()
        .map(|p| netshim_host_api::host::to_ip(&p.address))
    else {
        return Vec::new();
    };
    ep.ports
        .iter()
        .filter_map(|b| {
            let protocol = match b.protocol.to_ascii_lowercase().as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                "sctp" => Protocol::Sctp,
                _ => return None,
            };
            Some(netshim_host_api::guard::netfilter::Published {
                protocol,
                host_port: b.host_port,
                target,
                container_port: b.container_port,
            })
        })
        .collect()
}
