//! Published ports: DNAT rules in the `ports` chain, which the host runs
//! for traffic to the node's own addresses (from outside, and from the
//! node itself), one per binding, with ids
//! `pm-<hash of endpoint id>-<proto>-<host port>`.

use std::net::Ipv4Addr;

use netshim_guest_sdk::guest::driver::{EndpointRequest, Network, PortBinding};
use netshim_guest_sdk::host::netfilter::{self, Action, DnatTarget, Match, Op, Protocol, Rule};
use netshim_guest_sdk::log::debug;
use netshim_guest_sdk::rules::{add_rule, delete_rules_with_prefix, rule_ids};
use netshim_guest_sdk::{addr, names, Error, IpAddress, IpPrefix};

use crate::nft;

/// Prefix shared by the ids of every port-mapping rule of one endpoint.
pub fn port_rule_prefix(endpoint_id: &str) -> String {
    format!("pm-{}-", names::hash7(endpoint_id))
}

/// Id of the DNAT rule publishing `host_port/proto` for an endpoint.
pub fn port_rule_id(endpoint_id: &str, proto: &str, host_port: u16) -> String {
    format!("{}{}-{}", port_rule_prefix(endpoint_id), proto, host_port)
}

/// Loopback: packets to 127.0.0.0/8 cannot be routed to a container.
const LOOPBACK: IpPrefix = IpPrefix {
    address: IpAddress::Ipv4((127, 0, 0, 0)),
    prefix_len: 8,
};

fn protocol(name: &str) -> Result<Protocol, Error> {
    match name.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "sctp" => Ok(Protocol::Sctp),
        _ => Err(Error::Invalid(format!(
            "port protocol {name:?} is not supported; use tcp, udp or sctp"
        ))),
    }
}

/// The DNAT rules publishing `ports` of endpoint `ep_id`, whose container
/// address is `target`. IPv6 host addresses are skipped (the driver is
/// IPv4-only); an unspecified host address (0.0.0.0) means every local
/// address.
pub fn dnat_rules(
    ep_id: &str,
    target: Ipv4Addr,
    ports: &[PortBinding],
) -> Result<Vec<Rule>, Error> {
    let mut out: Vec<Rule> = Vec::new();
    for b in ports {
        let proto = protocol(&b.protocol)?;
        let proto_name = b.protocol.to_ascii_lowercase();
        if b.host_port == 0 || b.container_port == 0 {
            return Err(Error::Invalid(format!(
                "port binding {}:{}/{}: ports must be 1 to 65535 (ephemeral host ports are not supported)",
                b.host_port, b.container_port, b.protocol
            )));
        }
        let host_ip = match &b.host_ip {
            None => None,
            Some(IpAddress::Ipv6(_)) => continue,
            Some(a @ IpAddress::Ipv4(_)) => addr::v4_of(a).filter(|a| !a.is_unspecified()),
        };
        let id = port_rule_id(ep_id, &proto_name, b.host_port);
        if out.iter().any(|r| r.id == id) {
            return Err(Error::Invalid(format!(
                "host port {}/{proto_name} is published twice for this endpoint",
                b.host_port
            )));
        }
        let mut matches = vec![Match::Protocol(proto), Match::Dport(b.host_port)];
        if let Some(ip) = host_ip {
            matches.push(Match::Daddr(addr::host_prefix(ip)));
        }
        // From the node itself: like Docker, leave loopback alone.
        matches.push(Match::DaddrNot(LOOPBACK));
        out.push(Rule {
            id,
            matches,
            counter: false,
            action: Action::Dnat(DnatTarget {
                address: addr::wit_addr(target),
                port: Some(b.container_port),
            }),
        });
    }
    Ok(out)
}

/// Delete-rule ops for every port-mapping rule of endpoint `ep_id` among
/// the rule ids of each chain that may hold them.
pub fn revoke_ops(ep_id: &str, chains: &[(&str, Vec<String>)]) -> Vec<Op> {
    let prefix = port_rule_prefix(ep_id);
    chains
        .iter()
        .flat_map(|(chain, ids)| delete_rules_with_prefix(chain, ids, &prefix))
        .collect()
}

fn current_revoke_ops(ep_id: &str) -> Result<Vec<Op>, Error> {
    let mut chains = vec![(nft::PORTS, rule_ids(nft::PORTS)?)];
    for c in nft::LEGACY_PORT_CHAINS {
        chains.push((c, rule_ids(c)?));
    }
    Ok(revoke_ops(ep_id, &chains))
}

/// Publish the endpoint's ports. Replaces any rules the endpoint already has,
/// in the same atomic batch, so calling it twice is harmless.
pub fn program(net: &Network, ep: &EndpointRequest) -> Result<(), Error> {
    debug(&format!(
        "program-external-connectivity {} endpoint {}: {} port binding(s)",
        net.name,
        ep.id,
        ep.ports.len()
    ));
    if ep.ports.is_empty() {
        return Ok(());
    }
    if net.internal {
        return Err(Error::Invalid(
            "internal networks cannot publish ports".into(),
        ));
    }
    let target = match &ep.ipv4 {
        Some(p) => addr::v4_prefix(p, "endpoint address")?.addr(),
        None => {
            return Err(Error::Invalid(format!(
                "endpoint {} has no IPv4 address to publish ports to",
                ep.id
            )))
        }
    };
    let rules = dnat_rules(&ep.id, target, &ep.ports)?;
    if rules.is_empty() {
        return Ok(());
    }
    let mut batch = nft::ports_chain();
    batch.extend(current_revoke_ops(&ep.id)?);
    batch.extend(rules.into_iter().map(|r| add_rule(nft::PORTS, r)));
    netfilter::apply(&batch)
}

/// Remove every port-mapping rule of endpoint `ep_id` (none is fine).
pub fn revoke(ep_id: &str) -> Result<(), Error> {
    let ops = current_revoke_ops(ep_id)?;
    if ops.is_empty() {
        return Ok(());
    }
    netfilter::apply(&ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb(proto: &str, cport: u16, host_ip: Option<IpAddress>, hport: u16) -> PortBinding {
        PortBinding {
            protocol: proto.into(),
            container_port: cport,
            host_ip,
            host_port: hport,
        }
    }

    #[test]
    fn rules_per_binding() {
        let target = Ipv4Addr::new(10, 77, 0, 2);
        let rules = dnat_rules(
            "ep",
            target,
            &[
                pb("tcp", 80, None, 8080),
                pb(
                    "udp",
                    53,
                    Some(addr::wit_addr(Ipv4Addr::new(192, 0, 2, 1))),
                    5353,
                ),
            ],
        )
        .unwrap();
        assert_eq!(rules.len(), 2);
        let h = names::hash7("ep");
        assert_eq!(rules[0].id, format!("pm-{h}-tcp-8080"));
        assert_eq!(rules[1].id, format!("pm-{h}-udp-5353"));
        assert!(
            matches!(&rules[0].action, Action::Dnat(t) if addr::v4_of(&t.address) == Some(target) && t.port == Some(80))
        );
        assert_eq!(rules[0].matches.len(), 3); // proto, dport, not loopback
        assert_eq!(rules[1].matches.len(), 4); // + daddr host-ip/32
        assert!(matches!(rules[1].matches[2], Match::Daddr(p) if p.prefix_len == 32));
    }

    #[test]
    fn bad_bindings() {
        let t = Ipv4Addr::new(10, 0, 0, 2);
        assert!(matches!(
            dnat_rules("e", t, &[pb("icmp", 1, None, 1)]),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            dnat_rules("e", t, &[pb("tcp", 80, None, 0)]),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            dnat_rules("e", t, &[pb("tcp", 80, None, 81), pb("tcp", 90, None, 81)]),
            Err(Error::Invalid(_))
        ));
        // IPv6 host addresses are skipped, 0.0.0.0 means any.
        let v6 = Some(IpAddress::Ipv6((0, 0, 0, 0, 0, 0, 0, 0)));
        assert!(dnat_rules("e", t, &[pb("tcp", 80, v6, 81)])
            .unwrap()
            .is_empty());
        let any = Some(addr::wit_addr(Ipv4Addr::UNSPECIFIED));
        assert_eq!(
            dnat_rules("e", t, &[pb("TCP", 80, any, 81)]).unwrap()[0]
                .matches
                .len(),
            3
        );
    }

    #[test]
    fn port_rule_ids() {
        let id = port_rule_id("ep1", "tcp", 8080);
        assert!(id.starts_with(&port_rule_prefix("ep1")));
        assert_eq!(id, format!("pm-{}-tcp-8080", names::hash7("ep1")));
    }

    #[test]
    fn revoke_only_this_endpoint() {
        let mine = port_rule_id("a", "tcp", 80);
        let other = port_rule_id("b", "tcp", 81);
        let ops = revoke_ops(
            "a",
            &[
                ("ports", vec![mine.clone(), other.clone()]),
                ("output", vec![other, mine]),
            ],
        );
        assert_eq!(ops.len(), 2);
        let prefix = port_rule_prefix("a");
        assert!(ops
            .iter()
            .all(|o| matches!(o, Op::DeleteRule(r) if r.id.starts_with(&prefix))));
    }
}
