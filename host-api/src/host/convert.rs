//! Between WIT address types and std/ipnet ones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::{HostError, HostResult};
use crate::bindings::netshim::plugin::types::{IpAddress, IpPrefix};

pub fn to_ip(a: &IpAddress) -> IpAddr {
    match *a {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
        }
    }
}

pub fn from_ip(a: IpAddr) -> IpAddress {
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            IpAddress::Ipv4((o[0], o[1], o[2], o[3]))
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            IpAddress::Ipv6((s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]))
        }
    }
}

pub fn to_prefix(p: &IpPrefix) -> HostResult<IpNet> {
    let ip = to_ip(&p.address);
    IpNet::new(ip, p.prefix_len).map_err(|_| {
        HostError::invalid(format!(
            "prefix length {} is too long for {ip}",
            p.prefix_len
        ))
    })
}

pub fn from_prefix(n: IpNet) -> IpPrefix {
    IpPrefix {
        address: from_ip(n.addr()),
        prefix_len: n.prefix_len(),
    }
}
