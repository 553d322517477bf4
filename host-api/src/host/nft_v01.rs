//! WIT 0.1 netfilter records -> the host's netfilter model.

use super::{to_ip, to_prefix, HostError, HostResult};
use crate::bindings::netshim::plugin::netfilter as w;
use crate::model::nft as m;

fn hook(h: w::Hook) -> m::Hook {
    match h {
        w::Hook::Prerouting => m::Hook::Prerouting,
        w::Hook::Input => m::Hook::Input,
        w::Hook::Forward => m::Hook::Forward,
        w::Hook::Output => m::Hook::Output,
        w::Hook::Postrouting => m::Hook::Postrouting,
    }
}

fn base(chain: &str, b: &w::BaseChain) -> HostResult<m::BaseChain> {
    let chain_type = match b.chain_type {
        w::ChainType::Filter => m::ChainType::Filter,
        w::ChainType::Nat => m::ChainType::Nat,
        w::ChainType::Route => {
            return Err(HostError::denied(format!(
                "chain {chain}: chains of type route are not available to drivers (they could reroute the node's own traffic)"
            )))
        }
    };
    Ok(m::BaseChain {
        hook: hook(b.hook),
        chain_type,
        priority: b.priority,
        policy_drop: b.policy_drop,
    })
}

fn protocol(p: w::Protocol) -> m::Protocol {
    match p {
        w::Protocol::Tcp => m::Protocol::Tcp,
        w::Protocol::Udp => m::Protocol::Udp,
        w::Protocol::Sctp => m::Protocol::Sctp,
        w::Protocol::Icmp => m::Protocol::Icmp,
    }
}

fn r#match(x: &w::Match) -> HostResult<m::Match> {
    Ok(match x {
        w::Match::Iifname(n) => m::Match::Iifname(n.clone()),
        w::Match::IifnameNot(n) => m::Match::IifnameNot(n.clone()),
        w::Match::Oifname(n) => m::Match::Oifname(n.clone()),
        w::Match::OifnameNot(n) => m::Match::OifnameNot(n.clone()),
        w::Match::Saddr(p) => m::Match::Saddr(to_prefix(p)?),
        w::Match::SaddrNot(p) => m::Match::SaddrNot(to_prefix(p)?),
        w::Match::Daddr(p) => m::Match::Daddr(to_prefix(p)?),
        w::Match::DaddrNot(p) => m::Match::DaddrNot(to_prefix(p)?),
        w::Match::SaddrIn(s) => m::Match::SaddrIn(s.clone()),
        w::Match::DaddrIn(s) => m::Match::DaddrIn(s.clone()),
        w::Match::IifnameIn(s) => m::Match::IifnameIn(s.clone()),
        w::Match::OifnameIn(s) => m::Match::OifnameIn(s.clone()),
        w::Match::Protocol(p) => m::Match::Protocol(protocol(*p)),
        w::Match::Dport(p) => m::Match::Dport(*p),
        w::Match::DaddrLocal => m::Match::DaddrLocal,
        w::Match::CtEstablished => {
            m::Match::CtState(m::CtStates(m::CtStates::ESTABLISHED | m::CtStates::RELATED))
        }
    })
}

fn action(a: &w::Action) -> m::Action {
    match a {
        w::Action::Accept => m::Action::Accept,
        w::Action::Drop => m::Action::Drop,
        w::Action::ReturnChain => m::Action::Return,
        w::Action::Jump(c) => m::Action::Jump(c.clone()),
        w::Action::Masquerade => m::Action::Masquerade,
        w::Action::Snat(a) => m::Action::Snat(to_ip(a)),
        w::Action::Dnat((a, p)) => m::Action::Dnat(to_ip(a), *p),
    }
}

fn rule(r: &w::Rule) -> HostResult<m::Rule> {
    Ok(m::Rule {
        id: r.id.clone(),
        matches: r.matches.iter().map(r#match).collect::<HostResult<_>>()?,
        counter: r.counter,
        action: action(&r.action),
    })
}

/// 0.1 elements are text: an address or prefix, else an interface name.
fn element(e: &str) -> m::Element {
    if let Ok(n) = e.parse::<ipnet::IpNet>() {
        return m::Element::Addr(n);
    }
    if let Ok(a) = e.parse::<std::net::IpAddr>() {
        return m::Element::Addr(a.into());
    }
    m::Element::Ifname(e.to_string())
}

fn set_type(t: w::SetType) -> m::SetType {
    match t {
        w::SetType::Ipv4Addr => m::SetType::Ipv4Addr,
        w::SetType::Ipv6Addr => m::SetType::Ipv6Addr,
        w::SetType::Ifname => m::SetType::Ifname,
    }
}

pub fn op(o: &w::Op) -> HostResult<m::Op> {
    Ok(match o {
        w::Op::AddChain((name, b)) => m::Op::AddChain {
            name: name.clone(),
            base: b.as_ref().map(|b| base(name, b)).transpose()?,
        },
        w::Op::DeleteChain(c) => m::Op::DeleteChain(c.clone()),
        w::Op::FlushChain(c) => m::Op::FlushChain(c.clone()),
        w::Op::AddRule((chain, r)) => m::Op::AddRule {
            chain: chain.clone(),
            rule: rule(r)?,
        },
        w::Op::DeleteRule((chain, id)) => m::Op::DeleteRule {
            chain: chain.clone(),
            id: id.clone(),
        },
        w::Op::AddSet((name, t)) => m::Op::AddSet {
            name: name.clone(),
            ty: set_type(*t),
        },
        w::Op::DeleteSet(s) => m::Op::DeleteSet(s.clone()),
        w::Op::AddElement((set, e)) => m::Op::AddElement {
            set: set.clone(),
            elem: element(e),
        },
        w::Op::DeleteElement((set, e)) => m::Op::DeleteElement {
            set: set.clone(),
            elem: element(e),
        },
        w::Op::DeleteTable => m::Op::DeleteTable,
    })
}
