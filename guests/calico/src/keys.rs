//! Calico's IPAM keys in etcd (libcalico-go's model keys), relative to the
//! `/calico` root the host grants the calico driver.

use ipnet::Ipv4Net;

/// `10.244.120.64/26` → `10.244.120.64-26`, as Calico writes CIDRs in keys.
pub fn dashed(cidr: &Ipv4Net) -> String {
    format!("{}-{}", cidr.network(), cidr.prefix_len())
}

/// The CIDR back from a key's last segment; `None` for anything else.
pub fn undashed(segment: &str) -> Option<Ipv4Net> {
    let (ip, len) = segment.rsplit_once('-')?;
    let net = Ipv4Net::new(ip.parse().ok()?, len.parse().ok()?).ok()?;
    (net == net.trunc()).then_some(net)
}

pub const BLOCKS: &str = "ipam/v2/assignment/ipv4/block/";

/// A block: `ipam/v2/assignment/ipv4/block/<cidr>`.
pub fn block(cidr: &Ipv4Net) -> String {
    format!("{BLOCKS}{}", dashed(cidr))
}

/// The blocks a node holds: `ipam/v2/host/<node>/ipv4/block/`.
pub fn affinities(node: &str) -> String {
    format!("ipam/v2/host/{node}/ipv4/block/")
}

/// One of them: `ipam/v2/host/<node>/ipv4/block/<cidr>`.
pub fn affinity(node: &str, cidr: &Ipv4Net) -> String {
    format!("{}{}", affinities(node), dashed(cidr))
}

/// A handle: `ipam/v2/handle/<handle-id>`.
pub fn handle(id: &str) -> String {
    format!("ipam/v2/handle/{id}")
}

/// A confirmed affinity's value.
pub const AFFINITY_CONFIRMED: &str = r#"{"state":"confirmed","deleted":false}"#;

/// Whether a node name can stand in a key: Calico's node names are
/// hostnames (DNS labels joined by dots).
pub fn valid_node(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with('-')
        && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_calicos_layout() {
        let c: Ipv4Net = "10.244.120.64/26".parse().unwrap();
        assert_eq!(block(&c), "ipam/v2/assignment/ipv4/block/10.244.120.64-26");
        assert_eq!(
            affinity("node-1", &c),
            "ipam/v2/host/node-1/ipv4/block/10.244.120.64-26"
        );
        assert_eq!(
            handle("k8s-pod-network.abc"),
            "ipam/v2/handle/k8s-pod-network.abc"
        );
        assert_eq!(undashed("10.244.120.64-26"), Some(c));
        for bad in [
            "10.244.120.65-26",
            "x-26",
            "10.244.120.64",
            "10.244.120.64-33",
        ] {
            assert_eq!(undashed(bad), None, "{bad}");
        }
        assert!(valid_node("node-1.example"));
        for bad in ["", "a/b", "../x", "-a", "a b"] {
            assert!(!valid_node(bad), "{bad}");
        }
    }
}
