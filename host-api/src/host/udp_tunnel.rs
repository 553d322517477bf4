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
    /// What the network may route (its pools and granted prefixes): a
    /// packet arriving from a peer must be for an address in here that
    /// no peer owns (this node's part).
    #[serde(default)]
    pub grant: Vec<Ipv4Net>,
}

/// Ports of the kernel's own tunnels and of WireGuard: a guest's tunnel
/// taking one first would keep them from working.
const RESERVED_PORTS: [(u16, &str); 5] = [
    (4789, "VXLAN (IANA)"),
    (8472, "VXLAN (the Linux default)"),
    (6081, "Geneve"),
    (4790, "VXLAN-GPE"),
    (51820, "WireGuard"),
];

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
        if h.link.ns != crate::kernel::NsId::NODE {
            return Err(HostError::denied(format!(
                "udp-tunnel: {:?} is not a link of the node's namespace",
                h.name
            )));
        }
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
        if let Some((_, what)) = RESERVED_PORTS.iter().find(|(p, _)| *p == port) {
            return Err(HostError::denied(format!(
                "udp-tunnel: port {port} belongs to {what}"
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
            if self
                .grant
                .route_prefixes
                .iter()
                .any(|g| g.contains(&IpAddr::V4(to)))
            {
                return Err(HostError::invalid(format!(
                    "udp-tunnel: peer address {to} lies inside the network itself (a loop)"
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
            grant: self
                .grant
                .route_prefixes
                .iter()
                .filter_map(|g| match g {
                    ipnet::IpNet::V4(n) => Some(*n),
                    ipnet::IpNet::V6(_) => None,
                })
                .collect(),
        };
        let value =
            serde_json::to_vec(&record).map_err(|e| HostError::Trap(wasmtime::Error::new(e)))?;
        self.put_host_record(SPACE, network, Some(value))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::bindings::netshim::plugin::types::Error as WitError;
    use crate::host::test_support::{self, handle, link, Scratch};
    use crate::host::{from_ip, from_prefix, Grant};
    use crate::kernel::fake::FakeKernel;
    use crate::kernel::{Kernel, LinkKind};

    struct Case {
        host: HostState,
        tun: Resource<LinkHandle>,
        bridge: Resource<LinkHandle>,
        _dir: Scratch,
    }

    fn case(tag: &str) -> Case {
        let kernel = Arc::new(FakeKernel::new());
        let eth0 = link(&kernel, "eth0", LinkKind::Bridge, Some("n1"));
        kernel
            .add_address(eth0.link_ref(), "192.0.2.11/24".parse().unwrap())
            .unwrap();
        let tun = link(
            &kernel,
            "flannel0",
            LinkKind::Tun { tap: false },
            Some("n1"),
        );
        let br = link(&kernel, "cni0", LinkKind::Bridge, Some("n1"));
        let dir = Scratch::new(&format!("udp-{tag}"));
        let grant = Grant {
            driver: "flannel".into(),
            network_id: Some("n1".into()),
            route_prefixes: vec!["10.244.0.0/16".parse().unwrap()],
            underlay: Some(eth0.link_ref()),
            ..Grant::default()
        };
        let mut host = test_support::host(kernel, &dir, grant, "reconcile");
        let tun = handle(&mut host, &tun, true);
        let bridge = handle(&mut host, &br, true);
        Case {
            host,
            tun,
            bridge,
            _dir: dir,
        }
    }

    fn peer(prefix: &str, to: &str) -> Peer {
        Peer {
            prefix: from_prefix(prefix.parse().unwrap()),
            address: from_ip(to.parse().unwrap()),
        }
    }

    fn local() -> IpAddress {
        from_ip("192.0.2.11".parse().unwrap())
    }

    fn refused(r: HostResult<()>) -> String {
        match r {
            Err(HostError::Guest(WitError::Denied(m) | WitError::Invalid(m))) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_table_is_recorded_and_undone_with_the_call() {
        let mut c = case("ok");
        let tun = Resource::new_borrow(c.tun.rep());
        c.host
            .configure(
                tun,
                local(),
                8285,
                vec![peer("10.244.2.0/24", "192.0.2.12")],
            )
            .unwrap();
        let rec: UdpTunnel =
            serde_json::from_slice(&c.host.store.get(SPACE, "n1").unwrap().unwrap().value).unwrap();
        assert_eq!(rec.device, "flannel0");
        assert_eq!(rec.local, "192.0.2.11:8285".parse().unwrap());
        assert_eq!(
            rec.peers,
            vec![(
                "10.244.2.0/24".parse().unwrap(),
                "192.0.2.12".parse().unwrap()
            )]
        );
        let done = c.host.finish();
        let mut store = done.store;
        done.journal.rollback(&FakeKernel::new(), store.as_mut());
        assert!(
            store.get(SPACE, "n1").unwrap().is_none(),
            "rolled back with the call"
        );
    }

    #[test]
    fn hostile_tables_are_refused() {
        let mut c = case("bad");
        let b = |r: &Resource<LinkHandle>| Resource::new_borrow(r.rep());
        let e = refused(c.host.configure(b(&c.bridge), local(), 8285, vec![]));
        assert!(e.contains("not a TUN"), "{e}");
        let e = refused(c.host.configure(b(&c.tun), local(), 53, vec![]));
        assert!(e.contains("below 1024"), "{e}");
        let e = refused(c.host.configure(b(&c.tun), local(), 8472, vec![]));
        assert!(e.contains("VXLAN"), "{e}");
        let e = refused(c.host.configure(
            b(&c.tun),
            local(),
            8285,
            vec![peer("10.244.2.0/24", "10.244.9.9")],
        ));
        assert!(e.contains("a loop"), "{e}");
        let e = refused(c.host.configure(
            b(&c.tun),
            from_ip("203.0.113.1".parse().unwrap()),
            8285,
            vec![],
        ));
        assert!(e.contains("underlay"), "{e}");
        let e = refused(c.host.configure(
            b(&c.tun),
            local(),
            8285,
            vec![peer("0.0.0.0/0", "192.0.2.12")],
        ));
        assert!(e.contains("outside what network n1 may route"), "{e}");
        let e = refused(c.host.configure(
            b(&c.tun),
            local(),
            8285,
            vec![peer("10.244.2.0/24", "127.0.0.1")],
        ));
        assert!(e.contains("not a unicast"), "{e}");
        let many = (0..=MAX_PEERS)
            .map(|_| peer("10.244.2.0/24", "192.0.2.12"))
            .collect();
        let e = refused(c.host.configure(b(&c.tun), local(), 8285, many));
        assert!(e.contains("at most"), "{e}");
        assert!(c.host.store.get(SPACE, "n1").unwrap().is_none());
    }
}
