//! IPv4 prefixes as [`Ipv4Net`], and the conversions to and from the WIT
//! types. A prefix keeps its host bits (`10.0.0.2/24` is an interface
//! address); `.trunc()` gives its network.
//!
//! Every conversion from WIT takes `what` (e.g. "pool", "gateway") so an
//! error names the argument that was wrong, not just the value.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv4Net;

use crate::{Error, IpAddress, IpPrefix};

/// An address for messages.
pub fn show_addr(a: &IpAddress) -> String {
    match *a {
        IpAddress::Ipv4((a, b, c, d)) => Ipv4Addr::new(a, b, c, d).to_string(),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
            Ipv6Addr::new(a, b, c, d, e, f, g, h).to_string()
        }
    }
}

/// A prefix for messages.
pub fn show_prefix(p: &IpPrefix) -> String {
    format!("{}/{}", show_addr(&p.address), p.prefix_len)
}

/// The IPv4 address, if it is one.
pub fn v4_of(a: &IpAddress) -> Option<Ipv4Addr> {
    match *a {
        IpAddress::Ipv4((a, b, c, d)) => Some(Ipv4Addr::new(a, b, c, d)),
        IpAddress::Ipv6(_) => None,
    }
}

/// An IPv4 address, or `invalid` naming `what`.
pub fn v4_addr(a: &IpAddress, what: &str) -> Result<Ipv4Addr, Error> {
    v4_of(a)
        .ok_or_else(|| Error::Invalid(format!("{what} {} is not an IPv4 address", show_addr(a))))
}

/// An IPv4 prefix (host bits kept), or `invalid` naming `what`.
pub fn v4_prefix(p: &IpPrefix, what: &str) -> Result<Ipv4Net, Error> {
    let addr = v4_of(&p.address).ok_or_else(|| {
        Error::Invalid(format!("{what} {} is not an IPv4 prefix", show_prefix(p)))
    })?;
    Ipv4Net::new(addr, p.prefix_len)
        .map_err(|_| Error::Invalid(format!("{what} {}: prefix length above 32", show_prefix(p))))
}

/// "a.b.c.d/len", with a message naming the text when it is not. For
/// prefixes read back from the store, where a bad one means corruption.
pub fn parse_v4(s: &str) -> Result<Ipv4Net, String> {
    let bad = || format!("{s:?} is not an IPv4 prefix");
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    Ipv4Net::new(addr, len).map_err(|_| format!("{s:?}: prefix length above 32"))
}

pub fn wit_addr(a: Ipv4Addr) -> IpAddress {
    let [a, b, c, d] = a.octets();
    IpAddress::Ipv4((a, b, c, d))
}

pub fn wit_prefix(n: Ipv4Net) -> IpPrefix {
    IpPrefix {
        address: wit_addr(n.addr()),
        prefix_len: n.prefix_len(),
    }
}

/// A host route: the address with a /32.
pub fn host_prefix(a: Ipv4Addr) -> IpPrefix {
    IpPrefix {
        address: wit_addr(a),
        prefix_len: 32,
    }
}

/// True when the two prefixes share an address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(b) || b.contains(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn overlap() {
        assert!(overlaps(&n("10.0.0.0/8"), &n("10.77.0.0/24")));
        assert!(overlaps(&n("10.77.0.0/24"), &n("10.0.0.0/8")));
        assert!(!overlaps(&n("10.77.0.0/24"), &n("10.77.1.0/24")));
        // Host bits do not change what a prefix covers.
        assert!(overlaps(&n("10.77.0.5/24"), &n("10.77.0.200/25")));
        assert!(n("10.77.0.0/24").contains(&n("10.77.0.128/25")));
        assert!(!n("10.77.0.128/25").contains(&n("10.77.0.0/24")));
    }

    #[test]
    fn parse_names_the_text() {
        assert_eq!(parse_v4("172.17.0.0/16").unwrap(), n("172.17.0.0/16"));
        assert_eq!(
            parse_v4("172.17.0.0").unwrap_err(),
            "\"172.17.0.0\" is not an IPv4 prefix"
        );
        assert_eq!(
            parse_v4("172.17.0.0/33").unwrap_err(),
            "\"172.17.0.0/33\": prefix length above 32"
        );
        assert!(parse_v4("x/3").is_err());
        assert!(parse_v4("").is_err());
    }

    #[test]
    fn wit_round_trip() {
        let p = n("10.1.2.3/24");
        assert_eq!(v4_prefix(&wit_prefix(p), "x").unwrap(), p);
        assert_eq!(show_prefix(&wit_prefix(p)), "10.1.2.3/24");
        let v6 = IpPrefix {
            address: IpAddress::Ipv6((0xfd00, 0, 0, 0, 0, 0, 0, 1)),
            prefix_len: 64,
        };
        assert!(
            matches!(v4_prefix(&v6, "pool"), Err(Error::Invalid(m)) if m == "pool fd00::1/64 is not an IPv4 prefix")
        );
        let long = IpPrefix {
            address: wit_addr(Ipv4Addr::new(10, 0, 0, 1)),
            prefix_len: 40,
        };
        assert!(
            matches!(v4_prefix(&long, "gateway"), Err(Error::Invalid(m)) if m == "gateway 10.0.0.1/40: prefix length above 32")
        );
        assert!(
            matches!(v4_addr(&v6.address, "address"), Err(Error::Invalid(m)) if m.contains("address fd00::1"))
        );
        assert_eq!(
            show_prefix(&host_prefix(Ipv4Addr::LOCALHOST)),
            "127.0.0.1/32"
        );
    }
}
