//! A Calico network on this node: no bridge; forwarding on; this node's
//! record in the cluster; `natOutgoing` masquerade; a blackhole route for
//! each of this node's blocks; and the routes to every other block:
//! - VXLAN (`vxlanMode` Always or CrossSubnet): the device `vxlan.calico`
//!   (VNI 4096, port 4789) with a tunnel address from this node's block,
//!   and to each other node's block (and each address borrowed by another
//!   node) the route, neighbour and FDB entry Felix programs through its
//!   VTEP — or, in CrossSubnet mode, straight to a node on the same subnet;
//! - BGP (encapsulation Never): this node's speaker ([`crate::bgp`]);
//!   BIRD learns the other nodes' blocks and writes their routes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netshim_guest_sdk::guest::driver::Network;
use netshim_guest_sdk::host::link::{self, Link, VxlanSpec};
use netshim_guest_sdk::host::netfilter::{self, Action, AttachPoint, Match, Op};
use netshim_guest_sdk::host::node as node_api;
use netshim_guest_sdk::host::route::{self, Route, RouteKind, RouteScope};
use netshim_guest_sdk::host::store::{self, Condition};
use netshim_guest_sdk::host::sysctl::{self, LinkKey};
use netshim_guest_sdk::log::{info, warn};
use netshim_guest_sdk::rules::{add_chain, add_rule, attach, detach, rule, rule_ids};
use netshim_guest_sdk::teardown::Teardown;
use netshim_guest_sdk::{addr, links, names, Error};
use serde::{Deserialize, Serialize};

use crate::ipam;
use crate::node::{self, NodeInfo};
use crate::pool::{Mode, PoolSpec};

pub const VXLAN: &str = "vxlan.calico";
pub const VNI: u32 = 4096;
pub const PORT: u16 = 4789;
pub const POSTROUTING: &str = "postrouting";
const MASQ: &str = "nat-outgoing";

/// What a node keeps of its pool (from request-pool).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub spec: PoolSpec,
    pub node: String,
    pub max_blocks: usize,
    /// IPAM released the pool while its network was still here (Docker
    /// calls ReleasePool before DeleteNetwork): delete-network still needs
    /// these settings and forgets them.
    #[serde(default)]
    pub released: bool,
}

/// A network of this node uses the pool (from create to delete).
fn in_use_key(pool: &Ipv4Net) -> String {
    format!("in-use/{}", crate::keys::dashed(pool))
}

/// IPAM's release-pool: forget the settings, unless the pool's network is
/// still here; then it is marked and delete-network forgets them.
pub fn release_settings(pool: &Ipv4Net) -> Result<(), Error> {
    if store::get(&in_use_key(pool))?.is_some() {
        if let Ok(mut s) = load_settings(pool) {
            s.released = true;
            return save_settings(&s);
        }
    }
    store::delete(&settings_key(pool), Condition::None)?;
    Ok(())
}

pub fn settings_key(pool: &Ipv4Net) -> String {
    format!("settings/{}", crate::keys::dashed(pool))
}

pub fn save_settings(s: &Settings) -> Result<(), Error> {
    let v = serde_json::to_vec(s).map_err(|e| Error::Failed(e.to_string()))?;
    store::put(&settings_key(&s.spec.cidr), &v, Condition::None, None)?;
    Ok(())
}

pub fn load_settings(pool: &Ipv4Net) -> Result<Settings, Error> {
    let e = store::get(&settings_key(pool))?.ok_or_else(|| {
        Error::NotFound(format!("no calico settings for pool {pool} on this node"))
    })?;
    serde_json::from_slice(&e.value).map_err(|e| Error::Failed(format!("calico settings: {e}")))
}

pub fn pool_of(net: &Network) -> Result<Ipv4Net, Error> {
    let [pd] = net.ipv4.as_slice() else {
        return Err(Error::Invalid(
            "a calico network has exactly one IPv4 pool".into(),
        ));
    };
    Ok(addr::v4_prefix(&pd.pool, "pool")?.trunc())
}

pub fn vtep_mac(node: &str) -> [u8; 6] {
    let (a, b, c, d, e, f) = names::mac_from_id(&format!("calico-vtep-{node}"));
    [a, b, c, d, e, f]
}

fn tunnel_handle(node: &str) -> String {
    format!("vxlan-tunnel-addr-{node}")
}

fn underlay() -> Result<(Link, Ipv4Net), Error> {
    let l = link::underlay().ok_or_else(|| {
        Error::Invalid("this node has no underlay link (no default route); calico needs one".into())
    })?;
    let a = node_api::identity()
        .underlay_address
        .and_then(|p| addr::v4_prefix(&p, "underlay").ok())
        .ok_or_else(|| Error::Invalid("the underlay link has no IPv4 address".into()))?;
    Ok((l, a))
}

/// Routes by BGP: no encapsulation at all.
pub fn bgp_mode(spec: &PoolSpec) -> bool {
    spec.vxlan_mode == Mode::Never && spec.ipip_mode == Mode::Never
}

/// The endpoints' MTU, as create-network noted it (an attach is lent no
/// underlay): the VXLAN device's (the underlay's minus 50), or the
/// underlay's when routes are BGP's.
pub fn mtu(net: &Network) -> Result<u32, Error> {
    let pool = pool_of(net)?;
    store::get(&mtu_key(&pool))?
        .and_then(|e| String::from_utf8_lossy(&e.value).parse().ok())
        .ok_or_else(|| Error::NotFound(format!("no MTU noted for pool {pool}")))
}

fn note_mtu(pool: &Ipv4Net, mtu: u32) -> Result<(), Error> {
    store::put(
        &mtu_key(pool),
        mtu.to_string().as_bytes(),
        Condition::None,
        None,
    )?;
    Ok(())
}

fn mtu_key(pool: &Ipv4Net) -> String {
    format!("mtu/{}", crate::keys::dashed(pool))
}

/// This node's record, as BGP mode publishes it (no tunnel).
fn bgp_node(s: &Settings, ul_addr: Ipv4Net) -> NodeInfo {
    NodeInfo {
        name: s.node.clone(),
        address: ul_addr,
        vxlan_addr: None,
        vxlan_mac: None,
        rr_cluster_id: crate::bgp::own_cluster_id(),
    }
}

/// Route to a prefix of the pool, with the fields Calico's routes leave empty.
fn route_to(prefix: Ipv4Net) -> Route<'static> {
    Route {
        destination: addr::wit_prefix(prefix),
        gateway: None,
        device: None,
        kind: RouteKind::Unicast,
        scope: RouteScope::Universe,
        onlink: false,
        table: None,
        metric: None,
        source: None,
    }
}

pub fn create(net: &Network) -> Result<(), Error> {
    let pool = pool_of(net)?;
    let s = load_settings(&pool)?;
    store::put(&in_use_key(&pool), net.id.as_bytes(), Condition::None, None)?;
    let (ul, ul_addr) = underlay()?;
    sysctl::enable_ipv4_forwarding()?;
    let ul_mtu = ul.state()?.mtu;
    if bgp_mode(&s.spec) {
        note_mtu(&pool, ul_mtu)?;
        node::publish(&bgp_node(&s, ul_addr))?;
        if s.spec.nat_outgoing {
            netfilter::apply(&nat_ops(&s.spec))?;
        }
        sync_routes(net, &s, None, &ul, ul_addr)?;
        info(&format!(
            "calico network {} on {}: pool {}, routes by BGP",
            net.name, s.node, s.spec.cidr
        ));
        return Ok(());
    }
    let mac = vtep_mac(&s.node);
    let [a, b, c, d, e, f] = mac;
    let vx = link::create_vxlan(&VxlanSpec {
        name: VXLAN.into(),
        vni: VNI,
        local: Some(addr::wit_addr(ul_addr.addr())),
        port: Some(PORT),
        underlay: Some(&ul),
        learning: false,
        mtu: Some(ul_mtu.saturating_sub(50)),
        mac: Some((a, b, c, d, e, f)),
    })?;
    note_mtu(&pool, vx.state()?.mtu)?;
    let tunnel = ipam::assign(
        &s.spec,
        &s.node,
        &tunnel_handle(&s.node),
        None,
        s.max_blocks,
    )?;
    vx.add_address(addr::host_prefix(tunnel))?;
    let _ = sysctl::set_link(&vx, LinkKey::AcceptRa, 0);
    vx.set_up(true)?;
    node::publish(&NodeInfo {
        name: s.node.clone(),
        address: ul_addr,
        vxlan_addr: Some(tunnel),
        vxlan_mac: Some(mac),
        rr_cluster_id: None,
    })?;
    if s.spec.nat_outgoing {
        netfilter::apply(&nat_ops(&s.spec))?;
    }
    sync_routes(net, &s, Some(&vx), &ul, ul_addr)?;
    info(&format!(
        "calico network {} on {}: pool {}, tunnel {tunnel}",
        net.name, s.node, s.spec.cidr
    ));
    Ok(())
}

fn nat_ops(spec: &PoolSpec) -> Vec<Op> {
    let pool = addr::wit_prefix(spec.cidr);
    vec![
        add_chain(POSTROUTING),
        attach(POSTROUTING, AttachPoint::NatLeavingNetwork),
        add_rule(
            POSTROUTING,
            rule(
                MASQ,
                vec![Match::Saddr(pool), Match::DaddrNot(pool)],
                Action::Masquerade,
            ),
        ),
    ]
}

/// A pass of the node agent: keep this node's record, follow the blocks.
pub fn reconcile(net: &Network) -> Result<Option<u32>, Error> {
    let pool = pool_of(net)?;
    let s = load_settings(&pool)?;
    let (ul, ul_addr) = underlay()?;
    if bgp_mode(&s.spec) {
        node::publish(&bgp_node(&s, ul_addr))?;
        sync_routes(net, &s, None, &ul, ul_addr)?;
        return Ok(Some(10));
    }
    let vx = link::open_owned(VXLAN)?;
    let tunnel = vx
        .addresses()?
        .iter()
        .find_map(|p| addr::v4_prefix(p, "tunnel").ok())
        .map(|n| n.addr());
    node::publish(&NodeInfo {
        name: s.node.clone(),
        address: ul_addr,
        vxlan_addr: tunnel,
        vxlan_mac: Some(vtep_mac(&s.node)),
        rr_cluster_id: None,
    })?;
    sync_routes(net, &s, Some(&vx), &ul, ul_addr)?;
    Ok(Some(10))
}

/// How this node reaches one prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Way {
    /// This node's own block: what is not a local endpoint goes nowhere.
    Blackhole,
    /// Through the node's VTEP.
    Vxlan { vtep: Ipv4Addr },
    /// Straight to the node (CrossSubnet, same subnet).
    Direct { node: Ipv4Addr },
}

/// Whose routes: this driver's own, or BIRD's (BGP mode).
fn programs(way: &Way, bgp: bool) -> bool {
    !bgp || matches!(way, Way::Blackhole)
}

/// A remote VTEP's neighbour and FDB entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Vtep {
    addr: Ipv4Addr,
    mac: [u8; 6],
    node: Ipv4Addr,
}

fn routes_key(net: &Network) -> String {
    format!("routes/{}", net.id)
}

#[derive(Default, Serialize, Deserialize)]
struct Programmed {
    routes: BTreeMap<Ipv4Net, Way>,
    vteps: BTreeSet<Vtep>,
}

/// A node record is another node's word: refused if it claims this
/// node's address or tunnel, a tunnel address outside the pool, or a
/// tunnel another node already has (each would loop or steal traffic).
fn plausible(
    info: &NodeInfo,
    s: &Settings,
    ul_addr: Ipv4Net,
    own_tunnel: Option<Ipv4Addr>,
    vteps: &BTreeMap<Ipv4Addr, String>,
) -> Result<(), String> {
    if info.address.addr() == ul_addr.addr() {
        return Err(format!("it claims this node's address {}", ul_addr.addr()));
    }
    if let Some(v) = info.vxlan_addr {
        if !s.spec.cidr.contains(&v) {
            return Err(format!(
                "tunnel address {v} is outside the pool {}",
                s.spec.cidr
            ));
        }
        if Some(v) == own_tunnel {
            return Err(format!("tunnel address {v} is this node's"));
        }
        if let Some(other) = vteps.get(&v).filter(|o| **o != info.name) {
            return Err(format!("tunnel address {v} is {other}'s"));
        }
    }
    Ok(())
}

const LOCAL: &str = "endpoint/";

/// Record one of this node's endpoints' addresses: no route to another
/// node may take it over, whatever a block record says.
pub fn note_local(a: Ipv4Addr, endpoint_id: &str) -> Result<(), Error> {
    store::put(
        &format!("{LOCAL}{endpoint_id}"),
        a.to_string().as_bytes(),
        Condition::None,
        None,
    )?;
    Ok(())
}

pub fn forget_local(endpoint_id: &str) -> Result<(), Error> {
    store::delete(&format!("{LOCAL}{endpoint_id}"), Condition::None)?;
    Ok(())
}

/// The addresses of this node's endpoints.
fn locals() -> Result<BTreeSet<Ipv4Addr>, Error> {
    Ok(store::list_prefix(LOCAL)?
        .iter()
        .filter_map(|e| String::from_utf8_lossy(&e.value).parse().ok())
        .collect())
}

fn sync_routes(
    net: &Network,
    s: &Settings,
    vx: Option<&Link>,
    ul: &Link,
    ul_addr: Ipv4Net,
) -> Result<(), Error> {
    let bgp = vx.is_none();
    let mut want = Programmed::default();
    let mut nodes: BTreeMap<String, Option<NodeInfo>> = BTreeMap::new();
    let mut vteps: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    // This node's blocks and the addresses it borrowed: what it announces.
    let mut own: Vec<Ipv4Net> = Vec::new();
    let own_tunnel = match vx {
        Some(vx) => vx
            .addresses()?
            .iter()
            .find_map(|p| addr::v4_prefix(p, "tunnel").ok())
            .map(|n| n.addr()),
        None => None,
    };
    let locals = locals()?;
    for (prefix, owner) in ipam::placement(&s.spec)? {
        if owner == s.node {
            own.push(prefix);
            if prefix.prefix_len() < 32 {
                want.routes.insert(prefix, Way::Blackhole);
            }
            continue;
        }
        if prefix.prefix_len() == 32 && locals.contains(&prefix.addr()) {
            warn(&format!(
                "{prefix} is an endpoint of this node; a block record says node {owner}: ignored"
            ));
            continue;
        }
        if !nodes.contains_key(&owner) {
            let info = match node::lookup(&owner)? {
                Some(i) => match plausible(&i, s, ul_addr, own_tunnel, &vteps) {
                    Ok(()) => {
                        if let Some(v) = i.vxlan_addr {
                            vteps.insert(v, i.name.clone());
                        }
                        Some(i)
                    }
                    Err(why) => {
                        warn(&format!("node {owner}'s record refused: {why}"));
                        None
                    }
                },
                None => None,
            };
            nodes.insert(owner.clone(), info);
        }
        let Some(Some(info)) = nodes.get(&owner) else {
            warn(&format!(
                "{prefix} is on node {owner}, which has no usable record"
            ));
            continue;
        };
        let same_subnet = ul_addr.trunc().contains(&info.address.addr());
        if bgp || (s.spec.vxlan_mode == Mode::CrossSubnet && same_subnet) {
            want.routes.insert(
                prefix,
                Way::Direct {
                    node: info.address.addr(),
                },
            );
        } else if let (Some(vtep), Some(mac)) = (info.vxlan_addr, info.vxlan_mac) {
            want.routes.insert(prefix, Way::Vxlan { vtep });
            want.vteps.insert(Vtep {
                addr: vtep,
                mac,
                node: info.address.addr(),
            });
        }
    }
    let key = routes_key(net);
    let before: Programmed = store::get(&key)?
        .and_then(|e| serde_json::from_slice(&e.value).ok())
        .unwrap_or_default();
    // Routes that go or change first, then VTEPs, then new routes (a
    // route never points at a VTEP the kernel cannot resolve).
    for (prefix, way) in &before.routes {
        // In BGP mode a remote block's route is BIRD's: never ours to delete.
        if want.routes.get(prefix) != Some(way) && programs(way, bgp) {
            let _ = route::del(&way_route(*prefix, way, vx, ul));
        }
    }
    if let Some(vx) = vx {
        for v in before.vteps.difference(&want.vteps) {
            let [a, b, c, d, e, f] = v.mac;
            let _ = route::del_fdb(vx, (a, b, c, d, e, f), Some(addr::wit_addr(v.node)));
            let _ = route::del_neighbour(vx, addr::wit_addr(v.addr));
        }
    }
    let mut done = Programmed::default();
    if let Some(vx) = vx {
        for v in &want.vteps {
            if !before.vteps.contains(v) {
                let [a, b, c, d, e, f] = v.mac;
                let mac = (a, b, c, d, e, f);
                if let Err(e) = exists_ok(route::add_neighbour(vx, addr::wit_addr(v.addr), mac))
                    .and_then(|()| exists_ok(route::add_fdb(vx, mac, Some(addr::wit_addr(v.node)))))
                {
                    warn(&format!(
                        "VTEP {} of {}: {}",
                        v.addr,
                        v.node,
                        netshim_guest_sdk::log::show_error(&e)
                    ));
                    continue;
                }
            }
            done.vteps.insert(v.clone());
        }
    }
    for (prefix, way) in &want.routes {
        if before.routes.get(prefix) != Some(way) {
            if !programs(way, bgp) {
                done.routes.insert(*prefix, way.clone());
                continue;
            }
            if let Err(e) = route::replace(&way_route(*prefix, way, vx, ul)) {
                warn(&format!(
                    "route to {prefix}: {}",
                    netshim_guest_sdk::log::show_error(&e)
                ));
                continue;
            }
        }
        done.routes.insert(*prefix, way.clone());
    }
    let value = serde_json::to_vec(&done).map_err(|e| Error::Failed(e.to_string()))?;
    if store::get(&key)?.map(|e| e.value) != Some(value.clone()) {
        store::put(&key, &value, Condition::None, None)?;
    }
    if bgp {
        let me = bgp_node(s, ul_addr);
        let peers: Vec<NodeInfo> = node::all()?
            .into_iter()
            .filter(|n| n.name != s.node)
            .filter(|n| match plausible(n, s, ul_addr, None, &BTreeMap::new()) {
                Ok(()) => true,
                Err(why) => {
                    warn(&format!("node {}'s record refused: {why}", n.name));
                    false
                }
            })
            .collect();
        netshim_guest_sdk::host::bgp::configure(&crate::bgp::speaker(&s.spec, &me, &peers, &own)?)?;
    }
    write_status(net, s, ul_addr, &want, &done, &nodes)
}

/// The status record `netshim cluster status` shows (wit/README.md): each
/// node with its blocks, how they are reached, and what is not
/// programmed.
fn write_status(
    net: &Network,
    s: &Settings,
    ul_addr: Ipv4Net,
    want: &Programmed,
    done: &Programmed,
    nodes: &BTreeMap<String, Option<NodeInfo>>,
) -> Result<(), Error> {
    let mut rows = vec![serde_json::json!({
        "name": s.node,
        "address": ul_addr.addr().to_string(),
        "prefixes": want.routes.iter().filter(|(_, w)| **w == Way::Blackhole).map(|(p, _)| p.to_string()).collect::<Vec<_>>(),
        "kind": "local",
        "cluster-key": node::key(&s.node),
        "local": true,
        "programmed": true,
        "problem": null,
    })];
    for (name, info) in nodes {
        let reach: Vec<(&Ipv4Net, &Way)> = want
            .routes
            .iter()
            .filter(|(_, w)| match (w, info) {
                (Way::Vxlan { vtep }, Some(i)) => i.vxlan_addr == Some(*vtep),
                (Way::Direct { node }, Some(i)) => i.address.addr() == *node,
                _ => false,
            })
            .collect();
        let missing = reach
            .iter()
            .filter(|(p, w)| done.routes.get(*p) != Some(*w))
            .count();
        let kind = match reach.first().map(|(_, w)| *w) {
            _ if bgp_mode(&s.spec) => "bgp",
            Some(Way::Direct { .. }) => "direct",
            _ => "vxlan",
        };
        rows.push(serde_json::json!({
            "name": name,
            "address": info.as_ref().map(|i| i.address.addr().to_string()).unwrap_or_default(),
            "prefixes": reach.iter().map(|(p, _)| p.to_string()).collect::<Vec<_>>(),
            "kind": kind,
            "cluster-key": node::key(name),
            "local": false,
            "programmed": info.is_some() && missing == 0,
            "problem": if info.is_none() {
                Some("no node record yet".to_string())
            } else if missing > 0 {
                Some(format!("{missing} route(s) not programmed"))
            } else {
                None
            },
        }));
    }
    let value = serde_json::json!({ "nodes": rows })
        .to_string()
        .into_bytes();
    let key = format!("status/{}", net.id);
    if store::get(&key)?.map(|e| e.value) != Some(value.clone()) {
        store::put(&key, &value, Condition::None, None)?;
    }
    Ok(())
}

fn way_route<'a>(prefix: Ipv4Net, way: &Way, vx: Option<&'a Link>, ul: &'a Link) -> Route<'a> {
    match way {
        Way::Blackhole => Route {
            kind: RouteKind::Blackhole,
            ..route_to(prefix)
        },
        Way::Vxlan { vtep } => Route {
            gateway: Some(addr::wit_addr(*vtep)),
            device: vx,
            onlink: true,
            ..route_to(prefix)
        },
        Way::Direct { node } => Route {
            gateway: Some(addr::wit_addr(*node)),
            device: Some(ul),
            ..route_to(prefix)
        },
    }
}

fn exists_ok(r: Result<(), Error>) -> Result<(), Error> {
    match r {
        Err(Error::Exists(_)) => Ok(()),
        other => other,
    }
}

pub fn delete(net: &Network) -> Result<(), Error> {
    let mut td = Teardown::new(format!("delete-network {}", net.name));
    let pool = pool_of(net)?;
    let s = td.check("reading the network's settings", load_settings(&pool));
    // Routes without a device of this network (blackholes, direct ones).
    if let (Some(done), Ok((ul, _))) = (
        td.check(
            "reading programmed routes",
            store::get(&routes_key(net)).map(|e| {
                e.and_then(|e| serde_json::from_slice::<Programmed>(&e.value).ok())
                    .unwrap_or_default()
            }),
        ),
        underlay(),
    ) {
        let vx = link::open_owned(VXLAN).ok();
        let bgp = s.as_ref().is_some_and(|s| bgp_mode(&s.spec));
        for (prefix, way) in &done.routes {
            if !matches!(way, Way::Vxlan { .. }) && programs(way, bgp) {
                let _ = route::del(&way_route(*prefix, way, vx.as_ref(), &ul));
            }
        }
    }
    if s.as_ref().is_some_and(|s| bgp_mode(&s.spec)) {
        td.check("stopping BGP", netshim_guest_sdk::host::bgp::clear());
    }
    td.check(
        "forgetting that the pool is in use",
        store::delete(&in_use_key(&pool), Condition::None).map(|_| ()),
    );
    if s.as_ref().is_some_and(|s| s.released) {
        td.check(
            "forgetting the released pool's settings",
            store::delete(&settings_key(&pool), Condition::None).map(|_| ()),
        );
    }
    td.check(
        "forgetting the MTU",
        store::delete(&mtu_key(&pool), Condition::None).map(|_| ()),
    );
    td.check(
        "forgetting routes",
        store::delete(&routes_key(net), Condition::None).map(|_| ()),
    );
    if let Some(ids) = td.check("listing nat rules", rule_ids(POSTROUTING)) {
        let mut ops = vec![detach(POSTROUTING, AttachPoint::NatLeavingNetwork)];
        if ids.iter().any(|i| i == MASQ) {
            ops.push(netshim_guest_sdk::rules::delete_rule(POSTROUTING, MASQ));
        }
        if ids.iter().all(|i| i == MASQ) {
            ops.push(Op::DeleteTable);
        }
        td.check("removing nat rules", netfilter::apply(&ops));
    }
    if let Some(s) = &s {
        if let Ok(vx) = link::open_owned(VXLAN) {
            if let Ok(addrs) = vx.addresses() {
                for p in addrs {
                    if let Ok(n) = addr::v4_prefix(&p, "tunnel") {
                        td.check(
                            "releasing the tunnel address",
                            ipam::release(&s.spec, n.addr()),
                        );
                    }
                }
            }
        }
        td.check("withdrawing this node's record", node::withdraw(&s.node));
        td.check(
            "releasing empty blocks",
            ipam::release_empty_blocks(&s.spec, &s.node),
        );
    }
    links::delete_owned(VXLAN, VXLAN, &mut td);
    td.finish()
}
