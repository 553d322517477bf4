//! Endpoints: a veth pair, the node end a port of the network's bridge
//! (hairpin on, as flannel's bridge plugin sets it), the container end
//! born in the sandbox with an address of this node's subnet.

use netshim_guest_sdk::guest::driver::{EndpointInfo, EndpointRequest, JoinInfo, Network};
use netshim_guest_sdk::host::link::{self, Sandbox, VethSpec};
use netshim_guest_sdk::teardown::Teardown;
use netshim_guest_sdk::{links, names, Error};

use crate::network;

pub fn create(
    net: &Network,
    ep: &EndpointRequest,
    sb: Option<&Sandbox>,
) -> Result<EndpointInfo, Error> {
    if ep.ipv6.is_some() {
        return Err(Error::Unsupported(
            "flannel networks are IPv4 only here".into(),
        ));
    }
    let bridge = link::open_owned(&network::bridge_name(net)?)?;
    let mtu = bridge.state()?.mtu;
    let m = names::endpoint_mac(ep)?;
    let peer = names::container_end(ep, sb.is_some());
    if !names::valid_ifname(&peer) {
        return Err(Error::Invalid(format!(
            "interface name {peer:?} is not a valid Linux interface name"
        )));
    }
    let spec = VethSpec {
        name: names::host_veth(&ep.id),
        peer_name: peer,
        mtu: Some(mtu),
        mac: None,
        peer_mac: Some(m),
        peer_sandbox: sb,
    };
    let node_end = links::veth_on_bridge(&spec, &bridge)?;
    node_end.set_hairpin(true)?;
    Ok(EndpointInfo {
        ipv4: None,
        ipv6: None,
        mac: if ep.mac.is_none() { Some(m) } else { None },
    })
}

pub fn join(net: &Network, ep: &EndpointRequest, sb: Option<&Sandbox>) -> Result<JoinInfo, Error> {
    let (_, gateway) = network::subnet_of(net)?;
    Ok(JoinInfo {
        src_name: names::container_end(ep, sb.is_some()),
        in_sandbox: sb.is_some(),
        dst_prefix: "eth".into(),
        gateway: Some(gateway.address),
        gateway_ipv6: None,
        static_routes: Vec::new(),
        disable_gateway_service: false,
    })
}

pub fn delete(endpoint_id: &str) -> Result<(), Error> {
    let host = names::host_veth(endpoint_id);
    let mut td = Teardown::new(format!("delete-endpoint {endpoint_id}"));
    links::delete_owned(&host, &host, &mut td);
    td.finish()
}
