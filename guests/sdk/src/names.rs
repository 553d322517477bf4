//! Names and MACs derived from ids. A driver keeps nothing in memory
//! between calls, so the name of an endpoint's veth must be computable
//! from the endpoint id alone, by `create-endpoint` and `delete-endpoint`
//! alike, on this node and after a restart.

use std::net::Ipv4Addr;

use crate::MacAddress;

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
pub const IFNAMSIZ_MAX: usize = 15;

/// 32-bit FNV-1a: stable across builds and platforms (std's hasher is not).
pub fn fnv1a32(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Seven lowercase hex digits (28 bits) of the FNV-1a hash of `id`: with a
/// four-character prefix, a name that fits IFNAMSIZ.
pub fn hash7(id: &str) -> String {
    format!("{:07x}", fnv1a32(id) & 0x0fff_ffff)
}

/// `prefix` followed by [`hash7`] of `id` (e.g. Calico's `cali…`), when
/// that is a valid interface name.
pub fn hashed_ifname(prefix: &str, id: &str) -> Option<String> {
    let name = format!("{prefix}{}", hash7(id));
    valid_ifname(&name).then_some(name)
}

/// Name of the veth end that stays on the node.
pub fn host_veth(endpoint_id: &str) -> String {
    format!("veth{}", hash7(endpoint_id))
}

/// Name of the container end while the host has not named it yet (it is
/// in the node's namespace, or the request gave no interface name).
pub fn peer_veth(endpoint_id: &str) -> String {
    format!("vctr{}", hash7(endpoint_id))
}

/// Name the container end gets when the driver creates it inside the
/// sandbox: the requested interface name, or the peer name if none was given.
pub fn sandbox_ifname(endpoint_id: &str, ifname: &str) -> String {
    if ifname.is_empty() {
        peer_veth(endpoint_id)
    } else {
        ifname.to_string()
    }
}

/// The MAC an endpoint's container end gets: the requested one, else
/// Docker's 02:42:<IPv4 octets>, else one derived from the endpoint id.
pub fn endpoint_mac(
    ep: &crate::guest::driver::EndpointRequest,
) -> Result<MacAddress, crate::Error> {
    if let Some(m) = ep.mac {
        return Ok(m);
    }
    match &ep.ipv4 {
        Some(p) => Ok(mac_from_ipv4(
            crate::addr::v4_prefix(p, "endpoint address")?.addr(),
        )),
        None => Ok(mac_from_id(&ep.id)),
    }
}

/// Name of an endpoint's container end right after `create-endpoint`:
/// its final name when born in the sandbox, else the peer name the host
/// renames later.
pub fn container_end(ep: &crate::guest::driver::EndpointRequest, in_sandbox: bool) -> String {
    if in_sandbox {
        sandbox_ifname(&ep.id, &ep.ifname)
    } else {
        peer_veth(&ep.id)
    }
}

/// Whether the kernel accepts `name` as an interface name. Checked before
/// asking the host, so the error names the option it came from.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAMSIZ_MAX
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// A locally administered unicast MAC, 02:42 and four bytes (Docker's
/// prefix, so tools that know Docker's MACs recognise these).
fn mac(tail: [u8; 4]) -> MacAddress {
    let [a, b, c, d] = tail;
    (0x02, 0x42, a, b, c, d)
}

/// Docker's MAC for an endpoint: 02:42 followed by the four IPv4 octets.
pub fn mac_from_ipv4(a: Ipv4Addr) -> MacAddress {
    mac(a.octets())
}

/// A MAC from an id, for endpoints without an IPv4 address.
pub fn mac_from_id(id: &str) -> MacAddress {
    mac(fnv1a32(id).to_be_bytes())
}

/// A stable MAC for a network's bridge. Like Docker, the bridge gets an
/// address of its own so that it does not take (and change with) the
/// address of its lowest-numbered port.
pub fn bridge_mac(network_id: &str) -> MacAddress {
    mac_from_id(&format!("bridge:{network_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        // Reference values of 32-bit FNV-1a.
        assert_eq!(fnv1a32(""), 0x811c_9dc5);
        assert_eq!(fnv1a32("a"), 0xe40c_292c);
        assert_eq!(fnv1a32("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn veth_names_are_stable_short_and_distinct() {
        let id = "3f4e5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081";
        let h = host_veth(id);
        let p = peer_veth(id);
        assert_eq!(h, host_veth(id));
        assert_eq!(h.len(), 11);
        assert!(h.len() <= IFNAMSIZ_MAX && p.len() <= IFNAMSIZ_MAX);
        assert_ne!(h, p);
        assert!(h.starts_with("veth") && p.starts_with("vctr"));
        assert_eq!(&h[4..], &p[4..]);
        assert!(h[4..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(host_veth("a"), host_veth("b"));
        // Short hashes are zero-padded.
        assert_eq!(hash7("").len(), 7);
        assert_eq!(hashed_ifname("veth", id), Some(h));
        assert_eq!(hashed_ifname("cali", "x").unwrap().len(), 11);
        assert_eq!(hashed_ifname("too-long-", "x"), None);
    }

    #[test]
    fn sandbox_name() {
        assert_eq!(sandbox_ifname("x", "eth1"), "eth1");
        assert_eq!(sandbox_ifname("x", ""), peer_veth("x"));
    }

    #[test]
    fn ifname_validation() {
        assert!(valid_ifname("br-0123456789ab"));
        assert!(!valid_ifname("br-0123456789abc"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("a/b"));
        assert!(!valid_ifname("a:b"));
        assert!(!valid_ifname("a b"));
        assert!(!valid_ifname("a\0"));
        assert!(!valid_ifname("."));
        assert!(!valid_ifname(".."));
        assert!(valid_ifname("..."));
    }

    #[test]
    fn docker_mac() {
        assert_eq!(
            mac_from_ipv4(Ipv4Addr::new(172, 17, 0, 2)),
            (0x02, 0x42, 172, 17, 0, 2)
        );
        let m = mac_from_id("abc");
        assert_eq!((m.0, m.1), (0x02, 0x42));
        assert_eq!(m, mac_from_id("abc"));
        let [a, b, c, d] = fnv1a32("abc").to_be_bytes();
        assert_eq!(m, (0x02, 0x42, a, b, c, d));
        let b = bridge_mac("net");
        assert_eq!((b.0, b.1), (0x02, 0x42));
        assert_eq!(b, bridge_mac("net"));
        assert_eq!(b, mac_from_id("bridge:net"));
        assert_ne!(b, bridge_mac("net2"));
    }
}
