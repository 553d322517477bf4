//! `node` imports (WIT 0.2): who and where this node is, and what the
//! call's network may route to. Facts the CNM core put in the grant; the
//! guest reads them, never changes them.

use super::{from_prefix, HostState};
use crate::bindings::netshim::plugin::types::IpPrefix;
use crate::bindings::v0_2::netshim::plugin0_2_0::node::{Host, NodeIdentity};
use crate::kernel::{LinkRef, NsId, MAIN_TABLE};

impl HostState {
    /// The underlay: the lent one, else the link of the node's IPv4
    /// default route. Read only when a driver asks (not on every attach).
    fn underlay_link(&self) -> Option<LinkRef> {
        if let Some(l) = self.grant.underlay {
            return Some(l);
        }
        let routes = self.kernel.routes(NsId::NODE, MAIN_TABLE).ok()?;
        let default = routes
            .iter()
            .find(|r| r.destination.prefix_len() == 0 && r.destination.addr().is_ipv4())?;
        Some(LinkRef {
            ns: NsId::NODE,
            index: default.oif?,
        })
    }
}

impl Host for HostState {
    fn identity(&mut self) -> wasmtime::Result<NodeIdentity> {
        let link = self.underlay_link();
        let name = link
            .and_then(|l| self.kernel.link_by_index(l).ok().flatten())
            .map(|i| i.name);
        let address = link
            .and_then(|l| self.kernel.addresses(l).ok())
            .and_then(|a| a.into_iter().find(|a| a.addr().is_ipv4()));
        Ok(NodeIdentity {
            name: self.grant.node_name.clone(),
            underlay_link: name,
            underlay_address: address.map(from_prefix),
        })
    }

    fn route_grant(&mut self) -> wasmtime::Result<Vec<IpPrefix>> {
        Ok(self
            .grant
            .route_prefixes
            .iter()
            .copied()
            .map(from_prefix)
            .collect())
    }
}
