//! WIT 0.2 netfilter records -> the host's netfilter model. 0.2 has no
//! base chains, SNAT or priorities to refuse: what it can say is already
//! scoped (attach points, network-relative matches), and the guard checks
//! the rest like 0.1's.

use super::{to_ip, to_prefix, HostError, HostResult};
use crate::bindings::v0_2::netshim::plugin0_2_0::netfilter as w;
use crate::model::nft as m;

fn protocol(p: w::Protocol) -> m::Protocol {
    match p {
        w::Protocol::Tcp => m::Protocol::Tcp,
        w::Protocol::Udp => m::Protocol::Udp,
        w::Protocol::Sctp => m::Protocol::Sctp,
        w::Protocol::Icmp => m::Protocol::Icmp,
    }
}

fn ct_states(states: &[w::CtState]) -> m::CtStates {
    m::CtStates(states.iter().fold(0, |acc, s| {
        acc | match s {
            w::CtState::New => m::CtStates::NEW,
            w::CtState::Established => m::CtStates::ESTABLISHED,
            w::CtState::Related => m::CtStates::RELATED,
            w::CtState::Invalid => m::CtStates::INVALID,
        }
    }))
}

fn r#match(x: &w::Match) -> HostResult<m::Match> {
    Ok(match x {
        w::Match::FromNetwork => m::Match::FromNetwork,
        w::Match::ToNetwork => m::Match::ToNetwork,
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
        w::Match::DportRange(r) => m::Match::DportRange(r.first, r.last),
        w::Match::DportIn(s) => m::Match::DportIn(s.clone()),
        w::Match::IcmpType(t) => m::Match::IcmpType(*t),
        w::Match::CtState(states) => {
            if states.len() > 4 {
                return Err(HostError::invalid(
                    "a ct-state match lists at most the 4 states",
                ));
            }
            m::Match::CtState(ct_states(states))
        }
        w::Match::DaddrLocal => m::Match::DaddrLocal,
    })
}

fn action(a: &w::Action) -> m::Action {
    match a {
        w::Action::Accept => m::Action::Accept,
        w::Action::Drop => m::Action::Drop,
        w::Action::Reject => m::Action::Reject,
        w::Action::ReturnChain => m::Action::Return,
        w::Action::Jump(c) => m::Action::Jump(c.clone()),
        w::Action::Masquerade => m::Action::Masquerade,
        w::Action::Dnat(t) => m::Action::Dnat(to_ip(&t.address), t.port),
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

fn point(p: w::AttachPoint) -> m::AttachPoint {
    match p {
        w::AttachPoint::ForwardFromNetwork => m::AttachPoint::ForwardFromNetwork,
        w::AttachPoint::ForwardToNetwork => m::AttachPoint::ForwardToNetwork,
        w::AttachPoint::InputFromNetwork => m::AttachPoint::InputFromNetwork,
        w::AttachPoint::NatLeavingNetwork => m::AttachPoint::NatLeavingNetwork,
        w::AttachPoint::NatToNode => m::AttachPoint::NatToNode,
    }
}

fn set_type(t: w::SetType) -> m::SetType {
    match t {
        w::SetType::Ipv4Prefix => m::SetType::Ipv4Addr,
        w::SetType::Ipv6Prefix => m::SetType::Ipv6Addr,
        w::SetType::Ifname => m::SetType::Ifname,
        w::SetType::Port => m::SetType::InetService,
    }
}

fn element(e: &w::Element) -> HostResult<m::Element> {
    Ok(match e {
        w::Element::Prefix(p) => m::Element::Addr(to_prefix(p)?),
        w::Element::Ifname(n) => m::Element::Ifname(n.clone()),
        w::Element::Port(p) => m::Element::Port(*p),
    })
}

pub fn op(o: &w::Op) -> HostResult<m::Op> {
    Ok(match o {
        w::Op::AddChain(name) => m::Op::AddChain {
            name: name.clone(),
            base: None,
        },
        w::Op::AttachChain(a) => m::Op::AttachChain {
            name: a.chain.clone(),
            point: point(a.point),
        },
        w::Op::DetachChain(a) => m::Op::DetachChain {
            name: a.chain.clone(),
            point: point(a.point),
        },
        w::Op::DeleteChain(c) => m::Op::DeleteChain(c.clone()),
        w::Op::FlushChain(c) => m::Op::FlushChain(c.clone()),
        w::Op::AddRule(r) => m::Op::AddRule {
            chain: r.chain.clone(),
            rule: rule(&r.rule)?,
        },
        w::Op::DeleteRule(r) => m::Op::DeleteRule {
            chain: r.chain.clone(),
            id: r.id.clone(),
        },
        w::Op::AddSet(s) => m::Op::AddSet {
            name: s.name.clone(),
            ty: set_type(s.set_type),
        },
        w::Op::DeleteSet(s) => m::Op::DeleteSet(s.clone()),
        w::Op::AddElement(e) => m::Op::AddElement {
            set: e.set.clone(),
            elem: element(&e.element)?,
        },
        w::Op::DeleteElement(e) => m::Op::DeleteElement {
            set: e.set.clone(),
            elem: element(&e.element)?,
        },
        w::Op::DeleteTable => m::Op::DeleteTable,
    })
}
