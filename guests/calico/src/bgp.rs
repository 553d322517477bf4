//! Routes between nodes by BGP (pools with encapsulation Never), as
//! Calico's confd renders them for BIRD: this node's speaker states its
//! router id (the node's address), the cluster's AS number, its peers and
//! its blocks; the host runs BIRD from that (WIT 0.2 `bgp`).
//!
//! Topology, from the cluster store:
//! - the AS number and whether the full mesh is on come from Calico's
//!   `BGPConfiguration` `default` (`asNumber`, `nodeToNodeMeshEnabled`;
//!   64512 and true when it is absent);
//! - with no route reflector in the cluster, every node peers with every
//!   other (`Mesh_…`);
//! - once a node carries `routeReflectorClusterID` (its operator started
//!   it with `--route-reflector-cluster-id`), reflectors peer with each
//!   other and with every other node as their clients, and the other
//!   nodes peer with the reflectors only (`Node_…`);
//! - global `BGPPeer` resources without a node selector (a top-of-rack
//!   router) are peers of every node (`Global_…`).
//!
//! BIRD's sessions are single-hop: a node or router outside this node's
//! underlay subnet is left out, with a warning.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netshim_guest_sdk::host::bgp::{self, Peer, PeerKind, PrefixRange, Speaker};
use netshim_guest_sdk::host::cluster;
use netshim_guest_sdk::log::warn;
use netshim_guest_sdk::{addr, Error};

use crate::node::NodeInfo;
use crate::pool::PoolSpec;

pub const DEFAULT_AS: u32 = 64512;
const CONFIG_KEY: &str = "resources/v3/projectcalico.org/bgpconfigurations/default";
const PEERS: &str = "resources/v3/projectcalico.org/bgppeers/";

/// Calico's cluster-wide BGP settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub as_number: u32,
    pub mesh: bool,
}

pub fn config() -> Result<Config, Error> {
    let mut c = Config {
        as_number: DEFAULT_AS,
        mesh: true,
    };
    if let Some(e) = cluster::get(CONFIG_KEY)? {
        match serde_json::from_slice::<serde_json::Value>(&e.value) {
            Ok(v) => {
                if let Some(n) = v["spec"]["asNumber"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                {
                    c.as_number = n;
                }
                if let Some(m) = v["spec"]["nodeToNodeMeshEnabled"].as_bool() {
                    c.mesh = m;
                }
            }
            Err(e) => warn(&format!("{CONFIG_KEY}: unreadable ({e}); defaults used")),
        }
    }
    Ok(c)
}

/// Global peers: `BGPPeer`s with a `peerIP` and no node or node selector
/// (other selectors are not here yet, so such peers are skipped).
fn global_peers() -> Result<Vec<(Ipv4Addr, u32)>, Error> {
    let mut out = Vec::new();
    for e in cluster::list_prefix(PEERS)? {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&e.value) else {
            warn(&format!("{}: unreadable BGPPeer skipped", e.key));
            continue;
        };
        let spec = &v["spec"];
        let scoped = spec["node"].as_str().is_some_and(|s| !s.is_empty())
            || spec["nodeSelector"]
                .as_str()
                .is_some_and(|s| !s.is_empty() && s != "all()");
        if scoped {
            warn(&format!(
                "{}: node-scoped BGPPeers are not supported yet (skipped)",
                e.key
            ));
            continue;
        }
        let ip = spec["peerIP"]
            .as_str()
            .and_then(|a| a.parse::<Ipv4Addr>().ok());
        let asn = spec["asNumber"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok());
        match (ip, asn) {
            (Some(ip), Some(asn)) => out.push((ip, asn)),
            _ => warn(&format!(
                "{}: a BGPPeer needs peerIP (IPv4) and asNumber (skipped)",
                e.key
            )),
        }
    }
    Ok(out)
}

/// Which peer kind another node is to this one, if any.
fn relation(me: &NodeInfo, other: &NodeInfo, reflectors: bool, mesh: bool) -> Option<PeerKind> {
    match (me.rr_cluster_id.is_some(), other.rr_cluster_id.is_some()) {
        _ if !reflectors => mesh.then_some(PeerKind::Mesh),
        (true, true) | (false, true) => Some(PeerKind::Reflector),
        (true, false) => Some(PeerKind::ReflectorClient),
        (false, false) => None,
    }
}

/// This node's speaker: its peers by the rules above, its own prefixes
/// (blocks and borrowed addresses) to announce, and the pool's blocks and
/// single addresses to accept.
pub fn speaker(
    spec: &PoolSpec,
    me: &NodeInfo,
    nodes: &[NodeInfo],
    own: &[Ipv4Net],
) -> Result<Speaker, Error> {
    let cfg = config()?;
    let subnet = me.address.trunc();
    let reflectors = me.rr_cluster_id.is_some()
        || nodes
            .iter()
            .any(|n| n.rr_cluster_id.is_some() && n.name != me.name);
    let mut peers: Vec<Peer> = Vec::new();
    let mut add = |a: Ipv4Addr, as_number: u32, kind: PeerKind, what: &str| {
        if a == me.address.addr() || peers.iter().any(|p| addr::v4_of(&p.address) == Some(a)) {
            return;
        }
        if !subnet.contains(&a) {
            warn(&format!(
                "{what} at {a} is outside this node's subnet {subnet}: no BGP session (sessions are single-hop)"
            ));
            return;
        }
        peers.push(Peer {
            address: addr::wit_addr(a),
            as_number,
            kind,
        });
    };
    for n in nodes.iter().filter(|n| n.name != me.name) {
        if let Some(kind) = relation(me, n, reflectors, cfg.mesh) {
            add(
                n.address.addr(),
                cfg.as_number,
                kind,
                &format!("node {}", n.name),
            );
        }
    }
    for (ip, asn) in global_peers()? {
        add(ip, asn, PeerKind::Global, "BGP peer");
    }
    let mut accept = vec![PrefixRange {
        prefix: addr::wit_prefix(spec.cidr),
        min_length: spec.block_size,
        max_length: spec.block_size,
    }];
    if spec.block_size < 32 {
        accept.push(PrefixRange {
            prefix: addr::wit_prefix(spec.cidr),
            min_length: 32,
            max_length: 32,
        });
    }
    Ok(Speaker {
        router_id: addr::wit_addr(me.address.addr()),
        as_number: cfg.as_number,
        route_reflector_cluster_id: me.rr_cluster_id.map(addr::wit_addr),
        peers,
        announce: own.iter().map(|n| addr::wit_prefix(*n)).collect(),
        accept,
    })
}

/// The reflector cluster id this node's operator gave it.
pub fn own_cluster_id() -> Option<Ipv4Addr> {
    bgp::route_reflector_cluster_id().and_then(|a| addr::v4_of(&a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, rr: bool) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            address: "192.0.2.11/24".parse().unwrap(),
            vxlan_addr: None,
            vxlan_mac: None,
            rr_cluster_id: rr.then(|| "244.0.0.1".parse().unwrap()),
        }
    }

    #[test]
    fn mesh_without_reflectors_reflectors_otherwise() {
        let (a, b, r) = (node("a", false), node("b", false), node("r", true));
        assert_eq!(relation(&a, &b, false, true), Some(PeerKind::Mesh));
        assert_eq!(relation(&a, &b, false, false), None);
        assert_eq!(relation(&a, &b, true, true), None);
        assert_eq!(relation(&a, &r, true, true), Some(PeerKind::Reflector));
        assert_eq!(
            relation(&r, &a, true, true),
            Some(PeerKind::ReflectorClient)
        );
        assert_eq!(relation(&r, &r, true, true), Some(PeerKind::Reflector));
    }
}
