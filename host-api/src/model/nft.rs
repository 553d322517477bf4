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
    /// `fib daddr type local`.
    DaddrLocal,
    /// `ct state established,related`.
    CtEstablished,
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
    AddChain { name: String, base: Option<BaseChain> },
    DeleteChain(String),
    FlushChain(String),
    AddRule { chain: String, rule: Rule },
    DeleteRule { chain: String, id: String },
    /// Create a named set. Idempotent when the set exists with this type.
    AddSet { name: String, ty: SetType },
    DeleteSet(String),
    AddElement { set: String, elem: Element },
    DeleteElement { set: String, elem: Element },
    DeleteTable,
}
