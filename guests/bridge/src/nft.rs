//! The driver's nftables layout: chains and a set shared by all its
//! networks. The host runs each chain only at the attach points a network
//! attached it to, for that network's traffic.

use netshim_guest_sdk::host::netfilter::{AttachPoint, Op, SetElement, SetType};
use netshim_guest_sdk::rules::{add_chain, add_set, attach, detach, ifname_element};

/// Masquerade of each non-internal network (attached where its packets leave it).
pub const POSTROUTING: &str = "postrouting";
/// Isolation between bridges, internal networks (attached from and to each network).
pub const FORWARD: &str = "forward";
/// DNAT of published ports (attached for traffic to the node's addresses).
pub const PORTS: &str = "ports";
/// Chains of the 0.1 build of this driver, where its port rules lived;
/// still read so a network made by it is torn down completely.
pub const LEGACY_PORT_CHAINS: [&str; 2] = ["prerouting", "output"];
/// Set of the bridge names of every network of this driver.
pub const BRIDGES_SET: &str = "bridges";

/// The network's chains, attached for it (idempotent).
pub fn network_chains() -> Vec<Op> {
    vec![
        add_chain(POSTROUTING),
        attach(POSTROUTING, AttachPoint::NatLeavingNetwork),
        add_chain(FORWARD),
        attach(FORWARD, AttachPoint::ForwardFromNetwork),
        attach(FORWARD, AttachPoint::ForwardToNetwork),
        add_set(BRIDGES_SET, SetType::Ifname),
    ]
}

/// What undoes the attachments of [`network_chains`] for one network.
pub fn detach_network() -> Vec<Op> {
    vec![
        detach(POSTROUTING, AttachPoint::NatLeavingNetwork),
        detach(FORWARD, AttachPoint::ForwardFromNetwork),
        detach(FORWARD, AttachPoint::ForwardToNetwork),
    ]
}

/// The ports chain, attached for traffic to the node (idempotent).
pub fn ports_chain() -> Vec<Op> {
    vec![add_chain(PORTS), attach(PORTS, AttachPoint::NatToNode)]
}

pub fn bridge_element(bridge: &str) -> SetElement {
    ifname_element(BRIDGES_SET, bridge)
}
