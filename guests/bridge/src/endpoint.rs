//! Endpoints: a veth pair per endpoint, the node end enslaved to the
//! network's bridge, the other end created in the sandbox (or left in the
//! node namespace for dockerd to move).

use netshim_guest_sdk::guest::driver::{EndpointInfo, EndpointRequest, JoinInfo, Network};
use netshim_guest_sdk::host::link::{self, Sandbox, VethSpec};
use netshim_guest_sdk::log::debug;
use netshim_guest_sdk::teardown::Teardown;
use netshim_guest_sdk::{links, names, Error, MacAddress};

use crate::network::{self, BridgeConfig};
use crate::ports;

/// The MAC the container end gets (the SDK's rule, Docker's MACs).
pub fn endpoint_mac(ep: &EndpointRequest) -> Result<MacAddress, Error> {
    names::endpoint_mac(ep)
}

/// Name of the container end right after `create-endpoint`.
pub fn container_end_name(ep: &EndpointRequest, in_sandbox: bool) -> String {
    names::container_end(ep, in_sandbox)
}

pub fn create(
    net: &Network,
    ep: &EndpointRequest,
    sb: Option<&Sandbox>,
) -> Result<EndpointInfo, Error> {
    let cfg = BridgeConfig::from_options(&net.id, &net.options, false)?;
    if ep.ipv6.is_some() {
        return Err(Error::Unsupported(
            "the bridge driver does not support IPv6 endpoints yet".into(),
        ));
    }
    let mac = endpoint_mac(ep)?;
    let host = names::host_veth(&ep.id);
    let peer = container_end_name(ep, sb.is_some());
    if !names::valid_ifname(&peer) {
        return Err(Error::Invalid(format!(
            "interface name {peer:?} is not a valid Linux interface name"
        )));
    }
    debug(&format!(
        "create-endpoint {} endpoint {}: {host} <-> {peer} ({}) on {}",
        net.name,
        ep.id,
        if sb.is_some() {
            "in sandbox"
        } else {
            "node namespace"
        },
        cfg.bridge
    ));
    // Open the bridge first: no point creating a veth for a network that is gone.
    let bridge = link::open_owned(&cfg.bridge)?;
    let spec = VethSpec {
        name: host,
        peer_name: peer,
        mtu: cfg.mtu,
        mac: None,
        peer_mac: Some(mac),
        peer_sandbox: sb,
    };
    links::veth_on_bridge(&spec, &bridge)?;
    Ok(EndpointInfo {
        ipv4: None,
        ipv6: None,
        mac: if ep.mac.is_none() { Some(mac) } else { None },
    })
}

pub fn join(net: &Network, ep: &EndpointRequest, sb: Option<&Sandbox>) -> Result<JoinInfo, Error> {
    let (_, gateway) = network::subnet_of(net)?;
    let src_name = container_end_name(ep, sb.is_some());
    debug(&format!("join {} endpoint {}: {src_name}", net.name, ep.id));
    Ok(JoinInfo {
        src_name,
        in_sandbox: sb.is_some(),
        dst_prefix: "eth".into(),
        gateway: if net.internal {
            None
        } else {
            Some(gateway.address)
        },
        gateway_ipv6: None,
        static_routes: Vec::new(),
        disable_gateway_service: net.internal,
    })
}

/// Best effort: the port rules, then the veth pair. A pair that is already
/// gone (its sandbox was deleted and took it along) is fine.
pub fn delete(net: &Network, endpoint_id: &str) -> Result<(), Error> {
    let host = names::host_veth(endpoint_id);
    debug(&format!(
        "delete-endpoint {} endpoint {endpoint_id}: {host}",
        net.name
    ));
    let mut td = Teardown::new(format!("delete-endpoint {endpoint_id}"));
    td.check("removing port mappings", ports::revoke(endpoint_id));
    links::delete_owned(&host, &host, &mut td);
    td.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netshim_guest_sdk::addr;

    fn ep(ipv4: Option<&str>, mac: Option<MacAddress>, ifname: &str) -> EndpointRequest {
        EndpointRequest {
            id: "ep-1".into(),
            ipv4: ipv4.map(|s| addr::wit_prefix(s.parse().unwrap())),
            ipv6: None,
            mac,
            ifname: ifname.into(),
            options: vec![],
            ports: vec![],
        }
    }

    #[test]
    fn mac_choice() {
        assert_eq!(
            endpoint_mac(&ep(Some("10.77.0.2/24"), None, "eth0")).unwrap(),
            (2, 0x42, 10, 77, 0, 2)
        );
        let m = (0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff);
        assert_eq!(
            endpoint_mac(&ep(Some("10.77.0.2/24"), Some(m), "eth0")).unwrap(),
            m
        );
        assert_eq!(
            endpoint_mac(&ep(None, None, "eth0")).unwrap(),
            names::mac_from_id("ep-1")
        );
    }

    #[test]
    fn container_end() {
        assert_eq!(container_end_name(&ep(None, None, "eth0"), true), "eth0");
        assert_eq!(
            container_end_name(&ep(None, None, "eth0"), false),
            names::peer_veth("ep-1")
        );
        assert_eq!(
            container_end_name(&ep(None, None, ""), true),
            names::peer_veth("ep-1")
        );
    }
}
