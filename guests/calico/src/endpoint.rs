//! Endpoints the Calico way: no bridge. A veth whose node end is
//! `cali<first 11 characters of the endpoint id>` (Calico's name for
//! non-Kubernetes workloads) with the MAC ee:ee:ee:ee:ee:ee, proxy ARP
//! (so the node answers for 169.254.1.1) with no delay, forwarding, and a
//! /32 route to the endpoint through it; the container end holds a /32
//! and routes everything via 169.254.1.1, reached on-link.

use std::net::Ipv4Addr;

use netshim_guest_sdk::guest::driver::{
    EndpointInfo, EndpointRequest, JoinInfo, Network, RouteType, StaticRoute,
};
use netshim_guest_sdk::host::link::{self, Sandbox, VethSpec};
use netshim_guest_sdk::host::route::{self, Route, RouteKind, RouteScope};
use netshim_guest_sdk::host::sysctl::{self, LinkKey};
use netshim_guest_sdk::teardown::Teardown;
use netshim_guest_sdk::{addr, links, names, Error};

use crate::network;

/// The address every Calico workload routes through.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
const HOST_MAC: (u8, u8, u8, u8, u8, u8) = (0xee, 0xee, 0xee, 0xee, 0xee, 0xee);

/// `cali` + the first 11 characters of the id.
pub fn host_name(endpoint_id: &str) -> Result<String, Error> {
    let tail: String = endpoint_id.chars().take(11).collect();
    let name = format!("cali{tail}");
    if tail.len() < 11 || !names::valid_ifname(&name) {
        return Err(Error::Invalid(format!(
            "endpoint id {endpoint_id:?} cannot name a cali interface"
        )));
    }
    Ok(name)
}

pub fn create(
    net: &Network,
    ep: &EndpointRequest,
    sb: Option<&Sandbox>,
) -> Result<EndpointInfo, Error> {
    let Some(a) = &ep.ipv4 else {
        return Err(Error::Invalid(
            "a calico endpoint needs its IPv4 address from IPAM".into(),
        ));
    };
    let a = addr::v4_prefix(a, "endpoint address")?;
    let host = host_name(&ep.id)?;
    let peer = names::container_end(ep, sb.is_some());
    let mac = names::endpoint_mac(ep)?;
    let (node_end, _) = link::create_veth(&VethSpec {
        name: host.clone(),
        peer_name: peer,
        mtu: Some(network::mtu(net)?),
        mac: Some(HOST_MAC),
        peer_mac: Some(mac),
        peer_sandbox: sb,
    })?;
    sysctl::set_link(&node_end, LinkKey::ProxyArp, 1)?;
    sysctl::set_link(&node_end, LinkKey::ProxyDelay, 0)?;
    sysctl::set_link(&node_end, LinkKey::Forwarding, 1)?;
    let _ = sysctl::set_link(&node_end, LinkKey::AcceptRa, 0);
    node_end.set_up(true)?;
    network::note_local(a.addr(), &ep.id)?;
    route::add(&Route {
        destination: addr::host_prefix(a.addr()),
        gateway: None,
        device: Some(&node_end),
        kind: RouteKind::Unicast,
        scope: RouteScope::Link,
        onlink: false,
        table: None,
        metric: None,
        source: None,
    })?;
    Ok(EndpointInfo {
        ipv4: None,
        ipv6: None,
        mac: if ep.mac.is_none() { Some(mac) } else { None },
    })
}

pub fn join(ep: &EndpointRequest, sb: Option<&Sandbox>) -> Result<JoinInfo, Error> {
    Ok(JoinInfo {
        src_name: names::container_end(ep, sb.is_some()),
        in_sandbox: sb.is_some(),
        dst_prefix: "eth".into(),
        gateway: Some(addr::wit_addr(GATEWAY)),
        gateway_ipv6: None,
        static_routes: vec![StaticRoute {
            destination: addr::host_prefix(GATEWAY),
            route_type: RouteType::Connected,
            next_hop: None,
        }],
        disable_gateway_service: false,
    })
}

pub fn delete(endpoint_id: &str) -> Result<(), Error> {
    let host = host_name(endpoint_id)?;
    let mut td = Teardown::new(format!("delete-endpoint {endpoint_id}"));
    links::delete_owned(&host, &host, &mut td);
    td.check(
        "forgetting the endpoint's address",
        network::forget_local(endpoint_id),
    );
    td.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_calicos() {
        assert_eq!(host_name("08d091557e9f0a1b").unwrap(), "cali08d091557e9");
        assert!(host_name("short").is_err());
    }
}
