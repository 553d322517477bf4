//! A driver's exports in the core's own types. This is the one place of
//! the CNM core that names WIT types: requests are converted to them here
//! and answers converted back, and an answer the host cannot read is a
//! typed refusal. Every released WIT version exports `driver` and `ipam`
//! at @0.1.0, so one conversion serves them all; a version that changes
//! the exports gets its own conversion here and nothing else moves.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use netshim_host_api::bindings::exports::netshim::plugin::driver as wit;
use netshim_host_api::bindings::exports::netshim::plugin::ipam as wit_ipam;
use netshim_host_api::bindings::exports::netshim::plugin::reconcile as wit_reconcile;
use netshim_host_api::bindings::netshim::plugin::types::{IpPrefix, MacAddress};
use netshim_host_api::guard::netfilter::Published;
use netshim_host_api::host::{from_ip, from_prefix, to_ip, to_prefix};
use netshim_host_api::kernel::NsId;
use netshim_host_api::model::nft::Protocol;
use wasmtime::component::Resource;

use super::calls::Calls;
use super::{CnmError, CnmResult, Core, DriverErrorKind, Network, PortMapping};

/// Why a driver is asked to reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// At start, on a timer, or after changes may have been missed.
    Resync,
    /// A key of the driver's cluster subtree changed (relative to it).
    KeyChanged(String),
}

/// What a driver is told of an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    pub id: String,
    /// The address IPAM gave, with the pool's prefix length.
    pub ipv4: Option<IpNet>,
    pub mac: Option<Mac>,
    /// The interface's name inside the sandbox.
    pub ifname: String,
    pub ports: Vec<PortMapping>,
}

/// A MAC address, shown and parsed as `02:42:0a:4d:00:02`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl std::str::FromStr for Mac {
    type Err = CnmError;

    fn from_str(s: &str) -> CnmResult<Mac> {
        let bad = || CnmError::Invalid(format!("bad MAC address {s:?}"));
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().filter(|p| p.len() == 2).ok_or_else(bad)?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

/// A pool as the driver's IPAM answered it, read and not yet checked.
pub struct PoolAnswer {
    pub id: String,
    pub pool: IpNet,
    pub gateway: Option<IpNet>,
}

/// What IPAM is asked for.
#[derive(Default)]
pub struct PoolAsk {
    pub pool: Option<IpNet>,
    pub sub_pool: Option<IpNet>,
    pub options: Vec<(String, String)>,
    pub v6: bool,
}

/// The driver's join answer: which interface goes into the sandbox and how
/// the sandbox routes through it.
#[derive(Debug, Clone)]
pub struct Join {
    pub src_name: String,
    /// True when `src_name` already lives inside the sandbox.
    pub in_sandbox: bool,
    pub dst_prefix: String,
    pub gateway: Option<IpAddr>,
    pub static_routes: Vec<StaticRoute>,
    pub disable_gateway_service: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    pub destination: IpNet,
    pub via: RouteVia,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteVia {
    /// On the link itself (Calico's 169.254.1.1).
    Connected,
    NextHop(Option<IpAddr>),
}

/// Where a driver's networks exist (Docker's GetCapabilities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Local,
    Global,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Global => "global",
        }
    }
}

/// A sandbox handed to a call: the open namespace and its path.
pub type SandboxArg<'p> = Option<(NsId, &'p Path)>;

fn refused(driver: &str, call: &str, what: &str) -> CnmError {
    CnmError::Driver {
        driver: driver.into(),
        kind: DriverErrorKind::Refused,
        message: format!("{call}: {what}"),
    }
}

fn read_prefix(driver: &str, call: &str, p: &IpPrefix) -> CnmResult<IpNet> {
    to_prefix(p).map_err(|_| {
        refused(
            driver,
            call,
            &format!(
                "returned prefix length {} for {}, which is too long",
                p.prefix_len,
                to_ip(&p.address)
            ),
        )
    })
}

fn wit_network(n: &Network) -> wit::Network {
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

fn wit_endpoint(ep: &EndpointSpec) -> wit::EndpointRequest {
    wit::EndpointRequest {
        id: ep.id.clone(),
        ipv4: ep.ipv4.map(from_prefix),
        ipv6: None,
        mac: ep.mac.map(|Mac([a, b, c, d, e, f])| (a, b, c, d, e, f)),
        ifname: ep.ifname.clone(),
        options: Vec::new(),
        ports: ep
            .ports
            .iter()
            .map(|p| wit::PortBinding {
                protocol: p.protocol.clone(),
                container_port: p.container_port,
                host_ip: p.host_ip.map(from_ip),
                host_port: p.host_port,
            })
            .collect(),
    }
}

fn read_mac(m: MacAddress) -> Mac {
    Mac([m.0, m.1, m.2, m.3, m.4, m.5])
}

fn read_join(driver: &str, j: wit::JoinInfo) -> CnmResult<Join> {
    let static_routes = j
        .static_routes
        .iter()
        .map(|r| {
            Ok(StaticRoute {
                destination: read_prefix(driver, "join", &r.destination)?,
                via: match r.route_type {
                    wit::RouteType::Connected => RouteVia::Connected,
                    wit::RouteType::NextHop => RouteVia::NextHop(r.next_hop.as_ref().map(to_ip)),
                },
            })
        })
        .collect::<CnmResult<_>>()?;
    Ok(Join {
        src_name: j.src_name,
        in_sandbox: j.in_sandbox,
        dst_prefix: j.dst_prefix,
        gateway: j.gateway.as_ref().map(to_ip),
        static_routes,
        disable_gateway_service: j.disable_gateway_service,
    })
}

/// The DNAT a publishing call may add: each binding to the endpoint's own
/// address. Bindings the host cannot read are left out (the driver's DNAT
/// for them is then refused).
fn published(ep: &EndpointSpec) -> Vec<Published> {
    let Some(target) = ep.ipv4.map(|p| p.addr()) else {
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
            Some(Published {
                protocol,
                host_port: b.host_port,
                target,
                container_port: b.container_port,
            })
        })
        .collect()
}

fn sandboxes(sb: SandboxArg<'_>) -> Vec<(NsId, &Path)> {
    sb.into_iter().collect()
}

impl Calls<'_> {
    fn driver_name(&self) -> String {
        self.guest.name.clone()
    }

    pub fn request_pool(&mut self, ask: &PoolAsk) -> CnmResult<PoolAnswer> {
        let req = wit_ipam::PoolRequest {
            address_space: "local".into(),
            pool: ask.pool.map(from_prefix),
            sub_pool: ask.sub_pool.map(from_prefix),
            options: ask.options.clone(),
            v6: ask.v6,
        };
        let mut grant = self.cluster_ipam_grant(&ask.options);
        grant.may_claim = !ask
            .options
            .iter()
            .any(|(k, _)| k == super::ipam_check::ROUTE_PREFIXES_OPTION);
        let p = self.call(grant, "request-pool", &[], |p, st, _| {
            p.netshim_plugin_ipam().call_request_pool(st, &req)
        })?;
        let driver = self.driver_name();
        Ok(PoolAnswer {
            pool: read_prefix(&driver, "request-pool", &p.pool)?,
            gateway: p
                .gateway
                .as_ref()
                .map(|g| read_prefix(&driver, "request-pool", g))
                .transpose()?,
            id: p.id,
        })
    }

    /// `options`: the network's, where known (they place its subtree of
    /// the cluster store).
    pub fn release_pool(&mut self, pool_id: &str, options: &[(String, String)]) -> CnmResult<()> {
        let grant = self.cluster_ipam_grant(options);
        self.call(grant, "release-pool", &[], |p, st, _| {
            p.netshim_plugin_ipam().call_release_pool(st, pool_id)
        })
    }

    /// An address of the pool, not yet checked against it.
    pub fn request_address(
        &mut self,
        pool_id: &str,
        want: Option<IpAddr>,
        gateway: bool,
        options: &[(String, String)],
    ) -> CnmResult<IpNet> {
        let want = want.map(from_ip);
        let options = options.to_vec();
        let grant = self.cluster_ipam_grant(&options);
        let a = self.call(grant, "request-address", &[], |p, st, _| {
            p.netshim_plugin_ipam()
                .call_request_address(st, pool_id, want, gateway, &options)
        })?;
        read_prefix(&self.driver_name(), "request-address", &a)
    }

    pub fn release_address(&mut self, pool_id: &str, address: IpAddr) -> CnmResult<()> {
        let a = from_ip(address);
        let grant = self.cluster_ipam_grant(&[]);
        self.call(grant, "release-address", &[], |p, st, _| {
            p.netshim_plugin_ipam().call_release_address(st, pool_id, a)
        })
    }

    pub fn create_network(&mut self, net: &Network) -> CnmResult<()> {
        let wnet = wit_network(net);
        let grant = self.core.grant(net, true);
        self.call(grant, "create-network", &[], |p, st, _| {
            p.netshim_plugin_driver().call_create_network(st, &wnet)
        })
    }

    pub fn delete_network(&mut self, net: &Network) -> CnmResult<()> {
        let wnet = wit_network(net);
        let grant = self.core.grant(net, true);
        self.call(grant, "delete-network", &[], |p, st, _| {
            p.netshim_plugin_driver().call_delete_network(st, &wnet)
        })
    }

    /// The driver's `reconcile.handle`: bring the node in line with the
    /// cluster. The seconds until it wants to be called again, if ever.
    pub fn reconcile(&mut self, net: &Network, event: &Event) -> CnmResult<Option<u32>> {
        let wnet = wit_network(net);
        let ev = match event {
            Event::Resync => wit_reconcile::Event::Resync,
            Event::KeyChanged(k) => wit_reconcile::Event::KeyChanged(k.clone()),
        };
        let grant = self.core.grant(net, true);
        self.call(grant, "reconcile", &[], |p, st, _| {
            p.netshim_plugin_reconcile().call_handle(st, &wnet, &ev)
        })
    }

    /// The endpoint's interface; the MAC the driver chose, if it chose one.
    pub fn create_endpoint(
        &mut self,
        net: &Network,
        ep: &EndpointSpec,
        sb: SandboxArg<'_>,
    ) -> CnmResult<Option<Mac>> {
        let (wnet, wep) = (wit_network(net), wit_endpoint(ep));
        let grant = self.core.grant(net, false);
        let info = self.call(grant, "create-endpoint", &sandboxes(sb), |p, st, h| {
            p.netshim_plugin_driver().call_create_endpoint(
                st,
                &wnet,
                &wep,
                h.first().map(|h| Resource::new_borrow(h.rep())),
            )
        })?;
        Ok(info.mac.map(read_mac))
    }

    pub fn join(
        &mut self,
        net: &Network,
        ep: &EndpointSpec,
        sb: SandboxArg<'_>,
    ) -> CnmResult<Join> {
        let (wnet, wep) = (wit_network(net), wit_endpoint(ep));
        let grant = self.core.grant(net, false);
        let join = self.call(grant, "join", &sandboxes(sb), |p, st, h| {
            p.netshim_plugin_driver().call_join(
                st,
                &wnet,
                &wep,
                h.first().map(|h| Resource::new_borrow(h.rep())),
            )
        })?;
        read_join(&self.driver_name(), join)
    }

    pub fn leave(&mut self, net: &Network, endpoint_id: &str) -> CnmResult<()> {
        let wnet = wit_network(net);
        let grant = self.core.grant(net, false);
        self.call(grant, "leave", &[], |p, st, _| {
            p.netshim_plugin_driver().call_leave(st, &wnet, endpoint_id)
        })
    }

    pub fn delete_endpoint(&mut self, net: &Network, endpoint_id: &str) -> CnmResult<()> {
        let wnet = wit_network(net);
        let grant = self.core.grant(net, false);
        self.call(grant, "delete-endpoint", &[], |p, st, _| {
            p.netshim_plugin_driver()
                .call_delete_endpoint(st, &wnet, endpoint_id)
        })
    }

    /// Publish (program-external-connectivity) or withdraw (revoke-…) the
    /// endpoint's ports. Publishing is granted exactly these DNATs.
    pub fn ports(&mut self, net: &Network, ep: &EndpointSpec, publish: bool) -> CnmResult<()> {
        let (wnet, wep) = (wit_network(net), wit_endpoint(ep));
        let mut grant = self.core.grant(net, false);
        if publish {
            grant.published = published(ep);
            self.call(grant, "program-external-connectivity", &[], |p, st, _| {
                p.netshim_plugin_driver()
                    .call_program_external_connectivity(st, &wnet, &wep)
            })
        } else {
            self.call(grant, "revoke-external-connectivity", &[], |p, st, _| {
                p.netshim_plugin_driver()
                    .call_revoke_external_connectivity(st, &wnet, &wep)
            })
        }
    }

    /// (scope, connectivity scope).
    pub fn capabilities(&mut self) -> CnmResult<(Scope, Scope)> {
        let grant = self.ipam_grant();
        let caps = self.call(grant, "get-capabilities", &[], |p, st, _| {
            p.netshim_plugin_driver().call_get_capabilities(st).map(Ok)
        })?;
        let scope = |s: wit::Scope| match s {
            wit::Scope::Local => Scope::Local,
            wit::Scope::Global => Scope::Global,
        };
        Ok((scope(caps.scope), scope(caps.connectivity_scope)))
    }

    pub fn oper_info(
        &mut self,
        net: &Network,
        endpoint_id: &str,
    ) -> CnmResult<Vec<(String, String)>> {
        let wnet = wit_network(net);
        let grant = self.core.grant(net, false);
        self.call(grant, "endpoint-oper-info", &[], |p, st, _| {
            p.netshim_plugin_driver()
                .call_endpoint_oper_info(st, &wnet, endpoint_id)
        })
    }

    /// What a call that concerns no network may do: nothing in the kernel
    /// beyond reading (IPAM, capabilities).
    fn ipam_grant(&self) -> netshim_host_api::host::Grant {
        Core::ipam_grant(&self.guest.name)
    }

    /// An IPAM grant that reaches the driver's subtree of the cluster
    /// store (pools of cluster networks are cluster state).
    fn cluster_ipam_grant(&self, options: &[(String, String)]) -> netshim_host_api::host::Grant {
        let placed = options
            .iter()
            .any(|(k, _)| k == super::cluster_root::ETCD_PREFIX_OPTION);
        let options = if placed { options } else { self.subtree() };
        netshim_host_api::host::Grant {
            // Only where there is a cluster store, as in `Core::grant`.
            cluster_root: self
                .core
                .cluster
                .as_ref()
                .and_then(|_| super::cluster_root::root(&self.guest.name, options).ok()),
            // Read-only, for `node.identity`: only the link the operator
            // named; otherwise `node.identity` finds the default route's
            // itself when a driver asks, so an attach of a driver that never
            // asks (the bridge's address calls) dumps no route table.
            underlay: self.core.underlay.get().copied().flatten(),
            node_name: self.core.node_name(),
            ..self.ipam_grant()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Mac;

    #[test]
    fn macs_read_and_show_the_same() {
        let m: Mac = "02:42:0a:4d:00:02".parse().unwrap();
        assert_eq!(m.0, [2, 0x42, 10, 0x4d, 0, 2]);
        assert_eq!(m.to_string(), "02:42:0a:4d:00:02");
        for bad in [
            "",
            "02:42:0a:4d:00",
            "02:42:0a:4d:00:02:03",
            "2:42:a:4d:0:2x",
            "zz:42:0a:4d:00:02",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }
}
