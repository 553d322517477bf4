//! Published ports: DNAT rules in the nat prerouting chain (traffic from
//! outside) and the nat output chain (traffic from the node itself), one
//! per binding, with ids `pm-<hash of endpoint id>-<proto>-<host port>`.

use std::net::Ipv4Addr;

use crate::addr::{self, Net4};
use crate::exports::netshim::plugin::driver::{EndpointRequest, Network, PortBinding};
use crate::netshim::plugin::netfilter::{self, Action, Match, Op, Protocol, Rule};
use crate::netshim::plugin::types::{Error, IpAddress};
use crate::{names, nft};

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

/// The DNAT rules (chain, rule) publishing `ports` of endpoint `ep_id`,
/// whose container address is `target`. IPv6 host addresses are skipped
/// (the driver is IPv4-only); an unspecified host address (0.0.0.0) means
/// every local address.
pub fn dnat_rules(
    ep_id: &str,
    target: Ipv4Addr,
    ports: &[PortBinding],
) -> Result<Vec<(String, Rule)>, Error> {
    let mut out: Vec<(String, Rule)> = Vec::new();
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
        let id = names::port_rule_id(ep_id, &proto_name, b.host_port);
        if out.iter().any(|(_, r)| r.id == id) {
            return Err(Error::Invalid(format!(
                "host port {}/{proto_name} is published twice for this endpoint",
                b.host_port
            )));
        }
        let mut matches = vec![
            Match::Protocol(proto),
            Match::Dport(b.host_port),
            Match::DaddrLocal,
        ];
        if let Some(ip) = host_ip {
            matches.push(Match::Daddr(addr::wit_prefix(Net4 { addr: ip, len: 32 })));
        }
        let action = Action::Dnat((addr::wit_addr(target), Some(b.container_port)));
        let pre = Rule {
            id: id.clone(),
            matches: matches.clone(),
            counter: false,
            action: action.clone(),
        };
        // From the node itself: like Docker, leave loopback alone (packets to
        // 127.0.0.0/8 cannot be routed to a container).
        matches.push(Match::DaddrNot(addr::wit_prefix(Net4 {
            addr: Ipv4Addr::new(127, 0, 0, 0),
            len: 8,
        })));
        let out_rule = Rule {
            id,
            matches,
            counter: false,
            action,
        };
        out.push((nft::PREROUTING.into(), pre));
        out.push((nft::OUTPUT.into(), out_rule));
    }
    Ok(out)
}

/// Delete-rule ops for every port-mapping rule of endpoint `ep_id` among the
/// given rule ids of the prerouting and output chains.
pub fn revoke_ops(ep_id: &str, prerouting: &[String], output: &[String]) -> Vec<Op> {
    let prefix = names::port_rule_prefix(ep_id);
    let mut ops = Vec::new();
    for (chain, ids) in [(nft::PREROUTING, prerouting), (nft::OUTPUT, output)] {
        for id in ids.iter().filter(|id| id.starts_with(&prefix)) {
            ops.push(Op::DeleteRule((chain.to_string(), id.clone())));
        }
    }
    ops
}

fn current_revoke_ops(ep_id: &str) -> Result<Vec<Op>, Error> {
    let pre = nft::rule_ids(nft::PREROUTING)?;
    let out = nft::rule_ids(nft::OUTPUT)?;
    Ok(revoke_ops(ep_id, &pre, &out))
}

/// Publish the endpoint's ports. Replaces any rules the endpoint already has,
/// in the same atomic batch, so calling it twice is harmless.
pub fn program(net: &Network, ep: &EndpointRequest) -> Result<(), Error> {
    crate::debug(&format!(
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
        Some(p) => addr::v4_prefix(p, "endpoint address")?.addr,
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
    let mut batch = vec![nft::add_prerouting(), nft::add_output()];
    batch.extend(current_revoke_ops(&ep.id)?);
    batch.extend(rules.into_iter().map(|(c, r)| Op::AddRule((c, r))));
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
        assert_eq!(rules.len(), 4);
        let h = names::hash7("ep");
        assert_eq!(rules[0].0, "prerouting");
        assert_eq!(rules[0].1.id, format!("pm-{h}-tcp-8080"));
        assert_eq!(rules[1].0, "output");
        assert_eq!(rules[1].1.id, format!("pm-{h}-tcp-8080"));
        assert_eq!(rules[2].1.id, format!("pm-{h}-udp-5353"));
        assert!(
            matches!(rules[0].1.action, Action::Dnat((a, Some(80))) if addr::v4_of(&a) == Some(target))
        );
        assert_eq!(rules[0].1.matches.len(), 3);
        assert_eq!(rules[2].1.matches.len(), 4); // + daddr host-ip/32
        assert!(matches!(rules[2].1.matches[3], Match::Daddr(p) if p.prefix_len == 32));
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
                .1
                .matches
                .len(),
            3
        );
    }

    #[test]
    fn revoke_only_this_endpoint() {
        let mine = names::port_rule_id("a", "tcp", 80);
        let other = names::port_rule_id("b", "tcp", 81);
        let ops = revoke_ops("a", &[mine.clone(), other.clone()], &[other, mine]);
        assert_eq!(ops.len(), 2);
        assert!(ops.iter().all(|o| matches!(o, Op::DeleteRule((_, id)) if id.starts_with(&names::port_rule_prefix("a")))));
    }
}
