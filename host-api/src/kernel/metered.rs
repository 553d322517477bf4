//! A kernel that counts the time spent in it, so the benchmark can tell the
//! kernel's share of a guest call from the share spent in wasm.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::{KResult, Kernel, LinkChange, LinkInfo, LinkRef, Mac, NewLink, NsId, Route};
use crate::model::nft::Op as NftOp;

pub struct Metered {
    inner: Arc<dyn Kernel>,
    nanos: AtomicU64,
}

impl Metered {
    pub fn new(inner: Arc<dyn Kernel>) -> Metered {
        Metered {
            inner,
            nanos: AtomicU64::new(0),
        }
    }

    /// Total time spent in the kernel backend so far.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }

    fn timed<R>(&self, f: impl FnOnce(&dyn Kernel) -> R) -> R {
        let t = Instant::now();
        let r = f(self.inner.as_ref());
        self.nanos
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        r
    }
}

impl Kernel for Metered {
    fn open_ns(&self, path: &Path) -> KResult<NsId> {
        self.timed(|k| k.open_ns(path))
    }
    fn ns_identity(&self, ns: NsId) -> KResult<(u64, u64)> {
        self.timed(|k| k.ns_identity(ns))
    }

    fn close_ns(&self, ns: NsId) {
        self.timed(|k| k.close_ns(ns))
    }
    fn create_link(&self, spec: &NewLink) -> KResult<Vec<LinkInfo>> {
        self.timed(|k| k.create_link(spec))
    }
    fn delete_link(&self, link: LinkRef) -> KResult<()> {
        self.timed(|k| k.delete_link(link))
    }
    fn link_by_name(&self, ns: NsId, name: &str) -> KResult<Option<LinkInfo>> {
        self.timed(|k| k.link_by_name(ns, name))
    }
    fn link_by_index(&self, link: LinkRef) -> KResult<Option<LinkInfo>> {
        self.timed(|k| k.link_by_index(link))
    }
    fn open_tunnel(
        &self,
        link: LinkRef,
        name: &str,
        local: std::net::SocketAddrV4,
    ) -> KResult<(std::fs::File, std::net::UdpSocket)> {
        self.timed(|k| k.open_tunnel(link, name, local))
    }
    fn links(&self, ns: NsId) -> KResult<Vec<LinkInfo>> {
        self.timed(|k| k.links(ns))
    }
    fn set_link(&self, link: LinkRef, change: &LinkChange) -> KResult<()> {
        self.timed(|k| k.set_link(link, change))
    }
    fn add_address(&self, link: LinkRef, address: IpNet) -> KResult<()> {
        self.timed(|k| k.add_address(link, address))
    }
    fn del_address(&self, link: LinkRef, address: IpNet) -> KResult<()> {
        self.timed(|k| k.del_address(link, address))
    }
    fn addresses(&self, link: LinkRef) -> KResult<Vec<IpNet>> {
        self.timed(|k| k.addresses(link))
    }
    fn add_route(&self, ns: NsId, route: &Route, replace: bool) -> KResult<()> {
        self.timed(|k| k.add_route(ns, route, replace))
    }
    fn del_route(&self, ns: NsId, route: &Route) -> KResult<()> {
        self.timed(|k| k.del_route(ns, route))
    }
    fn routes(&self, ns: NsId, table: u32) -> KResult<Vec<Route>> {
        self.timed(|k| k.routes(ns, table))
    }
    fn add_neighbour(&self, link: LinkRef, address: IpAddr, mac: Mac) -> KResult<()> {
        self.timed(|k| k.add_neighbour(link, address, mac))
    }
    fn del_neighbour(&self, link: LinkRef, address: IpAddr) -> KResult<()> {
        self.timed(|k| k.del_neighbour(link, address))
    }
    fn add_fdb(&self, link: LinkRef, mac: Mac, destination: Option<IpAddr>) -> KResult<()> {
        self.timed(|k| k.add_fdb(link, mac, destination))
    }
    fn del_fdb(&self, link: LinkRef, mac: Mac, destination: Option<IpAddr>) -> KResult<()> {
        self.timed(|k| k.del_fdb(link, mac, destination))
    }
    fn sysctl_get(&self, ns: NsId, path: &str) -> KResult<String> {
        self.timed(|k| k.sysctl_get(ns, path))
    }
    fn sysctl_set(&self, ns: NsId, path: &str, value: &str) -> KResult<()> {
        self.timed(|k| k.sysctl_set(ns, path, value))
    }
    fn nft_apply(&self, ns: NsId, table: &str, ops: &[NftOp]) -> KResult<()> {
        self.timed(|k| k.nft_apply(ns, table, ops))
    }
    fn nft_rules(&self, ns: NsId, table: &str, chain: &str) -> KResult<Vec<String>> {
        self.timed(|k| k.nft_rules(ns, table, chain))
    }
    fn nft_chains(&self, ns: NsId, table: &str) -> KResult<Vec<String>> {
        self.timed(|k| k.nft_chains(ns, table))
    }
    fn nft_tables(&self, ns: NsId) -> KResult<Vec<String>> {
        self.timed(|k| k.nft_tables(ns))
    }
}
