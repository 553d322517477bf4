//! This node as Calico records it (`resources/v3/projectcalico.org/nodes/
//! <name>`): its address, and for VXLAN its tunnel address and MAC, which
//! every other node needs to reach its blocks.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netshim_guest_sdk::host::cluster;
use netshim_guest_sdk::host::store::Condition;
use netshim_guest_sdk::Error;
use serde_json::json;

pub fn key(node: &str) -> String {
    format!("resources/v3/projectcalico.org/nodes/{node}")
}

/// What another node needs of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// The node's own address (with its prefix: CrossSubnet compares).
    pub address: Ipv4Net,
    pub vxlan_addr: Option<Ipv4Addr>,
    pub vxlan_mac: Option<[u8; 6]>,
    /// Set on a BGP route reflector (Calico's `routeReflectorClusterID`).
    pub rr_cluster_id: Option<Ipv4Addr>,
}

pub fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .filter_map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    (v.len() == 6 && s.split(':').count() == 6).then(|| [v[0], v[1], v[2], v[3], v[4], v[5]])
}

/// Write this node's record (only if it changed).
pub fn publish(n: &NodeInfo) -> Result<(), Error> {
    let mut spec = json!({ "bgp": { "ipv4Address": n.address.to_string() } });
    if let Some(c) = n.rr_cluster_id {
        spec["bgp"]["routeReflectorClusterID"] = json!(c.to_string());
    }
    if let Some(a) = n.vxlan_addr {
        spec["ipv4VXLANTunnelAddr"] = json!(a.to_string());
    }
    if let Some(m) = n.vxlan_mac {
        spec["vxlanTunnelMACAddr"] = json!(mac_text(m));
    }
    let value = json!({
        "apiVersion": "projectcalico.org/v3",
        "kind": "Node",
        "metadata": { "name": n.name },
        "spec": spec,
    })
    .to_string();
    let key = key(&n.name);
    match cluster::get(&key)? {
        Some(e) if e.value == value.as_bytes() => Ok(()),
        Some(e) => {
            cluster::put(
                &key,
                value.as_bytes(),
                Condition::Revision(e.revision),
                None,
            )?;
            Ok(())
        }
        None => {
            cluster::put(&key, value.as_bytes(), Condition::Absent, None)?;
            Ok(())
        }
    }
}

pub fn withdraw(name: &str) -> Result<(), Error> {
    cluster::delete(&key(name), Condition::None)?;
    Ok(())
}

/// Every node's record that parses (BGP peers come from here).
pub fn all() -> Result<Vec<NodeInfo>, Error> {
    let prefix = key("");
    Ok(cluster::list_prefix(&prefix)?
        .iter()
        .filter_map(|e| {
            let name = e.key.strip_prefix(&prefix)?;
            crate::keys::valid_node(name).then_some(())?;
            parse(name, &e.value)
        })
        .collect())
}

/// Another node's record, checked; `None` if absent or unreadable.
pub fn lookup(name: &str) -> Result<Option<NodeInfo>, Error> {
    let Some(e) = cluster::get(&key(name))? else {
        return Ok(None);
    };
    Ok(parse(name, &e.value))
}

fn parse(name: &str, value: &[u8]) -> Option<NodeInfo> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(value) else {
        return None;
    };
    let spec = &v["spec"];
    let address = spec["bgp"]["ipv4Address"]
        .as_str()
        .and_then(|a| a.parse::<Ipv4Net>().ok())?;
    Some(NodeInfo {
        name: name.to_string(),
        address,
        vxlan_addr: spec["ipv4VXLANTunnelAddr"]
            .as_str()
            .and_then(|a| a.parse().ok()),
        vxlan_mac: spec["vxlanTunnelMACAddr"].as_str().and_then(parse_mac),
        rr_cluster_id: spec["bgp"]["routeReflectorClusterID"]
            .as_str()
            .and_then(|a| a.parse().ok()),
    })
}
