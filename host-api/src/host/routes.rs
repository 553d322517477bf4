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
use crate::kernel::{LinkRef, NsId, Route, RouteKind, RouteScope, MAIN_TABLE, ROUTE_PROTO_NETSHIM};

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

    /// The route the kernel has under the same key (table, destination,
    /// metric) as `r`, if any.
    fn existing_route(&self, r: &Route) -> HostResult<Option<Route>> {
        Ok(self
            .kernel
            .routes(NsId::NODE, r.table)?
            .into_iter()
            .find(|x| {
                x.destination == r.destination && x.metric.unwrap_or(0) == r.metric.unwrap_or(0)
            }))
    }

    /// Whether an installed route is this network's: netshim installed it,
    /// and it goes through a link the network owns (or, without a device of
    /// its own, to a destination of the network's grant).
    fn owns_route(&self, r: &Route) -> HostResult<bool> {
        if r.protocol != ROUTE_PROTO_NETSHIM {
            return Ok(false);
        }
        let in_grant = self
            .grant
            .route_prefixes
            .iter()
            .any(|g| g.contains(&r.destination));
        let Some(index) = r.oif else {
            return Ok(in_grant);
        };
        let link = LinkRef {
            ns: NsId::NODE,
            index,
        };
        if self.grant.underlay == Some(link) {
            return Ok(in_grant);
        }
        let mark = self.mark("route")?;
        Ok(self
            .kernel
            .link_by_index(link)?
            .is_some_and(|l| l.alias.as_deref() == Some(mark.as_str())))
    }

    fn not_ours(&self, what: &str, r: &Route) -> HostError {
        HostError::denied(format!(
            "{what} of route {} denied: the route in the node's table is not this network's (only routes netshim installed through this network's links may be changed)",
            r.destination
        ))
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
        let before = self.existing_route(&route)?;
        if let Some(old) = &before {
            if !self.owns_route(old)? {
                return Err(self.not_ours("replace", old));
            }
        }
        self.kernel.add_route(NsId::NODE, &route, true)?;
        self.journal.record(match before {
            Some(old) => Undo::RestoreRoute {
                ns: NsId::NODE,
                route: old,
            },
            None => Undo::DelRoute {
                ns: NsId::NODE,
                route,
            },
        });
        Ok(())
    }

    fn del(&mut self, r: WitRoute) -> HostResult<()> {
        let route = self.resolve_route(&r, "del")?;
        let old = self.existing_route(&route)?.ok_or_else(|| {
            HostError::not_found(format!(
                "route {} in table {}",
                route.destination, route.table
            ))
        })?;
        if !self.owns_route(&old)? {
            return Err(self.not_ours("del", &old));
        }
        self.kernel.del_route(NsId::NODE, &old)?;
        self.journal.record(Undo::AddRoute {
            ns: NsId::NODE,
            route: old,
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
