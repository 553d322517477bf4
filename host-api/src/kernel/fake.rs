//! A recording fake of the kernel: an in-memory model of namespaces, links,
//! addresses, routes, sysctls and nftables tables, good enough that guests
//! and the CNM core run against it without root. Every change is appended
//! to a call log that tests assert on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::IpNet;

use super::{
    KResult, Kernel, KernelError, LinkChange, LinkInfo, LinkKind, LinkRef, Mac, NewLink, NsId,
    Route,
};
use crate::model::nft::Op as NftOp;

#[derive(Debug, Default, Clone)]
struct Table {
    chains: BTreeMap<String, Vec<String>>,
    sets: BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, Default)]
struct Model {
    next_ns: u32,
    next_index: u32,
    namespaces: BTreeMap<NsId, PathBuf>,
    links: BTreeMap<(NsId, u32), LinkInfo>,
    /// veth peers, both directions.
    peers: BTreeMap<(NsId, u32), (NsId, u32)>,
    addresses: BTreeMap<(NsId, u32), Vec<IpNet>>,
    routes: BTreeMap<NsId, Vec<Route>>,
    neighbours: BTreeSet<(NsId, u32, IpAddr)>,
    fdb: BTreeSet<(NsId, u32, Mac, Option<IpAddr>)>,
    sysctls: BTreeMap<(NsId, String), String>,
    tables: BTreeMap<(NsId, String), Table>,
    calls: Vec<String>,
    /// Make the next create_link of this kind fail as unsupported.
    unsupported_kinds: BTreeSet<&'static str>,
    /// Operations that fail, to test what happens after a failure.
    failing: BTreeSet<&'static str>,
}

/// The fake kernel. `FakeKernel::new()` has a node namespace with `lo` and
/// an `uplink` (index 2) carrying 203.0.113.2/24 and a default route.
#[derive(Debug)]
pub struct FakeKernel {
    m: Mutex<Model>,
}

impl Default for FakeKernel {
    fn default() -> Self {
        Self::new()
    }
}

fn kind_name(k: &LinkKind) -> &'static str {
    match k {
        LinkKind::Bridge => "bridge",
        LinkKind::Veth { .. } => "veth",
        LinkKind::Vxlan { .. } => "vxlan",
        LinkKind::Tun { .. } => "tun",
        LinkKind::Ipip { .. } => "ipip",
    }
}

impl FakeKernel {
    pub fn new() -> FakeKernel {
        let mut m = Model {
            next_ns: 1,
            next_index: 1,
            ..Default::default()
        };
        m.namespaces
            .insert(NsId::NODE, PathBuf::from("/proc/self/ns/net"));
        for name in ["lo", "uplink"] {
            let index = m.next_index;
            m.next_index += 1;
            m.links.insert(
                (NsId::NODE, index),
                LinkInfo {
                    ns: NsId::NODE,
                    index,
                    name: name.into(),
                    kind: String::new(),
                    mtu: 1500,
                    mac: None,
                    up: true,
                    alias: None,
                    master: None,
                    group: 0,
                    multicast_snooping: None,
                },
            );
        }
        m.addresses
            .insert((NsId::NODE, 2), vec!["203.0.113.2/24".parse().unwrap()]);
        let mut default = Route::new("0.0.0.0/0".parse().unwrap());
        default.gateway = Some("203.0.113.1".parse().unwrap());
        default.oif = Some(2);
        default.protocol = 4;
        let mut connected = Route::new("203.0.113.0/24".parse().unwrap());
        connected.oif = Some(2);
        connected.protocol = 2;
        m.routes.insert(NsId::NODE, vec![default, connected]);
        FakeKernel { m: Mutex::new(m) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Model> {
        self.m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything that changed, in order, one line per call.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Make every later call of `op` ("add_route", …) fail.
    pub fn fail(&self, op: &'static str) {
        self.lock().failing.insert(op);
    }

    pub fn clear_failures(&self) {
        self.lock().failing.clear();
    }

    pub fn make_unsupported(&self, kind: &'static str) {
        self.lock().unsupported_kinds.insert(kind);
    }

    /// Names of the links in a namespace, sorted.
    pub fn link_names(&self, ns: NsId) -> Vec<String> {
        let m = self.lock();
        let mut v: Vec<String> = m
            .links
            .values()
            .filter(|l| l.ns == ns)
            .map(|l| l.name.clone())
            .collect();
        v.sort();
        v
    }

    pub fn addresses_of(&self, ns: NsId, name: &str) -> Vec<IpNet> {
        let m = self.lock();
        m.links
            .values()
            .find(|l| l.ns == ns && l.name == name)
            .and_then(|l| m.addresses.get(&(ns, l.index)).cloned())
            .unwrap_or_default()
    }

    /// Rule ids of every chain of a table, `chain/id`.
    pub fn nft_rule_list(&self, table: &str) -> Vec<String> {
        let m = self.lock();
        m.tables
            .get(&(NsId::NODE, table.to_string()))
            .map(|t| {
                t.chains
                    .iter()
                    .flat_map(|(c, rules)| rules.iter().map(move |r| format!("{c}/{r}")))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn nft_set_elements(&self, table: &str, set: &str) -> Vec<String> {
        let m = self.lock();
        m.tables
            .get(&(NsId::NODE, table.to_string()))
            .and_then(|t| t.sets.get(set))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn routes_in(&self, ns: NsId) -> Vec<Route> {
        self.lock().routes.get(&ns).cloned().unwrap_or_default()
    }

    pub fn sysctl(&self, ns: NsId, path: &str) -> Option<String> {
        self.lock().sysctls.get(&(ns, path.to_string())).cloned()
    }
}

impl Model {
    fn log(&mut self, line: String) {
        self.calls.push(line);
    }

    fn find(&self, ns: NsId, name: &str) -> Option<&LinkInfo> {
        self.links.values().find(|l| l.ns == ns && l.name == name)
    }

    fn get(&self, l: LinkRef) -> KResult<&LinkInfo> {
        self.links
            .get(&(l.ns, l.index))
            .ok_or_else(|| KernelError::NotFound(format!("link {} in ns {}", l.index, l.ns.0)))
    }

    fn name(&self, l: LinkRef) -> String {
        self.links
            .get(&(l.ns, l.index))
            .map(|i| i.name.clone())
            .unwrap_or_else(|| format!("#{}", l.index))
    }

    fn add(
        &mut self,
        ns: NsId,
        name: &str,
        kind: &str,
        spec_mtu: Option<u32>,
        mac: Option<Mac>,
        alias: Option<String>,
        up: bool,
    ) -> KResult<LinkInfo> {
        if !self.namespaces.contains_key(&ns) {
            return Err(KernelError::NotFound(format!("namespace {}", ns.0)));
        }
        if self.find(ns, name).is_some() {
            return Err(KernelError::Exists(format!("link {name:?}")));
        }
        let index = self.next_index;
        self.next_index += 1;
        let info = LinkInfo {
            ns,
            index,
            name: name.into(),
            kind: kind.into(),
            mtu: spec_mtu.unwrap_or(1500),
            mac: Some(mac.unwrap_or([0x02, 0, 0, 0, (index >> 8) as u8, index as u8])),
            up,
            group: if alias.is_some() {
                super::LINK_GROUP
            } else {
                0
            },
            alias,
            master: None,
            multicast_snooping: (kind == "bridge").then_some(true),
        };
        self.links.insert((ns, index), info.clone());
        Ok(info)
    }

    fn remove(&mut self, l: LinkRef) {
        self.links.remove(&(l.ns, l.index));
        self.addresses.remove(&(l.ns, l.index));
        if let Some(routes) = self.routes.get_mut(&l.ns) {
            routes.retain(|r| r.oif != Some(l.index));
        }
        self.neighbours
            .retain(|(ns, i, _)| !(*ns == l.ns && *i == l.index));
        for info in self.links.values_mut() {
            if info.ns == l.ns && info.master == Some(l.index) {
                info.master = None;
            }
        }
    }
}

impl Kernel for FakeKernel {
    fn open_ns(&self, path: &Path) -> KResult<NsId> {
        let mut m = self.lock();
        let ns = NsId(m.next_ns);
        m.next_ns += 1;
        m.namespaces.insert(ns, path.to_path_buf());
        m.log(format!("open_ns {}", path.display()));
        let lo = m.add(ns, "lo", "", Some(65536), None, None, false)?;
        let _ = lo;
        Ok(ns)
    }

    fn ns_identity(&self, ns: NsId) -> KResult<(u64, u64)> {
        // The node is the namespace opened as /proc/1/ns/net, or NODE itself.
        let m = self.lock();
        match m.namespaces.get(&ns) {
            Some(p) if p == std::path::Path::new("/proc/1/ns/net") => Ok((0, 0)),
            _ => Ok((0, u64::from(ns.0))),
        }
    }

    fn close_ns(&self, ns: NsId) {
        // Closing forgets the handle; the namespace's links live on in the
        // model (a real namespace lives as long as its bind mount).
        self.lock().log(format!("close_ns {}", ns.0));
    }

    fn create_link(&self, spec: &NewLink) -> KResult<Vec<LinkInfo>> {
        let mut m = self.lock();
        let kind = kind_name(&spec.kind);
        if m.unsupported_kinds.contains(kind) {
            return Err(KernelError::Unsupported(format!(
                "{kind} links are not supported by this kernel"
            )));
        }
        if let LinkKind::Veth {
            peer_name, peer_ns, ..
        } = &spec.kind
        {
            if m.find(*peer_ns, peer_name).is_some() {
                return Err(KernelError::Exists(format!("link {peer_name:?}")));
            }
        }
        let first = m.add(
            spec.ns,
            &spec.name,
            kind,
            spec.mtu,
            spec.mac,
            spec.alias.clone(),
            spec.up,
        )?;
        let mut out = vec![first.clone()];
        if let LinkKind::Veth {
            peer_name,
            peer_ns,
            peer_mac,
            peer_alias,
        } = &spec.kind
        {
            let peer = match m.add(
                *peer_ns,
                peer_name,
                "veth",
                spec.mtu,
                *peer_mac,
                peer_alias.clone(),
                false,
            ) {
                Ok(p) => p,
                Err(e) => {
                    m.remove(first.link_ref());
                    return Err(e);
                }
            };
            m.peers
                .insert((first.ns, first.index), (peer.ns, peer.index));
            m.peers
                .insert((peer.ns, peer.index), (first.ns, first.index));
            out.push(peer);
        }
        m.log(format!("create_link {kind} {}", spec.name));
        Ok(out)
    }

    fn delete_link(&self, link: LinkRef) -> KResult<()> {
        let mut m = self.lock();
        let name = m.get(link)?.name.clone();
        m.remove(link);
        if let Some(peer) = m.peers.remove(&(link.ns, link.index)) {
            m.peers.remove(&peer);
            m.remove(LinkRef {
                ns: peer.0,
                index: peer.1,
            });
        }
        m.log(format!("delete_link {name}"));
        Ok(())
    }

    fn link_by_name(&self, ns: NsId, name: &str) -> KResult<Option<LinkInfo>> {
        Ok(self.lock().find(ns, name).cloned())
    }

    fn link_by_index(&self, link: LinkRef) -> KResult<Option<LinkInfo>> {
        Ok(self.lock().links.get(&(link.ns, link.index)).cloned())
    }

    fn links(&self, ns: NsId) -> KResult<Vec<LinkInfo>> {
        Ok(self
            .lock()
            .links
            .values()
            .filter(|l| l.ns == ns)
            .cloned()
            .collect())
    }

    fn set_link(&self, link: LinkRef, change: &LinkChange) -> KResult<()> {
        let mut m = self.lock();
        let name = m.name(link);
        if let LinkChange::Name(new) = change {
            if m.find(link.ns, new).is_some() {
                return Err(KernelError::Exists(format!("link {new:?}")));
            }
        }
        if let LinkChange::Master(Some(b)) = change {
            let bridge = m.get(LinkRef {
                ns: link.ns,
                index: *b,
            })?;
            if bridge.kind != "bridge" {
                return Err(KernelError::Invalid(format!(
                    "link {} is not a bridge",
                    bridge.name
                )));
            }
        }
        let info = m
            .links
            .get_mut(&(link.ns, link.index))
            .ok_or_else(|| KernelError::NotFound(format!("link {name}")))?;
        match change {
            LinkChange::Up(up) => info.up = *up,
            LinkChange::Mtu(mtu) => info.mtu = *mtu,
            LinkChange::Mac(mac) => info.mac = Some(*mac),
            LinkChange::Master(b) => info.master = *b,
            LinkChange::Name(n) => info.name = n.clone(),
            LinkChange::Alias(a) => info.alias = a.clone(),
            LinkChange::MulticastSnooping(_) if info.kind != "bridge" => {
                return Err(KernelError::Invalid(format!("link {name} is not a bridge")))
            }
            LinkChange::MulticastSnooping(on) => info.multicast_snooping = Some(*on),
            LinkChange::Hairpin(_) | LinkChange::Ipv6LinkLocal(_) => {}
        }
        m.log(format!("set_link {name} {change:?}"));
        Ok(())
    }

    fn add_address(&self, link: LinkRef, address: IpNet) -> KResult<()> {
        let mut m = self.lock();
        let name = m.get(link)?.name.clone();
        let list = m.addresses.entry((link.ns, link.index)).or_default();
        if list.contains(&address) {
            return Err(KernelError::Exists(format!("address {address} on {name}")));
        }
        list.push(address);
        // The kernel adds the connected route with the address.
        let mut connected = Route::new(address.trunc());
        connected.oif = Some(link.index);
        connected.protocol = 2;
        m.routes.entry(link.ns).or_default().push(connected);
        m.log(format!("add_address {address} {name}"));
        Ok(())
    }

    fn del_address(&self, link: LinkRef, address: IpNet) -> KResult<()> {
        let mut m = self.lock();
        let name = m.name(link);
        let list = m.addresses.entry((link.ns, link.index)).or_default();
        let before = list.len();
        list.retain(|a| *a != address);
        if list.len() == before {
            return Err(KernelError::NotFound(format!(
                "address {address} on {name}"
            )));
        }
        if let Some(routes) = m.routes.get_mut(&link.ns) {
            routes.retain(|r| {
                !(r.oif == Some(link.index) && r.destination == address.trunc() && r.protocol == 2)
            });
        }
        m.log(format!("del_address {address} {name}"));
        Ok(())
    }

    fn addresses(&self, link: LinkRef) -> KResult<Vec<IpNet>> {
        Ok(self
            .lock()
            .addresses
            .get(&(link.ns, link.index))
            .cloned()
            .unwrap_or_default())
    }

    fn add_route(&self, ns: NsId, route: &Route, replace: bool) -> KResult<()> {
        if self.lock().failing.contains("add_route") {
            return Err(KernelError::Other(format!(
                "injected failure adding route {}",
                route.destination
            )));
        }
        let mut m = self.lock();
        let routes = m.routes.entry(ns).or_default();
        let same = |r: &Route| {
            r.destination == route.destination && r.table == route.table && r.metric == route.metric
        };
        if routes.iter().any(same) {
            if !replace {
                return Err(KernelError::Exists(format!("route {}", route.destination)));
            }
            routes.retain(|r| !same(r));
        }
        routes.push(route.clone());
        m.log(format!(
            "add_route {} via {:?} dev {:?}",
            route.destination, route.gateway, route.oif
        ));
        Ok(())
    }

    fn del_route(&self, ns: NsId, route: &Route) -> KResult<()> {
        let mut m = self.lock();
        let routes = m.routes.entry(ns).or_default();
        let before = routes.len();
        routes.retain(|r| !(r.destination == route.destination && r.table == route.table));
        if routes.len() == before {
            return Err(KernelError::NotFound(format!(
                "route {}",
                route.destination
            )));
        }
        m.log(format!("del_route {}", route.destination));
        Ok(())
    }

    fn routes(&self, ns: NsId, table: u32) -> KResult<Vec<Route>> {
        Ok(self
            .lock()
            .routes
            .get(&ns)
            .map(|v| v.iter().filter(|r| r.table == table).cloned().collect())
            .unwrap_or_default())
    }

    fn add_neighbour(&self, link: LinkRef, address: IpAddr, _mac: Mac) -> KResult<()> {
        let mut m = self.lock();
        m.get(link)?;
        m.neighbours.insert((link.ns, link.index, address));
        m.log(format!("add_neighbour {address}"));
        Ok(())
    }

    fn del_neighbour(&self, link: LinkRef, address: IpAddr) -> KResult<()> {
        let mut m = self.lock();
        if !m.neighbours.remove(&(link.ns, link.index, address)) {
            return Err(KernelError::NotFound(format!("neighbour {address}")));
        }
        m.log(format!("del_neighbour {address}"));
        Ok(())
    }

    fn add_fdb(&self, link: LinkRef, mac: Mac, destination: Option<IpAddr>) -> KResult<()> {
        let mut m = self.lock();
        m.get(link)?;
        m.fdb.insert((link.ns, link.index, mac, destination));
        m.log(format!("add_fdb {mac:02x?}"));
        Ok(())
    }

    fn del_fdb(&self, link: LinkRef, mac: Mac, destination: Option<IpAddr>) -> KResult<()> {
        let mut m = self.lock();
        if !m.fdb.remove(&(link.ns, link.index, mac, destination)) {
            return Err(KernelError::NotFound(format!("fdb entry {mac:02x?}")));
        }
        m.log(format!("del_fdb {mac:02x?}"));
        Ok(())
    }

    fn sysctl_get(&self, ns: NsId, path: &str) -> KResult<String> {
        Ok(self
            .lock()
            .sysctls
            .get(&(ns, path.to_string()))
            .cloned()
            .unwrap_or_else(|| "0".into()))
    }

    fn sysctl_set(&self, ns: NsId, path: &str, value: &str) -> KResult<()> {
        let mut m = self.lock();
        m.sysctls.insert((ns, path.to_string()), value.to_string());
        m.log(format!("sysctl {path}={value}"));
        Ok(())
    }

    fn nft_apply(&self, ns: NsId, table: &str, ops: &[NftOp]) -> KResult<()> {
        let mut m = self.lock();
        let key = (ns, table.to_string());
        // Work on a copy: a batch applies whole or not at all.
        let mut t = m.tables.get(&key).cloned().unwrap_or_default();
        let mut delete_table = false;
        for op in ops {
            match op {
                NftOp::AddChain { name: c, .. } => {
                    t.chains.entry(c.clone()).or_default();
                }
                NftOp::AttachChain { name, .. } | NftOp::DetachChain { name, .. } => {
                    return Err(KernelError::Invalid(format!(
                        "attaching chain {name} is the guard's to resolve; it reached the kernel unscoped"
                    )))
                }
                NftOp::DeleteChain(c) => {
                    match t.chains.get(c) {
                        None => {
                            return Err(KernelError::NotFound(format!(
                                "chain {c} in table inet {table}"
                            )))
                        }
                        Some(r) if !r.is_empty() => {
                            return Err(KernelError::Other(format!(
                                "chain {c} in table inet {table} is not empty"
                            )))
                        }
                        Some(_) => {}
                    }
                    t.chains.remove(c);
                }
                NftOp::FlushChain(c) => t
                    .chains
                    .get_mut(c)
                    .ok_or_else(|| KernelError::NotFound(format!("chain {c}")))?
                    .clear(),
                NftOp::AddRule { chain: c, rule: r } => {
                    if let Some(set) = set_refs(r).into_iter().find(|s| !t.sets.contains_key(s)) {
                        return Err(KernelError::NotFound(format!(
                            "set {set} in table inet {table}"
                        )));
                    }
                    t.chains
                        .get_mut(c)
                        .ok_or_else(|| {
                            KernelError::NotFound(format!("chain {c} in table inet {table}"))
                        })?
                        .push(r.id.clone())
                }
                NftOp::DeleteRule { chain: c, id } => {
                    let rules = t
                        .chains
                        .get_mut(c)
                        .ok_or_else(|| KernelError::NotFound(format!("chain {c}")))?;
                    let pos = rules
                        .iter()
                        .position(|r| r == id)
                        .ok_or_else(|| KernelError::NotFound(format!("rule {id} in chain {c}")))?;
                    rules.remove(pos);
                }
                NftOp::AddSet { name: s, .. } => {
                    t.sets.entry(s.clone()).or_default();
                }
                NftOp::DeleteSet(s) => {
                    t.sets
                        .remove(s)
                        .ok_or_else(|| KernelError::NotFound(format!("set {s}")))?;
                }
                NftOp::AddElement { set: s, elem: e } => {
                    t.sets
                        .get_mut(s)
                        .ok_or_else(|| KernelError::NotFound(format!("set {s}")))?
                        .insert(e.to_string());
                }
                NftOp::DeleteElement { set: s, elem: e } => {
                    if !t
                        .sets
                        .get_mut(s)
                        .ok_or_else(|| KernelError::NotFound(format!("set {s}")))?
                        .remove(&e.to_string())
                    {
                        return Err(KernelError::NotFound(format!("element {e} in set {s}")));
                    }
                }
                NftOp::DeleteTable => {
                    if !m.tables.contains_key(&key) {
                        return Err(KernelError::NotFound(format!("table inet {table}")));
                    }
                    delete_table = true;
                }
            }
        }
        if delete_table {
            m.tables.remove(&key);
        } else {
            m.tables.insert(key, t);
        }
        m.log(format!("nft_apply {table} {} ops", ops.len()));
        Ok(())
    }

    fn nft_rules(&self, ns: NsId, table: &str, chain: &str) -> KResult<Vec<String>> {
        let m = self.lock();
        m.tables
            .get(&(ns, table.to_string()))
            .and_then(|t| t.chains.get(chain))
            .cloned()
            .ok_or_else(|| KernelError::NotFound(format!("chain {chain} in table inet {table}")))
    }

    fn nft_chains(&self, ns: NsId, table: &str) -> KResult<Vec<String>> {
        Ok(self
            .lock()
            .tables
            .get(&(ns, table.to_string()))
            .map(|t| t.chains.keys().cloned().collect())
            .unwrap_or_default())
    }

    fn nft_tables(&self, ns: NsId) -> KResult<Vec<String>> {
        Ok(self
            .lock()
            .tables
            .keys()
            .filter(|(n, _)| *n == ns)
            .map(|(_, t)| t.clone())
            .collect())
    }
}

fn set_refs(r: &crate::model::nft::Rule) -> Vec<String> {
    r.matches
        .iter()
        .filter_map(|m| m.set().map(str::to_string))
        .collect()
}
