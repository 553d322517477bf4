//! IPAM answers are the guest's word: the host checks every pool and
//! address before anything uses it, so a driver cannot claim the node's
//! own prefixes, another network's, or the whole address space.

use std::net::IpAddr;

use ipnet::IpNet;
use netshim_host_api::kernel::{Kernel, NsId, MAIN_TABLE};
use netshim_host_api::store::{Condition, Store};

use super::model::{self, Network, SPACE};
use super::{CnmError, CnmResult};

/// Where a pool the caller did not name must come from (the operator's
/// default address pools; RFC 1918 unless configured).
pub fn default_pools() -> Vec<IpNet> {
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        .iter()
        .map(|p| p.parse().expect("literal prefix"))
        .collect()
}

/// Ranges no pool may touch: this host, the link-local and multicast
/// ranges, "this network" and the reserved block.
fn forbidden() -> Vec<(IpNet, &'static str)> {
    [
        ("0.0.0.0/8", "\"this network\""),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("ff00::/8", "multicast"),
    ]
    .iter()
    .map(|(p, why)| (p.parse().expect("literal prefix"), *why))
    .collect()
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// What the node already uses: the destinations of its main table (the
/// default route aside) and the addresses on its links.
pub struct NodeFacts {
    pub routes: Vec<IpNet>,
    pub addresses: Vec<IpNet>,
}

impl NodeFacts {
    pub fn read(kernel: &dyn Kernel) -> CnmResult<NodeFacts> {
        let routes = kernel
            .routes(NsId::NODE, MAIN_TABLE)?
            .into_iter()
            .map(|r| r.destination)
            .filter(|d| d.prefix_len() != 0)
            .collect();
        let mut addresses = Vec::new();
        for l in kernel.links(NsId::NODE)? {
            addresses.extend(kernel.addresses(l.link_ref())?);
        }
        Ok(NodeFacts { routes, addresses })
    }
}

/// Pools already taken: every network's, and every pool IPAM handed out
/// that no network holds yet (Docker asks for pools before networks).
pub fn taken_pools(s: &mut dyn Store) -> CnmResult<Vec<(String, IpNet)>> {
    let mut out = Vec::new();
    for e in s.list(SPACE, "networks/")? {
        if let Ok(n) = serde_json::from_slice::<Network>(&e.value) {
            out.extend(
                n.ipv4
                    .iter()
                    .map(|p| (format!("network {}", n.name), p.subnet)),
            );
            // What a network may route to is its, too: a pool inside it
            // could be taken over by a more specific route of that network.
            out.extend(
                route_prefixes(&n.options, None)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| (format!("network {}'s routes", n.name), p)),
            );
        }
    }
    for e in s.list(SPACE, "pools/")? {
        if let Some(p) = std::str::from_utf8(&e.value)
            .ok()
            .and_then(|v| v.parse().ok())
        {
            out.push((format!("pool {}", &e.key["pools/".len()..]), p));
        }
    }
    Ok(out)
}

/// Remember a pool IPAM handed out, until it is released.
pub fn record_pool(s: &mut dyn Store, driver: &str, id: &str, pool: IpNet) -> CnmResult<()> {
    s.put(
        SPACE,
        &model::pool_key(driver, id),
        pool.to_string().as_bytes(),
        Condition::None,
        None,
    )?;
    Ok(())
}

pub fn recorded_pool(s: &mut dyn Store, driver: &str, id: &str) -> CnmResult<Option<IpNet>> {
    Ok(get_json_text(s, &model::pool_key(driver, id))?.and_then(|v| v.parse().ok()))
}

fn get_json_text(s: &mut dyn Store, key: &str) -> CnmResult<Option<String>> {
    Ok(s.get(SPACE, key)?
        .map(|e| String::from_utf8_lossy(&e.value).into_owned()))
}

pub fn forget_pool(s: &mut dyn Store, driver: &str, id: &str) -> CnmResult<()> {
    s.delete(SPACE, &model::pool_key(driver, id), Condition::None)?;
    s.delete(SPACE, &model::claims_key(driver, id), Condition::None)?;
    s.delete(SPACE, &model::pool_prefix_key(driver, id), Condition::None)?;
    Ok(())
}

fn refuse(driver: &str, msg: String) -> CnmError {
    CnmError::Driver {
        driver: driver.to_string(),
        kind: super::DriverErrorKind::Refused,
        message: msg,
    }
}

/// The pool a driver's request-pool returned, checked.
pub fn check_pool(
    driver: &str,
    requested: Option<IpNet>,
    got: IpNet,
    node: &NodeFacts,
    taken: &[(String, IpNet)],
) -> CnmResult<()> {
    let bad = |why: String| refuse(driver, format!("request-pool returned {got}: {why}"));
    if got != got.trunc() {
        return Err(bad("it has host bits set".into()));
    }
    let (min, max) = match got {
        IpNet::V4(_) => (8, 30),
        IpNet::V6(_) => (16, 126),
    };
    if got.prefix_len() < min || got.prefix_len() > max {
        return Err(bad(format!(
            "a pool must be a /{min} to /{max} (room for a gateway and endpoints, never the whole address space)"
        )));
    }
    match requested {
        Some(r) if r.trunc() != got => {
            return Err(bad(format!("the pool asked for was {}", r.trunc())))
        }
        Some(_) => {}
        None => {
            let defaults = default_pools();
            if !defaults.iter().any(|d| d.contains(&got)) {
                return Err(bad(format!(
                    "no pool was asked for, and it is outside the default pools [{}]",
                    defaults
                        .iter()
                        .map(IpNet::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    for (f, why) in forbidden() {
        if overlaps(&f, &got) {
            return Err(bad(format!("it overlaps the {why} range {f}")));
        }
    }
    if let Some(r) = node.routes.iter().find(|r| overlaps(r, &got)) {
        return Err(bad(format!("it overlaps the node's route to {r}")));
    }
    if let Some(a) = node.addresses.iter().find(|a| got.contains(&a.addr())) {
        return Err(bad(format!("it holds the node's own address {a}")));
    }
    if let Some((who, p)) = taken.iter().find(|(_, p)| overlaps(p, &got)) {
        return Err(bad(format!("it overlaps {who} ({p})")));
    }
    Ok(())
}

/// The network option through which the operator grants a network routes
/// to prefixes beyond its own pools (other nodes' subnets, for cluster
/// drivers): comma-separated CIDRs.
pub const ROUTE_PREFIXES_OPTION: &str = "netshim.route-prefixes";

/// The cluster prefixes an operator granted in a network's options. Even
/// the operator's word is bounded: never the default route or a half of
/// it (/8 at the shortest), never a forbidden range or the node's own
/// addresses, so no grant lets a driver take the node's way out.
pub fn route_prefixes(
    options: &[(String, String)],
    node: Option<&NodeFacts>,
) -> CnmResult<Vec<IpNet>> {
    let mut out = Vec::new();
    for (_, v) in options.iter().filter(|(k, _)| k == ROUTE_PREFIXES_OPTION) {
        for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let bad = |why: String| {
                CnmError::Invalid(format!("option {ROUTE_PREFIXES_OPTION}: {item:?}: {why}"))
            };
            let p: IpNet = item
                .parse()
                .map_err(|_| bad("not a CIDR prefix such as 10.244.0.0/16".into()))?;
            let min = if p.addr().is_ipv4() { 8 } else { 16 };
            if p.prefix_len() < min {
                return Err(bad(format!(
                    "shorter than /{min}: it would cover the node's own way out"
                )));
            }
            if let Some((f, why)) = forbidden().into_iter().find(|(f, _)| overlaps(f, &p)) {
                return Err(bad(format!("it overlaps the {why} range {f}")));
            }
            if let Some(a) = node.and_then(|n| n.addresses.iter().find(|a| p.contains(&a.addr()))) {
                return Err(bad(format!("it holds the node's own address {a}")));
            }
            if out.len() >= 64 {
                return Err(bad("more than 64 prefixes".into()));
            }
            out.push(p.trunc());
        }
    }
    Ok(out)
}

/// Where a driver may claim route prefixes on its own: private ranges.
fn claimable() -> Vec<IpNet> {
    [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
    ]
    .iter()
    .map(|p| p.parse().expect("literal prefix"))
    .collect()
}

/// Route prefixes a driver claimed for a cluster network (its whole
/// range), checked: one per address family, inside a private range, at
/// least a /8 (/16 for IPv6), holding the network's pool, clear of the
/// node's routes and addresses and of every other network's pools and
/// routes. Without these a driver could
/// take over routes to anything the node does not route itself.
pub fn check_claims(
    driver: &str,
    claims: &[IpNet],
    pool: IpNet,
    node: &NodeFacts,
    others: &[(String, IpNet)],
) -> CnmResult<()> {
    for family in [true, false] {
        if claims
            .iter()
            .filter(|c| c.addr().is_ipv4() == family)
            .count()
            > 1
        {
            return Err(refuse(
                driver,
                "claim-route-prefix: one prefix per address family".into(),
            ));
        }
    }
    for p in claims {
        let bad = |why: String| refuse(driver, format!("claim-route-prefix {p}: {why}"));
        if !claimable().iter().any(|c| c.contains(p)) {
            return Err(bad(format!(
                "a driver may claim only inside the private ranges [{}]; the operator grants anything else with -o {ROUTE_PREFIXES_OPTION}=",
                claimable()
                    .iter()
                    .map(IpNet::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let min = if p.addr().is_ipv4() { 8 } else { 16 };
        if p.prefix_len() < min {
            return Err(bad(format!("shorter than /{min}")));
        }
        if p.addr().is_ipv4() == pool.addr().is_ipv4() && !p.contains(&pool) {
            return Err(bad(format!(
                "it does not hold the network's own pool {pool}"
            )));
        }
        if let Some(r) = node.routes.iter().find(|r| overlaps(r, p)) {
            return Err(bad(format!("it overlaps the node's route to {r}")));
        }
        if let Some(a) = node.addresses.iter().find(|a| p.contains(&a.addr())) {
            return Err(bad(format!("it holds the node's own address {a}")));
        }
        if let Some((who, o)) = others.iter().find(|(_, o)| overlaps(o, p)) {
            return Err(bad(format!("it overlaps {who} ({o})")));
        }
    }
    Ok(())
}

/// An address a driver's request-address returned, checked against the
/// pool it was asked from (and the one asked for, if any).
pub fn check_address(
    driver: &str,
    pool: IpNet,
    requested: Option<IpAddr>,
    got: IpNet,
) -> CnmResult<()> {
    let bad = |why: String| refuse(driver, format!("request-address returned {got}: {why}"));
    // With the pool's length, or as a host address (/32, /128: Calico's
    // endpoints hold a host address and route everything via the node).
    let host = got.prefix_len() == got.max_prefix_len();
    if (got.prefix_len() != pool.prefix_len() && !host) || !pool.contains(&got.addr()) {
        return Err(bad(format!("it is not an address of the pool {pool}")));
    }
    // A host address has no subnet of its own to be the network or
    // broadcast address of (Calico hands out a block's every address).
    if !host && got.addr() == pool.network() {
        return Err(bad("it is the pool's network address".into()));
    }
    if !host && matches!(pool, IpNet::V4(_)) && got.addr() == pool.broadcast() {
        return Err(bad("it is the pool's broadcast address".into()));
    }
    if let Some(r) = requested {
        if r != got.addr() {
            return Err(bad(format!("the address asked for was {r}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn node() -> NodeFacts {
        NodeFacts {
            routes: vec![n("203.0.113.0/24"), n("10.1.0.0/16")],
            addresses: vec![n("203.0.113.2/24"), n("10.200.0.1/32")],
        }
    }

    #[test]
    fn pools_that_would_harm_the_node_are_refused() {
        let taken = vec![("network a".to_string(), n("10.77.0.0/24"))];
        let check = |req: Option<&str>, got: &str| {
            check_pool("evil", req.map(n), n(got), &node(), &taken).map_err(|e| e.to_string())
        };
        assert!(check(Some("10.123.0.0/16"), "0.0.0.0/0")
            .unwrap_err()
            .contains("/8 to /30"));
        assert!(check(Some("10.123.0.0/16"), "10.124.0.0/16")
            .unwrap_err()
            .contains("asked for"));
        assert!(check(None, "198.51.100.0/24")
            .unwrap_err()
            .contains("default pools"));
        assert!(check(Some("127.0.0.0/16"), "127.0.0.0/16")
            .unwrap_err()
            .contains("loopback"));
        assert!(check(Some("169.254.0.0/24"), "169.254.0.0/24")
            .unwrap_err()
            .contains("link-local"));
        assert!(check(Some("10.1.2.0/24"), "10.1.2.0/24")
            .unwrap_err()
            .contains("route"));
        assert!(check(Some("203.0.113.0/25"), "203.0.113.0/25")
            .unwrap_err()
            .contains("route"));
        assert!(check(Some("10.200.0.0/24"), "10.200.0.0/24")
            .unwrap_err()
            .contains("own address"));
        assert!(check(Some("10.77.0.0/16"), "10.77.0.0/16")
            .unwrap_err()
            .contains("network a"));
        assert!(check(Some("10.5.0.1/24"), "10.5.0.1/24")
            .unwrap_err()
            .contains("host bits"));
        check(Some("10.5.0.0/24"), "10.5.0.0/24").unwrap();
        check(None, "172.18.0.0/16").unwrap();
    }

    #[test]
    fn claimed_route_prefixes_stay_private_and_clear_of_the_node() {
        let pool = n("10.244.1.0/24");
        let ok = |c: &str| check_claims("flannel", &[n(c)], pool, &node(), &[]);
        ok("10.244.0.0/16").unwrap();
        for (bad, why) in [
            ("0.0.0.0/0", "private ranges"),
            ("8.8.0.0/16", "private ranges"),
            ("10.244.1.0/25", "does not hold"),
            ("10.245.0.0/16", "does not hold"),
            ("10.1.0.0/16", "does not hold"),
            ("10.0.0.0/8", "route to 10.1.0.0/16"),
        ] {
            let e = ok(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let others = vec![("network other".to_string(), n("10.244.9.0/24"))];
        let e = check_claims("flannel", &[n("10.244.0.0/16")], pool, &node(), &others)
            .unwrap_err()
            .to_string();
        assert!(e.contains("network other"), "{e}");
        let e = check_claims(
            "flannel",
            &[n("10.200.0.0/16")],
            n("10.200.5.0/24"),
            &node(),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("node's own address"), "{e}");
        let two = [n("10.244.0.0/16"), n("10.245.0.0/16")];
        let e = check_claims("flannel", &two, pool, &node(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("one prefix per address family"), "{e}");
    }

    #[test]
    fn operator_route_prefixes_are_bounded() {
        let o = |v: &str| vec![(ROUTE_PREFIXES_OPTION.to_string(), v.to_string())];
        assert_eq!(
            route_prefixes(&o("10.244.0.0/16, 10.96.0.0/12"), Some(&node())).unwrap(),
            [n("10.244.0.0/16"), n("10.96.0.0/12")]
        );
        for bad in [
            "0.0.0.0/0",
            "0.0.0.0/1",
            "128.0.0.0/1",
            "127.0.0.0/8",
            "nope",
            "203.0.113.0/24",
        ] {
            let e = route_prefixes(&o(bad), Some(&node()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(ROUTE_PREFIXES_OPTION), "{bad}: {e}");
        }
        assert!(route_prefixes(&[], None).unwrap().is_empty());
    }

    #[test]
    fn addresses_must_be_usable_addresses_of_the_pool() {
        let pool = n("10.5.0.0/24");
        let check = |req: Option<&str>, got: &str| {
            check_address("evil", pool, req.map(|r| r.parse().unwrap()), n(got))
                .map_err(|e| e.to_string())
        };
        check(None, "10.5.0.2/24").unwrap();
        assert!(check(None, "10.6.0.2/24").is_err());
        assert!(check(None, "10.5.0.2/16").is_err());
        assert!(check(None, "10.5.0.0/24")
            .unwrap_err()
            .contains("network address"));
        assert!(check(None, "10.5.0.255/24")
            .unwrap_err()
            .contains("broadcast"));
        assert!(check(Some("10.5.0.9"), "10.5.0.2/24")
            .unwrap_err()
            .contains("asked for"));
    }
}
