//! The kernel as the host API sees it: resolved objects (namespace + ifindex),
//! no names-as-capabilities, no policy. Two backends implement [`Kernel`]:
//! [`netlink`] drives the real kernel, [`fake`] records calls in memory so the
//! CNM core and guests can be tested without root.

pub mod fake;
pub mod metered;
pub mod netlink;
pub mod netns;
pub mod nft;

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

pub use crate::model::nft::Op as NftOp;

/// A network namespace known to the backend. `NODE` is the namespace the
/// backend was opened for (the node's own, or the one given to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsId(pub u32);

impl NsId {
    pub const NODE: NsId = NsId(0);
}

/// A link resolved to the kernel's identity for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkRef {
    pub ns: NsId,
    pub index: u32,
}

pub type Mac = [u8; 6];

/// The device group every link netshim marks is born in (`ip link show
/// group 28275`). The kernel takes IFLA_GROUP in the RTM_NEWLINK that
/// creates a link but ignores IFLA_IFALIAS there, so the alias (the mark
/// naming the network) needs a second message: a process killed between the
/// two leaves a link without a mark, and this group is how `netshim gc`
/// still knows it is netshim's.
pub const LINK_GROUP: u32 = 28275;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub ns: NsId,
    pub index: u32,
    pub name: String,
    /// IFLA_INFO_KIND ("bridge", "veth", "vxlan", "tun", "ipip"); empty for
    /// physical devices and loopback.
    pub kind: String,
    pub mtu: u32,
    pub mac: Option<Mac>,
    /// IFF_UP is set.
    pub up: bool,
    /// IFLA_IFALIAS: where netshim marks what a network owns.
    pub alias: Option<String>,
    /// ifindex of the bridge this link is enslaved to.
    pub master: Option<u32>,
    /// IFLA_GROUP, the device group (0 is the kernel's default).
    pub group: u32,
    /// A bridge's IGMP/MLD snooping (IFLA_BR_MCAST_SNOOPING); `None` for
    /// links of other kinds, and for bridges of a kernel built without
    /// snooping (which ignores the setting).
    pub multicast_snooping: Option<bool>,
}

impl LinkInfo {
    pub fn link_ref(&self) -> LinkRef {
        LinkRef {
            ns: self.ns,
            index: self.index,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    /// The peer is created directly in `peer_ns` (one RTM_NEWLINK, no move).
    Veth {
        peer_name: String,
        peer_ns: NsId,
        peer_mac: Option<Mac>,
        peer_alias: Option<String>,
    },
    Vxlan {
        vni: u32,
        local: Option<IpAddr>,
        port: Option<u16>,
        underlay: Option<u32>,
        learning: bool,
    },
    Tun {
        tap: bool,
    },
    Ipip {
        local: Option<IpAddr>,
        underlay: Option<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLink {
    pub ns: NsId,
    pub name: String,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    /// Written as IFLA_IFALIAS right after creation; a link with an alias
    /// is born in [`LINK_GROUP`] (and so is its veth peer).
    pub alias: Option<String>,
    /// Created administratively up.
    pub up: bool,
    pub kind: LinkKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    Up(bool),
    Mtu(u32),
    Mac(Mac),
    /// Enslave to the bridge with this ifindex (same namespace), or release.
    Master(Option<u32>),
    Name(String),
    Alias(Option<String>),
    /// Bridge port hairpin mode (IFLA_BRPORT_MODE).
    Hairpin(bool),
    /// Whether the kernel gives the link an IPv6 link-local address when it
    /// comes up (IFLA_INET6_ADDR_GEN_MODE eui64, or none). Turning it off
    /// on a kernel without IPv6 is done already.
    Ipv6LinkLocal(bool),
    /// IGMP/MLD snooping of a bridge (IFLA_BR_MCAST_SNOOPING).
    MulticastSnooping(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    Unicast,
    Blackhole,
    Unreachable,
    Prohibit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteScope {
    Universe,
    Link,
    Host,
}

/// Routes netshim installs carry this rtm_protocol, so they can be told
/// apart from the kernel's and the operator's (`ip route show proto 86`).
pub const ROUTE_PROTO_NETSHIM: u8 = 86;
pub const MAIN_TABLE: u32 = 254;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub kind: RouteKind,
    pub scope: RouteScope,
    pub onlink: bool,
    pub table: u32,
    pub metric: Option<u32>,
    pub source: Option<IpAddr>,
    pub protocol: u8,
}

impl Route {
    pub fn new(destination: IpNet) -> Route {
        Route {
            destination,
            gateway: None,
            oif: None,
            kind: RouteKind::Unicast,
            scope: RouteScope::Universe,
            onlink: false,
            table: MAIN_TABLE,
            metric: None,
            source: None,
            protocol: ROUTE_PROTO_NETSHIM,
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KernelError {
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}: permission denied (netshim needs CAP_NET_ADMIN)")]
    Permission(String),
    #[error("{0}")]
    Other(String),
}

pub type KResult<T> = Result<T, KernelError>;

/// The node's underlay as netshim detects it: the link of the IPv4
/// default route in the node namespace.
pub fn default_route_link(kernel: &dyn Kernel) -> Option<LinkRef> {
    let routes = kernel.routes(NsId::NODE, MAIN_TABLE).ok()?;
    let default = routes
        .iter()
        .find(|r| r.destination.prefix_len() == 0 && r.destination.addr().is_ipv4())?;
    Some(LinkRef {
        ns: NsId::NODE,
        index: default.oif?,
    })
}

/// IFNAMSIZ - 1: the longest interface name the kernel takes.
pub const IFNAME_MAX: usize = 15;

/// The kernel's rule for interface names (dev_valid_name), plus no control
/// characters: the one check every layer uses, so a bad name is refused
/// with a message that says why before the kernel answers a bare EINVAL.
/// None when `name` is fine, else what is wrong with it.
pub fn ifname_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        return Some(format!("must be 1 to {IFNAME_MAX} bytes long"));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Some("is \".\" or \"..\", or contains a character the kernel refuses ('/', ':', whitespace, control)".into());
    }
    None
}

/// Everything the host API needs from the kernel. Every method is one
/// logical kernel change (or read) and is synchronous: the attach path is
/// a short sequence of netlink round trips, nothing to overlap.
pub trait Kernel: Send + Sync {
    /// Open a namespace by path (/run/netns/x, /proc/PID/ns/net). The
    /// backend keeps the fd and a netlink socket opened inside it.
    fn open_ns(&self, path: &Path) -> KResult<NsId>;
    /// Forget a namespace opened with `open_ns` (closes fd and sockets).
    fn close_ns(&self, ns: NsId);
    /// What identifies the namespace itself (nsfs device and inode), so two
    /// handles can be told to be the same namespace whatever path opened them.
    fn ns_identity(&self, ns: NsId) -> KResult<(u64, u64)>;

    /// Create a link; returns the new link, and for a veth also its peer
    /// (in that order).
    fn create_link(&self, spec: &NewLink) -> KResult<Vec<LinkInfo>>;
    fn delete_link(&self, link: LinkRef) -> KResult<()>;
    fn link_by_name(&self, ns: NsId, name: &str) -> KResult<Option<LinkInfo>>;
    fn link_by_index(&self, link: LinkRef) -> KResult<Option<LinkInfo>>;
    /// Attach to the TUN device `link` (named `name`) and bind a UDP socket
    /// at `local`, both in the link's namespace: a host data path moves
    /// packets between them.
    fn open_tunnel(
        &self,
        link: LinkRef,
        name: &str,
        local: std::net::SocketAddrV4,
    ) -> KResult<(std::fs::File, std::net::UdpSocket)> {
        let _ = (link, local);
        Err(KernelError::Unsupported(format!(
            "tunnel on {name}: this kernel backend has no data path"
        )))
    }
    fn links(&self, ns: NsId) -> KResult<Vec<LinkInfo>>;
    fn set_link(&self, link: LinkRef, change: &LinkChange) -> KResult<()>;

    fn add_address(&self, link: LinkRef, address: IpNet) -> KResult<()>;
    fn del_address(&self, link: LinkRef, address: IpNet) -> KResult<()>;
    fn addresses(&self, link: LinkRef) -> KResult<Vec<IpNet>>;

    fn add_route(&self, ns: NsId, route: &Route, replace: bool) -> KResult<()>;
    fn del_route(&self, ns: NsId, route: &Route) -> KResult<()>;
    /// Routes of one table (all protocols).
    fn routes(&self, ns: NsId, table: u32) -> KResult<Vec<Route>>;

    fn add_neighbour(&self, link: LinkRef, address: IpAddr, mac: Mac) -> KResult<()>;
    fn del_neighbour(&self, link: LinkRef, address: IpAddr) -> KResult<()>;
    fn add_fdb(&self, link: LinkRef, mac: Mac, destination: Option<IpAddr>) -> KResult<()>;
    fn del_fdb(&self, link: LinkRef, mac: Mac, destination: Option<IpAddr>) -> KResult<()>;

    /// Read a sysctl under /proc/sys as seen from `ns` (path like
    /// "net/ipv4/conf/br0/forwarding").
    fn sysctl_get(&self, ns: NsId, path: &str) -> KResult<String>;
    fn sysctl_set(&self, ns: NsId, path: &str, value: &str) -> KResult<()>;

    /// Apply a batch to the `inet` table `table` in `ns`, atomically. The
    /// table is created when missing. Rule ids are kept in the rules'
    /// userdata so `delete-rule` and `nft_rules` can find them.
    fn nft_apply(&self, ns: NsId, table: &str, ops: &[NftOp]) -> KResult<()>;
    /// Rule ids of a chain, in order. NotFound when table or chain is absent.
    fn nft_rules(&self, ns: NsId, table: &str, chain: &str) -> KResult<Vec<String>>;
    /// Names of the chains in a table (empty when the table is absent).
    fn nft_chains(&self, ns: NsId, table: &str) -> KResult<Vec<String>>;
    /// Names of the `inet` tables in `ns`.
    fn nft_tables(&self, ns: NsId) -> KResult<Vec<String>>;
}
