//! `route` imports: routes only to destinations inside the network's grant,
//! only through links it owns or the lent underlay; neighbour and FDB
//! entries only on owned links.

use ipnet::IpNet;
use wasmtime::component::Resource;

use super::{from_prefix, to_ip, to_prefix, HostError, HostResult, HostState, LinkHandle};
use crate::bindings::netshim::plugin::route::{
    Host, Route as WitRoute, RouteKind as WitKind, RouteScope as WitScope,
};
use crate::bindings::netshim::plugin::types::{IpAddress, IpPrefix, MacAddress};
use crate::journal::Undo;
use crate::kernel::{NsId, Route, RouteKind, RouteScope, MAIN_TABLE};

impl HostState {
    fn resolve_route(&self, r: &WitRoute, what: &str) -> HostResult<Route> {
        self.network(what)?;
        let dst = to_prefix(&r.destination)?;
        if dst != dst.trunc() {
            return Err(HostError::invalid(format!(
                "route destination {dst} has host bits set; did you mean {}?",
                dst.trunc()
            )));
        }
        if !self.grant.route_prefixes.iter().any(|g| g.contains(&dst)) {
            let granted: Vec<String> = self
                .grant
                .route_prefixes
                .iter()
                .map(IpNet::to_string)
                .collect();
            return Err(HostError::denied(format!(
                "{what} of route {dst} denied: it is outside this network's grant [{}]",
                granted.join(", ")
            )));
        }
        let mut route = Route::new(dst);
        route.gateway = r.gateway.as_ref().map(to_ip);
        if let Some(dev) = &r.device {
            let h = self.link(dev)?;
            let lent_underlay = self.grant.underlay == Some(h.link);
            if !h.owned && !lent_underlay {
                return Err(HostError::denied(format!(
                    "{what} of route {dst} denied: device {:?} is not owned by this network",
                    h.name
                )));
            }
            if h.link.ns != NsId::NODE {
                return Err(HostError::invalid(format!(
                    "route device {:?} is inside a sandbox, not the node",
                    h.name
                )));
            }
            route.oif = Some(h.link.index);
        }
        route.kind = match r.kind {
            WitKind::Unicast => RouteKind::Unicast,
            WitKind::Blackhole => RouteKind::Blackhole,
            WitKind::Unreachable => RouteKind::Unreachable,
            WitKind::Prohibit => RouteKind::Prohibit,
        };
        route.scope = match r.scope {
            WitScope::Universe => RouteScope::Universe,
            WitScope::Link => RouteScope::Link,
            WitScope::Host => RouteScope::Host,
        };
        if route.kind == RouteKind::Unicast && route.oif.is_none() && route.gateway.is_none() {
            return Err(HostError::invalid(format!(
                "route {dst} needs a device or a gateway"
            )));
        }
        route.onlink = r.onlink;
        route.table = r.table.unwrap_or(MAIN_TABLE);
        if route.table == 0 || route.table == 255 {
            return Err(HostError::denied(format!(
                "route {dst}: table {} is reserved for the kernel",
                route.table
            )));
        }
        route.metric = r.metric;
        route.source = r.source.as_ref().map(to_ip);
        Ok(route)
    }

    fn neighbour_dev(&self, dev: &Resource<LinkHandle>, what: &str) -> HostResult<LinkHandle> {
        self.network(what)?;
        self.owned_link(dev, what)
    }
}

fn mac(m: MacAddress) -> [u8; 6] {
    [m.0, m.1, m.2, m.3, m.4, m.5]
}

impl Host for HostState {
    fn add(&mut self, r: WitRoute) -> HostResult<()> {
        let route = self.resolve_route(&r, "add")?;
        self.kernel.add_route(NsId::NODE, &route, false)?;
        self.journal.record(Undo::DelRoute {
            ns: NsId::NODE,
            route,
        });
        Ok(())
    }

    fn replace(&mut self, r: WitRoute) -> HostResult<()> {
        let route = self.resolve_route(&r, "replace")?;
        self.kernel.add_route(NsId::NODE, &route, true)?;
        self.journal.record(Undo::DelRoute {
            ns: NsId::NODE,
            route,
        });
        Ok(())
    }

    fn del(&mut self, r: WitRoute) -> HostResult<()> {
        let route = self.resolve_route(&r, "del")?;
        self.kernel.del_route(NsId::NODE, &route)?;
        self.journal.record(Undo::AddRoute {
            ns: NsId::NODE,
            route,
        });
        Ok(())
    }

    fn node_destinations(&mut self) -> HostResult<Vec<IpPrefix>> {
        Ok(self
            .kernel
            .routes(NsId::NODE, MAIN_TABLE)?
            .into_iter()
            .map(|r| from_prefix(r.destination))
            .collect())
    }

    fn add_neighbour(
        &mut self,
        dev: Resource<LinkHandle>,
        address: IpAddress,
        m: MacAddress,
    ) -> HostResult<()> {
        let h = self.neighbour_dev(&dev, "add-neighbour")?;
        let ip = to_ip(&address);
        self.kernel.add_neighbour(h.link, ip, mac(m))?;
        self.journal.record(Undo::DelNeighbour {
            link: h.link,
            address: ip,
        });
        Ok(())
    }

    fn del_neighbour(&mut self, dev: Resource<LinkHandle>, address: IpAddress) -> HostResult<()> {
        let h = self.neighbour_dev(&dev, "del-neighbour")?;
        self.kernel.del_neighbour(h.link, to_ip(&address))?;
        self.journal.irreversible(format!(
            "neighbour {} on {:?} deleted",
            to_ip(&address),
            h.name
        ));
        Ok(())
    }

    fn add_fdb(
        &mut self,
        dev: Resource<LinkHandle>,
        m: MacAddress,
        destination: Option<IpAddress>,
    ) -> HostResult<()> {
        let h = self.neighbour_dev(&dev, "add-fdb")?;
        let dst = destination.as_ref().map(to_ip);
        self.kernel.add_fdb(h.link, mac(m), dst)?;
        self.journal.record(Undo::DelFdb {
            link: h.link,
            mac: mac(m),
            destination: dst,
        });
        Ok(())
    }

    fn del_fdb(
        &mut self,
        dev: Resource<LinkHandle>,
        m: MacAddress,
        destination: Option<IpAddress>,
    ) -> HostResult<()> {
        let h = self.neighbour_dev(&dev, "del-fdb")?;
        self.kernel
            .del_fdb(h.link, mac(m), destination.as_ref().map(to_ip))?;
        self.journal
            .irreversible(format!("fdb entry on {:?} deleted", h.name));
        Ok(())
    }
}
