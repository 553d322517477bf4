//! Deterministic names and addresses derived from ids: veth names, MACs,
//! rule ids. Pure functions, no WIT imports.

use std::net::Ipv4Addr;

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
pub const IFNAMSIZ_MAX: usize = 15;

/// 32-bit FNV-1a.
pub fn fnv1a32(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Seven lowercase hex digits (28 bits) of the FNV-1a hash of `id`.
pub fn hash7(id: &str) -> String {
    format!("{:07x}", fnv1a32(id) & 0x0fff_ffff)
}

/// Name of the veth end that stays on the node and is enslaved to the bridge.
pub fn host_veth(endpoint_id: &str) -> String {
    format!("veth{}", hash7(endpoint_id))
}

/// Name of the container end while it is not yet named by the host.
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

/// Whether `name` is acceptable to the kernel as an interface name.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAMSIZ_MAX
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// Docker's MAC for an endpoint: 02:42 followed by the four IPv4 octets.
pub fn mac_from_ipv4(a: Ipv4Addr) -> (u8, u8, u8, u8, u8, u8) {
    let [a, b, c, d] = a.octets();
    (0x02, 0x42, a, b, c, d)
}

/// A locally administered MAC from the endpoint id, for endpoints without an
/// IPv4 address.
pub fn mac_from_id(id: &str) -> (u8, u8, u8, u8, u8, u8) {
    let [a, b, c, d] = fnv1a32(id).to_be_bytes();
    (0x02, 0x42, a, b, c, d)
}

/// A stable, locally administered MAC for a network's bridge. Like Docker,
/// the bridge gets an address of its own so that it does not take (and
/// change with) the address of its lowest-numbered port.
pub fn bridge_mac(network_id: &str) -> (u8, u8, u8, u8, u8, u8) {
    let [a, b, c, d] = fnv1a32(&format!("bridge:{network_id}")).to_be_bytes();
    (0x02, 0x42, a, b, c, d)
}

/// Prefix shared by the ids of every port-mapping rule of one endpoint.
pub fn port_rule_prefix(endpoint_id: &str) -> String {
    format!("pm-{}-", hash7(endpoint_id))
}

/// Id of the DNAT rule publishing `host_port/proto` for an endpoint.
pub fn port_rule_id(endpoint_id: &str, proto: &str, host_port: u16) -> String {
    format!("{}{}-{}", port_rule_prefix(endpoint_id), proto, host_port)
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
        assert!(!valid_ifname("a b"));
        assert!(!valid_ifname(".."));
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
        let b = bridge_mac("net");
        assert_eq!((b.0, b.1), (0x02, 0x42));
        assert_eq!(b, bridge_mac("net"));
        assert_ne!(b, bridge_mac("net2"));
    }

    #[test]
    fn port_rule_ids() {
        let id = port_rule_id("ep1", "tcp", 8080);
        assert!(id.starts_with(&port_rule_prefix("ep1")));
        assert_eq!(id, format!("pm-{}-tcp-8080", hash7("ep1")));
    }
}
