//! nftables objects inside one `inet` table, as the kernel backends apply
//! them. Elements are typed (the set's key type decides how they encode).

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub const ALL: [Hook; 5] = [
        Hook::Prerouting,
        Hook::Input,
        Hook::Forward,
        Hook::Output,
        Hook::Postrouting,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainType {
    Filter,
    Nat,
}

impl ChainType {
    pub fn name(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub hook: Hook,
    pub chain_type: ChainType,
    pub priority: i32,
    pub policy_drop: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
            Protocol::Icmp => 1,
        }
    }

    pub fn has_ports(self) -> bool {
        !matches!(self, Protocol::Icmp)
    }
}

/// The key type of a named set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetType {
    /// IPv4 addresses and prefixes (interval set).
    Ipv4Addr,
    /// IPv6 addresses and prefixes (interval set).
    Ipv6Addr,
    /// Interface names (`meta iifname`).
    Ifname,
    /// Interface indexes (`meta iif`): exact, unlike names, which another
    /// link can take once the first is gone.
    Ifindex,
    /// Transport ports (`th dport`).
    InetService,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Element {
    /// An address (host prefix) or a prefix.
    Addr(IpNet),
    Ifname(String),
    Ifindex(u32),
    Port(u16),
}

impl Element {
    pub fn fits(&self, ty: SetType) -> bool {
        matches!(
            (self, ty),
            (Element::Addr(IpNet::V4(_)), SetType::Ipv4Addr)
                | (Element::Addr(IpNet::V6(_)), SetType::Ipv6Addr)
                | (Element::Ifname(_), SetType::Ifname)
                | (Element::Ifindex(_), SetType::Ifindex)
                | (Element::Port(_), SetType::InetService)
        )
    }
}

impl std::fmt::Display for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Element::Addr(n) if n.prefix_len() == n.max_prefix_len() => write!(f, "{}", n.addr()),
            Element::Addr(n) => write!(f, "{n}"),
            Element::Ifname(s) => write!(f, "{s}"),
            Element::Ifindex(i) => write!(f, "ifindex {i}"),
            Element::Port(p) => write!(f, "{p}"),
        }
    }
}

/// One condition of a rule; all conditions of a rule must hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    /// `meta iifname NAME`; a trailing `*` matches a prefix.
    Iifname(String),
    IifnameNot(String),
    Oifname(String),
    OifnameNot(String),
    Saddr(IpNet),
    SaddrNot(IpNet),
    Daddr(IpNet),
    DaddrNot(IpNet),
    /// Source address in a named address set.
    SaddrIn(String),
    DaddrIn(String),
    /// Interface name in a named `Ifname` set.
    IifnameIn(String),
    OifnameIn(String),
    /// Interface index (`meta iif` / `meta oif`) in a named `Ifindex` set.
    IifIn(String),
    IifNotIn(String),
    OifIn(String),
    OifNotIn(String),
    Protocol(Protocol),
    /// Destination port; needs a port-carrying `Protocol` match before it.
    Dport(u16),
    /// Destination port in a named `InetService` set; needs a protocol.
    DportIn(String),
    /// Destination ports `first..=last`; needs a port-carrying protocol.
    DportRange(u16, u16),
    /// ICMP type; needs `Protocol(Icmp)` before it.
    IcmpType(u8),
    /// `fib daddr type local`.
    DaddrLocal,
    /// `ct state` is any of these.
    CtState(CtStates),
    /// In / out through a link of the network the call acts for. Only the
    /// guard writes these away (into the network's host-kept ifindex set);
    /// a backend refuses them.
    FromNetwork,
    ToNetwork,
}

/// A set of conntrack states, as the kernel's state bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtStates(pub u32);

impl CtStates {
    pub const INVALID: u32 = 1;
    pub const ESTABLISHED: u32 = 1 << 1;
    pub const RELATED: u32 = 1 << 2;
    pub const NEW: u32 = 1 << 3;
    pub const ALL: u32 = Self::INVALID | Self::ESTABLISHED | Self::RELATED | Self::NEW;
}

/// Where the host runs a driver chain, for the traffic of the network the
/// attaching call acts for (WIT 0.2 `attach-point`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttachPoint {
    ForwardFromNetwork,
    ForwardToNetwork,
    InputFromNetwork,
    NatLeavingNetwork,
    NatToNode,
}

impl AttachPoint {
    pub fn name(self) -> &'static str {
        match self {
            AttachPoint::ForwardFromNetwork => "forward-from-network",
            AttachPoint::ForwardToNetwork => "forward-to-network",
            AttachPoint::InputFromNetwork => "input-from-network",
            AttachPoint::NatLeavingNetwork => "nat-leaving-network",
            AttachPoint::NatToNode => "nat-to-node",
        }
    }
}

impl Match {
    /// The named set this match looks up, if any.
    pub fn set(&self) -> Option<&str> {
        match self {
            Match::SaddrIn(s)
            | Match::DaddrIn(s)
            | Match::IifnameIn(s)
            | Match::OifnameIn(s)
            | Match::IifIn(s)
            | Match::IifNotIn(s)
            | Match::OifIn(s)
            | Match::OifNotIn(s)
            | Match::DportIn(s) => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    Accept,
    Drop,
    /// Return from this chain to the caller.
    Return,
    /// Refuse with an ICMP unreachable (TCP: reset); filter chains only.
    Reject,
    Jump(String),
    Masquerade,
    Snat(IpAddr),
    Dnat(IpAddr, Option<u16>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Kept as the rule's comment, so the rule can be found and deleted.
    pub id: String,
    pub matches: Vec<Match>,
    pub counter: bool,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create a chain (regular when `base` is None). Idempotent.
    AddChain {
        name: String,
        base: Option<BaseChain>,
    },
    /// Run a (regular) chain at an attach point for the call's network.
    /// Only the guard understands it: it becomes host chains and rules.
    AttachChain {
        name: String,
        point: AttachPoint,
    },
    DetachChain {
        name: String,
        point: AttachPoint,
    },
    DeleteChain(String),
    FlushChain(String),
    AddRule {
        chain: String,
        rule: Rule,
    },
    DeleteRule {
        chain: String,
        id: String,
    },
    /// Create a named set. Idempotent when the set exists with this type.
    AddSet {
        name: String,
        ty: SetType,
    },
    DeleteSet(String),
    AddElement {
        set: String,
        elem: Element,
    },
    DeleteElement {
        set: String,
        elem: Element,
    },
    DeleteTable,
}
