//! IPv4 prefixes over std types, and conversions to and from the WIT types.
//!
//! The pure part (`Net4`) has no WIT dependency so it can be unit-tested on
//! the host target.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::netshim::plugin0_1_0::types::{Error, IpAddress, IpPrefix};

/// An IPv4 address with a prefix length (`10.0.0.2/24` or `10.0.0.0/24`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Net4 {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Net4 {
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Net4> {
        (len <= 32).then_some(Net4 { addr, len })
    }

    pub fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        }
    }

    /// The network this address belongs to (host bits cleared).
    pub fn network(&self) -> Net4 {
        Net4 {
            addr: Ipv4Addr::from(u32::from(self.addr) & self.mask()),
            len: self.len,
        }
    }

    /// First address of the prefix, as a number.
    pub fn first(&self) -> u32 {
        u32::from(self.addr) & self.mask()
    }

    /// Last (broadcast) address of the prefix, as a number.
    pub fn last(&self) -> u32 {
        self.first() | !self.mask()
    }

    /// Number of addresses in the prefix.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    pub fn contains_addr(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == self.first()
    }

    /// True when `other` lies entirely inside `self`.
    pub fn contains(&self, other: &Net4) -> bool {
        other.len >= self.len && self.contains_addr(other.addr)
    }

    pub fn overlaps(&self, other: &Net4) -> bool {
        self.contains(other) || other.contains(self)
    }
}

impl fmt::Display for Net4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Net4 {
    type Err = String;
    fn from_str(s: &str) -> Result<Net4, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IPv4 prefix"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 prefix"))?;
        let len: u8 = l
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 prefix"))?;
        Net4::new(addr, len).ok_or_else(|| format!("{s:?}: prefix length above 32"))
    }
}

/// Display of a WIT address, for messages.
pub fn show_addr(a: &IpAddress) -> String {
    match *a {
        IpAddress::Ipv4((a, b, c, d)) => Ipv4Addr::new(a, b, c, d).to_string(),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
            std::net::Ipv6Addr::new(a, b, c, d, e, f, g, h).to_string()
        }
    }
}

pub fn show_prefix(p: &IpPrefix) -> String {
    format!("{}/{}", show_addr(&p.address), p.prefix_len)
}

pub fn v4_of(a: &IpAddress) -> Option<Ipv4Addr> {
    match *a {
        IpAddress::Ipv4((a, b, c, d)) => Some(Ipv4Addr::new(a, b, c, d)),
        IpAddress::Ipv6(_) => None,
    }
}

/// An IPv4 WIT address, or `invalid` naming `what`.
pub fn v4_addr(a: &IpAddress, what: &str) -> Result<Ipv4Addr, Error> {
    v4_of(a)
        .ok_or_else(|| Error::Invalid(format!("{what} {} is not an IPv4 address", show_addr(a))))
}

/// An IPv4 WIT prefix, or `invalid` naming `what`.
pub fn v4_prefix(p: &IpPrefix, what: &str) -> Result<Net4, Error> {
    let addr = v4_of(&p.address).ok_or_else(|| {
        Error::Invalid(format!("{what} {} is not an IPv4 prefix", show_prefix(p)))
    })?;
    Net4::new(addr, p.prefix_len)
        .ok_or_else(|| Error::Invalid(format!("{what} {}: prefix length above 32", show_prefix(p))))
}

pub fn wit_addr(a: Ipv4Addr) -> IpAddress {
    let [a, b, c, d] = a.octets();
    IpAddress::Ipv4((a, b, c, d))
}

pub fn wit_prefix(n: Net4) -> IpPrefix {
    IpPrefix {
        address: wit_addr(n.addr),
        prefix_len: n.len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Net4 {
        s.parse().unwrap()
    }

    #[test]
    fn network_and_bounds() {
        let p = n("10.77.0.5/24");
        assert_eq!(p.network(), n("10.77.0.0/24"));
        assert_eq!(Ipv4Addr::from(p.first()), Ipv4Addr::new(10, 77, 0, 0));
        assert_eq!(Ipv4Addr::from(p.last()), Ipv4Addr::new(10, 77, 0, 255));
        assert_eq!(p.size(), 256);
        assert_eq!(n("0.0.0.0/0").mask(), 0);
        assert_eq!(n("0.0.0.0/0").size(), 1 << 32);
        assert_eq!(n("1.2.3.4/32").size(), 1);
    }

    #[test]
    fn overlap() {
        assert!(n("10.0.0.0/8").overlaps(&n("10.77.0.0/24")));
        assert!(n("10.77.0.0/24").overlaps(&n("10.0.0.0/8")));
        assert!(!n("10.77.0.0/24").overlaps(&n("10.77.1.0/24")));
        assert!(n("10.77.0.0/24").contains(&n("10.77.0.128/25")));
        assert!(!n("10.77.0.128/25").contains(&n("10.77.0.0/24")));
    }

    #[test]
    fn parse_display() {
        assert_eq!(n("172.17.0.0/16").to_string(), "172.17.0.0/16");
        assert!("172.17.0.0".parse::<Net4>().is_err());
        assert!("172.17.0.0/33".parse::<Net4>().is_err());
        assert!("x/3".parse::<Net4>().is_err());
    }

    #[test]
    fn wit_round_trip() {
        let p = n("10.1.2.3/24");
        assert_eq!(v4_prefix(&wit_prefix(p), "x").unwrap(), p);
        let v6 = IpPrefix {
            address: IpAddress::Ipv6((0xfd00, 0, 0, 0, 0, 0, 0, 1)),
            prefix_len: 64,
        };
        assert!(
            matches!(v4_prefix(&v6, "pool"), Err(Error::Invalid(m)) if m.contains("fd00::1/64"))
        );
    }
}
