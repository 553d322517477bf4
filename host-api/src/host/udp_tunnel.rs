//! `udp-tunnel` imports (WIT 0.2): what goes where in a UDP tunnel whose
//! data path is the host's. The call only records the table, checked, in
//! the host's own space of the node-local store (journalled like any
//! store write); the node agent runs the data path from that record.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use wasmtime::component::Resource;

use super::{to_ip, to_prefix, HostError, HostResult, HostState, LinkHandle};
use crate::bindings::netshim::plugin::types::IpAddress;
use crate::bindings::v0_2::netshim::plugin0_2_0::udp_tunnel::{Host, Peer};
use crate::journal::Undo;
use crate::store::Condition;

/// The host's space for tunnel records, one per network (key: its id).
pub const SPACE: &str = "host/udp-tunnel";
pub const MAX_PEERS: usize = 4096;

/// A tunnel as the data path needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpTunnel {
    /// The TUN device and its index when configured (a device of that
    /// name made later is not this one).
    pub device: String,
    pub ifindex: u32,
    /// The network's ownership mark, checked again before attaching.
    pub mark: String,
    pub local: SocketAddrV4,
    /// Destination prefix → the node that owns it (at `local`'s port).
    pub peers: Vec<(Ipv4Net, Ipv4Addr)>,
}

fn v4(a: &IpAddress, what: &str) -> HostResult<Ipv4Addr> {
    match to_ip(a) {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(a) => Err(HostError::invalid(format!(
            "udp-tunnel: {what} {a}: the tunnel carries IPv4 only"
        ))),
    }
}

impl Host for HostState {
    fn configure(
        &mut self,
        dev: Resource<LinkHandle>,
        local: IpAddress,
        port: u16,
        peers: Vec<Peer>,
    ) -> HostResult<()> {
        let network = self.network("udp-tunnel configure")?.to_string();
        let h = self.owned_link(&dev, "udp-tunnel configure")?;
        let info = self.kernel.link_by_index(h.link)?.ok_or_else(|| {
            HostError::not_found(format!("udp-tunnel: link {:?} is gone", h.name))
        })?;
        if info.kind != "tun" {
            return Err(HostError::invalid(format!(
                "udp-tunnel: {:?} is a {} device, not a TUN device",
                h.name, info.kind
            )));
        }
        if port < 1024 {
            return Err(HostError::denied(format!(
                "udp-tunnel: port {port} is below 1024 (the node's own services live there)"
            )));
        }
        let local = v4(&local, "local address")?;
        let on_underlay = match self.grant.underlay {
            Some(u) => self
                .kernel
                .addresses(u)?
                .iter()
                .any(|a| a.addr() == IpAddr::V4(local)),
            None => false,
        };
        if !on_underlay {
            return Err(HostError::denied(format!(
                "udp-tunnel: {local} is not an address of the node's underlay link"
            )));
        }
        if peers.len() > MAX_PEERS {
            return Err(HostError::invalid(format!(
                "udp-tunnel: {} peers; at most {MAX_PEERS}",
                peers.len()
            )));
        }
        let mut table = Vec::with_capacity(peers.len());
        for p in &peers {
            let prefix = match to_prefix(&p.prefix)? {
                ipnet::IpNet::V4(n) => n.trunc(),
                ipnet::IpNet::V6(n) => {
                    return Err(HostError::invalid(format!(
                        "udp-tunnel: prefix {n}: the tunnel carries IPv4 only"
                    )))
                }
            };
            if !self
                .grant
                .route_prefixes
                .iter()
                .any(|g| g.contains(&ipnet::IpNet::V4(prefix)))
            {
                return Err(HostError::denied(format!(
                    "udp-tunnel: prefix {prefix} is outside what network {network} may route"
                )));
            }
            let to = v4(&p.address, "peer address")?;
            if to.is_loopback() || to.is_multicast() || to.is_unspecified() || to.is_broadcast() {
                return Err(HostError::invalid(format!(
                    "udp-tunnel: peer address {to} is not a unicast address"
                )));
            }
            table.push((prefix, to));
        }
        let record = UdpTunnel {
            device: h.name.clone(),
            ifindex: h.link.index,
            mark: super::ownership_mark(&network),
            local: SocketAddrV4::new(local, port),
            peers: table,
        };
        let value =
            serde_json::to_vec(&record).map_err(|e| HostError::Trap(wasmtime::Error::new(e)))?;
        let old = self.store.get(SPACE, &network)?;
        if old.as_ref().map(|e| &e.value) == Some(&value) {
            return Ok(());
        }
        self.store
            .put(SPACE, &network, &value, Condition::None, None)?;
        self.journal.record(Undo::Kv {
            space: SPACE.into(),
            key: network,
            old,
        });
        Ok(())
    }
}
